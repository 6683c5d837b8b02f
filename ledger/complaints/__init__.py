"""The complaint state (docs/complaints.md): per complaint its addressee after
forwarding, its handlings and its SLA clock, per carrier its queue, and the
bad list. A pure function of the set of records, in memory; a node keeps one
(node/complaintkeeper.py), an auditor builds one from a log (`catch_up`).

    facts.py   record -> fact (the issuer rule and time bounds first)
    rules.py   the handling chain, the SLA at a time, the bad list at a time
    state.py   `ComplaintState` (queue, status, listed, listing), `catch_up`,
               and the issuing node's effect checks
"""

from ledger.complaints.facts import ComplaintFact, HandlingFact, SanctionFact, fact_of
from ledger.complaints.rules import (
    CLOSED,
    OPEN,
    OVERDUE,
    STATES,
    ComplaintStatus,
    Forward,
    Listing,
    status_of,
)
from ledger.complaints.state import ComplaintState, catch_up

__all__ = ["CLOSED", "OPEN", "OVERDUE", "STATES", "ComplaintFact", "ComplaintState",
           "ComplaintStatus", "Forward", "HandlingFact", "Listing", "SanctionFact", "catch_up",
           "fact_of", "status_of"]
