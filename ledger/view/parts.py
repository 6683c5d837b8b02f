"""The parts an entry is made of, and the words its bytes use.

Each part is a frozen dataclass whose fields are exactly what the entry's
canonical bytes carry (ledger/view/entries.py writes and reads them); none of
them reads a clock: a part records the times at which it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTRY_VERSION = 3                 # 2: no free text (appeal reasons); 3: complaints
# An entry keeps at most this many complaints (its latest by call time), and
# of one complainant at most PER_COMPLAINANT: so the count of distinct
# complainants at any time from the latest call on is exact (a complainant
# with a complaint in the window has its latest one there, and 64 kept with
# at most 4 each are at least 16 distinct, past any threshold up to 16), while
# what a lookup reads stays bounded whatever the centre files.
MAX_ENTRY_COMPLAINTS = 64
PER_COMPLAINANT = 4
MAX_NUMBER_BYTES = 32

# Why a mark does not count. When several hold, the one that started first is
# reported; at equal times, the earlier name in this tuple.
WITHDRAWN = "withdrawn"
APPEAL_UPHELD = "appeal upheld"
REASSIGNED = "reassigned"
PROTECTED = "protected"
EXPIRED = "expired"
SUPERSEDED = "superseded"
REASONS = (WITHDRAWN, APPEAL_UPHELD, REASSIGNED, PROTECTED, EXPIRED, SUPERSEDED)
REASON_ORDER = {r: i for i, r in enumerate(REASONS)}
SPAN_REASONS = (WITHDRAWN, APPEAL_UPHELD, REASSIGNED)   # the ones fixed in the entry

PENDING = "pending"
UPHELD = "upheld"
REJECTED = "rejected"
APPEAL_WITHDRAWN = "withdrawn"
APPEAL_STATUSES = (PENDING, UPHELD, REJECTED, APPEAL_WITHDRAWN)

RISK_NONE = "none"
RISK_MEDIUM = "medium"
RISK_HIGH = "high"

# The roles a mark can have (an entry's marks): the complaints centre and the
# regulator mark nothing (ledger/payloads ROLE_PAYLOADS).
ROLES = ("institute", "carrier", "internet")


@dataclass(frozen=True)
class Rules:
    """The policy values an entry is evaluated with (copied in, so a client
    that verified the entry bytes can evaluate them without the config)."""

    high_risk_min_participants: int
    identity_min_participants: int
    institute_mark_is_high_risk: bool
    # The complaint rule (docs/view.md): at least this many distinct
    # complainants about calls within the window raise the risk to at least
    # complaint_risk; 0 complainants: off.
    complaint_risk_complainants: int = 0
    complaint_risk_window_ms: int = 0
    complaint_risk: str = RISK_MEDIUM


@dataclass(frozen=True)
class CategoryInfo:
    id: str
    rank: int
    risk: bool


@dataclass(frozen=True)
class Recategorization:
    at: int                 # the issuer's correction's issued_at
    category: str
    ref: bytes              # the correction's record id


@dataclass(frozen=True)
class SetAsideSpan:
    """From `since` on (for good) the mark does not count, for `reason`."""

    since: int
    reason: str             # withdrawn | appeal upheld | reassigned
    ref: bytes              # the correction, appeal or reassignment record id


@dataclass(frozen=True)
class EntryMark:
    id: bytes
    participant: str
    role: str
    weight: int
    category: str           # as marked; see recategorized
    score: int
    reports: int
    observed_at: int
    expires_at: int         # the policy default already applied
    issued_at: int
    seq: int
    recategorized: tuple[Recategorization, ...] = ()
    set_aside: tuple[SetAsideSpan, ...] = ()

    def category_at(self, at_ms: int) -> str:
        cat = self.category
        for r in self.recategorized:        # sorted by (at, ref)
            if r.at <= at_ms:
                cat = r.category
        return cat


@dataclass(frozen=True)
class Appeal:
    """A correction of other participants' marks, and how it ended (if it did)."""

    id: bytes
    appellant: str
    targets: tuple[bytes, ...]      # the appealed marks on this entry's number
    action: str                     # what the appellant asked: withdraw | recategorize
    category: str                   # the category asked for (recategorize only)
    filed_at: int
    status: str                     # final status: pending | upheld | rejected | withdrawn
    closed_at: int | None = None    # when decided or withdrawn
    closed_by: bytes = b""          # the decision's (or withdrawal's) record id

    def status_at(self, at_ms: int) -> str | None:
        """None before it was filed; pending until it was closed."""
        if at_ms < self.filed_at:
            return None
        if self.closed_at is not None and at_ms >= self.closed_at:
            return self.status
        return PENDING


@dataclass(frozen=True)
class EntryReassignment:
    id: bytes
    carrier: str
    effective_at: int


@dataclass(frozen=True)
class Protection:
    """Marks of `category` observed before `until` are set aside (protected) from
    `since`, or from their `observed_at` when later."""

    category: str
    since: int
    until: int
    decision: bytes


@dataclass(frozen=True)
class EntryComplaint:
    """A complaint about the number, as the public sees it: never the sealed
    complainant or a description, only its per-number tag."""

    id: bytes
    by: str                 # the complaints centre that filed it
    category: str
    call_at: int            # the reported call's time: the rule's window counts it
    filed_at: int
    tag: bytes              # ledger.payloads.complaint.complainant_tag (8 bytes)
