"""The entry of one number from the facts known about it (docs/view.md, the rules).

`EntryBuilder.build(number, facts)` is a pure function of the consortium it
was made for and of `facts` (a `NumberFacts`): the same facts give the same
entry bytes on every node, whatever order the records came in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keys.consortium import Consortium
from ledger.record import WITHDRAW
from ledger.view.entries import Entry, share_category_texts
from ledger.view.facts import (
    ComplaintFact,
    CorrectionFact,
    MarkFact,
    NumberFacts,
    ReassignmentFact,
    appeal_closing,
    appealed,
    keep_of,
    kept_appeals,
    kept_complaints,
    kept_recategorizations,
    latest_per_issuer,
    order,
)
from ledger.view.parts import (
    APPEAL_UPHELD,
    MAX_ENTRY_COMPLAINTS,
    PER_COMPLAINANT,
    REASSIGNED,
    UPHELD,
    WITHDRAWN,
    Appeal,
    CategoryInfo,
    EntryComplaint,
    EntryMark,
    EntryReassignment,
    Protection,
    Recategorization,
    Rules,
    SetAsideSpan,
)


@dataclass
class _Draft:
    """An entry while it is being built: the marks it keeps and, per mark, its
    recategorizations and set-aside spans; the appeals and protections so far."""

    marks: list[MarkFact]
    reassigns: list[ReassignmentFact]
    complaints: list[ComplaintFact]
    recats: dict[bytes, list[Recategorization]] = field(default_factory=dict)
    spans: dict[bytes, list[SetAsideSpan]] = field(default_factory=dict)
    appeals: list[Appeal] = field(default_factory=list)
    protections: set[Protection] = field(default_factory=set)

    def categories_until(self, mid: bytes, at: int, marked: str) -> set[str]:
        """As marked, and every kept recategorization dated up to `at`: a later
        (or backdated) recategorization can only add a category, never hide one."""
        return {marked} | {r.category for r in self.recats[mid] if r.at <= at}


# The frozen dataclasses' generated __init__ sets each field through
# object.__setattr__: for an EntryMark (13 fields) and the Entry (8) that is
# about 2 us of every record an apply builds. The hot path makes the object
# and fills its __dict__ with every field in one update instead: the same
# object (fields, equality, hash; tests/test_view.py checks every built entry
# equals what decoding its bytes makes through the regular __init__).
_new = object.__new__


def _mark_order(m: MarkFact) -> tuple[int, bytes]:
    return (m.observed_at, m.id)


def _span_order(s: SetAsideSpan) -> tuple[int, str, bytes]:
    return (s.since, s.reason, s.ref)


class EntryBuilder:
    """Builds entries under one consortium's policy, participants and taxonomy."""

    def __init__(self, consortium: Consortium) -> None:
        self.consortium = consortium
        policy = consortium.policy
        self.keep = keep_of(policy)
        self.protection_ms = policy.protection_ms
        self.rules = Rules(
            policy.high_risk_min_participants,
            policy.identity_min_participants,
            policy.institute_mark_is_high_risk,
            policy.complaint_risk_complainants,
            policy.complaint_risk_window_ms,
            policy.complaint_risk,
        )
        # Shared, so a million entries do not hold a million copies.
        self.category_info = {
            c.id: CategoryInfo(c.id, c.rank, c.risk) for c in consortium.taxonomy
        }
        share_category_texts(self.category_info.values())

    def build(self, number: str, nf: NumberFacts) -> Entry | None:
        """The entry of `number` from the facts `nf` holds about it, or None when
        no mark or reassignment of it counts."""
        if not (nf.appeals or nf.by_target or nf.reassignments or nf.complaints):
            return self.build_marks(number, [nf.mark(i) for i in nf.marks])
        return self._build(number, nf)

    def build_marks(self, number: str, marks: list[MarkFact]) -> Entry | None:
        """`build` for a number whose facts are marks alone, none of them named
        by a correction (most numbers): each issuer's `keep` latest, in
        (observed_at, id) order, nothing set aside or recategorized."""
        kept = latest_per_issuer(marks, self.keep)
        if not kept:
            return None
        if len(kept) > 1:
            kept = sorted({m.id: m for m in kept}.values(), key=_mark_order)
        by_id = self.consortium.by_id
        entry_marks = []
        used = set()
        for m in kept:
            p = by_id[m.issuer]
            used.add(m.category)
            em = _new(EntryMark)          # every field, at once (see _new)
            em.__dict__.update(
                id=m.id, participant=m.issuer, role=p.role, weight=p.weight,
                category=m.category, score=m.score, reports=m.reports,
                observed_at=m.observed_at, expires_at=m.expires_at, issued_at=m.issued_at,
                seq=m.seq, recategorized=(), set_aside=(),
            )
            entry_marks.append(em)
        info = self.category_info
        e = _new(Entry)                   # every field, at once (see _new)
        e.__dict__.update(
            number=number, rules=self.rules,
            categories=tuple(info[c] for c in sorted(used)) if len(used) > 1
            else (info[m.category],),
            marks=tuple(entry_marks), appeals=(), reassignments=(), protections=(),
            complaints=(),
        )
        return e

    def _build(self, number: str, nf: NumberFacts) -> Entry | None:
        """`build` in general: appeals, corrections, reassignments, complaints."""
        appeals, marks, appeal_targets = self._kept(number, nf)
        # Most numbers have neither: skip the sorts (the apply builds every changed entry).
        reassigns = sorted(
            (nf.reassignment(i) for i in nf.reassignments), key=lambda r: (r.effective_at, r.id)
        ) if nf.reassignments else []
        complaints = kept_complaints(
            (nf.complaint(i) for i in nf.complaints), MAX_ENTRY_COMPLAINTS, PER_COMPLAINANT
        ) if nf.complaints else []
        if not marks and not reassigns and not complaints:
            return None
        draft = _Draft(marks, reassigns, complaints)
        for m in marks:
            self._own_corrections(m, nf, draft)
        if appeals:
            by_id = {m.id: m for m in marks}
            for a in appeals:
                targets = appeal_targets.get(a.id)
                if targets:             # else it reaches this number through no known mark
                    self._appeal(a, sorted(targets), nf, draft, by_id)
            draft.appeals.sort(key=lambda x: (x.filed_at, x.id))
        return self._entry(number, draft)

    def _kept(
        self, number: str, nf: NumberFacts
    ) -> tuple[list[CorrectionFact], list[MarkFact], dict[bytes, list[bytes]]]:
        """The appeals kept (rule 2a), then the marks: each participant's latest
        `keep`, and every mark a kept appeal targets (so no flood drops those);
        per kept appeal, the marks of this number it targets."""
        facts = nf.facts
        appeals = (
            kept_appeals((nf.correction(i) for i in nf.appeals), nf, self.keep)
            if nf.appeals else []
        )
        kept: dict[bytes, MarkFact] = {
            m.id: m for m in latest_per_issuer((nf.mark(i) for i in nf.marks), self.keep)
        }
        targets: dict[bytes, list[bytes]] = {}

        def issuer_here(t: bytes) -> str | None:  # a mark of this number, by its issuer
            m = facts.get(t)
            return m.issuer if isinstance(m, MarkFact) and m.number == number else None

        for a in appeals:
            for t in appealed(a.issuer, a.correction, issuer_here):
                kept[t] = nf.mark(t)
                targets.setdefault(a.id, []).append(t)
        marks = sorted(kept.values(), key=_mark_order) if len(kept) > 1 else list(kept.values())
        return appeals, marks, targets

    def _own_corrections(self, m: MarkFact, nf: NumberFacts, draft: _Draft) -> None:
        """The mark's recategorizations and withdrawal by its issuer, and the
        reassignment that ends its tenure."""
        recats: list[Recategorization] = []
        spans: list[SetAsideSpan] = []
        named = nf.by_target.get(m.id)
        if named:                       # most marks are never corrected
            withdrawals = []
            own_recats = []
            for cid in named:
                c = nf.correction(cid)
                if c.issuer != m.issuer:
                    continue            # an appeal: taken from the number's appeals
                if c.correction.action == WITHDRAW:
                    withdrawals.append(c)
                else:
                    own_recats.append(c)
            recats = [
                Recategorization(c.issued_at, c.correction.category, c.id)
                for c in kept_recategorizations(own_recats, self.keep)
            ]
            recats.sort(key=lambda r: (r.at, r.ref))
            if withdrawals:
                w = min(withdrawals, key=order)
                spans.append(SetAsideSpan(w.issued_at, WITHDRAWN, w.id))
        later = [r for r in draft.reassigns if r.effective_at > m.observed_at]
        if later:
            spans.append(SetAsideSpan(later[0].effective_at, REASSIGNED, later[0].id))
        draft.recats[m.id] = recats
        draft.spans[m.id] = spans

    def _appeal(
        self,
        a: CorrectionFact,
        targets: list[bytes],
        nf: NumberFacts,
        draft: _Draft,
        by_id: dict[bytes, MarkFact],
    ) -> None:
        """Appeal `a` of the marks `targets` and how it ended; an upheld one sets
        its targets aside and protects their categories."""
        status, closed = appeal_closing(
            a, (nf.correction(i) for i in nf.decisions_for.get(a.id, ())),
            (nf.correction(i) for i in nf.by_target.get(a.id, ())),
        )
        closed_at = None if closed is None else closed.issued_at
        closed_by = b"" if closed is None else closed.id
        if status == UPHELD:
            assert closed_at is not None
            end = closed_at + self.protection_ms
            # A new tenure starts clean: a protection ends at the next reassignment.
            for r in draft.reassigns:
                if r.effective_at > closed_at:
                    end = min(end, r.effective_at)
                    break
            for t in targets:
                draft.spans[t].append(SetAsideSpan(closed_at, APPEAL_UPHELD, a.id))
                if end > closed_at:
                    draft.protections.update(
                        Protection(cat, closed_at, end, closed_by)
                        for cat in draft.categories_until(t, closed_at, by_id[t].category)
                    )
        draft.appeals.append(
            Appeal(
                id=a.id,
                appellant=a.issuer,
                targets=tuple(targets),
                action=a.correction.action,
                category=a.correction.category,
                filed_at=a.issued_at,
                status=status,
                closed_at=closed_at,
                closed_by=closed_by,
            )
        )

    def _entry(self, number: str, draft: _Draft) -> Entry:
        """The entry's parts in their canonical order."""
        entry_marks = []
        used = set()
        by_id = self.consortium.by_id
        for m in draft.marks:
            p = by_id[m.issuer]
            recats = draft.recats[m.id]
            spans = draft.spans[m.id]
            used.add(m.category)
            if recats:
                used.update(r.category for r in recats)
            em = _new(EntryMark)          # every field, at once (see _new)
            em.__dict__.update(
                id=m.id,
                participant=m.issuer,
                role=p.role,
                weight=p.weight,
                category=m.category,
                score=m.score,
                reports=m.reports,
                observed_at=m.observed_at,
                expires_at=m.expires_at,
                issued_at=m.issued_at,
                seq=m.seq,
                recategorized=tuple(recats),
                set_aside=tuple(sorted(spans, key=_span_order)) if spans else (),
            )
            entry_marks.append(em)
        if draft.protections:
            used.update(p.category for p in draft.protections)
        if draft.complaints:
            used.update(c.category for c in draft.complaints)
        e = _new(Entry)                   # every field, at once (see _new)
        e.__dict__.update(
            number=number,
            rules=self.rules,
            categories=tuple(self.category_info[c] for c in sorted(used)),
            marks=tuple(entry_marks),
            appeals=tuple(draft.appeals),
            reassignments=tuple(
                EntryReassignment(r.id, r.issuer, r.effective_at) for r in draft.reassigns
            ) if draft.reassigns else (),
            protections=tuple(
                sorted(draft.protections, key=lambda p: (p.since, p.category, p.until, p.decision))
            ) if draft.protections else (),
            complaints=tuple(
                EntryComplaint(c.id, c.issuer, c.category, c.call_at, c.issued_at, c.tag)
                for c in draft.complaints
            ) if draft.complaints else (),
        )
        return e
