"""The writer-thread upkeep of a state derived from the log (the national
view, node/viewkeeper.py; the consent state; the complaint state): applied
after each ledger commit, before the issuing call is answered (node/core.py
runs subscribers first); caught up from the ledger (ledger/derived.py) when
the records do not extend it, when an update failed, or when a feed froze
(records past a freeze must stop counting: the state is cleared first when
it is ahead of a feed)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

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
            if self.state is not None:
                self._update(self.state, records)

    def invalidate(self) -> None:
        """A feed froze: catch up (rebuilding if ahead of it) on the next tick."""
        with self._lock:
            self._rebuild_needed = True

    def tick(self) -> None:
        """Catch up when an update failed, or a feed froze, since the last one."""
        with self._lock:
            if self.state is not None and self._rebuild_needed:
                self._update(self.state, None)

    def _update(self, state: S, records: list[Record] | None) -> None:
        """Under the lock: apply `records` to `state`, or catch up from the
        ledger when there are none (a tick), when they do not extend the
        state (a gap, or records beyond a frozen feed's counted seq) or when
        an update failed; a failure leaves the next update or tick to catch up."""
        self._changing()
        ok = False
        try:
            if records is None or self._rebuild_needed or not derived.extends(
                state.vector, records, self.ledger
            ):
                self._catch_up(state)
                self._changed(None)
            else:
                self._changed(state.apply(records))
            ok = True
        except Exception:
            self._rebuild_needed = True
            raise
        finally:
            self._settled(ok)

    # What a keeper adds around each change of its state (nothing, here): the
    # view keeper's version for lock-free reads, its change journal, its note.
    def _changing(self) -> None:
        """A change of the state begins (under the lock)."""

    def _changed(self, changed: Any) -> None:
        """The state changed: what its `apply` returned, None after a catch-up."""

    def _settled(self, ok: bool) -> None:
        """The change ended (`ok`: without an error), still under the lock."""

    def lag_records(self) -> int:
        """Records up to each feed's counted seq the state has not applied."""
        vector = {} if self.state is None else self.state.vector
        return sum(max(0, st.counted_seq - vector.get(i, 0))
                   for i, st in self.ledger.feeds().items())


__all__ = ["DerivedKeeper"]
