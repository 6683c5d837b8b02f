"""The consent state's facts and the question the screen asks of it.

Written before the state itself so the screen (ledger/screen.py) and the
state (this package) meet at one interface:

- `PreferenceFact`: a preference record as the state uses it (its
  effective_from resolved: 0 means its issued_at).
- `LineFact`: a marketer line's registration, with its end when a
  deregistration of it counts.
- `ConsentReader`: what the screen reads, at an explicit time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ledger.payloads.preference import Band


@dataclass(frozen=True, slots=True)
class PreferenceFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    refuse: tuple[str, ...]        # industry ids, ("all",), or () for a revocation
    modes: tuple[str, ...]         # () every mode
    allowed: tuple[Band, ...]      # bands (CST minutes) in which refused marketing is allowed
    days: tuple[str, ...]          # day types the allowance holds on; () every day
    effective_from: int            # ms; the record's effective_from_ms, or its issued_at
    until: int                     # ms; 0 open-ended


@dataclass(frozen=True, slots=True)
class LineFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    number: str                    # E.164 number or prefix
    prefix: bool
    enterprise: str
    uscc: str
    industry: str
    ended_at: int = 0              # ms: issued_at of the deregistration that counts; 0 live
    ended_by: bytes = b""          # that deregistration's record id


class ConsentReader(Protocol):
    """What the screen reads; every answer is for an explicit time."""

    def preference_at(self, sealed: bytes, at_ms: int) -> PreferenceFact | None:
        """The preference in force for the sealed subscriber at `at_ms`
        (docs/consent.md: the latest effective one wins; one effective before
        a reassignment of the number is void from the reassignment on), or
        None. A revocation in force is returned too (it refuses nothing)."""
        ...

    def line_at(self, number: str, at_ms: int) -> LineFact | None:
        """The registration holding the E.164 `number` at `at_ms` (the exact
        number first, then the longest prefix), or None."""
        ...

    def preferences_at(self, sealed: list[bytes], at_ms: list[int]
                       ) -> list[PreferenceFact | None]:
        """`preference_at` of each (sealed, at_ms) pair, in order (one read
        of the store for all)."""
        ...

    def line_reader(self) -> Callable[[str, int], LineFact | None]:
        """`line_at` of the registrations as they are now (a batch reads its
        calls' lines through one, without a call per layer)."""
        ...


@dataclass(frozen=True, slots=True)
class Subscriber:
    """What the state keeps of one sealed subscriber (docs/consent.md, rule 6):
    its kept preferences in preference order (oldest first) and the kept
    reassignments of its number as (effective_at, record id), ascending."""

    preferences: tuple[PreferenceFact, ...] = ()
    reassigned: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Deregistration:
    """A deregistration record as the state uses it."""

    id: bytes
    issuer: str
    seq: int
    issued_at: int
    target: bytes
