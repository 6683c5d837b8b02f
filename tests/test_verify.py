""""Verified" means verified: the view's freshness, the client's memory of
the newest view, view cosignatures checked before they are kept.

Real nodes run in-process on their TLS ports (institute, carrier-1,
internet-1 of a consortium `init_consortium` wrote), every node on one
adjustable clock, so a test moves time forward instead of waiting minutes.
Every test here fails on main: there a view checkpoint carried no time, the
client had no notion of a stale or rolled-back view, and a peer's view
cosignature was kept without being verified."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.signing import SigningKey
from ledger import audit, note
from ledger.errors import ClockSkew, NotFound
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.auditcli import GrpcLogSource
from node.cli import main
from node.localnet import free_port_block
from node.lookup import (
    StaleView,
    ViewClient,
    ViewRollback,
    lookup_verified,
    open_view,
    verify_answer,
)
from node.server import Node
from node.witness import witness_name
from tests.conftest import stop_nodes

pytestmark = pytest.mark.timeout(120)

NUMBER = "+8613800000077"  # nobody marked it: an absence proof is an answer like any other
SUBJECT = "carrier-1"      # the node whose answers are verified


class Clock:
    """Wall time plus an offset the test moves: the nodes' only clock."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


class Net:
    def __init__(self, root: Path, clock: Clock, fake: dict[str, Any] | None = None) -> None:
        self.dir = root / "c"
        base = free_port_block(6)
        self.cons: Consortium = init_consortium(
            self.dir, carriers=1, internet=1, base_port=base, now=datetime.now(UTC)
        )
        self.clock = clock
        self.nodes: dict[str, Node] = {}
        self.servers: list[grpc.Server] = []
        self.channels: list[grpc.Channel] = []
        for pid, servicer in (fake or {}).items():
            self.servers.append(self._serve_as(pid, servicer))
        for p in self.cons.participants:
            if p.id not in (fake or {}) and p.member_endpoint:  # the auditor runs no node
                node = Node(NodeConfig.for_participant(self.dir, p.id), clock=clock,
                            sync_interval=0.2)
                self.nodes[p.id] = node.start()

    def _serve_as(self, pid: str, servicer: rpc.ExchangeServicer) -> grpc.Server:
        """A member port at `pid`'s endpoint with `pid`'s certificate, served by `servicer`."""
        p = self.cons.participant(pid)
        assert p is not None
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        rpc.add_ExchangeServicer_to_server(servicer, server)
        creds = grpc.ssl_server_credentials(
            [((self.dir / pid / "tls.key").read_bytes(),
              (self.dir / pid / "tls.pem").read_bytes())],
            root_certificates=(self.dir / "ca" / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        server.add_secure_port(p.member_endpoint, creds)
        server.start()
        return server

    def public(self, pid: str = SUBJECT) -> rpc.PublicStub:
        p = self.cons.participant(pid)
        assert p is not None
        ch = client.public_channel(self.dir, p.public_endpoint, pid)
        self.channels.append(ch)
        return rpc.PublicStub(ch)

    def answer(self, number: str = NUMBER) -> pb.LookupResponse:
        return self.public().Lookup(pb.LookupRequest(number=number, at_ms=self.clock()), timeout=5)

    def pin(self) -> str:
        return base64.b64encode(
            NodeConfig.for_participant(self.dir, "institute").institute_key).decode()

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        for s in self.servers:
            s.stop(None)
        stop_nodes(self.nodes.values())


@pytest.fixture
def make_net(tmp_path: Path) -> Iterator[Callable[..., Net]]:
    made: list[Net] = []

    def make(offset_ms: int = 0, fake: dict[str, Any] | None = None) -> Net:
        net = Net(tmp_path / f"n{len(made)}", Clock(offset_ms), fake)
        made.append(net)
        return net

    yield make
    for net in made:
        net.close()


def until(what: str, cond: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def verified_answer(net: Net) -> pb.LookupResponse:
    """The first answer of the subject node whose view is cosigned by a quorum."""
    def ok() -> pb.LookupResponse | None:
        resp = net.answer()
        now = net.clock()
        res = verify_answer(net.cons, NUMBER, resp, resp.view_checkpoint, now, now)
        return resp if res["verified"] else None

    return until("a cosigned view checkpoint", ok)


def signed_at(resp: pb.LookupResponse, cons: Consortium) -> int:
    return open_view(cons, resp.view_checkpoint).checkpoint.signed_at_ms


def newer_than(net: Net, t0: int) -> pb.LookupResponse:
    """The first quorum-cosigned answer whose checkpoint is signed after `t0`."""
    def ok() -> pb.LookupResponse | None:
        resp = verified_answer(net)
        return resp if signed_at(resp, net.cons) > t0 else None

    return until("a newer cosigned view checkpoint", ok)


# ------------------------------------------------------------------ freshness


def test_idle_node_signs_its_view_again_and_never_serves_it_unverifiable(
    make_net: Callable[..., Net],
) -> None:
    net = make_net()
    first = verified_answer(net)
    t0 = signed_at(first, net.cons)
    assert abs(t0 - net.clock()) < 30_000
    # A quarter of the maximum age later the idle node signs again; every
    # answer on the way verifies (the cosigned note is served until the new
    # one has its quorum).
    net.clock.offset_ms += net.cons.policy.view_max_age_ms // 4 + 1000
    vc = ViewClient(net.cons)
    seen: list[int] = []

    def resigned() -> bool:
        now = net.clock()
        res = vc.lookup(net.public(), NUMBER, now, now)
        assert res["verified"] is True, res
        seen.append(res["view_signed_at_ms"])
        return res["view_signed_at_ms"] > t0

    until("a view checkpoint signed again", resigned)
    assert seen[-1] >= t0 + net.cons.policy.view_max_age_ms // 4
    assert seen == sorted(seen)  # never an older one on the way
    assert vc.newest == {SUBJECT: seen[-1]}
    # Without that, the first checkpoint would be refused once it is too old.
    later = t0 + net.cons.policy.view_max_age_ms + 1
    with pytest.raises(StaleView):
        verify_answer(net.cons, NUMBER, first, first.view_checkpoint, later, later)


def test_client_refuses_a_stale_a_future_and_a_rolled_back_view(
    make_net: Callable[..., Net],
) -> None:
    net = make_net()
    old = verified_answer(net)
    t0 = signed_at(old, net.cons)
    policy = net.cons.policy
    net.clock.offset_ms += policy.view_max_age_ms // 4 + 1000
    new = newer_than(net, t0)
    t1 = signed_at(new, net.cons)

    # too old, said in seconds against the policy's maximum
    at = t0 + 1_234_000
    with pytest.raises(StaleView, match="view checkpoint is 1,234 s old; the policy allows 600 s"):
        verify_answer(net.cons, NUMBER, old, old.view_checkpoint, at, at)
    replay = _Replaying(old)
    got = lookup_verified(replay, net.cons, NUMBER, at, now_ms=at)
    assert got["verified"] is False
    assert got["error"] == "StaleView: view checkpoint is 1,234 s old; the policy allows 600 s"
    # signed in the future beyond the clock skew
    before = t0 - policy.clock_skew_ms - 1000
    with pytest.raises(ClockSkew, match="in the future"):
        verify_answer(net.cons, NUMBER, old, old.view_checkpoint, before, before)

    # a client that keeps state refuses to go back to an older view...
    now = t1 + 1000
    vc = ViewClient(net.cons)
    assert vc.verify(NUMBER, new, now, now)["verified"] is True
    with pytest.raises(ViewRollback, match="before one this client has verified"):
        vc.verify(NUMBER, old, now, now)
    assert vc.lookup(replay, NUMBER, now, now)["error"].startswith("ViewRollback: ")
    # ...also after a restart from the state it kept
    again = ViewClient(net.cons, vc.newest)
    with pytest.raises(ViewRollback):
        again.verify(NUMBER, old, now, now)
    # going forward is fine, and the stateless check alone does not see the rollback
    fwd = ViewClient(net.cons)
    assert fwd.verify(NUMBER, old, now, now)["verified"] is True
    assert fwd.verify(NUMBER, new, now, now)["verified"] is True
    assert verify_answer(net.cons, NUMBER, old, old.view_checkpoint, now, now)["verified"]


def test_only_fresh_cosignatures_count(make_net: Callable[..., Net]) -> None:
    """A cosignature timestamped longer ago than the maximum age is not counted."""
    net = make_net()
    resp = verified_answer(net)
    view = open_view(net.cons, resp.view_checkpoint)
    assert sorted(view.cosigned_at) == ["institute", "internet-1"]
    # The same checkpoint with only internet-1's cosignature and the
    # institute's made with its real key but dated 700 s back.
    body = note.Note.parse(resp.view_checkpoint).text
    keys = {p: SigningKey.load(net.dir / p / "signing.key") for p in ("carrier-1", "institute")}
    own = note.sign_note(body, f"{net.cons.name}/view/carrier-1", keys["carrier-1"])
    i1 = [s.to_line() for s in note.Note.parse(resp.view_checkpoint).signatures
          if s.name == witness_name(net.cons.name, "internet-1")]
    t = view.checkpoint.signed_at_ms // 1000
    backdated = note.cosign_line(body, witness_name(net.cons.name, "institute"),
                                 keys["institute"], t - 700)
    text = note.add_signature_lines(own, [*i1, backdated])
    now = view.checkpoint.signed_at_ms + 1000
    res = verify_answer(net.cons, NUMBER, resp, text, now, now)
    assert res["verified"] is False and res["cosigned_by"] == ["internet-1"]
    assert res["error"] == (
        "view checkpoint cosigned by 1 member(s) at a fresh time (internet-1), "
        "1 more too long ago (institute); the policy needs 2"
    )
    # ...and the same line dated now counts.
    fresh = note.cosign_line(body, witness_name(net.cons.name, "institute"), keys["institute"], t)
    ok = verify_answer(net.cons, NUMBER, resp, note.add_signature_lines(own, [*i1, fresh]),
                       now, now)
    assert ok["verified"] is True


class _Replaying:
    """A stub whose node replays one recorded answer (a hostile node's replay)."""

    def __init__(self, resp: pb.LookupResponse) -> None:
        self.resp = resp

    def Lookup(self, request: pb.LookupRequest, timeout: float) -> pb.LookupResponse:  # noqa: N802
        out = pb.LookupResponse()
        out.CopyFrom(self.resp)
        return out


def test_markex_lookup_says_why_a_view_is_too_old(
    make_net: Callable[..., Net], capsys: pytest.CaptureFixture[str]
) -> None:
    """Nodes whose clocks lag 20 minutes serve a view checkpoint that is
    properly cosigned and 20 minutes old: `markex lookup` refuses it and says why."""
    net = make_net(offset_ms=-20 * 60 * 1000)
    verified_answer(net)  # cosigned, and fresh by the nodes' own clock
    argv = ["lookup", "--node", SUBJECT, NUMBER, "--consortium", str(net.dir),
            "--institute-key", net.pin()]
    capsys.readouterr()
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert re.search(r"^verified +no$", out, re.M), out
    assert re.search(r"^markex: not verified: view checkpoint is 1,[12]\d\d s old; "
                     r"the policy allows 600 s$", err), err


def test_auditor_reports_a_view_older_than_it_saw(
    make_net: Callable[..., Net], tmp_path: Path
) -> None:
    net = make_net()
    old = verified_answer(net)
    t0 = signed_at(old, net.cons)
    p = net.cons.participant(SUBJECT)
    assert p is not None
    channel = client.public_channel(net.dir, p.public_endpoint, SUBJECT)
    net.channels.append(channel)
    # The view may be cosigned before the node's first log checkpoint tick.
    until("a log checkpoint", lambda: net.nodes[SUBJECT].log_checkpoint_note() is not None)
    # Entries and evidence come from the member port's Audit service, as the auditor.
    member = client.member_channel(net.dir, "auditor-1", p.member_endpoint, SUBJECT)
    net.channels.append(member)
    src = GrpcLogSource(rpc.PublicStub(channel), rpc.AuditStub(member))
    rep, state = audit.audit_source(src, net.cons, SUBJECT, None)
    assert state is not None, rep.to_json()
    assert state.view_signed_at_ms >= t0
    assert not [f for f in rep.findings if "rollback" in f.kind]
    # the state file keeps it
    assert audit.AuditState.from_json(state.to_json(), net.cons) == state

    net.clock.offset_ms += net.cons.policy.view_max_age_ms // 4 + 1000
    until("a newer view checkpoint", lambda: signed_at(net.answer(), net.cons) > t0)
    rep, newer = audit.audit_source(src, net.cons, SUBJECT, state)
    assert newer is not None and newer.view_signed_at_ms > state.view_signed_at_ms
    assert not [f for f in rep.findings if "rollback" in f.kind]

    class Replay(GrpcLogSource):
        def view_checkpoint(self) -> str | None:
            return old.view_checkpoint

    rep, kept = audit.audit_source(Replay(src.stub, src.audit), net.cons, SUBJECT, newer)
    kinds = [f.kind for f in rep.findings]
    assert "view-rollback" in kinds and not rep.ok
    detail = next(f.detail for f in rep.findings if f.kind == "view-rollback")
    assert "before one this auditor saw" in detail
    assert kept is None or kept.view_signed_at_ms == newer.view_signed_at_ms


def test_auditor_reports_log_cosignatures_older_than_it_saw(
    make_net: Callable[..., Net],
) -> None:
    """Log checkpoints stay plain C2SP: their time is in the cosignatures. The
    auditor remembers the newest it saw; a checkpoint whose newest cosignature
    is older than that (beyond the clock skew) is a finding."""
    net = make_net()
    p = net.cons.participant(SUBJECT)
    assert p is not None
    admin = client.admin_stub(net.dir, SUBJECT, p.member_endpoint, SUBJECT)
    admin.IssueMark(rpb.Mark(number="13800000001", category="fraud", score=60,
                             observed_at_ms=net.clock()), timeout=20)
    channel = client.public_channel(net.dir, p.public_endpoint, SUBJECT)
    net.channels.append(channel)
    # Entries and evidence come from the member port's Audit service, as the auditor.
    member = client.member_channel(net.dir, "auditor-1", p.member_endpoint, SUBJECT)
    net.channels.append(member)
    src = GrpcLogSource(rpc.PublicStub(channel), rpc.AuditStub(member))

    def cosigned() -> str | None:
        try:
            text = src.log_checkpoint()
        except NotFound:  # not signed yet
            return None
        return text if len(note.Note.parse(text).signatures) >= 3 else None

    text = until("a cosigned log checkpoint", cosigned)
    rep, state = audit.audit_source(src, net.cons, SUBJECT, None, view=False)
    assert state is not None and abs(state.log_cosigned_at * 1000 - net.clock()) < 60_000
    assert audit.AuditState.from_json(state.to_json(), net.cons) == state

    # The same checkpoint, its cosignature lines replaced by ones an hour older
    # (made with the witnesses' real keys): what a node replaying old ones serves.
    parsed = note.Note.parse(text)
    body = parsed.text
    t = state.log_cosigned_at - 3600
    own = [s.to_line() for s in parsed.signatures if "/witness/" not in s.name]
    old_lines = [
        note.cosign_line(body, witness_name(net.cons.name, w),
                         SigningKey.load(net.dir / w / "signing.key"), t)
        for w in ("institute", "internet-1")
    ]
    replayed = note.Note(body, tuple(
        note.NoteSignature.from_line(x) for x in [*own, *old_lines])).to_text()

    class Replay(GrpcLogSource):
        def log_checkpoint(self) -> str:
            return replayed

    rep, _ = audit.audit_source(Replay(src.stub, src.audit), net.cons, SUBJECT, state, view=False)
    found = [f for f in rep.findings if f.kind == "cosignature-rollback"]
    assert found and "before one this auditor saw" in found[0].detail, rep.findings
    # A fresh audit (no state) has nothing to compare with.
    rep, _ = audit.audit_source(Replay(src.stub, src.audit), net.cons, SUBJECT, None, view=False)
    assert not [f for f in rep.findings if f.kind == "cosignature-rollback"]


# ------------------------------------------------------------------ peers' view cosignatures


def _line(kind: str, net_ref: list[Net], text: str) -> str:
    net = net_ref[0]
    body = note.Note.parse(text).text
    name = witness_name(net.cons.name, "internet-1")
    key = SigningKey.load(net.dir / "internet-1" / "signing.key")
    t = net.clock() // 1000
    if kind == "garbage":
        return "hello"
    if kind == "not-a-line":
        return "— x\n— y AAAA\n"
    if kind == "wrong-key":
        return note.cosign_line(body, name, SigningKey.from_seed(b"\x09" * 32), t)
    if kind == "other-text":
        other = body.replace("\n0\n", "\n1\n", 1) if "\n0\n" in body else body + "x\n"
        return note.cosign_line(other, name, key, t)
    if kind == "an-hour-old":
        return note.cosign_line(body, name, key, t - 3600)
    if kind == "log-key-line":
        return note.sign_note(body, name, key).split("\n\n", 1)[1]
    raise AssertionError(kind)


class _BadCosigner(rpc.ExchangeServicer):
    """internet-1 as a hostile peer: no records, and a bad view cosignature line."""

    def __init__(self, kind: str, net_ref: list[Net]) -> None:
        self.kind, self.net_ref = kind, net_ref
        self.asked = 0

    def Heads(self, request: Any, context: Any) -> pb.FeedHeads:  # noqa: N802
        return pb.FeedHeads()

    def CosignView(self, request: Any, context: Any) -> pb.CosignResponse:  # noqa: N802
        self.asked += 1
        return pb.CosignResponse(signature_line=_line(self.kind, self.net_ref, request.note))


@pytest.mark.parametrize(
    "kind", ["garbage", "not-a-line", "wrong-key", "other-text", "an-hour-old", "log-key-line"]
)
def test_bad_view_cosignature_from_a_peer_is_refused_and_reported(
    make_net: Callable[..., Net], kind: str
) -> None:
    """Fails on main: the line was stored unverified, and every checkpoint the
    node served then failed to parse or to verify."""
    ref: list[Net] = []
    fake = _BadCosigner(kind, ref)
    net = make_net(fake={"internet-1": fake})
    ref.append(net)
    node = net.nodes[SUBJECT]
    until("the bad line refused", lambda: "internet-1" in node.view.refused_cosignatures)
    until("the institute's cosignature", lambda: "institute" in open_view(
        net.cons, net.answer().view_checkpoint).cosigned_at)
    assert fake.asked >= 1
    why = node.view.refused_cosignatures["internet-1"]
    assert why.split(":")[0] in ("MalformedNote", "BadSignature", "ClockSkew"), why
    # What the node serves stays verifiable: only the institute's good line is on it.
    for _ in range(3):
        resp = net.answer()
        view = open_view(net.cons, resp.view_checkpoint)
        assert list(view.cosigned_at) == ["institute"]
        names = [s.name for s in note.Note.parse(resp.view_checkpoint).signatures]
        assert witness_name(net.cons.name, "internet-1") not in names
        now = net.clock()
        res = verify_answer(net.cons, NUMBER, resp, resp.view_checkpoint, now, now)
        assert res["verified"] is False and "the policy needs 2" in res["error"]
        time.sleep(0.3)
