"""Accountability figures from the log alone (docs/trail.md, "Statistics").

A pure function of a set of records: every node, and an auditor with a
stopped node's files, get the same figures for the same set. A set is named
by its vector (issuer -> highest seq counted): a log holds each feed from seq
1 without gaps, so records with seq <= vector[issuer] are one set whatever
order the log holds them in. `Tally.add` takes records in any order; the
figures are worked out in `Tally.figures`.

The rules are the view's own functions (docs/view.md), so a figure means what
the view shows: a record the view ignores (`fact_of`: an issuer rule or a time
bound broken) counts nowhere; an appeal is a correction of another
participant's mark (`appealed`); the decision that counts is an appeal's first
(lowest seq) by someone other than its appellant, and it is final; otherwise
the appellant's withdrawal closes it (`appeal_closing`).

Per participant that issues records:

    marks_issued       its marks
    marks_appealed     its marks some appeal targets
    appeals_against    appeals targeting at least one of its marks
    appeals_upheld     of those, the ones upheld
    appeals_rejected   of those, the ones rejected
    marks_overturned   its marks an upheld appeal set aside
    overturn_rate      marks_overturned / marks_issued (null without marks)
    decision_ms        appeal filed to decision (upheld or rejected), issue times:
                       {count, median, p90} by nearest rank (null without decisions)

Per carrier, from the complaints and their handling chains as the complaint
state walks them (ledger/complaints/rules.py: the SLA clock starts at a
complaint's filing; the policy's complaint_ack_ms and complaint_close_ms):

    received             complaints that reached it: filed to it, or forwarded to it
    forwarded            of those, the ones it forwarded (not its subscriber)
    acknowledged_in_sla  complaints filed to it that it acknowledged (its first
                         handling, a forward included) within complaint_ack_ms
    closed               complaints it closed (its finding, confirmed or not)
    closed_in_sla        of those, closed within complaint_close_ms of filing
    open                 complaints it holds (the last addressee) not closed yet
    handling_ms          filing to its closing finding: {count, median, p90}

Nothing here reads a clock: whether an open complaint is overdue depends on
when it is asked (`markex complaints --overdue`), so the figures count only
what the records settle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keys.consortium import Consortium
from ledger.complaints.facts import ComplaintFact, HandlingFact
from ledger.complaints.facts import fact_of as complaint_fact
from ledger.complaints.rules import status_of
from ledger.errors import BadInput
from ledger.payloads import Complaint, Handling
from ledger.record import Correction, Mark, Record
from ledger.view.facts import CorrectionFact, MarkFact, appeal_closing, appealed, fact_of
from ledger.view.parts import APPEAL_WITHDRAWN, PENDING, REJECTED, UPHELD


def nearest_rank(values: list[int], pct: int) -> int | None:
    """The smallest value with at least `pct` percent of `values` at or below it."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(pct * len(s) / 100) - 1)]


@dataclass
class Tally:
    """The records of one set as the figures need them. `vector`: count only
    records with seq <= vector[issuer] (an issuer missing from it: none);
    None: every record added, and the vector is theirs."""

    consortium: Consortium
    vector: Mapping[str, int] | None = None
    _marks: dict[bytes, str] = field(default_factory=dict)             # id -> issuer
    _corrections: list[CorrectionFact] = field(default_factory=list)
    _heads: dict[str, int] = field(default_factory=dict)
    _seen: set[bytes] = field(default_factory=set)
    _complaints: dict[bytes, ComplaintFact] = field(default_factory=dict)
    _handlings: dict[bytes, list[HandlingFact]] = field(default_factory=dict)  # by complaint

    def add(self, rec: Record) -> None:
        """Count `rec` (once, however often it is added)."""
        if self.vector is not None and rec.seq > self.vector.get(rec.issuer, 0):
            return
        if rec.id in self._seen:
            return
        self._seen.add(rec.id)
        if rec.seq > self._heads.get(rec.issuer, 0):
            self._heads[rec.issuer] = rec.seq
        p = rec.payload
        if isinstance(p, Complaint | Handling):
            f = complaint_fact(rec, self.consortium)
            if isinstance(f, ComplaintFact):
                self._complaints[f.id] = f
            elif isinstance(f, HandlingFact):
                for cid in f.handling.complaints:
                    self._handlings.setdefault(cid, []).append(f)
            return
        if not isinstance(p, Mark | Correction):
            return
        f = fact_of(rec, self.consortium)  # None: the view gives it no effect, nor does a figure
        if isinstance(f, MarkFact):
            self._marks[rec.id] = rec.issuer
        elif isinstance(f, CorrectionFact):
            self._corrections.append(f)

    def add_all(self, records: Iterable[Record]) -> Tally:
        for r in records:
            self.add(r)
        return self

    def counted_vector(self) -> dict[str, int]:
        """The vector the figures are at: the one given, else the highest seq
        added per issuer. Raises BadInput when a given vector names more than
        was added (the set would not be the one the vector names)."""
        if self.vector is None:
            return dict(sorted(self._heads.items()))
        short = {i: (s, self._heads.get(i, 0)) for i, s in self.vector.items()
                 if s > self._heads.get(i, 0)}
        if short:
            i, (want, have) = min(short.items())
            raise BadInput(f"the records reach {i}'s seq {have}, not {want}: the figures "
                           "would not be those of the vector asked")
        return {i: s for i, s in sorted(self.vector.items()) if s > 0}

    def _appeals(self) -> dict[bytes, tuple[CorrectionFact, str, CorrectionFact | None]]:
        """Each appeal -> (itself, its status, what closed it), by the view's
        rule (ledger.view.facts `appealed`, `appeal_closing`)."""
        appeals = {f.id: f for f in self._corrections
                   if appealed(f.issuer, f.correction, self._marks.get)}
        decisions: dict[bytes, list[CorrectionFact]] = {}
        others: dict[bytes, list[CorrectionFact]] = {}
        for f in self._corrections:
            into = decisions if f.correction.is_decision else others
            for t in f.names():
                if t in appeals:
                    into.setdefault(t, []).append(f)
        return {aid: (a, *appeal_closing(a, decisions.get(aid, ()), others.get(aid, ())))
                for aid, a in appeals.items()}

    def figures(self) -> dict[str, Any]:
        """{"vector", "records", "participants": {id: figures}, "carriers": {id:
        figures} (the module doc), "appeals": {"filed", "pending", "upheld",
        "rejected", "withdrawn"}}."""
        vector = self.counted_vector()
        appeals = self._appeals()
        decided = {aid: d for aid, (_, status, d) in appeals.items()
                   if status in (UPHELD, REJECTED) and d is not None}
        ids = [p.id for p in self.consortium.witnesses]
        issued = dict.fromkeys(ids, 0)
        for issuer in self._marks.values():
            issued[issuer] = issued.get(issuer, 0) + 1
        marks_appealed: dict[str, set[bytes]] = {i: set() for i in issued}
        overturned: dict[str, set[bytes]] = {i: set() for i in issued}
        against: dict[str, list[bytes]] = {i: [] for i in issued}
        for aid, (a, status, _) in appeals.items():
            whose: set[str] = set()
            for t in appealed(a.issuer, a.correction, self._marks.get):
                owner = self._marks[t]
                whose.add(owner)
                marks_appealed[owner].add(t)
                if status == UPHELD:
                    overturned[owner].add(t)
            for owner in whose:
                against[owner].append(aid)
        out: dict[str, Any] = {}
        for pid in sorted(issued):
            aids = against[pid]
            waits = [decided[a].issued_at - appeals[a][0].issued_at for a in aids if a in decided]
            n = issued[pid]
            out[pid] = {
                "marks_issued": n,
                "marks_appealed": len(marks_appealed[pid]),
                "appeals_against": len(aids),
                "appeals_upheld": sum(1 for a in aids if appeals[a][1] == UPHELD),
                "appeals_rejected": sum(1 for a in aids if appeals[a][1] == REJECTED),
                "marks_overturned": len(overturned[pid]),
                "overturn_rate": round(len(overturned[pid]) / n, 6) if n else None,
                "decision_ms": {"count": len(waits), "median": nearest_rank(waits, 50),
                                "p90": nearest_rank(waits, 90)},
            }
        count = {st: sum(1 for _, s, _ in appeals.values() if s == st)
                 for st in (PENDING, UPHELD, REJECTED, APPEAL_WITHDRAWN)}
        return {
            "vector": vector,
            "records": len(self._seen),
            "participants": out,
            "carriers": self._carriers(),
            "appeals": {
                "filed": len(appeals),
                "pending": count[PENDING],
                "upheld": count[UPHELD],
                "rejected": count[REJECTED],
                "withdrawn": count[APPEAL_WITHDRAWN],
            },
        }


    def _carriers(self) -> dict[str, Any]:
        """The per-carrier figures of the module doc."""
        p = self.consortium.policy
        carriers = sorted(x.id for x in self.consortium.participants if x.role == "carrier")
        zero = ("received", "forwarded", "acknowledged_in_sla", "closed", "closed_in_sla",
                "open")
        out: dict[str, dict[str, Any]] = {c: dict.fromkeys(zero, 0) for c in carriers}
        waits: dict[str, list[int]] = {c: [] for c in carriers}

        def bump(carrier: str, key: str) -> None:
            if carrier in out:
                out[carrier][key] += 1

        for cid, c in self._complaints.items():
            st = status_of(c, self._handlings.get(cid, ()), p.complaint_ack_ms,
                           p.complaint_close_ms)
            for carrier in {st.addressed_to, *(f.to for f in st.forwards)}:
                bump(carrier, "received")
            for carrier in {f.by for f in st.forwards}:
                bump(carrier, "forwarded")
            if st.acknowledged_in_time:
                bump(st.addressed_to, "acknowledged_in_sla")
            if st.closer is not None and st.closed_at is not None:
                bump(st.closer.issuer, "closed")
                if st.closed_in_time:
                    bump(st.closer.issuer, "closed_in_sla")
                if st.closer.issuer in waits:
                    waits[st.closer.issuer].append(st.closed_at - c.issued_at)
            else:
                bump(st.addressee, "open")
        for c, w in waits.items():
            out[c]["handling_ms"] = {"count": len(w), "median": nearest_rank(w, 50),
                                     "p90": nearest_rank(w, 90)}
        return out


def accountability(
    records: Iterable[Record], cons: Consortium, vector: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The figures (module doc) of `records`, at `vector` if given."""
    return Tally(cons, vector).add_all(records).figures()
