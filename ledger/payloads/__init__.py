"""The payload types a record can carry, in one registry.

Each payload type is one module here: its frozen dataclass (what the record
says, checked without context), how it is read from and written to its
`markex.v1.Record` oneof field, and who in the consortium may issue it
(`PayloadType.check`). Adding a payload type is one new module and one entry
in `REGISTRY`; the record codec (`ledger.record`), the ledger's acceptance
rule (`ledger.log`), the auditor (`ledger.audit`) and the view's facts
(`ledger.view`) all ask this registry rather than testing types themselves.

`check_issuer` is the one rule of who may write what: the ledger refuses a
record it fails, the auditor reports it, and the view ignores it.

`check_effect` is the issuing node's question before it signs one of its own
records: can it change anything, given the records the node holds
(`Holdings`)? Only own records are asked; a peer's record is judged by
`check_issuer` alone, and one that changes nothing is kept and has no effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keys.consortium import ISSUES_NOTHING
from ledger.errors import LedgerError, MalformedRecord, NotAllowed
from ledger.payloads.correction import (
    RECATEGORIZE,
    REJECT,
    UPHOLD,
    WITHDRAW,
    Correction,
    Holdings,
    check_correction,
    check_correction_effect,
    decode_correction,
)
from ledger.payloads.line import MarketerLine, check_line, check_line_effect, decode_line
from ledger.payloads.mark import Mark, check_mark, decode_mark
from ledger.payloads.preference import (
    Preference,
    check_preference,
    check_preference_effect,
    decode_preference,
)
from ledger.payloads.reassignment import Reassignment, check_reassignment, decode_reassignment

if TYPE_CHECKING:
    from keys.consortium import Consortium

Payload = Mark | Correction | Reassignment | Preference | MarketerLine

__all__ = [
    "RECATEGORIZE",
    "REGISTRY",
    "REJECT",
    "UPHOLD",
    "WITHDRAW",
    "Correction",
    "Holdings",
    "Mark",
    "MarketerLine",
    "Payload",
    "PayloadType",
    "Preference",
    "Reassignment",
    "by_field",
    "check_effect",
    "check_issuer",
    "may_issue",
    "payload_kind",
    "type_of",
]


@dataclass(frozen=True)
class PayloadType:
    """One payload type: the record's oneof `field` that carries it, its
    dataclass, how it is read from that field's message (`decode`), the
    context rule `check(consortium, role, issuer, payload)` (raises
    NotAllowed or UnknownCategory) that runs after the common rule that a
    reading-only role issues nothing, the `kind` name of a payload, and for
    a payload that refers to other records `effect(issuer, payload, holdings,
    wait_for_target)`, which raises when it can change nothing."""

    field: str
    cls: type
    decode: Callable[[Any], Any]
    check: Callable[[Consortium, str, str, Any], None]
    kind: Callable[[Any], str]
    effect: Callable[[str, Any, Holdings, bool], None] | None = None


REGISTRY: tuple[PayloadType, ...] = (
    PayloadType("mark", Mark, decode_mark, check_mark, lambda p: "mark"),
    PayloadType(
        "correction", Correction, decode_correction, check_correction,
        lambda p: "decision" if p.is_decision else "correction", check_correction_effect,
    ),
    PayloadType(
        "reassignment", Reassignment, decode_reassignment, check_reassignment,
        lambda p: "reassignment",
    ),
    PayloadType(
        "preference", Preference, decode_preference, check_preference,
        lambda p: "revocation" if p.is_revocation else "preference", check_preference_effect,
    ),
    PayloadType(
        "marketer_line", MarketerLine, decode_line, check_line,
        lambda p: "deregistration" if p.is_deregistration else "line", check_line_effect,
    ),
)
_BY_FIELD = {t.field: t for t in REGISTRY}
_BY_CLASS = {t.cls: t for t in REGISTRY}


def by_field(field: str) -> PayloadType:
    """The type carried in the record's oneof `field`. Raises MalformedRecord."""
    t = _BY_FIELD.get(field)
    if t is None:
        raise MalformedRecord(f"record payload {field!r} is not a known payload type")
    return t


def type_of(payload: object) -> PayloadType:
    """The registered type of `payload`. Raises MalformedRecord."""
    t = _BY_CLASS.get(type(payload))
    if t is None:
        raise MalformedRecord(f"{type(payload).__name__} is not a payload type")
    return t


def payload_kind(payload: Payload) -> str:
    """mark, correction, decision, reassignment, preference, revocation, line or
    deregistration (what reports and metrics name)."""
    return type_of(payload).kind(payload)


def check_issuer(cons: Consortium, role: str, issuer: str, payload: Payload) -> None:
    """May `issuer` (of `role`) write `payload`? The one rule, used by the
    ledger (refuses), the auditor (reports) and the view (ignores). Raises
    NotAllowed, UnknownCategory or MalformedRecord."""
    if role in ISSUES_NOTHING:
        raise NotAllowed(f"{issuer} is of role {role}: it issues nothing")
    type_of(payload).check(cons, role, issuer, payload)


def check_effect(
    issuer: str, payload: Payload, held: Holdings, *, wait_for_target: bool = False
) -> None:
    """Can `issuer`'s own `payload` change anything, given what the node
    holds? Raises UnknownTarget (a target the node has not seen, unless
    `wait_for_target`), or an Ineffective: NotAMark, NotAnAppeal,
    AlreadyDecided (corrections), NothingToRevoke, SamePreference
    (preferences), NotALiveLine, LineOverlap (lines). A preference's or a
    line's check reads `held.issuing`, the record being checked."""
    effect = type_of(payload).effect
    if effect is not None:
        effect(issuer, payload, held, wait_for_target)


def may_issue(cons: Consortium, issuer: str, payload: Payload) -> bool:
    """`check_issuer` as a yes or no, for a participant looked up by id (the
    view's question: does resolution count this record?)."""
    p = cons.participant(issuer)
    if p is None:
        return False
    try:
        check_issuer(cons, p.role, issuer, payload)
    except LedgerError:
        return False
    return True
