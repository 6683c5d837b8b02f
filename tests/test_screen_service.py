"""The Screening service of real in-process nodes on 127.0.0.1 over mutual
TLS (certificates from `consortium init`): the unary screen, the batch and
its limit, the stream with a bad request in the middle, the roles that may
not screen, a preference issued at one node screened at another, and
`markex screen` in its single and list forms (the list's CSV equals the
per-call screens)."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys.layout import NodeConfig
from ledger.payloads.line import MarketerLine, uscc_check_char
from ledger.payloads.preference import Preference
from ledger.view.entries import Entry
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.cli import main
from node.client import INSTITUTE_KEY_ENV
from node.screen import MAX_SCREEN_BATCH, ResolutionCache
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(240)

LINE = "+8613800000001"       # carrier-1 registers it for real-estate marketing
FRAUD = "+8613800000002"      # marked fraud by the institute: high risk
SUSPECT = "+8613800000003"    # marked fraud by one internet firm: medium risk
ESTATE = "+8613800000004"     # unregistered, marked real-estate by one internet firm
TAXI = "+8613800000005"       # marked taxi by two: an identity label
SUB_A = "+8613900000011"      # refuses real estate (issued at carrier-1's node)
SUB_B = "+8613900000012"      # refuses nothing
SUB_C = "+8613900000013"      # refuses all marketing (issued at the institute's node)
VOICE = pb.CALL_MODE_VOICE


class Screens:
    def __init__(self, net: InProcessNet) -> None:
        self.net = net
        self._stubs: dict[tuple[str, str], Any] = {}

    def stub(self, node: str, as_id: str) -> Any:
        if (node, as_id) not in self._stubs:
            ep = self.net.consortium.participant(node).member_endpoint
            self._stubs[node, as_id] = rpc.ScreeningStub(
                client.member_channel(self.net.dir, as_id, ep, node))
        return self._stubs[node, as_id]

    def node(self, pid: str) -> Any:
        return next(n for n in self.net.nodes_running if n.participant_id == pid)

    def screen(self, caller: str, callee: str, *, node: str = "carrier-1",
               as_id: str = "carrier-1", at_ms: int = 0, mode: int = VOICE) -> Any:
        return self.stub(node, as_id).Screen(
            pb.ScreenRequest(caller=caller, callee=callee, at_ms=at_ms, mode=mode), timeout=10)


def _uscc(first17: str) -> str:
    return first17 + uscc_check_char(first17)


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Screens]:
    net = InProcessNet(tmp_path_factory.mktemp("screen") / "c", carriers=1, internet=1,
                       sync_interval=0.2)
    net.start_all()
    try:
        cons = net.consortium
        assert cons.carrier_for(LINE) == cons.carrier_for(SUB_A) == "carrier-1"
        sc = Screens(net)
        net.mark("institute", FRAUD, "fraud", 80, 3)
        net.mark("internet-1", SUSPECT, "fraud", 60, 1)
        net.mark("internet-1", ESTATE, "real-estate", 60, 1)
        net.mark("internet-1", TAXI, "taxi", 60, 1)
        net.mark("carrier-1", TAXI, "taxi", 60, 1)
        c1 = sc.node("carrier-1")
        key = c1.consortium.members_key
        c1.core.issue(MarketerLine(LINE, False, "Anju Realty", _uscc("91110000MA0000001"),
                                   "real-estate"))
        c1.core.issue(Preference(key.seal(SUB_A), key.id, ("real-estate",)))
        sc.node("institute").core.issue(Preference(key.seal(SUB_C), key.id, ("all",)))
        net.wait_converged(timeout=60)
        with pytest.MonkeyPatch.context() as mp:
            pin = NodeConfig.for_participant(net.dir, "institute").institute_key
            mp.setenv(INSTITUTE_KEY_ENV, base64.b64encode(pin).decode())
            yield sc
    finally:
        net.stop_all()


def _codes(d: Any) -> list[str]:
    return [r.code for r in d.reasons]


def _refused(call: Any, code: grpc.StatusCode, match: str) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        call()
    assert ei.value.code() == code, ei.value.details()
    assert match in (ei.value.details() or ""), ei.value.details()


# ------------------------------------------------------------------ the service


@pytest.mark.parametrize(("caller", "callee", "action", "codes", "category"), [
    (LINE, SUB_A, pb.SCREEN_ACTION_BLOCK, ["callee-refused-industry", "caller-line"],
     "real-estate"),
    (LINE, SUB_B, pb.SCREEN_ACTION_LABEL, ["caller-registered-marketer", "caller-line"],
     "real-estate"),
    (LINE, SUB_C, pb.SCREEN_ACTION_BLOCK, ["callee-refused-industry", "caller-line"],
     "real-estate"),
    (FRAUD, SUB_B, pb.SCREEN_ACTION_BLOCK, ["caller-risk-block"], "fraud"),
    (SUSPECT, SUB_C, pb.SCREEN_ACTION_WARN, ["caller-risk-warn"], "fraud"),
    (ESTATE, SUB_A, pb.SCREEN_ACTION_BLOCK,
     ["callee-refused-industry", "caller-marked-marketing"], "real-estate"),
    (ESTATE, SUB_B, pb.SCREEN_ACTION_WARN, ["caller-risk-warn"], "real-estate"),
    (TAXI, SUB_C, pb.SCREEN_ACTION_LABEL, ["caller-category"], "taxi"),
    ("+8613800000099", SUB_A, pb.SCREEN_ACTION_ALLOW, ["caller-unknown"], ""),
    ("110", SUB_A, pb.SCREEN_ACTION_ALLOW, ["caller-protected"], ""),
])
def test_screen(s: Screens, caller: str, callee: str, action: int, codes: list[str],
                category: str) -> None:
    for node, as_id in (("carrier-1", "carrier-1"), ("institute", "callcenter-1"),
                        ("internet-1", "institute")):
        d = s.screen(caller, callee, node=node, as_id=as_id)
        assert (d.action, _codes(d), d.category) == (action, codes, category), (node, as_id)
        assert not d.error
        assert (d.redress == "") == (action == pb.SCREEN_ACTION_ALLOW)


def test_a_decision_names_its_records_and_the_node_clock(s: Screens) -> None:
    before = int(time.time() * 1000)
    d = s.screen(LINE, "139 0000 0011")                 # normalized at the edge
    assert d.callee == SUB_A and d.caller == LINE
    assert before <= d.at_ms <= int(time.time() * 1000)  # at_ms 0: the node's clock
    pref, line = d.reasons
    assert len(pref.records) == 1 and len(line.records) == 1
    assert "Anju Realty" in line.detail
    assert LINE in d.redress


def test_an_explicit_time_is_screened_at_that_time(s: Screens) -> None:
    long_ago = 1_600_000_000_000    # before every record: no mark, no line, no preference
    d = s.screen(LINE, SUB_A, at_ms=long_ago)
    assert (d.action, _codes(d), d.at_ms) == (pb.SCREEN_ACTION_ALLOW, ["caller-unknown"],
                                             long_ago)


def test_bad_input_is_invalid_argument(s: Screens) -> None:
    _refused(lambda: s.screen("not a number", SUB_A), grpc.StatusCode.INVALID_ARGUMENT,
             "caller")
    _refused(lambda: s.screen(LINE, ""), grpc.StatusCode.INVALID_ARGUMENT, "callee")
    _refused(lambda: s.screen(LINE, SUB_A, mode=7), grpc.StatusCode.INVALID_ARGUMENT,
             "call mode")
    _refused(lambda: s.screen(LINE, SUB_A, at_ms=-1), grpc.StatusCode.INVALID_ARGUMENT,
             "negative")


@pytest.mark.parametrize("as_id", ["internet-1", "auditor-1"])
def test_only_carriers_the_institute_and_call_centres_screen(s: Screens, as_id: str) -> None:
    st = s.stub("carrier-1", as_id)
    req = pb.ScreenRequest(caller=LINE, callee=SUB_A)
    for call in (lambda: st.Screen(req, timeout=10),
                 lambda: st.ScreenBatch(pb.ScreenBatchRequest(calls=[req]), timeout=10),
                 lambda: list(st.ScreenStream(iter([req]), timeout=10))):
        _refused(call, grpc.StatusCode.PERMISSION_DENIED,
                 "only carriers, the institute and call centres screen")


def test_the_batch_answers_in_order_with_a_bad_call_marked(s: Screens) -> None:
    calls = [pb.ScreenRequest(caller=LINE, callee=SUB_A, tag=1),
             pb.ScreenRequest(caller="nope", callee=SUB_A, tag=2),
             pb.ScreenRequest(caller=LINE, callee=SUB_B, tag=3)]
    got = s.stub("carrier-1", "callcenter-1").ScreenBatch(
        pb.ScreenBatchRequest(calls=calls), timeout=10).decisions
    assert [d.tag for d in got] == [1, 2, 3]
    assert got[0].action == pb.SCREEN_ACTION_BLOCK and got[2].action == pb.SCREEN_ACTION_LABEL
    assert got[1].action == pb.SCREEN_ACTION_UNSPECIFIED and "InvalidNumber" in got[1].error
    assert not got[0].error and not got[2].error


def test_the_batch_limit(s: Screens) -> None:
    st = s.stub("carrier-1", "carrier-1")
    req = pb.ScreenRequest(caller=LINE, callee=SUB_A)
    full = st.ScreenBatch(pb.ScreenBatchRequest(calls=[req] * MAX_SCREEN_BATCH), timeout=30)
    assert len(full.decisions) == MAX_SCREEN_BATCH
    _refused(lambda: st.ScreenBatch(
        pb.ScreenBatchRequest(calls=[req] * (MAX_SCREEN_BATCH + 1)), timeout=30),
        grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {MAX_SCREEN_BATCH} calls")


def test_the_stream_goes_on_after_a_bad_request(s: Screens) -> None:
    reqs = [pb.ScreenRequest(caller=LINE, callee=SUB_A, tag=10),
            pb.ScreenRequest(caller=FRAUD, callee=SUB_B, tag=11),
            pb.ScreenRequest(caller="12ab", callee=SUB_B, tag=12),
            pb.ScreenRequest(caller=LINE, callee=SUB_B, mode=pb.CALL_MODE_SMS, tag=13),
            pb.ScreenRequest(caller=TAXI, callee=SUB_B, tag=14)]
    got = list(s.stub("carrier-1", "carrier-1").ScreenStream(iter(reqs), timeout=30))
    assert [d.tag for d in got] == [10, 11, 12, 13, 14]
    assert [d.action for d in got] == [pb.SCREEN_ACTION_BLOCK, pb.SCREEN_ACTION_BLOCK,
                                       pb.SCREEN_ACTION_UNSPECIFIED, pb.SCREEN_ACTION_LABEL,
                                       pb.SCREEN_ACTION_LABEL]
    assert got[2].error and all(not d.error for i, d in enumerate(got) if i != 2)


def test_a_preference_issued_at_one_node_changes_the_screen_at_every_node(s: Screens) -> None:
    sub = "+8613900000077"
    nodes = ("carrier-1", "institute", "internet-1")
    assert {s.screen(LINE, sub, node=n).action for n in nodes} == {pb.SCREEN_ACTION_LABEL}
    c1 = s.node("carrier-1")
    key = c1.consortium.members_key
    c1.core.issue(Preference(key.seal(sub), key.id, ("real-estate",), modes=("voice",)))
    # at its own node before the issuing call returned (the writer's subscribers run first)
    assert s.screen(LINE, sub).action == pb.SCREEN_ACTION_BLOCK
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if {s.screen(LINE, sub, node=n).action for n in nodes} == {pb.SCREEN_ACTION_BLOCK}:
            break
        time.sleep(0.05)
    assert {s.screen(LINE, sub, node=n).action for n in nodes} == {pb.SCREEN_ACTION_BLOCK}
    assert s.screen(LINE, sub, mode=pb.CALL_MODE_SMS).action == pb.SCREEN_ACTION_LABEL


def test_the_cache_answers_as_a_fresh_evaluation(s: Screens) -> None:
    c1 = s.node("carrier-1")
    cache = c1.screening.screener.cache
    # A time before the screen rows start: the node evaluates the entry (its cache holds it).
    s.screen(ESTATE, SUB_B, at_ms=1_600_000_000_000)
    assert isinstance(cache, ResolutionCache) and len(cache) > 0
    fresh = ResolutionCache()
    [raw] = c1.view.entries_bytes([ESTATE])
    assert raw is not None
    now = int(time.time() * 1000)
    for at in (now, now + 1, now + 200 * 86_400_000, 1_600_000_000_000):
        want = Entry.decode(raw).evaluate(at)
        for c in (cache, fresh):
            assert replace(c.resolve(raw, at), at_ms=0) == replace(want, at_ms=0)


def test_a_small_cache_stays_bounded() -> None:
    from ledger.view import resolve
    from tests.test_view import CONS as VCONS
    from tests.test_view import rich_book

    view = resolve(rich_book().records, VCONS)
    cache = ResolutionCache(size=2)
    raws = [e.encode() for e in view.entries.values()]
    assert len(raws) > 2
    for raw in raws:
        cache.resolve(raw, 1_700_000_000_000)
    assert len(cache) == 2 and cache.misses == len(raws)
    cache.resolve(raws[-1], 1_700_000_000_001)
    assert cache.hits == 1


# ------------------------------------------------------------------ markex screen


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_one_call(s: Screens, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(s.net.dir)
    code, out, err = run(capsys, "screen", "--consortium", d, "--as", "carrier-1", LINE,
                         "13900000011", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["action"] == "BLOCK" and obj["category"] == "real-estate"
    assert [r["code"] for r in obj["reasons"]] == ["callee-refused-industry", "caller-line"]
    assert LINE in obj["redress"] and obj["callee"] == SUB_A and obj["mode"] == "voice"
    code, out, err = run(capsys, "screen", "--consortium", d, "--as", "callcenter-1",
                         "--node", "institute", LINE, SUB_B, "--mode", "sms",
                         "--at", "2027-01-01T02:00:00Z")
    assert code == 0, err
    assert "LABEL" in out and "caller-registered-marketer" in out


def test_cli_refusals(s: Screens, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(s.net.dir)
    code, out, err = run(capsys, "screen", "--consortium", d, "--as", "callcenter-1", LINE,
                         SUB_A)
    assert code == 2 and "runs no node" in err and "--node" in err
    code, out, err = run(capsys, "screen", "--consortium", d, "--as", "internet-1", LINE,
                         SUB_A)
    assert code == 2 and "only carriers, the institute and call centres" in err
    code, out, err = run(capsys, "screen", "--consortium", d, "--as", "carrier-1", "abc",
                         SUB_A, "--json")
    assert code == 2 and json.loads(err)["error"]["code"] == "usage"
    code, out, err = run(capsys, "screen", "--consortium", d, "--as", "carrier-1", "--list",
                         "x.csv")
    assert code == 2 and "--caller" in err


def test_cli_list_equals_per_call_screens(s: Screens, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    numbers = [SUB_A, "139-0000-0012", SUB_C, "+8613900000066", "+8613900000088"]
    src = tmp_path / "campaign.csv"
    src.write_text("number\n" + "\n".join(f"{n},name {i}" for i, n in enumerate(numbers[:2]))
                   + "\nnot-a-number\n\n" + "\n".join(numbers[2:]) + "\n", encoding="utf-8")
    out_csv = tmp_path / "scrubbed.csv"
    code, out, err = run(capsys, "screen", "--consortium", str(s.net.dir), "--as",
                         "callcenter-1", "--node", "carrier-1", "--caller", LINE,
                         "--list", str(src), "--out", str(out_csv), "--json")
    assert code == 2 and err == ""                     # one bad row, the others screened
    summary = json.loads(out)
    assert summary["count"] == 5 and summary["bad"][0]["line"] == 4
    assert "not-a-number" in summary["bad"][0]["error"]
    rows = list(csv.reader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    assert rows[0] == ["number", "result", "reason"]
    at = summary["at_ms"]
    want = []
    for n in numbers:
        dec = s.screen(LINE, n, as_id="callcenter-1", at_ms=at)
        result = "refused" if dec.action == pb.SCREEN_ACTION_BLOCK else "allowed"
        want.append([dec.callee, result, dec.reasons[0].code])
    assert rows[1:] == want
    assert [r[1] for r in rows[1:]] == ["refused", "allowed", "refused", "allowed", "allowed"]
    # the reason is the code only: no preference detail, no record id
    assert all(r[2] in ("callee-refused-industry", "caller-registered-marketer")
               for r in rows[1:])
    # without --json: the bad row on stderr, with its line
    code, out, err = run(capsys, "screen", "--consortium", str(s.net.dir), "--as",
                         "callcenter-1", "--node", "carrier-1", "--caller", LINE,
                         "--list", str(src), "--out", str(tmp_path / "again.csv"))
    assert code == 2 and f"markex: {src}:4: " in err and "not-a-number" in err
    assert (tmp_path / "again.csv").read_text(encoding="utf-8").count("\n") == 6
    # without --out: the CSV on stdout
    good = tmp_path / "good.csv"
    good.write_text("\n".join(numbers) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "screen", "--consortium", str(s.net.dir), "--as",
                         "carrier-1", "--caller", LINE, "--list", str(good),
                         "--at", "2027-01-01T02:00:00Z")
    assert code == 0, err
    assert out.splitlines()[0] == "number,result,reason" and len(out.splitlines()) == 6


def test_a_node_without_the_members_key_does_not_screen() -> None:
    from ledger.consent import MemoryConsent
    from ledger.screen import NoMembersKey
    from ledger.sealing import MembersKey
    from node.screen import Call, Screener
    from node.status import code_for
    from tests.conftest import make_consortium

    class NoView:
        def entries_bytes(self, e164s: list[str]) -> list[bytes | None]:
            return [None] * len(e164s)

    cons = make_consortium()
    assert cons.members_key is None
    sc = Screener(cons, NoView(), MemoryConsent(MembersKey.generate()))
    with pytest.raises(NoMembersKey, match="members' key"):
        sc.decide_many([Call(LINE, SUB_A, 1, "voice")])
    assert code_for(NoMembersKey("x")) == grpc.StatusCode.FAILED_PRECONDITION


def test_cli_long_list_shows_progress(s: Screens, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from node.auditcli import PROGRESS_MIN

    src = tmp_path / "long.csv"
    src.write_text("".join(f"+86139{i:08d}\n" for i in range(PROGRESS_MIN + 1)),
                   encoding="utf-8")
    code, out, err = run(capsys, "screen", "--consortium", str(s.net.dir), "--as",
                         "carrier-1", "--caller", LINE, "--list", str(src),
                         "--out", str(tmp_path / "o.csv"))
    assert code == 0, err
    assert f"[{'#' * 30}] {PROGRESS_MIN + 1}/{PROGRESS_MIN + 1} (100%)" in err
    assert "numbers/s" in err
    rows = (tmp_path / "o.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == PROGRESS_MIN + 2


def test_the_node_answers_from_its_screen_rows_once_they_are_written(s: Screens) -> None:
    """A node's screen index (node/screenindex.py) follows its view: once its
    rows are written, a batch is answered from them, as the reference says."""
    c1 = s.node("carrier-1")
    ix, sc = c1.screen_index, c1.screening.screener
    deadline = time.monotonic() + 30
    while not ix.idle():
        assert time.monotonic() < deadline, "the node's screen index never caught up"
        time.sleep(0.05)
    stub = s.stub("carrier-1", "carrier-1")
    reqs = [pb.ScreenRequest(caller=c, callee=SUB_A, tag=i)
            for i, c in enumerate([TAXI, FRAUD, SUSPECT, ESTATE, LINE, "+8613700000009"])]
    hits = sc.row_hits
    got = stub.ScreenBatch(pb.ScreenBatchRequest(calls=reqs), timeout=10).decisions
    assert sc.row_hits - hits >= 4          # the four marked callers, from their rows
    one = [stub.Screen(r, timeout=10) for r in reqs]
    assert [(d.action, d.category, list(d.reasons), d.tag) for d in got] == [
        (d.action, d.category, list(d.reasons), d.tag) for d in one]


def test_a_node_that_keeps_no_rows_answers_as_one_that_does(s: Screens) -> None:
    """`consortium init` keeps the screen's rows at the nodes of the roles that
    screen at their own node (carrier-1, the institute) and none at
    internet-1's (node.toml `screen_rows = false`): there the view journals
    nothing and a batch is answered from the entries, the same decisions."""
    from ledger.view.stored import CHANGED

    i1 = s.node("internet-1")
    assert s.node("carrier-1").screen_index is not None and i1.screen_index is None
    assert list(i1.store.items(CHANGED)) == []
    reqs = [pb.ScreenRequest(caller=c, callee=callee, tag=i) for i, (c, callee) in enumerate(
        (c, callee) for c in (TAXI, FRAUD, SUSPECT, ESTATE, LINE, "+8613700000009", "110")
        for callee in (SUB_A, SUB_B, SUB_C))]
    batch = pb.ScreenBatchRequest(calls=reqs)
    with_rows = s.stub("carrier-1", "callcenter-1").ScreenBatch(batch, timeout=10).decisions
    without = s.stub("internet-1", "callcenter-1").ScreenBatch(batch, timeout=10).decisions
    assert i1.screening.screener.row_hits == 0
    assert [(d.action, d.category, list(d.reasons), d.redress, d.tag) for d in without] == [
        (d.action, d.category, list(d.reasons), d.redress, d.tag) for d in with_rows]


def test_a_call_centre_screens_and_reads_no_records(s: Screens) -> None:
    """Its certificate serves the screen only: the Audit and Holders services
    refuse it (a carrier's or an auditor's certificate reads them)."""
    ep = s.net.consortium.participant("carrier-1").member_endpoint
    for as_id, ok in (("callcenter-1", False), ("auditor-1", True), ("internet-1", True)):
        ch = client.member_channel(s.net.dir, as_id, ep, "carrier-1")
        calls = (lambda ch=ch: rpc.AuditStub(ch).FindRecords(
                     pb.FindRecordsRequest(id_prefix="00000000"), timeout=10),
                 lambda ch=ch: rpc.HoldersStub(ch).ListAppeals(pb.ListAppealsRequest(), timeout=10))
        for call in calls:
            if ok:
                call()
            else:
                _refused(call, grpc.StatusCode.PERMISSION_DENIED, "call centre")
    assert s.screen(LINE, SUB_A, as_id="callcenter-1").action == pb.SCREEN_ACTION_BLOCK
