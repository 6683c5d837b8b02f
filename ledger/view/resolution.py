"""An entry evaluated at one time: which marks count, the category, the risk,
the score, the appeals (docs/view.md has the rules).

`evaluate(entry, at_ms)` is what `Entry.evaluate` runs; it reads only the
entry and the time it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.view.parts import (
    EXPIRED,
    PENDING,
    PROTECTED,
    REASON_ORDER,
    RISK_HIGH,
    RISK_MEDIUM,
    RISK_NONE,
    SUPERSEDED,
    EntryMark,
)

if TYPE_CHECKING:
    from ledger.view.entries import Entry


@dataclass(frozen=True)
class Marker:
    """A mark that counts at the evaluated time."""

    participant: str
    role: str
    record_id: bytes
    category: str
    score: int
    reports: int
    observed_at: int
    expires_at: int
    recategorized: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "role": self.role,
            "record_id": self.record_id.hex(),
            "category": self.category,
            "score": self.score,
            "reports": self.reports,
            "observed_at": self.observed_at,
            "expires_at": self.expires_at,
            "recategorized": self.recategorized,
        }


@dataclass(frozen=True)
class SetAside:
    """A mark that does not count at the evaluated time, and why."""

    participant: str
    record_id: bytes
    category: str
    reason: str
    since: int
    ref: bytes              # what set it aside (record id); empty for expiry

    def to_json(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "record_id": self.record_id.hex(),
            "category": self.category,
            "reason": self.reason,
            "since": self.since,
            "ref": self.ref.hex(),
        }


@dataclass(frozen=True)
class AppealState:
    appeal_id: bytes
    appellant: str
    targets: tuple[bytes, ...]
    status: str
    filed_at: int
    decided_at: int | None
    decision_id: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "appeal_id": self.appeal_id.hex(),
            "appellant": self.appellant,
            "targets": [t.hex() for t in self.targets],
            "status": self.status,
            "filed_at": self.filed_at,
            "decided_at": self.decided_at,
            "decision_id": self.decision_id.hex(),
        }


@dataclass(frozen=True)
class Resolution:
    """An entry evaluated at one time."""

    number: str
    at_ms: int
    category: str | None
    risk: str                               # none | medium | high
    score: int                              # 0..100
    markers: tuple[Marker, ...]
    set_aside: tuple[SetAside, ...]
    appeal: str                             # none | pending | upheld | rejected | withdrawn
    appeals: tuple[AppealState, ...]
    tenure_since: int | None = None         # the reassignment in force, if any
    complainants: int = 0                   # distinct, about calls in the rule's window

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "at_ms": self.at_ms,
            "category": self.category,
            "risk": self.risk,
            "score": self.score,
            "markers": [m.to_json() for m in self.markers],
            "set_aside": [s.to_json() for s in self.set_aside],
            "appeal": self.appeal,
            "appeals": [a.to_json() for a in self.appeals],
            "tenure_since": self.tenure_since,
            "complainants": self.complainants,
        }


def evaluate(entry: Entry, at_ms: int) -> Resolution:
    """The entry's answer at `at_ms` (see docs/view.md for the rules)."""
    aside: list[SetAside] = []
    counting, category, risk, score, complainants = _count(entry, at_ms, aside)
    markers = tuple(
        Marker(
            m.participant, m.role, m.id, cat, m.score, m.reports, m.observed_at,
            m.expires_at, any(r.at <= at_ms for r in m.recategorized),
        )
        for m, cat in counting
    )
    aside.sort(key=lambda s: (s.participant, s.record_id))
    states = []
    for a in entry.appeals:
        st = a.status_at(at_ms)
        if st is None:
            continue
        closed = st != PENDING
        states.append(
            AppealState(
                a.id, a.appellant, a.targets, st, a.filed_at,
                a.closed_at if closed else None, a.closed_by if closed else b"",
            )
        )
    tenure = [r.effective_at for r in entry.reassignments if r.effective_at <= at_ms]
    return Resolution(
        number=entry.number,
        at_ms=at_ms,
        category=category,
        risk=risk,
        score=score,
        markers=markers,
        set_aside=tuple(aside),
        appeal=_appeal_summary(states),
        appeals=tuple(states),
        tenure_since=max(tenure) if tenure else None,
        complainants=complainants,
    )


def screen_facts(entry: Entry, at_ms: int
                 ) -> tuple[str | None, str, int, tuple[tuple[bytes, str], ...]]:
    """What the call-path screen reads of `evaluate(entry, at_ms)`: its
    category, risk, score and each marker's (record id, category), without
    the rest of the resolution (what was set aside, the appeals, the tenure)."""
    counting, category, risk, score, _ = _count(entry, at_ms, None)
    return category, risk, score, tuple((m.id, cat) for m, cat in counting)


def _count(entry: Entry, at_ms: int, aside: list[SetAside] | None
           ) -> tuple[list[tuple[EntryMark, str]], str | None, str, int, int]:
    """The marks that count at `at_ms` (with the category each counts
    under, by participant and id), the category, risk and score they give and
    the complainants; each mark that does not count is added to `aside`
    (None: not kept)."""
    live: list[tuple[EntryMark, str]] = []
    for m in entry.marks:
        if m.observed_at > at_ms:
            continue                    # not observed yet at that time
        cat = m.category_at(at_ms)
        why = _why_not(entry, m, cat, at_ms)
        if why is None:
            live.append((m, cat))
        elif aside is not None:
            since, _, reason, ref = why
            aside.append(SetAside(m.participant, m.id, cat, reason, since, ref))
    # One mark per participant: its latest issued live mark.
    latest: dict[str, tuple[EntryMark, str]] = {}
    for m, cat in live:
        cur = latest.get(m.participant)
        if cur is None or _issue_key(m) > _issue_key(cur[0]):
            latest[m.participant] = (m, cat)
    if aside is not None:
        for m, cat in live:
            win = latest[m.participant][0]
            if win is not m:
                aside.append(SetAside(m.participant, m.id, cat, SUPERSEDED, win.observed_at,
                                      win.id))
    counting = sorted(latest.values(), key=lambda mc: (mc[0].participant, mc[0].id))
    category, risk, score = _combine(entry, counting)
    complainants = _complainants(entry, at_ms)
    rules = entry.rules
    if rules.complaint_risk_complainants and complainants >= rules.complaint_risk_complainants:
        # Raised before any participant marks it, never lowered (docs/view.md).
        risk = max(risk, rules.complaint_risk, key=_RISK_ORDER.__getitem__)
    return counting, category, risk, score, complainants


_RISK_ORDER = {RISK_NONE: 0, RISK_MEDIUM: 1, RISK_HIGH: 2}


def _complainants(entry: Entry, at_ms: int) -> int:
    """Distinct complainant tags of the complaints about calls in the window
    ending at `at_ms`: call_at <= at_ms < call_at + window."""
    window = entry.rules.complaint_risk_window_ms
    return len({c.tag for c in entry.complaints if c.call_at <= at_ms < c.call_at + window})


def _why_not(
    entry: Entry, m: EntryMark, cat: str, at_ms: int
) -> tuple[int, int, str, bytes] | None:
    """The first reason (since, order, reason, ref) the mark does not count at `at_ms`."""
    found: list[tuple[int, int, str, bytes]] = [
        (s.since, REASON_ORDER[s.reason], s.reason, s.ref) for s in m.set_aside if s.since <= at_ms
    ]
    for p in entry.protections:
        # Every mark of the category observed before the protection ends, so a
        # backdated observed_at can only bring a mark under protection.
        if p.category == cat and m.observed_at < p.until:
            since = max(m.observed_at, p.since)
            if since <= at_ms:
                found.append((since, REASON_ORDER[PROTECTED], PROTECTED, p.decision))
    if at_ms >= m.expires_at:
        found.append((m.expires_at, REASON_ORDER[EXPIRED], EXPIRED, b""))
    return min(found) if found else None


def _combine(
    entry: Entry, counting: list[tuple[EntryMark, str]]
) -> tuple[str | None, str, int]:
    """The category, risk and score of the marks that count."""
    rules = entry.rules
    info = entry.category_info
    weight: dict[str, int] = {}
    who: dict[str, set[str]] = {}
    risk_by: set[str] = set()
    risk_weight = 0
    institute_risk = False
    for m, cat in counting:
        weight[cat] = weight.get(cat, 0) + m.weight
        who.setdefault(cat, set()).add(m.participant)
        if info(cat).risk:
            risk_by.add(m.participant)
            risk_weight += m.weight
            institute_risk = institute_risk or m.role == "institute"
    institute_high = institute_risk and rules.institute_mark_is_high_risk
    if institute_high or (risk_by and len(risk_by) >= rules.high_risk_min_participants):
        risk = RISK_HIGH
    elif risk_by:
        risk = RISK_MEDIUM
    else:
        risk = RISK_NONE

    def best(risky: bool) -> str | None:
        cands = [c for c in weight if info(c).risk == risky]
        if not cands:
            return None
        return min(cands, key=lambda c: (-weight[c], -info(c).rank, c))

    best_risk, best_identity = best(True), best(False)
    category = best_risk
    if best_identity is not None and (
        best_risk is None
        or (
            len(who[best_identity]) >= rules.identity_min_participants
            and weight[best_identity] > risk_weight
            and not institute_risk
        )
    ):
        category = best_identity
    score = 0
    if category is not None:
        total = sum(m.weight for m, cat in counting if cat == category)
        if total:
            num = sum(m.weight * m.score for m, cat in counting if cat == category)
            score = (2 * num + total) // (2 * total)     # rounded half up, integers only
    return category, risk, score


def _issue_key(m: EntryMark) -> tuple[int, int, bytes]:
    return (m.issued_at, m.seq, m.id)


def _appeal_summary(states: list[AppealState]) -> str:
    if not states:
        return "none"
    if any(s.status == PENDING for s in states):
        return PENDING
    last = max(states, key=lambda s: (s.decided_at or 0, s.appeal_id))
    return last.status


def instants(entry: Entry) -> tuple[int, ...]:
    """Every time `evaluate` compares its `at_ms` against, each as t and t+1
    (so `at < t`, `at <= t`, `at > t` and `at >= t` all change only at a
    listed instant), sorted and distinct. Between two consecutive instants
    (and before the first, and from the last on) `evaluate(entry, at)` is the
    same but for its `at_ms` field: a screen may cache one resolution per
    interval (node/screen.py). Kept beside `evaluate` so a new comparison
    there is added here too (tests/test_screen.py checks the property)."""
    ts: set[int] = set()
    for m in entry.marks:
        ts.add(m.observed_at)
        ts.add(m.expires_at)
        ts.update(r.at for r in m.recategorized)
        ts.update(s.since for s in m.set_aside)
    for p in entry.protections:
        ts.add(p.since)       # a protected mark counts from max(observed_at, since)
    for a in entry.appeals:
        ts.add(a.filed_at)
        if a.closed_at is not None:
            ts.add(a.closed_at)
    ts.update(r.effective_at for r in entry.reassignments)
    window = entry.rules.complaint_risk_window_ms
    for c in entry.complaints:
        ts.add(c.call_at)
        ts.add(c.call_at + window)
    return tuple(sorted(ts | {t + 1 for t in ts}))
