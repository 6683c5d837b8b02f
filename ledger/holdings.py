"""What a node's ledger holds, as the check of an own record's effect reads it
(`ledger.payloads.check_effect`): records by id, each appeal's first
decision, and the consent state's answers (the ledger's `consent`, which
the node wires to its consent keeper) with the own records of the same
group commit.

The decisions are indexed in the store's `meta` family, written in the same
atomic batch as the records (`index_decisions`):

    DECIDED || appeal id (32)  -> record id of the first decision of it in the log
    INDEXED                    -> b"" once every stored decision is indexed

A store's first batch carries INDEXED; a store written before the index
existed is indexed once, by one scan of its log, the first time a decision is
asked for (`LedgerHoldings.decision_of`, on the node's writer thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ledger.errors import LedgerError, StorageFailure
from ledger.record import Correction, Record

if TYPE_CHECKING:
    from ledger.consent.facts import LineFact, Subscriber
    from ledger.consent.rules import LineIndex
    from ledger.consent.state import ConsentState
    from ledger.log import NodeLedger
    from ledger.store import Batch, Store

DECIDED = b"decided/"
INDEXED = b"decided-index"
_SCAN = 1000  # envelopes per read when an old store is indexed


def _appeal_decided(rec: Record) -> bytes | None:
    """The appeal id `rec` decides, or None when it is no decision."""
    p = rec.payload
    return p.appeal_id if isinstance(p, Correction) and p.is_decision else None


def index_decisions(store: Store, batch: Batch, records: Iterable[Record], first: bool) -> None:
    """Put into `batch` the index entries of `records` (accepted, in log
    order): the first decision of each appeal only. `first`: the batch is the
    store's first, so the store is indexed from the start."""
    if first:
        batch.put("meta", INDEXED, b"")
    taken: set[bytes] = set()
    for rec in records:
        appeal = _appeal_decided(rec)
        if appeal is None or appeal in taken or store.get("meta", DECIDED + appeal) is not None:
            continue
        taken.add(appeal)
        batch.put("meta", DECIDED + appeal, rec.id)


class LedgerHoldings:
    """The records `ledger` holds, and `fresh`: own records signed earlier in
    the same group commit (not written yet, but decided on already);
    `issuing`: the record being checked."""

    def __init__(
        self, ledger: NodeLedger, fresh: Sequence[Record] = (), issuing: Record | None = None
    ) -> None:
        self.ledger = ledger
        self.fresh = fresh
        self.issuing = issuing

    def _consent(self) -> ConsentState:
        from ledger.errors import MembersKeyMissing

        state = self.ledger.consent
        if state is None:
            raise MembersKeyMissing(
                "this node keeps no consent state (it holds no members' key): it cannot "
                "tell whether a preference or a line changes anything"
            )
        return state

    def subscriber(self, sealed: bytes) -> Subscriber:
        from ledger.consent import rules as R

        sub = self._consent().subscriber(sealed)
        subs, _, _ = R.fresh_facts(self.fresh)
        if not subs:
            return sub
        key = self._consent().key
        prefs = [R.preference_fact(r) for r in subs
                 if getattr(r.payload, "subscriber", None) == sealed]
        re = [(r.payload.effective_at_ms, r.id) for r in subs
              if not hasattr(r.payload, "subscriber") and key.seal(r.payload.number) == sealed]
        return R.merge(sub, prefs, re)

    def _lines(self) -> LineIndex | None:
        """The state's lines with this group's own line records, or None when none."""
        from ledger.consent import rules as R

        _, regs, deregs = R.fresh_facts(self.fresh)
        if not regs and not deregs:
            return None
        have_regs, have_deregs = self._consent().line_records()
        return R.resolve_lines([*have_regs, *regs], [*have_deregs, *deregs])

    def line(self, rid: bytes) -> LineFact | None:
        index = self._lines()
        return self._consent().line(rid) if index is None else index.by_id.get(rid)

    def lines_overlapping(self, number: str, prefix: bool, at_ms: int) -> list[LineFact]:
        index = self._lines()
        if index is None:
            return self._consent().lines_overlapping(number, prefix, at_ms)
        return index.overlapping(number, prefix, at_ms)

    def held(self, rid: bytes) -> Record | None:
        for r in self.fresh:
            if r.id == rid:
                return r
        found = self.ledger.record_by_id(rid)
        if found is None:
            return None
        try:
            return Record.from_envelope(found[1])
        except LedgerError as e:
            raise StorageFailure(f"stored record {rid.hex()} does not parse") from e

    def decision_of(self, appeal_id: bytes) -> Record | None:
        store = self.ledger.store
        if store.get("meta", INDEXED) is None:
            self._index_all()
        rid = store.get("meta", DECIDED + appeal_id)
        if rid is not None:
            rec = self.held(rid)
            if rec is None:
                raise StorageFailure(f"decision {rid.hex()} is indexed but missing")
            return rec
        return next((r for r in self.fresh if _appeal_decided(r) == appeal_id), None)

    def _index_all(self) -> None:
        """Index every decision of a store written before the index (one scan)."""
        led = self.ledger
        first: dict[bytes, bytes] = {}
        for start in range(0, led.size, _SCAN):
            for env in led.entries(start, start + _SCAN):
                try:
                    rec = Record.from_envelope(env)
                except LedgerError as e:
                    raise StorageFailure(f"stored leaf near {start} does not parse") from e
                appeal = _appeal_decided(rec)
                if appeal is not None:
                    first.setdefault(appeal, rec.id)
        b = led.store.batch()
        for appeal, rid in first.items():
            b.put("meta", DECIDED + appeal, rid)  # log order wins over any later entry
        b.put("meta", INDEXED, b"")
        led.store.write(b)
