"""Records that can change nothing, and marks on numbers that must never be
marked, are refused by the node that would sign them, with a sentence that
says what it found; nothing is written. A peer's record of the first kind is
kept (it is signed; every log keeps it) and has no effect on the view; a
peer's mark on a protected number is refused by the ledger, ignored by the
view and reported by the auditor, all by `ledger.payloads`' one rule."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys import ConfigError
from keys.consortium import DEFAULT_PROTECTED_NUMBERS, Consortium, Policy
from ledger import errors as E
from ledger import holdings
from ledger.audit import audit_store, check_envelopes
from ledger.log import NodeLedger
from ledger.numbers import normalize
from ledger.record import REJECT, UPHOLD, WITHDRAW, Correction, Mark, Reassignment, Record
from ledger.store import COLUMN_FAMILIES, Store
from ledger.view import NationalView
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from node.cli import main
from node.core import NodeCore
from tests.conftest import KEYS, NAME, NOW, make_consortium
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(180)

N1 = "+8613800000001"
N2 = "+8613800000002"
UNSEEN = bytes.fromhex("0a56" + "11" * 30)
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


class Feeds:
    """Signed records of several issuers, each feed in order."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, bytes]] = {}

    def issue(self, pid: str, payload: Any, at: int = NOW) -> Record:
        seq, prev = self.heads.get(pid, (0, b""))
        rec = Record.issue(KEYS[pid], pid, seq + 1, prev, at, payload, consortium=NAME)
        self.heads[pid] = (rec.seq, rec.id)
        return rec


def mark(number: str = N1, cat: str = "fraud") -> Mark:
    return Mark(number, cat, 70, 1, NOW - 1000)


def snapshot(led: NodeLedger) -> dict[str, list[tuple[bytes, bytes]]]:
    return {cf: list(led.store.items(cf)) for cf in COLUMN_FAMILIES}


def open_ledger(path: Path, pid: str, cons: Consortium | None = None) -> NodeLedger:
    return NodeLedger(Store(path), cons or make_consortium(), pid, KEYS[pid])


@pytest.fixture
def institute(tmp_path: Path) -> Iterator[tuple[NodeLedger, Feeds, Record, Record]]:
    """The institute's ledger holding carrier-1's mark and internet-1's appeal of it."""
    led = open_ledger(tmp_path / "inst", "institute")
    feeds = Feeds()
    m = feeds.issue("carrier-1", mark())
    appeal = feeds.issue("internet-1", Correction((m.id,), WITHDRAW, reason="a courier"))
    assert [o.status for o in led.submit([m.envelope, appeal.envelope], NOW).outcomes] == [
        "accepted", "accepted"]
    yield led, feeds, m, appeal
    led.close()


# ------------------------------------------------------------ own corrections


def test_correction_of_an_unseen_target_is_not_found_unless_asked_to_wait(
    ledger: NodeLedger,
) -> None:
    before = snapshot(ledger)
    with pytest.raises(E.UnknownTarget, match=rf"^target {UNSEEN.hex()[:16]} is not in this "
                       r"node's log.*--wait-for-target"):
        ledger.issue(Correction((UNSEEN,), WITHDRAW), NOW)
    assert snapshot(ledger) == before and ledger.feed("carrier-1").seq == 0
    out = ledger.issue(Correction((UNSEEN,), WITHDRAW), NOW, wait_for_target=True)
    assert out.status == "accepted" and ledger.size == 1


def test_correction_of_a_record_that_is_not_a_mark(ledger: NodeLedger) -> None:
    r = ledger.issue(Reassignment(N1, NOW - 1000), NOW).record
    m = ledger.issue(mark(), NOW).record
    own = ledger.issue(Correction((m.id,), "recategorize", "harassment"), NOW).record
    before = snapshot(ledger)
    with pytest.raises(E.NotAMark, match=rf"^{r.id.hex()[:16]} is a reassignment, not a mark"):
        ledger.issue(Correction((r.id,), WITHDRAW), NOW)
    # one's own self-correction is no appeal to withdraw: a correction of it changes nothing
    with pytest.raises(E.NotAMark, match="is a correction, not a mark or an appeal of yours"):
        ledger.issue(Correction((own.id,), WITHDRAW), NOW)
    # one bad target among good ones refuses the whole record
    with pytest.raises(E.NotAMark):
        ledger.issue(Correction((m.id, r.id), WITHDRAW), NOW)
    assert snapshot(ledger) == before


def test_decision_of_a_record_that_is_no_appeal(institute) -> None:  # type: ignore[no-untyped-def]
    led, feeds, m, _ = institute
    own = feeds.issue("carrier-1", Correction((m.id,), WITHDRAW))  # carrier-1 withdraws its own
    led.append(own.envelope, NOW)
    before = snapshot(led)
    with pytest.raises(E.NotAnAppeal, match=rf"^{m.id.hex()[:16]} is a mark, not an appeal$"):
        led.issue(Correction(appeal_id=m.id, outcome=UPHOLD), NOW)
    with pytest.raises(E.NotAnAppeal, match="carrier-1's correction of its own records"):
        led.issue(Correction(appeal_id=own.id, outcome=REJECT), NOW)
    with pytest.raises(E.UnknownTarget, match="^appeal 0a56.*: decide it once it has arrived$"):
        led.issue(Correction(appeal_id=UNSEEN, outcome=REJECT), NOW)
    assert snapshot(led) == before


def test_second_decision_says_who_decided_when(institute) -> None:  # type: ignore[no-untyped-def]
    led, _, _, appeal = institute
    first = led.issue(Correction(appeal_id=appeal.id, outcome=REJECT), NOW).record
    before = snapshot(led)
    for outcome in (UPHOLD, REJECT):
        with pytest.raises(E.AlreadyDecided) as ei:
            led.issue(Correction(appeal_id=appeal.id, outcome=outcome), NOW + 5)
        assert str(ei.value) == (
            f"appeal {appeal.id.hex()[:16]} is already decided: rejected by "
            f"{first.id.hex()[:16]} (institute) at 2026-09-21T14:13:20Z; a decision is final"
        )
    assert snapshot(led) == before


def test_appellant_withdraws_its_appeal_only_while_it_is_pending(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "i1", "internet-1")
    feeds = Feeds()
    m = feeds.issue("carrier-1", mark())
    led.append(m.envelope, NOW)
    a1 = led.issue(Correction((m.id,), WITHDRAW), NOW).record
    a2 = led.issue(Correction((m.id,), "recategorize", "delivery"), NOW).record
    assert led.issue(Correction((a1.id,), WITHDRAW), NOW).status == "accepted"  # pending: allowed
    decision = feeds.issue("institute", Correction(appeal_id=a2.id, outcome=UPHOLD))
    led.append(decision.envelope, NOW)
    with pytest.raises(E.AlreadyDecided, match=f"upheld by {decision.id.hex()[:16]}"):
        led.issue(Correction((a2.id,), WITHDRAW), NOW)
    led.close()


def test_peer_records_that_change_nothing_are_kept_and_change_no_entry(tmp_path: Path) -> None:
    """Peers' correction of an unseen target, decision of a mark, and second
    decision are accepted as signed (every log keeps them, replication never
    diverges), and the view's entry is what it was without them."""
    led = open_ledger(tmp_path / "c2", "carrier-2")
    feeds = Feeds()
    m = feeds.issue("carrier-1", mark())
    appeal = feeds.issue("internet-1", Correction((m.id,), WITHDRAW))
    first = feeds.issue("institute", Correction(appeal_id=appeal.id, outcome=REJECT))
    view = NationalView(led.consortium)
    view.apply([m, appeal, first])
    entry = view.entry_bytes(N1)
    idle = [
        feeds.issue("internet-2", Correction((UNSEEN,), WITHDRAW)),
        feeds.issue("institute", Correction(appeal_id=m.id, outcome=UPHOLD)),
        feeds.issue("institute", Correction(appeal_id=appeal.id, outcome=UPHOLD)),
    ]
    out = led.submit([r.envelope for r in (m, appeal, first, *idle)], NOW)
    assert [o.status for o in out.outcomes] == ["accepted"] * 6
    led.close()
    view.apply(idle)
    assert view.entry_bytes(N1) == entry
    assert json.loads(entry)["appeals"][0]["status"] == "rejected"
    assert UNSEEN in view.waiting  # the unseen target's correction waits, as docs/view.md says


def test_two_decisions_of_one_appeal_in_one_group_commit(institute) -> None:  # type: ignore[no-untyped-def]
    """The writer signs a group at once: the second decision is refused
    against the first, signed moments before in the same group."""
    led, _, _, appeal = institute
    core = NodeCore(led.store, led.consortium, "institute", KEYS["institute"], clock=lambda: NOW)
    results: list[Any] = [None, None]

    def decide(i: int, outcome: str) -> None:
        try:
            results[i] = core.issue(Correction(appeal_id=appeal.id, outcome=outcome))
        except E.LedgerError as e:
            results[i] = e

    threads = [threading.Thread(target=decide, args=a) for a in ((0, REJECT), (1, UPHOLD))]
    threads[0].start()
    while core.queued < 1:
        time.sleep(0.005)
    threads[1].start()
    while core.queued < 2:
        time.sleep(0.005)
    core.start()  # both jobs wait in the queue: the writer takes them as one group
    for t in threads:
        t.join(10)
    core.stop()
    assert results[0].status == "accepted"
    assert isinstance(results[1], E.AlreadyDecided) and "rejected by" in str(results[1])
    assert core.ledger.feed("institute").seq == 1


def test_a_store_without_the_decision_index_is_indexed_once(tmp_path: Path) -> None:
    """A store written before the index existed (no INDEXED, no entries) is
    indexed by one scan when a decision is first asked for."""
    path = tmp_path / "old"
    led = open_ledger(path, "institute")
    feeds = Feeds()
    m = feeds.issue("carrier-1", mark())
    appeal = feeds.issue("internet-1", Correction((m.id,), WITHDRAW))
    led.submit([m.envelope, appeal.envelope], NOW)
    first = led.issue(Correction(appeal_id=appeal.id, outcome=UPHOLD), NOW).record
    b = led.store.batch()
    for k, _ in list(led.store.items("meta")):
        if k.startswith(holdings.DECIDED) or k == holdings.INDEXED:
            b.delete("meta", k)
    led.store.write(b)
    led.close()
    led = open_ledger(path, "institute")
    assert led.store.get("meta", holdings.INDEXED) is None
    with pytest.raises(E.AlreadyDecided, match=f"upheld by {first.id.hex()[:16]}"):
        led.issue(Correction(appeal_id=appeal.id, outcome=REJECT), NOW)
    assert led.store.get("meta", holdings.DECIDED + appeal.id) == first.id
    led.close()


# ------------------------------------------------------------ protected numbers


def test_default_protected_numbers_are_stored_forms_of_emergency_and_service_lines() -> None:
    for short in ("110", "119", "120", "122", "12345", "12315", "12321"):
        assert Policy().protecting(normalize(short)) == normalize(short)
    for entry in DEFAULT_PROTECTED_NUMBERS:
        assert normalize(entry) == entry  # the form a mark's number takes, so it matches
    assert Policy().protecting(N1) is None and Policy().foreign_numbers == "allow"


@pytest.mark.parametrize("value,needle", [
    ({"protected_numbers": "+86110"}, "must be a list"),
    ({"protected_numbers": ["110"]}, "entry '110' is not an E.164 number"),
    ({"protected_numbers": ["+86 110"]}, "is not an E.164 number"),
    ({"protected_numbers": ["+8611０"]}, "is not an E.164 number"),  # a full-width digit
    ({"protected_numbers": ["+86955**"]}, "is not an E.164 number"),
    ({"protected_numbers": [110]}, "entry 110 is not"),
    ({"protected_numbers": ["+86110", "+86110"]}, "lists +86110 twice"),
    ({"protected_numbers": ["+86110"] * 10_001}, "at most 10000"),
    ({"foreign_numbers": "deny"}, "foreign_numbers is 'deny'; it must be allow or refuse"),
    ({"foreign_numbers": True}, "foreign_numbers is True"),
])
def test_policy_protected_values_are_checked(value: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        Policy.from_json(value)


def test_old_consortium_json_loads_with_the_default_and_init_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["consortium", "init", str(tmp_path / "c"), "--carriers", "1", "--internet",
                 "1", "--base-port", "31500"]) == 0
    capsys.readouterr()
    raw = json.loads((tmp_path / "c" / "consortium.json").read_bytes())
    assert raw["policy"]["protected_numbers"] == list(DEFAULT_PROTECTED_NUMBERS)
    assert raw["policy"]["foreign_numbers"] == "allow"
    del raw["policy"]["protected_numbers"], raw["policy"]["foreign_numbers"]
    old = Consortium.from_json_bytes(json.dumps(raw).encode())
    assert old.policy.protected_numbers == DEFAULT_PROTECTED_NUMBERS
    assert old.policy.foreign_numbers == "allow"
    raw["policy"]["protected_numbers"] = ["+86955*"]
    assert Consortium.from_json_bytes(json.dumps(raw).encode()).policy.protecting("+8695555") \
        == "+86955*"


def test_protecting_names_the_exact_entry_else_the_first_prefix_covering_the_number() -> None:
    p = Policy(protected_numbers=("+86110", "+86955*", "+869*", "+8612321"))
    assert p.protecting("+86110") == "+86110"
    assert p.protecting("+8612321") == "+8612321"
    assert p.protecting("+8695555") == "+86955*"          # the first listed prefix
    assert p.protecting("+869123") == "+869*"
    assert p.protecting("+8611") is None and p.protecting("+86138000") is None
    assert Policy(protected_numbers=("+86110",)).protecting("+8695555") is None


@pytest.mark.parametrize("policy,number,needle", [
    ({}, "+86110", "+86110 is a protected number (listed in the policy's protected_numbers"),
    ({}, "+8612321", "+8612321 is a protected number"),
    ({"protected_numbers": ("+86955*",)}, "+8695555", "(under +86955* in the policy's"),
    ({"foreign_numbers": "refuse"}, "+12025550123",
     "+12025550123 is a foreign number and the consortium's policy (foreign_numbers: refuse)"),
])
def test_ledger_refuses_a_peers_mark_on_an_unmarkable_number(
    tmp_path: Path, policy: dict[str, Any], number: str, needle: str
) -> None:
    led = open_ledger(tmp_path / "db", "carrier-1", make_consortium(**policy))
    before = snapshot(led)
    r = Feeds().issue("internet-1", Mark(number, "customer-service", 50, 0, NOW))
    with pytest.raises(E.UnmarkableNumber, match=re.escape(needle)):
        led.append(r.envelope, NOW)
    assert snapshot(led) == before
    led.close()


def test_foreign_numbers_allowed_by_default_and_prefixes_cover_only_their_numbers(
    tmp_path: Path,
) -> None:
    led = open_ledger(tmp_path / "db", "carrier-1", make_consortium(protected_numbers=("+86955*",)))
    feeds = Feeds()
    for n in ("+12025550123", "+86110", "+8613800000009"):  # 110 is not protected here
        assert led.append(feeds.issue("internet-1", Mark(n, "fraud")).envelope, NOW).ok
    led.close()


def test_view_ignores_and_auditor_reports_a_signed_mark_on_110(tmp_path: Path) -> None:
    """A mark on 110 signed and logged under a configuration that did not
    protect it: under one that does, the view gives it no entry and the
    auditor reports it, from the same rule the ledger refuses it by."""
    lax = make_consortium(protected_numbers=())
    feeds = Feeds()
    on_110 = feeds.issue("internet-1", Mark("110", "fraud", 90, 3, NOW - 1000))
    other = feeds.issue("internet-1", mark(N2))
    led = open_ledger(tmp_path / "db", "carrier-1", lax)
    assert all(o.ok for o in led.submit([on_110.envelope, other.envelope], NOW).outcomes)
    led.sign_checkpoint()
    led.close()
    strict = make_consortium()
    view = NationalView(strict)
    view.apply([on_110, other])
    assert view.entry("+86110") is None and view.entry(N2) is not None
    assert NationalView(lax).apply([on_110]) == {"+86110"}  # what the protection takes away
    checked = check_envelopes(strict, [on_110.envelope, other.envelope])
    assert [c[5] for c in checked] == ["role", None]
    assert checked[0][6].startswith("UnmarkableNumber: +86110 is a protected number")
    report = audit_store(tmp_path / "db", strict, "carrier-1", view=False, workers=1)
    found = [f for f in report.findings if f.kind == "role"]
    assert len(found) == 1 and "+86110 is a protected number" in found[0].detail
    assert not report.ok


# ------------------------------------------------------------ through the nodes


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNet]:
    n = InProcessNet(tmp_path_factory.mktemp("refusals") / "c", carriers=1, internet=1,
                     sync_interval=0.2)
    yield from n.serving_pinned()


def cli(capsys: pytest.CaptureFixture[str], net: InProcessNet, *argv: str) -> tuple[int, Any, str]:
    code = main([*argv, "--consortium", str(net.dir), "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else out), err


def status(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as ei:
        call()
    return ei.value.code()


def test_markex_mark_110_fraud_is_refused(net: InProcessNet, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    code, _, err = cli(capsys, net, "mark", "--as", "carrier-1", "110", "fraud")
    assert code == 4 and "+86110 is a protected number" in err and "Traceback" not in err
    assert status(lambda: net.admin("carrier-1").IssueMark(
        rpb.Mark(number="12345", category="fraud", score=60), timeout=10)
    ) == grpc.StatusCode.PERMISSION_DENIED
    code, m, _ = cli(capsys, net, "mark", "--as", "carrier-1", "13800138111", "fraud")
    assert code == 0 and m["seq"] == 1  # nothing was signed for the refused marks


def test_correct_and_decide_refuse_what_changes_nothing(
    net: InProcessNet, capsys: pytest.CaptureFixture[str]
) -> None:
    code, m, _ = cli(capsys, net, "mark", "--as", "carrier-1", "13800138222", "harassment")
    assert code == 0
    # an id no node has seen: NOT_FOUND, unless asked to wait for it
    code, _, err = cli(capsys, net, "correct", "--as", "carrier-1", UNSEEN.hex(), "--withdraw")
    assert code == 3 and f"target {UNSEEN.hex()[:16]} is not in this node's log" in err
    admin = net.admin("carrier-1")
    assert status(lambda: admin.IssueCorrection(pb.CorrectionRequest(
        targets=[UNSEEN], action=rpb.CORRECTION_ACTION_WITHDRAW), timeout=10)
    ) == grpc.StatusCode.NOT_FOUND
    code, waiting, _ = cli(capsys, net, "correct", "--as", "carrier-1", UNSEEN.hex(),
                           "--withdraw", "--wait-for-target")
    assert code == 0 and waiting["seq"] == m["seq"] + 1
    # a reassignment is no mark
    day_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86_400))
    code, ra, _ = cli(capsys, net, "reassign", "--as", "carrier-1", "13800138333", "--at", day_ago)
    assert code == 0
    code, _, err = cli(capsys, net, "correct", "--as", "carrier-1", ra["id"], "--withdraw")
    assert code == 4 and f"{ra['id'][:16]} is a reassignment, not a mark" in err
    assert status(lambda: admin.IssueCorrection(pb.CorrectionRequest(
        targets=[bytes.fromhex(ra["id"])], action=rpb.CORRECTION_ACTION_WITHDRAW), timeout=10)
    ) == grpc.StatusCode.FAILED_PRECONDITION
    # the appeal, a decision of a mark, a decision, a second decision
    net.wait_converged(timeout=30)
    code, ap, _ = cli(capsys, net, "correct", "--as", "internet-1", m["id"], "--withdraw")
    assert code == 0 and ap["appeal"] is True
    net.wait_converged(timeout=30)
    code, _, err = cli(capsys, net, "decide", "--as", "institute", m["id"], "--reject")
    assert code == 4 and f"{m['id'][:16]} is a mark, not an appeal" in err
    code, dec, _ = cli(capsys, net, "decide", "--as", "institute", ap["id"], "--reject")
    assert code == 0
    code, _, err = cli(capsys, net, "decide", "--as", "institute", ap["id"], "--uphold")
    assert code == 4  # refused (docs/cli.md's exit codes)
    assert re.search(rf"already decided: rejected by {dec['id'][:16]} \(institute\) at {ISO}",
                     err), err
    assert status(lambda: net.admin("institute").IssueCorrection(rpb.Correction(
        appeal_id=bytes.fromhex(ap["id"]), outcome=rpb.APPEAL_OUTCOME_UPHOLD), timeout=10)
    ) == grpc.StatusCode.FAILED_PRECONDITION
    code, nxt, _ = cli(capsys, net, "mark", "--as", "institute", "13800138444", "fraud")
    assert code == 0 and nxt["seq"] == dec["seq"] + 1  # the refusals signed nothing


def test_a_stored_view_is_recomputed_when_the_protected_numbers_change(tmp_path: Path) -> None:
    """Which marks count depends on the policy's protected numbers: a view
    stored under another list opens empty and is recomputed, so two nodes
    never sign different roots for one vector."""
    on_110 = Feeds().issue("internet-1", Mark("110", "fraud", 90, 3, NOW - 1000))
    store = Store(tmp_path / "db")
    view = NationalView.open(store, make_consortium(protected_numbers=()))
    view.apply([on_110])
    assert view.entry("+86110") is not None
    store.close()
    store = Store(tmp_path / "db")
    try:
        view = NationalView.open(store, make_consortium())
        assert (view.vector, view.count) == ({}, 0)
        view.apply([on_110])
        assert view.entry("+86110") is None and view.vector == {"internet-1": 1}
    finally:
        store.close()
