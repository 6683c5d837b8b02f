"""A sanction: the regulator puts an enterprise on the bad list (or, with
`delist`, takes it off). The enterprise is named by its unified social credit
code, which links it to the marketer lines registered under that code
(ledger/payloads/line.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.errors import MalformedRecord, NotAllowed
from ledger.payloads._fields import MAX_REASON
from ledger.payloads.line import MAX_ENTERPRISE, check_uscc
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.payloads.correction import Holdings

MAX_LICENCE = 64
MAX_DOCUMENT = 128


@dataclass(frozen=True)
class Sanction:
    enterprise: str          # its name
    uscc: str                # unified social credit code (BadCreditCode)
    licence: str = ""        # its licence number, may be empty
    reason: str = ""         # why (a listing needs one)
    document: str = ""       # the penalty's (or the delisting's) document number
    listed_at_ms: int = 0    # when the listing (or delisting) takes effect
    delist: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.enterprise, str) or not self.enterprise.strip() or (
            len(self.enterprise) > MAX_ENTERPRISE
        ):
            raise MalformedRecord(f"a sanction names its enterprise, 1..{MAX_ENTERPRISE} "
                                  "characters")
        check_uscc(self.uscc)
        if len(self.licence) > MAX_LICENCE:
            raise MalformedRecord(f"a licence number is at most {MAX_LICENCE} characters")
        if len(self.reason) > MAX_REASON:
            raise MalformedRecord(f"a sanction's reason is at most {MAX_REASON} characters")
        if not self.delist and not self.reason.strip():
            raise MalformedRecord("a listing says why (its reason)")
        if not self.document.strip() or len(self.document) > MAX_DOCUMENT:
            raise MalformedRecord(f"a sanction names its document number, 1..{MAX_DOCUMENT} "
                                  "characters")
        if isinstance(self.listed_at_ms, bool) or self.listed_at_ms <= 0:
            raise MalformedRecord("a sanction names when it takes effect (listed_at)")

    def to_pb(self) -> pb.Sanction:
        return pb.Sanction(enterprise=self.enterprise, uscc=self.uscc, licence=self.licence,
                           reason=self.reason, document=self.document,
                           listed_at_ms=self.listed_at_ms, delist=self.delist)


def decode_sanction(m: pb.Sanction) -> Sanction:
    return Sanction(m.enterprise, m.uscc, m.licence, m.reason, m.document, m.listed_at_ms,
                    m.delist)


def check_sanction(cons: Consortium, role: str, issuer: str, payload: Sanction) -> None:
    """The regulator only (NotAllowed)."""
    if role != "regulator":
        raise NotAllowed(f"only the regulator lists enterprises; {issuer} is a {role}")


def check_sanction_effect(
    issuer: str, payload: Sanction, held: Holdings, wait_for_target: bool
) -> None:
    """A delisting of an enterprise not listed at its time (NotListed); a listing
    under the same document as the listing in force (AlreadyListed)."""
    from ledger.complaints.state import check_sanction_changes  # imports this module

    check_sanction_changes(payload, held)
