"""The one apply algorithm: records in, changed entries and tree out, over a `ViewState`.

    records ─ fact_of ─▶ the record index (facts, referrers)
                         │ the numbers they touch
                         ▼
             per number: what its entry held + what this apply brought ─▶ NumberFacts
                         │ EntryBuilder.build
                         ▼
             changed entries ─▶ their buckets' slots rehashed ─▶ the tree's top

The same code runs for the in-memory and the stored state, so both give the
same bytes; what a number's facts are read from is bounded by what its entry
keeps plus what this apply brings (docs/view.md, rule 2a).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger import viewtree
from ledger.errors import StorageFailure
from ledger.record import Correction, Record
from ledger.view import facts as F
from ledger.view.build import EntryBuilder
from ledger.view.entries import Entry
from ledger.view.facts import (
    ComplaintFact,
    CorrectionFact,
    MarkFact,
    NumberFacts,
    ReassignmentFact,
)
from ledger.view.state import Held, ViewState
from ledger.viewtree import Slot, view_key

if TYPE_CHECKING:
    from keys.consortium import Consortium

_OnNumber = MarkFact | ReassignmentFact | ComplaintFact


class Changed(set[str]):
    """The numbers whose entry an apply changed, a set like any other, and
    `entries`: each one's new entry as the apply built and stored it (None:
    it went). What is derived from an entry right after a change (the
    screen's rows, node/screenindex.py) reads it here instead of decoding the
    bytes the apply has just encoded."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, Entry | None] = {}

    def put(self, number: str, entry: Entry | None) -> None:
        self.add(number)
        self.entries[number] = entry


def apply_records(
    state: ViewState, records: Sequence[Record], builder: EntryBuilder, bucket_bits: int
) -> Changed:
    """Apply `records` to `state`; returns the numbers whose entry changed
    (appeared, went, or got different bytes), with their new entries. Raises
    StorageFailure (a stored state then changes nothing)."""
    state.begin(r.id for r in records)
    new = _index(state, records, builder.consortium)
    appeals_on = _reach(state, new.fresh, new.on)
    new.named.update(a for a in new.arrived if state.has_referrers(a))
    _forget_referrers(state, new.named, builder.keep)
    count = state.count
    changed = Changed()
    by_bucket: dict[int, dict[bytes, bytes | None]] = {}   # bucket -> view key -> hash
    numbers = sorted(new.touched)
    for n, held in zip(numbers, state.held(numbers), strict=True):
        marks = _marks_alone(n, held, new, appeals_on, state)
        if marks is not None:           # most numbers: marks nobody corrected
            entry = builder.build_marks(n, marks)
        else:
            entry = builder.build(n, _number_facts(n, held, new, appeals_on, state, builder.keep))
        if entry is None and held is None:
            continue
        if entry is not None and held is not None and entry.encode() == held.entry:
            continue
        state.put_entry(n, entry)
        vkey = view_key(n)
        b = viewtree.position(vkey) >> (viewtree.DEPTH - bucket_bits)
        by_bucket.setdefault(b, {})[vkey] = None if entry is None else entry.hash
        count += (held is None) - (entry is None)
        changed.put(n, entry)
    order = sorted(by_bucket)
    tops = {
        b: _rehash(state, b, slots, by_bucket[b], bucket_bits)
        for b, slots in zip(order, state.buckets(order), strict=True)
    }
    state.commit(new.vector, count, new.ignored, tops)
    return changed


@dataclass
class _Arrivals:
    """What one apply brought into the record index."""

    vector: dict[str, int]
    ignored: int
    touched: set[str] = field(default_factory=set)        # numbers whose entry may change
    on: dict[str, list[_OnNumber]] = field(default_factory=dict)  # its marks, reassignments
    fresh: list[CorrectionFact] = field(default_factory=list)     # corrections, decisions
    arrived: list[bytes] = field(default_factory=list)    # facts (maybe named before)
    named: set[bytes] = field(default_factory=set)        # ids a new correction names


def _index(state: ViewState, records: Iterable[Record], cons: Consortium) -> _Arrivals:
    """Put each record not seen before into the index, as its fact or ignored."""
    participants = cons.by_id
    new = _Arrivals(dict(state.vector), state.ignored)
    vector = new.vector
    for rec in records:
        if rec.issuer in participants and rec.seq > vector.get(rec.issuer, 0):
            vector[rec.issuer] = rec.seq
        if state.seen(rec.id):
            continue                        # applied (or ignored) before
        fact = F.fact_of(rec, cons)
        if fact is None:
            state.put_ignored(rec.id)
            new.ignored += 1
            continue
        state.put_fact(fact)
        new.arrived.append(fact.id)
        if isinstance(fact, CorrectionFact):
            new.fresh.append(fact)
            for t in fact.names():
                state.add_referrer(t, fact.id)
                new.named.add(t)
            new.touched |= _numbers_of(fact, state)
        else:
            new.on.setdefault(fact.number, []).append(fact)
            new.touched.add(fact.number)
    return new


def _rehash(
    state: ViewState, b: int, held: list[Slot], changes: dict[bytes, bytes | None],
    bucket_bits: int,
) -> bytes:
    """Put the changed entry hashes into bucket `b` (which holds `held`, sorted
    by position); its new subtree hash."""
    slots = list(held)
    for vkey, h in changes.items():
        pos = viewtree.position(vkey)
        i = bisect_left(slots, pos, key=_slot_pos)      # a bucket holds a few slots
        if i == len(slots) or slots[i].pos != pos:
            if h is not None:
                slots.insert(i, Slot.of(((vkey, h),)))
            continue
        members = [m for m in slots[i].members if m[0] != vkey]
        if h is not None:
            members.append((vkey, h))
        if members:
            slots[i] = Slot.of(members)
        else:
            del slots[i]
    top, _ = viewtree.rehash_bucket(slots, bucket_bits)
    state.put_bucket(b, slots, top)
    return top


def _slot_pos(s: Slot) -> int:
    return s.pos


def _mark_numbers(c: Correction, state: ViewState) -> set[str]:
    out = set()
    for t in c.targets:
        n = state.mark_number(t)
        if n is not None:
            out.add(n)
    return out


def _numbers_of(f: CorrectionFact, state: ViewState) -> set[str]:
    """The numbers a correction or decision can change: those of the marks it (or
    the appeal it decides or withdraws) names."""
    c = f.correction
    if c.is_decision:
        appeal = state.correction(c.appeal_id)
        return set() if appeal is None else _mark_numbers(appeal.correction, state)
    out = _mark_numbers(c, state)
    for t in c.targets:        # a withdrawal of an appeal reaches the appeal's numbers
        target = state.correction(t)
        if target is not None and not target.correction.is_decision:
            out |= _mark_numbers(target.correction, state)
    return out


def _reach(
    state: ViewState, fresh: Iterable[CorrectionFact], on: dict[str, list[_OnNumber]]
) -> dict[str, set[bytes]]:
    """Number -> the appeals that reach it in this apply (new ones, ones a new
    decision decided, ones that waited for a new mark) and so are candidates
    there beside those its entry kept. An appeal reaches the number of each
    known mark it names that another participant issued."""
    out: dict[str, set[bytes]] = {}
    for f in fresh:
        a: CorrectionFact | None = f
        if f.correction.is_decision:
            a = state.correction(f.correction.appeal_id)
        if a is None or a.correction.is_decision:
            continue
        for t in a.correction.targets:
            m = state.mark(t)
            if m is not None and m.issuer != a.issuer:
                out.setdefault(m.number, set()).add(a.id)
    for number, facts in on.items():
        for m in facts:
            if isinstance(m, MarkFact) and state.has_referrers(m.id):
                for r in state.referrers(m.id):
                    if not r.correction.is_decision and r.issuer != m.issuer:
                        out.setdefault(number, set()).add(r.id)
    return out


def _forget_referrers(state: ViewState, targets: Iterable[bytes], keep: int) -> None:
    """Of each known target that gained referrers, or arrived with some, drop the
    referrers no entry depends on (`kept_referrers`), so reads stay bounded.
    Referrers of a record not applied yet are all kept (`waiting` lists them)."""
    for t in sorted(targets):
        issuer = ""
        m = state.mark(t)
        if m is not None:
            kind, issuer = F.TARGET_MARK, m.issuer
        else:
            c = state.correction(t)
            if c is not None and not c.correction.is_decision:
                kind, issuer = F.TARGET_CORRECTION, c.issuer
            elif c is not None or state.known(t):
                kind = F.TARGET_OTHER           # a decision or a reassignment
            else:
                continue                        # unknown yet, or ignored
        refs = state.referrers(t)
        kept = F.kept_referrers(kind, issuer, refs, keep)
        for r in refs:
            if r.id not in kept:
                state.drop_referrer(t, r.id)


def _marks_alone(
    number: str, held: Held | None, new: _Arrivals, appeals_on: dict[str, set[bytes]],
    state: ViewState,
) -> list[MarkFact] | None:
    """The number's marks (held and new) when they are all its facts can be: no
    appeal, reassignment or complaint held or reaching it, no mark named by a
    correction; else None (`_number_facts` then reads the rest)."""
    if number in appeals_on:
        return None
    if held is None:
        marks = []
    elif held.appeals or held.reassignments or held.complaints:
        return None
    else:
        marks = list(held.marks)
    for f in new.on.get(number, ()):
        if f.__class__ is not MarkFact:
            return None
        marks.append(f)
    has_referrers = state.has_referrers
    for m in marks:
        if has_referrers(m.id):
            return None
    return marks


def _number_facts(
    number: str,
    held: Held | None,
    new: _Arrivals,
    appeals_on: dict[str, set[bytes]],
    state: ViewState,
    keep: int,
) -> NumberFacts:
    """What `EntryBuilder.build(number)` reads: the number's marks (those its entry
    held, and new ones) and reassignments, its candidate appeals (those its entry
    kept, and those reaching it now) with their decisions and withdrawals, and
    the self-corrections of the marks the entry keeps. Every read is bounded by
    what the entry keeps plus what this apply brings."""
    marks = [] if held is None else list(held.marks)
    reassigns = [] if held is None else list(held.reassignments)
    complaints = [] if held is None else list(held.complaints)
    for f in new.on.get(number, ()):
        if isinstance(f, MarkFact):
            marks.append(f)
        elif isinstance(f, ComplaintFact):
            complaints.append(f)
        else:
            reassigns.append(f)
    appeals = [] if held is None else held.appeals
    reaching = appeals_on.get(number, ())
    nf = NumberFacts()
    facts = nf.facts
    candidates = list(dict.fromkeys([*appeals, *sorted(reaching)])) if appeals or reaching else []
    found: list[CorrectionFact] = []
    for aid in candidates:
        a = state.correction(aid)
        if a is None:
            raise StorageFailure(f"view appeal {aid.hex()} is not indexed")
        facts[aid] = a
        found.append(a)
        for r in state.referrers(aid):
            facts[r.id] = r
            table = nf.decisions_for if r.correction.is_decision else nf.by_target
            table.setdefault(aid, set()).add(r.id)
    nf.appeals = set(candidates)
    kept = {m.id: m for m in F.latest_per_issuer(marks, keep)}
    if found:                           # most numbers have no appeal
        by_id = {m.id: m for m in marks}
        for a in F.kept_appeals(found, nf, keep):
            for t in a.correction.targets:
                if t not in kept:
                    m = by_id.get(t) or state.mark(t)
                    if m is not None and m.number == number and m.issuer != a.issuer:
                        kept[t] = m
    nf.marks = set(kept)
    if reassigns:
        nf.reassignments = {r.id for r in reassigns}
        facts.update((r.id, r) for r in reassigns)
    if complaints:
        nf.complaints = {c.id for c in complaints}
        facts.update((c.id, c) for c in complaints)
    for m in kept.values():
        facts[m.id] = m
        if not state.has_referrers(m.id):
            continue                    # most marks are never corrected
        for r in state.referrers(m.id):
            if r.issuer == m.issuer and not r.correction.is_decision:
                facts[r.id] = r
                nf.by_target.setdefault(m.id, set()).add(r.id)
    return nf
