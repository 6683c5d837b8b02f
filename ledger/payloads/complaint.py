"""A complaint: the complaints centre (12321) passes a user's report of a
call on to the reported number's serving carrier.

Personal information never leaves the member side in clear: the
complainant's number is sealed with the members' key (purpose COMPLAINANT,
deterministic, so one complainant always gives the same value) and the
free-text description is carried as its SHA-256 digest only. The public view
keeps a per-number complainant tag instead (`complainant_tag`), so distinct
complainants of one number can be counted without linking one person across
numbers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.errors import (
    DuplicateComplaint,
    MalformedRecord,
    NotAllowed,
    UnknownCategory,
    UnmarkableNumber,
    WrongAddressee,
    WrongMembersKey,
)
from ledger.payloads._fields import MAX_CATEGORY, normalized_field
from ledger.sealing import COMPLAINANT, KEY_ID_BYTES, MAX_SEALED_BYTES, open_sealed
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.payloads.correction import Holdings

CHANNELS = ("web", "app", "phone", "wechat")
MAX_PARTICIPANT_ID = 64
TAG_CONTEXT = b"markex/v1/complainant-tag"
TAG_BYTES = 8


def complainant_tag(sealed: bytes, number: str) -> bytes:
    """The per-number complainant tag: the first 8 bytes of SHA-256(context 0x00
    sealed complainant 0x00 number). Equal for one complainant on one number,
    unrelated across numbers (the sealed value itself never enters the view)."""
    h = hashlib.sha256(TAG_CONTEXT + b"\x00" + sealed + b"\x00" + number.encode("ascii"))
    return h.digest()[:TAG_BYTES]


@dataclass(frozen=True)
class Complaint:
    number: str                  # the reported number, E.164 (normalized; InvalidNumber)
    category: str                # taxonomy id
    call_at_ms: int              # when the reported call came
    channel: str                 # of CHANNELS
    complainant: bytes           # the complainant's number sealed (COMPLAINANT)
    key_id: bytes                # which members' key sealed it
    description_digest: bytes    # SHA-256 of the description the centre keeps
    addressed_to: str            # the serving carrier at issue

    def __post_init__(self) -> None:
        normalized_field(self, "number")
        if not isinstance(self.category, str) or not 0 < len(self.category) <= MAX_CATEGORY:
            raise MalformedRecord("a complaint's category is a non-empty taxonomy id")
        if isinstance(self.call_at_ms, bool) or self.call_at_ms <= 0:
            raise MalformedRecord("a complaint names the time of the call it reports")
        if self.channel not in CHANNELS:
            raise MalformedRecord(f"a complaint's channel is one of {', '.join(CHANNELS)}, "
                                  f"got {self.channel!r}")
        if not 16 < len(self.complainant) <= MAX_SEALED_BYTES:
            raise MalformedRecord("a complaint's complainant is a sealed number "
                                  "(ledger/sealing.py), never a number in clear")
        if len(self.key_id) != KEY_ID_BYTES:
            raise MalformedRecord(f"a complaint's key id is {KEY_ID_BYTES} bytes")
        if len(self.description_digest) != 32:
            raise MalformedRecord("a complaint's description is carried as its SHA-256 "
                                  "digest (32 bytes), never as text")
        if not 0 < len(self.addressed_to) <= MAX_PARTICIPANT_ID:
            raise MalformedRecord("a complaint is addressed to a carrier (its participant id)")

    @property
    def tag(self) -> bytes:
        return complainant_tag(self.complainant, self.number)

    def to_pb(self) -> pb.Complaint:
        return pb.Complaint(
            number=self.number, category=self.category, call_at_ms=self.call_at_ms,
            channel=self.channel, complainant=self.complainant, key_id=self.key_id,
            description_digest=self.description_digest, addressed_to=self.addressed_to,
        )


def decode_complaint(m: pb.Complaint) -> Complaint:
    return Complaint(m.number, m.category, m.call_at_ms, m.channel, m.complainant, m.key_id,
                     m.description_digest, m.addressed_to)


def check_complaint(cons: Consortium, role: str, issuer: str, payload: Complaint) -> None:
    """The complaints centre only (NotAllowed); a category of the taxonomy
    (UnknownCategory); not a protected number (UnmarkableNumber: a complaint
    raises a number's risk, which an emergency line never carries); sealed
    under the members' key in force (WrongMembersKey); addressed to the
    number's serving carrier by the configuration (WrongAddressee). The seal
    is not opened here, so every node (with or without the key) gives the same
    answer; the issuing node opens it (`check_complaint_effect`)."""
    if role != "complaints":
        raise NotAllowed(f"only the complaints centre files complaints; {issuer} is a {role}")
    if payload.category not in cons.categories:
        raise UnknownCategory(f"category {payload.category!r} is not in the taxonomy")
    entry = cons.policy.protecting(payload.number)
    if entry is not None:
        raise UnmarkableNumber(f"{payload.number} is a protected number ({entry} in the "
                               "policy's protected_numbers): complaints about it are refused")
    if payload.key_id != cons.members_key_id:
        raise WrongMembersKey(
            f"the complainant is sealed under members' key {payload.key_id.hex()}, not the "
            f"key in force ({cons.members_key_id.hex() or 'none configured'})"
        )
    serving = cons.carrier_for(payload.number)
    if serving is None:
        raise WrongAddressee(f"no carrier serves {payload.number} in the consortium "
                             "configuration: a complaint about it has nobody to go to")
    if payload.addressed_to != serving:
        raise WrongAddressee(f"{payload.number} is served by {serving}, so its complaint is "
                             f"addressed to {serving}, not {payload.addressed_to}")


def check_complaint_effect(
    issuer: str, payload: Complaint, held: Holdings, wait_for_target: bool
) -> None:
    """The issuing centre's own complaint: its complainant opens with the
    members' key (SealError), and it is not the same complainant's complaint
    about the same number, call time and category again (DuplicateComplaint)."""
    from ledger.complaints.state import holdings_complaints  # complaints imports this module

    state = holdings_complaints(held)
    key = state.key
    if key is not None:
        open_sealed(key, payload.complainant, COMPLAINANT)
    same = state.duplicate_of(payload)
    if same is not None:
        raise DuplicateComplaint(
            f"complaint {same.hex()[:16]} already reports this complainant's call from "
            f"{payload.number} at that time in {payload.category}: another counts nothing"
        )
