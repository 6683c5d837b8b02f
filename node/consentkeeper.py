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
from collections.abc import Callable
from typing import TYPE_CHECKING

from ledger.consent import LineFact, PreferenceFact, StoredConsent
from ledger.errors import MembersKeyMissing
from node.derivedkeeper import DerivedKeeper
from node.logs import event

if TYPE_CHECKING:
    from ledger.log import NodeLedger
    from ledger.sealing import MembersKey

log = logging.getLogger("markex.consent")


class ConsentKeeper(DerivedKeeper[StoredConsent]):
    """A ConsentReader over the node's store (`preference_at`, `line_at`)."""

    def __init__(self, ledger: NodeLedger, key: MembersKey | None) -> None:
        super().__init__(ledger)
        self.key = key

    def start(self) -> None:
        """Open the stored state and catch up with the ledger."""
        if self.key is None:
            event(log, logging.WARNING, "consent-off",
                  note="no members' key (node.toml members_key): no consent state, "
                       "carriers' preferences are refused")
            return
        with self._lock:
            state = StoredConsent(self.ledger.store, self.key)
            self._catch_up(state)
            self.state = state

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

    def line_reader(self) -> Callable[[str, int], LineFact | None]:
        """`line_at` of the registrations as they are now. Raises MembersKeyMissing."""
        return self._state().line_reader()

    def preferences_at(self, sealed: list[bytes], at_ms: list[int]
                       ) -> list[PreferenceFact | None]:
        """`preference_at` of each pair, in order. Raises MembersKeyMissing."""
        return self._state().preferences_at(sealed, at_ms)
