"""Consent on real nodes (in-process `Node`s, real gRPC and TLS, as
tests/test_cli.py runs them): a preference issued with `markex prefer` at
one carrier's node changes the screen's answer at every node within a
bounded wait; a call centre scrubbing a list through a node's member port
gets the answers of per-call screens; a reassignment at the serving carrier
voids the old refusal everywhere; and each refusal of the Admin RPCs
(IssuePreference, IssueMarketerLine) is its typed error's status, with
nothing written."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys.layout import NodeConfig
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.cli import main
from node.client import INSTITUTE_KEY_ENV
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(240)

USCC = "91440300MA5F000007"
LINE = "+864008001234"          # a real-estate marketer's line
SPREAD_S = 10.0                 # the bounded wait for a record to reach every node's screen


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNet]:
    n = InProcessNet(tmp_path_factory.mktemp("consent") / "c", carriers=2, internet=1,
                     sync_interval=0.2)
    n.start_all()
    channels: dict[tuple[str, str], grpc.Channel] = {}
    n.screening_channels = channels  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        key = NodeConfig.for_participant(n.dir, "institute").institute_key
        mp.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
        try:
            provider = n.consortium.carrier_for(LINE)
            assert provider is not None
            n.line_id = n.admin(provider).IssueMarketerLine(  # type: ignore[attr-defined]
                rpb.MarketerLine(number=LINE, enterprise="安家房产 Anjia Realty", uscc=USCC,
                                 industry="real-estate"), timeout=30).id.hex()
            n.wait_converged(timeout=60)
            yield n
        finally:
            for ch in channels.values():
                ch.close()
            n.stop_all()


def cli(*argv: str) -> tuple[int, dict[str, Any] | str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    try:
        return code, json.loads(out.getvalue()), err.getvalue()
    except json.JSONDecodeError:
        return code, out.getvalue(), err.getvalue()


def screening(net: InProcessNet, node: str, as_id: str) -> rpc.ScreeningStub:
    """`node`'s Screening service on its member port, as `as_id` (one channel each)."""
    channels: dict[tuple[str, str], grpc.Channel] = net.screening_channels  # type: ignore[attr-defined]
    if (node, as_id) not in channels:
        ep = net.consortium.participant(node).member_endpoint  # type: ignore[union-attr]
        channels[(node, as_id)] = client.member_channel(net.dir, as_id, ep, node)
    return rpc.ScreeningStub(channels[(node, as_id)])


def nodes(net: InProcessNet) -> list[str]:
    return [p.id for p in net.consortium.participants if p.role not in ("auditor", "callcenter")]


def call(callee: str, at_ms: int = 0, caller: str = LINE) -> pb.ScreenRequest:
    return pb.ScreenRequest(caller=caller, callee=callee, at_ms=at_ms or int(time.time() * 1000),
                            mode=pb.CALL_MODE_VOICE)


def answer(d: pb.ScreenDecision) -> tuple[str, list[str]]:
    return pb.ScreenAction.Name(d.action).removeprefix("SCREEN_ACTION_"), [r.code for r in
                                                                            d.reasons]


def until_every_node(net: InProcessNet, as_id: str, req: Callable[[], pb.ScreenRequest],
                     ok: Callable[[pb.ScreenDecision], bool]) -> dict[str, pb.ScreenDecision]:
    """Every node's answer once each satisfies `ok`, within SPREAD_S."""
    deadline = time.monotonic() + SPREAD_S
    got: dict[str, pb.ScreenDecision] = {}
    while True:
        for pid in nodes(net):
            if pid not in got or not ok(got[pid]):
                got[pid] = screening(net, pid, as_id).Screen(req(), timeout=10)
        if all(ok(d) for d in got.values()):
            return got
        assert time.monotonic() < deadline, {p: answer(d) for p, d in got.items()}
        time.sleep(0.1)


def subscriber(net: InProcessNet, carrier: str, n: int) -> str:
    """A mobile number `carrier` serves (by the consortium's ranges)."""
    prefix = net.consortium.number_ranges[carrier][0]
    return f"{prefix}{n:08d}"


def _c(net: InProcessNet) -> list[str]:
    return ["--consortium", str(net.dir), "--json"]


# ------------------------------------------------------------------ spreading


def test_a_preference_at_one_carrier_changes_the_screen_at_every_node(net: InProcessNet
                                                                        ) -> None:
    sub = subscriber(net, "carrier-1", 1001)
    before = until_every_node(net, "carrier-2", lambda: call(sub),
                              lambda d: d.action != pb.SCREEN_ACTION_UNSPECIFIED)
    assert {answer(d)[0] for d in before.values()} == {"LABEL"}  # a registered marketer
    code, out, err = cli("prefer", "--as", "carrier-1", sub.removeprefix("+86"), "--refuse",
                         "real-estate,finance", *_c(net))
    assert code == 0, err
    assert isinstance(out, dict) and out["issuer"] == "carrier-1"
    after = until_every_node(net, "carrier-2", lambda: call(sub),
                             lambda d: d.action == pb.SCREEN_ACTION_BLOCK)
    pref = bytes.fromhex(out["id"])
    for pid, d in after.items():
        assert answer(d)[1][0] == "callee-refused-industry", pid
        assert pref in d.reasons[0].records, pid  # the reason names the preference
        assert d.redress, pid
    # a finance-only refusal lets the real-estate line through, everywhere
    other = subscriber(net, "carrier-2", 1002)
    code, _, err = cli("prefer", "--as", "carrier-2", other, "--refuse", "finance", *_c(net))
    assert code == 0, err
    net.wait_converged(timeout=30)
    assert {answer(d)[0] for d in until_every_node(
        net, "carrier-1", lambda: call(other), lambda d: True).values()} == {"LABEL"}


def test_a_call_centre_scrubbing_a_list_gets_the_per_call_answers(
    net: InProcessNet, tmp_path: Path
) -> None:
    subs = [subscriber(net, c, 2000 + i) for i, c in enumerate(["carrier-1", "carrier-2"] * 3)]
    for i, (sub, refuse) in enumerate(zip(subs, ["real-estate", "finance", "all", "none"],
                                          strict=False)):
        if refuse != "none":
            carrier = net.consortium.carrier_for(sub)
            assert carrier is not None
            assert cli("prefer", "--as", carrier, sub, "--refuse", refuse, *_c(net))[0] == 0, i
    net.wait_converged(timeout=30)
    at = int(time.time() * 1000)
    for node in nodes(net):
        stub = screening(net, node, "callcenter-1")
        batch = stub.ScreenBatch(pb.ScreenBatchRequest(calls=[call(s, at) for s in subs]),
                                 timeout=30)
        singles = [stub.Screen(call(s, at), timeout=10) for s in subs]
        assert [answer(d) for d in batch.decisions] == [answer(d) for d in singles], node
        assert [d.callee for d in batch.decisions] == subs
        got = [answer(d)[0] for d in batch.decisions]
        assert got == ["BLOCK", "LABEL", "BLOCK", "LABEL", "LABEL", "LABEL"], (node, got)
    # the command a call centre runs: its CSV rows are the per-call screens' answers
    campaign = tmp_path / "campaign.csv"
    campaign.write_text("number\n" + "\n".join(s.removeprefix("+86") for s in subs) + "\n",
                        encoding="utf-8")
    at_iso = datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="milliseconds")
    base = ["--as", "callcenter-1", "--node", "carrier-2", "--at", at_iso, *_c(net)]
    code, scrub, err = cli("screen", "--caller", LINE, "--list", str(campaign), *base)
    assert code == 0 and isinstance(scrub, dict), err
    rows = [(r["number"], r["result"], r["reason"]) for r in scrub["rows"]]
    per_call = []
    for s in subs:
        code, one, err = cli("screen", LINE, s, *base)
        assert code == 0 and isinstance(one, dict), err
        per_call.append((s, "refused" if one["action"] == "BLOCK" else "allowed",
                         one["reasons"][0]["code"]))
    assert rows == per_call
    assert (scrub["refused"], scrub["allowed"]) == (2, 4)


def test_a_reassignment_at_the_serving_carrier_voids_the_old_refusal_everywhere(
    net: InProcessNet,
) -> None:
    sub = subscriber(net, "carrier-2", 3001)
    assert cli("prefer", "--as", "carrier-2", sub, "--refuse", "real-estate", *_c(net))[0] == 0
    until_every_node(net, "carrier-1", lambda: call(sub),
                     lambda d: d.action == pb.SCREEN_ACTION_BLOCK)
    time.sleep(0.01)  # the new tenure starts after the refusal took effect
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    code, _, err = cli("reassign", "--as", "carrier-2", sub, "--at", at, *_c(net))
    assert code == 0, err
    after = until_every_node(net, "carrier-1", lambda: call(sub),
                             lambda d: d.action != pb.SCREEN_ACTION_BLOCK)
    assert {answer(d)[0] for d in after.values()} == {"LABEL"}
    # and the new holder's own refusal holds again
    assert cli("prefer", "--as", "carrier-2", sub, "--refuse", "all", *_c(net))[0] == 0
    until_every_node(net, "carrier-1", lambda: call(sub),
                     lambda d: d.action == pb.SCREEN_ACTION_BLOCK)


# ------------------------------------------------------------------ refusals


def _size(net: InProcessNet) -> int:
    return net.log_size("carrier-1")


PREFER, REGISTER, DEREGISTER = ("prefer",), ("line", "register"), ("line", "deregister")
LINE_OPTS = ["--enterprise", "X", "--uscc", USCC, "--industry", "finance"]
REFUSED = [
    # (the command, who, its arguments, exit code, a phrase of the node's sentence)
    (PREFER, "internet-1", ["{sub1}", "--refuse", "finance"], 4, "internet-1"),
    (PREFER, "carrier-2", ["{sub1}", "--refuse", "finance"], 4, "served by carrier-1"),
    (PREFER, "carrier-1", ["{sub1}", "--refuse", "none"], 4, "no refusal in force"),
    (REGISTER, "internet-1", ["+8613812347777", *LINE_OPTS], 4, "carrier"),
    (REGISTER, "carrier-2", ["{sub1}", *LINE_OPTS], 4, "held by carrier-1"),
    (REGISTER, "{provider}", ["+86400*", *LINE_OPTS], 4, "overlaps +864008001234"),
    (DEREGISTER, "carrier-1", ["00" * 32], 3, "not in this node's log"),
    (DEREGISTER, "{other}", ["{line}"], 4, "only the carrier that registered"),
]


@pytest.mark.parametrize("command,who,args,code,phrase", REFUSED, ids=lambda v: str(v)[:30])
def test_the_node_refuses_with_a_sentence_and_writes_nothing(
    net: InProcessNet, command: tuple[str, ...], who: str, args: list[str], code: int,
    phrase: str,
) -> None:
    sub1 = subscriber(net, "carrier-1", 4001)  # served by carrier-1; it never refused anything
    provider = net.consortium.carrier_for(LINE)
    who = who.format(provider=provider, other="carrier-2" if provider == "carrier-1" else
                     "carrier-1")
    args = [a.format(sub1=sub1, line=net.line_id[:12]) for a in args]  # type: ignore[attr-defined]
    size = _size(net)
    got, out, err = cli(*command, "--as", who, *args, "--consortium", str(net.dir))
    assert (got, out) == (code, ""), (command, args, err)
    assert err.startswith("markex: ") and err.count("\n") == 1 and phrase in err, err
    assert _size(net) == size  # nothing written


def test_the_admin_rpcs_map_each_typed_error_to_its_status(net: InProcessNet) -> None:
    """What the CLI would not send: the node's own checks, each one status."""
    sub = subscriber(net, "carrier-1", 5001)
    admin = net.admin("carrier-1")
    size = _size(net)
    cases: list[tuple[Any, grpc.StatusCode]] = [
        (lambda: admin.IssuePreference(pb.PreferenceRequest(number=sub, refuse=["gambling"]),
                                       timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.IssuePreference(pb.PreferenceRequest(number="13x", refuse=["finance"]),
                                       timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.IssuePreference(pb.PreferenceRequest(
            number=sub, refuse=["finance"], allowed=[rpb.TimeBand(start_minute=600,
                                                                  end_minute=500)]),
            timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.IssuePreference(pb.PreferenceRequest(number=sub, refuse=["finance"],
                                                            modes=["fax"]), timeout=10),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.IssueMarketerLine(rpb.MarketerLine(
            number="+8613812345678", enterprise="X", uscc=USCC[:17] + "A", industry="finance"),
            timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: admin.IssueMarketerLine(rpb.MarketerLine(
            number="+8613812345678", enterprise="X", uscc=USCC, industry="gambling"),
            timeout=10), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: net.admin("carrier-2").IssuePreference(
            pb.PreferenceRequest(number=sub, refuse=["finance"]), timeout=10),
         grpc.StatusCode.PERMISSION_DENIED),
        (lambda: admin.IssuePreference(pb.PreferenceRequest(number=sub), timeout=10),
         grpc.StatusCode.FAILED_PRECONDITION),
    ]
    for i, (fn, status) in enumerate(cases):
        with pytest.raises(grpc.RpcError) as e:
            fn()
        assert e.value.code() == status, (i, e.value.details())
        assert e.value.details() and ": " in e.value.details(), i  # "Class: sentence"
    assert _size(net) == size


def test_every_consent_error_has_its_status() -> None:
    """node/status.py: the typed errors of preferences, lines and sealing, one code each."""
    from ledger import errors as E
    from ledger.payloads.line import BadCreditCode
    from ledger.payloads.preference import BadTimeBand
    from ledger.sealing import SealError
    from node.status import code_for

    s = grpc.StatusCode
    for err, status in ((E.UnknownIndustry, s.INVALID_ARGUMENT),
                        (E.WrongMembersKey, s.INVALID_ARGUMENT),
                        (BadTimeBand, s.INVALID_ARGUMENT), (BadCreditCode, s.INVALID_ARGUMENT),
                        (SealError, s.INVALID_ARGUMENT),
                        (E.MembersKeyMissing, s.PERMISSION_DENIED),
                        (E.NothingToRevoke, s.FAILED_PRECONDITION),
                        (E.SamePreference, s.FAILED_PRECONDITION),
                        (E.NotALiveLine, s.FAILED_PRECONDITION),
                        (E.LineOverlap, s.FAILED_PRECONDITION)):
        assert code_for(err("x")) == status, err


def test_a_node_without_the_members_key_refuses_to_seal(tmp_path: Path) -> None:
    """IssuePreference needs the key that seals the number: without it, one
    sentence (MembersKeyMissing, PERMISSION_DENIED) and nothing signed."""
    from node.server import Node

    lone = InProcessNet(tmp_path / "c", carriers=1, internet=0, sync_interval=0.2)
    (lone.dir / "carrier-1" / "members.key").unlink()
    node = Node(NodeConfig.for_participant(lone.dir, "carrier-1"), sync_interval=0.2)
    node.start()
    try:
        admin = lone.admin("carrier-1")
        with pytest.raises(grpc.RpcError) as e:
            admin.IssuePreference(pb.PreferenceRequest(number="13812345678", refuse=["finance"]),
                                  timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert e.value.details().startswith("MembersKeyMissing: node carrier-1 holds no "
                                            "members' key")
        assert node.core.ledger.feed("carrier-1").seq == 0
    finally:
        super(InProcessNet, lone).stop_all()  # the client channels
        node.stop(grace=0.1)
