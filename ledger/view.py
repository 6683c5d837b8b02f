"""The national view: `resolve`, `NationalView`, view entries, the view root and proofs.

The view is a pure function of a *set* of records (every feed up to a vector
V): the same set, in any order and in any split into batches, gives the same
entries and the same root on every node. No clock is read here; an entry
carries the times at which each of its facts holds and `Entry.evaluate(at_ms)`
answers for an explicit time. The rules are written down in docs/view.md.

Layout::

    records ──apply()──▶ facts + indexes (by number, by target id, by appeal id)
                              │ recompute only the touched numbers
                              ▼
                          Entry (canonical JSON bytes) ─ entry hash ─▶ leaf
                              │
        key = SHA-256("markex/v1/view/key" 0x00 number); position = its first 64 bits
        root = sparse Merkle tree of depth 64 over the positions (ledger/viewtree.py)

A view lives in memory (`NationalView(consortium)`: resolve, tests, auditors)
or in a node's store (`NationalView.open(store, consortium)`: only the tree's
dense top in memory, one atomic synced batch per apply, vector included;
`catch_up(view, ledger)` applies what the ledger holds beyond the vector).
Both compute entries with the same `_build`, so bytes and roots are equal.

Errors: `verify_lookup` raises MalformedProof (ill-formed or non-canonical
proof, entry bytes that do not decode) or ProofMismatch (well formed, wrong root);
`Entry.decode` raises BadInput; `parse_view_checkpoint` raises MalformedNote;
`open_view_checkpoint` also BadSignature; `rebuild_from_ledger` and
`catch_up` raise StorageFailure for stored records that do not parse; a
store-backed view raises StorageFailure when its store fails (and then
changes nothing).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from keys.consortium import Consortium
from ledger import merkle, note, viewtree
from ledger.errors import (
    BadInput,
    BadSignature,
    LedgerError,
    MalformedNote,
    MalformedProof,
    ProofMismatch,
    StorageFailure,
)
from ledger.names import view_origin
from ledger.payloads import may_issue
from ledger.record import (
    RECATEGORIZE,
    UPHOLD,
    WITHDRAW,
    Correction,
    Mark,
    Reassignment,
    Record,
)
from ledger.rules import time_violation
from ledger.viewtree import PROOF_VERSION, Slot, ViewProof, tree_root, view_key

if TYPE_CHECKING:
    from keys.signing import SigningKey
    from ledger.log import NodeLedger
    from ledger.store import Batch, Store

__all__ = [
    "PROOF_VERSION",
    "Appeal",
    "AppealState",
    "CategoryInfo",
    "Entry",
    "EntryMark",
    "EntryReassignment",
    "Marker",
    "NationalView",
    "Protection",
    "Recategorization",
    "Resolution",
    "Rules",
    "SetAside",
    "SetAsideSpan",
    "ViewCheckpoint",
    "ViewProof",
    "bucket_of",
    "catch_up",
    "entry_hash",
    "open_view_checkpoint",
    "parse_view_checkpoint",
    "rebuild_from_ledger",
    "resolve",
    "sign_view_checkpoint",
    "tree_root",
    "verify_lookup",
    "view_checkpoint_text",
    "view_key",
    "view_origin",
]

ENTRY_VERSION = 2                 # 2: no free text (appeal reasons) in entries
MAX_NUMBER_BYTES = 32

# Why a mark does not count. When several hold, the one that started first is
# reported; at equal times, the earlier name in this tuple.
WITHDRAWN = "withdrawn"
APPEAL_UPHELD = "appeal upheld"
REASSIGNED = "reassigned"
PROTECTED = "protected"
EXPIRED = "expired"
SUPERSEDED = "superseded"
REASONS = (WITHDRAWN, APPEAL_UPHELD, REASSIGNED, PROTECTED, EXPIRED, SUPERSEDED)
_REASON_ORDER = {r: i for i, r in enumerate(REASONS)}
_SPAN_REASONS = (WITHDRAWN, APPEAL_UPHELD, REASSIGNED)   # the ones fixed in the entry

PENDING = "pending"
UPHELD = "upheld"
REJECTED = "rejected"
APPEAL_WITHDRAWN = "withdrawn"
APPEAL_STATUSES = (PENDING, UPHELD, REJECTED, APPEAL_WITHDRAWN)

RISK_NONE = "none"
RISK_MEDIUM = "medium"
RISK_HIGH = "high"

_ROLES = ("institute", "carrier", "internet")
_HEX_ID = re.compile(r"[0-9a-f]{64}\Z")
_ISSUER = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)\Z", re.ASCII)
SIGNED_AT_KEYWORD = "signed-at-ms"   # the view checkpoint's fifth line: when it was signed
MAX_SIGNED_AT_MS = 2**63 - 1


# ====================================================================== entries


_C = TypeVar("_C")


class _cached(Generic[_C]):
    """cached_property without its per-read lock (Python 3.11 takes one on every
    first read): the value is computed from frozen fields, so a race computes it twice."""

    def __init__(self, fn: Callable[[Any], _C]) -> None:
        self._fn = fn
        self._name = fn.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, owner: type | None = None) -> _C:
        if obj is None:
            return self  # type: ignore[return-value]
        v = obj.__dict__[self._name] = self._fn(obj)
        return v


@dataclass(frozen=True)
class Rules:
    """The policy values an entry is evaluated with (copied in, so a client
    that verified the entry bytes can evaluate them without the config)."""

    high_risk_min_participants: int
    identity_min_participants: int
    institute_mark_is_high_risk: bool


@dataclass(frozen=True)
class CategoryInfo:
    id: str
    rank: int
    risk: bool


@dataclass(frozen=True)
class Recategorization:
    at: int                 # the issuer's correction's issued_at
    category: str
    ref: bytes              # the correction's record id


@dataclass(frozen=True)
class SetAsideSpan:
    """From `since` on (for good) the mark does not count, for `reason`."""

    since: int
    reason: str             # withdrawn | appeal upheld | reassigned
    ref: bytes              # the correction, appeal or reassignment record id


@dataclass(frozen=True)
class EntryMark:
    id: bytes
    participant: str
    role: str
    weight: int
    category: str           # as marked; see recategorized
    score: int
    reports: int
    observed_at: int
    expires_at: int         # the policy default already applied
    issued_at: int
    seq: int
    recategorized: tuple[Recategorization, ...] = ()
    set_aside: tuple[SetAsideSpan, ...] = ()

    def category_at(self, at_ms: int) -> str:
        cat = self.category
        for r in self.recategorized:        # sorted by (at, ref)
            if r.at <= at_ms:
                cat = r.category
        return cat


@dataclass(frozen=True)
class Appeal:
    """A correction of other participants' marks, and how it ended (if it did)."""

    id: bytes
    appellant: str
    targets: tuple[bytes, ...]      # the appealed marks on this entry's number
    action: str                     # what the appellant asked: withdraw | recategorize
    category: str                   # the category asked for (recategorize only)
    filed_at: int
    status: str                     # final status: pending | upheld | rejected | withdrawn
    closed_at: int | None = None    # when decided or withdrawn
    closed_by: bytes = b""          # the decision's (or withdrawal's) record id

    def status_at(self, at_ms: int) -> str | None:
        """None before it was filed; pending until it was closed."""
        if at_ms < self.filed_at:
            return None
        if self.closed_at is not None and at_ms >= self.closed_at:
            return self.status
        return PENDING


@dataclass(frozen=True)
class EntryReassignment:
    id: bytes
    carrier: str
    effective_at: int


@dataclass(frozen=True)
class Protection:
    """Marks of `category` observed before `until` are set aside (protected) from
    `since`, or from their `observed_at` when later."""

    category: str
    since: int
    until: int
    decision: bytes


@dataclass(frozen=True)
class Marker:
    """A mark that counts at the evaluated time."""

    participant: str
    role: str
    record_id: bytes
    category: str
    score: int
    reports: int
    observed_at: int
    expires_at: int
    recategorized: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "role": self.role,
            "record_id": self.record_id.hex(),
            "category": self.category,
            "score": self.score,
            "reports": self.reports,
            "observed_at": self.observed_at,
            "expires_at": self.expires_at,
            "recategorized": self.recategorized,
        }


@dataclass(frozen=True)
class SetAside:
    """A mark that does not count at the evaluated time, and why."""

    participant: str
    record_id: bytes
    category: str
    reason: str
    since: int
    ref: bytes              # what set it aside (record id); empty for expiry

    def to_json(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "record_id": self.record_id.hex(),
            "category": self.category,
            "reason": self.reason,
            "since": self.since,
            "ref": self.ref.hex(),
        }


@dataclass(frozen=True)
class AppealState:
    appeal_id: bytes
    appellant: str
    targets: tuple[bytes, ...]
    status: str
    filed_at: int
    decided_at: int | None
    decision_id: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "appeal_id": self.appeal_id.hex(),
            "appellant": self.appellant,
            "targets": [t.hex() for t in self.targets],
            "status": self.status,
            "filed_at": self.filed_at,
            "decided_at": self.decided_at,
            "decision_id": self.decision_id.hex(),
        }


@dataclass(frozen=True)
class Resolution:
    """An entry evaluated at one time."""

    number: str
    at_ms: int
    category: str | None
    risk: str                               # none | medium | high
    score: int                              # 0..100
    markers: tuple[Marker, ...]
    set_aside: tuple[SetAside, ...]
    appeal: str                             # none | pending | upheld | rejected | withdrawn
    appeals: tuple[AppealState, ...]
    tenure_since: int | None = None         # the reassignment in force, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "at_ms": self.at_ms,
            "category": self.category,
            "risk": self.risk,
            "score": self.score,
            "markers": [m.to_json() for m in self.markers],
            "set_aside": [s.to_json() for s in self.set_aside],
            "appeal": self.appeal,
            "appeals": [a.to_json() for a in self.appeals],
            "tenure_since": self.tenure_since,
        }


@dataclass(frozen=True)
class Entry:
    """Everything the view knows about one number, with the times each fact
    holds. Canonical bytes: `encode()`; its hash: `entry_hash(encode())`."""

    number: str
    rules: Rules
    categories: tuple[CategoryInfo, ...]
    marks: tuple[EntryMark, ...]
    appeals: tuple[Appeal, ...] = ()
    reassignments: tuple[EntryReassignment, ...] = ()
    protections: tuple[Protection, ...] = ()

    # ---------------------------------------------------------- evaluation
    @_cached
    def _categories(self) -> dict[str, CategoryInfo]:
        return {c.id: c for c in self.categories}

    def _category(self, cid: str) -> CategoryInfo:
        # A category the entry does not describe is treated as a risk of rank 0.
        return self._categories.get(cid) or CategoryInfo(cid, 0, True)

    def _why_not(self, m: EntryMark, cat: str, at_ms: int) -> tuple[int, int, str, bytes] | None:
        found: list[tuple[int, int, str, bytes]] = [
            (s.since, _REASON_ORDER[s.reason], s.reason, s.ref)
            for s in m.set_aside
            if s.since <= at_ms
        ]
        for p in self.protections:
            # Every mark of the category observed before the protection ends, so a
            # backdated observed_at can only bring a mark under protection.
            if p.category == cat and m.observed_at < p.until:
                since = max(m.observed_at, p.since)
                if since <= at_ms:
                    found.append((since, _REASON_ORDER[PROTECTED], PROTECTED, p.decision))
        if at_ms >= m.expires_at:
            found.append((m.expires_at, _REASON_ORDER[EXPIRED], EXPIRED, b""))
        return min(found) if found else None

    def evaluate(self, at_ms: int) -> Resolution:
        """The entry's answer at `at_ms` (see docs/view.md for the rules)."""
        live: list[tuple[EntryMark, str]] = []
        aside: list[SetAside] = []
        for m in self.marks:
            if m.observed_at > at_ms:
                continue                    # not observed yet at that time
            cat = m.category_at(at_ms)
            why = self._why_not(m, cat, at_ms)
            if why is None:
                live.append((m, cat))
            else:
                since, _, reason, ref = why
                aside.append(SetAside(m.participant, m.id, cat, reason, since, ref))
        # One mark per participant: its latest issued live mark.
        latest: dict[str, tuple[EntryMark, str]] = {}
        for m, cat in live:
            cur = latest.get(m.participant)
            if cur is None or _issue_key(m) > _issue_key(cur[0]):
                latest[m.participant] = (m, cat)
        for m, cat in live:
            win = latest[m.participant][0]
            if win is not m:
                aside.append(
                    SetAside(m.participant, m.id, cat, SUPERSEDED, win.observed_at, win.id)
                )
        counting = sorted(latest.values(), key=lambda mc: (mc[0].participant, mc[0].id))
        category, risk, score = self._combine(counting)
        markers = tuple(
            Marker(
                m.participant, m.role, m.id, cat, m.score, m.reports, m.observed_at,
                m.expires_at, any(r.at <= at_ms for r in m.recategorized),
            )
            for m, cat in counting
        )
        aside.sort(key=lambda s: (s.participant, s.record_id))
        states = []
        for a in self.appeals:
            st = a.status_at(at_ms)
            if st is None:
                continue
            closed = st != PENDING
            states.append(
                AppealState(
                    a.id, a.appellant, a.targets, st, a.filed_at,
                    a.closed_at if closed else None, a.closed_by if closed else b"",
                )
            )
        tenure = [r.effective_at for r in self.reassignments if r.effective_at <= at_ms]
        return Resolution(
            number=self.number,
            at_ms=at_ms,
            category=category,
            risk=risk,
            score=score,
            markers=markers,
            set_aside=tuple(aside),
            appeal=_appeal_summary(states),
            appeals=tuple(states),
            tenure_since=max(tenure) if tenure else None,
        )

    def _combine(self, counting: list[tuple[EntryMark, str]]) -> tuple[str | None, str, int]:
        rules = self.rules
        weight: dict[str, int] = {}
        who: dict[str, set[str]] = {}
        risk_by: set[str] = set()
        risk_weight = 0
        institute_risk = False
        for m, cat in counting:
            weight[cat] = weight.get(cat, 0) + m.weight
            who.setdefault(cat, set()).add(m.participant)
            if self._category(cat).risk:
                risk_by.add(m.participant)
                risk_weight += m.weight
                institute_risk = institute_risk or m.role == "institute"
        institute_high = institute_risk and rules.institute_mark_is_high_risk
        if institute_high or (risk_by and len(risk_by) >= rules.high_risk_min_participants):
            risk = RISK_HIGH
        elif risk_by:
            risk = RISK_MEDIUM
        else:
            risk = RISK_NONE

        def best(risky: bool) -> str | None:
            cands = [c for c in weight if self._category(c).risk == risky]
            if not cands:
                return None
            return min(cands, key=lambda c: (-weight[c], -self._category(c).rank, c))

        best_risk, best_identity = best(True), best(False)
        category = best_risk
        if best_identity is not None and (
            best_risk is None
            or (
                len(who[best_identity]) >= rules.identity_min_participants
                and weight[best_identity] > risk_weight
                and not institute_risk
            )
        ):
            category = best_identity
        score = 0
        if category is not None:
            total = sum(m.weight for m, cat in counting if cat == category)
            if total:
                num = sum(m.weight * m.score for m, cat in counting if cat == category)
                score = (2 * num + total) // (2 * total)     # rounded half up, integers only
        return category, risk, score

    # ---------------------------------------------------------- bytes
    def to_json(self) -> dict[str, Any]:
        r = self.rules
        return {
            "v": ENTRY_VERSION,
            "number": self.number,
            "rules": {
                "high_risk_min_participants": r.high_risk_min_participants,
                "identity_min_participants": r.identity_min_participants,
                "institute_mark_is_high_risk": r.institute_mark_is_high_risk,
            },
            "categories": [[c.id, c.rank, c.risk] for c in self.categories],
            "marks": [
                {
                    "id": m.id.hex(),
                    "by": m.participant,
                    "role": m.role,
                    "weight": m.weight,
                    "category": m.category,
                    "score": m.score,
                    "reports": m.reports,
                    "observed_at": m.observed_at,
                    "expires_at": m.expires_at,
                    "issued_at": m.issued_at,
                    "seq": m.seq,
                    "recategorized": [[x.at, x.category, x.ref.hex()] for x in m.recategorized],
                    "set_aside": [[s.since, s.reason, s.ref.hex()] for s in m.set_aside],
                }
                for m in self.marks
            ],
            "appeals": [
                {
                    "id": a.id.hex(),
                    "by": a.appellant,
                    "targets": [t.hex() for t in a.targets],
                    "action": a.action,
                    "category": a.category,
                    "filed_at": a.filed_at,
                    "status": a.status,
                    "closed_at": a.closed_at,
                    "closed_by": a.closed_by.hex(),
                }
                for a in self.appeals
            ],
            "reassignments": [
                {"id": x.id.hex(), "by": x.carrier, "effective_at": x.effective_at}
                for x in self.reassignments
            ],
            "protections": [
                {
                    "category": p.category,
                    "since": p.since,
                    "until": p.until,
                    "decision": p.decision.hex(),
                }
                for p in self.protections
            ],
        }

    def encode(self) -> bytes:
        """Canonical bytes: compact JSON, sorted keys, ASCII only, ids in hex.
        Canonical because the view produces it from parsed values; nobody
        ever verifies a signature over it."""
        return self._encoded

    @_cached
    def _encoded(self) -> bytes:
        # Written directly (keys in sorted order) rather than to_json() through the
        # sorting encoder: the same bytes, without a dict per part and a sort per dict.
        q = _QUOTE
        r = self.rules
        parts = [
            '{"appeals":[',
            ",".join(
                f'{{"action":{q(a.action)},"by":{q(a.appellant)},"category":{q(a.category)},'
                f'"closed_at":{"null" if a.closed_at is None else _int_text(a.closed_at)},'
                f'"closed_by":"{a.closed_by.hex()}","filed_at":{_int_text(a.filed_at)},'
                f'"id":"{a.id.hex()}","status":{q(a.status)},"targets":['
                + ",".join(f'"{t.hex()}"' for t in a.targets)
                + "]}"
                for a in self.appeals
            ),
            '],"categories":[',
            ",".join(
                f"[{q(c.id)},{_int_text(c.rank)},{_bool_text(c.risk)}]" for c in self.categories
            ),
            '],"marks":[',
            ",".join(
                f'{{"by":{q(m.participant)},"category":{q(m.category)},'
                f'"expires_at":{_int_text(m.expires_at)},"id":"{m.id.hex()}",'
                f'"issued_at":{_int_text(m.issued_at)},"observed_at":{_int_text(m.observed_at)},'
                '"recategorized":['
                + ",".join(
                    f'[{_int_text(x.at)},{q(x.category)},"{x.ref.hex()}"]'
                    for x in m.recategorized
                )
                + f'],"reports":{_int_text(m.reports)},"role":{q(m.role)},'
                f'"score":{_int_text(m.score)},"seq":{_int_text(m.seq)},"set_aside":['
                + ",".join(
                    f'[{_int_text(x.since)},{q(x.reason)},"{x.ref.hex()}"]' for x in m.set_aside
                )
                + f'],"weight":{_int_text(m.weight)}}}'
                for m in self.marks
            ),
            f'],"number":{q(self.number)},"protections":[',
            ",".join(
                f'{{"category":{q(p.category)},"decision":"{p.decision.hex()}",'
                f'"since":{_int_text(p.since)},"until":{_int_text(p.until)}}}'
                for p in self.protections
            ),
            '],"reassignments":[',
            ",".join(
                f'{{"by":{q(x.carrier)},"effective_at":{_int_text(x.effective_at)},'
                f'"id":"{x.id.hex()}"}}'
                for x in self.reassignments
            ),
            f'],"rules":{{"high_risk_min_participants":{_int_text(r.high_risk_min_participants)},'
            f'"identity_min_participants":{_int_text(r.identity_min_participants)},'
            f'"institute_mark_is_high_risk":{_bool_text(r.institute_mark_is_high_risk)}}},'
            f'"v":{_int_text(ENTRY_VERSION)}}}',
        ]
        return "".join(parts).encode("ascii")

    @_cached
    def hash(self) -> bytes:
        return entry_hash(self._encoded)

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Strict: the bytes must be exactly what `encode` gives. Raises BadInput."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BadInput("an entry is bytes")
        data = bytes(data)
        try:
            obj = json.loads(
                data.decode("ascii"),
                parse_float=_no_float,
                parse_constant=_no_float,
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise BadInput(f"entry is not canonical JSON: {e}") from e
        try:
            entry = _entry_from_json(obj)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise BadInput(f"entry is missing or mistypes a field: {e}") from e
        if entry.encode() != data:
            raise BadInput("entry bytes are not in canonical form")
        return entry


# json.dumps with these arguments, without building an encoder per entry.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_QUOTE = json.encoder.encode_basestring_ascii   # the string form _CANONICAL writes


def _int_text(v: int) -> str:
    """An int as _CANONICAL writes it (a bool as true/false, as json does)."""
    return int.__repr__(v) if v.__class__ is int else _CANONICAL.encode(v)


def _bool_text(v: bool) -> str:
    """A bool as _CANONICAL writes it (anything else through _CANONICAL itself)."""
    return "true" if v is True else "false" if v is False else _CANONICAL.encode(v)


def _issue_key(m: EntryMark) -> tuple[int, int, bytes]:
    return (m.issued_at, m.seq, m.id)


def _no_float(s: str) -> Any:
    raise ValueError(f"non-integer number {s!r}")


def _appeal_summary(states: list[AppealState]) -> str:
    if not states:
        return "none"
    if any(s.status == PENDING for s in states):
        return PENDING
    last = max(states, key=lambda s: (s.decided_at or 0, s.appeal_id))
    return last.status


# ---- strict JSON -> Entry (used by decode; the canonical check does the rest)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError(f"{v!r} is not a non-negative integer")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{v!r} is not true or false")
    return v


def _str(v: Any, allowed: Iterable[str] | None = None) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{v!r} is not a string")
    if allowed is not None and v not in allowed:
        raise ValueError(f"{v!r} is not one of {', '.join(allowed)}")
    return v


def _id(v: Any, empty_ok: bool = False) -> bytes:
    s = _str(v)
    if empty_ok and s == "":
        return b""
    if not _HEX_ID.match(s):
        raise ValueError(f"{s[:80]!r} is not a 32-byte record id in lowercase hex")
    return bytes.fromhex(s)


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise TypeError(f"{v!r} is not a list")
    return v


def _obj(v: Any, keys: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict) or set(v) != keys:
        raise ValueError(f"expected an object with exactly the keys {sorted(keys)}")
    return v


_ENTRY_KEYS = {"v", "number", "rules", "categories", "marks", "appeals", "reassignments",
               "protections"}
_RULE_KEYS = {"high_risk_min_participants", "identity_min_participants",
              "institute_mark_is_high_risk"}
_MARK_KEYS = {"id", "by", "role", "weight", "category", "score", "reports", "observed_at",
              "expires_at", "issued_at", "seq", "recategorized", "set_aside"}
_APPEAL_KEYS = {"id", "by", "targets", "action", "category", "filed_at", "status",
                "closed_at", "closed_by"}


def _entry_from_json(obj: Any) -> Entry:
    o = _obj(obj, _ENTRY_KEYS)
    if o["v"] != ENTRY_VERSION or isinstance(o["v"], bool):
        raise ValueError(f"entry version must be {ENTRY_VERSION}")
    number = _str(o["number"])
    if not number or len(number.encode()) > MAX_NUMBER_BYTES:
        raise ValueError("entry number is empty or too long")
    r = _obj(o["rules"], _RULE_KEYS)
    rules = Rules(
        _int(r["high_risk_min_participants"]),
        _int(r["identity_min_participants"]),
        _bool(r["institute_mark_is_high_risk"]),
    )
    cats = []
    for c in _list(o["categories"]):
        cid, rank, risk = _list(c)
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError("category rank must be an integer")
        cats.append(CategoryInfo(_str(cid), rank, _bool(risk)))
    marks = []
    for m in map(lambda x: _obj(x, _MARK_KEYS), _list(o["marks"])):
        recats = []
        for x in _list(m["recategorized"]):
            at, cat, ref = _list(x)
            recats.append(Recategorization(_int(at), _str(cat), _id(ref)))
        spans = []
        for x in _list(m["set_aside"]):
            since, reason, ref = _list(x)
            spans.append(SetAsideSpan(_int(since), _str(reason, _SPAN_REASONS), _id(ref)))
        marks.append(
            EntryMark(
                id=_id(m["id"]),
                participant=_str(m["by"]),
                role=_str(m["role"], _ROLES),
                weight=_int(m["weight"]),
                category=_str(m["category"]),
                score=_int(m["score"]),
                reports=_int(m["reports"]),
                observed_at=_int(m["observed_at"]),
                expires_at=_int(m["expires_at"]),
                issued_at=_int(m["issued_at"]),
                seq=_int(m["seq"]),
                recategorized=tuple(recats),
                set_aside=tuple(spans),
            )
        )
    appeals = []
    for a in map(lambda x: _obj(x, _APPEAL_KEYS), _list(o["appeals"])):
        closed_at = None if a["closed_at"] is None else _int(a["closed_at"])
        appeals.append(
            Appeal(
                id=_id(a["id"]),
                appellant=_str(a["by"]),
                targets=tuple(_id(t) for t in _list(a["targets"])),
                action=_str(a["action"], (WITHDRAW, RECATEGORIZE)),
                category=_str(a["category"]),
                filed_at=_int(a["filed_at"]),
                status=_str(a["status"], APPEAL_STATUSES),
                closed_at=closed_at,
                closed_by=_id(a["closed_by"], empty_ok=True),
            )
        )
    reassignments = [
        EntryReassignment(_id(x["id"]), _str(x["by"]), _int(x["effective_at"]))
        for x in (_obj(y, {"id", "by", "effective_at"}) for y in _list(o["reassignments"]))
    ]
    protections = [
        Protection(_str(p["category"]), _int(p["since"]), _int(p["until"]), _id(p["decision"]))
        for p in (
            _obj(y, {"category", "since", "until", "decision"}) for y in _list(o["protections"])
        )
    ]
    return Entry(
        number, rules, tuple(cats), tuple(marks), tuple(appeals), tuple(reassignments),
        tuple(protections),
    )


# ====================================================================== hashing


def entry_hash(entry_bytes: bytes) -> bytes:
    """An entry's hash: the RFC 9162 leaf hash of its canonical bytes."""
    return merkle.leaf_hash(entry_bytes)


def bucket_of(number: str, bits: int) -> int:
    """The first `bits` bits of the number's view key: the subtree below the
    in-memory top that holds it (a storage choice; the root ignores it)."""
    return viewtree.position(viewtree.view_key(number)) >> (viewtree.DEPTH - bits)


def verify_lookup(
    number: str,
    entry_bytes: bytes | None,
    proof: ViewProof | bytes,
    root: bytes,
    bucket_bits: int | None = None,
) -> Entry | None:
    """Check a lookup answer against a view root (take the root from a view
    checkpoint whose signatures you checked).

    `entry_bytes` None claims absence: accepted only when the proven leaf at
    the number's position lacks it. Returns the decoded entry, or None for a
    proven absence. Raises MalformedProof (ill-formed proof or entry, a proof
    not in canonical form) or ProofMismatch (well formed, does not reach
    `root`). `bucket_bits` is accepted for callers written against proof
    version 1 and ignored: the tree no longer depends on it.
    """
    del bucket_bits
    if not isinstance(root, bytes) or len(root) != merkle.HASH_SIZE:
        raise MalformedProof("a view root is 32 bytes")
    if not isinstance(proof, ViewProof):
        proof = ViewProof.decode(proof)
    if not isinstance(number, str) or not 0 < len(number.encode("utf-8")) <= MAX_NUMBER_BYTES:
        raise MalformedProof("the number asked for is empty or too long")
    eh = None if entry_bytes is None else entry_hash(bytes(entry_bytes))
    if viewtree.proof_root(viewtree.view_key(number), eh, proof) != root:
        raise ProofMismatch("the view proof does not lead to the view root")
    if entry_bytes is None:
        return None
    try:
        entry = Entry.decode(bytes(entry_bytes))
    except BadInput as e:
        raise MalformedProof(f"the proven entry does not decode: {e}") from e
    if entry.number != number:
        raise MalformedProof(f"the proven entry is for {entry.number}, not {number}")
    return entry


# ====================================================================== checkpoints


@dataclass(frozen=True)
class ViewCheckpoint:
    """A view checkpoint's body, a C2SP tlog-checkpoint text with two extension lines:

        <origin>\\n<entry count>\\n<base64 root>\\nvector <issuer>=<seq> ...\\nsigned-at-ms <t>\\n

    The vector line lists every issuer with seq > 0, sorted by issuer id;
    `signed_at_ms` is when the signer signed it (POSIX milliseconds, passed in),
    so a client can refuse a view that is old however well it is cosigned."""

    origin: str
    vector: tuple[tuple[str, int], ...]
    count: int
    root: bytes
    signed_at_ms: int

    def __post_init__(self) -> None:
        t = self.signed_at_ms
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_SIGNED_AT_MS:
            raise MalformedNote(f"view checkpoint time {t!r} is not a time in milliseconds")

    def body(self) -> str:
        line = " ".join(["vector"] + [f"{i}={s}" for i, s in self.vector])
        stamp = f"{SIGNED_AT_KEYWORD} {self.signed_at_ms}"
        return note.Checkpoint(self.origin, self.count, self.root, (line, stamp)).body()

    @property
    def vector_dict(self) -> dict[str, int]:
        return dict(self.vector)


def _vector_items(vector: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    items = []
    for issuer, seq in sorted(vector.items()):
        if not _ISSUER.match(issuer):
            raise MalformedNote(f"{issuer!r} is not a participant id")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise MalformedNote(f"vector seq of {issuer} is not a non-negative integer")
        if seq:
            items.append((issuer, seq))
    return tuple(items)


def view_checkpoint_text(
    origin: str, vector: Mapping[str, int], count: int, root: bytes, signed_at_ms: int
) -> str:
    """The note text of a view checkpoint signed at `signed_at_ms` (issuers at
    seq 0 are left out)."""
    return ViewCheckpoint(origin, _vector_items(vector), count, root, signed_at_ms).body()


def parse_view_checkpoint(text: str) -> ViewCheckpoint:
    """Strict parse of a view checkpoint's note text. Raises MalformedNote."""
    cp = note.Checkpoint.parse_body(text)
    if len(cp.extensions) != 2:
        raise MalformedNote(
            "a view checkpoint has exactly two extension lines, the vector and the signing time"
        )
    words = cp.extensions[0].split(" ")
    if words[0] != "vector":
        raise MalformedNote("a view checkpoint's fourth line starts with 'vector'")
    items = []
    for w in words[1:]:
        issuer, eq, seq = w.partition("=")
        if not eq or not _ISSUER.match(issuer) or not _DECIMAL.match(seq) or seq == "0":
            raise MalformedNote(f"vector item {w[:80]!r} is not <issuer>=<seq>")
        items.append((issuer, int(seq)))
    if [i for i, _ in items] != sorted({i for i, _ in items}):
        raise MalformedNote("vector issuers are not sorted and unique")
    keyword, sp, stamp = cp.extensions[1].partition(" ")
    if keyword != SIGNED_AT_KEYWORD or not sp or not _DECIMAL.match(stamp):
        raise MalformedNote(f"a view checkpoint's fifth line is '{SIGNED_AT_KEYWORD} <ms>'")
    vc = ViewCheckpoint(cp.origin, tuple(items), cp.size, cp.root, int(stamp))
    if vc.body() != text:
        raise MalformedNote("view checkpoint text is not canonical")
    return vc


def sign_view_checkpoint(cp: ViewCheckpoint, key: SigningKey) -> str:
    """The view checkpoint as a signed note; the key name is the origin."""
    return note.sign_note(cp.body(), cp.origin, key)


def open_view_checkpoint(
    signed: str, verifier: note.Verifier, origin: str | None = None
) -> ViewCheckpoint:
    """Verify `verifier`'s signature, then parse. The origin must equal
    `origin`, or the verifier's key name. Raises MalformedNote, BadSignature."""
    parsed, _ = note.verify_note(signed, [verifier])
    vc = parse_view_checkpoint(parsed.text)
    expected = verifier.name if origin is None else origin
    if vc.origin != expected:
        raise BadSignature(f"view checkpoint origin {vc.origin!r} is not {expected!r}")
    return vc


# ====================================================================== resolution


@dataclass(frozen=True, slots=True)
class _MarkFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    number: str
    category: str
    score: int
    reports: int
    observed_at: int
    expires_at: int         # the policy default already applied


@dataclass(frozen=True, slots=True)
class _CorrectionFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    correction: Correction


@dataclass(frozen=True, slots=True)
class _ReassignmentFact:
    id: bytes
    issuer: str
    seq: int                # 0 when read back from a stored entry (resolution never uses it)
    issued_at: int          # likewise
    number: str
    effective_at: int


_Fact = _MarkFact | _CorrectionFact | _ReassignmentFact


def _order(f: _Fact) -> tuple[int, int, bytes]:
    """Issue order across feeds: issued_at, then seq, then id (always total)."""
    return (f.issued_at, f.seq, f.id)


def _keep(limit: int) -> int:
    """How many marks (and appeals) per participant an entry keeps: the policy's
    max_marks_per_participant, at least one (a participant's latest always counts)."""
    return max(1, limit)


_F = TypeVar("_F", _MarkFact, _CorrectionFact)


def _latest_per_issuer(facts: Iterable[_F], keep: int) -> list[_F]:
    """Each issuer's `keep` latest facts in issue order (`_order`); the others are
    dropped. A dropped fact stays dropped: the newer ones stay in the set."""
    facts = list(facts)
    if len(facts) <= keep:
        return facts                # the usual case: nothing to drop
    by: dict[str, list[_F]] = {}
    for f in facts:
        by.setdefault(f.issuer, []).append(f)
    out: list[_F] = []
    for fs in by.values():
        if len(fs) > keep:
            fs = sorted(fs, key=_order)[-keep:]
        out.extend(fs)
    return out


_TARGET_MARK, _TARGET_CORRECTION, _TARGET_OTHER = "mark", "correction", "other"


def _target_kind(f: _Fact) -> str:
    if isinstance(f, _MarkFact):
        return _TARGET_MARK
    if isinstance(f, _CorrectionFact) and not f.correction.is_decision:
        return _TARGET_CORRECTION
    return _TARGET_OTHER


def _kept_referrers(
    kind: str, issuer: str, refs: Iterable[_CorrectionFact], keep: int
) -> set[bytes]:
    """The ids of the corrections and decisions naming a target (of `kind`, issued
    by `issuer`) that an entry can ever depend on; `_build` reads no other. Each
    left out is dominated for good by ones kept, so forgetting it changes no entry.

    A mark: its issuer's earliest withdrawal and kept recategorizations of it
    (`_kept_recategorizations`; appeals of it are kept per number, in `appeals_on`). A correction (a
    possible appeal): per decider its first decision (lowest seq), and its
    issuer's earliest withdrawal of it. Anything else (a decision or a
    reassignment): nothing."""
    out: set[bytes] = set()
    if kind == _TARGET_MARK:
        own = sorted(
            (r for r in refs if r.issuer == issuer and not r.correction.is_decision), key=_order
        )
        out.update(
            f.id
            for f in _kept_recategorizations(
                [f for f in own if f.correction.action == RECATEGORIZE], keep
            )
        )
        out.update([f.id for f in own if f.correction.action == WITHDRAW][:1])
    elif kind == _TARGET_CORRECTION:
        first: dict[str, _CorrectionFact] = {}
        pull: _CorrectionFact | None = None
        for r in refs:
            if r.correction.is_decision:
                cur = first.get(r.issuer)
                if cur is None or (r.seq, r.id) < (cur.seq, cur.id):
                    first[r.issuer] = r
            elif (
                r.issuer == issuer
                and r.correction.action == WITHDRAW
                and (pull is None or _order(r) < _order(pull))
            ):
                pull = r
        out.update(f.id for f in first.values())
        if pull is not None:
            out.add(pull.id)
    return out


def _kept_recategorizations(
    recats: Iterable[_CorrectionFact], keep: int
) -> list[_CorrectionFact]:
    """The recategorizations of a mark by its issuer that take effect (rule 2a): its
    `keep` latest in issue order, and of each category the first to it, so the
    categories a mark held up to any time (what a protection covers) stay known."""
    ordered = sorted(recats, key=_order)
    kept = {c.id: c for c in ordered[-keep:]}
    first: dict[str, _CorrectionFact] = {}
    for c in ordered:
        first.setdefault(c.correction.category, c)
    kept.update((c.id, c) for c in first.values())
    return sorted(kept.values(), key=_order)


def _as_correction(f: _Fact) -> _CorrectionFact:
    assert isinstance(f, _CorrectionFact)
    return f


def _as_mark(f: _Fact) -> _MarkFact:
    assert isinstance(f, _MarkFact)
    return f


def _first_decision(a: _CorrectionFact, ix: _Indexes) -> _CorrectionFact | None:
    """The decision that counts for appeal `a`: the first (lowest seq) by anyone but
    its appellant (nobody decides their own appeal: the ledger refuses it, the view
    gives it no effect)."""
    best: _CorrectionFact | None = None
    for i in ix.decisions_for.get(a.id, ()):
        d = _as_correction(ix.facts[i])
        if d.issuer != a.issuer and (best is None or (d.seq, d.id) < (best.seq, best.id)):
            best = d
    return best


def _kept_appeals(
    appeals: Iterable[_CorrectionFact], ix: _Indexes, keep: int
) -> list[_CorrectionFact]:
    """The appeals an entry keeps (docs/view.md, rule 2a): every decided one (its
    appellant cannot push a decision out), and each appellant's `keep` latest."""
    appeals = list(appeals)
    if not appeals:
        return appeals
    kept = {a.id: a for a in _latest_per_issuer(appeals, keep)}
    for a in appeals:
        if a.id not in kept and _first_decision(a, ix) is not None:
            kept[a.id] = a
    return list(kept.values())


@dataclass
class _Indexes:
    facts: dict[bytes, _Fact] = field(default_factory=dict)
    marks_on: dict[str, set[bytes]] = field(default_factory=dict)
    reassignments_on: dict[str, set[bytes]] = field(default_factory=dict)
    by_target: dict[bytes, set[bytes]] = field(default_factory=dict)      # corrections
    decisions_for: dict[bytes, set[bytes]] = field(default_factory=dict)  # appeal -> decisions
    appeals_on: dict[str, set[bytes]] = field(default_factory=dict)       # number -> appeals


# ---- the store-backed view's families (ledger/store.py; docs/view.md, "Persistence")
#
#   view            number                    -> entry bytes
#   viewix          record id                 -> kind (1) || flags (1) || body
#   viewref         target id || referrer id  -> b""
#   viewbucket      view key (32)             -> entry hash || u8 depth || hash || u8 depth || hash
#   viewbuckethash  u32 bucket                -> the bucket's subtree hash (non-empty buckets)
#   viewmeta        b"config" | b"vector" | b"count" | b"ignored"
#
# viewix kinds and bodies: W waiting (unknown, but named by a correction or a
# decision), I ignored, M mark (its number, a newline, its fact as JSON), R
# reassignment (its number), C correction and D decision (the fact as JSON).
# Flag bit 0: viewref holds referrers of this id. The marks and reassignments an
# entry keeps are read back from the stored entry of its number; a mark it
# dropped, from its viewix body when an appeal brings it back. A viewbucket value
# ends with its position's two cached chain points (viewtree.Slot: the hash of
# the subtree that holds this position alone, at two depths), the same in every
# key of a position.

_WAITING, _IGNORED, _MARK, _REASSIGNMENT, _CORRECTION, _DECISION = (
    b"W", b"I", b"M", b"R", b"C", b"D"
)
_HAS_REFS = 1
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_END = b"\xff" * 80          # above every key the view families hold (ids, numbers <= 36 bytes)
_REF_END = b"\xff" * 33      # target || _REF_END is above target || any 32-byte referrer


def _correction_body(f: _CorrectionFact) -> bytes:
    c = f.correction
    return json.dumps(
        [f.issuer, f.seq, f.issued_at, [t.hex() for t in c.targets], c.action, c.category,
         c.reason, c.appeal_id.hex(), c.outcome],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


def _mark_body(f: _MarkFact) -> bytes:
    """A mark's viewix body: its number, a newline, then its fact, read back when an
    appeal keeps a mark its entry had dropped (rule 2a)."""
    i, q = _int_text, _QUOTE    # written directly: the bytes _COMPACT gives for the list
    fact = (
        f"[{q(f.issuer)},{i(f.seq)},{i(f.issued_at)},{q(f.category)},{i(f.score)},"
        f"{i(f.reports)},{i(f.observed_at)},{i(f.expires_at)}]"
    )
    return f.number.encode("utf-8") + b"\n" + fact.encode("ascii")


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def _mark_from_body(rid: bytes, body: bytes) -> _MarkFact:
    try:
        number, nl, raw = body.partition(b"\n")
        if not nl:
            raise ValueError("no fact after the number")
        issuer, seq, issued_at, category, score, reports, observed_at, expires_at = json.loads(
            raw
        )
        return _MarkFact(rid, issuer, seq, issued_at, number.decode("utf-8"), category, score,
                         reports, observed_at, expires_at)
    except (ValueError, TypeError) as e:
        raise StorageFailure(f"view index of mark {rid.hex()} does not parse: {e}") from e


def _correction_from_body(rid: bytes, body: bytes) -> _CorrectionFact:
    try:
        issuer, seq, issued_at, targets, action, category, reason, appeal, outcome = json.loads(
            body
        )
        return _CorrectionFact(
            rid, issuer, seq, issued_at,
            Correction(
                tuple(bytes.fromhex(t) for t in targets), action, category, reason,
                bytes.fromhex(appeal), outcome,
            ),
        )
    except (ValueError, TypeError, LedgerError) as e:
        raise StorageFailure(f"view index of record {rid.hex()} does not parse: {e}") from e


def _facts_of_entry(
    number: str, raw: bytes
) -> tuple[list[_MarkFact], list[_ReassignmentFact], list[bytes]]:
    """The mark and reassignment facts a stored entry carries (all those it keeps),
    and the ids of the appeals it keeps."""
    try:
        obj = json.loads(raw)
        marks = [
            _MarkFact(
                bytes.fromhex(m["id"]), m["by"], m["seq"], m["issued_at"], number, m["category"],
                m["score"], m["reports"], m["observed_at"], m["expires_at"],
            )
            for m in obj["marks"]
        ]
        reassigns = [
            _ReassignmentFact(bytes.fromhex(r["id"]), r["by"], 0, 0, number, r["effective_at"])
            for r in obj["reassignments"]
        ]
        appeals = [bytes.fromhex(a["id"]) for a in obj["appeals"]]
    except (ValueError, TypeError, KeyError) as e:
        raise StorageFailure(f"stored view entry of {number} does not parse: {e}") from e
    return marks, reassigns, appeals


def _leaf_value(s: Slot, entry: bytes) -> bytes:
    return entry + bytes((s.depth,)) + s.top + bytes((s.deep_depth,)) + s.deep


_DEPTHS = frozenset(d for d in range(viewtree.DEPTH + 1) if viewtree.is_boundary(d))


def _slots_from_rows(rows: Iterable[tuple[bytes, bytes]]) -> list[Slot]:
    """The slots of stored viewbucket rows (in key order, so in position order)."""
    out: list[Slot] = []
    depths = _DEPTHS
    last: Slot | None = None
    for k, v in rows:
        if len(k) != 32 or len(v) != 98 or not (
            v[32] <= v[65] and v[32] in depths and v[65] in depths
        ):
            raise StorageFailure(f"view leaf {k.hex()[:16]} does not parse")
        pos = int.from_bytes(k[:8], "big")
        if last is not None and last.pos == pos:
            last.members = (*last.members, (k, v[:32]))
        else:
            last = Slot(pos, ((k, v[:32]),), v[32], v[33:65], v[65], v[66:])
            out.append(last)
    return out


class _StoredApply:
    """One apply() on a store-backed view: the index values it read or changed
    and the referrers it added, all written in one batch at the end."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ix: dict[bytes, bytes | None] = {}       # record id -> viewix value now
        self.stored: dict[bytes, bytes | None] = {}   # record id -> viewix value in the store
        self.dirty: set[bytes] = set()
        self.new_refs: dict[bytes, list[bytes]] = {}
        self.dropped_refs: set[bytes] = set()           # viewref keys to delete
        self.on: dict[str, list[_MarkFact | _ReassignmentFact]] = {}
        self.corrections: dict[bytes, _CorrectionFact] = {}
        self.fresh: list[_CorrectionFact] = []          # corrections and decisions applied now
        self.appeals_on: dict[str, set[bytes]] = {}     # number -> appeals reaching it now

    def fetch(self, ids: Iterable[bytes]) -> None:
        want = list(dict.fromkeys(i for i in ids if i not in self.ix))
        if want:
            for rid, v in zip(want, self.store.get_many("viewix", want), strict=True):
                self.ix[rid] = self.stored[rid] = v

    def get(self, rid: bytes) -> bytes | None:
        if rid not in self.ix:
            self.ix[rid] = self.stored[rid] = self.store.get("viewix", rid)
        return self.ix[rid]

    def put(self, rid: bytes, value: bytes) -> None:
        self.ix[rid] = value
        self.dirty.add(rid)

    def add_ref(self, target: bytes, referrer: bytes) -> None:
        v = self.get(target)
        if v is None:
            self.put(target, _WAITING + bytes((_HAS_REFS,)))
        elif not v[1] & _HAS_REFS:
            self.put(target, v[:1] + bytes((v[1] | _HAS_REFS,)) + v[2:])
        self.new_refs.setdefault(target, []).append(referrer)

    def referrers(self, target: bytes) -> list[bytes]:
        self.get(target)
        out = list(self.new_refs.get(target, ()))
        old = self.stored[target]
        if old is not None and old[1] & _HAS_REFS:
            out.extend(
                k[32:]
                for k, _ in self.store.items("viewref", target, target + _REF_END)
                if k not in self.dropped_refs
            )
        return out

    def drop_ref(self, target: bytes, referrer: bytes) -> None:
        """Forget that `referrer` names `target` (it is dominated; see _kept_referrers)."""
        new = self.new_refs.get(target)
        if new is not None and referrer in new:
            new.remove(referrer)
        else:
            self.dropped_refs.add(target + referrer)

    def referrer_facts(self, target: bytes) -> list[_CorrectionFact]:
        out = []
        for rid in self.referrers(target):
            f = self.correction(rid)
            if f is None:
                raise StorageFailure(f"view referrer {rid.hex()} is not indexed")
            out.append(f)
        return out

    def correction(self, rid: bytes) -> _CorrectionFact | None:
        f = self.corrections.get(rid)
        if f is None:
            v = self.get(rid)
            if v is None or v[:1] not in (_CORRECTION, _DECISION):
                return None
            f = self.corrections[rid] = _correction_from_body(rid, v[2:])
        return f

    def mark_numbers(self, c: Correction) -> set[str]:
        out = set()
        for t in c.targets:
            v = self.get(t)
            if v is not None and v[:1] == _MARK:
                out.add(v[2:].partition(b"\n")[0].decode("utf-8"))
        return out

    def mark_fact(self, rid: bytes) -> _MarkFact | None:
        v = self.get(rid)
        if v is None or v[:1] != _MARK:
            return None
        return _mark_from_body(rid, v[2:])


class _StoredEntries(Mapping[str, Entry]):
    """The entries of a store-backed view, read (and decoded) on access."""

    def __init__(self, view: NationalView) -> None:
        self._view = view

    def __getitem__(self, number: str) -> Entry:
        e = self._view.entry(number)
        if e is None:
            raise KeyError(number)
        return e

    def __iter__(self) -> Iterator[str]:
        return self._view.numbers()

    def __len__(self) -> int:
        return self._view.count

    def __contains__(self, number: object) -> bool:
        return isinstance(number, str) and self._view.entry_bytes(number) is not None


class NationalView:
    """The national view over a set of records, kept incrementally.

    `apply` may be called with any records in any order and any batching; the
    entries and the root depend only on the set applied. Corrections and
    decisions whose target is not applied yet wait (see `waiting`) and take
    effect when it arrives. Not thread-safe; the node serializes apply().

    Without a store the view lives in memory (resolve(), tests, auditors).
    With a store (`NationalView.open(store, consortium)`) its state lives in
    the store's view* column families and survives restarts: only the bucket
    tree's dense top (2**bits hashes at its lowest level) stays in memory, and
    each apply() is one atomic batch that also records the new vector. See
    docs/view.md."""

    def __init__(self, consortium: Consortium, store: Store | None = None) -> None:
        self.consortium = consortium
        policy = consortium.policy
        # The height of the dense in-memory top; the root does not depend on it.
        self.bucket_bits = min(policy.view_bucket_bits, viewtree.MAX_TOP_BITS)
        self._rules = Rules(
            policy.high_risk_min_participants,
            policy.identity_min_participants,
            policy.institute_mark_is_high_risk,
        )
        # Shared, so a million entries do not hold a million copies.
        self._category_info = {
            c.id: CategoryInfo(c.id, c.rank, c.risk) for c in consortium.taxonomy
        }
        self._store = store
        self._reset_memory()
        if store is not None:
            self._load()

    @classmethod
    def open(cls, store: Store, consortium: Consortium) -> NationalView:
        """The store-backed view kept in `store` (empty if the store holds none,
        or one computed under another view configuration). Bring it up to the
        ledger with `catch_up`."""
        return cls(consortium, store)

    def _reset_memory(self) -> None:
        self._ix = _Indexes()
        self._entries: dict[str, Entry] = {}
        self._buckets: dict[int, dict[int, Slot]] = {}    # in memory: bucket -> position -> slot
        self._tree = viewtree.TopTree(self.bucket_bits)
        self._vector: dict[str, int] = {}
        self._ignored: set[bytes] = set()
        self._count = 0               # store-backed only
        self._ignored_count = 0       # store-backed only

    # ------------------------------------------------------------ reads
    @property
    def stored(self) -> bool:
        """True when the view's state lives in a store."""
        return self._store is not None

    def root(self) -> bytes:
        return self._tree.root()

    @property
    def count(self) -> int:
        return len(self._entries) if self._store is None else self._count

    @property
    def entries(self) -> Mapping[str, Entry]:
        if self._store is not None:
            return _StoredEntries(self)
        return MappingProxyType(self._entries)

    @property
    def vector(self) -> dict[str, int]:
        """Per participant, the highest seq applied (the caller applies whole
        feed prefixes, so this is the vector the view stands for)."""
        return dict(self._vector)

    @property
    def ignored(self) -> int:
        """How many distinct records applied resolution ignores (see docs/view.md)."""
        return len(self._ignored) if self._store is None else self._ignored_count

    @property
    def waiting(self) -> dict[bytes, tuple[bytes, ...]]:
        """Target record id -> the corrections or decisions waiting for it.
        (Store-backed: a scan of the record index, for diagnostics and tests.)"""
        out: dict[bytes, tuple[bytes, ...]] = {}
        if self._store is not None:
            st = self._store
            for rid, v in st.items("viewix"):
                if v[:1] in (_WAITING, _IGNORED) and v[1] & _HAS_REFS:
                    out[rid] = tuple(
                        sorted(k[32:] for k, _ in st.items("viewref", rid, rid + _REF_END))
                    )
            return out
        ix = self._ix
        for table in (ix.by_target, ix.decisions_for):
            for target, ids in table.items():
                if target not in ix.facts:
                    out[target] = tuple(sorted(set(out.get(target, ())) | ids))
        return out

    def entry(self, number: str) -> Entry | None:
        if self._store is None:
            return self._entries.get(number)
        raw = self.entry_bytes(number)
        if raw is None:
            return None
        try:
            return Entry.decode(raw)
        except BadInput as e:
            raise StorageFailure(f"stored view entry of {number} does not decode: {e}") from e

    def entry_bytes(self, number: str) -> bytes | None:
        """The entry's canonical bytes (what a lookup serves), or None."""
        if self._store is None:
            e = self._entries.get(number)
            return None if e is None else e.encode()
        return self._store.get("view", number.encode("utf-8"))

    def entries_bytes(self, numbers: Sequence[str]) -> list[bytes | None]:
        """entry_bytes of each number, in one multi-get for a stored view."""
        if self._store is None:
            return [self.entry_bytes(n) for n in numbers]
        return self._store.get_many("view", [n.encode("utf-8") for n in numbers])

    def lookup(self, number: str, at_ms: int) -> Resolution | None:
        e = self.entry(number)
        return None if e is None else e.evaluate(at_ms)

    def numbers(self) -> Iterator[str]:
        """Every number with an entry, in order."""
        if self._store is None:
            return iter(sorted(self._entries))
        return (k.decode("utf-8") for k, _ in self._store.items("view"))

    def proof(self, number: str) -> ViewProof:
        """The proof for `number`'s entry, or for its absence: no other number,
        no key of another number (unless it shares all 64 bits of position)."""
        key = view_key(number)
        pos = viewtree.position(key)
        b = pos >> (viewtree.DEPTH - self.bucket_bits)
        below, slot = viewtree.bucket_path(self._bucket_slots(b), self.bucket_bits, pos)
        bitmap = 0
        siblings = []
        for bit, h in below + self._tree.path(b):     # the top's depths are their bits
            bitmap |= 1 << (viewtree.BITMAP_BITS - 1 - bit)
            siblings.append(h)
        listed = () if slot is None else tuple(m for m in slot.members if m[0] != key)
        return ViewProof(listed, bitmap, tuple(siblings))

    def _bucket_slots(self, b: int) -> list[Slot]:
        """The occupied positions of bucket `b`, sorted."""
        if self._store is None:
            slots = self._buckets.get(b)
            return [] if not slots else sorted(slots.values(), key=lambda s: s.pos)
        if self._tree.bucket(b) == viewtree.EMPTY:
            return []
        start, end = viewtree.bucket_range(b, self.bucket_bits)
        return _slots_from_rows(self._store.items("viewbucket", start, end))

    def checkpoint(self, origin: str, signed_at_ms: int) -> ViewCheckpoint:
        """The view's checkpoint as `origin` signs it at `signed_at_ms`."""
        return ViewCheckpoint(
            origin, _vector_items(self._vector), self.count, self.root(), signed_at_ms
        )

    # ------------------------------------------------------------ writes
    def apply(self, records: Iterable[Record]) -> set[str]:
        """Add records; recompute only the numbers they touch. Returns the
        numbers whose entry changed (appeared or got different bytes).
        Store-backed: one atomic synced write, vector included; raises
        StorageFailure (and changes nothing) when the store fails."""
        if self._store is not None:
            return self._apply_stored(list(records))
        touched: set[str] = set()
        participants = self.consortium.by_id
        for rec in records:
            if rec.issuer in participants and rec.seq > self._vector.get(rec.issuer, 0):
                self._vector[rec.issuer] = rec.seq
            if rec.id in self._ix.facts:
                continue
            fact = self._fact(rec)
            if fact is None:
                self._ignored.add(rec.id)
                continue
            self._index(fact)
            touched |= self._numbers_of(fact)
        changed: set[str] = set()
        dirty: set[int] = set()
        for number in touched:
            new = self._build(number, self._ix)
            old = self._entries.get(number)
            if new is None and old is None:
                continue
            if new is not None and old is not None and new.hash == old.hash:
                continue
            key = view_key(number)
            pos = viewtree.position(key)
            b = pos >> (viewtree.DEPTH - self.bucket_bits)
            slots = self._buckets.setdefault(b, {})
            slot = slots.get(pos)
            members = [m for m in slot.members if m[0] != key] if slot is not None else []
            if new is None:
                del self._entries[number]
            else:
                self._entries[number] = new
                members.append((key, new.hash))
            if members:
                slots[pos] = Slot.of(members)
            else:
                slots.pop(pos, None)
            changed.add(number)
            dirty.add(b)
        tops = {}
        for b in dirty:
            slots = self._buckets[b]
            if not slots:
                del self._buckets[b]
            tops[b], _ = viewtree.rehash_bucket(self._bucket_slots(b), self.bucket_bits)
        self._tree.update(tops)
        return changed

    def clear(self) -> None:
        """Forget every record (store-backed: empty the view's families, in one write)."""
        if self._store is not None:
            from ledger.store import VIEW_FAMILIES

            batch = self._store.batch()
            for cf in VIEW_FAMILIES:
                batch.delete_range(cf, b"", _END)
            batch.put("viewmeta", b"config", self._config_digest())
            self._store.write(batch, sync=False)
        self._reset_memory()

    def save_changes(self, batch: Batch, numbers: Iterable[str]) -> None:
        """Put the entries of `numbers` (what `apply` returned) into the store's
        "view" column family (key: the number, value: the entry bytes) in the
        caller's batch; a number without an entry is deleted. (A store-backed
        view already wrote them in apply; this copies them again.)"""
        for number in numbers:
            raw = self.entry_bytes(number)
            if raw is None:
                batch.delete("view", number.encode("utf-8"))
            else:
                batch.put("view", number.encode("utf-8"), raw)

    # ------------------------------------------------------------ the store
    def _config_digest(self) -> bytes:
        """What the stored entries depend on besides the records: a view
        computed under another configuration is recomputed."""
        c = self.consortium
        p = c.policy
        return hashlib.sha256(
            json.dumps(
                {
                    "v": ENTRY_VERSION,
                    "tree": viewtree.PROOF_VERSION,      # how viewbucket* are laid out
                    "bits": self.bucket_bits,
                    "policy": [p.default_expiry_ms, p.protection_ms, p.high_risk_min_participants,
                               p.identity_min_participants, p.institute_mark_is_high_risk,
                               p.max_expiry_ms, p.reassignment_window_ms, p.clock_skew_ms,
                               p.max_marks_per_participant],
                    # which marks count at all (ledger/payloads/mark.py check_mark)
                    "unmarkable": [sorted(p.protected_numbers), p.foreign_numbers],
                    "participants": sorted([x.id, x.role, x.weight] for x in c.participants),
                    "taxonomy": sorted([x.id, x.rank, x.risk] for x in c.taxonomy),
                    "ranges": sorted([k, sorted(v)] for k, v in c.number_ranges.items()),
                },
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        ).digest()

    def _load(self) -> None:
        st = self._store
        assert st is not None
        if st.get("viewmeta", b"config") != self._config_digest():
            self.clear()
            return
        try:
            raw = st.get("viewmeta", b"vector")
            vector = json.loads(raw) if raw else {}
            if not isinstance(vector, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in vector.items()
            ):
                raise ValueError("not an object of issuer -> seq")
            count, ignored = (st.get("viewmeta", k) for k in (b"count", b"ignored"))
            self._count = _U64.unpack(count)[0] if count else 0
            self._ignored_count = _U64.unpack(ignored)[0] if ignored else 0
            leaves = {_U32.unpack(k)[0]: v for k, v in st.items("viewbuckethash")}
            if any(b >> self.bucket_bits or len(h) != 32 for b, h in leaves.items()):
                raise ValueError("a bucket hash is out of range or not 32 bytes")
        except (ValueError, struct.error) as e:
            raise StorageFailure(f"the stored view's metadata does not parse: {e}") from e
        self._vector = vector
        self._tree.update(leaves)

    def _apply_stored(self, records: list[Record]) -> set[str]:
        st = self._store
        assert st is not None
        w = _StoredApply(st)
        w.fetch(r.id for r in records)
        vector = dict(self._vector)
        ignored = self._ignored_count
        participants = self.consortium.by_id
        touched: set[str] = set()
        for rec in records:
            if rec.issuer in participants and rec.seq > vector.get(rec.issuer, 0):
                vector[rec.issuer] = rec.seq
            cur = w.get(rec.id)
            if cur is not None and cur[:1] != _WAITING:
                continue                           # applied (or ignored) before
            flags = bytes((cur[1] if cur is not None else 0,))
            fact = self._fact(rec)
            if fact is None:
                w.put(rec.id, _IGNORED + flags)
                ignored += 1
            elif isinstance(fact, _MarkFact):
                w.put(rec.id, _MARK + flags + _mark_body(fact))
                w.on.setdefault(fact.number, []).append(fact)
                touched.add(fact.number)
            elif isinstance(fact, _ReassignmentFact):
                w.put(rec.id, _REASSIGNMENT + flags + fact.number.encode("utf-8"))
                w.on.setdefault(fact.number, []).append(fact)
                touched.add(fact.number)
            else:
                c = fact.correction
                kind = _DECISION if c.is_decision else _CORRECTION
                w.put(rec.id, kind + flags + _correction_body(fact))
                w.corrections[rec.id] = fact
                w.fresh.append(fact)
                for t in (c.appeal_id,) if c.is_decision else c.targets:
                    w.add_ref(t, rec.id)
                touched |= self._stored_numbers_of(fact, w)
        self._reach_stored(w)
        self._forget_stored_referrers(w)

        numbers = sorted(touched)
        olds = st.get_many("view", [n.encode("utf-8") for n in numbers])
        known: dict[str, tuple[list[_MarkFact], list[_ReassignmentFact], list[bytes]]] = {}
        for n, old in zip(numbers, olds, strict=True):
            if old is not None:
                known[n] = _facts_of_entry(n, old)
        w.fetch(m.id for marks, _, _ in known.values() for m in marks)   # their referrer flags

        batch = st.batch()
        count = self._count
        changed: set[str] = set()
        by_bucket: dict[int, dict[bytes, bytes | None]] = {}   # bucket -> view key -> hash
        for n, old in zip(numbers, olds, strict=True):
            marks, reassigns, appeals = known.get(n, ([], [], []))
            for f in w.on.get(n, ()):
                if isinstance(f, _MarkFact):
                    marks.append(f)
                else:
                    reassigns.append(f)
            new = self._build(n, self._stored_indexes(n, marks, reassigns, appeals, w))
            if new is None and old is None:
                continue
            if new is not None and old is not None and new.encode() == old:  # bytes: no hash
                continue
            key = n.encode("utf-8")
            vkey = view_key(n)
            b = viewtree.position(vkey) >> (viewtree.DEPTH - self.bucket_bits)
            members = by_bucket.setdefault(b, {})
            if new is None:
                batch.delete("view", key)
                members[vkey] = None
                count -= 1
            else:
                batch.put("view", key, new.encode())
                members[vkey] = new.hash
                count += old is None
            changed.add(n)

        leaves: dict[int, bytes] = {}
        for b, changes in by_bucket.items():
            slots = {s.pos: s for s in self._bucket_slots(b)}
            touched_pos: set[int] = set()
            for vkey, h in changes.items():
                pos = viewtree.position(vkey)
                s = slots.get(pos)
                members = [m for m in s.members if m[0] != vkey] if s is not None else []
                if h is None:
                    batch.delete("viewbucket", vkey)
                else:
                    members.append((vkey, h))
                if members:
                    slots[pos] = Slot.of(members)
                    touched_pos.add(pos)
                else:
                    slots.pop(pos, None)
            ordered = sorted(slots.values(), key=lambda s: s.pos)
            leaves[b], moved = viewtree.rehash_bucket(ordered, self.bucket_bits)
            touched_pos.update(s.pos for s in moved)
            for pos in touched_pos:
                s = slots[pos]
                for vkey, h in s.members:
                    batch.put("viewbucket", vkey, _leaf_value(s, h))
            pre = _U32.pack(b)
            if slots:
                batch.put("viewbuckethash", pre, leaves[b])
            else:
                batch.delete("viewbuckethash", pre)
        for rid in w.dirty:
            v = w.ix[rid]
            assert v is not None
            batch.put("viewix", rid, v)
        for target, refs in w.new_refs.items():
            for r in refs:
                batch.put("viewref", target + r, b"")
        for key in w.dropped_refs:
            batch.delete("viewref", key)
        if vector != self._vector:
            batch.put("viewmeta", b"vector", _encode_vector(vector))
        if count != self._count:
            batch.put("viewmeta", b"count", _U64.pack(count))
        if ignored != self._ignored_count:
            batch.put("viewmeta", b"ignored", _U64.pack(ignored))
        # Unsynced: derived from the synced ledger, caught up after a crash.
        st.write(batch, sync=False)
        # Only after the write succeeded does memory move on.
        self._tree.update(leaves)
        self._vector = vector
        self._count = count
        self._ignored_count = ignored
        return changed

    def _stored_numbers_of(self, f: _CorrectionFact, w: _StoredApply) -> set[str]:
        """`_numbers_of` for a correction or decision, over the stored index."""
        c = f.correction
        if c.is_decision:
            appeal = w.correction(c.appeal_id)
            return set() if appeal is None else w.mark_numbers(appeal.correction)
        out = w.mark_numbers(c)
        for t in c.targets:        # a withdrawal of an appeal reaches the appeal's numbers
            target = w.correction(t)
            if target is not None and not target.correction.is_decision:
                out |= w.mark_numbers(target.correction)
        return out

    def _reach_stored(self, w: _StoredApply) -> None:
        """`_reach` for the store: the appeals that reach a number in this apply
        (new ones, ones a new decision decided, ones that waited for a new mark)
        become candidates there; the entry's kept appeals are the others."""
        for f in w.fresh:
            a: _CorrectionFact | None = f
            if f.correction.is_decision:
                a = w.correction(f.correction.appeal_id)
            if a is None or a.correction.is_decision:
                continue
            for t in a.correction.targets:
                m = w.mark_fact(t)
                if m is not None and m.issuer != a.issuer:
                    w.appeals_on.setdefault(m.number, set()).add(a.id)
        for number, facts in w.on.items():
            for m in facts:
                if isinstance(m, _MarkFact):
                    for r in w.referrer_facts(m.id):
                        if not r.correction.is_decision and r.issuer != m.issuer:
                            w.appeals_on.setdefault(number, set()).add(r.id)

    def _forget_stored_referrers(self, w: _StoredApply) -> None:
        """`_forget_referrers` for the store: of each known target that gained
        referrers, or arrived with some, drop the referrers no entry depends on."""
        keep = _keep(self.consortium.policy.max_marks_per_participant)
        targets = set(w.new_refs)
        targets.update(rid for rid in w.dirty if (v := w.ix[rid]) is not None and v[1] & _HAS_REFS)
        for t in sorted(targets):
            v = w.get(t)
            if v is None or v[:1] in (_WAITING, _IGNORED):
                continue                        # unknown yet: `waiting` lists them all
            issuer = ""
            if v[:1] == _MARK:
                m = w.mark_fact(t)
                assert m is not None
                kind, issuer = _TARGET_MARK, m.issuer
            elif v[:1] == _CORRECTION:
                f = w.correction(t)
                assert f is not None
                kind, issuer = _TARGET_CORRECTION, f.issuer
            else:
                kind = _TARGET_OTHER
            refs = w.referrer_facts(t)
            kept = _kept_referrers(kind, issuer, refs, keep)
            for r in refs:
                if r.id not in kept:
                    w.drop_ref(t, r.id)

    def _stored_indexes(
        self,
        number: str,
        marks: list[_MarkFact],
        reassigns: list[_ReassignmentFact],
        appeals: list[bytes],
        w: _StoredApply,
    ) -> _Indexes:
        """The part of the in-memory indexes that `_build(number)` reads: the
        number's marks (those its entry held, and new ones) and reassignments,
        its candidate appeals (those its entry kept, and those reaching it now)
        with their decisions and withdrawals, and the marks and self-corrections
        of the marks the entry keeps. Every read is bounded by what the entry
        keeps plus what this apply brings."""
        keep = _keep(self.consortium.policy.max_marks_per_participant)
        ix = _Indexes()
        facts = ix.facts
        candidates = list(dict.fromkeys([*appeals, *sorted(w.appeals_on.get(number, ()))]))
        found: list[_CorrectionFact] = []
        for aid in candidates:
            a = w.correction(aid)
            if a is None:
                raise StorageFailure(f"view appeal {aid.hex()} is not indexed")
            facts[aid] = a
            found.append(a)
            for r in w.referrer_facts(aid):
                facts[r.id] = r
                table = ix.decisions_for if r.correction.is_decision else ix.by_target
                table.setdefault(aid, set()).add(r.id)
        if candidates:
            ix.appeals_on[number] = set(candidates)
        by_id = {m.id: m for m in marks}
        kept = {m.id: m for m in _latest_per_issuer(marks, keep)}
        for a in _kept_appeals(found, ix, keep):
            for t in a.correction.targets:
                if t not in kept:
                    m = by_id.get(t) or w.mark_fact(t)
                    if m is not None and m.number == number and m.issuer != a.issuer:
                        kept[t] = m
        if kept:
            ix.marks_on[number] = set(kept)
        if reassigns:
            ix.reassignments_on[number] = {r.id for r in reassigns}
        facts.update((r.id, r) for r in reassigns)
        for m in kept.values():
            facts[m.id] = m
            for r in w.referrer_facts(m.id):
                if r.issuer == m.issuer and not r.correction.is_decision:
                    facts[r.id] = r
                    ix.by_target.setdefault(m.id, set()).add(r.id)
        return ix

    # ------------------------------------------------------------ internals
    def _fact(self, rec: Record) -> _Fact | None:
        """The record as resolution uses it, or None when resolution ignores it
        (what the ledger would refuse in context: unknown issuer or category,
        a decision not by the institute, a reassignment not by the holder, a
        mark or reassignment whose own times break `ledger.rules`)."""
        cons = self.consortium
        pay = rec.payload
        if not may_issue(cons, rec.issuer, pay):  # the ledger's own rule (ledger.payloads)
            return None
        if time_violation(rec.issued_at_ms, pay, cons.policy) is not None:
            return None           # its own times break a bound (ledger/rules.py)
        if isinstance(pay, Mark):
            expires = pay.expires_at_ms or pay.observed_at_ms + cons.policy.default_expiry_ms
            return _MarkFact(
                rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay.number, pay.category,
                pay.score, pay.reports, pay.observed_at_ms, expires,
            )
        if isinstance(pay, Correction):
            return _CorrectionFact(rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay)
        if isinstance(pay, Reassignment):
            return _ReassignmentFact(
                rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay.number, pay.effective_at_ms
            )
        return None

    def _index(self, f: _Fact) -> None:
        ix = self._ix
        ix.facts[f.id] = f
        if isinstance(f, _MarkFact):
            on = ix.marks_on.setdefault(f.number, set())
            on.add(f.id)
            # Keep the index as bounded as the entry: drop the issuer's oldest beyond the cap.
            mine = [m for m in (ix.facts[i] for i in on) if m.issuer == f.issuer]
            if len(mine) > _keep(self.consortium.policy.max_marks_per_participant):
                on.discard(min(mine, key=_order).id)
            for cid in ix.by_target.get(f.id, ()):     # appeals that waited for it
                self._reach(_as_correction(ix.facts[cid]))
        elif isinstance(f, _ReassignmentFact):
            ix.reassignments_on.setdefault(f.number, set()).add(f.id)
        elif f.correction.is_decision:
            ix.decisions_for.setdefault(f.correction.appeal_id, set()).add(f.id)
            appeal = ix.facts.get(f.correction.appeal_id)
            if isinstance(appeal, _CorrectionFact) and not appeal.correction.is_decision:
                self._reach(appeal)                    # decided: kept again (rule 2a)
            self._forget_referrers(f.correction.appeal_id)
        else:
            for t in f.correction.targets:
                ix.by_target.setdefault(t, set()).add(f.id)
            self._reach(f)
            for t in f.correction.targets:
                self._forget_referrers(t)
        self._forget_referrers(f.id)          # it may arrive after what names it

    def _reach(self, a: _CorrectionFact) -> None:
        """Add `a` to the appeals of each number where it appeals a known mark (one
        of another issuer), keeping there only what `_kept_appeals` keeps."""
        ix = self._ix
        keep = _keep(self.consortium.policy.max_marks_per_participant)
        for t in a.correction.targets:
            m = ix.facts.get(t)
            if not isinstance(m, _MarkFact) or m.issuer == a.issuer:
                continue
            on = ix.appeals_on.setdefault(m.number, set())
            if a.id in on:
                continue
            on.add(a.id)
            kept = _kept_appeals((_as_correction(ix.facts[i]) for i in on), ix, keep)
            ix.appeals_on[m.number] = {k.id for k in kept}

    def _forget_referrers(self, target: bytes) -> None:
        """Drop from the in-memory index the referrers of a known `target` that no
        entry can depend on (`_kept_referrers`), so reading them stays bounded."""
        ix = self._ix
        t = ix.facts.get(target)
        if t is None or (target not in ix.by_target and target not in ix.decisions_for):
            return
        refs = ix.by_target.get(target, set()) | ix.decisions_for.get(target, set())
        kept = _kept_referrers(
            _target_kind(t), t.issuer, (_as_correction(ix.facts[r]) for r in refs),
            _keep(self.consortium.policy.max_marks_per_participant),
        )
        for table in (ix.by_target, ix.decisions_for):
            ids = table.get(target)
            if ids is not None:
                ids &= kept
                if not ids:
                    del table[target]

    def _mark_numbers(self, c: Correction) -> set[str]:
        out = set()
        for t in c.targets:
            f = self._ix.facts.get(t)
            if isinstance(f, _MarkFact):
                out.add(f.number)
        return out

    def _numbers_of(self, f: _Fact) -> set[str]:
        if isinstance(f, _MarkFact | _ReassignmentFact):
            return {f.number}
        facts = self._ix.facts
        c = f.correction
        if c.is_decision:
            appeal = facts.get(c.appeal_id)
            if isinstance(appeal, _CorrectionFact):
                return self._mark_numbers(appeal.correction)
            return set()
        out = self._mark_numbers(c)
        for t in c.targets:        # a withdrawal of an appeal reaches the appeal's numbers
            target = facts.get(t)
            if isinstance(target, _CorrectionFact) and not target.correction.is_decision:
                out |= self._mark_numbers(target.correction)
        return out

    def _build(self, number: str, ix: _Indexes) -> Entry | None:
        """The entry of `number` from the facts `ix` holds about it."""
        facts = ix.facts
        policy = self.consortium.policy
        keep = _keep(policy.max_marks_per_participant)
        # The appeals kept (rule 2a), then the marks: each participant's latest
        # `keep`, and every mark a kept appeal targets (so no flood drops those).
        kept_appeals = _kept_appeals(
            (_as_correction(facts[i]) for i in ix.appeals_on.get(number, ())), ix, keep
        )
        kept_marks: dict[bytes, _MarkFact] = {
            m.id: m
            for m in _latest_per_issuer(
                (_as_mark(facts[i]) for i in ix.marks_on.get(number, ())), keep
            )
        }
        appeal_targets: dict[bytes, list[bytes]] = {}
        for a in kept_appeals:
            for t in dict.fromkeys(a.correction.targets):
                m = facts.get(t)
                if isinstance(m, _MarkFact) and m.number == number and m.issuer != a.issuer:
                    kept_marks[t] = m
                    appeal_targets.setdefault(a.id, []).append(t)
        marks = sorted(kept_marks.values(), key=lambda m: (m.observed_at, m.id))
        reassigns = sorted(
            (facts[i] for i in ix.reassignments_on.get(number, ())),
            key=lambda r: (r.effective_at, r.id),
        )
        if not marks and not reassigns:
            return None
        by_id = {m.id: m for m in marks}
        recats: dict[bytes, list[Recategorization]] = {m.id: [] for m in marks}
        spans: dict[bytes, list[SetAsideSpan]] = {m.id: [] for m in marks}

        for m in marks:
            withdrawals = []
            own_recats = []
            for cid in ix.by_target.get(m.id, ()):
                c = facts[cid]
                assert isinstance(c, _CorrectionFact)
                if c.issuer != m.issuer:
                    continue                # an appeal: taken from appeals_on above
                if c.correction.action == WITHDRAW:
                    withdrawals.append(c)
                else:
                    own_recats.append(c)
            for c in _kept_recategorizations(own_recats, keep):
                recats[m.id].append(Recategorization(c.issued_at, c.correction.category, c.id))
            if withdrawals:
                w = min(withdrawals, key=_order)
                spans[m.id].append(SetAsideSpan(w.issued_at, WITHDRAWN, w.id))
            later = [r for r in reassigns if r.effective_at > m.observed_at]
            if later:
                spans[m.id].append(SetAsideSpan(later[0].effective_at, REASSIGNED, later[0].id))
            recats[m.id].sort(key=lambda r: (r.at, r.ref))

        def categories_until(mid: bytes, at: int) -> set[str]:
            # As marked, and every kept recategorization dated up to `at`: a later
            # (or backdated) recategorization can only add a category, never hide one.
            return {by_id[mid].category} | {r.category for r in recats[mid] if r.at <= at}

        appeals: list[Appeal] = []
        protections: set[Protection] = set()
        for a in kept_appeals:
            aid, targets = a.id, appeal_targets.get(a.id, [])
            if not targets:
                continue                    # it reaches this number through no known mark
            targets.sort()
            decision = _first_decision(a, ix)
            pulled = [
                w for w in map(_as_correction, (facts[i] for i in ix.by_target.get(aid, ())))
                if w.issuer == a.issuer and w.correction.action == WITHDRAW
            ]
            pull = min(pulled, key=_order) if pulled else None
            status: str = PENDING
            closed_at: int | None = None
            closed_by = b""
            closed: _CorrectionFact | None = None
            # A decision, once in the set, is final: no withdrawal undoes it, whatever
            # issued_at its appellant wrote on the withdrawal.
            if decision is not None:
                status = UPHELD if decision.correction.outcome == UPHOLD else REJECTED
                closed = decision
            elif pull is not None:
                status, closed = APPEAL_WITHDRAWN, pull
            if closed is not None:
                closed_at, closed_by = closed.issued_at, closed.id
            if status == UPHELD:
                assert closed_at is not None
                end = closed_at + policy.protection_ms
                # A new tenure starts clean: a protection ends at the next reassignment.
                for r in reassigns:
                    if r.effective_at > closed_at:
                        end = min(end, r.effective_at)
                        break
                for t in targets:
                    spans[t].append(SetAsideSpan(closed_at, APPEAL_UPHELD, aid))
                    if end > closed_at:
                        protections.update(
                            Protection(cat, closed_at, end, closed_by)
                            for cat in categories_until(t, closed_at)
                        )
            appeals.append(
                Appeal(
                    id=aid,
                    appellant=a.issuer,
                    targets=tuple(targets),
                    action=a.correction.action,
                    category=a.correction.category,
                    filed_at=a.issued_at,
                    status=status,
                    closed_at=closed_at,
                    closed_by=closed_by,
                )
            )
        appeals.sort(key=lambda x: (x.filed_at, x.id))

        entry_marks = []
        used = set()
        for m in marks:
            p = self.consortium.by_id[m.issuer]
            used.add(m.category)
            used.update(r.category for r in recats[m.id])
            entry_marks.append(
                EntryMark(
                    id=m.id,
                    participant=m.issuer,
                    role=p.role,
                    weight=p.weight,
                    category=m.category,
                    score=m.score,
                    reports=m.reports,
                    observed_at=m.observed_at,
                    expires_at=m.expires_at,
                    issued_at=m.issued_at,
                    seq=m.seq,
                    recategorized=tuple(recats[m.id]),
                    set_aside=tuple(sorted(spans[m.id], key=lambda s: (s.since, s.reason, s.ref))),
                )
            )
        used.update(p.category for p in protections)
        return Entry(
            number=number,
            rules=self._rules,
            categories=tuple(self._category_info[c] for c in sorted(used)),
            marks=tuple(entry_marks),
            appeals=tuple(appeals),
            reassignments=tuple(
                EntryReassignment(r.id, r.issuer, r.effective_at) for r in reassigns
            ),
            protections=tuple(
                sorted(protections, key=lambda p: (p.since, p.category, p.until, p.decision))
            ),
        )


def _encode_vector(vector: Mapping[str, int]) -> bytes:
    return json.dumps(dict(sorted(vector.items())), separators=(",", ":")).encode("ascii")


def resolve(records: Iterable[Record], consortium: Consortium) -> NationalView:
    """The national view of a set of records (order and duplicates do not matter)."""
    view = NationalView(consortium)
    view.apply(records)
    return view


def catch_up(view: NationalView, ledger: NodeLedger, batch_size: int = 1000) -> int:
    """Bring `view` to the ledger: apply every record of each feed above the
    view's vector, up to the feed's counted seq (a frozen feed stops at its
    freeze). A view that is ahead of a feed (it froze after the view applied
    records beyond the freeze) is cleared and rebuilt. Returns how many
    records were applied. Raises StorageFailure for stored records that do
    not parse or a feed shorter than its head says."""
    feeds = ledger.feeds()
    vector = view.vector
    if any(
        seq > (feeds[i].counted_seq if i in feeds else 0) for i, seq in vector.items()
    ):
        view.clear()
        vector = {}
    applied = 0
    for issuer, feed in sorted(feeds.items()):
        after, upto = vector.get(issuer, 0), feed.counted_seq
        while after < upto:
            envelopes = ledger.records_after(issuer, after, min(batch_size, upto - after))
            if not envelopes:
                raise StorageFailure(f"feed {issuer} stops at {after}, its head says {upto}")
            try:
                records = [Record.from_envelope(env) for env in envelopes]
            except LedgerError as e:
                raise StorageFailure(f"a stored record of {issuer} does not parse: {e}") from e
            view.apply(records)
            after += len(records)
            applied += len(records)
    return applied


def rebuild_from_ledger(
    ledger: NodeLedger, batch_size: int = 1000, view: NationalView | None = None
) -> NationalView:
    """The view of every feed up to its counted seq (a frozen feed stops at
    its freeze), read from the ledger's store in batches: into a new
    in-memory view, or into `view` after clearing it (store-backed: its
    families are emptied, then refilled batch by batch)."""
    if view is None:
        view = NationalView(ledger.consortium)
    else:
        view.clear()
    catch_up(view, ledger, batch_size)
    return view
