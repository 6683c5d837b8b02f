"""The complaint rules, pure functions of facts and an explicit time
(docs/complaints.md).

A complaint's handling chain: starting at the carrier it is addressed to,
the earliest handling (issue order) by the current addressee takes effect: a
forward (not-ours) makes its `forward_to` the addressee, a finding
(confirmed or not confirmed) closes it. Handlings by a carrier that is not
the addressee at that step, or after the close, take no effect (the issuing
node refuses them: NotAddressed, AlreadyHandled). Walking by addressee
rather than by time alone keeps the chain causal under clock skew: the
carrier a complaint is forwarded to cannot act before the forward.

The SLA clock starts at the complaint's filing (its issued_at): it is
acknowledged by its first effective handling (a forward counts: the carrier
answered), closed by the finding; overdue at a time when it is not
acknowledged past `complaint_ack_ms`, or not closed past `complaint_close_ms`.

The bad list: per unified social credit code, the sanction with the latest
`listed_at` (then issue order) up to a time wins; the enterprise is listed
when that one is a listing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.complaints.facts import ComplaintFact, HandlingFact, SanctionFact, order

OPEN, OVERDUE, CLOSED = "open", "overdue", "closed"
STATES = (OPEN, OVERDUE, CLOSED)


@dataclass(frozen=True)
class Forward:
    by: str
    to: str
    at: int                 # when it took effect (never before the carrier received it)
    ref: bytes              # the handling's record id


@dataclass(frozen=True)
class ComplaintStatus:
    """A complaint with its handling chain; `*_at(at_ms)` answer for a time."""

    complaint: ComplaintFact
    addressed_to: str               # as filed
    forwards: tuple[Forward, ...]
    acknowledged_at: int | None     # the first effective handling's time
    closed_at: int | None
    closed_by: bytes                # the closing handling's id, or b""
    closer: HandlingFact | None
    ack_due: int
    close_due: int
    handlings: tuple[bytes, ...]    # the effective handlings, in chain order

    @property
    def id(self) -> bytes:
        return self.complaint.id

    @property
    def addressee(self) -> str:
        """Where it is after every forward known."""
        return self.forwards[-1].to if self.forwards else self.addressed_to

    def addressee_at(self, at_ms: int) -> str:
        cur = self.addressed_to
        for f in self.forwards:
            if f.at <= at_ms:
                cur = f.to
        return cur

    def state_at(self, at_ms: int) -> str:
        if self.closed_at is not None and self.closed_at <= at_ms:
            return CLOSED
        return OVERDUE if self.overdue_at(at_ms) else OPEN

    def overdue_at(self, at_ms: int) -> bool:
        """Past a deadline without the step that meets it, at `at_ms`."""
        acked = self.acknowledged_at is not None and self.acknowledged_at <= at_ms
        closed = self.closed_at is not None and self.closed_at <= at_ms
        return (not acked and at_ms > self.ack_due) or (not closed and at_ms > self.close_due)

    @property
    def acknowledged_in_time(self) -> bool:
        return self.acknowledged_at is not None and self.acknowledged_at <= self.ack_due

    @property
    def closed_in_time(self) -> bool:
        return self.closed_at is not None and self.closed_at <= self.close_due


def status_of(
    c: ComplaintFact, handlings: Iterable[HandlingFact], ack_ms: int, close_ms: int
) -> ComplaintStatus:
    """The complaint's chain from the handlings naming it (any order)."""
    pending = sorted(handlings, key=order)
    cur = c.complaint.addressed_to
    since = c.issued_at             # when the current addressee received it
    forwards: list[Forward] = []
    effective: list[bytes] = []
    acknowledged: int | None = None
    closer: HandlingFact | None = None
    closed_at: int | None = None
    visited = {cur}
    while closer is None:
        h = next((h for h in pending if h.issuer == cur), None)
        if h is None:
            break
        pending.remove(h)
        at = max(h.issued_at, since)
        effective.append(h.id)
        if acknowledged is None:
            acknowledged = at
        if h.handling.closes:
            closer, closed_at = h, at
            break
        cur, since = h.handling.forward_to, at
        forwards.append(Forward(h.issuer, cur, at, h.id))
        if cur in visited:
            # Forwarded back: only handlings issued after this forward answer it,
            # so a carrier's earlier forward is not read twice.
            pending = [p for p in pending if order(p) > order(h)]
        visited.add(cur)
    return ComplaintStatus(
        complaint=c,
        addressed_to=c.complaint.addressed_to,
        forwards=tuple(forwards),
        acknowledged_at=acknowledged,
        closed_at=closed_at,
        closed_by=b"" if closer is None else closer.id,
        closer=closer,
        ack_due=c.issued_at + ack_ms,
        close_due=c.issued_at + close_ms,
        handlings=tuple(effective),
    )


def _sanction_order(f: SanctionFact) -> tuple[int, int, str, int, bytes]:
    return (f.sanction.listed_at_ms, *order(f))


@dataclass(frozen=True)
class Listing:
    """One enterprise's sanctions (by its credit code), in effect order."""

    uscc: str
    sanctions: tuple[SanctionFact, ...]

    def in_force(self, at_ms: int) -> SanctionFact | None:
        """The listing in force at `at_ms`, or None (never listed, or delisted)."""
        latest = None
        for s in self.sanctions:
            if s.sanction.listed_at_ms <= at_ms:
                latest = s
        return None if latest is None or latest.sanction.delist else latest

    @property
    def enterprise(self) -> str:
        """The name of the latest listing (a delisting repeats the name)."""
        return self.sanctions[-1].sanction.enterprise


def listing_of(uscc: str, sanctions: Iterable[SanctionFact]) -> Listing:
    return Listing(uscc, tuple(sorted(sanctions, key=_sanction_order)))
