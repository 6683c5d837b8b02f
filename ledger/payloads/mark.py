"""A mark: a participant's judgement that a number is, say, fraud."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from keys.consortium import HOME_COUNTRY
from ledger.errors import MalformedRecord, UnknownCategory, UnmarkableNumber
from ledger.payloads._fields import MAX_CATEGORY, normalized_field
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium


@dataclass(frozen=True)
class Mark:
    number: str  # E.164: any form a caller passes is normalized (InvalidNumber)
    category: str
    score: int = 50  # 0..100
    reports: int = 0
    observed_at_ms: int = 0
    expires_at_ms: int = 0  # 0: the policy's default expiry
    evidence_digest: bytes = b""

    def __post_init__(self) -> None:
        normalized_field(self, "number")
        if not 0 <= self.score <= 100:
            raise MalformedRecord(f"mark score must be 0..100, got {self.score}")
        if not self.category or len(self.category) > MAX_CATEGORY:
            raise MalformedRecord("mark category must be a non-empty taxonomy id")
        if self.evidence_digest and len(self.evidence_digest) != 32:
            raise MalformedRecord("evidence digest must be empty or 32 bytes (SHA-256)")
        if self.observed_at_ms < 0 or self.expires_at_ms < 0:
            raise MalformedRecord("mark times must not be negative")
        if self.expires_at_ms and self.expires_at_ms <= self.observed_at_ms:
            raise MalformedRecord("a mark must expire after it was observed")
        if self.reports < 0:
            raise MalformedRecord("report count must not be negative")

    def to_pb(self) -> pb.Mark:
        return pb.Mark(
            number=self.number,
            category=self.category,
            score=self.score,
            reports=self.reports,
            observed_at_ms=self.observed_at_ms,
            expires_at_ms=self.expires_at_ms,
            evidence_digest=self.evidence_digest,
        )


def decode_mark(m: pb.Mark) -> Mark:
    return Mark(
        m.number,  # normalized (or refused) by Mark itself
        m.category,
        m.score,
        m.reports,
        m.observed_at_ms,
        m.expires_at_ms,
        m.evidence_digest,
    )


def check_mark(cons: Consortium, role: str, issuer: str, payload: Mark) -> None:
    """Any issuing participant marks, in a category of the taxonomy, a number
    the policy lets be marked: none of `protected_numbers` (any category: a
    later recategorization could make an identity label a risk), and a
    foreign number only when `foreign_numbers` is allow. Raises
    UnknownCategory or UnmarkableNumber."""
    if payload.category not in cons.categories:
        raise UnknownCategory(f"category {payload.category!r} is not in the taxonomy")
    policy = cons.policy
    entry = policy.protecting(payload.number)
    if entry is not None:
        where = "listed" if entry == payload.number else f"under {entry}"
        raise UnmarkableNumber(
            f"{payload.number} is a protected number ({where} in the policy's "
            "protected_numbers: emergency and public-service lines); no participant marks it"
        )
    if policy.foreign_numbers == "refuse" and not payload.number.startswith(HOME_COUNTRY):
        raise UnmarkableNumber(
            f"{payload.number} is a foreign number and the consortium's policy "
            f"(foreign_numbers: refuse) marks only {HOME_COUNTRY} numbers"
        )
