"""A view entry's screen summary: what the call-path screen reads of a caller,
evaluated ahead of time.

The screen (ledger/screen.py) reads four things of a caller's resolution:
its category, risk, score and the marks that count (record id and category).
An entry's resolution changes only at its `instants` (ledger/view/resolution.py),
so the summary holds, from a time `from_ms` on, the instants and one
`CallerFacts` per interval between them: a screen then answers a caller with
one read and a bisection instead of decoding and evaluating the entry.

A summary names the entry it was computed from by a digest of the entry's
bytes (`entry_digest`), so a reader checks it against the entry it read and
falls back to evaluating the entry when the two differ (a summary not yet
recomputed after a change) or when the time asked is before `from_ms`. It is
derived data, never proven nor exchanged: a lost or stale summary costs
time, never a wrong answer.

A Summary is a tuple of plain values, so a node can keep it as it likes
(node/screenindex.py marshals it into its store).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from typing import NamedTuple

from ledger.view.entries import Entry
from ledger.view.resolution import instants, screen_facts

DIGEST_BYTES = 16


class FactMarker(NamedTuple):
    """A mark that counts, as the screen names it."""

    record_id: bytes
    category: str


class CallerFacts(NamedTuple):
    """What the screen reads of a caller's resolution (the fields of
    `Resolution` it uses, under the same names)."""

    category: str | None
    risk: str
    score: int
    markers: tuple[FactMarker, ...]


def entry_digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).digest()


def facts_at(entry: Entry, at_ms: int) -> CallerFacts:
    c, r, s, ms = screen_facts(entry, at_ms)
    return CallerFacts(c, r, s, tuple(FactMarker(rid, mc) for rid, mc in ms))


class Summary(NamedTuple):
    """An entry's summary from `from_ms` on: `ahead` the entry's instants
    after from_ms, `facts[i]` (as stored: category, risk, score, ((record
    id, category), ...)) the caller's facts from the i-th start (from_ms,
    then each instant) to the next."""

    digest: bytes
    from_ms: int
    ahead: tuple[int, ...]
    facts: tuple[tuple, ...]

    def interval(self, at_ms: int) -> int | None:
        """The index of the interval holding `at_ms`, or None before from_ms."""
        if at_ms < self.from_ms:
            return None
        return bisect_right(self.ahead, at_ms)

    def facts_of(self, i: int) -> CallerFacts:
        c, r, s, ms = self.facts[i]
        return CallerFacts(c, r, s, tuple(FactMarker(rid, mc) for rid, mc in ms))



def summarize(raw: bytes | Entry, from_ms: int) -> Summary:
    """The summary of the entry whose bytes are `raw` (or of the Entry
    itself, whose bytes are its `encode()`), for times from `from_ms` on.
    Raises BadInput for bytes that are no entry."""
    if isinstance(raw, Entry):
        entry, raw = raw, raw.encode()
    else:
        entry = Entry.decode(raw)
    ahead = tuple(t for t in instants(entry) if t > from_ms)
    facts = tuple(screen_facts(entry, t) for t in (from_ms, *ahead))
    return Summary(entry_digest(raw), from_ms, ahead, facts)
