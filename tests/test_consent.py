"""Consent (docs/consent.md): who may write preferences and lines, the time
bounds, the effect checks, the consent state's rules (each numbered rule of
docs/consent.md has a test here), the stored state, the keeper, the audit."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium, load_consortium
from keys.signing import SigningKey
from ledger import audit
from ledger import errors as E
from ledger.audit.envelopes import NOTES
from ledger.consent import MemoryConsent, StoredConsent, catch_up, in_force, refuses
from ledger.consent.facts import PreferenceFact
from ledger.consent.rules import KEEP_PREFERENCES
from ledger.log import NodeLedger
from ledger.payloads import REGISTRY, check_issuer, payload_kind
from ledger.payloads.line import BadCreditCode, MarketerLine, uscc_check_char
from ledger.payloads.mark import Mark
from ledger.payloads.preference import BadTimeBand, Preference, parse_bands
from ledger.payloads.reassignment import Reassignment
from ledger.record import Record
from ledger.sealing import MembersKey, SealError
from ledger.store import Store
from ledger.view import NationalView
from ledger.view.facts import FACT_BUILDERS
from node.cli import main
from tests.conftest import KEYS, NAME, NOW, free_port_block, make_consortium

KEY = MembersKey(hashlib.sha512(b"markex test members key").digest())
OTHER_KEY = MembersKey(hashlib.sha512(b"another members key").digest())
DAY = 86_400_000
HOUR = 3_600_000
SUB = "+8613800000001"        # carrier-1's (+86138)
SUB2 = "+8613900000002"       # carrier-1's (+86139)
PORTED = "+8613812345678"     # under carrier-1's +86138, listed whole under carrier-2
USCC = "91110000600037341" + uscc_check_char("91110000600037341")


def cst(text: str) -> int:
    """An instant given in China Standard Time (ISO 8601 without zone), in ms."""
    t = datetime.fromisoformat(text + "+08:00")
    return int(t.timestamp() * 1000)


def keyed(cons: Consortium, key: MembersKey = KEY) -> Consortium:
    return dataclasses.replace(cons, members_key_id=key.id).with_members_key(key)


@pytest.fixture
def cons() -> Consortium:
    return keyed(make_consortium())


def pref(number: str = SUB, *refuse: str, key: MembersKey = KEY, **kw: object) -> Preference:
    return Preference(key.seal(number), key.id, tuple(refuse), **kw)  # type: ignore[arg-type]


def line(number: str, industry: str = "real-estate", *, prefix: bool = False,
         enterprise: str = "Sunshine Homes") -> MarketerLine:
    return MarketerLine(number, prefix, enterprise, USCC, industry)


class Feeds:
    """Records of several issuers, each chained on its own feed."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, bytes]] = {}
        self.records: list[Record] = []

    def issue(self, issuer: str, payload: object, at: int = NOW) -> Record:
        seq, prev = self.heads.get(issuer, (0, b""))
        rec = Record.issue(KEYS[issuer], issuer, seq + 1, prev, at, payload, consortium=NAME)
        self.heads[issuer] = (seq + 1, rec.id)
        self.records.append(rec)
        return rec


def state_of(records: list[Record]) -> MemoryConsent:
    s = MemoryConsent(KEY)
    s.apply(records)
    return s


def refused(s: MemoryConsent, number: str, at: int, industry: str | None = "real-estate",
            mode: str = "voice") -> bool:
    return refuses(s.preference_at(KEY.seal(number), at), industry, mode, at)


# ====================================================================== who may write what


def test_preference_and_line_are_registered_and_enter_no_view_entry() -> None:
    fields = {t.field: t for t in REGISTRY}
    assert fields["preference"].cls is Preference and fields["marketer_line"].cls is MarketerLine
    assert FACT_BUILDERS[Preference] is None and FACT_BUILDERS[MarketerLine] is None
    assert payload_kind(pref(SUB, "all")) == "preference"
    assert payload_kind(pref(SUB)) == "revocation"


@pytest.mark.parametrize("issuer, payload, error, says", [
    ("internet-1", pref(SUB, "finance"), E.NotAllowed, "internet"),
    ("carrier-1", pref(SUB, "finance", "gambling"), E.UnknownIndustry, "gambling"),
    ("carrier-1", pref(SUB, "all", key=OTHER_KEY), E.WrongMembersKey, OTHER_KEY.id.hex()),
    ("carrier-1", Preference(b"\x01" * 30, KEY.id, ("all",)), SealError, "does not open"),
    ("carrier-2", pref(SUB, "finance"), E.NotAllowed, "served by carrier-1"),
    ("carrier-1", pref(PORTED, "finance"), E.PortedAway, "carrier-2"),
    ("carrier-1", pref(SUB, "finance", effective_from_ms=NOW - 10 * 60_000),
     E.MalformedRecord, "no earlier than it is issued"),
    ("carrier-1", pref(SUB, "finance", effective_from_ms=NOW + 400 * DAY),
     E.MalformedRecord, "preference_max_ahead_ms"),
    ("institute", pref(SUB, "finance", "gambling"), E.UnknownIndustry, "gambling"),
])
def test_a_refused_preference_says_why_and_writes_nothing(
    ledger: NodeLedger, cons: Consortium, issuer: str, payload: Preference,
    error: type[Exception], says: str,
) -> None:
    ledger.consortium = cons
    rec = Feeds().issue(issuer, payload)
    with pytest.raises(error, match=says) as got:
        ledger.append(rec.envelope, NOW)
    assert SUB not in str(got.value) and PORTED not in str(got.value)  # never the number
    assert ledger.size == 0


@pytest.mark.parametrize("issuer, payload", [
    ("carrier-1", pref(SUB, "finance")),
    ("carrier-2", pref(PORTED, "all")),           # the new carrier of a ported number
    ("institute", pref(SUB2, "real-estate", effective_from_ms=NOW + 30 * DAY)),
    ("carrier-1", pref(SUB, "finance", effective_from_ms=NOW - 60_000)),  # within the skew
])
def test_the_serving_carrier_or_the_institute_issues_preferences(
    ledger: NodeLedger, cons: Consortium, issuer: str, payload: Preference
) -> None:
    ledger.consortium = cons
    assert ledger.append(Feeds().issue(issuer, payload).envelope, NOW).status == "accepted"


def test_without_the_members_key_a_carriers_preference_is_refused(ledger: NodeLedger) -> None:
    no_key = dataclasses.replace(make_consortium(), members_key_id=KEY.id)
    ledger.consortium = no_key
    feeds = Feeds()
    with pytest.raises(E.MembersKeyMissing, match="members.key"):
        ledger.append(feeds.issue("carrier-1", pref(SUB, "all")).envelope, NOW)
    assert ledger.size == 0
    # the institute's is accepted with its seal unopened
    assert ledger.append(feeds.issue("institute", pref(SUB, "all")).envelope, NOW).ok


def test_a_time_band_that_does_not_parse_is_refused() -> None:
    for text, says in [("9-", "does not parse"), ("25-26", "hours are 00..24"),
                       ("12-09", "start before it ends"), ("09-12,11-13", "overlap")]:
        with pytest.raises(BadTimeBand, match=says):
            parse_bands(text)
    assert parse_bands("09-12,13:30-18") == ((540, 720), (810, 1080))


@pytest.mark.parametrize("issuer, payload, error, says", [
    ("internet-1", line(SUB), E.NotAllowed, "only carriers"),
    ("institute", line(SUB), E.NotAllowed, "only carriers"),
    ("carrier-2", line(SUB), E.NotAllowed, "held by carrier-1.*\\+86130"),
    ("carrier-1", line("+8613012345678"), E.NotAllowed, "held by carrier-2.*\\+86138"),
    ("carrier-1", line(PORTED), E.NotAllowed, "held by carrier-2"),
    ("carrier-1", line("+8613812", prefix=True), E.NotAllowed, "covers \\+8613812345678"),
    ("carrier-1", line("+86400", prefix=True), E.NotAllowed, "held by no carrier"),
    ("carrier-1", line(SUB, "gambling"), E.UnknownIndustry, "gambling"),
])
def test_a_refused_line_says_why_and_writes_nothing(
    ledger: NodeLedger, cons: Consortium, issuer: str, payload: MarketerLine,
    error: type[Exception], says: str,
) -> None:
    ledger.consortium = cons
    with pytest.raises(error, match=says):
        ledger.append(Feeds().issue(issuer, payload).envelope, NOW)
    assert ledger.size == 0


def test_a_line_needs_a_valid_credit_code() -> None:
    with pytest.raises(BadCreditCode, match="check character"):
        MarketerLine(SUB, False, "Sunshine Homes", USCC[:17] + "0", "real-estate")


@pytest.mark.parametrize("payload", [
    line(SUB), line("+8613900", prefix=True), line("+86139", prefix=True),
    line("+8613813", prefix=True),     # beside the ported number, not covering it
])
def test_a_carrier_registers_lines_within_its_ranges(
    ledger: NodeLedger, cons: Consortium, payload: MarketerLine
) -> None:
    ledger.consortium = cons
    check_issuer(cons, "carrier", "carrier-1", payload)
    assert ledger.append(Feeds().issue("carrier-1", payload).envelope, NOW).ok


# ====================================================================== effect checks


class Node:
    """A ledger with its stored consent state, kept as the node keeps it."""

    def __init__(self, ledger: NodeLedger, cons: Consortium) -> None:
        ledger.consortium = cons
        self.ledger = ledger
        self.state = StoredConsent(ledger.store, KEY)
        ledger.consent = self.state

    def issue(self, payload: object, at: int = NOW) -> Record:
        out = self.ledger.issue(payload, at)  # type: ignore[arg-type]
        assert out.record is not None
        self.state.apply([out.record])
        return out.record

    def receive(self, rec: Record, at: int = NOW) -> None:
        assert self.ledger.append(rec.envelope, at).ok
        self.state.apply([rec])


@pytest.fixture
def node(ledger: NodeLedger, cons: Consortium) -> Node:
    return Node(ledger, cons)


def _refused_by(node: Node, payload: object, error: type[Exception], says: str,
                at: int = NOW) -> None:
    size = node.ledger.size
    with pytest.raises(error, match=says):
        node.issue(payload, at)
    assert node.ledger.size == size  # nothing written


def test_a_revocation_with_nothing_to_revoke_is_refused(node: Node) -> None:
    _refused_by(node, pref(SUB), E.NothingToRevoke, "no refusal in force")
    node.issue(pref(SUB, "finance"))
    node.issue(pref(SUB), NOW + 1)                         # revokes it
    _refused_by(node, pref(SUB), E.NothingToRevoke, "no refusal", NOW + 2)


def test_a_revocation_before_a_refusal_ahead_says_when_to_revoke(node: Node) -> None:
    node.issue(pref(SUB, "finance", effective_from_ms=NOW + 10 * DAY))
    _refused_by(node, pref(SUB), E.NothingToRevoke, "revoke from then on", NOW + 1)
    node.issue(pref(SUB, effective_from_ms=NOW + 10 * DAY), NOW + 2)  # cancels it


def test_a_preference_identical_to_the_one_in_force_is_refused(node: Node) -> None:
    node.issue(pref(SUB, "finance", "real-estate", modes=("voice",)))
    _refused_by(node, pref(SUB, "real-estate", "finance", modes=("voice",)),
                E.SamePreference, "changes nothing", NOW + 1)
    node.issue(pref(SUB, "finance", modes=("voice",)), NOW + 2)   # a different one is fine
    # the same refusal for a day: after it the one in force holds again, so
    # no answer changes
    _refused_by(node, pref(SUB, "finance", modes=("voice",), until_ms=NOW + DAY),
                E.SamePreference, "changes nothing", NOW + 3)
    node.issue(pref(SUB, "all", until_ms=NOW + DAY), NOW + 3)


def test_a_deregistration_of_no_live_registration_of_the_issuers_is_refused(
    node: Node, cons: Consortium
) -> None:
    _refused_by(node, MarketerLine(deregisters=b"\x07" * 32), E.UnknownTarget, "not in this")
    mark = node.issue(Mark("+8613900000009", "fraud"))
    _refused_by(node, MarketerLine(deregisters=mark.id), E.NotALiveLine, "not a marketer")
    theirs = Feeds().issue("carrier-2", line("+8613000000001"))
    node.receive(theirs)
    _refused_by(node, MarketerLine(deregisters=theirs.id), E.NotALiveLine, "carrier-2's")
    mine = node.issue(line(SUB))
    node.issue(MarketerLine(deregisters=mine.id), NOW + 1)
    _refused_by(node, MarketerLine(deregisters=mine.id), E.NotALiveLine,
                "already deregistered", NOW + 2)


@pytest.mark.parametrize("first, second", [
    (line(SUB), line(SUB, "finance", enterprise="Other Co")),       # the same number
    (line(SUB), line("+861380000", prefix=True)),                   # a prefix covering it
    (line("+8613900", prefix=True), line("+8613900000001")),        # a number under a prefix
    (line("+8613900", prefix=True), line("+86139001", prefix=True)),  # a prefix under one
    (line("+8613900", prefix=True), line("+86139", prefix=True)),     # a prefix over one
])
def test_an_overlapping_registration_is_refused(
    node: Node, first: MarketerLine, second: MarketerLine
) -> None:
    node.issue(first)
    _refused_by(node, second, E.LineOverlap, "overlaps", NOW + 1)


def test_a_registration_after_the_overlapping_one_ended_is_taken(node: Node) -> None:
    first = node.issue(line(SUB))
    node.issue(MarketerLine(deregisters=first.id), NOW + 1)
    node.issue(line(SUB, "finance", enterprise="Next Co"), NOW + 2)
    assert node.state.line_at(SUB, NOW + 3).enterprise == "Next Co"  # type: ignore[union-attr]


# ====================================================================== the rules


def test_rule_1_refusal_of_one_industry_and_of_all(cons: Consortium) -> None:
    f = Feeds()
    f.issue("carrier-1", pref(SUB, "real-estate"))
    f.issue("carrier-1", pref(SUB2, "all"))
    s = state_of(f.records)
    table = [  # number, industry, refused?
        (SUB, "real-estate", True), (SUB, "finance", False), (SUB, None, False),
        (SUB2, "real-estate", True), (SUB2, "finance", True), (SUB2, None, True),
        ("+8613800000003", "real-estate", False),
    ]
    for number, industry, want in table:
        assert refused(s, number, NOW + 1, industry) is want, (number, industry)
    assert refused(s, SUB, NOW - 1) is False   # before it takes effect


def test_rule_5_modes_time_bands_and_day_types_in_china_standard_time() -> None:
    f = Feeds()
    monday = cst("2026-09-21T00:00:00")   # 2026-09-21 is a Monday
    f.issue("carrier-1", pref(SUB, "all", allowed=parse_bands("09-12,14:30-18"),
                              days=("weekday",)), monday)
    f.issue("carrier-1", pref(SUB2, "finance", modes=("sms",), allowed=((600, 660),),
                              days=("sat",)), monday)
    s = state_of(f.records)
    table = [  # number, CST instant, mode, refused?
        (SUB, "2026-09-21T08:59:59", "voice", True),
        (SUB, "2026-09-21T09:00:00", "voice", False),     # inside 09-12, a weekday
        (SUB, "2026-09-21T11:59:59", "sms", False),
        (SUB, "2026-09-21T12:00:00", "voice", True),      # a band's end is outside it
        (SUB, "2026-09-21T14:30:00", "voice", False),
        (SUB, "2026-09-25T17:00:00", "voice", False),     # Friday
        (SUB, "2026-09-26T10:00:00", "voice", True),      # Saturday: no allowance
        (SUB, "2026-09-27T10:00:00", "voice", True),      # Sunday
        (SUB2, "2026-09-26T10:30:00", "voice", False),    # voice is not refused at all
        (SUB2, "2026-09-26T10:30:00", "sms", False),      # Saturday 10-11 allowed
        (SUB2, "2026-09-26T11:00:00", "sms", True),
        (SUB2, "2026-09-27T10:30:00", "sms", True),       # Sunday is not "sat"
    ]
    for number, when, mode, want in table:
        assert refused(s, number, cst(when), "finance", mode) is want, (number, when, mode)
    # The same instant in UTC: 01:00Z on Monday is 09:00 CST (allowed); 23:59Z
    # on Friday is 07:59 CST on Saturday (refused).
    assert refused(s, SUB, int(datetime(2026, 9, 21, 1, tzinfo=UTC).timestamp() * 1000),
                   "finance") is False
    assert refused(s, SUB, int(datetime(2026, 9, 25, 23, 59, tzinfo=UTC).timestamp() * 1000),
                   "finance") is True


def test_rule_3_a_revocation_in_force_refuses_nothing_and_is_returned() -> None:
    f = Feeds()
    f.issue("carrier-1", pref(SUB, "all"))
    rev = f.issue("carrier-1", pref(SUB), NOW + HOUR)
    s = state_of(f.records)
    assert refused(s, SUB, NOW + 1) is True
    got = s.preference_at(KEY.seal(SUB), NOW + HOUR)
    assert got is not None and got.id == rev.id and got.refuse == ()
    assert refused(s, SUB, NOW + HOUR) is False


def test_rule_2_the_latest_effective_wins_whichever_arrived_first() -> None:
    f = Feeds()
    older = f.issue("carrier-1", pref(SUB, "finance"))
    newer = f.issue("institute", pref(SUB, "real-estate"), NOW + HOUR)
    # effective earlier though issued later: it does not win after `newer` takes effect
    late = f.issue("carrier-1", pref(SUB, "all", effective_from_ms=NOW + 30 * 60_000),
                   NOW + 2 * HOUR)
    for order in (f.records, f.records[::-1], [f.records[1], f.records[2], f.records[0]]):
        s = state_of(order)
        sealed = KEY.seal(SUB)
        assert s.preference_at(sealed, NOW + 1).id == older.id  # type: ignore[union-attr]
        assert s.preference_at(sealed, NOW + 31 * 60_000).id == late.id  # type: ignore
        assert s.preference_at(sealed, NOW + HOUR).id == newer.id  # type: ignore[union-attr]


def test_rule_2_ties_go_to_the_later_issued_then_the_issuer_then_the_id() -> None:
    def fact(issued: int, issuer: str, rid: bytes) -> PreferenceFact:
        return PreferenceFact(rid, issuer, 1, issued, ("all",), (), (), (), NOW, 0)
    from ledger.consent.facts import Subscriber
    from ledger.consent.rules import kept_preferences
    facts = [fact(NOW, "institute", b"\x02" * 32), fact(NOW, "carrier-1", b"\x09" * 32),
             fact(NOW - 1, "institute", b"\xff" * 32), fact(NOW, "institute", b"\x01" * 32)]
    sub = Subscriber(kept_preferences(facts))
    assert in_force(sub, NOW).id == b"\x02" * 32  # type: ignore[union-attr]


def test_rule_4_a_preference_with_an_end_lets_the_one_it_overrode_hold_again() -> None:
    f = Feeds()
    f.issue("carrier-1", pref(SUB, "all"))
    f.issue("carrier-1", pref(SUB, "finance", until_ms=NOW + DAY), NOW + 1)
    s = state_of(f.records)
    assert refused(s, SUB, NOW + HOUR, "real-estate") is False
    assert refused(s, SUB, NOW + DAY, "real-estate") is True


def test_rule_4_a_reassignment_voids_every_preference_effective_before_it() -> None:
    f = Feeds()
    f.issue("carrier-1", pref(SUB, "all"))
    ahead = f.issue("institute", pref(SUB, "finance", effective_from_ms=NOW + 10 * DAY))
    f.issue("carrier-1", Reassignment(SUB, NOW + 5 * DAY), NOW + 5 * DAY)
    after = f.issue("carrier-1", pref(SUB, "real-estate"), NOW + 6 * DAY)
    for order in (f.records, f.records[::-1]):
        s = state_of(order)
        sealed = KEY.seal(SUB)
        assert refused(s, SUB, NOW + 5 * DAY - 1, "real-estate") is True  # before it: holds
        assert s.preference_at(sealed, NOW + 5 * DAY) is None            # the new holder's clean
        assert s.preference_at(sealed, NOW + 6 * DAY).id == after.id  # type: ignore[union-attr]
        assert s.preference_at(sealed, NOW + 10 * DAY).id == ahead.id  # type: ignore # after R
        assert refused(s, SUB2, NOW + 6 * DAY) is False


def test_rule_9_porting_keeps_the_subscribers_refusal(ledger: NodeLedger) -> None:
    """Before the port carrier-1 served the number and issued the refusal;
    after it the configuration lists the number under carrier-2."""
    before = keyed(make_consortium())
    before = dataclasses.replace(before, number_ranges={
        "carrier-1": ("+86138", "+86139", "+8610"), "carrier-2": ("+86130",)})
    after = keyed(make_consortium())
    node = Node(ledger, before)
    old = node.issue(pref(PORTED, "real-estate"))
    ledger.consortium = after                     # the port: a new signed configuration
    assert node.state.preference_at(KEY.seal(PORTED), NOW + 1).id == old.id  # type: ignore
    with pytest.raises(E.PortedAway):             # carrier-1 issues no more for it
        node.issue(pref(PORTED, "all"), NOW + 1)
    f = Feeds()
    f.heads["carrier-1"] = (1, old.id)
    new = f.issue("carrier-2", pref(PORTED, "finance"), NOW + 2)
    node.receive(new, NOW + 2)                    # the new carrier changes it
    assert node.state.preference_at(KEY.seal(PORTED), NOW + 3).id == new.id  # type: ignore
    # and the rebuilt state, from the ledger after the port, is the same
    again = MemoryConsent(KEY)
    catch_up(again, ledger)
    assert again.preference_at(KEY.seal(PORTED), NOW + 1).id == old.id  # type: ignore


def test_rule_6_a_subscriber_keeps_its_latest_preferences_only() -> None:
    f = Feeds()
    first = f.issue("carrier-1", pref(SUB, "all"))
    for i in range(1, KEEP_PREFERENCES + 1):
        f.issue("carrier-1", pref(SUB, "finance", until_ms=NOW + i * HOUR + 1), NOW + i)
    s = state_of(f.records)
    kept = s.subscriber(KEY.seal(SUB)).preferences
    assert len(kept) == KEEP_PREFERENCES and first.id not in {p.id for p in kept}
    # the dropped one has no effect: once every override ends, nothing is in force
    assert s.preference_at(KEY.seal(SUB), NOW + 10 * HOUR) is None


def test_rules_7_and_8_lines_exact_number_then_prefix_and_deregistration() -> None:
    f = Feeds()
    num = f.issue("carrier-1", line(SUB, "real-estate"))
    pre = f.issue("carrier-1", line("+8613900", "finance", prefix=True))
    f.issue("carrier-1", MarketerLine(deregisters=pre.id), NOW + DAY)
    f.issue("carrier-2", MarketerLine(deregisters=num.id), NOW + 1)  # not carrier-2's: no effect
    s = state_of(f.records)
    table = [  # number, at, the registration holding it (None: none)
        (SUB, NOW - 1, None), (SUB, NOW, num.id), (SUB, NOW + 2 * DAY, num.id),
        ("+8613900123456", NOW + 1, pre.id), ("+8613900123456", NOW + DAY, None),
        ("+8613901123456", NOW + 1, None), ("+8613800000002", NOW + 1, None),
    ]
    for number, at, want in table:
        got = s.line_at(number, at)
        assert (got.id if got else None) == want, (number, at)
    assert s.line(pre.id).ended_at == NOW + DAY  # type: ignore[union-attr]


def test_rule_8_overlaps_that_reached_the_state_resolve_to_the_earliest() -> None:
    """Two nodes each took a registration of the same numbers at once."""
    f = Feeds()
    wide = f.issue("carrier-1", line("+8613800", "finance", prefix=True), NOW + 5)
    exact = f.issue("carrier-1", line(SUB, "real-estate"), NOW + 6)  # under wide: void
    early = Feeds().issue("carrier-1", line("+86138000", "education", prefix=True), NOW + 1)
    for order in ([wide, exact], [exact, wide], [early, exact, wide], [wide, early, exact]):
        s = state_of(order)
        holder = early if early in order else wide
        assert s.line_at(SUB, NOW + 10).id == holder.id  # type: ignore[union-attr]
    # after the winner ends, the void one still holds nothing
    f.issue("carrier-1", MarketerLine(deregisters=wide.id), NOW + 20)
    s = state_of(f.records)
    assert s.line_at(SUB, NOW + 21) is None
    assert s.line(exact.id).ended_at == exact.issued_at_ms  # type: ignore[union-attr]


# ====================================================================== determinism, storage


def _scenario() -> list[Record]:
    f = Feeds()
    rng = random.Random(15)
    numbers = [f"+86138{i:08d}" for i in range(12)] + [f"+86139{i:08d}" for i in range(8)]
    t = NOW
    for _ in range(120):
        t += rng.randrange(1, 3 * HOUR)
        n = rng.choice(numbers)
        kind = rng.random()
        issuer = rng.choice(("carrier-1", "institute"))
        if kind < 0.55:
            refuse = rng.choice([("all",), ("finance",), ("real-estate", "finance"), ()])
            kw = {} if not refuse else rng.choice([{}, {"until_ms": t + 5 * HOUR},
                                                   {"modes": ("sms",)}])
            f.issue(issuer, pref(n, *refuse, **kw), t)  # type: ignore[arg-type]
        elif kind < 0.65:
            f.issue("carrier-1", Reassignment(n, t - rng.randrange(0, HOUR)), t)
        elif kind < 0.85:
            wide = rng.random() < 0.3
            f.issue("carrier-1", line(n[:9] if wide else n, prefix=wide), t)
        else:
            regs = [r for r in f.records if isinstance(r.payload, MarketerLine)
                    and not r.payload.is_deregistration]
            if regs:
                f.issue("carrier-1", MarketerLine(deregisters=rng.choice(regs).id), t)
    return f.records


def _answers(s: object, records: list[Record]) -> list[object]:
    numbers = sorted({r.payload.number for r in records if hasattr(r.payload, "number")
                      and not getattr(r.payload, "prefix", False)})
    end = max(r.issued_at_ms for r in records)
    out: list[object] = []
    for t in range(NOW, end + DAY, 2 * HOUR):
        for n in numbers:
            p = s.preference_at(KEY.seal(n), t)  # type: ignore[attr-defined]
            ln = s.line_at(n, t)  # type: ignore[attr-defined]
            out.append((p.id if p else None, ln.id if ln else None))
    return out


def _batches(records: list[Record], rng: random.Random) -> Iterator[list[Record]]:
    shuffled = records[:]
    rng.shuffle(shuffled)
    i = 0
    while i < len(shuffled):
        k = rng.randrange(1, 20)
        yield shuffled[i : i + k]
        i += k


def test_shuffled_delivery_in_any_batches_gives_the_same_answers(tmp_path: Path) -> None:
    records = _scenario()
    want = _answers(state_of(records), records)
    assert any(p for p, _ in want) and any(ln for _, ln in want)  # the scenario has both
    rng = random.Random(7)
    for trial in range(4):
        mem = MemoryConsent(KEY)
        with Store(tmp_path / f"db{trial}") as store:
            stored = StoredConsent(store, KEY)
            for batch in _batches(records, rng):
                mem.apply(batch)
                stored.apply(batch)
            stored.apply(records[:10])  # duplicates change nothing
            assert _answers(mem, records) == want
            assert _answers(stored, records) == want
        with Store(tmp_path / f"db{trial}") as store:   # reopened: the same answers
            assert _answers(StoredConsent(store, KEY), records) == want


def test_catch_up_from_the_ledger_and_a_store_built_with_another_key(
    ledger: NodeLedger, cons: Consortium
) -> None:
    ledger.consortium = cons
    f = Feeds()
    for r in [f.issue("carrier-1", pref(SUB, "all")), f.issue("institute", pref(SUB2, "finance")),
              f.issue("carrier-1", line(SUB))]:
        ledger.append(r.envelope, NOW)
    stored = StoredConsent(ledger.store, KEY)
    assert catch_up(stored, ledger) == 3 and catch_up(stored, ledger) == 0
    assert stored.vector == {"carrier-1": 2, "institute": 1}
    assert refused(stored, SUB, NOW + 1) and stored.line_at(SUB, NOW + 1) is not None  # type: ignore
    # a state stored under another members' key is cleared, then rebuilt
    other = StoredConsent(ledger.store, OTHER_KEY)
    assert other.vector == {} and other.line_at(SUB, NOW + 1) is None
    assert catch_up(other, ledger) == 3


def test_the_view_ignores_preferences_and_lines(cons: Consortium) -> None:
    f = Feeds()
    f.issue("carrier-1", pref(SUB, "all"))
    f.issue("carrier-1", line(SUB))
    view = NationalView(cons)
    view.apply(f.records)
    assert view.count == 0 and view.lookup(SUB, NOW) is None and view.ignored == 2


# ====================================================================== the node, the audit


@pytest.fixture
def members(tmp_path: Path) -> tuple[Path, Consortium, NodeConfig]:
    """A local consortium (init writes every member's members.key) and carrier-1's node.toml."""
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                    now=datetime.now(UTC))
    cfg = NodeConfig.for_participant(d, "carrier-1")
    return d, load_consortium(cfg), cfg


def _wall() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def test_the_node_answers_from_its_consent_state_as_soon_as_it_has_issued(
    members: tuple[Path, Consortium, NodeConfig]
) -> None:
    from node.server import Node

    _, cons, cfg = members
    key = cons.members_key
    assert key is not None
    node = Node(cfg).start()
    try:
        issued = node.core.issue(Preference(key.seal(SUB), key.id, ("real-estate",)))
        assert issued.record is not None
        # answered only after the subscribers ran: the node's own screen has it
        got = node.consent.preference_at(key.seal(SUB), _wall() + 1)
        assert got is not None and got.id == issued.record.id
        reg = node.core.issue(line(SUB2))
        assert node.consent.line_at(SUB2, _wall() + 1).id == reg.record.id  # type: ignore
        with pytest.raises(E.SamePreference):  # the effect check reads the node's state
            node.core.issue(Preference(key.seal(SUB), key.id, ("real-estate",)))
        with pytest.raises(E.LineOverlap):
            node.core.issue(line(SUB2, "finance"))
        size = node.core.ledger.size
    finally:
        node.stop()
    # a restart reads the stored state; one whose state was lost rebuilds it
    node = Node(cfg).start()
    try:
        assert node.consent.preference_at(key.seal(SUB), _wall()).id == issued.record.id  # type: ignore
        assert node.core.ledger.size == size
    finally:
        node.stop()
    with Store(cfg.data_dir) as store:
        b = store.batch()
        for cf in ("consent", "consentline", "consentmeta"):
            b.delete_range(cf, b"", b"\xff" * 64)
        store.write(b)
    node = Node(cfg).start()
    try:
        assert node.consent.preference_at(key.seal(SUB), _wall()).id == issued.record.id  # type: ignore
        assert node.consent.line_at(SUB2, _wall()).id == reg.record.id  # type: ignore
    finally:
        node.stop()


def test_a_failed_consent_update_is_caught_up_on_the_next_tick(
    ledger: NodeLedger, cons: Consortium, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.consentkeeper import ConsentKeeper

    ledger.consortium = cons
    keeper = ConsentKeeper(ledger, KEY)
    keeper.start()
    state = keeper.state
    assert state is not None
    out = ledger.issue(pref(SUB, "all"), NOW)
    real = state.apply
    monkeypatch.setattr(state, "apply", lambda records: (_ for _ in ()).throw(
        E.StorageFailure("disk full")))
    with pytest.raises(E.StorageFailure):
        keeper.apply([out.record])  # type: ignore[list-item]
    assert keeper.preference_at(KEY.seal(SUB), NOW + 1) is None and keeper.lag_records() == 1
    monkeypatch.setattr(state, "apply", real)
    keeper.tick()
    assert keeper.preference_at(KEY.seal(SUB), NOW + 1).id == out.record.id  # type: ignore
    assert keeper.lag_records() == 0


def test_a_node_without_the_members_key_keeps_no_consent_state(ledger: NodeLedger) -> None:
    from node.consentkeeper import ConsentKeeper

    keeper = ConsentKeeper(ledger, None)
    keeper.start()
    with pytest.raises(E.MembersKeyMissing, match="members_key"):
        keeper.preference_at(KEY.seal(SUB), NOW)


def _store_with_consent(cfg: NodeConfig, cons: Consortium) -> int:
    """carrier-1's store: its preference, its line, the institute's preference."""
    key = cons.members_key
    assert key is not None
    signer = SigningKey.load(cfg.signing_key)
    led = NodeLedger(Store(cfg.data_dir), cons, "carrier-1", signer)
    now = _wall()
    led.issue(Preference(key.seal(SUB), key.id, ("all",)), now)
    led.issue(line(SUB2), now)
    led.sign_checkpoint()
    size = led.size
    led.close()
    return size


def test_the_offline_audit_checks_preferences_and_lines_with_the_members_key(
    members: tuple[Path, Consortium, NodeConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    d, cons, cfg = members
    _store_with_consent(cfg, cons)
    rep = audit.audit_store(cfg.data_dir, cons, "carrier-1")
    assert rep.ok and rep.counts["verified"] == 2, rep.to_json()
    assert not [w for w in rep.warnings if w.kind in NOTES]
    # a pool's worker checks alike: it is given the members' key with the configuration
    from ledger.audit.envelopes import _worker_check
    with Store(cfg.data_dir) as store:
        envs = NodeLedger(store, cons, "carrier-1").entries(0, 2)
    key = cons.members_key.key  # type: ignore[union-attr]
    assert [c[5] for c in _worker_check((cons.raw, key, envs, True, False))] == [None, None]
    assert [c[5] for c in _worker_check((cons.raw, b"", envs, True, False))] == [
        "members-key", None]
    # from the command line, with node.toml's members' key
    pin = ["--institute-key", base64.b64encode(cfg.institute_key).decode()]
    args = ["audit", "--data-dir", str(cfg.data_dir), "--consortium", str(d), *pin, "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and not [w for w in out["warnings"] if w["kind"] in NOTES]
    # without the key: said in the report, as a note
    cfg.members_key.rename(cfg.members_key.with_suffix(".away"))  # type: ignore[union-attr]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    notes = [w for w in out["warnings"] if w["kind"] == "members-key"]
    assert out["ok"] is True and len(notes) == 1 and "members_key" in notes[0]["detail"]


def test_the_audit_reports_a_preference_its_issuer_may_not_write(
    members: tuple[Path, Consortium, NodeConfig]
) -> None:
    """A store written under a configuration where carrier-1 served SUB and
    SUB2, audited under one where SUB ported to carrier-2 (a note) and SUB2
    belongs to nobody (a failure)."""
    _, cons, cfg = members
    mine = cons.number_ranges["carrier-1"]
    at_write = dataclasses.replace(cons, number_ranges={"carrier-1": (*mine, "+8617")})
    key = cons.members_key
    assert key is not None
    led = NodeLedger(Store(cfg.data_dir), at_write, "carrier-1", SigningKey.load(cfg.signing_key))
    now = _wall()
    led.issue(Preference(key.seal(SUB), key.id, ("all",)), now)
    led.issue(Preference(key.seal("+8617012345678"), key.id, ("all",)), now)
    led.sign_checkpoint()
    led.close()
    others = {cid: r for cid, r in cons.number_ranges.items() if cid != "carrier-1"}
    later = dataclasses.replace(cons, number_ranges={
        **others, "carrier-1": mine, "carrier-x": (SUB,)})
    rep = audit.audit_store(cfg.data_dir, later, "carrier-1", workers=0)
    kinds = [(f.kind, f.index) for f in rep.findings]
    assert kinds == [("role", 1)], rep.to_json()
    assert [(w.kind, w.index) for w in rep.warnings if w.kind in NOTES] == [("ported", 0)]


def test_both_states_and_the_keeper_are_consent_readers(ledger: NodeLedger) -> None:
    from ledger.consent import ConsentReader
    from node.consentkeeper import ConsentKeeper

    readers: list[ConsentReader] = [MemoryConsent(KEY), StoredConsent(ledger.store, KEY),
                                    ConsentKeeper(ledger, KEY)]
    assert all(callable(r.preference_at) and callable(r.line_at) for r in readers)


def test_a_stored_entry_that_does_not_decode_is_a_storage_failure(ledger: NodeLedger) -> None:
    from ledger.consent.codec import decode_line, decode_subscriber, encode_subscriber

    f = Feeds()
    f.issue("carrier-1", pref(SUB, "all", modes=("sms",), allowed=((60, 120),), days=("sun",)))
    s = state_of(f.records)
    raw = encode_subscriber(s.subscriber(KEY.seal(SUB)))
    assert decode_subscriber(raw) == s.subscriber(KEY.seal(SUB))
    for bad in (raw[:-1], raw + b"\x00", b"\x02" + raw[1:], b""):
        with pytest.raises(E.StorageFailure, match="consent entry"):
            decode_subscriber(bad)
    with pytest.raises(E.StorageFailure, match="line record"):
        decode_line(b"\x03" + b"\x00" * 60)
