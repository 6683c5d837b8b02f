"""Complaints, handlings and sanctions as the complaint state uses them.

A record enters the state through `fact_of`, like the view's facts: the
payload registry's issuer rule (`ledger.payloads.may_issue`) and the time
bounds (`ledger.rules`) first, so the state ignores what the ledger refuses
and an auditor's state equals a node's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.payloads import Complaint, Handling, Sanction, may_issue
from ledger.rules import time_violation

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.record import Record


@dataclass(frozen=True, slots=True)
class ComplaintFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int          # when the centre filed it: the SLA clock starts here
    complaint: Complaint

    @property
    def number(self) -> str:
        return self.complaint.number


@dataclass(frozen=True, slots=True)
class HandlingFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    handling: Handling


@dataclass(frozen=True, slots=True)
class SanctionFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    sanction: Sanction

    @property
    def uscc(self) -> str:
        return self.sanction.uscc


Fact = ComplaintFact | HandlingFact | SanctionFact
KINDS = (Complaint, Handling, Sanction)


def order(f: Fact) -> tuple[int, str, int, bytes]:
    """Issue order across feeds: issued_at, issuer, seq, id (always total)."""
    return (f.issued_at, f.issuer, f.seq, f.id)


def fact_of(rec: Record, cons: Consortium) -> Fact | None:
    """The record as the complaint state uses it, or None (another payload, or
    one the ledger would refuse in context: the issuer rule or the time bounds)."""
    pay = rec.payload
    if not isinstance(pay, KINDS):
        return None
    if not may_issue(cons, rec.issuer, pay):
        return None
    if time_violation(rec.issued_at_ms, pay, cons.policy) is not None:
        return None
    if isinstance(pay, Complaint):
        return ComplaintFact(rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay)
    if isinstance(pay, Handling):
        return HandlingFact(rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay)
    return SanctionFact(rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay)
