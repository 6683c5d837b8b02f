"""A handling: the carrier a complaint is addressed to says what it found
and did: confirmed (with its action: a mark by record id, a warning to the
line, the line suspended, or none), not confirmed, or not its subscriber,
forwarded to the carrier named (the cross-network linkage); and when it gave
feedback to the reported party and to the complainant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.errors import MalformedRecord, NotAllowed
from ledger.payloads._fields import ID_SIZE, MAX_TARGETS
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.payloads.correction import Holdings

CONFIRMED = "confirmed"
NOT_CONFIRMED = "not-confirmed"
NOT_OURS = "not-ours"
FINDINGS = (CONFIRMED, NOT_CONFIRMED, NOT_OURS)
MARK = "mark"
WARNING = "warning"
SUSPENDED = "suspended"
NONE = "none"
ACTIONS = (MARK, WARNING, SUSPENDED, NONE)

_FINDINGS = {pb.HANDLING_FINDING_CONFIRMED: CONFIRMED,
             pb.HANDLING_FINDING_NOT_CONFIRMED: NOT_CONFIRMED,
             pb.HANDLING_FINDING_NOT_OURS: NOT_OURS}
FINDING_CODES = {v: k for k, v in _FINDINGS.items()}  # a finding's name -> its wire enum
_ACTIONS = {pb.HANDLING_ACTION_UNSPECIFIED: NONE, pb.HANDLING_ACTION_MARK: MARK,
            pb.HANDLING_ACTION_WARNING: WARNING, pb.HANDLING_ACTION_SUSPENDED: SUSPENDED}
ACTION_CODES = {v: k for k, v in _ACTIONS.items()}  # an action's name -> its wire enum


@dataclass(frozen=True)
class Handling:
    complaints: tuple[bytes, ...]        # complaint record ids, 1..64
    finding: str                         # of FINDINGS
    forward_to: str = ""                 # NOT_OURS only: the carrier it goes to
    action: str = NONE                   # of ACTIONS; only a confirmed finding acts
    mark_id: bytes = b""                 # MARK only: the mark's record id
    feedback_reported_at_ms: int = 0     # 0: the reported party not told (yet)
    feedback_complainant_at_ms: int = 0  # 0: the complainant not told (yet)

    def __post_init__(self) -> None:
        if not isinstance(self.complaints, tuple):
            object.__setattr__(self, "complaints", tuple(self.complaints))
        if not 0 < len(self.complaints) <= MAX_TARGETS:
            raise MalformedRecord(f"a handling names 1..{MAX_TARGETS} complaints")
        if any(len(c) != ID_SIZE for c in self.complaints):
            raise MalformedRecord(f"a handling names complaints by {ID_SIZE}-byte record ids")
        if len(set(self.complaints)) != len(self.complaints):
            raise MalformedRecord("a handling names the same complaint twice")
        if self.finding not in FINDINGS:
            raise MalformedRecord(f"a handling's finding is one of {', '.join(FINDINGS)}, "
                                  f"got {self.finding!r}")
        if (self.finding == NOT_OURS) != bool(self.forward_to):
            raise MalformedRecord("a handling forwards (forward_to) exactly when its finding "
                                  "is not-ours")
        if self.action not in ACTIONS:
            raise MalformedRecord(f"a handling's action is one of {', '.join(ACTIONS)}")
        if self.action != NONE and self.finding != CONFIRMED:
            raise MalformedRecord(f"only a confirmed complaint is acted on; a {self.finding} "
                                  "handling's action is none")
        if (self.action == MARK) != bool(self.mark_id):
            raise MalformedRecord("a handling names a mark (mark_id) exactly when its action "
                                  "is mark")
        if self.mark_id and len(self.mark_id) != ID_SIZE:
            raise MalformedRecord(f"a handling's mark is a {ID_SIZE}-byte record id")
        if self.feedback_reported_at_ms < 0 or self.feedback_complainant_at_ms < 0:
            raise MalformedRecord("feedback times must not be negative")

    @property
    def closes(self) -> bool:
        """A finding about the subscriber (confirmed or not) closes the complaint;
        a forward hands it on."""
        return self.finding != NOT_OURS

    def to_pb(self) -> pb.Handling:
        return pb.Handling(
            complaints=list(self.complaints), finding=FINDING_CODES[self.finding],
            forward_to=self.forward_to, action=ACTION_CODES[self.action],
            mark_id=self.mark_id, feedback_reported_at_ms=self.feedback_reported_at_ms,
            feedback_complainant_at_ms=self.feedback_complainant_at_ms,
        )


def decode_handling(m: pb.Handling) -> Handling:
    if m.finding not in _FINDINGS:
        raise MalformedRecord(f"unknown handling finding {m.finding}")
    if m.action not in _ACTIONS:
        raise MalformedRecord(f"unknown handling action {m.action}")
    return Handling(tuple(m.complaints), _FINDINGS[m.finding], m.forward_to, _ACTIONS[m.action],
                    m.mark_id, m.feedback_reported_at_ms, m.feedback_complainant_at_ms)


def check_handling(cons: Consortium, role: str, issuer: str, payload: Handling) -> None:
    """Carriers only; a forward goes to another carrier of the consortium
    (NotAllowed). That the complaints are addressed to the issuer needs the
    complaints: the issuing node's `check_handling_effect` (NotAddressed)."""
    if role != "carrier":
        raise NotAllowed(f"only carriers handle complaints; {issuer} is a {role}")
    if payload.forward_to:
        to = cons.participant(payload.forward_to)
        if to is None or to.role != "carrier":
            raise NotAllowed(f"a complaint is forwarded to a carrier; {payload.forward_to} "
                             "is not one in the consortium")
        if payload.forward_to == issuer:
            raise NotAllowed(f"{issuer} forwards a complaint to another carrier, not itself")


def check_handling_effect(
    issuer: str, payload: Handling, held: Holdings, wait_for_target: bool
) -> None:
    """Each complaint named exists (UnknownTarget, unless `wait_for_target`), is
    a complaint (NotAComplaint), is addressed to the issuer after the forwards
    so far (NotAddressed) and is not closed (AlreadyHandled); a mark named is
    the issuer's own mark of the reported number (UnknownTarget, NotAMark)."""
    from ledger.complaints.state import check_handling_targets  # imports this module

    check_handling_targets(issuer, payload, held, wait_for_target)
