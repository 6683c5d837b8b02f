"""The consent rules (docs/consent.md), as pure functions of facts.

- which preference is in force for a subscriber at a time (`in_force`), what
  a subscriber keeps (`kept_preferences`, `kept_reassignments`);
- whether a fact refuses a call of an industry, in a mode, at an instant in
  China Standard Time (`refuses`);
- which registration of a marketer line holds a number (`LineIndex`), with
  overlaps and deregistrations resolved (`resolve_lines`);
- whether an own preference or line record changes anything (the checks
  `ledger.payloads.check_effect` runs before the node signs one).

Every function here is a function of its arguments: no clock, no store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ledger.consent.facts import Deregistration, LineFact, PreferenceFact, Subscriber
from ledger.errors import (
    LineOverlap,
    NotALiveLine,
    NothingToRevoke,
    SamePreference,
    UnknownTarget,
)
from ledger.payloads.line import MarketerLine
from ledger.payloads.preference import ALL, Preference
from ledger.payloads.reassignment import Reassignment

if TYPE_CHECKING:
    from ledger.payloads.correction import Holdings
    from ledger.record import Record

# Rule 6: how much of a subscriber's history counts. A subscriber changes its
# mind rarely; 8 preferences cover a temporary override over a standing one
# with room, and keep one read and one decode per screen small.
KEEP_PREFERENCES = 8
KEEP_REASSIGNMENTS = 8

CST_OFFSET_MS = 8 * 3_600_000   # China Standard Time is UTC+8 all year (no DST)
DAY_MS = 86_400_000
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EPOCH_WEEKDAY = 3              # 1970-01-01 was a Thursday


# ---------------------------------------------------------------- facts


def preference_fact(rec: Record) -> PreferenceFact:
    """The fact of a preference record (effective_from 0 is its issued_at)."""
    p = rec.payload
    return PreferenceFact(
        rec.id, rec.issuer, rec.seq, rec.issued_at_ms, p.refuse, p.modes, p.allowed,
        p.days, p.effective_from_ms or rec.issued_at_ms, p.until_ms,
    )


def line_fact(rec: Record) -> LineFact:
    p = rec.payload
    return LineFact(
        rec.id, rec.issuer, rec.seq, rec.issued_at_ms, p.number, p.prefix,
        p.enterprise, p.uscc, p.industry,
    )


def deregistration(rec: Record) -> Deregistration:
    return Deregistration(rec.id, rec.issuer, rec.seq, rec.issued_at_ms, rec.payload.deregisters)


# ---------------------------------------------------------------- preferences


def preference_order(f: PreferenceFact) -> tuple[int, int, str, bytes]:
    """Rule 2: later effective_from wins; ties: later issued_at, then issuer, then id."""
    return (f.effective_from, f.issued_at, f.issuer, f.id)


def kept_preferences(facts: Iterable[PreferenceFact]) -> tuple[PreferenceFact, ...]:
    """Rule 6: the KEEP_PREFERENCES latest by preference order, oldest first
    (a function of the set: any order, any batches, duplicates once)."""
    by_id = {f.id: f for f in facts}
    return tuple(sorted(by_id.values(), key=preference_order)[-KEEP_PREFERENCES:])


def kept_reassignments(rs: Iterable[tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    """Rule 6: the KEEP_REASSIGNMENTS latest (effective_at, id), ascending."""
    return tuple(sorted(set(rs))[-KEEP_REASSIGNMENTS:])


def merge(sub: Subscriber | None, prefs: Iterable[PreferenceFact] = (),
          reassigned: Iterable[tuple[int, bytes]] = ()) -> Subscriber:
    """`sub` with more facts, kept by rule 6."""
    old = sub or Subscriber()
    return Subscriber(
        kept_preferences((*old.preferences, *prefs)),
        kept_reassignments((*old.reassigned, *reassigned)),
    )


def in_force(sub: Subscriber | None, at_ms: int) -> PreferenceFact | None:
    """Rules 2-4: of the kept preferences with effective_from <= at_ms and an
    until of 0 or after at_ms, and not voided by a reassignment (rule 4: the
    latest reassignment effective at or before at_ms voids every preference
    effective before it), the latest in preference order; None when none is."""
    if sub is None:
        return None
    void_before = 0
    for r, _ in sub.reassigned:
        if r <= at_ms:
            void_before = r
    best = None
    for f in sub.preferences:  # in preference order: the last that holds wins
        if void_before <= f.effective_from <= at_ms and (f.until == 0 or f.until > at_ms):
            best = f
    return best


def _day_matches(days: tuple[str, ...], at_ms: int) -> bool:
    if not days:
        return True
    wd = _WEEKDAYS[((at_ms + CST_OFFSET_MS) // DAY_MS + _EPOCH_WEEKDAY) % 7]
    weekend = wd in ("sat", "sun")
    return wd in days or ("weekend" in days and weekend) or ("weekday" in days and not weekend)


def allowed_at(f: PreferenceFact, at_ms: int) -> bool:
    """Rule 5: is `at_ms` inside one of the preference's allowed bands (China
    Standard Time minutes of the day), on one of its day types?"""
    if not f.allowed or not _day_matches(f.days, at_ms):
        return False
    minute = ((at_ms + CST_OFFSET_MS) % DAY_MS) // 60_000
    return any(s <= minute < e for s, e in f.allowed)


def refuses(f: PreferenceFact | None, industry: str | None, mode: str, at_ms: int) -> bool:
    """Rule 5: does preference `f` refuse marketing of `industry` (None: of
    an unknown industry, refused only by "all") in `mode` at `at_ms`? A
    revocation, another mode, or an allowed band on an allowed day refuses
    nothing."""
    if f is None or not f.refuse:
        return False
    if f.modes and mode not in f.modes:
        return False
    if ALL not in f.refuse and (industry is None or industry not in f.refuse):
        return False
    return not allowed_at(f, at_ms)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _meaning(f: PreferenceFact | None) -> tuple[object, ...] | None:
    """What a preference in force answers: a revocation and none answer alike."""
    if f is None or not f.refuse:
        return None
    return (frozenset(f.refuse), frozenset(f.modes), f.allowed, frozenset(f.days))


def preference_changes(rec: Record, held: Holdings) -> None:
    """Raise NothingToRevoke (a revocation) or SamePreference (any other)
    when adding `rec` to what the subscriber has leaves the answer the same
    at every instant from its effective time on. The answer can only change
    at a kept fact's effective_from or until, or at a reassignment, so those
    instants are compared."""
    new = preference_fact(rec)
    before = held.subscriber(rec.payload.subscriber)
    after = merge(before, (new,))
    start = new.effective_from
    instants = {start}
    for f in (*before.preferences, new):
        instants.update(t for t in (f.effective_from, f.until) if t >= start)
    instants.update(r for r, _ in before.reassigned if r >= start)
    for t in sorted(instants):
        if _meaning(in_force(before, t)) != _meaning(in_force(after, t)):
            return
    if new.refuse:
        raise SamePreference(
            "the subscriber's preference in force already answers alike from this "
            "preference's effective time on: it changes nothing"
        )
    ahead = [f for f in before.preferences if f.refuse and f.effective_from > start]
    tail = (
        f"; a refusal takes effect at {_iso(ahead[-1].effective_from)}: revoke from then on"
        if ahead else ""
    )
    raise NothingToRevoke(
        f"the subscriber has no refusal in force from this revocation's effective time on{tail}"
    )


# ---------------------------------------------------------------- lines


def line_order(f: LineFact | Deregistration) -> tuple[int, int, bytes]:
    """Issue order (the view's): issued_at, then seq, then id."""
    return (f.issued_at, f.seq, f.id)


def live_at(f: LineFact, at_ms: int) -> bool:
    return f.issued_at <= at_ms and (f.ended_at == 0 or f.ended_at > at_ms)


class LineIndex:
    """The registrations that count (rule 8: overlaps resolved), indexed by
    their number or prefix. Built whole and replaced, never changed, so a
    reader on another thread sees one index or the next."""

    def __init__(self, lines: dict[bytes, LineFact]) -> None:
        self.by_id = lines
        self.exact: dict[str, list[LineFact]] = {}
        self.prefixes: dict[str, list[LineFact]] = {}
        self.under: dict[str, list[LineFact]] = {}   # every prefix of a number -> lines
        # The lengths of the prefixes registered, longest first: a screen asks
        # only those (a handful) instead of every length of its number.
        self._prefix_lens: tuple[int, ...] = ()
        # Every registered prefix line_at asks (longer than 3), made at its first
        # use: one startswith of them all turns most numbers away.
        self._prefix_heads: tuple[str, ...] | None = None
        for f in sorted(lines.values(), key=line_order):
            if f.ended_at and f.ended_at == f.issued_at:
                continue  # void (rule 8), or ended as it began: never holds anything
            self._add(f)

    def _add(self, f: LineFact) -> None:
        (self.prefixes if f.prefix else self.exact).setdefault(f.number, []).append(f)
        if f.prefix and len(f.number) not in self._prefix_lens:
            self._prefix_lens = tuple(sorted((*self._prefix_lens, len(f.number)), reverse=True))
        self._prefix_heads = None
        for i in range(4, len(f.number) + 1):
            self.under.setdefault(f.number[:i], []).append(f)

    def line_at(self, number: str, at_ms: int) -> LineFact | None:
        """Rule 7: the exact number first, then the longest prefix."""
        held = self.exact.get(number)
        if held is not None:
            for f in held:
                if live_at(f, at_ms):
                    return f
        heads = self._prefix_heads
        if heads is None:     # the index is built whole: made once (a race makes it twice)
            heads = self._prefix_heads = tuple(p for p in self.prefixes if len(p) > 3)
        if not number.startswith(heads):     # under no registered prefix
            return None
        n = len(number)
        for i in self._prefix_lens:
            if 3 < i <= n:
                for f in self.prefixes.get(number[:i], ()):
                    if live_at(f, at_ms):
                        return f
        return None

    def overlapping(self, number: str, prefix: bool, at_ms: int) -> list[LineFact]:
        """The registrations live at `at_ms` that overlap `number` (a prefix
        when `prefix`), in issue order."""
        found: dict[bytes, LineFact] = {}
        for f in self.exact.get(number, ()):
            found[f.id] = f
        for i in range(4, len(number) + 1):
            for f in self.prefixes.get(number[:i], ()):
                found[f.id] = f
        if prefix:
            for f in self.under.get(number, ()):
                found[f.id] = f
        return sorted((f for f in found.values() if live_at(f, at_ms)), key=line_order)


def resolve_lines(
    registrations: Iterable[LineFact], deregs: Iterable[Deregistration]
) -> LineIndex:
    """Rule 8, a function of the set: each registration ends at the earliest
    (issue order) deregistration of it by its own issuer; then in issue
    order, one that overlaps an earlier registration still counting and live
    at its issued_at is void (kept ended at its own issued_at, ended_by the
    registration that holds the number). Returns the index of the result,
    built as the overlaps are resolved (`by_id`: every registration)."""
    ends: dict[bytes, Deregistration] = {}
    regs = {f.id: f for f in registrations}
    for d in sorted(deregs, key=line_order):
        r = regs.get(d.target)
        if r is not None and r.issuer == d.issuer and d.target not in ends:
            ends[d.target] = d
    index = LineIndex({})
    for f in sorted(regs.values(), key=line_order):
        d = ends.get(f.id)
        f = replace(f, ended_at=d.issued_at, ended_by=d.id) if d else replace(
            f, ended_at=0, ended_by=b""
        )
        holder = index.overlapping(f.number, f.prefix, f.issued_at)
        if holder:
            f = replace(f, ended_at=f.issued_at, ended_by=holder[0].id)
        elif f.ended_at != f.issued_at:  # as LineIndex: an empty span holds nothing
            index._add(f)
        index.by_id[f.id] = f
    return index


def line_changes(rec: Record, held: Holdings, wait_for_target: bool) -> None:
    """A deregistration of a record that is not a live registration of the
    issuer's (NotALiveLine; UnknownTarget when the node has not seen it,
    unless `wait_for_target`); a registration overlapping one live at its
    issued_at (LineOverlap)."""
    p = rec.payload
    if p.is_deregistration:
        short = p.deregisters.hex()[:16]
        line = held.line(p.deregisters)
        if line is None:
            if held.held(p.deregisters) is None:
                if wait_for_target:
                    return
                raise UnknownTarget(f"registration {short} is not in this node's log")
            raise NotALiveLine(f"{short} is not a marketer line's registration")
        if line.issuer != rec.issuer:
            raise NotALiveLine(
                f"registration {short} is {line.issuer}'s: only the carrier that "
                "registered a line deregisters it"
            )
        if line.ended_at and line.ended_at <= rec.issued_at_ms:
            why = (
                "is void (it overlapped a live registration)"
                if line.ended_at == line.issued_at else "is already deregistered"
            )
            raise NotALiveLine(f"registration {short} {why}")
        return
    live = held.lines_overlapping(p.number, p.prefix, rec.issued_at_ms)
    if live:
        f = live[0]
        what = f"prefix {f.number}" if f.prefix else f.number
        raise LineOverlap(
            f"{p.number} overlaps {what}, registered live to {f.enterprise} ({f.uscc}) "
            f"by {f.issuer} in {f.id.hex()[:16]}: a number belongs to at most one live "
            "registration; deregister that one first"
        )


def fresh_facts(
    fresh: Sequence[Record],
) -> tuple[list[Record], list[LineFact], list[Deregistration]]:
    """Own records signed earlier in this group commit, as the effect checks
    see them: preferences and reassignments (records), registrations,
    deregistrations."""
    subs: list[Record] = []
    regs: list[LineFact] = []
    deregs: list[Deregistration] = []
    for r in fresh:
        p = r.payload
        if isinstance(p, Preference | Reassignment):
            subs.append(r)
        elif isinstance(p, MarketerLine):
            if p.is_deregistration:
                deregs.append(deregistration(r))
            else:
                regs.append(line_fact(r))
    return subs, regs, deregs
