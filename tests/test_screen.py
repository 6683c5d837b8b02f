"""ledger/screen.py: the rule table over explicit facts (every rule, every
reason code, time bands and day types at explicit instants), the table in
docs/screen.md, and ledger/view's `instants` (evaluate is constant between
two consecutive instants)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys.consortium import Consortium
from ledger import screen as S
from ledger.consent import MemoryConsent
from ledger.consent.facts import LineFact, PreferenceFact
from ledger.consent.rules import CST_OFFSET_MS
from ledger.payloads.line import MarketerLine, uscc_check_char
from ledger.payloads.preference import Preference
from ledger.record import Mark, Reassignment, Record
from ledger.sealing import KEY_BYTES, MembersKey
from ledger.view import Entry, resolve
from ledger.view.resolution import Resolution, evaluate, instants
from tests.conftest import KEYS, NAME, make_consortium

CONS = make_consortium()
CALLER = "+8613800000001"
CALLEE = "+8613900000002"
D = 86_400_000


def cst(text: str) -> int:
    """An instant written in China Standard Time, e.g. '2026-12-01 10:00' (a Tuesday)."""
    local = datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return int(local.timestamp() * 1000) - CST_OFFSET_MS


TUE_10 = cst("2026-12-01 10:00")   # a Tuesday
TUE_21 = cst("2026-12-01 21:00")
SAT_10 = cst("2026-12-05 10:00")
T0 = TUE_10 - 30 * D               # when the facts below were issued


def marked(*marks: tuple[str, str], at: int = TUE_10, cons: Consortium = CONS) -> Resolution:
    """The caller's resolution at `at` after marks (issuer, category) issued at T0."""
    recs = [Record.issue(KEYS[who], who, 1, b"", T0, Mark(CALLER, cat, 70, 3, T0, 0),
                         consortium=NAME) for who, cat in marks]
    res = resolve(recs, cons).lookup(CALLER, at)
    assert res is not None
    return res


def pref(refuse: tuple[str, ...], *, modes: tuple[str, ...] = (),
         allowed: tuple[tuple[int, int], ...] = (), days: tuple[str, ...] = (),
         effective_from: int = T0, until: int = 0) -> PreferenceFact:
    return PreferenceFact(b"P" * 32, "carrier-2", 4, T0, refuse, modes, allowed, days,
                          effective_from, until)


def line(industry: str = "real-estate", *, ended_at: int = 0) -> LineFact:
    return LineFact(b"L" * 32, "carrier-1", 7, T0, CALLER, False, "Anju Realty",
                    "91110000MA00000000", industry, ended_at)


def decide(res: Resolution | None = None, ln: LineFact | None = None,
           p: PreferenceFact | None = None, *, at: int = TUE_10, mode: str = "voice",
           cons: Consortium = CONS, caller: str = CALLER) -> S.Decision:
    return S.decide(cons, caller, CALLEE, at, mode, res, ln, p)


def codes(d: S.Decision) -> list[str]:
    return [r.code for r in d.reasons]


# ====================================================================== the table

FRAUD2 = (("carrier-1", "fraud"), ("carrier-2", "fraud"))   # two participants: high risk
REALESTATE1 = (("internet-1", "real-estate"),)               # one participant: medium risk
DELIVERY = (("carrier-1", "delivery"), ("internet-1", "delivery"))  # an identity label
ALL_REFUSED = pref(("all",))
REALESTATE_REFUSED = pref(("real-estate",))
FINANCE_REFUSED = pref(("finance",))

# name: (marks, line, preference, extra decide() arguments, action, codes, category)
CASES: dict[str, tuple[Any, ...]] = {
    "nothing known: allowed": (None, None, None, {}, "ALLOW", ["caller-unknown"], ""),
    "an unmarked caller calling a refuser: allowed": (
        None, None, ALL_REFUSED, {}, "ALLOW", ["caller-unknown"], ""),
    "protected caller: allowed whatever else": (
        None, line(), ALL_REFUSED, {"caller": "+86110"}, "ALLOW", ["caller-protected"], ""),
    "fraud-marked, high risk: blocked whatever the callee's preferences": (
        FRAUD2, None, None, {}, "BLOCK", ["caller-risk-block"], "fraud"),
    "fraud-marked, high risk, callee refusing nothing (revocation): blocked": (
        FRAUD2, None, pref(()), {}, "BLOCK", ["caller-risk-block"], "fraud"),
    "fraud-marked by one, medium risk: warned": (
        (("carrier-1", "fraud"),), None, None, {}, "WARN", ["caller-risk-warn"], "fraud"),
    "fraud-marked by one, callee refusing all marketing: still only warned": (
        (("carrier-1", "fraud"),), None, ALL_REFUSED, {}, "WARN", ["caller-risk-warn"],
        "fraud"),
    "registered real-estate line calling a real-estate refuser: blocked": (
        None, line(), REALESTATE_REFUSED, {}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "real-estate"),
    "registered real-estate line calling a refuser of all: blocked": (
        None, line(), ALL_REFUSED, {}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "real-estate"),
    "registered real-estate line calling a finance refuser: labelled": (
        None, line(), FINANCE_REFUSED, {}, "LABEL",
        ["caller-registered-marketer", "caller-line"], "real-estate"),
    "registered real-estate line calling a non-refuser: labelled": (
        None, line(), None, {}, "LABEL", ["caller-registered-marketer", "caller-line"],
        "real-estate"),
    "registered line of an industry no category maps: labelled marketing": (
        None, line("tourism"), None, {}, "LABEL", ["caller-registered-marketer", "caller-line"],
        "marketing"),
    "a deregistered line is no marketer": (
        None, line(ended_at=T0 + D), ALL_REFUSED, {}, "ALLOW", ["caller-unknown"], ""),
    "a line deregistered later still holds now": (
        None, line(ended_at=TUE_10 + 1), ALL_REFUSED, {}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "real-estate"),
    "registered line calling a revoked refusal: labelled": (
        None, line(), pref(()), {}, "LABEL", ["caller-registered-marketer", "caller-line"],
        "real-estate"),
    "unregistered, marked real-estate, calling a real-estate refuser: blocked": (
        REALESTATE1, None, REALESTATE_REFUSED, {}, "BLOCK",
        ["callee-refused-industry", "caller-marked-marketing"], "real-estate"),
    "unregistered, marked real-estate, calling a finance refuser: warned (medium risk)": (
        REALESTATE1, None, FINANCE_REFUSED, {}, "WARN", ["caller-risk-warn"], "real-estate"),
    "unregistered, marked marketing (unknown industry), refuser of finance: warned": (
        (("internet-1", "marketing"),), None, FINANCE_REFUSED, {}, "WARN",
        ["caller-risk-warn"], "marketing"),
    "unregistered, marked marketing (unknown industry), refuser of all: blocked": (
        (("internet-1", "marketing"),), None, ALL_REFUSED, {}, "BLOCK",
        ["callee-refused-industry", "caller-marked-marketing"], "marketing"),
    "marked finance-insurance, refuser of insurance: blocked": (
        (("internet-1", "finance-insurance"),), None, pref(("insurance",)), {}, "BLOCK",
        ["callee-refused-industry", "caller-marked-marketing"], "finance-insurance"),
    "identity label: labelled": (
        DELIVERY, None, ALL_REFUSED, {}, "LABEL", ["caller-category"], "delivery"),
    "identity label with a registered line: labelled, naming the line": (
        DELIVERY, line(), FINANCE_REFUSED, {}, "LABEL", ["caller-category", "caller-line"],
        "delivery"),
    "identity-labelled registered line calling a refuser: blocked, category kept": (
        DELIVERY, line(), REALESTATE_REFUSED, {}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "delivery"),
    # modes
    "voice refusal, an SMS: labelled": (
        None, line(), pref(("real-estate",), modes=("voice",)), {"mode": "sms"}, "LABEL",
        ["caller-registered-marketer", "caller-line"], "real-estate"),
    "SMS refusal, an SMS: blocked": (
        None, line(), pref(("real-estate",), modes=("sms",)), {"mode": "sms"}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "real-estate"),
    # time bands and day types (China Standard Time)
    "allowed 09-12, called Tuesday 10:00 CST: labelled": (
        None, line(), pref(("all",), allowed=((540, 720),)), {}, "LABEL",
        ["caller-registered-marketer", "caller-line"], "real-estate"),
    "allowed 09-12, called Tuesday 21:00 CST: blocked": (
        None, line(), pref(("all",), allowed=((540, 720),)), {"at": TUE_21}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "real-estate"),
    "allowed 09-12 at the band's end (12:00, exclusive): blocked": (
        None, line(), pref(("all",), allowed=((540, 720),)),
        {"at": cst("2026-12-01 12:00")}, "BLOCK", ["callee-refused-industry", "caller-line"],
        "real-estate"),
    "allowed 09-12 a minute before its end: labelled": (
        None, line(), pref(("all",), allowed=((540, 720),)),
        {"at": cst("2026-12-01 11:59")}, "LABEL",
        ["caller-registered-marketer", "caller-line"], "real-estate"),
    "allowed 09-12 on weekends, Tuesday 10:00: blocked": (
        None, line(), pref(("all",), allowed=((540, 720),), days=("weekend",)), {}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "real-estate"),
    "allowed 09-12 on weekends, Saturday 10:00: labelled": (
        None, line(), pref(("all",), allowed=((540, 720),), days=("weekend",)),
        {"at": SAT_10}, "LABEL", ["caller-registered-marketer", "caller-line"], "real-estate"),
    "allowed 09-12 on weekdays, Tuesday 10:00: labelled": (
        None, line(), pref(("all",), allowed=((540, 720),), days=("weekday",)), {}, "LABEL",
        ["caller-registered-marketer", "caller-line"], "real-estate"),
    "allowed 09-12 on tue, Saturday 10:00: blocked": (
        None, line(), pref(("all",), allowed=((540, 720),), days=("tue",)), {"at": SAT_10},
        "BLOCK", ["callee-refused-industry", "caller-line"], "real-estate"),
    "day types without bands allow nothing: blocked": (
        None, line(), pref(("all",), days=("weekday",)), {"at": TUE_21}, "BLOCK",
        ["callee-refused-industry", "caller-line"], "real-estate"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    marks, ln, p, kw, action, want_codes, category = CASES[name]
    res = marked(*marks) if marks else None
    d = decide(res, ln, p, **kw)
    assert (d.action, codes(d), d.category) == (action, want_codes, category), name
    assert d.risk == (res.risk if res else "none")
    if action == "ALLOW":
        assert d.redress == ""
    else:
        assert kw.get("caller", CALLER) in d.redress


@pytest.mark.parametrize("name", list(CASES))
def test_only_a_marketer_s_decision_reads_the_preference(name: str) -> None:
    """What lets the screen skip the callee's seal and read (node/screen.py)."""
    marks, ln, p, kw, *_ = CASES[name]
    res = marked(*marks) if marks else None
    at = kw.get("at", TUE_10)
    marketing = S.is_marketing(CONS, res, ln, at)
    assert marketing == (S.marketing_of(CONS, res, ln, at) is not None)
    if not marketing:
        assert decide(res, ln, p, **kw) == decide(res, ln, None, **kw)


def test_every_reason_code_is_exercised_by_the_table() -> None:
    seen = {c for case in CASES.values() for c in case[5]}
    assert seen == set(S.REASON_CODES)


def test_reasons_name_the_records() -> None:
    res = marked(*REALESTATE1)
    d = decide(res, None, REALESTATE_REFUSED)
    assert d.reasons[0].records == (REALESTATE_REFUSED.id,)
    assert d.reasons[1].records == tuple(m.record_id for m in res.markers)
    assert "real-estate" in d.reasons[0].detail
    d = decide(None, line(), REALESTATE_REFUSED)
    assert d.reasons[1].records == (b"L" * 32,)
    assert "Anju Realty" in d.reasons[1].detail and "91110000MA00000000" in d.reasons[1].detail
    high = marked(*FRAUD2)
    d = decide(high, None, None)
    assert set(d.reasons[0].records) == {m.record_id for m in high.markers}
    assert "whatever the callee's preferences" in d.reasons[0].detail


def test_thresholds_come_from_the_policy() -> None:
    off = make_consortium(screen_block_risk="off", screen_warn_risk="off")
    res = marked(*FRAUD2, cons=off)
    assert decide(res, cons=off).action == "LABEL"
    warn_high = make_consortium(screen_block_risk="off", screen_warn_risk="high")
    res = marked(*FRAUD2, cons=warn_high)
    assert decide(res, cons=warn_high).action == "WARN"
    medium = make_consortium(screen_block_risk="medium")
    assert decide(marked(("carrier-1", "fraud"), cons=medium), cons=medium).action == "BLOCK"


def test_marketing_categories_come_from_the_policy() -> None:
    cons = make_consortium(screen_warn_risk="off",
                           marketing_categories={"real-estate": ("finance",)})
    res = marked(*REALESTATE1, cons=cons)
    assert decide(res, None, FINANCE_REFUSED, cons=cons).code == "callee-refused-industry"
    assert decide(res, None, REALESTATE_REFUSED, cons=cons).code == "caller-category"


def test_redress_names_the_caller() -> None:
    d = decide(marked(*FRAUD2))
    assert d.redress == CONS.policy.redress_text.replace("{caller}", CALLER)
    assert CALLER in d.redress and "{caller}" not in d.redress


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(S.BadCallMode, match="fax"):
        decide(mode="fax")


def test_decide_is_deterministic_and_to_json_is_plain() -> None:
    args = (marked(*REALESTATE1), None, REALESTATE_REFUSED)
    assert decide(*args) == decide(*args)
    obj = decide(*args).to_json()
    assert obj["action"] == "BLOCK" and obj["reasons"][0]["records"] == [(b"P" * 32).hex()]


# ====================================================================== docs/screen.md

DOC = Path(__file__).resolve().parent.parent / "docs" / "screen.md"


def test_the_doc_writes_the_one_table() -> None:
    """docs/screen.md's rule table lists the rules of RULES, in order, with their actions."""
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`([a-z-]+)`\s*\|\s*(ALLOW|LABEL|WARN|BLOCK)\s*\|",
                      DOC.read_text(encoding="utf-8"), re.M)
    assert [(int(n), c, a) for n, c, a in rows] == [
        (i, r.code, r.action) for i, r in enumerate(S.RULES, 1)]
    text = DOC.read_text(encoding="utf-8")
    for code in S.REASON_CODES:
        assert f"`{code}`" in text


# ====================================================================== instants


def _same(a: Resolution, b: Resolution) -> bool:
    return replace(a, at_ms=0) == replace(b, at_ms=0)


def test_instants_cover_the_rich_scenario() -> None:
    """Every entry of the view tests' rich scenario: each interval evaluates
    alike at its first, middle and last millisecond."""
    from tests.test_view import CONS as VCONS
    from tests.test_view import rich_book

    view = resolve(rich_book().records, VCONS)
    changes = 0
    for entry in view.entries.values():
        ts = instants(entry)
        assert list(ts) == sorted(set(ts))
        for lo, hi in zip(ts, ts[1:], strict=False):
            first = evaluate(entry, lo)
            assert _same(first, evaluate(entry, (lo + hi) // 2))
            assert _same(first, evaluate(entry, hi - 1))
            changes += not _same(evaluate(entry, lo - 1), first)
    assert changes > 10   # the scenario does change its answers, at instants


def _generated_books() -> Any:
    from tests.test_view import generated_books

    return generated_books()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book=_generated_books(), data=st.data())
def test_evaluate_is_constant_between_instants(book: Any, data: st.DataObject) -> None:
    """Random entries built through the view from random records, random
    times: two times in one interval of `instants` evaluate alike."""
    from tests.test_view import CONS as VCONS

    view = resolve(book.records, VCONS)
    for entry in view.entries.values():
        entry = Entry.decode(entry.encode())     # what a screen reads: the stored bytes
        ts = instants(entry)
        bounds = [ts[0] - 10 * D, *ts, ts[-1] + 400 * D]
        for _ in range(6):
            i = data.draw(st.integers(0, len(bounds) - 2))
            lo, hi = bounds[i], bounds[i + 1] - 1     # the interval [lo, hi]
            t = data.draw(st.integers(lo, hi))
            first = evaluate(entry, lo)
            assert _same(first, evaluate(entry, t)), (lo, t, hi)
            assert _same(first, evaluate(entry, hi)), (lo, hi)


# ====================================================================== through the consent state

KEY = MembersKey(bytes(range(64))[:KEY_BYTES])
ESTATE_LINE = "+8613800000001"       # carrier-1's, registered for real-estate
FINANCE_LINE = "+8613800000003"      # carrier-1's, registered for finance
SUB_A = "+8613900000011"             # refuses real estate
SUB_B = "+8613900000012"             # refuses nothing (never asked)
SUB_C = "+8613900000013"             # refuses all, then revokes
SUB_D = "+8613900000014"             # refuses real estate, then the number is reassigned
SUB_E = "+8613900000015"             # refuses all, allowed 09-12 on weekdays, by SMS only


def uscc(prefix17: str) -> str:
    return prefix17 + uscc_check_char(prefix17)


class Feeds:
    """Records issued in each issuer's feed order."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.seq: dict[str, tuple[int, bytes]] = {}

    def add(self, issuer: str, at: int, payload: Any) -> Record:
        seq, prev = self.seq.get(issuer, (0, b""))
        rec = Record.issue(KEYS[issuer], issuer, seq + 1, prev, at, payload, consortium=NAME)
        self.seq[issuer] = (seq + 1, rec.id)
        self.records.append(rec)
        return rec

    def prefer(self, number: str, at: int, refuse: tuple[str, ...], **kw: Any) -> Record:
        return self.add("carrier-1", at, Preference(KEY.seal(number), KEY.id, refuse, **kw))


def consent_story() -> tuple[Feeds, list[tuple[str, str, int, str, str, str]]]:
    """The records and the checks (caller, callee, at, mode, action, code)."""
    f = Feeds()
    f.add("carrier-1", T0, MarketerLine(ESTATE_LINE, False, "Anju Realty",
                                         uscc("91110000MA0000001"), "real-estate"))
    f.add("carrier-1", T0, MarketerLine(FINANCE_LINE, False, "Fuyou Loans",
                                         uscc("91110000MA0000002"), "finance"))
    f.prefer(SUB_A, T0, ("real-estate",))
    f.prefer(SUB_C, T0, ("all",))
    f.prefer(SUB_C, T0 + 10 * D, ())                        # the revocation
    f.prefer(SUB_D, T0, ("real-estate",))
    f.add("carrier-1", T0 + 12 * D, Reassignment(SUB_D, T0 + 12 * D))
    f.prefer(SUB_E, T0, ("all",), modes=("sms",), allowed=((540, 720),), days=("weekday",))
    before, after = T0 + 5 * D, TUE_10                       # TUE_10 is T0 + 30 days
    checks = [
        (ESTATE_LINE, SUB_A, after, "voice", "BLOCK", "callee-refused-industry"),
        (FINANCE_LINE, SUB_A, after, "voice", "LABEL", "caller-registered-marketer"),
        (ESTATE_LINE, SUB_B, after, "voice", "LABEL", "caller-registered-marketer"),
        (FINANCE_LINE, SUB_C, before, "voice", "BLOCK", "callee-refused-industry"),
        (FINANCE_LINE, SUB_C, after, "voice", "LABEL", "caller-registered-marketer"),
        (ESTATE_LINE, SUB_D, before, "voice", "BLOCK", "callee-refused-industry"),
        (ESTATE_LINE, SUB_D, after, "voice", "LABEL", "caller-registered-marketer"),
        (ESTATE_LINE, SUB_E, TUE_10, "voice", "LABEL", "caller-registered-marketer"),
        (ESTATE_LINE, SUB_E, TUE_10, "sms", "LABEL", "caller-registered-marketer"),
        (ESTATE_LINE, SUB_E, TUE_21, "sms", "BLOCK", "callee-refused-industry"),
        (ESTATE_LINE, SUB_E, SAT_10, "sms", "BLOCK", "callee-refused-industry"),
        ("+8613800000009", SUB_A, after, "voice", "ALLOW", "caller-unknown"),
    ]
    return f, checks


def screen_with(state: MemoryConsent, caller: str, callee: str, at: int, mode: str,
                res: Resolution | None = None) -> S.Decision:
    return S.decide(CONS, caller, callee, at, mode, res, state.line_at(caller, at),
                    state.preference_at(KEY.seal(callee), at))


def test_the_consent_story_screens_as_it_says() -> None:
    f, checks = consent_story()
    state = MemoryConsent(KEY)
    state.apply(f.records)
    for caller, callee, at, mode, action, code in checks:
        d = screen_with(state, caller, callee, at, mode)
        assert (d.action, d.code) == (action, code), (caller, callee, at, mode)


@settings(max_examples=25, deadline=None)
@given(order=st.permutations(range(8)), cut=st.integers(0, 8))
def test_shuffled_delivery_gives_the_same_answers(order: list[int], cut: int) -> None:
    """Any order, any split into batches: every check answers alike, so two
    nodes given the same records in any order screen alike."""
    f, checks = consent_story()
    assert len(f.records) == len(order)
    recs = [f.records[i] for i in order]
    state = MemoryConsent(KEY)
    state.apply(recs[:cut])
    state.apply(recs[cut:])
    for caller, callee, at, mode, action, code in checks:
        d = screen_with(state, caller, callee, at, mode)
        assert (d.action, d.code) == (action, code)


def test_the_latest_preference_wins_whichever_arrived_first() -> None:
    f = Feeds()
    f.add("carrier-1", T0, MarketerLine(ESTATE_LINE, False, "Anju Realty",
                                         uscc("91110000MA0000001"), "real-estate"))
    refusal = f.prefer(SUB_A, T0 + D, ("real-estate",))
    revocation = f.add("institute", T0 + 2 * D, Preference(KEY.seal(SUB_A), KEY.id, ()))
    for recs in ([f.records[0], refusal, revocation], [f.records[0], revocation, refusal]):
        state = MemoryConsent(KEY)
        for r in recs:
            state.apply([r])
        assert screen_with(state, ESTATE_LINE, SUB_A, T0 + D + 1, "voice").action == "BLOCK"
        assert screen_with(state, ESTATE_LINE, SUB_A, T0 + 3 * D, "voice").action == "LABEL"


def test_a_preference_effective_later_refuses_from_then_on() -> None:
    f = Feeds()
    f.add("carrier-1", T0, MarketerLine(ESTATE_LINE, False, "Anju Realty",
                                         uscc("91110000MA0000001"), "real-estate"))
    f.prefer(SUB_A, T0, ("real-estate",), effective_from_ms=T0 + 5 * D, until_ms=T0 + 9 * D)
    state = MemoryConsent(KEY)
    state.apply(f.records)
    answers = [screen_with(state, ESTATE_LINE, SUB_A, T0 + k * D, "voice").action
               for k in (4, 5, 8, 9)]
    assert answers == ["LABEL", "BLOCK", "BLOCK", "LABEL"]


def test_an_unregistered_marked_caller_is_screened_by_its_category() -> None:
    f = Feeds()
    f.prefer(SUB_A, T0, ("real-estate",))
    state = MemoryConsent(KEY)
    state.apply(f.records)
    res = marked(*REALESTATE1)
    d = screen_with(state, CALLER, SUB_A, TUE_10, "voice", res)
    assert (d.action, codes(d)) == ("BLOCK", ["callee-refused-industry",
                                              "caller-marked-marketing"])
    assert screen_with(state, CALLER, SUB_B, TUE_10, "voice", res).action == "WARN"
    # a fraud-marked caller, whatever the callee's preferences
    high = marked(*FRAUD2)
    for sub in (SUB_A, SUB_B):
        assert screen_with(state, CALLER, sub, TUE_10, "voice", high).code == "caller-risk-block"
