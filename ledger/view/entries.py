"""A view entry: everything the view knows about one number, and its canonical bytes.

`Entry.encode()` gives the bytes a lookup serves and the view tree hashes
(`entry_hash`); `Entry.decode` accepts exactly those bytes and raises BadInput
for anything else; `Entry.evaluate(at_ms)` answers for an explicit time
(ledger/view/resolution.py). The byte format is in docs/view.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ledger import merkle
from ledger.errors import BadInput
from ledger.record import RECATEGORIZE, WITHDRAW
from ledger.view.parts import (
    APPEAL_STATUSES,
    ENTRY_VERSION,
    MAX_NUMBER_BYTES,
    RISK_HIGH,
    RISK_MEDIUM,
    ROLES,
    SPAN_REASONS,
    Appeal,
    CategoryInfo,
    EntryComplaint,
    EntryMark,
    EntryReassignment,
    Protection,
    Recategorization,
    Rules,
    SetAsideSpan,
)
from ledger.view.resolution import Resolution, evaluate

_HEX_ID = re.compile(r"[0-9a-f]{64}\Z")
_HEX_TAG = re.compile(r"[0-9a-f]{16}\Z")

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
    complaints: tuple[EntryComplaint, ...] = ()     # in (call_at, id) order

    @_cached
    def _categories(self) -> dict[str, CategoryInfo]:
        return {c.id: c for c in self.categories}

    def category_info(self, cid: str) -> CategoryInfo:
        """The category as the entry describes it; one it does not describe is
        treated as a risk of rank 0."""
        return self._categories.get(cid) or CategoryInfo(cid, 0, True)

    def evaluate(self, at_ms: int) -> Resolution:
        """The entry's answer at `at_ms` (see docs/view.md for the rules)."""
        return evaluate(self, at_ms)

    def to_json(self) -> dict[str, Any]:
        r = self.rules
        return {
            "v": ENTRY_VERSION,
            "number": self.number,
            "rules": {
                "high_risk_min_participants": r.high_risk_min_participants,
                "identity_min_participants": r.identity_min_participants,
                "institute_mark_is_high_risk": r.institute_mark_is_high_risk,
                "complaint_risk_complainants": r.complaint_risk_complainants,
                "complaint_risk_window_ms": r.complaint_risk_window_ms,
                "complaint_risk": r.complaint_risk,
            },
            "categories": [[c.id, c.rank, c.risk] for c in self.categories],
            "complaints": [
                {"id": c.id.hex(), "by": c.by, "category": c.category, "call_at": c.call_at,
                 "filed_at": c.filed_at, "tag": c.tag.hex()}
                for c in self.complaints
            ],
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
        q = QUOTE
        parts = [
            '{"appeals":[',
            ",".join(
                f'{{"action":{q(a.action)},"by":{q(a.appellant)},"category":{q(a.category)},'
                f'"closed_at":{"null" if a.closed_at is None else int_text(a.closed_at)},'
                f'"closed_by":"{a.closed_by.hex()}","filed_at":{int_text(a.filed_at)},'
                f'"id":"{a.id.hex()}","status":{q(a.status)},"targets":['
                + ",".join(f'"{t.hex()}"' for t in a.targets)
                + "]}"
                for a in self.appeals
            ) if self.appeals else "",
            '],"categories":[',
            ",".join(map(_category_text, self.categories)),
            '],"complaints":[',
            ",".join(
                f'{{"by":{q(c.by)},"call_at":{int_text(c.call_at)},"category":{q(c.category)},'
                f'"filed_at":{int_text(c.filed_at)},"id":"{c.id.hex()}","tag":"{c.tag.hex()}"}}'
                for c in self.complaints
            ) if self.complaints else "",
            '],"marks":[',
            ",".join(map(_mark_text, self.marks)),
            f'],"number":{q(self.number)},"protections":[',
            ",".join(
                f'{{"category":{q(p.category)},"decision":"{p.decision.hex()}",'
                f'"since":{int_text(p.since)},"until":{int_text(p.until)}}}'
                for p in self.protections
            ) if self.protections else "",
            '],"reassignments":[',
            ",".join(
                f'{{"by":{q(x.carrier)},"effective_at":{int_text(x.effective_at)},'
                f'"id":"{x.id.hex()}"}}'
                for x in self.reassignments
            ) if self.reassignments else "",
            '],"rules":',
            _rules_text(self.rules),
            f',"v":{int_text(ENTRY_VERSION)}}}',
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
QUOTE = json.encoder.encode_basestring_ascii   # the string form _CANONICAL writes


def int_text(v: int) -> str:
    """An int as _CANONICAL writes it (a bool as true/false, as json does)."""
    return int.__repr__(v) if v.__class__ is int else _CANONICAL.encode(v)


def _bool_text(v: bool) -> str:
    """A bool as _CANONICAL writes it (anything else through _CANONICAL itself)."""
    return "true" if v is True else "false" if v is False else _CANONICAL.encode(v)


# A mark's object with every integer field an exact int (as every fact the view
# builds has): one %-format instead of a call per field. %d would write a bool
# as 1, not true, so anything else goes through int_text, field by field.
_MARK_FORMAT = (
    '{"by":%s,"category":%s,"expires_at":%d,"id":"%s","issued_at":%d,"observed_at":%d,'
    '"recategorized":[%s],"reports":%d,"role":%s,"score":%d,"seq":%d,"set_aside":[%s],'
    '"weight":%d}'
)
_INT_ONLY = {int}


def _mark_text(m: EntryMark) -> str:
    """The mark's object in an entry's canonical bytes."""
    q = QUOTE
    recats = ",".join(
        f'[{int_text(x.at)},{q(x.category)},"{x.ref.hex()}"]' for x in m.recategorized
    ) if m.recategorized else ""
    spans = ",".join(
        f'[{int_text(x.since)},{q(x.reason)},"{x.ref.hex()}"]' for x in m.set_aside
    ) if m.set_aside else ""
    ints = (m.expires_at, m.issued_at, m.observed_at, m.reports, m.score, m.seq, m.weight)
    if {*map(type, ints)} == _INT_ONLY:
        return _MARK_FORMAT % (
            q(m.participant), q(m.category), m.expires_at, m.id.hex(), m.issued_at,
            m.observed_at, recats, m.reports, q(m.role), m.score, m.seq, spans, m.weight,
        )
    return (
        f'{{"by":{q(m.participant)},"category":{q(m.category)},'
        f'"expires_at":{int_text(m.expires_at)},"id":"{m.id.hex()}",'
        f'"issued_at":{int_text(m.issued_at)},"observed_at":{int_text(m.observed_at)},'
        f'"recategorized":[{recats}],"reports":{int_text(m.reports)},"role":{q(m.role)},'
        f'"score":{int_text(m.score)},"seq":{int_text(m.seq)},"set_aside":[{spans}],'
        f'"weight":{int_text(m.weight)}}}'
    )


# CategoryInfo -> its text, by identity, for the objects a builder shares
# (ledger/view/build.py: one per category for every entry it makes), so each is
# written once. By identity, not equality: CategoryInfo("x", 1, True) equals
# CategoryInfo("x", True, True), which is written differently.
_category_texts: dict[int, tuple[CategoryInfo, str]] = {}


def share_category_texts(infos: Iterable[CategoryInfo]) -> None:
    """Write these (shared) categories' texts once, for every entry that holds them."""
    for c in infos:
        if len(_category_texts) >= 4096:     # builders made by the thousand (tests): enough
            return
        # The pair keeps c alive, so its id stays its own.
        _category_texts[id(c)] = (c, f"[{QUOTE(c.id)},{int_text(c.rank)},{_bool_text(c.risk)}]")


def _category_text(c: CategoryInfo) -> str:
    """The category's list in an entry's canonical bytes."""
    hit = _category_texts.get(id(c))
    if hit is not None and hit[0] is c:
        return hit[1]
    return f"[{QUOTE(c.id)},{int_text(c.rank)},{_bool_text(c.risk)}]"


# The last Rules object written and its text: every entry one builder makes
# shares its one Rules object. By identity, not equality: Rules(1, ..) equals
# Rules(True, ..) but is written differently.
_last_rules: tuple[Rules | None, str] = (None, "")


def _rules_text(r: Rules) -> str:
    """The rules' object in an entry's canonical bytes."""
    global _last_rules
    last, text = _last_rules
    if last is not r:
        q = QUOTE
        text = (
            f'{{"complaint_risk":{q(r.complaint_risk)},'
            f'"complaint_risk_complainants":{int_text(r.complaint_risk_complainants)},'
            f'"complaint_risk_window_ms":{int_text(r.complaint_risk_window_ms)},'
            f'"high_risk_min_participants":{int_text(r.high_risk_min_participants)},'
            f'"identity_min_participants":{int_text(r.identity_min_participants)},'
            f'"institute_mark_is_high_risk":{_bool_text(r.institute_mark_is_high_risk)}}}'
        )
        _last_rules = (r, text)      # one tuple: a reader in another thread sees a pair
    return text


def _no_float(s: str) -> Any:
    raise ValueError(f"non-integer number {s!r}")


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
               "protections", "complaints"}
_RULE_KEYS = {"high_risk_min_participants", "identity_min_participants",
              "institute_mark_is_high_risk", "complaint_risk_complainants",
              "complaint_risk_window_ms", "complaint_risk"}
_COMPLAINT_KEYS = {"id", "by", "category", "call_at", "filed_at", "tag"}
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
        _int(r["complaint_risk_complainants"]),
        _int(r["complaint_risk_window_ms"]),
        _str(r["complaint_risk"], (RISK_MEDIUM, RISK_HIGH)),
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
            spans.append(SetAsideSpan(_int(since), _str(reason, SPAN_REASONS), _id(ref)))
        marks.append(
            EntryMark(
                id=_id(m["id"]),
                participant=_str(m["by"]),
                role=_str(m["role"], ROLES),
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
    complaints = []
    for c in (_obj(y, _COMPLAINT_KEYS) for y in _list(o["complaints"])):
        tag = _str(c["tag"])
        if not _HEX_TAG.match(tag):
            raise ValueError("a complaint's tag is 8 bytes in lowercase hex")
        complaints.append(EntryComplaint(_id(c["id"]), _str(c["by"]), _str(c["category"]),
                                         _int(c["call_at"]), _int(c["filed_at"]),
                                         bytes.fromhex(tag)))
    return Entry(
        number, rules, tuple(cats), tuple(marks), tuple(appeals), tuple(reassignments),
        tuple(protections), tuple(complaints),
    )


def entry_hash(entry_bytes: bytes) -> bytes:
    """An entry's hash: the RFC 9162 leaf hash of its canonical bytes."""
    return merkle.leaf_hash(entry_bytes)

