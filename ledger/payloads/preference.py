"""A preference: a subscriber's refusal of marketing calls, by industry.

The subscriber's number is carried sealed (ledger/sealing.py); everything
else is in clear. Which preference holds for a number at a time, and how a
reassignment voids older ones, is the consent state's rule
(ledger/consent, docs/consent.md); this module is the record's shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.errors import (
    MalformedRecord,
    MembersKeyMissing,
    NotAllowed,
    PortedAway,
    UnknownIndustry,
    WrongMembersKey,
)
from ledger.sealing import KEY_ID_BYTES, MAX_SEALED_BYTES, open_sealed
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.payloads.correction import Holdings

ALL = "all"                      # refuses every industry's marketing
MODES = ("voice", "sms")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_TYPES = ("weekday", "weekend", *WEEKDAYS)
MINUTES_PER_DAY = 1440
MAX_INDUSTRY_ID = 32
MAX_REFUSED = 64
MAX_BANDS = 8


class BadTimeBand(MalformedRecord):
    """A time band that does not parse, or bands that are out of range or overlap."""


Band = tuple[int, int]  # [start, end) in minutes of the day, China Standard Time

_BAND = re.compile(r"^(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?$")


def parse_bands(text: str) -> tuple[Band, ...]:
    """`HH-HH[,HH:MM-HH:MM...]` (China Standard Time; 24 as an end is
    midnight) as bands. Raises BadTimeBand saying which band and why."""
    out: list[Band] = []
    for part in (p.strip() for p in text.split(",")):
        m = _BAND.match(part)
        if not m:
            raise BadTimeBand(
                f"time band {part!r} does not parse: write HH-HH or HH:MM-HH:MM, e.g. 09-12"
            )
        h1, m1, h2, m2 = (int(g) if g else 0 for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise BadTimeBand(f"time band {part!r}: hours are 00..24 and minutes 00..59")
        out.append((h1 * 60 + m1, h2 * 60 + m2))
    check_bands(tuple(out))
    return tuple(sorted(out))


def format_band(b: Band) -> str:
    return f"{b[0] // 60:02d}:{b[0] % 60:02d}-{b[1] // 60:02d}:{b[1] % 60:02d}"


def check_bands(bands: tuple[Band, ...]) -> None:
    if len(bands) > MAX_BANDS:
        raise BadTimeBand(f"at most {MAX_BANDS} time bands, got {len(bands)}")
    for s, e in bands:
        if not 0 <= s < e <= MINUTES_PER_DAY:
            shown = format_band((s, e)) if s >= 0 and e <= MINUTES_PER_DAY else (s, e)
            raise BadTimeBand(
                f"time band {shown} must start before it ends, within one day (00:00-24:00)"
            )
    ordered = sorted(bands)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b[0] < a[1]:
            raise BadTimeBand(f"time bands {format_band(a)} and {format_band(b)} overlap")


def _unique(name: str, values: tuple[str, ...], allowed: tuple[str, ...] | None) -> None:
    if len(set(values)) != len(values):
        raise MalformedRecord(f"preference {name} lists a value twice: {', '.join(values)}")
    for v in values:
        if allowed is not None and v not in allowed:
            raise MalformedRecord(
                f"preference {name}: {v!r} is not one of {', '.join(allowed)}"
            )


@dataclass(frozen=True)
class Preference:
    subscriber: bytes                 # the number sealed with the members' key
    key_id: bytes                     # which members' key sealed it
    refuse: tuple[str, ...] = ()      # industry ids, or ("all",); (): a revocation
    modes: tuple[str, ...] = ()       # of MODES; (): every mode
    allowed: tuple[Band, ...] = ()    # bands in which refused marketing is still allowed
    days: tuple[str, ...] = ()        # of DAY_TYPES: the days the allowance holds
    effective_from_ms: int = 0        # 0: when issued
    until_ms: int = 0                 # 0: until a later preference

    def __post_init__(self) -> None:
        if not 16 < len(self.subscriber) <= MAX_SEALED_BYTES:
            raise MalformedRecord(
                "a preference's subscriber is a sealed number (ledger/sealing.py)"
            )
        if len(self.key_id) != KEY_ID_BYTES:
            raise MalformedRecord(f"a preference's key id is {KEY_ID_BYTES} bytes")
        for name in ("refuse", "modes", "days", "allowed"):
            v = getattr(self, name)
            if not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        if len(self.refuse) > MAX_REFUSED:
            raise MalformedRecord(f"a preference refuses at most {MAX_REFUSED} industries")
        for i in self.refuse:
            if not isinstance(i, str) or not 0 < len(i) <= MAX_INDUSTRY_ID:
                raise MalformedRecord(
                    f"an industry id is a non-empty string of at most {MAX_INDUSTRY_ID} characters"
                )
        _unique("refuse", self.refuse, None)
        if ALL in self.refuse and len(self.refuse) > 1:
            raise MalformedRecord('"all" refuses every industry: list it alone')
        _unique("modes", self.modes, MODES)
        _unique("days", self.days, DAY_TYPES)
        object.__setattr__(self, "allowed", tuple(sorted(tuple(b) for b in self.allowed)))
        check_bands(self.allowed)
        if not self.refuse and (self.modes or self.allowed or self.days or self.until_ms):
            raise MalformedRecord(
                "a revocation (refusing nothing) has no modes, bands, days or end"
            )
        if self.effective_from_ms < 0 or self.until_ms < 0:
            raise MalformedRecord("preference times must not be negative")
        if self.until_ms and self.until_ms <= self.effective_from_ms:
            raise MalformedRecord("a preference must end after it takes effect")

    @property
    def is_revocation(self) -> bool:
        return not self.refuse

    def to_pb(self) -> pb.Preference:
        return pb.Preference(
            subscriber=self.subscriber,
            key_id=self.key_id,
            refuse=list(self.refuse),
            modes=list(self.modes),
            allowed=[pb.TimeBand(start_minute=s, end_minute=e) for s, e in self.allowed],
            days=list(self.days),
            effective_from_ms=self.effective_from_ms,
            until_ms=self.until_ms,
        )


def decode_preference(p: pb.Preference) -> Preference:
    return Preference(
        subscriber=p.subscriber,
        key_id=p.key_id,
        refuse=tuple(p.refuse),
        modes=tuple(p.modes),
        allowed=tuple((b.start_minute, b.end_minute) for b in p.allowed),
        days=tuple(p.days),
        effective_from_ms=p.effective_from_ms,
        until_ms=p.until_ms,
    )


ISSUERS = ("institute", "carrier")


def check_industries(cons: Consortium, refused: tuple[str, ...]) -> None:
    """Every refused id is in the consortium's industries list (or is "all").
    Raises UnknownIndustry."""
    known = cons.industry_ids
    for i in refused:
        if i != ALL and i not in known:
            raise UnknownIndustry(
                f"industry {i!r} is not in the consortium's industries list "
                f"({', '.join(sorted(known)) or 'none'}; or all)"
            )


def check_preference(cons: Consortium, role: str, issuer: str, payload: Preference) -> None:
    """The institute (the national platform), or the carrier that serves the
    subscriber's number (`Consortium.carrier_for` of the number opened with
    `cons.members_key`: the longest prefix, so a ported number is its new
    carrier's); every refused industry in `cons.industry_ids` (or "all");
    sealed under the members' key in force. Checked in that order, raising
    NotAllowed, UnknownIndustry, WrongMembersKey, then (with the key)
    SealError, and NotAllowed for a carrier that does not serve the number
    (PortedAway when its range holds the number but the configuration lists
    it whole under another carrier: ported away).
    Without a members' key a carrier's preference cannot be checked:
    MembersKeyMissing (the node needs its members.key); the institute's is
    accepted with its seal unopened. No message names the number."""
    if role not in ISSUERS:
        raise NotAllowed(
            "only the institute or the subscriber's carrier issues preferences; "
            f"{issuer} is a {role}"
        )
    check_industries(cons, payload.refuse)
    want = cons.members_key_id
    if payload.key_id != want:
        raise WrongMembersKey(
            f"the subscriber is sealed under members' key {payload.key_id.hex()}, "
            f"not the key in force ({want.hex() or 'none configured'})"
        )
    key = cons.members_key
    if key is None:
        if role == "carrier":
            raise MembersKeyMissing(
                f"{issuer}'s preference names a sealed number, and this node holds no "
                "members' key to check that the carrier serves it: give the node its "
                "members.key (node.toml members_key)"
            )
        return
    number = open_sealed(key, payload.subscriber)  # SealError
    if role == "carrier":
        holder = cons.carrier_for(number)
        if holder != issuer and any(
            number.startswith(p) for p in cons.number_ranges.get(issuer, ())
        ):
            raise PortedAway(
                f"the subscriber's number is listed under {holder} in the consortium "
                f"configuration (ported away from {issuer}'s range)"
            )
        if holder != issuer:
            raise NotAllowed(
                f"the subscriber's number is served by {holder or 'no carrier'} in the "
                f"consortium configuration, not {issuer}"
            )


def check_preference_effect(
    issuer: str, payload: Preference, held: Holdings, wait_for_target: bool
) -> None:
    """The issuing node refuses a preference that changes no answer from its
    effective time on (`ledger.consent.rules.preference_changes`): a revocation
    with no refusal in force or ahead (NothingToRevoke), any other one
    (SamePreference), e.g. identical to the one in force."""
    from ledger.consent.rules import preference_changes  # consent imports this module

    rec = held.issuing
    if rec is not None and rec.payload == payload:
        preference_changes(rec, held)
