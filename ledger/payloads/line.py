"""A marketer's line: a number or a prefix used for marketing by an
enterprise, registered (and deregistered) by the carrier that provides it.

The enterprise is named by its unified social credit code (统一社会信用代码,
GB 32100-2015: 18 characters whose last is a check character), which later
links the line to the enterprise's sanctions (the bad list)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.errors import InvalidNumber, MalformedRecord, NotAllowed
from ledger.payloads._fields import ID_SIZE, normalized_field, read_number
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.payloads.correction import Holdings

MAX_ENTERPRISE = 128
MAX_INDUSTRY_ID = 32
MIN_PREFIX_DIGITS = 3   # "+86" and at least three digits: 400, 95x, a block of a carrier's numbers
MAX_PREFIX_DIGITS = 15  # E.164: at most 15 digits in all
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, S, V, Z
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_PREFIX = re.compile(r"^\+[1-9]\d*$")


_SEPARATORS = re.compile(r"[ \-().]")


def parse_line_number(text: str) -> tuple[str, bool]:
    """(E.164 number or prefix, is a prefix) of a line written as a person
    writes it: a prefix ends in "*" (400*, +86400*, 0755*, 00852*) and is
    written like a number (national forms get +86, a leading trunk 0 is
    dropped, 00 is the international call prefix, separators are ignored).
    Raises InvalidNumber saying what is wrong."""
    if not text.endswith("*"):
        return read_number(text), False
    body = _SEPARATORS.sub("", text[:-1])
    if not body.lstrip("+0"):
        e164 = ""
    elif body.startswith("+"):
        e164 = body
    elif body.startswith("00"):
        e164 = "+" + body[2:]
    else:
        e164 = "+86" + body.removeprefix("0")
    if not _PREFIX.fullmatch(e164):
        raise InvalidNumber(f"{text!r} is not a number prefix: digits, then *, e.g. 400* or "
                            "+86400*")
    return e164, True


class BadCreditCode(MalformedRecord):
    """A unified social credit code that is not 18 characters with a right check character."""


def uscc_check_char(first17: str) -> str:
    """The check character (the 18th) of a unified social credit code."""
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31]


def check_uscc(code: str) -> None:
    """Raises BadCreditCode saying what is wrong."""
    if not isinstance(code, str) or len(code) != 18:
        raise BadCreditCode(
            f"a unified social credit code has 18 characters, got {code!r}"
        )
    bad = [c for c in code if c not in USCC_CHARS]
    if bad:
        raise BadCreditCode(
            f"unified social credit code {code}: {bad[0]!r} is not one of its characters "
            "(digits and capitals without I, O, S, V, Z)"
        )
    want = uscc_check_char(code[:17])
    if code[17] != want:
        raise BadCreditCode(
            f"unified social credit code {code}: its check character is {want}, not {code[17]}"
        )


@dataclass(frozen=True)
class MarketerLine:
    number: str = ""          # E.164, or an E.164 prefix ("+86400", "+8695") with prefix
    prefix: bool = False
    enterprise: str = ""
    uscc: str = ""
    industry: str = ""
    deregisters: bytes = b""  # a deregistration: the registration's record id, nothing else

    def __post_init__(self) -> None:
        if self.deregisters:
            if len(self.deregisters) != ID_SIZE:
                raise MalformedRecord(f"a deregistration names a {ID_SIZE}-byte record id")
            if self.number or self.prefix or self.enterprise or self.uscc or self.industry:
                raise MalformedRecord("a deregistration names the registration and nothing else")
            return
        if self.prefix:
            if not isinstance(self.number, str) or not _PREFIX.match(self.number) or not (
                MIN_PREFIX_DIGITS + 2 <= len(self.number) - 1 <= MAX_PREFIX_DIGITS
            ):
                raise MalformedRecord(
                    f"a line prefix is + and the country code and at least {MIN_PREFIX_DIGITS} "
                    f"digits (e.g. +86400), got {self.number!r}"
                )
        else:
            normalized_field(self, "number")
        if not self.enterprise.strip() or len(self.enterprise) > MAX_ENTERPRISE:
            raise MalformedRecord(
                f"a line's enterprise is its name, 1..{MAX_ENTERPRISE} characters"
            )
        check_uscc(self.uscc)
        if not 0 < len(self.industry) <= MAX_INDUSTRY_ID:
            raise MalformedRecord("a line's industry is an industry id from the consortium's list")

    @property
    def is_deregistration(self) -> bool:
        return bool(self.deregisters)

    def covers(self, number: str) -> bool:
        """Does this registration hold `number` (an E.164 number)?"""
        return number.startswith(self.number) if self.prefix else number == self.number

    def to_pb(self) -> pb.MarketerLine:
        return pb.MarketerLine(
            number=self.number, prefix=self.prefix, enterprise=self.enterprise,
            uscc=self.uscc, industry=self.industry, deregisters=self.deregisters,
        )


def decode_line(m: pb.MarketerLine) -> MarketerLine:
    return MarketerLine(m.number, m.prefix, m.enterprise, m.uscc, m.industry, m.deregisters)


def check_line(cons: Consortium, role: str, issuer: str, payload: MarketerLine) -> None:
    """Carriers only (NotAllowed). A registration's industry is in the
    consortium's list (UnknownIndustry), and its numbers are all the
    issuer's (NotAllowed naming the range): a number is held by the issuer
    (`Consortium.carrier_for`, the longest prefix), a prefix lies under one
    of the issuer's prefixes with no longer prefix of another carrier above
    or under it (a ported number is listed whole under its new carrier, and
    a prefix covering it would register another carrier's subscriber).
    A deregistration's target is the effect check's (`line_changes`)."""
    from ledger.payloads.preference import check_industries

    if role != "carrier":
        raise NotAllowed(f"only carriers register marketers' lines; {issuer} is a {role}")
    if payload.is_deregistration:
        return
    check_industries(cons, (payload.industry,))
    mine = cons.number_ranges.get(issuer, ())
    holder = cons.carrier_for(payload.number)
    if holder != issuer:
        held = f"held by {holder}" if holder else "held by no carrier"
        raise NotAllowed(
            f"{payload.number} is {held} in the consortium configuration; {issuer}'s ranges "
            f"are {', '.join(mine) or 'none'}"
        )
    if payload.prefix:
        for cid, prefixes in sorted(cons.number_ranges.items()):
            for q in prefixes:
                if cid != issuer and q.startswith(payload.number):
                    raise NotAllowed(
                        f"prefix {payload.number} covers {q}, {cid}'s range (numbers ported "
                        f"there are {cid}'s); {issuer}'s ranges are {', '.join(mine)}"
                    )


def check_line_effect(
    issuer: str, payload: MarketerLine, held: Holdings, wait_for_target: bool
) -> None:
    """The issuing node refuses a line record that changes nothing
    (`ledger.consent.rules.line_changes`): a deregistration of no live
    registration of the issuer's (NotALiveLine, or UnknownTarget), a
    registration overlapping a live one (LineOverlap)."""
    from ledger.consent.rules import line_changes  # consent imports this module

    rec = held.issuing
    if rec is not None and rec.payload == payload:
        line_changes(rec, held, wait_for_target)
