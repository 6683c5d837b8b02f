"""The node's ledger: checks every record, keeps each issuer's feed, appends
every accepted envelope to the node's RFC 9162 Merkle log, keeps equivocation
proofs, and signs log checkpoints.

Checks on every append run in a fixed order, each with its own error, and a
rejected record changes nothing:

    already here? (the same envelope bytes as an accepted record: a duplicate,
    idempotent, and nothing else is checked again: those bytes passed every
    check when they were accepted; a record may come from several peers)
    -> size (TooLarge) -> structure (MalformedRecord, InvalidNumber)
    -> issuer (UnknownIssuer) -> signature (BadSignature)
    -> role (NotAllowed: also a decision of an appeal the decider filed, when
       this node holds the appeal) -> taxonomy (UnknownCategory)
    -> clock (ClockSkew) -> the record's own times (MalformedRecord,
       `ledger.rules.check_times`) -> feed frozen (FeedFrozen)
    -> position: seq <= head with another id (Equivocation),
                 seq > head + 1 (SequenceGap: buffered when replicating),
                 prev_id != head id (WrongPrevious),
                 issued_at < the head's issued_at (FeedTimeReversed)

Before the node signs one of its own records, `check_effect` also asks
whether it can change anything given what the ledger holds (`ledger.holdings`):
a correction of a target the node has not seen (UnknownTarget, unless asked
to wait for it), of a record that is not a mark (NotAMark), a decision of a
record that is no appeal (NotAnAppeal) or of an appeal already decided
(AlreadyDecided); a preference that changes no answer (NothingToRevoke,
SamePreference) or a line record that changes none (NotALiveLine,
LineOverlap), asked of the consent state (`consent`). A peer's record is
not asked: it is signed, and every log keeps it; the view gives it no
effect (docs/view.md).

A batch of accepted records is one atomic synced write.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keys.consortium import Consortium
from keys.signing import SigningKey
from ledger import merkle, note
from ledger.errors import (
    BadSignature,
    BufferFull,
    ClockSkew,
    Equivocation,
    FeedFrozen,
    FeedTimeReversed,
    LedgerError,
    NotAllowed,
    NotFound,
    SequenceGap,
    StorageFailure,
    UnknownIssuer,
    WrongPrevious,
)
from ledger.feed import NOT_FROZEN, EquivocationProof, FeedState
from ledger.holdings import LedgerHoldings, index_decisions
from ledger.names import log_origin
from ledger.payloads import check_effect, check_issuer
from ledger.record import (
    Correction,
    Payload,
    Record,
    parse_envelope,
    record_context,
    record_id,
)
from ledger.rules import check_times
from ledger.store import Store, feedseq_key, merkle_key, read_u64, u64

if TYPE_CHECKING:
    from ledger.complaints.state import ComplaintState
    from ledger.consent.state import ConsentState

__all__ = ["NOT_FROZEN", "EquivocationProof", "FeedState", "NodeLedger", "Outcome", "Submitted",
           "log_origin", "verify_envelopes"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one submitted envelope."""

    status: str  # accepted | duplicate | buffered | rejected | equivocation
    record: Record | None = None  # None for a duplicate (only its bytes were compared)
    index: int | None = None  # leaf index when accepted or duplicate
    error: LedgerError | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "duplicate", "buffered")


@dataclass(frozen=True)
class Submitted:
    outcomes: list[Outcome]
    accepted: list[Record]  # appended, in log order (drained ones included)
    equivocations: list[EquivocationProof]


@dataclass
class _Pending:
    """State of one submit() before it is written."""

    feeds: dict[str, FeedState] = field(default_factory=dict)
    ids: dict[bytes, int] = field(default_factory=dict)  # id -> leaf index
    at: dict[tuple[str, int], bytes] = field(default_factory=dict)
    accepted: list[Record] = field(default_factory=list)
    equivocations: list[tuple[Record, EquivocationProof]] = field(default_factory=list)
    # record id -> (family, key, value) puts written with that record, if accepted
    extra: Mapping[bytes, Sequence[tuple[str, bytes, bytes]]] = field(default_factory=dict)
    signed: Mapping[bytes, Record] = field(default_factory=dict)  # see submit's `signed`
    verified: Mapping[bytes, Record] = field(default_factory=dict)  # see submit's `verified`


class NodeLedger:
    """One node's ledger over its Store. Not thread-safe: the node serializes
    writes (one writer), reads may run concurrently with RocksDB."""

    def __init__(
        self,
        store: Store,
        consortium: Consortium,
        participant_id: str,
        signer: SigningKey | None = None,
    ) -> None:
        self.store = store
        self.consortium = consortium
        self.participant_id = participant_id
        self.signer = signer
        # The consent state `check_effect` reads for preferences and lines
        # (ledger.consent.ConsentState); the node wires its consent keeper's.
        self.consent: ConsentState | None = None
        # The complaint state the complaint, handling and sanction effect checks
        # read (ledger.complaints); the node wires its complaint keeper's. None:
        # caught up from this log at each check (a ledger driven without a node).
        self.complaints: ComplaintState | None = None
        self.origin = log_origin(consortium.name, participant_id)
        self.context = record_context(consortium.name)  # what every record signature covers
        policy = consortium.policy
        self.max_envelope = policy.max_envelope_bytes
        self.skew_ms = policy.clock_skew_ms
        self.buffer_limit = policy.out_of_order_buffer
        self.buffer_per_issuer = policy.out_of_order_per_issuer
        self.buffer_ttl_ms = policy.out_of_order_ttl_ms
        self._feeds: dict[str, FeedState] = {}
        for k, v in store.items("feeds"):
            issuer = k.decode()
            st = FeedState.decode(issuer, v)
            if st.seq and not st.head_issued_at_ms:  # the old encoding: read the head record
                st = dataclasses.replace(st, head_issued_at_ms=self._issued_at(st))
            self._feeds[issuer] = st
        size_b = store.get("meta", b"size")
        self._size = read_u64(size_b) if size_b else 0
        self._frontier = merkle.Frontier.from_reader(self, self._size)
        # issuer -> seq -> (record, when it was buffered); each issuer has its
        # own cap, so one issuer's flood of records ahead leaves room for others.
        self._buffer: dict[str, dict[int, tuple[Record, int]]] = {}
        self._buffered = 0
        self._arrivals: deque[tuple[int, str, int]] = deque()  # (buffered at, issuer, seq)

    @classmethod
    def open(
        cls,
        path: Path | str,
        consortium: Consortium,
        participant_id: str,
        signer: SigningKey | None = None,
    ) -> NodeLedger:
        return cls(Store(path), consortium, participant_id, signer)

    def close(self) -> None:
        self.store.close()

    def _issued_at(self, st: FeedState) -> int:
        """The issued-at of the head record of `st`, read from the store."""
        v = self.store.get("records", st.head_id)
        if v is None:
            raise StorageFailure(f"the head record of feed {st.issuer} is missing")
        try:
            return parse_envelope(v[8:]).issued_at_ms
        except LedgerError as e:
            raise StorageFailure(f"the head record of feed {st.issuer} does not parse") from e

    # ------------------------------------------------------------ reads
    @property
    def size(self) -> int:
        return self._size

    def root(self) -> bytes:
        return self._frontier.root()

    def get_node(self, level: int, index: int) -> bytes:
        v = self.store.get("merkle", merkle_key(level, index))
        if v is None:
            raise NotFound(f"no Merkle node at level {level}, index {index}")
        return v

    def root_at(self, size: int) -> bytes:
        self._check_size(size)
        return merkle.root_at(self, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        if not 0 <= index < size:
            raise NotFound(f"leaf {index} is not in a tree of size {size}")
        return merkle.inclusion_proof(self, index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        self._check_size(new_size)
        if not 1 <= old_size <= new_size:
            raise NotFound(f"no consistency proof from size {old_size} to {new_size}")
        return merkle.consistency_proof(self, old_size, new_size)

    def leaf_hash(self, index: int) -> bytes:
        return self.get_node(0, index)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise NotFound(f"the log has {self._size} entries, not {size}")

    def entry(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise NotFound(f"the log has no entry {index} (size {self._size})")
        rid = self.store.get("leaves", u64(index))
        if rid is None:
            raise StorageFailure(f"leaf {index} is missing from the store")
        env = self.store.get("records", rid)
        if env is None:
            raise StorageFailure(f"record {rid.hex()} of leaf {index} is missing")
        return env[8:]

    def entries(self, start: int, end: int) -> list[bytes]:
        """Envelopes start..end-1 (end is clipped to the log size)."""
        end = min(end, self._size)
        if not 0 <= start <= end:
            raise NotFound(f"no entries {start}..{end} in a log of size {self._size}")
        ids = [rid for _, rid in self.store.items("leaves", u64(start), u64(end))]
        if len(ids) != end - start:
            raise StorageFailure(f"leaves {start}..{end} are incomplete in the store")
        vals = self.store.get_many("records", ids)
        out = []
        for rid, v in zip(ids, vals, strict=True):
            if v is None:
                raise StorageFailure(f"record {rid.hex()} is missing")
            out.append(v[8:])
        return out

    def record_by_id(self, rid: bytes) -> tuple[int, bytes] | None:
        v = self.store.get("records", rid)
        if v is None:
            return None
        return read_u64(v[:8]), v[8:]

    def feed(self, issuer: str) -> FeedState:
        return self._feeds.get(issuer) or FeedState(issuer)

    def feeds(self) -> dict[str, FeedState]:
        return dict(self._feeds)

    def record_at(self, issuer: str, seq: int) -> bytes | None:
        """The envelope at (issuer, seq), if this node holds it."""
        rid = self.store.get("feedseq", feedseq_key(issuer, seq))
        if rid is None:
            return None
        v = self.store.get("records", rid)
        return None if v is None else v[8:]

    def records_after(self, issuer: str, after: int, limit: int) -> list[bytes]:
        """Up to `limit` envelopes of `issuer`'s feed with seq > after, in order."""
        head = self.feed(issuer).seq
        end = min(head, after + max(0, limit))
        if end <= after:
            return []
        ids = [
            rid
            for _, rid in self.store.items(
                "feedseq", feedseq_key(issuer, after + 1), feedseq_key(issuer, end + 1)
            )
        ]
        return [v[8:] for v in self.store.get_many("records", ids) if v is not None]

    def equivocations(self) -> list[EquivocationProof]:
        return [EquivocationProof.decode(v) for _, v in self.store.items("equivocations")]

    def equivocation_count(self) -> int:
        """How many equivocation proofs the store holds (none decoded)."""
        return sum(1 for _ in self.store.items("equivocations"))

    @property
    def buffered(self) -> int:
        return self._buffered

    def buffered_of(self, issuer: str) -> int:
        """How many of `issuer`'s records wait in the out-of-order buffer."""
        return len(self._buffer.get(issuer, ()))

    def expire_buffer(self, now_ms: int) -> int:
        """Drop buffered records that have waited longer than
        policy.out_of_order_ttl_ms at `now_ms`; returns how many. (`submit`
        calls it first.)"""
        dropped = 0
        cutoff = now_ms - self.buffer_ttl_ms
        while self._arrivals and self._arrivals[0][0] < cutoff:
            at, issuer, seq = self._arrivals.popleft()
            slot = self._buffer.get(issuer)
            held = slot.get(seq) if slot is not None else None
            if held is None or held[1] != at:
                continue  # drained or dropped since; this arrival is stale
            del slot[seq]  # type: ignore[union-attr]
            self._buffered -= 1
            dropped += 1
            if not slot:
                del self._buffer[issuer]
        if len(self._arrivals) > 2 * self._buffered + 1024:
            # Mostly arrivals of records drained since: keep only the waiting ones.
            waiting = [(at, i, s) for i, h in self._buffer.items() for s, (_, at) in h.items()]
            self._arrivals = deque(sorted(waiting))
        return dropped

    # ------------------------------------------------------------ checks
    def check(self, rec: Record, now_ms: int) -> None:
        """Every context check but the feed position. Raises a LedgerError."""
        cons = self.consortium
        p = cons.participant(rec.issuer)
        if p is None:
            raise UnknownIssuer(f"{rec.issuer!r} is not a participant of {cons.name}")
        if not p.verify(rec.signature, self.context + rec.body):
            raise BadSignature(
                f"record {rec.issuer}#{rec.seq} is not signed by {rec.issuer}'s key for {cons.name}"
            )
        self.check_payload(rec, now_ms)

    def check_payload(self, rec: Record, now_ms: int) -> None:
        """Role, taxonomy, clock and own-time (`rules.check_times`) checks of a
        record from a known issuer, without the signature (for a record this
        node has just signed). Checks needing other records (the feed's
        order in time, the decider of an appeal) run in `submit`."""
        self.check_fields(rec.issuer, rec.seq, rec.issued_at_ms, rec.payload, now_ms)

    def check_fields(self, issuer: str, seq: int, issued_at_ms: int, payload: Payload,
                     now_ms: int) -> None:
        """`check_payload` of the record these fields will make, before it is signed
        (the signing stage decides by it which records take a seq)."""
        p = self.consortium.participant(issuer)
        if p is None:
            raise UnknownIssuer(f"{issuer!r} is not a participant of {self.consortium.name}")
        check_issuer(self.consortium, p.role, issuer, payload)
        if issued_at_ms > now_ms + self.skew_ms:
            raise ClockSkew(
                f"record {issuer}#{seq} is issued {issued_at_ms - now_ms} ms in the "
                f"future; the allowed skew is {self.skew_ms} ms"
            )
        check_times(issued_at_ms, payload, self.consortium.policy)

    def check_effect(
        self, rec: Record, *, wait_for_target: bool = False, fresh: Sequence[Record] = ()
    ) -> None:
        """Before this node signs one of its own records: can `rec` change
        anything, given what the ledger holds (and `fresh`, own records signed
        earlier in the same group)? Raises UnknownTarget or an Ineffective
        (`ledger.payloads.check_effect`). A peer's record is never asked."""
        # Without a consent state (a tool's ledger, a node without the members'
        # key) the effect of a preference or a line is not asked: `issuing` None.
        held = LedgerHoldings(self, fresh, rec if self.consent is not None else None)
        check_effect(rec.issuer, rec.payload, held, wait_for_target=wait_for_target)

    # ------------------------------------------------------------ writes
    def append(self, envelope: bytes, now_ms: int) -> Outcome:
        """Append one envelope; raise its typed error if it is not accepted
        now (a gap raises SequenceGap instead of buffering)."""
        out = self.submit([envelope], now_ms, buffer=False).outcomes[0]
        if out.error is not None:
            raise out.error
        return out

    def issue(self, payload: Payload, now_ms: int, *, wait_for_target: bool = False) -> Outcome:
        """Sign `payload` as this node's participant at the next sequence and
        append it, if it can change something (`check_effect`)."""
        if self.signer is None:
            raise NotAllowed("this ledger holds no signing key")
        head = self.feed(self.participant_id)
        rec = Record.issue(
            self.signer,
            self.participant_id,
            head.seq + 1,
            head.head_id,
            now_ms,
            payload,
            consortium=self.consortium.name,
        )
        self.check_payload(rec, now_ms)  # before check_effect: who may, then whether it matters
        self.check_effect(rec, wait_for_target=wait_for_target)
        return self.append(rec.envelope, now_ms)

    def submit(
        self,
        envelopes: Iterable[bytes],
        now_ms: int,
        *,
        buffer: bool = True,
        extra: Mapping[bytes, Sequence[tuple[str, bytes, bytes]]] | None = None,
        signed: Mapping[bytes, Record] | None = None,
        verified: Mapping[bytes, Record] | None = None,
    ) -> Submitted:
        """Check and append a batch in order; one atomic synced write for all
        that are accepted. Records ahead of their feed wait in a bounded
        buffer (when `buffer`) and are appended once the gap closes. Returns
        one Outcome per envelope and every record appended (buffered ones
        included) in log order; raises only StorageFailure. Each issuer has
        at most policy.out_of_order_per_issuer records waiting (BufferFull
        past that, or past policy.out_of_order_buffer in all), each for at
        most policy.out_of_order_ttl_ms. `extra[record id]`: puts written in
        the same atomic batch as that record, only when it is accepted.
        `signed[record id]`: a record this node's own key has just signed and
        `check_payload` passed (NodeCore): its envelope is not parsed or its
        signature verified again, every other check runs. `verified[record
        id]`: a peer's record this process parsed and signature-checked
        against this ledger's consortium (node/pullpipe.py, off the writer
        thread): not parsed or verified again; `check_payload` and every
        later check run. An envelope in neither is checked in full."""
        self.expire_buffer(now_ms)
        # After a failed write the store may hold records that never synced:
        # none of them may be called a duplicate, so nothing is answered.
        self.store.check_writable()
        pend = _Pending(extra=extra or {}, signed=signed or {}, verified=verified or {})
        outcomes: list[Outcome] = []
        for env in envelopes:
            outcomes.append(self._one(env, now_ms, pend, buffer))
        if pend.accepted or pend.equivocations:
            self._commit(pend)
        return Submitted(outcomes, pend.accepted, [p for _, p in pend.equivocations])

    def _one(self, env: bytes, now_ms: int, pend: _Pending, buffer: bool) -> Outcome:
        rid = own = None
        if isinstance(env, bytes) and len(env) <= self.max_envelope:
            rid = record_id(env)
            own = pend.signed.get(rid)
            idx = pend.ids.get(rid)
            # (One just signed past its feed's head is in no store: a feed's are at or below it.)
            if idx is None and (own is None or own.seq <= self.feed(own.issuer).seq):
                known = self.store.get("records", rid)
                if known is not None:
                    idx = read_u64(known[:8])
            if idx is not None:
                return Outcome("duplicate", None, idx)
        # The id is the hash of these very bytes: a record found by it is theirs.
        pre = pend.verified.get(rid) if rid is not None and own is None else None
        if own is not None:  # this node signed and checked it just now: not parsed again
            rec = own
        elif pre is not None:  # parsed and its signature checked ahead of the writer
            rec = pre
        else:
            try:
                rec = Record.from_envelope(env, self.max_envelope)
            except LedgerError as e:
                return Outcome("rejected", error=e)
            if self.consortium.participant(rec.issuer) is None:
                return Outcome(
                    "rejected", rec, error=UnknownIssuer(f"{rec.issuer!r} is not a participant")
                )
        try:
            if pre is not None:
                self.check_payload(rec, now_ms)
            elif own is None:
                self.check(rec, now_ms)
            self._check_decider(rec, pend)
        except LedgerError as e:
            return Outcome("rejected", rec, error=e)
        return self._place(rec, now_ms, pend, buffer)

    def _check_decider(self, rec: Record, pend: _Pending) -> None:
        """NotAllowed when `rec` decides an appeal its own issuer filed (the
        institute deciding its own appeal), if this node holds that appeal,
        accepted before or earlier in this batch."""
        p = rec.payload
        if not isinstance(p, Correction) or not p.is_decision:
            return
        appellant = self._issuer_of(p.appeal_id, pend)
        if appellant == rec.issuer:
            raise NotAllowed(
                f"{rec.issuer} filed appeal {p.appeal_id.hex()[:16]}… and may not decide it"
            )

    def _issuer_of(self, rid: bytes, pend: _Pending) -> str | None:
        """The issuer of record `rid`, if this node holds it (or accepts it in `pend`)."""
        idx = pend.ids.get(rid)
        if idx is not None:
            return pend.accepted[idx - self._size].issuer
        v = self.store.get("records", rid)
        if v is None:
            return None
        try:
            return parse_envelope(v[8:]).issuer
        except LedgerError as e:
            raise StorageFailure(f"stored record {rid.hex()} does not parse") from e

    def _place(self, rec: Record, now_ms: int, pend: _Pending, buffer: bool) -> Outcome:
        feed = pend.feeds.get(rec.issuer) or self.feed(rec.issuer)
        if rec.seq <= feed.seq:
            other = pend.at.get((rec.issuer, rec.seq)) or self.store.get(
                "feedseq", feedseq_key(rec.issuer, rec.seq)
            )
            if other is None:
                raise StorageFailure(f"feed {rec.issuer} has no record at seq {rec.seq}")
            first = self._envelope_pending(other, pend)
            proof = EquivocationProof(first, rec.envelope)
            pend.equivocations.append((rec, proof))
            frozen = rec.seq - 1 if feed.frozen_at is None else min(feed.frozen_at, rec.seq - 1)
            pend.feeds[rec.issuer] = dataclasses.replace(feed, frozen_at=frozen)
            return Outcome(
                "equivocation",
                rec,
                error=Equivocation(
                    f"{rec.issuer} signed two records at seq {rec.seq}; feed frozen at {frozen}",
                    proof.first,
                    proof.second,
                ),
            )
        if feed.frozen_at is not None:
            return Outcome(
                "rejected",
                rec,
                error=FeedFrozen(
                    f"feed {rec.issuer} is frozen at seq {feed.frozen_at} (equivocation)"
                ),
            )
        if rec.seq > feed.seq + 1:
            gap = SequenceGap(f"{rec.issuer}#{rec.seq} arrived before #{feed.seq + 1}")
            if not buffer or rec.id in pend.signed:  # an own record waits for nothing
                return Outcome("rejected", rec, error=gap)
            slot = self._buffer.get(rec.issuer) or {}
            if rec.seq in slot:
                return Outcome("buffered", rec)
            if len(slot) >= self.buffer_per_issuer:
                return Outcome(
                    "rejected",
                    rec,
                    error=BufferFull(
                        f"{len(slot)} records of {rec.issuer} already wait in the out-of-order "
                        f"buffer (policy out_of_order_per_issuer {self.buffer_per_issuer})"
                    ),
                )
            if self._buffered >= self.buffer_limit:
                return Outcome(
                    "rejected",
                    rec,
                    error=BufferFull(f"out-of-order buffer holds {self.buffer_limit} records"),
                )
            self._buffer[rec.issuer] = slot
            slot[rec.seq] = (rec, now_ms)
            self._arrivals.append((now_ms, rec.issuer, rec.seq))
            self._buffered += 1
            return Outcome("buffered", rec)
        if rec.prev_id != feed.head_id:
            return Outcome(
                "rejected",
                rec,
                error=WrongPrevious(
                    f"{rec.issuer}#{rec.seq} names a previous record other than #{feed.seq}"
                ),
            )
        if rec.issued_at_ms < feed.head_issued_at_ms:
            return Outcome(
                "rejected",
                rec,
                error=FeedTimeReversed(
                    f"{rec.issuer}#{rec.seq} is issued {feed.head_issued_at_ms - rec.issued_at_ms}"
                    f" ms before #{feed.seq}; a feed's issued-at never decreases"
                ),
            )
        index = self._size + len(pend.accepted)
        pend.accepted.append(rec)
        pend.ids[rec.id] = index
        pend.at[(rec.issuer, rec.seq)] = rec.id
        pend.feeds[rec.issuer] = FeedState(rec.issuer, rec.seq, rec.id, None, rec.issued_at_ms)
        out = Outcome("accepted", rec, index)
        self._drain(rec.issuer, now_ms, pend)
        return out

    def _drain(self, issuer: str, now_ms: int, pend: _Pending) -> None:
        slot = self._buffer.get(issuer)
        while slot:
            head = pend.feeds[issuer].seq
            for s in [s for s in slot if s <= head]:
                del slot[s]
                self._buffered -= 1
            held = slot.pop(head + 1, None)
            if held is None:
                break
            nxt = held[0]
            self._buffered -= 1
            # Already signature-checked when buffered; the position is checked now,
            # and the decider again: the appeal it names may have come in since.
            try:
                self._check_decider(nxt, pend)
            except NotAllowed:
                continue
            self._place(nxt, now_ms, pend, True)
        if slot is not None and not slot:
            self._buffer.pop(issuer, None)

    def _envelope_pending(self, rid: bytes, pend: _Pending) -> bytes:
        for r in pend.accepted:
            if r.id == rid:
                return r.envelope
        v = self.store.get("records", rid)
        if v is None:
            raise StorageFailure(f"record {rid.hex()} is indexed but missing")
        return v[8:]

    def _commit(self, pend: _Pending) -> None:
        b = self.store.batch()
        frontier = self._frontier.copy()
        # Put a family at a time (each key is put once: the order across them is free).
        puts: dict[str, list[tuple[bytes, bytes]]] = {
            "merkle": [], "records": [], "leaves": [], "feedseq": []}
        nodes, records, leaves, feedseq = puts.values()
        for rec in pend.accepted:
            at = u64(frontier.size)
            for level, i, h in frontier.append(merkle.leaf_hash(rec.envelope)):
                nodes.append((merkle_key(level, i), h))
            records.append((rec.id, at + rec.envelope))
            leaves.append((at, rec.id))
            feedseq.append((feedseq_key(rec.issuer, rec.seq), rec.id))
            for cf, k, v in pend.extra.get(rec.id, ()):  # e.g. an own record's idempotency key
                b.put(cf, k, v)
        for cf, items in puts.items():
            b.put_all(cf, items)
        for rec, proof in pend.equivocations:
            b.put("equivocations", feedseq_key(rec.issuer, rec.seq), proof.encode())
        index_decisions(self.store, b, pend.accepted, first=self._size == 0)
        for issuer, st in pend.feeds.items():
            b.put("feeds", issuer.encode(), st.encode())
        b.put("meta", b"size", u64(frontier.size))
        self.store.write(b)
        # Only after the synced write succeeded does memory move on.
        self._frontier = frontier
        self._size = frontier.size
        self._feeds.update(pend.feeds)

    def add_equivocation_proof(self, proof: EquivocationProof) -> bool:
        """Keep a peer's equivocation proof after checking it; freeze the feed.
        Returns True when it was new to this node."""
        a, _ = proof.verify(self.consortium)
        key = feedseq_key(a.issuer, a.seq)
        feed = self.feed(a.issuer)
        frozen = a.seq - 1 if feed.frozen_at is None else min(feed.frozen_at, a.seq - 1)
        if self.store.get("equivocations", key) is not None and feed.frozen_at == frozen:
            return False
        b = self.store.batch()
        b.put("equivocations", key, proof.encode())
        st = dataclasses.replace(feed, frozen_at=frozen)
        b.put("feeds", a.issuer.encode(), st.encode())
        self.store.write(b)
        self._feeds[a.issuer] = st
        return True

    # ------------------------------------------------------------ checkpoints
    def sign_checkpoint(self) -> str:
        """Sign (size, root) now as a C2SP checkpoint and keep it."""
        if self.signer is None:
            raise NotAllowed("this ledger holds no signing key")
        f = self._frontier  # replaced, never mutated, by _commit: a consistent snapshot
        cp = note.Checkpoint(self.origin, f.size, f.root())
        text = note.sign_checkpoint(cp, self.origin, self.signer)
        b = self.store.batch()
        b.put("checkpoints", b"log/latest", text.encode())
        b.put("checkpoints", b"log/" + u64(f.size), text.encode())
        self.store.write(b)
        return text

    def latest_checkpoint(self) -> str | None:
        v = self.store.get("checkpoints", b"log/latest")
        return None if v is None else v.decode()

    def checkpoint_at(self, size: int) -> str | None:
        v = self.store.get("checkpoints", b"log/" + u64(size))
        return None if v is None else v.decode()


def verify_envelopes(envelopes: Sequence[bytes], consortium: Consortium) -> list[Record]:
    """Parse and signature-check envelopes without a store (auditors, tools)."""
    out = []
    context = record_context(consortium.name)
    for env in envelopes:
        rec = Record.from_envelope(env, consortium.policy.max_envelope_bytes)
        p = consortium.participant(rec.issuer)
        if p is None:
            raise UnknownIssuer(f"{rec.issuer!r} is not a participant")
        if not p.verify(rec.signature, context + rec.body):
            raise BadSignature(f"record {rec.id.hex()} is not signed by {rec.issuer}")
        out.append(rec)
    return out
