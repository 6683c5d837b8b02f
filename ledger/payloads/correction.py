"""A correction of marks: an issuer's own withdrawal or recategorization, an
appeal against another participant's mark, or the institute's decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from ledger.errors import (
    AlreadyDecided,
    MalformedRecord,
    NotAllowed,
    NotAMark,
    NotAnAppeal,
    UnknownCategory,
    UnknownTarget,
)
from ledger.payloads._fields import ID_SIZE, MAX_CATEGORY, MAX_REASON, MAX_TARGETS
from ledger.payloads.mark import Mark
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.consent.facts import LineFact, Subscriber
    from ledger.record import Record

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
    category of the taxonomy. (That the institute may not decide an appeal it
    filed needs other records: `ledger.log` checks it, `_check_decider`.)"""
    if payload.is_decision:
        if role != "institute":
            raise NotAllowed(f"only the institute decides appeals; {issuer} is a {role}")
        return
    if payload.action == RECATEGORIZE and payload.category not in cons.categories:
        raise UnknownCategory(f"category {payload.category!r} is not in the taxonomy")


# ---------------------------------------------------------------- effect
# What an own correction can change, given the records the issuing node holds
# (docs/view.md, "Records that change nothing"): checked before signing only.


class Holdings(Protocol):
    """The records a node holds, as the effect check reads them; the
    consent questions are answered from the node's consent state
    (ledger/consent), with the own records of the same group commit."""

    # The own record whose effect is being checked; None when the holdings
    # keep no consent state, and a preference's or a line's effect is not asked.
    issuing: Record | None

    def held(self, rid: bytes) -> Record | None:
        """The record with id `rid`, or None when the node has not seen it."""

    def decision_of(self, appeal_id: bytes) -> Record | None:
        """The first decision of appeal `appeal_id` the node holds, or None."""

    def subscriber(self, sealed: bytes) -> Subscriber:
        """What the consent state keeps of a sealed subscriber."""

    def line(self, rid: bytes) -> LineFact | None:
        """The marketer line registration `rid`, its end resolved, or None."""

    def lines_overlapping(self, number: str, prefix: bool, at_ms: int) -> list[LineFact]:
        """The registrations live at `at_ms` overlapping `number` (or prefix)."""


def check_correction_effect(
    issuer: str, payload: Correction, held: Holdings, wait_for_target: bool
) -> None:
    """Refuse an own correction by `issuer` that can change nothing: a target
    (or a decision's appeal) the node has not seen, unless `wait_for_target`
    (UnknownTarget); a target that is neither a mark nor `issuer`'s own appeal
    being withdrawn (NotAMark); a decision of a record that is not an appeal
    (NotAnAppeal); a decision, or the appellant's withdrawal, of an appeal
    already decided (AlreadyDecided)."""
    if payload.is_decision:
        appeal = _seen(held, payload.appeal_id, "appeal", wait_for_target)
        if appeal is None:
            return
        why = _not_an_appeal(appeal, held)
        if why is not None:
            raise NotAnAppeal(why)
        _refuse_decided(appeal, held)
        return
    for t in payload.targets:
        target = _seen(held, t, "target", wait_for_target)
        if target is None or isinstance(target.payload, Mark):
            continue
        own_appeal = (
            target.issuer == issuer
            and payload.action == WITHDRAW
            and _not_an_appeal(target, held) is None
        )
        if not own_appeal:
            also = " or an appeal of yours" if target.issuer == issuer else ""
            raise NotAMark(f"{_short(t)} is {_what(target)}, not a mark{also}: "
                           "a correction of it changes nothing")
        _refuse_decided(target, held)  # the appellant withdrawing its own appeal


def _seen(held: Holdings, rid: bytes, what: str, wait: bool) -> Record | None:
    rec = held.held(rid)
    if rec is None and not wait:
        how = (
            "decide it once it has arrived" if what == "appeal" else
            "correct it once it has arrived, or keep the correction waiting for it "
            "(markex correct --wait-for-target)"
        )
        raise UnknownTarget(f"{what} {_short(rid)} is not in this node's log: {how}")
    return rec


def _not_an_appeal(rec: Record, held: Holdings) -> str | None:
    """Why `rec` is not an appeal (a correction targeting another participant's
    mark), or None when it is one or may be (a target the node has not seen)."""
    p = rec.payload
    if not isinstance(p, Correction) or p.is_decision:
        return f"{_short(rec.id)} is {_what(rec)}, not an appeal"
    for t in p.targets:
        target = held.held(t)
        if target is None or (isinstance(target.payload, Mark) and target.issuer != rec.issuer):
            return None
    return (f"{_short(rec.id)} is {rec.issuer}'s correction of its own records, "
            "not an appeal (it targets no other participant's mark)")


def _refuse_decided(appeal: Record, held: Holdings) -> None:
    d = held.decision_of(appeal.id)
    if d is None:
        return
    outcome = "upheld" if d.payload.outcome == UPHOLD else "rejected"
    at = datetime.fromtimestamp(d.issued_at_ms / 1000, UTC).isoformat(timespec="seconds")
    raise AlreadyDecided(
        f"appeal {_short(appeal.id)} is already decided: {outcome} by {_short(d.id)} "
        f"({d.issuer}) at {at.replace('+00:00', 'Z')}; a decision is final"
    )


def _what(rec: Record) -> str:
    return f"a {rec.kind}"  # mark, correction, decision, reassignment: all take "a"


def _short(rid: bytes) -> str:
    return rid.hex()[:16]  # a prefix the command line takes as the id
