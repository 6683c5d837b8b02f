"""A correction of marks: an issuer's own withdrawal or recategorization, an
appeal against another participant's mark, or the institute's decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.errors import MalformedRecord, NotAllowed, UnknownCategory
from ledger.payloads._fields import ID_SIZE, MAX_CATEGORY, MAX_REASON, MAX_TARGETS
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium

WITHDRAW = "withdraw"
RECATEGORIZE = "recategorize"
UPHOLD = "uphold"
REJECT = "reject"

_ACTIONS = {
    pb.CORRECTION_ACTION_WITHDRAW: WITHDRAW,
    pb.CORRECTION_ACTION_RECATEGORIZE: RECATEGORIZE,
}
_ACTION_CODES = {v: k for k, v in _ACTIONS.items()}
_OUTCOMES = {pb.APPEAL_OUTCOME_UPHOLD: UPHOLD, pb.APPEAL_OUTCOME_REJECT: REJECT}
_OUTCOME_CODES = {v: k for k, v in _OUTCOMES.items()}


@dataclass(frozen=True)
class Correction:
    """A correction of marks, or (with `appeal_id`) the institute's decision.

    - own mark: immediate withdraw / recategorize;
    - another participant's mark: an appeal, pending until decided;
    - decision: `appeal_id` names the appeal, `outcome` is uphold or reject.
    """

    targets: tuple[bytes, ...] = ()
    action: str = ""  # WITHDRAW | RECATEGORIZE | "" for a decision
    category: str = ""  # new category for RECATEGORIZE
    reason: str = ""
    appeal_id: bytes = b""
    outcome: str = ""  # UPHOLD | REJECT for a decision

    def __post_init__(self) -> None:
        if len(self.reason) > MAX_REASON:
            raise MalformedRecord(f"reason is longer than {MAX_REASON} characters")
        if self.is_decision:
            if len(self.appeal_id) != ID_SIZE:
                raise MalformedRecord("a decision's appeal id must be a 32-byte record id")
            if self.outcome not in (UPHOLD, REJECT):
                raise MalformedRecord("a decision needs the outcome uphold or reject")
            if self.targets or self.action or self.category:
                raise MalformedRecord("a decision names only the appeal, not targets or actions")
            return
        if self.outcome:
            raise MalformedRecord("an outcome belongs only to a decision (appeal id missing)")
        if not self.targets:
            raise MalformedRecord("a correction must target at least one record")
        if len(self.targets) > MAX_TARGETS:
            raise MalformedRecord(f"a correction targets at most {MAX_TARGETS} records")
        for t in self.targets:
            if len(t) != ID_SIZE:
                raise MalformedRecord(f"a target must be a 32-byte record id, got {len(t)} bytes")
        if len(set(self.targets)) != len(self.targets):
            raise MalformedRecord("a correction names the same target twice")
        if self.action == WITHDRAW:
            if self.category:
                raise MalformedRecord("a withdrawal takes no new category")
        elif self.action == RECATEGORIZE:
            if not self.category or len(self.category) > MAX_CATEGORY:
                raise MalformedRecord("a recategorization needs the new category")
        else:
            raise MalformedRecord("a correction's action must be withdraw or recategorize")

    @property
    def is_decision(self) -> bool:
        return bool(self.appeal_id)

    def to_pb(self) -> pb.Correction:
        return pb.Correction(
            targets=list(self.targets),
            action=_ACTION_CODES.get(self.action, pb.CORRECTION_ACTION_UNSPECIFIED),
            category=self.category,
            reason=self.reason,
            appeal_id=self.appeal_id,
            outcome=_OUTCOME_CODES.get(self.outcome, pb.APPEAL_OUTCOME_UNSPECIFIED),
        )


def decode_correction(c: pb.Correction) -> Correction:
    if c.action not in _ACTIONS and c.action != pb.CORRECTION_ACTION_UNSPECIFIED:
        raise MalformedRecord(f"unknown correction action {c.action}")
    if c.outcome not in _OUTCOMES and c.outcome != pb.APPEAL_OUTCOME_UNSPECIFIED:
        raise MalformedRecord(f"unknown appeal outcome {c.outcome}")
    return Correction(
        targets=tuple(c.targets),
        action=_ACTIONS.get(c.action, ""),
        category=c.category,
        reason=c.reason,
        appeal_id=c.appeal_id,
        outcome=_OUTCOMES.get(c.outcome, ""),
    )


def check_correction(cons: Consortium, role: str, issuer: str, payload: Correction) -> None:
    """Only the institute decides appeals; a recategorization names a
    category of the taxonomy. (Whose marks a correction may target and who
    may decide which appeal needs other records: `ledger.log` checks it.)"""
    if payload.is_decision:
        if role != "institute":
            raise NotAllowed(f"only the institute decides appeals; {issuer} is a {role}")
        return
    if payload.action == RECATEGORIZE and payload.category not in cons.categories:
        raise UnknownCategory(f"category {payload.category!r} is not in the taxonomy")
