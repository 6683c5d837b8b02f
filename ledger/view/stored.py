"""A view's state in a node's store (ledger/store.py; docs/view.md, "Persistence").

    view            number                    -> entry bytes
    viewix          record id                 -> kind (1) || flags (1) || body
    viewref         target id || referrer id  -> b""
    viewbucket      u32 bucket                -> its leaf rows, sorted by view key, each
                                                 view key (32) || entry hash (32) || u8 depth
                                                 || hash (32) || u8 depth || hash (32)
    viewbuckethash  u32 bucket                -> the bucket's subtree hash (non-empty buckets)
    viewmeta        b"config" | b"vector" | b"count" | b"ignored"
    viewchanged     number | b"*"             -> b"" (the change journal, below)

viewix kinds and bodies: W waiting (unknown, but named by a correction or a
decision), I ignored, M mark (its number, a newline, its fact as JSON), R
reassignment (its number), C correction and D decision (the fact as JSON),
P complaint (its number: an entry keeps its complaints, and one it dropped
never comes back).
Flag bit 0: viewref holds referrers of this id. The marks and reassignments an
entry keeps are read back from the stored entry of its number; a mark it
dropped, from its viewix body when an appeal brings it back. A viewbucket row
ends with its position's two cached chain points (viewtree.Slot: the hash of
the subtree that holds this position alone, at two depths), the same in every
row of a position. A bucket is one value, not one key per entry, so an apply
reads every bucket it changes with one multi-get (a point read the family's
Bloom filter answers from one table) instead of a range scan per bucket
(an iterator seeks in every table of the family); it rewrites the bucket's
few rows whole (~1.7 entries per bucket at 100k entries and 16 bits).

The change journal: every entry written or deleted puts its number into
viewchanged in the same batch, and `clear` puts b"*" (any entry may have
changed); a view opened with `journal=False` (a node that keeps no screen
rows) writes none of it. The view never reads it and never removes from it: it tells data
derived from the entries elsewhere (the screen's rows, node/screenindex.py)
which of them to redo after a restart, and since it is in the entry's own
write, a crash cannot leave an entry changed without its number there.

Only the tree's dense top stays in memory. An apply reads what it needs,
keeps its changes in an overlay, and writes them in one atomic batch at
`commit` (unsynced: the view is derived from the synced ledger and caught up
after a crash). Every read raises StorageFailure when the store fails or a
value does not parse; memory moves on only after the write succeeded.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from keys.consortium import Consortium
from ledger import viewtree
from ledger.errors import BadInput, LedgerError, StorageFailure
from ledger.record import Correction
from ledger.view.entries import QUOTE, Entry, int_text
from ledger.view.facts import ComplaintFact, CorrectionFact, Fact, MarkFact, ReassignmentFact
from ledger.view.parts import ENTRY_VERSION
from ledger.view.state import Held
from ledger.viewtree import Slot

if TYPE_CHECKING:
    from ledger.store import Batch, Store

WAITING, IGNORED, MARK, REASSIGNMENT, CORRECTION, DECISION, COMPLAINT = (
    b"W", b"I", b"M", b"R", b"C", b"D", b"P"
)
HAS_REFS = 1
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
CHANGED = "viewchanged"      # the change journal's family
EVERYTHING = b"*"            # its key after a clear: any entry may have changed
END = b"\xff" * 80           # above every key the view families hold (ids, numbers <= 36 bytes)
REF_END = b"\xff" * 33       # target || REF_END is above target || any 32-byte referrer


def correction_body(f: CorrectionFact) -> bytes:
    """A correction's (or decision's) viewix body: its fact as a compact JSON list."""
    c = f.correction
    return json.dumps(
        [f.issuer, f.seq, f.issued_at, [t.hex() for t in c.targets], c.action, c.category,
         c.reason, c.appeal_id.hex(), c.outcome],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


def mark_body(f: MarkFact) -> bytes:
    """A mark's viewix body: its number, a newline, then its fact, read back when an
    appeal keeps a mark its entry had dropped (rule 2a)."""
    i, q = int_text, QUOTE    # written directly: the bytes compact json.dumps gives
    ints = (f.seq, f.issued_at, f.score, f.reports, f.observed_at, f.expires_at)
    if {*map(type, ints)} == _INT_ONLY:      # every fact the view builds: one %-format
        fact = _MARK_BODY % (q(f.issuer), f.seq, f.issued_at, q(f.category), f.score,
                             f.reports, f.observed_at, f.expires_at)
    else:
        fact = (
            f"[{q(f.issuer)},{i(f.seq)},{i(f.issued_at)},{q(f.category)},{i(f.score)},"
            f"{i(f.reports)},{i(f.observed_at)},{i(f.expires_at)}]"
        )
    return f.number.encode("utf-8") + b"\n" + fact.encode("ascii")


_MARK_BODY = "[%s,%d,%d,%s,%d,%d,%d,%d]"    # %d writes a bool as 1: exact ints only
_INT_ONLY = {int}


def _mark_value(f: Fact) -> tuple[bytes, bytes]:
    assert isinstance(f, MarkFact)
    return MARK, mark_body(f)


def _reassignment_value(f: Fact) -> tuple[bytes, bytes]:
    assert isinstance(f, ReassignmentFact)
    return REASSIGNMENT, f.number.encode("utf-8")


def _correction_value(f: Fact) -> tuple[bytes, bytes]:
    assert isinstance(f, CorrectionFact)
    return (DECISION if f.correction.is_decision else CORRECTION), correction_body(f)


def _complaint_value(f: Fact) -> tuple[bytes, bytes]:
    assert isinstance(f, ComplaintFact)
    return COMPLAINT, f.number.encode("utf-8")


# Fact class -> its viewix kind and body (one entry per fact class in ledger/view/facts.py).
_INDEX_VALUE: dict[type, Callable[[Fact], tuple[bytes, bytes]]] = {
    MarkFact: _mark_value,
    ReassignmentFact: _reassignment_value,
    CorrectionFact: _correction_value,
    ComplaintFact: _complaint_value,
}


def mark_from_body(rid: bytes, body: bytes) -> MarkFact:
    try:
        number, nl, raw = body.partition(b"\n")
        if not nl:
            raise ValueError("no fact after the number")
        issuer, seq, issued_at, category, score, reports, observed_at, expires_at = json.loads(
            raw
        )
        return MarkFact(rid, issuer, seq, issued_at, number.decode("utf-8"), category, score,
                        reports, observed_at, expires_at)
    except (ValueError, TypeError) as e:
        raise StorageFailure(f"view index of mark {rid.hex()} does not parse: {e}") from e


def correction_from_body(rid: bytes, body: bytes) -> CorrectionFact:
    try:
        issuer, seq, issued_at, targets, action, category, reason, appeal, outcome = json.loads(
            body
        )
        return CorrectionFact(
            rid, issuer, seq, issued_at,
            Correction(
                tuple(bytes.fromhex(t) for t in targets), action, category, reason,
                bytes.fromhex(appeal), outcome,
            ),
        )
    except (ValueError, TypeError, LedgerError) as e:
        raise StorageFailure(f"view index of record {rid.hex()} does not parse: {e}") from e


# json.loads without its Python layers (encoding detection, decode, raw_decode):
# the C scanner itself, which raises StopIteration where nothing parses.
_scan = json.JSONDecoder().scan_once


def held_of_entry(number: str, raw: bytes) -> Held:
    """The mark and reassignment facts a stored entry carries (all those it keeps),
    and the ids of the appeals it keeps."""
    try:
        text = raw.decode("ascii")              # an entry's bytes are ASCII JSON
        obj, end = _scan(text, 0)
        if end != len(text):
            raise ValueError(f"bytes after the entry at {end}")
        marks = [
            MarkFact(
                bytes.fromhex(m["id"]), m["by"], m["seq"], m["issued_at"], number, m["category"],
                m["score"], m["reports"], m["observed_at"], m["expires_at"],
            )
            for m in obj["marks"]
        ]
        reassigns = [
            ReassignmentFact(bytes.fromhex(r["id"]), r["by"], 0, 0, number, r["effective_at"])
            for r in obj["reassignments"]
        ]
        appeals = [bytes.fromhex(a["id"]) for a in obj["appeals"]]
        complaints = [
            ComplaintFact(bytes.fromhex(c["id"]), c["by"], 0, c["filed_at"], number,
                          c["category"], c["call_at"], bytes.fromhex(c["tag"]))
            for c in obj["complaints"]
        ]
    except (ValueError, TypeError, KeyError, StopIteration) as e:
        raise StorageFailure(f"stored view entry of {number} does not parse: {e!r}") from e
    return Held(raw, marks, reassigns, appeals, complaints)


ROW = 130    # a viewbucket row: view key || entry hash || u8 depth || hash || u8 depth || hash
_ROW = struct.Struct(">32s32sB32sB32s")


def bucket_value(slots: Iterable[Slot]) -> bytes:
    """A bucket's viewbucket value: one row per entry of its slots (sorted)."""
    pack = _ROW.pack
    return b"".join(
        [pack(k, h, s.depth, s.top, s.deep_depth, s.deep) for s in slots for k, h in s.members]
    )


_DEPTHS = frozenset(d for d in range(viewtree.DEPTH + 1) if viewtree.is_boundary(d))


def slots_from_value(b: int, raw: bytes, bucket_bits: int) -> list[Slot]:
    """The slots of bucket `b`'s stored value (rows strictly in key order, so
    in position order, every key in the bucket). Raises StorageFailure."""
    if not raw or len(raw) % ROW:
        raise StorageFailure(f"view bucket {b} is {len(raw)} bytes, not rows of {ROW}")
    out: list[Slot] = []
    depths = _DEPTHS
    last: Slot | None = None
    prev = b""
    from_bytes = int.from_bytes
    for k, h, depth, top, deep_depth, deep in _ROW.iter_unpack(raw):
        if k <= prev or depth > deep_depth or depth not in depths or deep_depth not in depths:
            raise StorageFailure(f"view leaf {k.hex()[:16]} of bucket {b} does not parse")
        prev = k
        pos = from_bytes(k[:8], "big")          # the key's first 64 bits
        if last is not None and last.pos == pos:
            last.members = (*last.members, (k, h))
        else:
            last = Slot(pos, ((k, h),), depth, top, deep_depth, deep)
            out.append(last)
    shift = viewtree.DEPTH - bucket_bits
    if out[0].pos >> shift != b or out[-1].pos >> shift != b:
        raise StorageFailure(f"view bucket {b} holds a leaf of another bucket")
    return out


def encode_vector(vector: Mapping[str, int]) -> bytes:
    """The vector's viewmeta value: compact JSON, issuers sorted (written at every
    apply that moves it, so by hand: the bytes json.dumps gives)."""
    items = sorted(vector.items())
    if all(k.__class__ is str and v.__class__ is int for k, v in items):
        q = QUOTE
        return ("{" + ",".join([f"{q(k)}:{int.__repr__(v)}" for k, v in items]) + "}").encode(
            "ascii"
        )
    return json.dumps(dict(items), separators=(",", ":")).encode("ascii")


def config_digest(consortium: Consortium, bucket_bits: int) -> bytes:
    """What the stored entries depend on besides the records: a view computed
    under another configuration is recomputed."""
    c = consortium
    p = c.policy
    return hashlib.sha256(
        json.dumps(
            {
                "v": ENTRY_VERSION,
                "tree": viewtree.PROOF_VERSION,      # how the tree's caches are kept
                "buckets": 2,        # viewbucket: 1 a row per view key, 2 a value per bucket
                "bits": bucket_bits,
                "policy": [p.default_expiry_ms, p.protection_ms, p.high_risk_min_participants,
                           p.identity_min_participants, p.institute_mark_is_high_risk,
                           p.max_expiry_ms, p.reassignment_window_ms, p.clock_skew_ms,
                           p.max_marks_per_participant, p.complaint_risk_complainants,
                           p.complaint_risk_window_ms, p.complaint_risk,
                           p.complaint_window_ms],
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


class _StoredEntries(Mapping[str, Entry]):
    """The entries of a store-backed view, read (and decoded) on access."""

    def __init__(self, state: StoredState) -> None:
        self._state = state

    def __getitem__(self, number: str) -> Entry:
        e = self._state.entry(number)
        if e is None:
            raise KeyError(number)
        return e

    def __iter__(self) -> Iterator[str]:
        return self._state.numbers()

    def __len__(self) -> int:
        return self._state.count

    def __contains__(self, number: object) -> bool:
        return isinstance(number, str) and self._state.entry_bytes(number) is not None


class StoredState:
    """A view's state in `store` (a `ViewState`); opened empty when the store
    holds none, or one computed under another configuration."""

    def __init__(self, store: Store, consortium: Consortium, bucket_bits: int,
                 journal: bool = True) -> None:
        self.store = store
        self.bucket_bits = bucket_bits
        self.journal = journal  # write the change journal (False: nothing derives from it)
        self._digest = config_digest(consortium, bucket_bits)
        self._reset()
        self._load()

    def _reset(self) -> None:
        self.tree = viewtree.TopTree(self.bucket_bits)
        self.vector: dict[str, int] = {}
        self.count = 0
        self.ignored = 0
        self.begin(())

    def _load(self) -> None:
        st = self.store
        if st.get("viewmeta", b"config") != self._digest:
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
            self.count = _U64.unpack(count)[0] if count else 0
            self.ignored = _U64.unpack(ignored)[0] if ignored else 0
            leaves = {_U32.unpack(k)[0]: v for k, v in st.items("viewbuckethash")}
            if any(b >> self.bucket_bits or len(h) != 32 for b, h in leaves.items()):
                raise ValueError("a bucket hash is out of range or not 32 bytes")
        except (ValueError, struct.error) as e:
            raise StorageFailure(f"the stored view's metadata does not parse: {e}") from e
        self.vector = vector
        self.tree.update(leaves)

    def clear(self) -> None:
        """Empty the view's families, in one write."""
        from ledger.store import VIEW_FAMILIES

        batch = self.store.batch()
        for cf in VIEW_FAMILIES:
            batch.delete_range(cf, b"", END)
        batch.put("viewmeta", b"config", self._digest)
        if self.journal:
            batch.put(CHANGED, EVERYTHING, b"")
        self.store.write(batch, sync=False)
        self._reset()

    # ---- the record index, through this apply's overlay
    def begin(self, ids: Iterable[bytes]) -> None:
        self._ix: dict[bytes, bytes | None] = {}       # record id -> viewix value now
        self._stored: dict[bytes, bytes | None] = {}   # record id -> viewix value in the store
        self._dirty: set[bytes] = set()
        self._new_refs: dict[bytes, list[bytes]] = {}
        self._dropped_refs: set[bytes] = set()         # viewref keys to delete
        self._corrections: dict[bytes, CorrectionFact] = {}
        self._pending: Batch | None = None             # this apply's writes (made when first put)
        self._fetch(ids)

    def _fetch(self, ids: Iterable[bytes]) -> None:
        want = list(dict.fromkeys(i for i in ids if i not in self._ix))
        if want:
            for rid, v in zip(want, self.store.get_many("viewix", want), strict=True):
                self._ix[rid] = self._stored[rid] = v

    def _get(self, rid: bytes) -> bytes | None:
        if rid not in self._ix:
            self._ix[rid] = self._stored[rid] = self.store.get("viewix", rid)
        return self._ix[rid]

    def _put(self, rid: bytes, value: bytes) -> None:
        self._ix[rid] = value
        self._dirty.add(rid)

    def seen(self, rid: bytes) -> bool:
        v = self._get(rid)
        return v is not None and v[:1] != WAITING

    def known(self, rid: bytes) -> bool:
        v = self._get(rid)
        return v is not None and v[:1] not in (WAITING, IGNORED)

    def mark(self, rid: bytes) -> MarkFact | None:
        v = self._get(rid)
        if v is None or v[:1] != MARK:
            return None
        return mark_from_body(rid, v[2:])

    def mark_number(self, rid: bytes) -> str | None:
        v = self._get(rid)
        if v is None or v[:1] != MARK:
            return None
        return v[2:].partition(b"\n")[0].decode("utf-8")

    def correction(self, rid: bytes) -> CorrectionFact | None:
        f = self._corrections.get(rid)
        if f is None:
            v = self._get(rid)
            if v is None or v[:1] not in (CORRECTION, DECISION):
                return None
            f = self._corrections[rid] = correction_from_body(rid, v[2:])
        return f

    def _referrer_ids(self, target: bytes) -> list[bytes]:
        self._get(target)
        out = list(self._new_refs.get(target, ()))
        old = self._stored[target]
        if old is not None and old[1] & HAS_REFS:
            out.extend(
                k[32:]
                for k, _ in self.store.items("viewref", target, target + REF_END)
                if k not in self._dropped_refs
            )
        return out

    def referrers(self, target: bytes) -> list[CorrectionFact]:
        out = []
        for rid in self._referrer_ids(target):
            f = self.correction(rid)
            if f is None:
                raise StorageFailure(f"view referrer {rid.hex()} is not indexed")
            out.append(f)
        return out

    def has_referrers(self, target: bytes) -> bool:
        v = self._get(target)
        return target in self._new_refs or (v is not None and bool(v[1] & HAS_REFS))

    def put_fact(self, fact: Fact) -> None:
        cur = self._get(fact.id)
        flags = bytes((cur[1] if cur is not None else 0,))
        kind, body = _INDEX_VALUE[type(fact)](fact)
        self._put(fact.id, kind + flags + body)
        if isinstance(fact, CorrectionFact):
            self._corrections[fact.id] = fact

    def put_ignored(self, rid: bytes) -> None:
        cur = self._get(rid)
        self._put(rid, IGNORED + bytes((cur[1] if cur is not None else 0,)))

    def add_referrer(self, target: bytes, referrer: bytes) -> None:
        v = self._get(target)
        if v is None:
            self._put(target, WAITING + bytes((HAS_REFS,)))
        elif not v[1] & HAS_REFS:
            self._put(target, v[:1] + bytes((v[1] | HAS_REFS,)) + v[2:])
        self._new_refs.setdefault(target, []).append(referrer)

    def drop_referrer(self, target: bytes, referrer: bytes) -> None:
        new = self._new_refs.get(target)
        if new is not None and referrer in new:
            new.remove(referrer)
        else:
            self._dropped_refs.add(target + referrer)

    # ---- entries and the tree
    def held(self, numbers: Sequence[str]) -> list[Held | None]:
        olds = self.store.get_many("view", [n.encode("utf-8") for n in numbers])
        out = [
            None if raw is None else held_of_entry(n, raw)
            for n, raw in zip(numbers, olds, strict=True)
        ]
        self._fetch(m.id for h in out if h is not None for m in h.marks)  # their referrer flags
        return out

    def _batch(self) -> Batch:
        if self._pending is None:
            self._pending = self.store.batch()
        return self._pending

    def put_entry(self, number: str, entry: Entry | None) -> None:
        key = number.encode("utf-8")
        batch = self._batch()
        if entry is None:
            batch.delete("view", key)
        else:
            batch.put("view", key, entry.encode())
        if self.journal:
            batch.put(CHANGED, key, b"")   # the change journal (module doc)

    def bucket_slots(self, b: int) -> list[Slot]:
        return self.buckets([b])[0]

    def buckets(self, bs: Sequence[int]) -> list[list[Slot]]:
        """Each bucket's slots: one multi-get of the non-empty ones (the top
        says which are empty)."""
        empty, bucket = viewtree.EMPTY, self.tree.bucket
        want = [b for b in bs if bucket(b) != empty]
        got: dict[int, bytes | None] = {}
        if want:
            values = self.store.get_many("viewbucket", [_U32.pack(b) for b in want])
            got = dict(zip(want, values, strict=True))
        bits = self.bucket_bits
        return [[] if (raw := got.get(b)) is None else slots_from_value(b, raw, bits) for b in bs]

    def put_bucket(self, b: int, slots: list[Slot], top: bytes) -> None:
        batch, key = self._batch(), _U32.pack(b)
        if slots:
            batch.put("viewbucket", key, bucket_value(slots))
            batch.put("viewbuckethash", key, top)
        else:
            batch.delete("viewbucket", key)
            batch.delete("viewbuckethash", key)

    def commit(self, vector: dict[str, int], count: int, ignored: int,
               tops: dict[int, bytes]) -> None:
        batch = self._batch()
        for rid in self._dirty:
            v = self._ix[rid]
            assert v is not None
            batch.put("viewix", rid, v)
        for target, refs in self._new_refs.items():
            for r in refs:
                batch.put("viewref", target + r, b"")
        for key in self._dropped_refs:
            batch.delete("viewref", key)
        if vector != self.vector:
            batch.put("viewmeta", b"vector", encode_vector(vector))
        if count != self.count:
            batch.put("viewmeta", b"count", _U64.pack(count))
        if ignored != self.ignored:
            batch.put("viewmeta", b"ignored", _U64.pack(ignored))
        # Unsynced: derived from the synced ledger, caught up after a crash.
        self.store.write(batch, sync=False)
        # Only after the write succeeded does memory move on.
        self.tree.update(tops)
        self.vector = vector
        self.count = count
        self.ignored = ignored
        self.begin(())

    # ---- reads
    def entry(self, number: str) -> Entry | None:
        raw = self.entry_bytes(number)
        if raw is None:
            return None
        try:
            return Entry.decode(raw)
        except BadInput as e:
            raise StorageFailure(f"stored view entry of {number} does not decode: {e}") from e

    def entry_bytes(self, number: str) -> bytes | None:
        return self.store.get("view", number.encode("utf-8"))

    def entries_bytes(self, numbers: Sequence[str]) -> list[bytes | None]:
        return self.store.get_many("view", [n.encode("utf-8") for n in numbers])

    def entry_map(self) -> Mapping[str, Entry]:
        return _StoredEntries(self)

    def numbers(self) -> Iterator[str]:
        return (k.decode("utf-8") for k, _ in self.store.items("view"))

    def waiting(self) -> dict[bytes, tuple[bytes, ...]]:
        """A scan of the record index (for diagnostics and tests)."""
        st = self.store
        out: dict[bytes, tuple[bytes, ...]] = {}
        for rid, v in st.items("viewix"):
            if v[:1] in (WAITING, IGNORED) and v[1] & HAS_REFS:
                out[rid] = tuple(sorted(k[32:] for k, _ in st.items("viewref", rid, rid + REF_END)))
        return out
