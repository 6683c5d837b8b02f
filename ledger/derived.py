"""The one catch-up of a state derived from the log (the national view, the
consent state, the complaint state): each feed's records above the state's
vector, up to the feed's counted seq, applied in batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ledger.errors import LedgerError, StorageFailure
from ledger.record import Record

if TYPE_CHECKING:
    from ledger.log import NodeLedger


class DerivedState(Protocol):
    @property
    def vector(self) -> Mapping[str, int]: ...
    def clear(self) -> None: ...
    def apply(self, records: Sequence[Record]) -> Any: ...


def catch_up(state: DerivedState, ledger: NodeLedger, batch_size: int = 1000) -> int:
    """Bring `state` to the ledger: every record of each feed above the
    state's vector, up to the feed's counted seq (a frozen feed stops at its
    freeze). A state ahead of a feed (it froze after the state applied
    records beyond the freeze) is cleared and built anew. Returns how many
    records were applied. Raises StorageFailure for stored records that do
    not parse, or a feed shorter than its head says."""
    feeds = ledger.feeds()
    if any(seq > (feeds[i].counted_seq if i in feeds else 0)
           for i, seq in state.vector.items()):
        state.clear()
    applied = 0
    for issuer, feed in sorted(feeds.items()):
        after, upto = state.vector.get(issuer, 0), feed.counted_seq
        while after < upto:
            envelopes = ledger.records_after(issuer, after, min(batch_size, upto - after))
            if not envelopes:
                raise StorageFailure(f"feed {issuer} stops at {after}, its head says {upto}")
            try:
                records = [Record.from_envelope(env) for env in envelopes]
            except LedgerError as e:
                raise StorageFailure(f"a stored record of {issuer} does not parse: {e}") from e
            state.apply(records)
            after += len(records)
            applied += len(records)
    return applied


def extends(vector: Mapping[str, int], records: Sequence[Record], ledger: NodeLedger) -> bool:
    """True when `records` (in log order) continue every feed of `vector`
    without a gap and stay within each feed's counted seq: a keeper may then
    apply them as they come, else it catches up from the ledger."""
    feeds = ledger.feeds()
    nxt = dict(vector)
    for r in records:
        feed = feeds.get(r.issuer)
        cur = nxt.get(r.issuer, 0)
        if feed is None or r.seq > feed.counted_seq or r.seq > cur + 1:
            return False
        nxt[r.issuer] = max(cur, r.seq)
    return True
