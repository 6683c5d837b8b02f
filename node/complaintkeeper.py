"""The node's complaint state (ledger/complaints): the carriers' queues, the
SLA clock, the bad list. Kept on the writer thread before the issuing call is
answered (node/core.py runs subscribers first), so a complaint this node
accepted is in its own queue when the caller hears back.

The state lives in the node's store (StoredComplaints: the complaint,
handling and sanction envelopes and the vector) and in memory: a start loads
it and applies only the ledger records beyond its vector (`catch_up`), so a
crash between a ledger commit and the state's unsynced batch heals at the
next start. A failed update, or a feed that froze (records past a freeze
must stop counting), makes the next tick catch up, clearing the state first
when it is ahead of a feed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ledger.complaints import ComplaintState, ComplaintStatus, Listing, SanctionFact
from ledger.complaints.stored import StoredComplaints
from node.derivedkeeper import DerivedKeeper
from node.logs import event

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.log import NodeLedger

log = logging.getLogger("markex.complaints")


class ComplaintKeeper(DerivedKeeper[ComplaintState]):
    """The complaint reader the commands use (`queue`, `status`, `listed`, `listing`)."""

    def __init__(self, ledger: NodeLedger, consortium: Consortium) -> None:
        super().__init__(ledger)
        self.consortium = consortium
        self.state = ComplaintState(consortium)  # until start

    def start(self) -> None:
        with self._lock:
            state = StoredComplaints(self.ledger.store, self.consortium)
            read = self._catch_up(state)
            self.state = state
            self.ledger.complaints = state      # what the effect checks read
            event(log, logging.INFO, "complaints-open", caught_up=read,
                  complaints=len(state.complaints))

    def _held(self) -> ComplaintState:
        assert self.state is not None  # set in __init__, never None
        return self.state

    # ------------------------------------------------------------ reads
    def queue(self, carrier: str, at_ms: int, open_only: bool = False,
              overdue_only: bool = False) -> list[ComplaintStatus]:
        with self._lock:
            return self._held().queue(carrier, at_ms, open_only, overdue_only)

    def status(self, complaint_id: bytes) -> ComplaintStatus | None:
        with self._lock:
            return self._held().status(complaint_id)

    def listed(self, at_ms: int) -> list[tuple[Listing, SanctionFact]]:
        with self._lock:
            return self._held().listed(at_ms)

    def listing(self, uscc: str) -> Listing | None:
        with self._lock:
            return self._held().listing(uscc)
