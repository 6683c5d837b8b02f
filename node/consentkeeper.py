"""The node's consent state (ledger/consent): kept up to date on the writer
thread, before the issuing call is answered (node/core.py runs subscribers
first), so a preference acknowledged by this node holds in its own screen.

The state lives in the node's store (StoredConsent): a start applies only the
ledger records beyond the stored state's vector (catch_up), so a crash
between a ledger commit and the state's unsynced batch heals at the next
start. A failed update, or a feed that froze, makes the next tick catch up
from the ledger (as the view keeper does).

A node without a members' key keeps no consent state: it cannot find the
subscriber of a reassignment, and it accepts no carrier's preference
(MembersKeyMissing); asking it raises MembersKeyMissing too.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ledger.consent import LineFact, PreferenceFact, StoredConsent, catch_up
from ledger.derived import extends
from ledger.errors import MembersKeyMissing
from node.logs import event

if TYPE_CHECKING:
    from ledger.log import NodeLedger
    from ledger.record import Record
    from ledger.sealing import MembersKey

log = logging.getLogger("markex.consent")


class ConsentKeeper:
    """A ConsentReader over the node's store (`preference_at`, `line_at`)."""

    def __init__(self, ledger: NodeLedger, key: MembersKey | None) -> None:
        self.ledger = ledger
        self.key = key
        self.state: StoredConsent | None = None
        self._lock = threading.Lock()
        self._rebuild_needed = False

    def start(self) -> None:
        """Open the stored state and catch up with the ledger."""
        if self.key is None:
            event(log, logging.WARNING, "consent-off",
                  note="no members' key (node.toml members_key): no consent state, "
                       "carriers' preferences are refused")
            return
        with self._lock:
            state = StoredConsent(self.ledger.store, self.key)
            catch_up(state, self.ledger)
            self.state = state

    # ------------------------------------------------------------ updates
    def apply(self, records: list[Record]) -> None:
        """Runs on the writer thread after each ledger commit."""
        with self._lock:
            state = self.state
            if state is None:
                return
            try:
                if self._rebuild_needed or not extends(state.vector, records, self.ledger):
                    catch_up(state, self.ledger)  # a gap, or beyond a frozen feed's counted seq
                    self._rebuild_needed = False
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
            if self.state is None or not self._rebuild_needed:
                return
            catch_up(self.state, self.ledger)
            self._rebuild_needed = False

    def lag_records(self) -> int:
        """Records up to each feed's counted seq the state has not applied."""
        vector = {} if self.state is None else self.state.vector
        return sum(max(0, st.counted_seq - vector.get(i, 0))
                   for i, st in self.ledger.feeds().items())

    # ------------------------------------------------------------ reads
    def _state(self) -> StoredConsent:
        state = self.state
        if state is None:
            raise MembersKeyMissing(
                "this node keeps no consent state: give it its members' key "
                "(node.toml members_key)"
            )
        return state

    def preference_at(self, sealed: bytes, at_ms: int) -> PreferenceFact | None:
        """The preference in force for the sealed subscriber at `at_ms`
        (docs/consent.md), or None. Raises MembersKeyMissing."""
        return self._state().preference_at(sealed, at_ms)

    def line_at(self, number: str, at_ms: int) -> LineFact | None:
        """The registration holding the E.164 `number` at `at_ms`, or None.
        Raises MembersKeyMissing."""
        return self._state().line_at(number, at_ms)

    def preferences_at(self, sealed: list[bytes], at_ms: list[int]
                       ) -> list[PreferenceFact | None]:
        """`preference_at` of each pair, in order. Raises MembersKeyMissing."""
        return self._state().preferences_at(sealed, at_ms)
