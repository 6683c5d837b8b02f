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
import threading
from typing import TYPE_CHECKING

from ledger.complaints import ComplaintState, ComplaintStatus, Listing, SanctionFact, catch_up
from ledger.complaints.stored import StoredComplaints
from ledger.derived import extends
from node.logs import event

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.log import NodeLedger
    from ledger.record import Record

log = logging.getLogger("markex.complaints")


class ComplaintKeeper:
    """The complaint reader the commands use (`queue`, `status`, `listed`, `listing`)."""

    def __init__(self, ledger: NodeLedger, consortium: Consortium) -> None:
        self.ledger = ledger
        self.consortium = consortium
        self.state: ComplaintState = ComplaintState(consortium)  # until start
        self._lock = threading.Lock()
        self._rebuild_needed = False

    def start(self) -> None:
        with self._lock:
            state = StoredComplaints(self.ledger.store, self.consortium)
            read = catch_up(state, self.ledger)
            self.state = state
            self.ledger.complaints = state      # what the effect checks read
            event(log, logging.INFO, "complaints-open", caught_up=read,
                  complaints=len(state.complaints))

    def _rebuild(self) -> None:
        """Catch up with the ledger (clearing first if ahead of a frozen feed)."""
        catch_up(self.state, self.ledger)
        self._rebuild_needed = False

    def apply(self, records: list[Record]) -> None:
        """Runs on the writer thread after each ledger commit."""
        with self._lock:
            try:
                if self._rebuild_needed or not extends(self.state.vector, records, self.ledger):
                    self._rebuild()
                else:
                    self.state.apply(records)
            except Exception:
                self._rebuild_needed = True  # the next update or tick builds it anew
                raise

    def invalidate(self) -> None:
        with self._lock:
            self._rebuild_needed = True

    def tick(self) -> None:
        with self._lock:
            if self._rebuild_needed:
                self._rebuild()

    def lag_records(self) -> int:
        """Records up to each feed's counted seq the state has not applied."""
        vector = self.state.vector
        return sum(max(0, st.counted_seq - vector.get(i, 0))
                   for i, st in self.ledger.feeds().items())

    # ------------------------------------------------------------ reads
    def queue(self, carrier: str, at_ms: int, open_only: bool = False,
              overdue_only: bool = False) -> list[ComplaintStatus]:
        with self._lock:
            return self.state.queue(carrier, at_ms, open_only, overdue_only)

    def status(self, complaint_id: bytes) -> ComplaintStatus | None:
        with self._lock:
            return self.state.status(complaint_id)

    def listed(self, at_ms: int) -> list[tuple[Listing, SanctionFact]]:
        with self._lock:
            return self.state.listed(at_ms)

    def listing(self, uscc: str) -> Listing | None:
        with self._lock:
            return self.state.listing(uscc)
