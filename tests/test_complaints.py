"""Complaints, handlings, sanctions (docs/complaints.md): who may write them,
their field rules and time bounds, the issuing node's effect checks (each a
typed error with nothing written), the complaint state's scenarios (queue,
forwarding, SLA at explicit times, the bad list), the view's complaint rule,
and shuffled delivery giving one state."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keys import ConfigError
from keys.consortium import Consortium, Participant, Policy
from keys.layout import init_consortium
from ledger import errors as E
from ledger.complaints import CLOSED, OPEN, OVERDUE, ComplaintState, catch_up
from ledger.log import NodeLedger
from ledger.payloads import REGISTRY, check_issuer, payload_kind
from ledger.payloads.complaint import Complaint, complainant_tag
from ledger.payloads.handling import Handling
from ledger.payloads.line import BadCreditCode, uscc_check_char
from ledger.payloads.mark import Mark
from ledger.payloads.sanction import Sanction
from ledger.record import Record
from ledger.rules import time_violation
from ledger.sealing import COMPLAINANT, MembersKey, SealError
from ledger.store import Store
from ledger.view import NationalView
from ledger.view.facts import FACT_BUILDERS
from ledger.view.parts import MAX_ENTRY_COMPLAINTS, PER_COMPLAINANT
from tests.conftest import NAME, NOW, fixed_key

KEY = MembersKey(hashlib.sha512(b"markex test members key").digest())
OTHER_KEY = MembersKey(hashlib.sha512(b"another members key").digest())
HOUR = 3_600_000
DAY = 24 * HOUR
ROLES = {"institute": "institute", "carrier-1": "carrier", "carrier-2": "carrier",
         "internet-1": "internet", "complaints-1": "complaints", "regulator-1": "regulator"}
WEIGHTS = {"institute": 5, "carrier": 2, "internet": 1, "complaints": 0, "regulator": 0}
KEYS = {pid: fixed_key(pid) for pid in ROLES}
C1_NUMBER = "+8613800000001"     # carrier-1's (+86138)
C2_NUMBER = "+8613000000002"     # carrier-2's (+86130)
PORTED = "+8613812345678"        # under carrier-1's +86138, listed whole under carrier-2
USCC = "91110000600037341" + uscc_check_char("91110000600037341")
DIGEST = hashlib.sha256("他推销贷款，一天打了三次".encode()).digest()


def make_cons(**policy: object) -> Consortium:
    parts = tuple(Participant(pid, role, KEYS[pid].public_bytes, WEIGHTS[role], "", "")
                  for pid, role in ROLES.items())
    ranges = {"carrier-1": ("+86138", "+86139"),
              "carrier-2": ("+86130", "+86131", "+8613812345678")}
    cons = Consortium(NAME, parts, ranges, policy=Policy(**policy),  # type: ignore[arg-type]
                      members_key_id=KEY.id)
    return cons.with_members_key(KEY)


CONS = make_cons()


def complaint(number: str = C1_NUMBER, who: str = "+8613900000009", *,
              call_at: int = NOW - HOUR, category: str = "marketing", channel: str = "app",
              to: str | None = None, key: MembersKey = KEY) -> Complaint:
    return Complaint(number, category, call_at, channel, key.seal(who, COMPLAINANT), key.id,
                     DIGEST, to if to is not None else (CONS.carrier_for(number) or ""))


def confirmed(*cids: bytes, mark: bytes = b"", **kw: int) -> Handling:
    return Handling(cids, "confirmed", action="mark" if mark else "warning", mark_id=mark, **kw)


def forward(*cids: bytes, to: str) -> Handling:
    return Handling(cids, "not-ours", forward_to=to)


def listing(at: int = NOW - HOUR, doc: str = "工信罚〔2026〕12号",
            delist: bool = False) -> Sanction:
    return Sanction("北京某某营销有限公司", USCC, "京B2-20260001", "" if delist else "骚扰电话",
                    doc, at, delist)


class Feeds:
    """Records of several issuers, each chained on its own feed (no ledger)."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, bytes]] = {}
        self.records: list[Record] = []

    def issue(self, issuer: str, payload: object, at: int = NOW) -> Record:
        seq, prev = self.heads.get(issuer, (0, b""))
        rec = Record.issue(KEYS[issuer], issuer, seq + 1, prev, at, payload, consortium=NAME)
        self.heads[issuer] = (seq + 1, rec.id)
        self.records.append(rec)
        return rec


def state_of(records: list[Record], cons: Consortium = CONS) -> ComplaintState:
    s = ComplaintState(cons)
    s.apply(records)
    return s


class Net:
    """One ledger per issuing participant, each with its complaint state wired
    as node/complaintkeeper.py wires it; every record reaches every ledger."""

    def __init__(self, tmp: Path, cons: Consortium = CONS) -> None:
        self.ledgers = {pid: NodeLedger(Store(tmp / pid), cons, pid, KEYS[pid])
                        for pid in ("complaints-1", "carrier-1", "carrier-2", "regulator-1",
                                    "internet-1")}
        self.states = {pid: ComplaintState(cons) for pid in self.ledgers}
        for pid, led in self.ledgers.items():
            led.complaints = self.states[pid]

    def issue(self, pid: str, payload: object, at: int = NOW) -> Record:
        out = self.ledgers[pid].issue(payload, at)  # type: ignore[arg-type]
        assert out.record is not None
        for other, led in self.ledgers.items():
            if other != pid:
                assert led.append(out.record.envelope, at).ok
            self.states[other].apply([out.record])
        return out.record

    def refused(self, pid: str, payload: object, error: type[Exception], says: str,
                at: int = NOW) -> None:
        sizes = {p: led.size for p, led in self.ledgers.items()}
        with pytest.raises(error, match=says):
            self.issue(pid, payload, at)
        assert {p: led.size for p, led in self.ledgers.items()} == sizes  # nothing written

    def close(self) -> None:
        for led in self.ledgers.values():
            led.close()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


# ====================================================================== roles and init


def test_init_makes_the_new_participants_only_when_asked(tmp_path: Path) -> None:
    now = datetime(2026, 9, 21, tzinfo=UTC)
    plain = init_consortium(tmp_path / "a", carriers=1, internet=0, base_port=9000, now=now)
    assert {p.role for p in plain.participants} == {"institute", "carrier", "auditor",
                                                    "callcenter"}
    cons = init_consortium(tmp_path / "b", carriers=2, internet=1, base_port=9100, now=now,
                           complaints=1, regulators=1)
    by = cons.by_id
    assert (by["complaints-1"].role, by["complaints-1"].name) == ("complaints", "12321 centre")
    assert (by["regulator-1"].role, by["regulator-1"].name) == (
        "regulator", "Communication administration")
    # They run nodes (endpoints, node.toml, members' key) after the others, weight 0.
    for pid in ("complaints-1", "regulator-1"):
        assert by[pid].member_endpoint and by[pid].weight == 0
        assert (tmp_path / "b" / pid / "node.toml").exists()
        assert (tmp_path / "b" / pid / "members.key").exists()
        assert by[pid] in cons.witnesses
    ports = [int(p.member_endpoint.rsplit(":", 1)[1]) for p in cons.participants
             if p.member_endpoint]
    assert ports == [9100, 9102, 9104, 9106, 9108, 9110]  # institute, carriers, internet, new
    with pytest.raises(ConfigError, match="complaints centres must be 0 or more"):
        init_consortium(tmp_path / "c", now=now, complaints=-1)


def test_cli_init_defaults_to_one_centre_and_one_regulator(tmp_path: Path) -> None:
    from node.cli import main

    assert main(["consortium", "init", str(tmp_path / "c"), "--carriers", "1", "--internet",
                 "0", "--base-port", "9300", "--json"]) == 0
    obj = json.loads((tmp_path / "c" / "consortium.json").read_text())
    roles = {p["id"]: p["role"] for p in obj["participants"]}
    assert roles["complaints-1"] == "complaints" and roles["regulator-1"] == "regulator"
    assert main(["consortium", "init", str(tmp_path / "d"), "--carriers", "1", "--internet",
                 "0", "--complaints", "0", "--regulators", "0", "--base-port", "9400"]) == 0
    obj = json.loads((tmp_path / "d" / "consortium.json").read_text())
    assert not {"complaints", "regulator"} & {p["role"] for p in obj["participants"]}


@pytest.mark.parametrize("values, says", [
    ({"complaint_risk": "none"}, "complaint_risk is 'none'"),
    ({"complaint_risk_complainants": 17}, "complaint_risk_complainants is 17"),
    ({"complaint_close_ms": HOUR, "complaint_ack_ms": DAY}, "complaint_close_ms"),
    ({"complaint_window_ms": 0}, "complaint_window_ms is 0"),
    ({"complaint_ack_ms": "24h"}, "complaint_ack_ms must be an integer"),
])
def test_complaint_policy_values_are_checked(values: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Policy(**values)  # type: ignore[arg-type]


def test_policy_defaults_round_trip() -> None:
    p = Policy()
    assert (p.complaint_window_ms, p.complaint_ack_ms, p.complaint_close_ms) == (
        7 * DAY, 24 * HOUR, 5 * DAY)
    assert (p.complaint_risk_complainants, p.complaint_risk_window_ms, p.complaint_risk) == (
        5, 10 * DAY, "medium")
    assert Policy.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert Policy.from_json({}) == p  # an older file gets the defaults


# ====================================================================== who may write what


def test_the_roles_that_issue_only_their_own_payloads_are_one_list() -> None:
    from keys.consortium import ISSUES_ONLY_OWN
    from ledger.payloads import ROLE_PAYLOADS

    assert set(ROLE_PAYLOADS) == ISSUES_ONLY_OWN == {"complaints", "regulator"}


def test_the_three_payloads_are_registered() -> None:
    fields = {t.field: t.cls for t in REGISTRY}
    assert (fields["complaint"], fields["handling"], fields["sanction"]) == (
        Complaint, Handling, Sanction)
    assert FACT_BUILDERS[Handling] is None and FACT_BUILDERS[Sanction] is None
    assert FACT_BUILDERS[Complaint] is not None
    assert [payload_kind(p) for p in (complaint(), forward(bytes(32), to="carrier-2"),
                                      listing(), listing(delist=True))] == [
        "complaint", "handling", "sanction", "delisting"]


ISSUER_CASES = [
    # (issuer, payload, error or None, message)
    ("complaints-1", complaint(), None, ""),
    ("carrier-1", complaint(), E.NotAllowed, "only the complaints centre"),
    ("institute", complaint(), E.NotAllowed, "only the complaints centre"),
    ("complaints-1", complaint(to="carrier-2"), E.WrongAddressee, "served by carrier-1"),
    ("complaints-1", complaint(PORTED, to="carrier-1"), E.WrongAddressee, "served by carrier-2"),
    ("complaints-1", complaint("+8618600000001", to="carrier-1"), E.WrongAddressee,
     "no carrier serves"),
    ("complaints-1", complaint(category="spam"), E.UnknownCategory, "not in the taxonomy"),
    ("complaints-1", complaint("+86110", to="carrier-1"), E.UnmarkableNumber, "protected"),
    ("complaints-1", complaint(key=OTHER_KEY), E.WrongMembersKey, "not the key in force"),
    ("complaints-1", Mark(C1_NUMBER, "fraud"), E.NotAllowed, "complaints only"),
    ("regulator-1", Mark(C1_NUMBER, "fraud"), E.NotAllowed, "sanctions only"),
    ("carrier-1", forward(bytes(32), to="carrier-2"), None, ""),
    ("complaints-1", forward(bytes(32), to="carrier-2"), E.NotAllowed, "complaints only"),
    ("internet-1", forward(bytes(32), to="carrier-2"), E.NotAllowed, "only carriers handle"),
    ("carrier-1", forward(bytes(32), to="internet-1"), E.NotAllowed, "not one in the"),
    ("carrier-1", forward(bytes(32), to="carrier-1"), E.NotAllowed, "not itself"),
    ("regulator-1", listing(), None, ""),
    ("institute", listing(), E.NotAllowed, "only the regulator"),
    ("carrier-1", listing(), E.NotAllowed, "only the regulator"),
]


@pytest.mark.parametrize("issuer, payload, error, says", ISSUER_CASES)
def test_who_may_write_what(issuer: str, payload: object, error: type[Exception] | None,
                            says: str) -> None:
    role = CONS.by_id[issuer].role
    if error is None:
        check_issuer(CONS, role, issuer, payload)  # type: ignore[arg-type]
    else:
        with pytest.raises(error, match=says):
            check_issuer(CONS, role, issuer, payload)  # type: ignore[arg-type]


FIELD_CASES = [
    (lambda: complaint(channel="fax"), "channel is one of web, app, phone, wechat"),
    (lambda: dataclasses.replace(complaint(), complainant=b"+8613900000009"), "sealed number"),
    (lambda: dataclasses.replace(complaint(), description_digest=b"text"), "SHA-256 digest"),
    (lambda: dataclasses.replace(complaint(), call_at_ms=0), "time of the call"),
    (lambda: dataclasses.replace(complaint(), number="not a number"), "phone number"),
    (lambda: Handling((), "confirmed"), "1..64 complaints"),
    (lambda: Handling((bytes(32),) * 2, "confirmed"), "same complaint twice"),
    (lambda: Handling(tuple(bytes([i]) * 32 for i in range(65)), "confirmed"), "1..64"),
    (lambda: Handling((bytes(32),), "maybe"), "finding is one of"),
    (lambda: Handling((bytes(32),), "not-ours"), "forwards .* exactly when"),
    (lambda: Handling((bytes(32),), "confirmed", forward_to="carrier-2"), "exactly when"),
    (lambda: Handling((bytes(32),), "not-confirmed", action="warning"), "only a confirmed"),
    (lambda: Handling((bytes(32),), "confirmed", action="mark"), "exactly when its action"),
    (lambda: Handling((bytes(32),), "confirmed", mark_id=bytes(32)), "exactly when its action"),
    (lambda: Sanction("某公司", "91110000600037341X", "", "骚扰", "doc", NOW), "check character"),
    (lambda: Sanction(" ", USCC, "", "骚扰", "doc", NOW), "names its enterprise"),
    (lambda: Sanction("某公司", USCC, "", "", "doc", NOW), "says why"),
    (lambda: Sanction("某公司", USCC, "", "骚扰", "", NOW), "document number"),
    (lambda: Sanction("某公司", USCC, "", "骚扰", "doc", 0), "takes effect"),
]


@pytest.mark.parametrize("make, says", FIELD_CASES)
def test_field_rules(make: object, says: str) -> None:
    with pytest.raises(E.BadInput, match=says):
        make()  # type: ignore[operator]


def test_bad_credit_code_is_the_lines_error() -> None:
    with pytest.raises(BadCreditCode):
        Sanction("某公司", "short", "", "骚扰", "doc", NOW)


def test_a_complaint_carries_no_number_or_text_in_clear() -> None:
    c = complaint(who="+8613900000009")
    body = c.to_pb().SerializeToString()
    assert b"13900000009" not in body and "推销".encode() not in body
    assert c.tag == complainant_tag(c.complainant, c.number)
    # the same complainant: the same sealed value and tag; another number, another tag
    assert complaint(who="+8613900000009").complainant == c.complainant
    assert complaint(C2_NUMBER, who="+8613900000009").tag != c.tag


@pytest.mark.parametrize("issued, payload, says", [
    (NOW, complaint(call_at=NOW + HOUR), "came before it was filed"),
    (NOW, complaint(call_at=NOW - 7 * DAY - 1), "within 168 hours"),
    (NOW, confirmed(bytes(32), feedback_complainant_at_ms=NOW + HOUR), "feedback already"),
    (NOW, listing(at=NOW + HOUR), "when it is issued at the latest"),
])
def test_time_bounds(issued: int, payload: object, says: str) -> None:
    why = time_violation(issued, payload, CONS.policy)  # type: ignore[arg-type]
    assert why is not None and says in why
    assert time_violation(issued, complaint(call_at=NOW - 7 * DAY), CONS.policy) is None


# ====================================================================== effect checks


def test_each_effect_check_refuses_with_nothing_written(net: Net) -> None:
    c = net.issue("complaints-1", complaint())
    m = net.issue("carrier-1", Mark(C1_NUMBER, "marketing", 70))
    other = net.issue("internet-1", Mark(C1_NUMBER, "fraud", 60))
    net.refused("complaints-1", complaint(), E.DuplicateComplaint, "already reports")
    bad_seal = dataclasses.replace(complaint(who="+8613900000008"),
                                   complainant=OTHER_KEY.seal("+8613900000008", COMPLAINANT))
    net.refused("complaints-1", bad_seal, SealError, "does not open")
    net.refused("carrier-1", confirmed(bytes(32)), E.UnknownTarget, "not in this node's log")
    net.refused("carrier-1", confirmed(m.id), E.NotAComplaint, "a mark, not a complaint")
    net.refused("carrier-2", confirmed(c.id), E.NotAddressed, "addressed to carrier-1")
    net.refused("carrier-1", confirmed(c.id, mark=bytes(32)), E.UnknownTarget, "mark")
    net.refused("carrier-1", confirmed(c.id, mark=c.id), E.NotAMark, "not a mark")
    net.refused("carrier-1", confirmed(c.id, mark=other.id), E.NotAllowed, "its own mark")
    net.issue("carrier-1", confirmed(c.id, mark=m.id))
    net.refused("carrier-1", Handling((c.id,), "not-confirmed"), E.AlreadyHandled,
                "closed already: confirmed by carrier-1")
    net.refused("regulator-1", listing(delist=True), E.NotListed, "nothing to delist")
    net.issue("regulator-1", listing())
    net.refused("regulator-1", listing(at=NOW - 1), E.AlreadyListed, "listed already")


def test_a_forwarded_complaint_is_the_new_carriers(net: Net) -> None:
    c = net.issue("complaints-1", complaint(), at=NOW)
    net.issue("carrier-1", forward(c.id, to="carrier-2"), at=NOW + HOUR)
    net.refused("carrier-1", Handling((c.id,), "not-confirmed"), E.NotAddressed,
                "addressed to carrier-2 \\(forwarded there\\)", at=NOW + 2 * HOUR)
    net.issue("carrier-2", Handling((c.id,), "not-confirmed"), at=NOW + 2 * HOUR)


def test_a_ledger_without_a_wired_state_catches_one_up(tmp_path: Path) -> None:
    """NodeLedger.complaints None: the effect check reads a state built from its log."""
    led = NodeLedger(Store(tmp_path / "db"), CONS, "complaints-1", KEYS["complaints-1"])
    try:
        led.issue(complaint(), NOW)
        with pytest.raises(E.DuplicateComplaint):
            led.issue(complaint(), NOW)
        assert led.size == 1
    finally:
        led.close()


# ====================================================================== scenarios


def test_a_complaint_reaches_the_serving_carriers_queue() -> None:
    f = Feeds()
    c1 = f.issue("complaints-1", complaint(C1_NUMBER), NOW)
    c2 = f.issue("complaints-1", complaint(PORTED), NOW + 1)
    s = state_of(f.records)
    assert [x.id for x in s.queue("carrier-1", NOW + 2)] == [c1.id]
    assert [x.id for x in s.queue("carrier-2", NOW + 2)] == [c2.id]   # the ported number
    st = s.status(c1.id)
    assert st is not None and st.state_at(NOW + 2) == OPEN
    assert (st.ack_due, st.close_due) == (NOW + DAY, NOW + 5 * DAY)


# Each scenario: the handlings (issuer, payload builder, time) after one complaint
# filed at NOW about C1_NUMBER, then (carrier, time, state, in its queue).
SCENARIOS = {
    "confirmed with a mark": (
        [("carrier-1", "mark", NOW + HOUR), ("carrier-1", "confirm-mark", NOW + 2 * HOUR)],
        [("carrier-1", NOW + HOUR, OPEN, True), ("carrier-1", NOW + 2 * HOUR, CLOSED, True),
         ("carrier-1", NOW + 30 * DAY, CLOSED, True), ("carrier-2", NOW + 3 * HOUR, None, False)],
    ),
    "forwarded, then handled": (
        [("carrier-1", "forward", NOW + HOUR), ("carrier-2", "not-confirmed", NOW + DAY)],
        [("carrier-1", NOW + HOUR - 1, OPEN, True), ("carrier-1", NOW + HOUR, None, False),
         ("carrier-2", NOW + HOUR, OPEN, True), ("carrier-2", NOW + DAY, CLOSED, True)],
    ),
    "not confirmed": (
        [("carrier-1", "not-confirmed", NOW + 3 * HOUR)],
        [("carrier-1", NOW + 3 * HOUR, CLOSED, True)],
    ),
    "overdue: never acknowledged": (
        [],
        [("carrier-1", NOW + DAY, OPEN, True), ("carrier-1", NOW + DAY + 1, OVERDUE, True)],
    ),
    "overdue: acknowledged by a forward, never closed": (
        [("carrier-1", "forward", NOW + HOUR)],
        [("carrier-2", NOW + 2 * DAY, OPEN, True), ("carrier-2", NOW + 5 * DAY + 1, OVERDUE, True)],
    ),
    "closed late is closed": (
        [("carrier-1", "not-confirmed", NOW + 6 * DAY)],
        [("carrier-1", NOW + 5 * DAY + 1, OVERDUE, True),
         ("carrier-1", NOW + 6 * DAY, CLOSED, True)],
    ),
}


def _play(steps: list[tuple[str, str, int]]) -> tuple[Feeds, Record]:
    f = Feeds()
    c = f.issue("complaints-1", complaint(), NOW)
    mark: Record | None = None
    for who, what, at in steps:
        if what == "mark":
            mark = f.issue(who, Mark(C1_NUMBER, "marketing", 70, observed_at_ms=at), at)
        elif what == "confirm-mark":
            assert mark is not None
            f.issue(who, confirmed(c.id, mark=mark.id, feedback_complainant_at_ms=at), at)
        elif what == "forward":
            f.issue(who, forward(c.id, to="carrier-2"), at)
        else:
            f.issue(who, Handling((c.id,), "not-confirmed"), at)
    return f, c


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str) -> None:
    steps, checks = SCENARIOS[name]
    f, c = _play(steps)
    s = state_of(f.records)
    for carrier, at, state, queued in checks:
        q = s.queue(carrier, at)
        assert (c.id in [x.id for x in q]) is queued, (carrier, at)
        if state is not None:
            (st,) = q
            assert st.state_at(at) == state, (carrier, at)
            assert [x.id for x in s.queue(carrier, at, overdue_only=True)] == (
                [c.id] if state == OVERDUE else [])
            assert [x.id for x in s.queue(carrier, at, open_only=True)] == (
                [] if state == CLOSED else [c.id])


def test_the_chain_records_what_was_done() -> None:
    f, c = _play([("carrier-1", "forward", NOW + HOUR), ("carrier-2", "mark", NOW + 2 * HOUR),
                  ("carrier-2", "confirm-mark", NOW + 3 * HOUR)])
    st = state_of(f.records).status(c.id)
    assert st is not None
    assert [(x.by, x.to, x.at) for x in st.forwards] == [("carrier-1", "carrier-2", NOW + HOUR)]
    assert (st.acknowledged_at, st.closed_at) == (NOW + HOUR, NOW + 3 * HOUR)
    assert st.acknowledged_in_time and st.closed_in_time
    assert st.closer is not None and st.closer.handling.action == "mark"
    assert len(st.handlings) == 2


def test_a_handling_before_its_forward_waits_for_it() -> None:
    """carrier-2's clock runs behind: its handling says it came before the forward.
    The chain is causal: it takes effect at the forward, not before."""
    f = Feeds()
    c = f.issue("complaints-1", complaint(), NOW)
    f.issue("carrier-2", Handling((c.id,), "not-confirmed"), NOW + HOUR - 1000)
    f.issue("carrier-1", forward(c.id, to="carrier-2"), NOW + HOUR)
    st = state_of(f.records).status(c.id)
    assert st is not None and st.closed_at == NOW + HOUR and st.addressee == "carrier-2"


def test_handlings_by_others_take_no_effect() -> None:
    """A peer's handling the issuing node would have refused changes nothing here."""
    f = Feeds()
    c = f.issue("complaints-1", complaint(), NOW)
    f.issue("carrier-2", Handling((c.id,), "not-confirmed"), NOW + HOUR)   # not addressed
    f.issue("carrier-1", Handling((c.id,), "not-confirmed"), NOW + 2 * HOUR)
    f.issue("carrier-1", confirmed(c.id), NOW + 3 * HOUR)                  # after the close
    st = state_of(f.records).status(c.id)
    assert st is not None and st.closed_at == NOW + 2 * HOUR and len(st.handlings) == 1


def test_a_sanction_listed_then_delisted() -> None:
    f = Feeds()
    first = f.issue("regulator-1", listing(NOW - DAY, doc="doc-1"), NOW - DAY)
    again = f.issue("regulator-1", listing(NOW - HOUR, doc="doc-2"), NOW - HOUR)
    off = f.issue("regulator-1", listing(NOW + DAY, doc="doc-3", delist=True), NOW + DAY)
    s = state_of(f.records)
    assert s.listed(NOW - 2 * DAY) == []
    ((lst, now),) = s.listed(NOW - DAY)
    assert now.id == first.id and lst.enterprise == "北京某某营销有限公司"
    assert s.listed(NOW)[0][1].id == again.id           # the latest listing wins
    assert s.listed(NOW + DAY) == []                     # a delisting ends it
    listing_ = s.listing(USCC)
    assert listing_ is not None
    assert [x.id for x in listing_.sanctions] == [first.id, again.id, off.id]
    assert s.listing("91110000600037342" + uscc_check_char("91110000600037342")) is None


def test_records_by_the_wrong_role_do_not_enter_the_state() -> None:
    f = Feeds()
    f.issue("carrier-1", complaint(), NOW)            # signed, but no carrier files complaints
    f.issue("complaints-1", complaint(call_at=NOW + DAY), NOW)   # a call in the future
    s = state_of(f.records)
    assert s.complaints == {} and s.queue("carrier-1", NOW) == []


def _everything() -> Feeds:
    f = Feeds()
    cs = [f.issue("complaints-1", complaint(who=f"+86139000000{i:02d}"), NOW + i)
          for i in range(6)]
    f.issue("carrier-1", forward(cs[0].id, cs[1].id, to="carrier-2"), NOW + HOUR)
    f.issue("carrier-2", Handling((cs[0].id,), "not-confirmed"), NOW + 2 * HOUR)
    m = f.issue("carrier-1", Mark(C1_NUMBER, "marketing", 70), NOW + 3 * HOUR)
    f.issue("carrier-1", confirmed(cs[2].id, cs[3].id, mark=m.id), NOW + 4 * HOUR)
    f.issue("regulator-1", listing(NOW), NOW)
    f.issue("regulator-1", listing(NOW + DAY, doc="d", delist=True), NOW + DAY)
    return f


def _summary(s: ComplaintState) -> object:
    at = NOW + 6 * DAY
    return (
        {c: [(x.id, x.state_at(at), x.closed_at, x.forwards) for x in s.queue(c, at)]
         for c in ("carrier-1", "carrier-2")},
        [(lst.uscc, now.id) for lst, now in s.listed(NOW + HOUR)],
        s.listed(at),
    )


def test_shuffled_delivery_gives_the_same_state() -> None:
    f = _everything()
    want = _summary(state_of(f.records))
    rng = random.Random(16)
    for _ in range(20):
        recs = list(f.records)
        rng.shuffle(recs)
        cut = rng.randrange(len(recs) + 1)
        s = ComplaintState(CONS)
        s.apply(recs[:cut])
        s.apply(recs[cut:])
        s.apply(recs[: cut // 2])  # seen again: changes nothing
        assert _summary(s) == want


def test_catch_up_from_a_ledger_equals_the_memory_state(tmp_path: Path) -> None:
    f = _everything()
    led = NodeLedger(Store(tmp_path / "db"), CONS, "institute")
    try:
        for r in f.records:
            assert led.append(r.envelope, NOW + DAY).ok
        s = ComplaintState(CONS)
        assert catch_up(s, led) == len(f.records)
        assert _summary(s) == _summary(state_of(f.records))
    finally:
        led.close()


# ====================================================================== the view's rule


def _view(records: list[Record], cons: Consortium = CONS) -> NationalView:
    v = NationalView(cons)
    v.apply(records)
    return v


def test_five_distinct_complainants_raise_the_risk_one_five_times_does_not() -> None:
    distinct, same = Feeds(), Feeds()
    for i in range(5):
        distinct.issue("complaints-1", complaint(who=f"+86139000000{i:02d}",
                                                 call_at=NOW - HOUR + i), NOW + i)
        same.issue("complaints-1", complaint(who="+8613900000001", call_at=NOW - HOUR + i),
                   NOW + i)
    at = NOW + HOUR
    r = _view(distinct.records).lookup(C1_NUMBER, at)
    assert r is not None and (r.risk, r.complainants, r.markers, r.category) == (
        "medium", 5, (), None)
    r4 = _view(distinct.records[:4]).lookup(C1_NUMBER, at)
    assert r4 is not None and (r4.risk, r4.complainants) == ("none", 4)
    r1 = _view(same.records).lookup(C1_NUMBER, at)
    assert r1 is not None and (r1.risk, r1.complainants) == ("none", 1)
    # The window: ten days after the calls they no longer count.
    late = _view(distinct.records).lookup(C1_NUMBER, NOW - HOUR + 10 * DAY + 4)
    assert late is not None and (late.risk, late.complainants) == ("none", 0)
    # "high" by policy; a rule of 0 complainants is off.
    high = make_cons(complaint_risk="high")
    rh = _view(distinct.records, high).lookup(C1_NUMBER, at)
    assert rh is not None and rh.risk == "high"
    off = make_cons(complaint_risk_complainants=0)
    ro = _view(distinct.records, off).lookup(C1_NUMBER, at)
    assert ro is not None and (ro.risk, ro.complainants) == ("none", 5)


def test_the_rule_only_raises_the_risk() -> None:
    f = Feeds()
    f.issue("institute", Mark(C1_NUMBER, "fraud", 90, observed_at_ms=NOW - DAY), NOW - DAY)
    for i in range(5):
        f.issue("complaints-1", complaint(who=f"+86139000000{i:02d}"), NOW + i)
    r = _view(f.records).lookup(C1_NUMBER, NOW + HOUR)
    assert r is not None and (r.risk, r.category) == ("high", "fraud")


def test_the_entry_shows_complaints_without_personal_information() -> None:
    f = Feeds()
    recs = [f.issue("complaints-1", complaint(who=f"+86139000000{i:02d}",
                                              call_at=NOW - HOUR + i), NOW + i)
            for i in range(3)]
    v = _view(f.records)
    raw = v.entry_bytes(C1_NUMBER)
    assert raw is not None
    obj = json.loads(raw)
    assert [c["id"] for c in obj["complaints"]] == [r.id.hex() for r in recs]
    assert set(obj["complaints"][0]) == {"id", "by", "category", "call_at", "filed_at", "tag"}
    for r in recs:
        pay = r.payload
        assert isinstance(pay, Complaint)
        assert pay.complainant.hex() not in raw.decode() and DIGEST.hex() not in raw.decode()
        assert bytes.fromhex(obj["complaints"][recs.index(r)]["tag"]) == pay.tag
    assert b"13900000000" not in raw


def test_the_entry_keeps_a_bounded_number_of_complaints() -> None:
    f = Feeds()
    # One complainant floods: only its PER_COMPLAINANT latest stay.
    for i in range(10):
        f.issue("complaints-1", complaint(who="+8613900000001", call_at=NOW - DAY + i), NOW + i)
    for i in range(80):
        f.issue("complaints-1", complaint(who=f"+8613700{i:06d}", call_at=NOW - HOUR + i),
                NOW + 100 + i)
    entry = _view(f.records).entry(C1_NUMBER)
    assert entry is not None and len(entry.complaints) == MAX_ENTRY_COMPLAINTS
    assert len({c.tag for c in entry.complaints}) == MAX_ENTRY_COMPLAINTS  # the latest 64
    flood = Feeds()
    for i in range(10):
        flood.issue("complaints-1", complaint(who="+8613900000001", call_at=NOW - DAY + i),
                    NOW + i)
    e2 = _view(flood.records).entry(C1_NUMBER)
    assert e2 is not None and len(e2.complaints) == PER_COMPLAINANT


def test_complaints_in_the_stored_view_equal_memory(tmp_path: Path) -> None:
    f = Feeds()
    for i in range(7):
        f.issue("complaints-1", complaint(who=f"+86139000000{i % 5:02d}",
                                          call_at=NOW - HOUR + i), NOW + i)
    f.issue("internet-1", Mark(C1_NUMBER, "marketing", 50), NOW + 10)
    mem = _view(f.records)
    store = Store(tmp_path / "view")
    try:
        stored = NationalView.open(store, CONS)
        rng = random.Random(3)
        recs = list(f.records)
        rng.shuffle(recs)
        for r in recs:
            stored.apply([r])
        assert stored.root() == mem.root()
        assert stored.entry_bytes(C1_NUMBER) == mem.entry_bytes(C1_NUMBER)
    finally:
        store.close()


# ====================================================================== the node


def _wall() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def test_nodes_keep_the_state_before_answering_and_after_a_restart(tmp_path: Path) -> None:
    """The centre's node files a complaint: it is in the serving carrier's queue on
    the centre's node when the call returns, and on the carrier's node once the
    record reaches it (submitted as a peer's); a restart builds the same state."""
    from keys.layout import NodeConfig
    from node.server import Node
    from tests.conftest import free_port_block

    d = tmp_path / "c"
    cons = init_consortium(d, carriers=1, internet=0, base_port=free_port_block(12),
                           now=datetime.now(UTC), complaints=1, regulators=1)
    key = cons.members_key
    assert key is not None
    centre_cfg = NodeConfig.for_participant(d, "complaints-1")
    carrier_cfg = NodeConfig.for_participant(d, "carrier-1")
    now = _wall()
    c = Complaint(C1_NUMBER, "marketing", now - HOUR, "phone",
                  key.seal("+8613900000009", COMPLAINANT), key.id, DIGEST, "carrier-1")
    centre = Node(centre_cfg).start()
    try:
        out = centre.core.issue(c)
        assert out.record is not None
        (st,) = centre.complaints.queue("carrier-1", _wall() + 1)
        assert st.id == out.record.id and st.state_at(_wall()) == OPEN
        size = centre.core.ledger.size
        with pytest.raises(E.DuplicateComplaint):   # the effect check reads the keeper's state
            centre.core.issue(c)
        assert centre.core.ledger.size == size
        envelope = out.record.envelope
    finally:
        centre.stop()
    carrier = Node(carrier_cfg).start()
    try:
        assert carrier.complaints.queue("carrier-1", _wall()) == []
        (res,) = carrier.core.submit([envelope], "complaints-1")
        assert res.ok
        (st,) = carrier.complaints.queue("carrier-1", _wall() + 1)
        assert st.id == out.record.id
        handled = carrier.core.issue(Handling((st.id,), "not-confirmed"))
        assert handled.record is not None
        (st,) = carrier.complaints.queue("carrier-1", _wall() + 1)
        assert st.state_at(_wall() + 1) == CLOSED
        with pytest.raises(E.AlreadyHandled):
            carrier.core.issue(Handling((st.id,), "not-confirmed"))
    finally:
        carrier.stop()
    again = Node(carrier_cfg).start()
    try:
        (st,) = again.complaints.queue("carrier-1", _wall() + 1)
        assert st.closed_by == handled.record.id
    finally:
        again.stop()


def test_the_stored_state_reopens_catches_up_and_rebuilds(tmp_path: Path) -> None:
    from ledger.complaints.stored import FAMILY, StoredComplaints

    f = _everything()
    led = NodeLedger(Store(tmp_path / "db"), CONS, "institute")
    try:
        half = len(f.records) // 2
        for r in f.records[:half]:
            assert led.append(r.envelope, NOW + DAY).ok
        s = StoredComplaints(led.store, CONS)
        assert catch_up(s, led) == half
        for r in f.records[half:]:
            assert led.append(r.envelope, NOW + DAY).ok
        # reopened: the kept records and vector; the catch-up reads only what is new
        again = StoredComplaints(led.store, CONS)
        assert again.vector == s.vector and len(list(led.store.items(FAMILY))) == half
        assert catch_up(again, led) == len(f.records) - half
        assert _summary(again) == _summary(state_of(f.records))
        assert _summary(StoredComplaints(led.store, CONS)) == _summary(again)
        # another configuration: cleared and built anew
        other = StoredComplaints(led.store, make_cons(complaint_close_ms=2 * DAY))
        assert other.vector == {} and list(led.store.items(FAMILY)) == []
        assert catch_up(other, led) == len(f.records)
    finally:
        led.close()
