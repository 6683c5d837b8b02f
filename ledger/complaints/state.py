"""The complaint state: a pure function of the set of records (any order, any
split into batches), kept in memory by a node (node/complaintkeeper.py) or
built by anyone from a log (`catch_up`).

Reads (what the commands use, docs/complaints.md):

    queue(carrier, at_ms, open_only, overdue_only)  the carrier's complaints at a time
    status(complaint_id)                            one complaint's chain
    listed(at_ms)                                   the bad list at a time
    listing(uscc)                                   one enterprise's sanctions

The issuing node's effect checks (`check_handling_targets`,
`check_sanction_changes`, the complaint's duplicate check) read the same
state with the own records of the same group commit (`holdings_complaints`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ledger import derived
from ledger.complaints.facts import ComplaintFact, HandlingFact, SanctionFact, fact_of
from ledger.complaints.rules import (
    CLOSED,
    OVERDUE,
    ComplaintStatus,
    Listing,
    listing_of,
    status_of,
)
from ledger.errors import (
    AlreadyHandled,
    AlreadyListed,
    NotAComplaint,
    NotAddressed,
    NotAllowed,
    NotAMark,
    NotListed,
    UnknownTarget,
)
from ledger.payloads import Complaint, Handling, Mark, Sanction
from ledger.payloads.handling import MARK
from ledger.record import Record

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.log import NodeLedger
    from ledger.sealing import MembersKey

_Dup = tuple[str, bytes, int, str]   # number, sealed complainant, call time, category


class ComplaintState:
    """Complaints, handlings and sanctions by id, with the indexes the reads use."""

    def __init__(self, consortium: Consortium) -> None:
        self.consortium = consortium
        self.key: MembersKey | None = consortium.members_key
        self.clear()

    def clear(self) -> None:
        """Forget every record (a state ahead of a frozen feed is built anew)."""
        self.vector: dict[str, int] = {}
        self._seen: set[bytes] = set()
        self.complaints: dict[bytes, ComplaintFact] = {}
        self._handlings: dict[bytes, HandlingFact] = {}
        self._naming: dict[bytes, set[bytes]] = {}        # complaint id -> handling ids
        self._touching: dict[str, set[bytes]] = {}        # carrier -> complaints it got
        self._dups: dict[_Dup, bytes] = {}
        self._sanctions: dict[str, dict[bytes, SanctionFact]] = {}
        self._status: dict[bytes, ComplaintStatus] = {}   # cache, dropped on a new handling

    # ------------------------------------------------------------ updates
    def apply(self, records: Iterable[Record]) -> int:
        """Take in `records` (any order; seen ones again change nothing).
        Returns how many entered the state."""
        return len(self._take(records))

    def _take(self, records: Iterable[Record]) -> list[Record]:
        """`apply`, returning the records that entered."""
        entered: list[Record] = []
        vector = self.vector
        for rec in records:
            if rec.seq > vector.get(rec.issuer, 0):
                vector[rec.issuer] = rec.seq
            if rec.id in self._seen:
                continue
            fact = fact_of(rec, self.consortium)
            if fact is None:
                continue
            self._seen.add(rec.id)
            self._put(fact)
            entered.append(rec)
        return entered

    def _put(self, f: ComplaintFact | HandlingFact | SanctionFact) -> None:
        if isinstance(f, ComplaintFact):
            self.complaints[f.id] = f
            c = f.complaint
            self._touching.setdefault(c.addressed_to, set()).add(f.id)
            key = (c.number, c.complainant, c.call_at_ms, c.category)
            cur = self._dups.get(key)
            self._dups[key] = f.id if cur is None else min(cur, f.id)
            self._status.pop(f.id, None)
        elif isinstance(f, HandlingFact):
            self._handlings[f.id] = f
            for cid in f.handling.complaints:
                self._naming.setdefault(cid, set()).add(f.id)
                self._status.pop(cid, None)
                if f.handling.forward_to:
                    self._touching.setdefault(f.handling.forward_to, set()).add(cid)
        else:
            self._sanctions.setdefault(f.uscc, {})[f.id] = f

    # ------------------------------------------------------------ reads
    def complaint(self, cid: bytes) -> ComplaintFact | None:
        return self.complaints.get(cid)

    def holds(self, rid: bytes) -> bool:
        """Has the record `rid` entered the state?"""
        return rid in self._seen

    def handlings_of(self, cid: bytes) -> list[HandlingFact]:
        return [self._handlings[h] for h in sorted(self._naming.get(cid, ()))]

    def status(self, cid: bytes) -> ComplaintStatus | None:
        """The complaint's chain, or None when the state holds no such complaint."""
        st = self._status.get(cid)
        if st is None:
            c = self.complaints.get(cid)
            if c is None:
                return None
            p = self.consortium.policy
            st = status_of(c, self.handlings_of(cid), p.complaint_ack_ms, p.complaint_close_ms)
            self._status[cid] = st
        return st

    def queue(
        self, carrier: str, at_ms: int, open_only: bool = False, overdue_only: bool = False
    ) -> list[ComplaintStatus]:
        """The complaints addressed to `carrier` at `at_ms` (after the forwards
        up to then), oldest filing first; `open_only` leaves out the closed,
        `overdue_only` keeps the overdue."""
        out = []
        for cid in self._touching.get(carrier, ()):
            st = self.status(cid)
            if st is None or st.addressee_at(at_ms) != carrier:
                continue
            state = st.state_at(at_ms)
            if (open_only and state == CLOSED) or (overdue_only and state != OVERDUE):
                continue
            out.append(st)
        out.sort(key=lambda s: (s.complaint.issued_at, s.id))
        return out

    def duplicate_of(self, c: Complaint) -> bytes | None:
        return self._dups.get((c.number, c.complainant, c.call_at_ms, c.category))

    def sanctions_of(self, uscc: str) -> list[SanctionFact]:
        return list(self._sanctions.get(uscc, {}).values())

    def listing(self, uscc: str) -> Listing | None:
        """The enterprise's sanctions, or None when it never had one."""
        got = self._sanctions.get(uscc)
        return None if not got else listing_of(uscc, got.values())

    def listed(self, at_ms: int) -> list[tuple[Listing, SanctionFact]]:
        """The enterprises on the bad list at `at_ms`, by credit code, each with
        the listing in force."""
        out = []
        for uscc in sorted(self._sanctions):
            listing = listing_of(uscc, self._sanctions[uscc].values())
            now = listing.in_force(at_ms)
            if now is not None:
                out.append((listing, now))
        return out


def catch_up(state: ComplaintState, ledger: NodeLedger, batch_size: int = 1000) -> int:
    """Bring `state` to the ledger (ledger/derived.py). Returns how many
    records were read. Raises StorageFailure."""
    return derived.catch_up(state, ledger, batch_size)


# ---------------------------------------------------------------- effect checks


class _WithFresh:
    """The ledger's complaint state and the own records of the same group
    commit (signed, not written yet), as the effect checks read them."""

    def __init__(self, state: ComplaintState, fresh: Iterable[Record]) -> None:
        self.state = state
        self.key = state.key
        self.fresh = [f for f in (fact_of(r, state.consortium) for r in fresh)
                      if f is not None and not state.holds(f.id)]

    def complaint(self, cid: bytes) -> ComplaintFact | None:
        got = self.state.complaint(cid)
        if got is not None:
            return got
        return next((f for f in self.fresh if isinstance(f, ComplaintFact) and f.id == cid),
                    None)

    def status(self, cid: bytes) -> ComplaintStatus | None:
        c = self.complaint(cid)
        if c is None:
            return None
        extra = [f for f in self.fresh
                 if isinstance(f, HandlingFact) and cid in f.handling.complaints]
        if not extra and c.id in self.state.complaints:
            return self.state.status(cid)
        p = self.state.consortium.policy
        return status_of(c, [*self.state.handlings_of(cid), *extra], p.complaint_ack_ms,
                         p.complaint_close_ms)

    def duplicate_of(self, c: Complaint) -> bytes | None:
        got = self.state.duplicate_of(c)
        if got is not None:
            return got
        return next((f.id for f in self.fresh if isinstance(f, ComplaintFact) and (
            f.complaint.number, f.complaint.complainant, f.complaint.call_at_ms,
            f.complaint.category) == (c.number, c.complainant, c.call_at_ms, c.category)), None)

    def listing(self, uscc: str) -> Listing | None:
        got = [*self.state.sanctions_of(uscc),
               *(f for f in self.fresh if isinstance(f, SanctionFact) and f.uscc == uscc)]
        return listing_of(uscc, got) if got else None


def holdings_complaints(held: Any) -> _WithFresh:
    """The complaint state a node's Holdings (ledger.holdings.LedgerHoldings)
    reads: the one the node wires (`ledger.complaints`), or, for a ledger
    driven without a node, one caught up from its log on the spot."""
    ledger = held.ledger
    state = getattr(ledger, "complaints", None)
    if state is None:
        # Kept on the ledger and caught up incrementally: each check reads only
        # the records since the last one, not the whole log again.
        state = getattr(ledger, "_complaints_unwired", None)
        if state is None:
            state = ledger._complaints_unwired = ComplaintState(ledger.consortium)
        catch_up(state, ledger)
    return _WithFresh(state, getattr(held, "fresh", ()))


def check_handling_targets(
    issuer: str, payload: Handling, held: Any, wait_for_target: bool
) -> None:
    """ledger.payloads.handling.check_handling_effect's rule (see there)."""
    view = holdings_complaints(held)
    number = None
    for cid in payload.complaints:
        short = cid.hex()[:16]
        st = view.status(cid)
        if st is None:
            rec = held.held(cid)
            if rec is None:
                if wait_for_target:
                    continue
                raise UnknownTarget(f"complaint {short} is not in this node's log: handle "
                                    "it once it has arrived")
            what = "a complaint the rules ignore" if isinstance(rec.payload, Complaint) \
                else f"a {rec.kind}"
            raise NotAComplaint(f"{short} is {what}, not a complaint: handling it changes "
                                "nothing")
        if st.closed_at is not None:
            assert st.closer is not None
            raise AlreadyHandled(
                f"complaint {short} is closed already: {st.closer.handling.finding} by "
                f"{st.closer.issuer} ({st.closed_by.hex()[:16]}); a finding is final"
            )
        if st.addressee != issuer:
            via = " (forwarded there)" if st.forwards else ""
            raise NotAddressed(f"complaint {short} is addressed to {st.addressee}{via}, not "
                               f"{issuer}: only its addressee handles or forwards it")
        number = st.complaint.number
    if payload.action == MARK:
        _check_mark(issuer, payload.mark_id, number, held, wait_for_target)


def _check_mark(
    issuer: str, mark_id: bytes, number: str | None, held: Any, wait: bool
) -> None:
    rec = held.held(mark_id)
    short = mark_id.hex()[:16]
    if rec is None:
        if wait:
            return
        raise UnknownTarget(f"mark {short} is not in this node's log: name a mark it holds")
    if not isinstance(rec.payload, Mark):
        raise NotAMark(f"{short} is a {rec.kind}, not a mark: a handling's action names the "
                       "mark it issued")
    if rec.issuer != issuer:
        raise NotAllowed(f"mark {short} is {rec.issuer}'s: a handling names its own mark")
    if number is not None and rec.payload.number != number:
        raise NotAMark(f"mark {short} is of another number than the complaint's")


def check_sanction_changes(payload: Sanction, held: Any) -> None:
    """ledger.payloads.sanction.check_sanction_effect's rule (see there)."""
    listing = holdings_complaints(held).listing(payload.uscc)
    now = None if listing is None else listing.in_force(payload.listed_at_ms)
    if payload.delist and now is None:
        raise NotListed(f"{payload.uscc} ({payload.enterprise}) is not on the bad list at "
                        "that time: there is nothing to delist")
    if not payload.delist and now is not None and (
        now.sanction.document == payload.document
    ):
        raise AlreadyListed(f"{payload.uscc} is listed already under document "
                            f"{payload.document} ({now.id.hex()[:16]})")
