"""The writer-thread upkeep of a state derived from the log (the consent
state, the complaint state): applied after each ledger commit, before the
issuing call is answered (node/core.py runs subscribers first); caught up
from the ledger (ledger/derived.py) when the records do not extend it, when
an update failed, or when a feed froze (records past a freeze must stop
counting: the state is cleared first when it is ahead of a feed)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Generic, TypeVar

from ledger import derived

if TYPE_CHECKING:
    from ledger.log import NodeLedger
    from ledger.record import Record

S = TypeVar("S", bound=derived.DerivedState)


class DerivedKeeper(Generic[S]):
    """`state` is None while the keeper keeps nothing (before start, or a
    consent keeper without the members' key); updates then do nothing."""

    def __init__(self, ledger: NodeLedger) -> None:
        self.ledger = ledger
        self.state: S | None = None
        self._lock = threading.Lock()
        self._rebuild_needed = False

    def _catch_up(self, state: S) -> int:
        read = derived.catch_up(state, self.ledger)
        self._rebuild_needed = False
        return read

    def apply(self, records: list[Record]) -> None:
        """Runs on the writer thread after each ledger commit."""
        with self._lock:
            state = self.state
            if state is None:
                return
            try:
                if self._rebuild_needed or not derived.extends(state.vector, records, self.ledger):
                    self._catch_up(state)  # a gap, or beyond a frozen feed's counted seq
                else:
                    state.apply(records)
            except Exception:
                self._rebuild_needed = True  # the next update or tick catches up
                raise

    def invalidate(self) -> None:
        """A feed froze: catch up (rebuilding if ahead of it) on the next tick."""
        with self._lock:
            self._rebuild_needed = True

    def tick(self) -> None:
        with self._lock:
            if self.state is not None and self._rebuild_needed:
                self._catch_up(self.state)

    def lag_records(self) -> int:
        """Records up to each feed's counted seq the state has not applied."""
        vector = {} if self.state is None else self.state.vector
        return sum(max(0, st.counted_seq - vector.get(i, 0))
                   for i, st in self.ledger.feeds().items())


__all__ = ["DerivedKeeper"]
