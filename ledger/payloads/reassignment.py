"""A reassignment: the holding carrier says a number has a new subscriber."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.errors import MalformedRecord, NotAllowed
from ledger.payloads._fields import normalized_field
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium


@dataclass(frozen=True)
class Reassignment:
    number: str  # E.164: any form a caller passes is normalized (InvalidNumber)
    effective_at_ms: int

    def __post_init__(self) -> None:
        normalized_field(self, "number")
        if self.effective_at_ms <= 0:
            raise MalformedRecord("a reassignment needs its effective time")

    def to_pb(self) -> pb.Reassignment:
        return pb.Reassignment(number=self.number, effective_at_ms=self.effective_at_ms)


def decode_reassignment(r: pb.Reassignment) -> Reassignment:
    return Reassignment(number=r.number, effective_at_ms=r.effective_at_ms)  # normalizes


def check_reassignment(cons: Consortium, role: str, issuer: str, payload: Reassignment) -> None:
    """Only the carrier that holds the number (by the configuration's ranges)."""
    if role != "carrier":
        raise NotAllowed(f"only carriers declare reassignments; {issuer} is a {role}")
    holder = cons.carrier_for(payload.number)
    if holder != issuer:
        raise NotAllowed(
            f"{payload.number} is held by {holder or 'no carrier'} in the consortium "
            f"configuration, not {issuer}"
        )
