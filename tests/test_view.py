"""ledger/view/: resolution rules as multi-party scenarios, order independence,
incremental updates, entry bytes, the sparse-tree root, lookup proofs, view checkpoints."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys.consortium import Consortium, Participant, Policy
from keys.signing import SigningKey
from ledger import merkle, note, viewtree
from ledger.errors import BadInput, BadSignature, MalformedNote, MalformedProof, ProofMismatch
from ledger.record import (
    RECATEGORIZE,
    REJECT,
    UPHOLD,
    WITHDRAW,
    Correction,
    Mark,
    Reassignment,
    Record,
)
from ledger.view import (
    CategoryInfo,
    Entry,
    EntryMark,
    NationalView,
    Rules,
    SetAsideSpan,
    ViewCheckpoint,
    ViewProof,
    entry_hash,
    open_view_checkpoint,
    parse_view_checkpoint,
    rebuild_from_ledger,
    resolve,
    sign_view_checkpoint,
    tree_root,
    verify_lookup,
    view_checkpoint_text,
    view_key,
    view_origin,
)

T = 1_700_000_000_000
D = 86_400_000
P = 90 * D                    # the default protection period
E = 180 * D                   # the default expiry

IDS = ("institute", "carrier-1", "carrier-2", "internet-1", "internet-2")
ROLES = {"institute": "institute", "carrier-1": "carrier", "carrier-2": "carrier",
         "internet-1": "internet", "internet-2": "internet"}
WEIGHTS = {"institute": 5, "carrier": 2, "internet": 1}
KEYS = {pid: SigningKey.from_seed(hashlib.sha256(b"markex-view-test/" + pid.encode()).digest())
        for pid in IDS}

N1 = "+8613812340001"         # carrier-1's range
N2 = "+8613812340002"
N3 = "+8613912340003"         # carrier-2's range
N4 = "+8613912340004"


def consortium(**policy: Any) -> Consortium:
    return Consortium(
        name="markex-test",
        participants=tuple(
            Participant(pid, ROLES[pid], KEYS[pid].public_bytes, WEIGHTS[ROLES[pid]], "", "")
            for pid in IDS
        ),
        number_ranges={"carrier-1": ("+86138",), "carrier-2": ("+86139",)},
        policy=Policy(**{"view_bucket_bits": 3, **policy}),
    )


CONS = consortium()


@dataclass
class Book:
    """Signed records of a scenario, by label, each feed properly chained."""

    records: list[Record] = field(default_factory=list)
    by_label: dict[str, Record] = field(default_factory=dict)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def add(self, label: str, issuer: str, at: int, payload: Any) -> Record:
        seq, prev = self.heads.get(issuer, (0, b""))
        rec = Record.issue(KEYS[issuer], issuer, seq + 1, prev, at, payload, consortium=CONS.name)
        self.heads[issuer] = (seq + 1, rec.id)
        self.records.append(rec)
        self.by_label[label] = rec
        return rec

    def id(self, label: str) -> bytes:
        return self.by_label[label].id

    def label(self, rid: bytes) -> str:
        return next(k for k, r in self.by_label.items() if r.id == rid)

    def mark(self, label: str, issuer: str, number: str, category: str, at: int, *,
             score: int = 60, reports: int = 0, observed: int | None = None,
             expires: int = 0) -> Record:
        m = Mark(number, category, score, reports, at if observed is None else observed, expires)
        return self.add(label, issuer, at, m)

    def withdraw(self, label: str, issuer: str, targets: list[str], at: int) -> Record:
        c = Correction(tuple(self.id(t) for t in targets), WITHDRAW, reason="wrong")
        return self.add(label, issuer, at, c)

    def recat(self, label: str, issuer: str, targets: list[str], cat: str, at: int) -> Record:
        c = Correction(tuple(self.id(t) for t in targets), RECATEGORIZE, cat)
        return self.add(label, issuer, at, c)

    appeal = withdraw           # a withdrawal of someone else's mark is an appeal

    def decide(self, label: str, appeal: str, outcome: str, at: int,
               issuer: str = "institute") -> Record:
        c = Correction(appeal_id=self.id(appeal), outcome=outcome, reason="decided")
        return self.add(label, issuer, at, c)

    def reassign(self, label: str, issuer: str, number: str, effective: int, at: int) -> Record:
        return self.add(label, issuer, at, Reassignment(number, effective))


Check = tuple[str, int, dict[str, Any]]


def expect(view: NationalView, book: Book, number: str, at: int, want: dict[str, Any]) -> None:
    res = view.lookup(number, at)
    assert res is not None, f"no entry for {number}"
    got: dict[str, Any] = {
        "category": res.category,
        "risk": res.risk,
        "score": res.score,
        "markers": {book.label(m.record_id) for m in res.markers},
        "aside": {book.label(s.record_id): s.reason for s in res.set_aside},
        "appeal": res.appeal,
        "appeals": {book.label(a.appeal_id): a.status for a in res.appeals},
        "tenure": res.tenure_since,
        "recategorized": {book.label(m.record_id) for m in res.markers if m.recategorized},
    }
    for k, v in want.items():
        assert got[k] == v, f"{number} at T{(at - T) / D:+g}d: {k} is {got[k]!r}, want {v!r}"


# ====================================================================== scenarios


def s_conflict() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("c1", "carrier-1", N1, "fraud", T, score=80)
    b.mark("i1", "internet-1", N1, "delivery", T, score=90, reports=500)
    b.mark("c1h", "carrier-1", N3, "harassment", T, score=70)
    b.mark("i1f", "internet-1", N3, "fraud", T, score=90)
    return b, [
        (N1, T + D, {"category": "fraud", "risk": "medium", "score": 80,
                     "markers": {"c1", "i1"}, "aside": {}, "appeal": "none"}),
        # two participants with risk marks: high; harassment has the larger weight
        (N3, T + D, {"category": "harassment", "risk": "high", "score": 70,
                     "markers": {"c1h", "i1f"}}),
    ]


def s_institute() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("f", "institute", N1, "fraud", T, score=95)
    b.mark("m", "internet-1", N1, "marketing", T, score=40)
    return b, [
        (N1, T - 1, {"category": None, "risk": "none", "markers": set()}),   # not observed yet
        (N1, T, {"category": "fraud", "risk": "high", "score": 95, "markers": {"f", "m"}}),
    ]


def s_self_withdraw() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("c1", "carrier-1", N1, "fraud", T)
    b.withdraw("w", "carrier-1", ["c1"], T + 2 * D)
    return b, [
        (N1, T + D, {"category": "fraud", "risk": "medium", "markers": {"c1"}}),
        (N1, T + 2 * D, {"category": None, "risk": "none", "score": 0, "markers": set(),
                         "aside": {"c1": "withdrawn"}, "appeal": "none"}),
    ]


def s_self_recategorize() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("c1", "carrier-1", N1, "fraud", T)
    b.recat("r", "carrier-1", ["c1"], "marketing", T + 2 * D)
    return b, [
        (N1, T + D, {"category": "fraud", "recategorized": set()}),
        (N1, T + 3 * D, {"category": "marketing", "risk": "medium", "markers": {"c1"},
                         "recategorized": {"c1"}, "aside": {}}),
    ]


def s_mixed_correction() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("c1", "carrier-1", N1, "fraud", T)
    b.mark("i1", "internet-1", N1, "harassment", T)
    # one correction of its own mark and another's: own withdrawn at once, the other appealed
    b.withdraw("mix", "carrier-1", ["c1", "i1"], T + D)
    return b, [
        (N1, T + 2 * D, {"category": "harassment", "markers": {"i1"},
                         "aside": {"c1": "withdrawn"}, "appeals": {"mix": "pending"}}),
    ]


def s_superseded() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("a", "carrier-1", N1, "fraud", T, score=90)
    b.mark("b", "carrier-1", N1, "marketing", T + D, score=50)
    b.withdraw("w", "carrier-1", ["b"], T + 3 * D)
    return b, [
        (N1, T + 2 * D, {"category": "marketing", "score": 50, "markers": {"b"},
                         "aside": {"a": "superseded"}}),
        # the latest live mark counts: with "b" withdrawn, "a" counts again
        (N1, T + 4 * D, {"category": "fraud", "markers": {"a"}, "aside": {"b": "withdrawn"}}),
    ]


def s_appeal_upheld() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("fake", "a", REJECT, T + D, issuer="carrier-2")    # only the institute decides
    b.decide("d", "a", UPHOLD, T + 3 * D)
    return b, [
        (N1, T + D // 2, {"appeal": "none", "appeals": {}}),
        (N1, T + 2 * D, {"category": "fraud", "risk": "medium", "markers": {"i1"},
                         "appeal": "pending", "appeals": {"a": "pending"}}),
        (N1, T + 3 * D, {"category": None, "risk": "none", "markers": set(),
                         "aside": {"i1": "appeal upheld"}, "appeal": "upheld"}),
    ]


def s_appeal_rejected() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("d", "a", REJECT, T + 3 * D)
    b.decide("again", "a", UPHOLD, T + 4 * D)       # a decision is final: ignored
    # the institute decides appeals against its own marks too
    b.mark("f", "institute", N3, "fraud", T)
    b.appeal("a3", "carrier-2", ["f"], T + D)
    b.decide("d3", "a3", REJECT, T + 2 * D)
    return b, [
        (N1, T + 5 * D, {"category": "fraud", "risk": "medium", "markers": {"i1"},
                         "aside": {}, "appeal": "rejected", "appeals": {"a": "rejected"}}),
        (N3, T + 4 * D, {"category": "fraud", "risk": "high", "appeal": "rejected"}),
    ]


def s_second_appeal() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a1", "carrier-1", ["i1"], T + D)
    b.decide("d1", "a1", REJECT, T + 2 * D)
    b.appeal("a2", "carrier-2", ["i1"], T + 3 * D)
    b.decide("d2", "a2", UPHOLD, T + 5 * D)
    return b, [
        (N1, T + 4 * D, {"category": "fraud", "markers": {"i1"}, "appeal": "pending",
                         "appeals": {"a1": "rejected", "a2": "pending"}}),
        (N1, T + 6 * D, {"category": None, "aside": {"i1": "appeal upheld"},
                         "appeal": "upheld", "appeals": {"a1": "rejected", "a2": "upheld"}}),
    ]


def s_appeal_withdrawn() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.withdraw("pull", "carrier-1", ["a"], T + 2 * D)   # never decided: withdrawn
    b.mark("i3", "internet-1", N3, "fraud", T)
    b.appeal("a3", "carrier-2", ["i3"], T + D)
    b.decide("d3", "a3", UPHOLD, T + 2 * D)
    b.withdraw("pull3", "carrier-2", ["a3"], T + 3 * D)   # too late: already decided
    b.withdraw("other", "carrier-1", ["a3"], T + D)       # not the appellant's: ignored
    return b, [
        (N1, T + 2 * D - 1, {"category": "fraud", "appeal": "pending"}),
        (N1, T + 4 * D, {"category": "fraud", "markers": {"i1"}, "appeal": "withdrawn"}),
        (N3, T + 4 * D, {"category": None, "aside": {"i3": "appeal upheld"},
                         "appeal": "upheld"}),
    ]


def s_backdated_withdrawal() -> tuple[Book, list[Check]]:
    """A withdrawal dated before the decision does not undo it: once a decision
    is in the set, the appellant's withdrawal has no effect (main let it win)."""
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("d", "a", UPHOLD, T + 3 * D)
    b.withdraw("pull", "carrier-1", ["a"], T + 2 * D)   # issued after "d", dated before it
    # the same on a rejected appeal: the appellant cannot turn "rejected" into "withdrawn"
    b.mark("c3", "carrier-2", N3, "fraud", T)
    b.appeal("a3", "internet-1", ["c3"], T + D)
    b.decide("d3", "a3", REJECT, T + 3 * D)
    b.withdraw("pull3", "internet-1", ["a3"], T + 2 * D)
    return b, [
        (N1, T + 2 * D, {"category": "fraud", "appeal": "pending", "appeals": {"a": "pending"}}),
        (N1, T + 4 * D, {"category": None, "markers": set(), "aside": {"i1": "appeal upheld"},
                         "appeal": "upheld", "appeals": {"a": "upheld"}}),
        (N3, T + 4 * D, {"category": "fraud", "markers": {"c3"}, "appeal": "rejected"}),
    ]


def s_protection() -> tuple[Book, list[Check]]:
    b = Book()
    dec = T + 2 * D
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("d", "a", UPHOLD, dec)
    b.mark("c2", "carrier-2", N1, "fraud", dec + D)              # same category: protected
    b.mark("i2", "internet-2", N1, "harassment", dec + D)        # another category counts
    b.mark("i1b", "internet-1", N1, "fraud", dec + P + D)         # after the period: counts
    return b, [
        (N1, dec + 2 * D, {"category": "harassment", "risk": "medium", "markers": {"i2"},
                           "aside": {"i1": "appeal upheld", "c2": "protected"}}),
        (N1, dec + P + 2 * D, {"category": "fraud", "risk": "high", "markers": {"i2", "i1b"},
                               "aside": {"i1": "appeal upheld", "c2": "protected"}}),
    ]


def s_backdated_under_protection() -> tuple[Book, list[Check]]:
    """Marks of the protected category issued after the decision but dated just
    before it are protected too (main let them escape: its window started at
    the decision)."""
    b = Book()
    dec = T + 2 * D
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("d", "a", UPHOLD, dec)
    b.mark("early", "carrier-2", N1, "fraud", dec - 1)                    # issued and observed
    b.mark("seen", "internet-2", N1, "fraud", dec + D, observed=dec - 1)  # observed only
    b.mark("other", "carrier-1", N1, "harassment", dec - 1)              # another category
    return b, [
        # before the decision, what was known then still counts
        (N1, dec - 1, {"category": "fraud", "markers": {"i1", "early", "seen", "other"}}),
        (N1, dec, {"category": "harassment", "markers": {"other"}, "aside": {
            "i1": "appeal upheld", "early": "protected", "seen": "protected"}}),
        (N1, dec + P + D, {"category": "harassment", "markers": {"other"}, "aside": {
            "i1": "appeal upheld", "early": "protected", "seen": "protected"}}),
    ]


def s_own_appeal_decided() -> tuple[Book, list[Check]]:
    """The institute appeals another's mark and decides its own appeal: the
    decision is ignored and the appeal stays pending (main upheld it)."""
    b = Book()
    b.mark("c1", "carrier-1", N1, "fraud", T)
    b.appeal("a", "institute", ["c1"], T + D)
    b.decide("d", "a", UPHOLD, T + 2 * D)
    return b, [
        (N1, T + 3 * D, {"category": "fraud", "markers": {"c1"}, "aside": {},
                         "appeal": "pending", "appeals": {"a": "pending"}}),
    ]


def s_mark_dated_into_new_tenure() -> tuple[Book, list[Check]]:
    """A mark issued before a reassignment but claiming an observation just after
    it is ignored (observed_at after issued_at), so it never counts in the new
    tenure (main counted it there)."""
    b = Book()
    x = T + 10 * D
    b.mark("old", "internet-1", N1, "fraud", T)
    b.mark("carried", "internet-2", N1, "fraud", x - D, observed=x + 1)
    b.mark("honest", "carrier-2", N1, "marketing", x - D)
    b.reassign("x", "carrier-1", N1, x, x)
    b.mark("new", "carrier-2", N1, "delivery", x + D)
    return b, [
        (N1, x - 1, {"markers": {"old", "honest"}, "aside": {}}),
        (N1, x + 2, {"category": None, "markers": set(), "tenure": x,
                     "aside": {"old": "reassigned", "honest": "reassigned"}}),
        (N1, x + 2 * D, {"category": "delivery", "markers": {"new"}, "tenure": x}),
    ]


def s_out_of_time_bounds() -> tuple[Book, list[Check]]:
    """Reassignments dated beyond the policy's window (or in the future) and marks
    expiring beyond max_expiry_ms are ignored (main applied them)."""
    b = Book()
    b.mark("m", "internet-1", N1, "fraud", T)
    b.reassign("far-back", "carrier-1", N1, T + D, T + 100 * D)      # 99 days back > 30
    b.reassign("future", "carrier-1", N1, T + 150 * D, T + 101 * D)  # 49 days ahead
    b.reassign("ok", "carrier-1", N1, T + 160 * D, T + 170 * D)      # 10 days back
    b.mark("long", "carrier-2", N3, "fraud", T, expires=T + 400 * D)   # > 365 days
    b.mark("year", "internet-2", N3, "marketing", T, expires=T + 365 * D)
    return b, [
        (N1, T + 120 * D, {"category": "fraud", "markers": {"m"}, "tenure": None}),
        (N1, T + 155 * D, {"category": "fraud", "markers": {"m"}, "tenure": None}),
        (N1, T + 165 * D, {"category": None, "aside": {"m": "reassigned"},
                           "tenure": T + 160 * D}),
        (N3, T + D, {"category": "marketing", "markers": {"year"}, "aside": {}}),
    ]


def s_reassignment() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("old", "internet-1", N1, "fraud", T)
    b.reassign("x1", "carrier-1", N1, T + 10 * D, T + 11 * D)
    b.mark("new", "carrier-2", N1, "harassment", T + 20 * D)
    b.reassign("x2", "carrier-1", N1, T + 30 * D, T + 30 * D)
    b.reassign("bogus", "carrier-2", N1, T + 5 * D, T + 5 * D)   # not the holder: ignored
    b.reassign("x3", "carrier-2", N3, T + 10 * D, T + 10 * D)    # alone: an entry anyway
    return b, [
        (N1, T + 5 * D, {"category": "fraud", "markers": {"old"}, "tenure": None}),
        (N1, T + 15 * D, {"category": None, "markers": set(), "aside": {"old": "reassigned"},
                          "tenure": T + 10 * D}),
        (N1, T + 25 * D, {"category": "harassment", "markers": {"new"},
                          "aside": {"old": "reassigned"}}),
        (N1, T + 35 * D, {"category": None, "tenure": T + 30 * D,
                          "aside": {"old": "reassigned", "new": "reassigned"}}),
        (N3, T + 11 * D, {"category": None, "markers": set(), "tenure": T + 10 * D}),
    ]


def s_expiry() -> tuple[Book, list[Check]]:
    b = Book()
    b.mark("short", "carrier-1", N1, "fraud", T, expires=T + 3 * D)
    b.mark("default", "internet-1", N1, "marketing", T)
    return b, [
        (N1, T + 3 * D - 1, {"category": "fraud", "markers": {"short", "default"}}),
        (N1, T + 3 * D, {"category": "marketing", "markers": {"default"},
                         "aside": {"short": "expired"}}),
        (N1, T + E - 1, {"markers": {"default"}}),
        (N1, T + E, {"category": None, "markers": set(),
                     "aside": {"short": "expired", "default": "expired"}}),
    ]


def s_identity_vs_risk() -> tuple[Book, list[Check]]:
    b = Book()
    # many users' delivery labels from both internet firms vs the institute's fraud mark
    b.mark("f", "institute", N1, "fraud", T, score=90)
    b.mark("d1", "internet-1", N1, "delivery", T, score=100, reports=100_000)
    b.mark("d2", "internet-2", N1, "delivery", T, score=100, reports=50_000)
    # one app's fraud mark vs two carriers' delivery labels
    b.mark("x", "internet-1", N2, "fraud", T, score=90)
    b.mark("c1", "carrier-1", N2, "delivery", T, score=70)
    b.mark("c2", "carrier-2", N2, "delivery", T, score=80)
    # two apps' delivery (weight 2) does not exceed one carrier's fraud (weight 2)
    b.mark("k", "carrier-1", N3, "fraud", T, score=60)
    b.mark("e1", "internet-1", N3, "taxi", T)
    b.mark("e2", "internet-2", N3, "taxi", T)
    # a label with one confirmation but nothing risky against it
    b.mark("t", "carrier-2", N4, "customer-service", T, score=30)
    return b, [
        (N1, T + D, {"category": "fraud", "risk": "high", "score": 90}),
        (N2, T + D, {"category": "delivery", "risk": "medium", "score": 75}),
        (N3, T + D, {"category": "fraud", "risk": "medium"}),
        (N4, T + D, {"category": "customer-service", "risk": "none", "score": 30}),
    ]


SCENARIOS: dict[str, Callable[[], tuple[Book, list[Check]]]] = {
    "conflicting carrier and internet firm": s_conflict,
    "institute mark": s_institute,
    "self-withdrawal": s_self_withdraw,
    "self-recategorize": s_self_recategorize,
    "superseded by own later mark": s_superseded,
    "correction of own and another's mark": s_mixed_correction,
    "appeal upheld": s_appeal_upheld,
    "appeal rejected": s_appeal_rejected,
    "second appeal on one mark": s_second_appeal,
    "appeal withdrawn": s_appeal_withdrawn,
    "backdated withdrawal after a decision": s_backdated_withdrawal,
    "protection after upheld appeal": s_protection,
    "reassignment before and after marks": s_reassignment,
    "mark backdated before a decision is protected": s_backdated_under_protection,
    "institute deciding its own appeal": s_own_appeal_decided,
    "observed_at just after a reassignment": s_mark_dated_into_new_tenure,
    "reassignment and expiry out of time bounds": s_out_of_time_bounds,
    "expiry at an explicit time": s_expiry,
    "identity labels vs risk": s_identity_vs_risk,
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name: str) -> None:
    book, checks = SCENARIOS[name]()
    view = resolve(book.records, CONS)
    for number, at, want in checks:
        expect(view, book, number, at, want)
    # delivered backwards, one record at a time: the same view
    backwards = NationalView(CONS)
    for rec in reversed(book.records):
        backwards.apply([rec])
    assert backwards.root() == view.root()
    assert {n: e.encode() for n, e in backwards.entries.items()} == {
        n: e.encode() for n, e in view.entries.items()
    }
    for number, at, want in checks:
        expect(backwards, book, number, at, want)


def _generic_bytes(e: Entry) -> bytes:
    """What json.dumps(sort_keys, compact, ASCII) makes of the entry's to_json()."""
    return json.dumps(e.to_json(), sort_keys=True, separators=(",", ":")).encode("ascii")


@pytest.mark.parametrize("name", SCENARIOS)
def test_entry_bytes_are_the_sorted_json_of_to_json(name: str) -> None:
    """Entry.encode writes its JSON directly (for speed); every scenario's entries
    (appeals, protections, recategorizations, reassignments) must give exactly
    json.dumps of to_json(), and decode back."""
    book, _ = SCENARIOS[name]()
    view = resolve(book.records, CONS)
    assert view.entries
    for e in view.entries.values():
        assert e.encode() == _generic_bytes(e)
        assert Entry.decode(e.encode()) == e


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=6),
    n=st.integers(min_value=0, max_value=2**70),
    closed=st.none() | st.integers(min_value=0, max_value=2**63),
    flag=st.booleans(),
)
def test_entry_bytes_escape_and_numbers_like_json(
    text: str, n: int, closed: int | None, flag: bool
) -> None:
    """Any string (escapes, non-ASCII), big integers, null and booleans are
    written as the sorted JSON encoder writes them."""
    from ledger.view import Appeal, EntryReassignment, Protection, Recategorization

    rid = hashlib.sha256(text.encode()).digest()
    mark = EntryMark(
        rid, text, text, n, text, n, n, n, n, n, n,
        (Recategorization(n, text, rid),), (SetAsideSpan(n, text, rid),),
    )
    e = Entry(
        number=text,
        rules=Rules(n, n, flag),
        categories=(CategoryInfo(text, n, flag), CategoryInfo("b", 0, not flag)),
        marks=(mark, mark),
        appeals=(Appeal(rid, text, (rid, rid), text, text, n, text, closed, rid),),
        reassignments=(EntryReassignment(rid, text, n),),
        protections=(Protection(text, n, n, rid),),
    )
    assert e.encode() == _generic_bytes(e)



def test_entry_bytes_of_equal_values_of_other_types_like_json() -> None:
    """The fast paths of Entry.encode (a mark's fields in one %-format, the rules'
    text kept per Rules object) write a bool or float where an int is expected
    as the JSON encoder does, and Rules(1, ..) (equal to Rules(True, ..)) apart."""
    rid = hashlib.sha256(b"x").digest()

    def entry(rules: Rules, v: object) -> Entry:
        mark = EntryMark(rid, "p", "carrier", v, "c", v, v, v, v, v, v)  # type: ignore[arg-type]
        return Entry(number="+1", rules=rules, categories=(CategoryInfo("c", 1, True),),
                     marks=(mark,))

    for rules, v in [(Rules(2, 1, True), 1), (Rules(2, 1, 1), True), (Rules(2, 1, True), 1.0),
                     (Rules(2, 1, 1.0), False), (Rules(2, 1, True), 7)]:  # type: ignore[arg-type]
        e = entry(rules, v)
        assert e.encode() == _generic_bytes(e)



def test_built_entries_carry_every_field_as_their_decoded_bytes_do() -> None:
    """The builder fills an Entry's and its EntryMarks' fields in one update (not
    through the frozen dataclasses' __init__): each has every declared field and
    equals (and hashes as) what decoding its bytes makes through __init__."""
    for e in RICH_VIEW.entries.values():
        again = Entry.decode(e.encode())
        assert again == e and hash(again) == hash(e)
        assert {f.name for f in fields(Entry)} <= set(vars(e))
        for m in e.marks:
            assert {f.name for f in fields(EntryMark)} <= set(vars(m))


def test_ignored_records_move_the_vector_only() -> None:
    book, _ = s_reassignment()
    view = resolve(book.records, CONS)
    assert view.ignored == 1                     # carrier-2's reassignment of N1
    assert view.vector == {"internet-1": 1, "carrier-1": 2, "carrier-2": 3}
    assert [r.carrier for r in view.entry(N1).reassignments] == ["carrier-1", "carrier-1"]


def test_every_registered_payload_type_says_how_it_enters_the_view() -> None:
    """The record -> fact step is one table keyed by the registry's classes: a
    payload type added to ledger.payloads must get an entry there (a builder,
    or None for one that changes no entry)."""
    from ledger.payloads import REGISTRY
    from ledger.view.facts import FACT_BUILDERS

    assert set(FACT_BUILDERS) == {t.cls for t in REGISTRY}


def test_a_payload_type_without_a_fact_builder_is_ignored(monkeypatch: Any) -> None:
    """What `fact_of` does with a payload is what FACT_BUILDERS says: mapped to
    None, a reassignment is ignored (it moves the vector, counts as ignored and
    changes no entry), in memory and in a store alike."""
    import tempfile

    from ledger.store import Store
    from ledger.view import facts

    book, _ = s_reassignment()
    monkeypatch.setitem(facts.FACT_BUILDERS, Reassignment, None)
    view = resolve(book.records, CONS)
    assert view.ignored == 4                     # all four reassignments
    assert view.vector == {"internet-1": 1, "carrier-1": 2, "carrier-2": 3}
    assert view.entry(N1) is not None and view.entry(N1).reassignments == ()
    assert view.entry(N3) is None                # its only record was a reassignment
    marks_only = resolve([r for r in book.records if isinstance(r.payload, Mark)], CONS)
    assert snapshot(view) == snapshot(marks_only)
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "db")
        try:
            stored = NationalView.open(store, CONS)
            stored.apply(book.records)
            assert (stored.ignored, stored.root()) == (4, view.root())
        finally:
            store.close()


def test_memory_and_store_run_the_one_apply_over_their_state(monkeypatch: Any) -> None:
    """NationalView.apply is ledger.view.update.apply_records over the view's
    state, whether it lives in memory or in a store; both states implement the
    ViewState interface, and give the same entries and root."""
    import tempfile

    from ledger.store import Store
    from ledger.view import national, state, stored, update

    seen: list[type] = []
    real = update.apply_records

    def spy(st: Any, records: Any, builder: Any, bits: int) -> set[str]:
        seen.append(type(st))
        return real(st, records, builder, bits)

    monkeypatch.setattr(national, "apply_records", spy)
    methods = {n for n, v in vars(state.ViewState).items() if callable(v) and n[0] != "_"}
    assert {"begin", "held", "put_entry", "commit", "referrers"} <= methods
    for cls in (state.MemoryState, stored.StoredState):
        assert {n for n in methods if not callable(getattr(cls, n, None))} == set(), cls
    memory = resolve(RICH.records, CONS)
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "db")
        try:
            on_disk = NationalView.open(store, CONS)
            on_disk.apply(RICH.records)
            assert (on_disk.root(), on_disk.count) == (memory.root(), memory.count)
            assert {n: e.encode() for n, e in on_disk.entries.items()} == {
                n: e.encode() for n, e in memory.entries.items()
            }
        finally:
            store.close()
    assert seen == [state.MemoryState, stored.StoredState]


def test_institute_flag_off_needs_two_participants() -> None:
    book = Book()
    book.mark("f", "institute", N1, "fraud", T)
    view = resolve(book.records, consortium(institute_mark_is_high_risk=False))
    assert view.lookup(N1, T).risk == "medium"


def test_records_out_of_time_bounds_are_ignored() -> None:
    """Each record whose own times break ledger.rules is counted in `ignored`
    and appears in no entry (main applied them)."""
    book, _ = s_out_of_time_bounds()
    view = resolve(book.records, CONS)
    assert view.ignored == 3
    assert [r.id for r in view.entry(N1).reassignments] == [book.id("ok")]
    assert [m.id for m in view.entry(N3).marks] == [book.id("year")]
    book, _ = s_mark_dated_into_new_tenure()
    view = resolve(book.records, CONS)
    assert view.ignored == 1
    assert book.id("carried") not in {m.id for m in view.entry(N1).marks}


def test_only_the_latest_marks_appeals_and_recategorizations_are_kept() -> None:
    """With max_marks_per_participant = 2: a participant's third mark on a number
    drops its first for good (a withdrawal of a newer one does not bring it
    back), an appellant's third pending appeal drops its first, and a mark keeps
    its two latest recategorizations and the first to each category. Neither a
    marker's flood nor the appellant's later appeals push out a decided appeal,
    its marks or its protection. Main kept every mark, appeal and
    recategorization."""
    cons = consortium(max_marks_per_participant=2)
    b = Book()
    b.mark("m1", "carrier-1", N1, "fraud", T)
    b.mark("m2", "carrier-1", N1, "harassment", T + D)
    b.mark("m3", "carrier-1", N1, "marketing", T + 2 * D)
    b.mark("i", "internet-1", N1, "delivery", T)
    b.appeal("a1", "internet-1", ["m2"], T + D + 1)
    b.appeal("a2", "internet-1", ["m2"], T + D + 2)
    b.appeal("a3", "internet-1", ["m2"], T + D + 3)
    b.withdraw("w3", "carrier-1", ["m3"], T + 3 * D)
    b.withdraw("w2", "carrier-1", ["m2"], T + 4 * D)
    b.withdraw("w1", "carrier-1", ["m1"], T + 5 * D)     # of a dropped mark: no effect
    b.mark("x", "internet-2", N2, "fraud", T)
    b.appeal("ax", "carrier-1", ["x"], T + D)
    b.decide("dx", "ax", UPHOLD, T + 2 * D)
    for k in (2, 3, 4):                                  # the marker floods after losing
        b.mark(f"x{k}", "internet-2", N2, "fraud", T + (k + 1) * D)
    b.appeal("p1", "carrier-1", ["x3"], T + 6 * D)      # the appellant appeals on and on
    b.appeal("p2", "carrier-1", ["x4"], T + 6 * D + 1)
    b.mark("r", "carrier-2", N3, "fraud", T)
    for k in range(1, 7):
        b.recat(f"r{k}", "carrier-2", ["r"], ("harassment", "marketing")[k % 2], T + k * D)
    view = resolve(b.records, cons)
    e1 = view.entry(N1)
    assert {b.label(m.id) for m in e1.marks} == {"m2", "m3", "i"}
    assert {b.label(a.id) for a in e1.appeals} == {"a2", "a3"}
    assert b.id("m1").hex().encode() not in e1.encode()
    expect(view, b, N1, T + 2 * D, {"markers": {"m3", "i"}, "aside": {"m2": "superseded"},
                                    "appeals": {"a2": "pending", "a3": "pending"}})
    expect(view, b, N1, T + 3 * D, {"markers": {"m2", "i"}, "aside": {"m3": "withdrawn"}})
    expect(view, b, N1, T + 6 * D, {"markers": {"i"}, "category": "delivery",
                                    "aside": {"m2": "withdrawn", "m3": "withdrawn"}})
    assert {b.label(m.id) for m in view.entry(N2).marks} == {"x", "x3", "x4"}
    expect(view, b, N2, T + 7 * D, {
        "category": None, "markers": set(),
        "aside": {"x": "appeal upheld", "x3": "protected", "x4": "protected"},
        "appeals": {"ax": "upheld", "p1": "pending", "p2": "pending"}})
    (r,) = view.entry(N3).marks
    assert [b.label(x.ref) for x in r.recategorized] == ["r1", "r2", "r5", "r6"]
    expect(view, b, N3, T + D - 1, {"category": "fraud", "recategorized": set()})
    expect(view, b, N3, T + D, {"category": "marketing", "recategorized": {"r"}})
    expect(view, b, N3, T + 3 * D, {"category": "harassment"})      # r3 was dropped
    expect(view, b, N3, T + 6 * D, {"category": "harassment"})
    for order in (b.records, b.records[::-1]):          # the same whatever the order
        one_by_one = NationalView(cons)
        for rec in order:
            one_by_one.apply([rec])
        assert snapshot(one_by_one) == snapshot(view)


def test_a_backdated_recategorization_does_not_move_a_protection() -> None:
    """The protection covers the appealed mark's category as marked and every
    category it held up to the decision, so a recategorization its marker issues
    afterwards, dated before the decision, cannot steer the protection away
    from the category it marks next (main protected only the category at
    decision time)."""
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("d", "a", UPHOLD, T + 3 * D)
    b.recat("r", "internet-1", ["i1"], "marketing", T + 2 * D)   # issued after "d"
    b.mark("again", "internet-1", N1, "fraud", T + 4 * D)
    view = resolve(b.records, CONS)
    assert {p.category for p in view.entry(N1).protections} == {"fraud", "marketing"}
    expect(view, b, N1, T + 5 * D, {"category": None, "markers": set(),
                                    "aside": {"i1": "appeal upheld", "again": "protected"}})
    # nor can later recategorizations push an earlier one out of the protection
    cons = consortium(max_marks_per_participant=1)
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.recat("r", "internet-1", ["i1"], "marketing", T + D)
    b.appeal("a", "carrier-1", ["i1"], T + 2 * D)
    b.decide("d", "a", UPHOLD, T + 3 * D)
    b.recat("r2", "internet-1", ["i1"], "harassment", T + 4 * D)
    b.recat("r3", "internet-1", ["i1"], "harassment", T + 5 * D)
    b.mark("again", "internet-1", N1, "marketing", T + 6 * D)
    view = resolve(b.records, cons)
    assert {p.category for p in view.entry(N1).protections} == {"fraud", "marketing"}
    expect(view, b, N1, T + 7 * D, {"markers": set(), "aside": {
        "i1": "appeal upheld", "again": "protected"}})


def test_protection_ends_at_a_reassignment() -> None:
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("d", "a", UPHOLD, T + 2 * D)
    b.reassign("x", "carrier-1", N1, T + 5 * D, T + 5 * D)
    b.mark("before", "carrier-2", N1, "fraud", T + 4 * D)
    b.mark("after", "internet-2", N1, "fraud", T + 6 * D)
    view = resolve(b.records, CONS)
    (p,) = view.entry(N1).protections
    assert (p.category, p.since, p.until) == ("fraud", T + 2 * D, T + 5 * D)
    expect(view, b, N1, T + 4 * D, {"markers": set(), "aside": {
        "i1": "appeal upheld", "before": "protected"}})
    expect(view, b, N1, T + 7 * D, {"markers": {"after"}, "category": "fraud"})


# ====================================================================== waiting corrections


def test_correction_of_an_unseen_mark_waits_then_applies() -> None:
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.appeal("a", "carrier-1", ["i1"], T + D)
    b.decide("d", "a", UPHOLD, T + 2 * D)
    b.mark("c1", "carrier-1", N3, "harassment", T)
    b.recat("r", "carrier-1", ["c1"], "marketing", T + D)
    view = NationalView(CONS)
    assert view.apply([b.by_label["d"], b.by_label["r"]]) == set()
    assert view.count == 0
    assert set(view.waiting) == {b.id("a"), b.id("c1")}
    assert view.apply([b.by_label["a"]]) == set()
    assert set(view.waiting) == {b.id("i1"), b.id("c1")}
    assert view.apply([b.by_label["c1"]]) == {N3}
    expect(view, b, N3, T + 2 * D, {"category": "marketing", "recategorized": {"c1"}})
    assert view.apply([b.by_label["i1"]]) == {N1}
    assert view.waiting == {}
    expect(view, b, N1, T + 3 * D, {"category": None, "aside": {"i1": "appeal upheld"},
                                    "appeal": "upheld"})
    assert view.root() == resolve(b.records, CONS).root()
    assert view.apply(b.records) == set()        # nothing new: nothing changes


# ====================================================================== order independence


def rich_book() -> Book:
    """Every kind of record, on few numbers, so shuffles and splits interact."""
    b = Book()
    b.mark("m1", "carrier-1", N1, "fraud", T, score=80)
    b.mark("m2", "internet-1", N1, "delivery", T, score=90, reports=300)
    b.mark("m8", "internet-2", N4, "taxi", T, expires=T + 2 * D)  # feeds never go back in time
    b.mark("m3", "internet-2", N1, "delivery", T + D)
    b.mark("m4", "institute", N2, "harassment", T)
    b.appeal("a1", "carrier-2", ["m4", "m1"], T + D)
    b.mark("m9", "carrier-2", N4, "taxi", T + D)
    b.decide("d1", "a1", UPHOLD, T + 2 * D)
    b.mark("m5", "carrier-2", N2, "harassment", T + 3 * D)
    b.mark("m6", "carrier-1", N3, "one-ring", T)
    b.recat("r1", "carrier-1", ["m6"], "marketing", T + D)
    b.appeal("a2", "internet-1", ["m6"], T + 2 * D)
    b.decide("d2", "a2", REJECT, T + 3 * D)
    b.mark("m7", "carrier-1", N3, "fraud", T + 4 * D)
    b.withdraw("w1", "carrier-1", ["m7"], T + 5 * D)
    b.reassign("x1", "carrier-2", N3, T + 6 * D, T + 6 * D)
    b.appeal("a3", "internet-2", ["m9"], T + 2 * D)
    b.withdraw("w2", "internet-2", ["a3"], T + 3 * D)
    b.reassign("x2", "carrier-1", N2, T + 9 * D, T + 9 * D)
    return b


RICH = rich_book()
RICH_VIEW = resolve(RICH.records, CONS)


def snapshot(view: NationalView) -> tuple[bytes, dict[str, bytes]]:
    return view.root(), {n: e.encode() for n, e in view.entries.items()}


def test_rich_view_is_what_the_rules_say() -> None:
    v = RICH_VIEW
    assert v.count == 4
    expect(v, RICH, N1, T + 3 * D, {"category": "delivery", "aside": {"m1": "appeal upheld"}})
    expect(v, RICH, N2, T + 4 * D, {"markers": set(), "aside": {
        "m4": "appeal upheld", "m5": "protected"}})
    expect(v, RICH, N3, T + 4 * D, {"category": "fraud", "appeal": "rejected"})
    expect(v, RICH, N4, T + 4 * D, {"category": "taxi", "appeal": "withdrawn"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(len(RICH.records))))
def test_shuffled_delivery_gives_one_view(order: list[int]) -> None:
    view = resolve([RICH.records[i] for i in order], CONS)
    assert snapshot(view) == snapshot(RICH_VIEW)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(len(RICH.records))),
    cuts=st.lists(st.integers(0, len(RICH.records)), max_size=6),
    repeat=st.lists(st.integers(0, len(RICH.records) - 1), max_size=4),
)
def test_incremental_batches_equal_resolve(order: list[int], cuts: list[int],
                                           repeat: list[int]) -> None:
    recs = [RICH.records[i] for i in order] + [RICH.records[i] for i in repeat]
    bounds = sorted({0, len(recs), *cuts})
    view = NationalView(CONS)
    changed: set[str] = set()
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        changed |= view.apply(recs[lo:hi])
    assert snapshot(view) == snapshot(RICH_VIEW)
    assert changed == set(RICH_VIEW.entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_subset_any_order_any_split(data: st.DataObject) -> None:
    n = len(RICH.records)
    subset = data.draw(st.sets(st.integers(0, n - 1)))
    order = data.draw(st.permutations(sorted(subset)))
    cut = data.draw(st.integers(0, len(order)))
    whole = resolve([RICH.records[i] for i in sorted(subset)], CONS)
    parts = NationalView(CONS)
    parts.apply(RICH.records[i] for i in order[:cut])
    parts.apply(RICH.records[i] for i in order[cut:])
    assert snapshot(parts) == snapshot(whole)


CATS = ("fraud", "harassment", "marketing", "delivery", "taxi")
NUMBERS = (N1, N2, N3)


@st.composite
def generated_books(draw: st.DrawFn) -> Book:
    """Random scenarios: any record kind, by any participant, aimed at any earlier record."""
    b = Book()
    for k in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["mark", "mark", "mark", "correct", "decide", "reassign"]))
        at = T + draw(st.integers(0, 12)) * D
        label = f"r{k}"
        earlier = list(b.by_label)
        if kind == "mark" or not earlier:
            b.mark(label, draw(st.sampled_from(IDS)), draw(st.sampled_from(NUMBERS)),
                   draw(st.sampled_from(CATS)), at, score=draw(st.integers(0, 100)),
                   expires=draw(st.sampled_from([0, at + 3 * D])))
        elif kind == "correct":
            targets = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3,
                                    unique=True))
            issuer = draw(st.sampled_from(IDS))
            if draw(st.booleans()):
                b.withdraw(label, issuer, targets, at)
            else:
                b.recat(label, issuer, targets, draw(st.sampled_from(CATS)), at)
        elif kind == "decide":
            b.decide(label, draw(st.sampled_from(earlier)), draw(st.sampled_from([UPHOLD, REJECT])),
                     at)
        else:
            b.reassign(label, draw(st.sampled_from(["carrier-1", "carrier-2"])),
                       draw(st.sampled_from(NUMBERS)), at + draw(st.integers(-2, 2)) * D, at)
    return b


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book=generated_books(), data=st.data())
def test_generated_scenarios_are_consistent(book: Book, data: st.DataObject) -> None:
    view = resolve(book.records, CONS)
    order = data.draw(st.permutations(range(len(book.records))))
    assert snapshot(resolve([book.records[i] for i in order], CONS)) == snapshot(view)
    cut = data.draw(st.integers(0, len(order)))
    parts = NationalView(CONS)
    parts.apply([book.records[i] for i in order[:cut]])
    parts.apply([book.records[i] for i in order[cut:]])
    assert snapshot(parts) == snapshot(view)
    for entry in view.entries.values():
        assert Entry.decode(entry.encode()) == entry
        for at in (T - 1, T, T + 3 * D, T + 7 * D, T + 13 * D, T + 200 * D):
            res = entry.evaluate(at)
            counted = [m.record_id for m in res.markers]
            aside = [s.record_id for s in res.set_aside]
            visible = [m.id for m in entry.marks if m.observed_at <= at]
            assert sorted(counted + aside) == sorted(visible)        # each mark once
            assert len({m.participant for m in res.markers}) == len(res.markers)
            assert (res.category is None) == (not res.markers)
            assert 0 <= res.score <= 100
            assert res.risk in ("none", "medium", "high")
            assert (res.risk == "none") == (not any(
                CONS.categories[m.category].risk for m in res.markers))
            assert res.appeal in ("none", "pending", "upheld", "rejected", "withdrawn")


@st.composite
def crowded_books(draw: st.DrawFn) -> Book:
    """Few marks, many corrections, appeals, withdrawals and decisions aimed at
    the latest records, so the per-participant caps and forgotten referrers bite."""
    b = Book()
    for k in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["mark", "mark", "correct", "correct", "correct", "decide",
                                     "reassign"]))
        at = T + draw(st.integers(0, 12)) * D
        label = f"r{k}"
        recent = list(b.by_label)[-6:]
        if kind == "mark" or not recent:
            b.mark(label, draw(st.sampled_from(IDS[:3])), draw(st.sampled_from((N1, N3))),
                   draw(st.sampled_from(CATS)), at)
        elif kind == "correct":
            targets = draw(st.lists(st.sampled_from(recent), min_size=1, max_size=2,
                                    unique=True))
            issuer = draw(st.sampled_from(IDS[:3]))
            if draw(st.booleans()):
                b.withdraw(label, issuer, targets, at)
            else:
                b.recat(label, issuer, targets, draw(st.sampled_from(CATS)), at)
        elif kind == "decide":
            b.decide(label, draw(st.sampled_from(recent)),
                     draw(st.sampled_from([UPHOLD, REJECT])), at)
        else:
            b.reassign(label, "carrier-1", N1, at - draw(st.integers(0, 2)) * D, at)
    return b


CAPPED = consortium(max_marks_per_participant=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book=crowded_books(), data=st.data())
def test_capped_views_are_one_view_and_forgetting_changes_no_entry(
    book: Book, data: st.DataObject
) -> None:
    """Under a cap of one, shuffled, split and one-by-one deliveries give one view,
    and that view equals one computed without forgetting any referrer."""
    from unittest import mock

    view = resolve(book.records, CAPPED)
    order = data.draw(st.permutations(range(len(book.records))))
    one_by_one = NationalView(CAPPED)
    for i in order:
        one_by_one.apply([book.records[i]])
    assert snapshot(one_by_one) == snapshot(view)
    with mock.patch("ledger.view.facts.kept_referrers",
                    lambda kind, issuer, refs, keep: {r.id for r in refs}):
        remembering = resolve([book.records[i] for i in order], CAPPED)
    assert snapshot(remembering) == snapshot(view)


# ====================================================================== entry bytes


def test_entry_round_trips_and_is_canonical() -> None:
    for entry in RICH_VIEW.entries.values():
        raw = entry.encode()
        assert Entry.decode(raw) == entry
        assert Entry.decode(raw).encode() == raw
        assert entry.hash == merkle.leaf_hash(raw) == entry_hash(raw)
        obj = json.loads(raw)
        for bad in (
            json.dumps(obj).encode(),                                    # not compact
            json.dumps(obj, separators=(",", ":")).encode()[:-1],        # cut off
            raw.replace(b'"v":3', b'"v":3.0'),                           # a float
            raw.replace(b'"v":3', b'"v":true'),
            raw.replace(b'"v":3', b'"v":1'),           # version 1 carried free text
            raw.replace(b'"v":3', b'"v":2'),           # version 2 had no complaints
            raw[:-1] + b',"x":1}',                                       # unknown key
            raw + b" ",
            b"\xff" + raw,
        ):
            with pytest.raises(BadInput):
                Entry.decode(bad)


def test_entry_bytes_carry_no_free_text() -> None:
    """An appeal's and a decision's reasons are free text: the public entry and
    its evaluation name the records instead, so a member fetches the text from
    the record (main copied both reasons into the entry)."""
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", T)
    b.add("a", "carrier-1", T + D,
          Correction((b.id("i1"),), WITHDRAW, reason="holder: Ms Li, call 138 0000 0000"))
    b.add("d", "institute", T + 2 * D,
          Correction(appeal_id=b.id("a"), outcome=UPHOLD, reason="institute case note 42"))
    b.mark("c3", "carrier-2", N3, "fraud", T)
    b.add("a3", "internet-1", T + D, Correction((b.id("c3"),), RECATEGORIZE, "delivery",
                                                reason="our user says courier"))
    b.add("w3", "internet-1", T + 2 * D,
          Correction((b.id("a3"),), WITHDRAW, reason="withdrawn, see ticket 7"))
    view = resolve(b.records, CONS)
    for number, (appeal, closer) in ((N1, ("a", "d")), (N3, ("a3", "w3"))):
        raw = view.entry_bytes(number)
        assert raw is not None
        for rec in b.records:
            text = getattr(rec.payload, "reason", "")
            if text:
                assert text.encode() not in raw
                assert text not in json.dumps(view.lookup(number, T + 3 * D).to_json())
        (a,) = json.loads(raw)["appeals"]
        assert set(a) == {"id", "by", "targets", "action", "category", "filed_at", "status",
                          "closed_at", "closed_by"}
        assert (a["id"], a["closed_by"]) == (b.id(appeal).hex(), b.id(closer).hex())
        (st_,) = view.lookup(number, T + 3 * D).appeals
        assert "reason" not in st_.to_json()


def test_golden_entry_bytes() -> None:
    """A hand-built entry: its bytes and hash are fixed; any format change fails here."""
    rid, ref = bytes(range(32)), bytes(32)
    entry = Entry(
        number=N1,
        rules=Rules(2, 2, True),
        categories=(CategoryInfo("fraud", 100, True),),
        marks=(
            EntryMark(rid, "carrier-1", "carrier", 2, "fraud", 80, 3, T, T + E, T + 5, 7,
                      set_aside=(SetAsideSpan(T + D, "withdrawn", ref),)),
        ),
    )
    want = (
        '{"appeals":[],"categories":[["fraud",100,true]],"complaints":[],"marks":[{"by":"carrier-1",'
        '"category":"fraud","expires_at":1715552000000,"id":"' + rid.hex() + '",'
        '"issued_at":1700000000005,"observed_at":1700000000000,"recategorized":[],'
        '"reports":3,"role":"carrier","score":80,"seq":7,"set_aside":[[1700086400000,'
        '"withdrawn","' + ref.hex() + '"]],"weight":2}],"number":"+8613812340001",'
        '"protections":[],"reassignments":[],"rules":{"complaint_risk":"medium",'
        '"complaint_risk_complainants":0,"complaint_risk_window_ms":0,'
        '"high_risk_min_participants":2,'
        '"identity_min_participants":2,"institute_mark_is_high_risk":true},"v":3}'
    ).encode()
    assert entry.encode() == want
    assert entry.hash == hashlib.sha256(b"\x00" + want).digest()
    assert entry.evaluate(T + D - 1).category == "fraud"
    assert entry.evaluate(T + D).set_aside[0].reason == "withdrawn"


def test_golden_entry_bytes_with_complaints() -> None:
    """An entry of complaints only (no mark): its bytes and hash are fixed, the
    rule's values travel in it, and the distinct tags in the window decide."""
    from ledger.view.parts import EntryComplaint
    from ledger.view.resolution import instants

    ids = [bytes([i]) * 32 for i in range(1, 7)]
    tags = [bytes([t]) * 8 for t in (1, 2, 3, 4, 5, 5)]   # the fifth complainant twice
    entry = Entry(
        number=N1,
        rules=Rules(2, 2, True, 5, 10 * D, "medium"),
        categories=(CategoryInfo("marketing", 50, True),),
        marks=(),
        complaints=tuple(
            EntryComplaint(i, "complaints-1", "marketing", T + k, T + D, tag)
            for k, (i, tag) in enumerate(zip(ids, tags, strict=True))
        ),
    )
    raw = entry.encode()
    first = ('{"by":"complaints-1","call_at":1700000000000,"category":"marketing",'
             '"filed_at":1700086400000,"id":"' + ids[0].hex() + '","tag":"0101010101010101"}')
    assert raw.startswith(b'{"appeals":[],"categories":[["marketing",50,true]],"complaints":['
                          + first.encode() + b",")
    assert raw.endswith(
        b'],"marks":[],"number":"+8613812340001","protections":[],"reassignments":[],'
        b'"rules":{"complaint_risk":"medium","complaint_risk_complainants":5,'
        b'"complaint_risk_window_ms":864000000,"high_risk_min_participants":2,'
        b'"identity_min_participants":2,"institute_mark_is_high_risk":true},"v":3}'
    )
    assert entry.hash.hex() == hashlib.sha256(b"\x00" + raw).hexdigest()
    assert Entry.decode(raw) == entry
    assert (entry.evaluate(T + 3).risk, entry.evaluate(T + 3).complainants) == ("none", 4)
    assert (entry.evaluate(T + 4).risk, entry.evaluate(T + 4).complainants) == ("medium", 5)
    assert entry.evaluate(T + 10 * D).complainants == 4    # the first call left the window
    ts = instants(entry)
    assert {T, T + 10 * D, T + 10 * D + 1} <= set(ts)
    # Between two instants the answer is one (what the screen's cache relies on).
    for lo, hi in zip(ts, ts[1:], strict=False):
        a, b = entry.evaluate(lo).to_json(), entry.evaluate(hi - 1).to_json()
        del a["at_ms"], b["at_ms"]
        assert a == b, (lo, hi)
    for bad in (raw.replace(b'"tag":"0101010101010101"', b'"tag":"01"'),
                raw.replace(b'"complaint_risk":"medium"', b'"complaint_risk":"none"')):
        with pytest.raises(BadInput):
            Entry.decode(bad)


# ====================================================================== root and proofs


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


_EMPTY = bytes(32)


def _node(depth: int, left: bytes, right: bytes) -> bytes:
    if left == right == _EMPTY:
        return _EMPTY
    if _EMPTY in (left, right):
        side = int(left == _EMPTY)
        return _sha(b"\x05" + bytes([2 * depth + side]) + (right if side else left))
    return _sha(b"\x04" + left + right)


def _wide(depth: int, children: list[bytes]) -> bytes:
    """The documented sixteen-way node (depths 24, 28, .., 60) over 16 children."""
    full = [i for i, c in enumerate(children) if c != _EMPTY]
    if not full:
        return _EMPTY
    if len(full) == 1:
        return _sha(b"\x07" + bytes([depth, full[0]]) + children[full[0]])
    mask = sum(1 << (15 - i) for i in full)
    return _sha(b"\x06" + bytes([depth]) + mask.to_bytes(2, "big")
                + b"".join(children[i] for i in full))


def _bits(key: bytes, depth: int, width: int) -> int:
    return (int.from_bytes(key[:8], "big") >> (64 - depth - width)) & ((1 << width) - 1)


def _tree(depth: int, group: list[tuple[bytes, bytes]]) -> bytes:
    """The subtree at `depth` over (key, entry hash) pairs sharing its prefix."""
    if not group:
        return _EMPTY
    if depth == 64:
        return _sha(b"\x03" + b"".join(k + eh for k, eh in sorted(group)))
    if depth >= 24:
        return _wide(depth, [_tree(depth + 4, [kv for kv in group if _bits(kv[0], depth, 4) == i])
                             for i in range(16)])
    bit = [kv for kv in group if _bits(kv[0], depth, 1)]
    left = [kv for kv in group if kv not in bit]
    return _node(depth, _tree(depth + 1, left), _tree(depth + 1, bit))


def _key(number: str) -> bytes:
    return _sha(b"markex/v1/view/key\x00" + number.encode())


def independent_root(view: NationalView) -> bytes:
    """The documented structure, recomputed from scratch without view.py's
    helpers: a depth-64 sparse tree over the first 64 bits of each key,
    binary above depth 24 and sixteen-way below."""
    return _tree(0, [(_key(n), _sha(b"\x00" + e.encode())) for n, e in view.entries.items()])


def test_root_matches_the_documented_structure() -> None:
    assert independent_root(RICH_VIEW) == RICH_VIEW.root()
    big = resolve(RICH.records, consortium(view_bucket_bits=16))
    assert independent_root(big) == big.root() == RICH_VIEW.root()   # the top's height is free
    assert NationalView(consortium(view_bucket_bits=2)).root() == _EMPTY
    assert tree_root((n, e.hash) for n, e in RICH_VIEW.entries.items()) == RICH_VIEW.root()
    assert view_key(N1) == _key(N1)


def many_numbers_view(bits: int, n: int = 40) -> tuple[NationalView, list[str], list[str]]:
    b = Book()
    present = [f"+86138{i:08d}" for i in range(1, n, 2)]
    absent = [f"+86138{i:08d}" for i in range(2, n, 2)]
    for i, num in enumerate(present):
        b.mark(f"m{i}", IDS[i % len(IDS)], num, "fraud" if i % 3 else "delivery", T + i)
    return resolve(b.records, consortium(view_bucket_bits=bits)), present, absent


@pytest.mark.parametrize("bits", [0, 1, 3, 16])
def test_proofs_verify_for_present_and_absent(bits: int) -> None:
    view, present, absent = many_numbers_view(bits)
    root = view.root()
    assert view.count == len(present)
    for n in present:
        proof = view.proof(n)
        raw = view.entry(n).encode()
        assert ViewProof.decode(proof.encode()) == proof
        assert verify_lookup(n, raw, proof.encode(), root) == view.entry(n)
        assert verify_lookup(n, raw, proof, root, bits) == view.entry(n)   # old callers
        with pytest.raises(ProofMismatch):            # a present number claimed absent
            verify_lookup(n, None, proof, root)
        assert proof.listed == ()                     # no two of these share 64 bits
    for n in absent:
        assert verify_lookup(n, None, view.proof(n).encode(), root) is None


def test_proofs_reveal_no_other_number() -> None:
    """Fails on proof version 1, whose bucket listings carry the neighbours in
    clear: no proof (of presence or absence) holds another number's bytes,
    SHA-256, view key, or entry hash."""
    view, present, absent = many_numbers_view(3, 200)
    secrets: dict[str, list[bytes]] = {}
    for n in present + absent:
        raw = n.encode()
        secrets[n] = [raw, raw[1:], raw[3:], _sha(raw), _key(n), _key(n)[:8], _sha(raw)[:4]]
        e = view.entry(n)
        if e is not None:
            secrets[n].append(e.hash)
    for asked in present + absent:
        proof = view.proof(asked).encode()
        for other in present:
            if other != asked:
                assert not any(s in proof for s in secrets[other]), (asked, other)
    # and the proofs are small: a bitmap and about log2(n) hashes
    sizes = [len(view.proof(n).encode()) for n in present + absent]
    assert max(sizes) <= 10 + 32 * 16 and sum(sizes) / len(sizes) < 10 + 32 * 10


def test_wrong_answers_fail_with_typed_errors() -> None:
    view, present, absent = many_numbers_view(3)
    root = view.root()
    n, other = present[0], present[1]
    raw, proof = view.entry(n).encode(), view.proof(n)
    with pytest.raises(ProofMismatch):
        verify_lookup(n, view.entry(other).encode(), proof, root)
    with pytest.raises(ProofMismatch):
        verify_lookup(n, raw[:-2] + b"7}", proof, root)
    with pytest.raises(ProofMismatch):
        verify_lookup(n, raw, proof, bytes(32))
    with pytest.raises(MalformedProof):
        verify_lookup(n, raw, proof, root[:31])
    with pytest.raises(MalformedProof):
        verify_lookup("", raw, proof, root)
    with pytest.raises(MalformedProof):                # the number's own key listed
        verify_lookup(n, raw, replace(proof, listed=((_key(n), bytes(32)),)), root)
    with pytest.raises(MalformedProof):                # a listed key at another position
        verify_lookup(n, raw, replace(proof, listed=((_key(other), bytes(32)),)), root)
    near = _key(n)[:8] + bytes(24)
    with pytest.raises(MalformedProof):                # listed keys out of order
        verify_lookup(n, raw, replace(proof, listed=((near[:31] + b"\x02", bytes(32)),
                                                     (near, bytes(32)))), root)
    with pytest.raises(ProofMismatch):                 # a listed stranger at the position
        verify_lookup(n, raw, replace(proof, listed=((near, bytes(32)),)), root)
    with pytest.raises(MalformedProof):                # an empty subtree given as a sibling
        verify_lookup(n, raw, replace(proof, siblings=(_EMPTY,) + proof.siblings[1:]), root)
    with pytest.raises(MalformedProof):
        verify_lookup(n, raw, replace(proof, siblings=proof.siblings[1:]), root)
    with pytest.raises(MalformedProof):
        verify_lookup(n, raw, replace(proof, bitmap=1 << viewtree.BITMAP_BITS), root)


def _answers(view: NationalView, numbers: list[str]) -> list[tuple[str, bytes | None, bytes]]:
    return [(n, view.entry_bytes(n), view.proof(n).encode()) for n in numbers]


@pytest.mark.parametrize("bits", [0, 3])
def test_every_single_bit_mutation_fails(bits: int) -> None:
    """Every one-bit change of a proof (presence or absence) or of the entry
    bytes, every truncation and every extension is refused."""
    view, present, absent = many_numbers_view(bits, 24)
    root = view.root()
    for n, raw, enc in _answers(view, present[:3] + absent[:3]):
        verify_lookup(n, raw, enc, root)
        for i in range(len(enc)):
            for bit in range(8):
                bad = enc[:i] + bytes([enc[i] ^ (1 << bit)]) + enc[i + 1:]
                with pytest.raises((MalformedProof, ProofMismatch)):
                    verify_lookup(n, raw, bad, root)
        for cut in range(len(enc)):
            with pytest.raises(MalformedProof):
                verify_lookup(n, raw, enc[:cut], root)
        for extra in (b"\x00", bytes(32)):
            with pytest.raises(MalformedProof):
                verify_lookup(n, raw, enc + extra, root)
        if raw is not None:
            for i in range(len(raw)):
                for bit in range(8):
                    bad = raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1:]
                    with pytest.raises(ProofMismatch):
                        verify_lookup(n, bad, enc, root)


def test_a_proof_never_verifies_for_another_number() -> None:
    """Another number's proof never proves anything false about N, nor N's own
    entry; nor does the proof of N's closest neighbour in the tree. (Two absent
    numbers whose paths end in one empty subtree have one and the same absence
    proof: that is the only way another number's proof verifies for N.)"""
    view, present, absent = many_numbers_view(3, 30)
    root = view.root()
    answers = _answers(view, present + absent)
    shared = 0
    for n, raw, own in answers:
        for m, _, enc in answers:
            if m == n:
                continue
            for claim in {raw, None, view.entry_bytes(m)}:
                if claim is None and raw is None and enc == own:
                    assert verify_lookup(n, None, enc, root) is None
                    shared += 1
                    continue
                with pytest.raises((MalformedProof, ProofMismatch)):
                    verify_lookup(n, claim, enc, root)
    assert shared < len(absent) * len(absent) // 4
    pos = {n: int.from_bytes(_key(n)[:8], "big") for n in present + absent}
    for n in present:
        neighbour = min((m for m in present + absent if m != n), key=lambda m: pos[m] ^ pos[n])
        with pytest.raises((MalformedProof, ProofMismatch)):
            verify_lookup(n, view.entry_bytes(n), view.proof(neighbour), root)


NUMBER_POOL = [f"+86138{i:08d}" for i in range(64)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.sets(st.sampled_from(NUMBER_POOL), max_size=24),
    bits=st.sampled_from([0, 1, 4, 16]),
    data=st.data(),
)
def test_random_sets_prove_presence_and_absence(chosen: set[str], bits: int,
                                                data: st.DataObject) -> None:
    b = Book()
    for i, n in enumerate(sorted(chosen)):
        b.mark(f"m{i}", IDS[i % len(IDS)], n, "fraud", T + i)
    records = data.draw(st.permutations(b.records))
    cut = data.draw(st.integers(0, len(records)))
    view = NationalView(consortium(view_bucket_bits=bits))
    view.apply(records[:cut])
    view.apply(records[cut:])
    root = view.root()
    assert root == independent_root(view)
    assert root == resolve(b.records, consortium(view_bucket_bits=3)).root()
    for n in data.draw(st.lists(st.sampled_from(NUMBER_POOL), min_size=1, max_size=6)):
        raw = view.entry_bytes(n)
        assert (raw is not None) == (n in chosen)
        got = verify_lookup(n, raw, view.proof(n).encode(), root)
        assert got == view.entry(n)


def _slot_root(pairs: list[tuple[bytes, bytes]], bits: int) -> tuple[bytes, dict[str, Any]]:
    top = viewtree.TopTree(bits)
    buckets: dict[int, list[tuple[bytes, bytes]]] = {}
    for k, e in pairs:
        buckets.setdefault(int.from_bytes(k[:8], "big") >> (64 - bits), []).append((k, e))
    slots = {b: viewtree.slots_of(ms) for b, ms in buckets.items()}
    top.update({b: viewtree.rehash_bucket(s, bits)[0] for b, s in slots.items()})
    return top.root(), {"top": top, "slots": slots}


@pytest.mark.parametrize("bits", [0, 8])
def test_keys_sharing_a_position_are_listed_deterministically(bits: int) -> None:
    """The rule for two keys that share all 64 bits of position: one leaf over
    both (sorted by key); a proof at that position lists the others there."""
    base = _key(N1)
    a, c = base[:8] + b"\x01" * 24, base[:8] + b"\x07" * 24
    stranger = base[:8] + b"\x03" * 24
    others = [(_key(n), _sha(n.encode())) for n in (N2, N3, N4)]
    pairs = [(a, _sha(b"a")), (c, _sha(b"c")), *others]
    root, parts = _slot_root(pairs, bits)
    assert root == _slot_root(pairs[::-1], 0)[0]
    leaf = _sha(b"\x03" + a + _sha(b"a") + c + _sha(b"c"))
    assert viewtree.leaf_hash([(c, _sha(b"c")), (a, _sha(b"a"))]) == leaf
    pos = int.from_bytes(base[:8], "big")
    b = pos >> (64 - bits)
    below, slot = viewtree.bucket_path(parts["slots"][b], bits, pos)
    assert slot is not None and slot.members == ((a, _sha(b"a")), (c, _sha(b"c")))
    bitmap, sibs = 0, []
    for bit, h in below + parts["top"].path(b):
        bitmap |= 1 << (viewtree.BITMAP_BITS - 1 - bit)
        sibs.append(h)
    for key, eh, listed in (
        (a, _sha(b"a"), ((c, _sha(b"c")),)),
        (c, _sha(b"c"), ((a, _sha(b"a")),)),
        (stranger, None, ((a, _sha(b"a")), (c, _sha(b"c")))),     # absent at that position
    ):
        proof = ViewProof(listed, bitmap, tuple(sibs))
        assert viewtree.proof_root(key, eh, ViewProof.decode(proof.encode())) == root
        assert viewtree.proof_root(key, _sha(b"x"), proof) != root
    hiding = ViewProof(((a, _sha(b"a")),), bitmap, tuple(sibs))     # leaves c out
    assert viewtree.proof_root(stranger, None, hiding) != root


def test_entry_that_does_not_decode_is_a_malformed_proof() -> None:
    """A node that signed a root over garbage: the hash checks, the bytes do not decode."""
    garbage = b"not an entry"
    root = tree_root([(N1, entry_hash(garbage)), (N2, entry_hash(b"x"))])
    assert tree_root([]) == _EMPTY
    pos1, pos2 = (int.from_bytes(_key(n)[:8], "big") for n in (N1, N2))
    d = 64 - (pos1 ^ pos2).bit_length()          # the key bit where N1 and N2 part
    at = d if d < 24 else d - (d - 24) % 4       # the node that parts them
    below = at + (1 if at < 24 else 4)
    sib = _tree(below, [(_key(N2), entry_hash(b"x"))])      # N2 alone under that node
    bit = at if at < 24 else 24 + (at - 24) // 4 * 16 + _bits(_key(N2), at, 4)
    proof = ViewProof((), 1 << (viewtree.BITMAP_BITS - 1 - bit), (sib,))
    assert viewtree.proof_root(_key(N1), entry_hash(garbage), proof) == root
    with pytest.raises(MalformedProof):
        verify_lookup(N1, garbage, proof, root)


def _proof_of(parts: dict[str, Any], bits: int, key: bytes,
              listed: tuple[tuple[bytes, bytes], ...] = ()) -> ViewProof:
    pos = int.from_bytes(key[:8], "big")
    b = pos >> (64 - bits)
    below, _ = viewtree.bucket_path(parts["slots"].get(b, []), bits, pos)
    bitmap, sibs = 0, []
    for bit, h in below + parts["top"].path(b):
        bitmap |= 1 << (viewtree.BITMAP_BITS - 1 - bit)
        sibs.append(h)
    return ViewProof(listed, bitmap, tuple(sibs))


def _refused(key: bytes, entry: bytes, enc: bytes, root: bytes) -> bool:
    try:
        return viewtree.proof_root(key, entry, ViewProof.decode(enc)) != root
    except MalformedProof:
        return True


@pytest.mark.parametrize("bits", [0, 16])
def test_sixteen_way_nodes_with_several_children(bits: int) -> None:
    """Fails on proof version 2 (binary nodes all the way down): keys that share
    24 to 60 bits meet in sixteen-way nodes with several children; the root is
    the documented structure, every key and every absence in those nodes is
    proven, and a bit for the number's own child, or any flipped bit, fails."""
    p24 = _key(N1)[:3]                         # 24 shared bits, then the nibbles below
    keys = [p24 + bytes([n]) + _sha(bytes([n]))[:28] for n in (0x05, 0x0F, 0x5A, 0x5B, 0xF3)]
    keys.append(keys[-1][:7] + bytes([keys[-1][7] ^ 0x01]) + keys[-1][8:])   # parts at bit 63
    pairs = [(k, _sha(k)) for k in keys]
    root, parts = _slot_root(pairs, bits)
    assert root == _tree(0, pairs) == _slot_root(pairs[::-1], 3)[0]
    for k, eh in pairs:
        proof = _proof_of(parts, bits, k)
        assert viewtree.proof_root(k, eh, ViewProof.decode(proof.encode())) == root
        assert viewtree.proof_root(k, None, proof) != root      # present, claimed absent
        assert viewtree.proof_root(k, _sha(b"x"), proof) != root
    proof = _proof_of(parts, bits, keys[2])
    own = viewtree.proof_bit(24, 5)            # keys[2]'s own child of the node at 24
    assert not proof.bitmap >> (viewtree.BITMAP_BITS - 1 - own) & 1
    bent = replace(proof, bitmap=proof.bitmap | 1 << (viewtree.BITMAP_BITS - 1 - own),
                   siblings=(*proof.siblings, _sha(b"y")))
    with pytest.raises(MalformedProof):
        viewtree.proof_root(keys[2], pairs[2][1], bent)
    enc = proof.encode()
    for i in range(len(enc)):
        for bit in range(8):
            bad = enc[:i] + bytes([enc[i] ^ (1 << bit)]) + enc[i + 1:]
            assert _refused(keys[2], pairs[2][1], bad, root), (i, bit)
    for absent in (p24 + b"\x33" + bytes(28), p24 + b"\x5c" + bytes(28),
                   keys[5][:7] + bytes([keys[5][7] ^ 0x02]) + bytes(24)):
        proof = _proof_of(parts, bits, absent)
        assert viewtree.proof_root(absent, None, ViewProof.decode(proof.encode())) == root
        assert viewtree.proof_root(absent, _sha(b"x"), proof) != root


def test_a_new_entry_costs_a_short_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on proof version 2, whose lonely chain from a leaf to a 16-bit top
    was 48 one-child hashes: a new entry alone in its bucket costs its leaf and
    18 node hashes (ten sixteen-way nodes, eight binary), with the deep cached
    point at depth 24."""
    calls = 0

    def counting(real: Any) -> Any:
        def sha(data: bytes = b"") -> Any:
            nonlocal calls
            calls += 1
            return real(data)
        return sha

    (slot,) = viewtree.slots_of([(_key(N1), _sha(b"e"))])
    # Both SHA-256 entry points the tree hashes through (one-block steps use CPython's own).
    monkeypatch.setattr(viewtree, "_sha256", counting(viewtree._sha256))
    monkeypatch.setattr(viewtree, "_sha256_block", counting(viewtree._sha256_block))
    top, moved = viewtree.rehash_bucket([slot], 16)
    monkeypatch.undo()
    assert calls == 18 and moved == [slot] and (slot.depth, slot.deep_depth) == (16, 24)
    assert top == _tree(16, [(_key(N1), _sha(b"e"))])


# ====================================================================== view checkpoints


def test_view_checkpoint_text_and_parse() -> None:
    root = RICH_VIEW.root()
    origin = view_origin("markex-test", "institute")
    assert origin == "markex-test/view/institute"
    text = view_checkpoint_text(
        origin, {"internet-1": 4, "carrier-1": 9, "carrier-2": 0}, 4, root, T
    )
    assert text == (
        f"markex-test/view/institute\n4\n{base64.b64encode(root).decode()}\n"
        f"vector carrier-1=9 internet-1=4\nsigned-at-ms {T}\n"
    )
    cp = parse_view_checkpoint(text)
    assert cp == ViewCheckpoint(origin, (("carrier-1", 9), ("internet-1", 4)), 4, root, T)
    assert cp.vector_dict == {"carrier-1": 9, "internet-1": 4}
    assert RICH_VIEW.checkpoint(origin, T).body() == view_checkpoint_text(
        origin, RICH_VIEW.vector, RICH_VIEW.count, root, T)
    assert parse_view_checkpoint(view_checkpoint_text(origin, {}, 0, root, 0)).vector == ()
    for bad in (
        text.replace("vector ", "vectors "),
        text.replace("carrier-1=9 internet-1=4", "internet-1=4 carrier-1=9"),
        text.replace("carrier-1=9", "carrier-1=09"),
        text.replace("carrier-1=9", "carrier-1=0"),
        text.replace("carrier-1=9", "carrier-1"),
        text.replace("internet-1=4", "carrier-1=4"),
        text.replace(" internet-1=4", "  internet-1=4"),
        text + "extra\n",
        text[:-1],
        text.replace("\n4\n", "\n-4\n"),
        # the signing time: present, once, last, a canonical decimal of milliseconds
        text.replace(f"signed-at-ms {T}\n", ""),
        text.replace(f"signed-at-ms {T}", f"signed-at-ms 0{T}"),
        text.replace(f"signed-at-ms {T}", f"signed-at-ms -{T}"),
        text.replace(f"signed-at-ms {T}", f"signed-at-ms  {T}"),
        text.replace(f"signed-at-ms {T}", f"signed-at-ms {T}.0"),
        text.replace(f"signed-at-ms {T}", f"signed-at-ms {2**63}"),
        text.replace(f"signed-at-ms {T}", f"signed-at {T}"),
        text.replace(f"signed-at-ms {T}", "signed-at-ms"),
        text.replace("vector carrier-1=9 internet-1=4\nsigned-at-ms", "signed-at-ms").replace(
            f"{T}\n", f"{T}\nvector carrier-1=9 internet-1=4\n"),
        text + f"signed-at-ms {T}\n",
    ):
        with pytest.raises(MalformedNote):
            parse_view_checkpoint(bad)
    with pytest.raises(MalformedNote):
        view_checkpoint_text(origin, {}, 0, root, -1)


def test_view_checkpoint_signed_as_a_note() -> None:
    origin = view_origin("markex-test", "carrier-1")
    cp = RICH_VIEW.checkpoint(origin, T)
    signed = sign_view_checkpoint(cp, KEYS["carrier-1"])
    verifier = note.Verifier.for_key(origin, KEYS["carrier-1"].public_bytes)
    assert open_view_checkpoint(signed, verifier) == cp
    with pytest.raises(BadSignature):
        open_view_checkpoint(signed, verifier, origin="markex-test/view/other")
    liar = note.Verifier.for_key(origin, KEYS["carrier-2"].public_bytes)
    with pytest.raises(BadSignature):
        open_view_checkpoint(signed, liar)


# ====================================================================== the ledger and the store


def outcomes(submitted: Any) -> list[Any]:
    """NodeLedger.submit's outcomes (a list, or an object holding them)."""
    return list(getattr(submitted, "outcomes", submitted))


def test_rebuild_from_ledger_equals_incremental(tmp_path: Path) -> None:
    from ledger.log import NodeLedger
    from ledger.store import Store

    ledger = NodeLedger.open(tmp_path / "db", CONS, "institute")
    try:
        now = max(r.issued_at_ms for r in RICH.records)
        live = NationalView(CONS)
        store: Store = ledger.store
        for rec in RICH.records:                  # as a node would: append, apply, save
            out = outcomes(ledger.submit([rec.envelope], now))[0]
            assert out.status == "accepted", out.error
            batch = store.batch()
            live.save_changes(batch, live.apply([rec]))
            store.write(batch)
        rebuilt = rebuild_from_ledger(ledger, batch_size=3)
        assert snapshot(rebuilt) == snapshot(live) == snapshot(RICH_VIEW)
        assert rebuilt.vector == {i: f.counted_seq for i, f in ledger.feeds().items()}
        stored = {k.decode(): v for k, v in store.items("view")}
        assert stored == {n: e.encode() for n, e in live.entries.items()}
    finally:
        ledger.close()


def test_rebuild_stops_at_a_frozen_feed(tmp_path: Path) -> None:
    from ledger.log import NodeLedger

    b = Book()
    b.mark("m1", "carrier-1", N1, "fraud", T)
    b.mark("m2", "carrier-1", N2, "fraud", T + 1)
    b.mark("m3", "carrier-1", N3, "fraud", T + 2)
    fork = Record.issue(KEYS["carrier-1"], "carrier-1", 2, b.id("m1"), T + 1,
                        Mark(N4, "fraud", 60, 0, T + 1), consortium=CONS.name)
    ledger = NodeLedger.open(tmp_path / "db", CONS, "institute")
    try:
        outs = outcomes(ledger.submit([r.envelope for r in b.records] + [fork.envelope], T + 10))
        assert outs[-1].status == "equivocation"
        view = rebuild_from_ledger(ledger)
        assert set(view.entries) == {N1}
        assert view.vector == {"carrier-1": 1}
    finally:
        ledger.close()


# ====================================================================== the marks-only build


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(IDS), st.sampled_from(CATS), st.integers(0, 5),
                  st.integers(0, 3), st.integers(0, 100)),
        min_size=1, max_size=12,
    ),
    st.integers(1, 3),
)
def test_marks_only_build_is_the_general_build(
    marks: list[tuple[str, str, int, int, int]], keep: int
) -> None:
    """EntryBuilder.build_marks (the apply's path for a number with marks alone,
    none corrected) gives the entry the general build gives for the same marks:
    equal, with the same bytes, including each issuer's `keep` latest, the
    order of observation and the categories."""
    from ledger.view.build import EntryBuilder
    from ledger.view.facts import MarkFact, NumberFacts

    builder = EntryBuilder(consortium(max_marks_per_participant=keep))
    facts = [
        MarkFact(hashlib.sha256(b"m%d" % i).digest(), who, i + 1, T + issued * D, N1, cat,
                 score, 1, T + (issued - obs) * D, T + (issued - obs) * D + E)
        for i, (who, cat, issued, obs, score) in enumerate(marks)
    ]
    nf = NumberFacts(facts={f.id: f for f in facts}, marks={f.id for f in facts})
    general = builder._build(N1, nf)
    fast = builder.build_marks(N1, list(facts))
    assert general is not None and fast is not None
    assert fast == general and fast.encode() == general.encode()
    assert fast == Entry.decode(general.encode())
