"""Facts: a record as resolution uses it, and the rules of which facts an entry keeps.

A record enters the view through `fact_of`: the payload registry's issuer rule
(`ledger.payloads.may_issue`) and the time bounds (`ledger.rules`) first, then
the fact builder registered for its payload class in `FACT_BUILDERS`. A new
payload type that changes entries adds one builder there (and its fact class);
one that does not, maps its class to None.

The `kept_*` functions say which facts an entry can ever depend on, so the
view forgets the others and what it reads per number stays bounded by what the
entry keeps (docs/view.md, rule 2a).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ledger.payloads import Complaint, Handling, MarketerLine, Preference, Sanction, may_issue
from ledger.record import RECATEGORIZE, UPHOLD, WITHDRAW, Correction, Mark, Reassignment, Record
from ledger.rules import time_violation
from ledger.view.parts import APPEAL_WITHDRAWN, PENDING, REJECTED, UPHELD

if TYPE_CHECKING:
    from keys.consortium import Consortium, Policy


@dataclass(frozen=True, slots=True)
class MarkFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    number: str
    category: str
    score: int
    reports: int
    observed_at: int
    expires_at: int         # the policy default already applied


@dataclass(frozen=True, slots=True)
class CorrectionFact:
    id: bytes
    issuer: str
    seq: int
    issued_at: int
    correction: Correction

    def names(self) -> tuple[bytes, ...]:
        """The record ids it refers to: a decision's appeal, a correction's targets."""
        c = self.correction
        return (c.appeal_id,) if c.is_decision else c.targets


@dataclass(frozen=True, slots=True)
class ReassignmentFact:
    id: bytes
    issuer: str
    seq: int                # 0 when read back from a stored entry (resolution never uses it)
    issued_at: int          # likewise
    number: str
    effective_at: int


@dataclass(frozen=True, slots=True)
class ComplaintFact:
    id: bytes
    issuer: str
    seq: int                # 0 when read back from a stored entry
    issued_at: int          # its filing
    number: str
    category: str
    call_at: int
    tag: bytes              # the per-number complainant tag; the sealed value stays out


Fact = MarkFact | CorrectionFact | ReassignmentFact | ComplaintFact
FactBuilder = Callable[[Record, "Policy"], Fact]


def _mark_fact(rec: Record, policy: Policy) -> Fact:
    pay = rec.payload
    assert isinstance(pay, Mark)
    expires = pay.expires_at_ms or pay.observed_at_ms + policy.default_expiry_ms
    return MarkFact(
        rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay.number, pay.category,
        pay.score, pay.reports, pay.observed_at_ms, expires,
    )


def _correction_fact(rec: Record, policy: Policy) -> Fact:
    pay = rec.payload
    assert isinstance(pay, Correction)
    return CorrectionFact(rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay)


def _reassignment_fact(rec: Record, policy: Policy) -> Fact:
    pay = rec.payload
    assert isinstance(pay, Reassignment)
    return ReassignmentFact(
        rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay.number, pay.effective_at_ms
    )


def _complaint_fact(rec: Record, policy: Policy) -> Fact:
    pay = rec.payload
    assert isinstance(pay, Complaint)
    return ComplaintFact(rec.id, rec.issuer, rec.seq, rec.issued_at_ms, pay.number,
                         pay.category, pay.call_at_ms, pay.tag)


# Payload class (ledger.payloads.REGISTRY) -> how its record enters the view;
# None: the payload changes no entry. tests/test_view.py checks every registered
# type is listed here. Preferences and lines are the consent state's
# (ledger/consent): the public view must never reveal a preference.
FACT_BUILDERS: dict[type, FactBuilder | None] = {
    Mark: _mark_fact,
    Correction: _correction_fact,
    Reassignment: _reassignment_fact,
    Preference: None,
    MarketerLine: None,
    # A complaint counts on its number's entry; handlings and sanctions are the
    # complaint state's (ledger/complaints), not the public entry's.
    Complaint: _complaint_fact,
    Handling: None,
    Sanction: None,
}


def has_effect(rec: Record, cons: Consortium) -> bool:
    """Whether resolution uses the record: its payload enters entries, its
    issuer may issue it (the ledger's own rule, ledger.payloads) and its own
    times break no bound (ledger/rules.py). The statistics filter with this
    too, so a figure counts exactly what the view gives an effect."""
    return FACT_BUILDERS.get(type(rec.payload)) is not None and _allowed(rec, cons)


def _allowed(rec: Record, cons: Consortium) -> bool:
    pay = rec.payload
    return (may_issue(cons, rec.issuer, pay)
            and time_violation(rec.issued_at_ms, pay, cons.policy) is None)


def fact_of(rec: Record, cons: Consortium) -> Fact | None:
    """The record as resolution uses it, or None when resolution ignores it
    (what the ledger would refuse in context: unknown issuer or category, a
    decision not by the institute, a reassignment not by the holder, a record
    whose own times break `ledger.rules`; or a payload that enters no entry,
    whose issuer rule need not run: a seal opened)."""
    build = FACT_BUILDERS.get(type(rec.payload))  # one lookup: this is the apply's hot path
    if build is None or not _allowed(rec, cons):
        return None
    return build(rec, cons.policy)


# ---------------------------------------------------------------- what is kept


def order(f: Fact) -> tuple[int, int, bytes]:
    """Issue order across feeds: issued_at, then seq, then id (always total)."""
    return (f.issued_at, f.seq, f.id)


def keep_of(policy: Policy) -> int:
    """How many marks (and appeals) per participant an entry keeps: the policy's
    max_marks_per_participant, at least one (a participant's latest always counts)."""
    return max(1, policy.max_marks_per_participant)


_F = TypeVar("_F", MarkFact, CorrectionFact)


def latest_per_issuer(facts: Iterable[_F], keep: int) -> list[_F]:
    """Each issuer's `keep` latest facts in issue order (`order`); the others are
    dropped. A dropped fact stays dropped: the newer ones stay in the set."""
    facts = list(facts)
    if len(facts) <= keep:
        return facts                # the usual case: nothing to drop
    by: dict[str, list[_F]] = {}
    for f in facts:
        by.setdefault(f.issuer, []).append(f)
    out: list[_F] = []
    for fs in by.values():
        if len(fs) > keep:
            fs = sorted(fs, key=order)[-keep:]
        out.extend(fs)
    return out


TARGET_MARK, TARGET_CORRECTION, TARGET_OTHER = "mark", "correction", "other"


def target_kind(f: Fact) -> str:
    """What a named record is, for `kept_referrers`."""
    if isinstance(f, MarkFact):
        return TARGET_MARK
    if isinstance(f, CorrectionFact) and not f.correction.is_decision:
        return TARGET_CORRECTION
    return TARGET_OTHER


def kept_referrers(
    kind: str, issuer: str, refs: Iterable[CorrectionFact], keep: int
) -> set[bytes]:
    """The ids of the corrections and decisions naming a target (of `kind`, issued
    by `issuer`) that an entry can ever depend on; the entry builder reads no
    other. Each left out is dominated for good by ones kept, so forgetting it
    changes no entry.

    A mark: its issuer's earliest withdrawal and kept recategorizations of it
    (`kept_recategorizations`; appeals of it are kept per number). A correction
    (a possible appeal): per decider its first decision (lowest seq), and its
    issuer's earliest withdrawal of it. Anything else (a decision or a
    reassignment): nothing."""
    out: set[bytes] = set()
    if kind == TARGET_MARK:
        own = sorted(
            (r for r in refs if r.issuer == issuer and not r.correction.is_decision), key=order
        )
        out.update(
            f.id
            for f in kept_recategorizations(
                [f for f in own if f.correction.action == RECATEGORIZE], keep
            )
        )
        out.update([f.id for f in own if f.correction.action == WITHDRAW][:1])
    elif kind == TARGET_CORRECTION:
        first: dict[str, CorrectionFact] = {}
        pull: CorrectionFact | None = None
        for r in refs:
            if r.correction.is_decision:
                cur = first.get(r.issuer)
                if cur is None or (r.seq, r.id) < (cur.seq, cur.id):
                    first[r.issuer] = r
            elif (
                r.issuer == issuer
                and r.correction.action == WITHDRAW
                and (pull is None or order(r) < order(pull))
            ):
                pull = r
        out.update(f.id for f in first.values())
        if pull is not None:
            out.add(pull.id)
    return out


def kept_recategorizations(
    recats: Iterable[CorrectionFact], keep: int
) -> list[CorrectionFact]:
    """The recategorizations of a mark by its issuer that take effect (rule 2a): its
    `keep` latest in issue order, and of each category the first to it, so the
    categories a mark held up to any time (what a protection covers) stay known."""
    ordered = sorted(recats, key=order)
    kept = {c.id: c for c in ordered[-keep:]}
    first: dict[str, CorrectionFact] = {}
    for c in ordered:
        first.setdefault(c.correction.category, c)
    kept.update((c.id, c) for c in first.values())
    return sorted(kept.values(), key=order)


def kept_complaints(complaints: Iterable[ComplaintFact], total: int,
                    per_tag: int) -> list[ComplaintFact]:
    """The complaints an entry keeps (parts.MAX_ENTRY_COMPLAINTS): of each
    complainant tag its `per_tag` latest by call time, then the `total` latest
    of those, in (call_at, id) order. A dropped one stays dropped."""
    key = lambda c: (c.call_at, c.id)  # noqa: E731
    by: dict[bytes, list[ComplaintFact]] = {}
    for c in complaints:
        by.setdefault(c.tag, []).append(c)
    kept = [c for cs in by.values() for c in sorted(cs, key=key)[-per_tag:]]
    return sorted(kept, key=key)[-total:]


@dataclass
class NumberFacts:
    """What the entry builder reads about one number: the facts by id, the
    number's marks, reassignments and candidate appeals, and per mark or appeal
    the corrections (`by_target`) and decisions (`decisions_for`) naming it."""

    facts: dict[bytes, Fact] = field(default_factory=dict)
    marks: set[bytes] = field(default_factory=set)
    reassignments: set[bytes] = field(default_factory=set)
    complaints: set[bytes] = field(default_factory=set)
    appeals: set[bytes] = field(default_factory=set)
    by_target: dict[bytes, set[bytes]] = field(default_factory=dict)
    decisions_for: dict[bytes, set[bytes]] = field(default_factory=dict)

    def correction(self, rid: bytes) -> CorrectionFact:
        f = self.facts[rid]
        assert isinstance(f, CorrectionFact)
        return f

    def mark(self, rid: bytes) -> MarkFact:
        f = self.facts[rid]
        assert isinstance(f, MarkFact)
        return f

    def reassignment(self, rid: bytes) -> ReassignmentFact:
        f = self.facts[rid]
        assert isinstance(f, ReassignmentFact)
        return f

    def complaint(self, rid: bytes) -> ComplaintFact:
        f = self.facts[rid]
        assert isinstance(f, ComplaintFact)
        return f


# ---------------------------------------------------------------- the appeal rule
# One rule for the view's entries, the accountability figures (ledger/stats.py)
# and the trail's labels (ledger/trail.py): an appeal is a correction of another
# participant's mark; the decision that counts is its first (lowest seq) by
# anyone but its appellant, and it is final; else its appellant's earliest
# withdrawal closes it; else it is pending.


def appealed(appellant: str, c: Correction,
             mark_issuer: Callable[[bytes], str | None]) -> list[bytes]:
    """The marks `appellant`'s correction `c` appeals, each once in its order:
    those it names whose issuer `mark_issuer` gives (None: no mark known by
    that id) and is not the appellant. Empty: `c` is no appeal (a decision, a
    correction of one's own marks, or of marks not known)."""
    if c.is_decision:
        return []
    return [t for t in dict.fromkeys(c.targets)
            if (i := mark_issuer(t)) is not None and i != appellant]


def counting_decision(
    appeal: CorrectionFact, decisions: Iterable[CorrectionFact]
) -> CorrectionFact | None:
    """Of the decisions naming `appeal`, the one that counts: the first (lowest
    seq, then id) by anyone but its appellant (nobody decides their own appeal:
    the ledger refuses it, the view gives it no effect)."""
    best: CorrectionFact | None = None
    for d in decisions:
        if d.issuer != appeal.issuer and (best is None or (d.seq, d.id) < (best.seq, best.id)):
            best = d
    return best


def appeal_closing(
    appeal: CorrectionFact, decisions: Iterable[CorrectionFact],
    corrections: Iterable[CorrectionFact],
) -> tuple[str, CorrectionFact | None]:
    """How `appeal` stands, from the decisions and the other corrections naming
    it: (UPHELD or REJECTED, the decision that counts), final whatever
    withdrawal (with whatever issued_at) its appellant issued; else
    (APPEAL_WITHDRAWN, the appellant's earliest withdrawal in issue order);
    else (PENDING, None)."""
    decision = counting_decision(appeal, decisions)
    if decision is not None:
        return (UPHELD if decision.correction.outcome == UPHOLD else REJECTED), decision
    pulled = [w for w in corrections if w.issuer == appeal.issuer
              and not w.correction.is_decision and w.correction.action == WITHDRAW]
    if pulled:
        return APPEAL_WITHDRAWN, min(pulled, key=order)
    return PENDING, None


def first_decision(a: CorrectionFact, nf: NumberFacts) -> CorrectionFact | None:
    """`counting_decision` of appeal `a` among the decisions `nf` holds for it."""
    return counting_decision(a, (nf.correction(i) for i in nf.decisions_for.get(a.id, ())))


def kept_appeals(
    appeals: Iterable[CorrectionFact], nf: NumberFacts, keep: int
) -> list[CorrectionFact]:
    """The appeals an entry keeps (docs/view.md, rule 2a): every decided one (its
    appellant cannot push a decision out), and each appellant's `keep` latest."""
    appeals = list(appeals)
    if not appeals:
        return appeals
    kept = {a.id: a for a in latest_per_issuer(appeals, keep)}
    for a in appeals:
        if a.id not in kept and first_decision(a, nf) is not None:
            kept[a.id] = a
    return list(kept.values())
