"""A node under a hostile or broken world: test hooks that stay off, storage
that fails, limits a stranger or a member cannot talk past, and a node that
issues alone but never equivocates after a restore.

Nodes run in-process on their real TLS ports (port 0 where the test needs no
peer to reach them); peers, where a case needs one, are played by the test
with the consortium's real keys and certificates."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium, load_consortium
from keys.signing import SigningKey
from ledger.errors import BufferFull, StorageFailure, TooLarge
from ledger.log import NodeLedger
from ledger.record import Mark, Record
from ledger.store import Store
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.feedgate import NEW_FEED, OWN_STORE, RESTORE, IssueGate
from node.server import Node

S = grpc.StatusCode

pytestmark = pytest.mark.timeout(120)


def _consortium(root: Path, carriers: int = 2, internet: int = 0) -> Path:
    d = root / "c"
    init_consortium(d, carriers=carriers, internet=internet, base_port=_free_base(root),
                    now=datetime.now(UTC))
    return d


def _free_base(root: Path) -> int:
    from node.localnet import free_port_block

    return free_port_block(12)


# ------------------------------------------------------------------ point 3: the refuse hook


def test_refuse_hook_is_off_in_a_production_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On main the MARKEX_REFUSE_FILE variable alone made any node refuse the
    peers listed in the file, silently. Now only the test-only argument turns
    the hook on, and the node logs that it is on."""
    d = _consortium(tmp_path)
    refuse = tmp_path / "refuse"
    refuse.write_text("carrier-2\n")
    monkeypatch.setenv("MARKEX_REFUSE_FILE", str(refuse))
    cfg = NodeConfig.for_participant(d, "carrier-1")
    with caplog.at_level(logging.WARNING, logger="markex.node"):
        node = Node(cfg)
        try:
            assert not node.refuses("carrier-2")
        finally:
            node.store.close()
        assert "test-hook" not in caplog.text
        node = Node(cfg, refuse_file=refuse)
        try:
            assert node.refuses("carrier-2")
            assert not node.refuses("institute")
        finally:
            node.store.close()
    assert "test-hook" in caplog.text and str(refuse) in caplog.text


def test_node_run_takes_the_hook_only_as_a_test_flag() -> None:
    """`markex node run` has the hook as an explicit test-only flag, off by default."""
    from node import cli

    parser = cli.build_parser()
    plain = parser.parse_args(["node", "run", "--as", "carrier-1"])
    assert plain.test_refuse_file is None and plain.restored is False
    hooked = parser.parse_args(["node", "run", "--as", "carrier-1", "--test-refuse-file", "f"])
    assert hooked.test_refuse_file == "f"


# ------------------------------------------------------------------ shared rig


def _now() -> int:
    return time.time_ns() // 1_000_000


def _key(d: Path, pid: str) -> SigningKey:
    return SigningKey.load(d / pid / "signing.key")


def _envelope(d: Path, issuer: str, seq: int, prev: bytes, number: str) -> Record:
    return Record.issue(
        _key(d, issuer), issuer, seq, prev, _now(), Mark(number, "fraud", 70),
        consortium=_consortium_obj(d).name,
    )


@contextmanager
def _node(d: Path, pid: str = "carrier-1", **kw: Any) -> Iterator[Node]:
    node = Node(NodeConfig.for_participant(d, pid), **kw).start()
    try:
        yield node
    finally:
        # The test's own calls have ended here: a longer grace would only wait
        # for the push streams of peers that are still running.
        node.stop(grace=0.1)


@contextmanager
def _channels(d: Path) -> Iterator[list[grpc.Channel]]:
    kept: list[grpc.Channel] = []
    try:
        yield kept
    finally:
        for ch in kept:
            ch.close()


def _member(d: Path, node: Node, as_id: str, kept: list[grpc.Channel]) -> grpc.Channel:
    ep = node.consortium.participant(node.participant_id).member_endpoint  # type: ignore[union-attr]
    ch = client.member_channel(d, as_id, ep)
    kept.append(ch)
    return ch


def _admin(d: Path, node: Node, as_id: str, kept: list[grpc.Channel]) -> grpc.Channel:
    """The Admin API takes only the operator's admin certificate."""
    ep = node.consortium.participant(node.participant_id).member_endpoint  # type: ignore[union-attr]
    ch = client.admin_channel(d, as_id, ep)
    kept.append(ch)
    return ch


def _public(d: Path, node: Node, kept: list[grpc.Channel]) -> grpc.Channel:
    ch = client.public_channel(d, f"127.0.0.1:{node.public_port}")
    kept.append(ch)
    return ch


# ------------------------------------------------------------------ point 4: storage failure


class _FailingSync:
    """The store's own database, except that syncing the WAL fails, as on a
    full or dying disk: the batch reaches the memtable and the WAL, unsynced."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.syncs = 0

    def flush_wal(self, sync: bool) -> None:
        self.syncs += 1
        raise OSError("IO error: No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _consortium_obj(d: Path) -> Consortium:
    return load_consortium(NodeConfig.for_participant(d, "carrier-1"))


def test_ledger_never_calls_an_unsynced_record_a_duplicate(tmp_path: Path) -> None:
    """On main the retried envelope came back "duplicate" (it sat in the
    memtable) though its sync had failed, and later writes went on."""
    d = _consortium(tmp_path)
    cons = _consortium_obj(d)
    store = Store(tmp_path / "db")
    led = NodeLedger(store, cons, "carrier-1", _key(d, "carrier-1"))
    try:
        first = _envelope(d, "carrier-2", 1, b"", "+8613000000001")
        assert led.submit([first.envelope], _now()).outcomes[0].status == "accepted"
        second = _envelope(d, "carrier-2", 2, first.id, "+8613000000002")
        real = store._db
        store._db = _FailingSync(real)
        with pytest.raises(StorageFailure):
            led.submit([second.envelope], _now())
        store._db = real  # the disk is back: the store still refuses until reopened
        assert store.failed is not None
        for envs in ([second.envelope], [first.envelope]):
            with pytest.raises(StorageFailure, match="restart the node"):
                led.submit(envs, _now())
        b = store.batch()
        b.put("meta", b"x", b"y")
        with pytest.raises(StorageFailure, match="restart the node"):
            store.write(b)
        assert led.feed("carrier-2").seq == 1
    finally:
        store.close()


def test_failed_wal_sync_stops_the_node_and_nothing_unsynced_is_acknowledged(
    tmp_path: Path,
) -> None:
    """Through the member port: the delivery whose sync failed is refused, so
    is its retry (on main: acknowledged as a duplicate) and every later write;
    health says NOT_SERVING; a restart takes writes again."""
    d = _consortium(tmp_path)
    rec = _envelope(d, "carrier-2", 1, b"", "+8613000000001")
    with _node(d) as node, _channels(d) as kept:
        admin = rpc.AdminStub(_admin(d, node, "carrier-1", kept))
        ex = rpc.ExchangeStub(_member(d, node, "carrier-2", kept))
        hc = health_pb2_grpc.HealthStub(_public(d, node, kept))
        admin.IssueMark(rpb.Mark(number="13800000001", category="fraud"), timeout=10)
        size = node.core.ledger.size
        failing = _FailingSync(node.store._db)
        node.store._db = failing
        for _attempt in range(2):
            with pytest.raises(grpc.RpcError) as e:
                ex.Deliver(pb.RecordBatch(envelopes=[rec.envelope]), timeout=10)
            assert e.value.code() == S.INTERNAL
            assert "StorageFailure" in (e.value.details() or "")
            assert "restart the node" in (e.value.details() or "")
        assert failing.syncs == 1  # the retry never reached the disk at all
        with pytest.raises(grpc.RpcError) as e:
            admin.IssueMark(rpb.Mark(number="13800000002", category="fraud"), timeout=10)
        assert e.value.code() == S.INTERNAL and "restart the node" in (e.value.details() or "")
        status = hc.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert node.core.ledger.size == size
        node.store._db = failing._db  # the disk comes back for the restart
    with _node(d) as node, _channels(d) as kept:
        admin = rpc.AdminStub(_admin(d, node, "carrier-1", kept))
        out = admin.IssueMark(rpb.Mark(number="13800000003", category="fraud"), timeout=10)
        assert out.seq == 2


# ---------------------------------------------------------- point 5: issuing alone, restoring


def _wait(cond: Any, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_lone_node_issues_at_once_and_after_a_restart(tmp_path: Path) -> None:
    """On main a node whose peers were all down refused to issue ("has not
    synced its own feed with any peer yet") until one came up."""
    d = _consortium(tmp_path)
    for expected in (1, 2):
        with _node(d) as node, _channels(d) as kept:
            node.issue_wait_s = 3.0
            admin = rpc.AdminStub(_admin(d, node, "carrier-1", kept))
            t = time.monotonic()
            out = admin.IssueMark(rpb.Mark(number="13800000001", category="fraud"), timeout=10)
            assert out.seq == expected
            assert time.monotonic() - t < 3.0


@pytest.mark.parametrize(
    "mode,reports,own,allowed,says",
    [
        (OWN_STORE, {}, (4, b"h4"), True, ""),
        # a claim the peer did not prove (by serving that record) does not stop a healthy node
        (OWN_STORE, {"b": (6, b"h6")}, (4, b"h4"), True, ""),
        (OWN_STORE, {"b": (6, b"h6", True)}, (4, b"h4"), False, "peer b holds seq 6"),
        (NEW_FEED, {"a": (0, b"")}, (0, b""), False, "waiting for b, c"),
        (NEW_FEED, {"a": (0, b""), "b": None, "c": None}, (0, b""), True, ""),
        (NEW_FEED, {"a": (3, b"h3"), "b": None, "c": None}, (0, b""), True, ""),
        (NEW_FEED, {"a": (3, b"h3", True), "b": None, "c": None}, (0, b""), False,
         "peer a holds seq 3"),
        (RESTORE, {}, (0, b""), False, "0 agree so far"),
        (RESTORE, {"a": (5, b"h5")}, (5, b"h5"), False, "1 agree so far (a)"),
        (RESTORE, {"a": (5, b"h5"), "b": (5, b"forged")}, (5, b"h5"), False, "b at seq 5"),
        (RESTORE, {"a": (5, b"h5"), "b": (4, b"h4")}, (5, b"h5"), False, "b at seq 4"),
        (RESTORE, {"a": (5, b"h5"), "b": (5, b"h5")}, (5, b"h5"), True, ""),
        # restoring, even an unproven claim of a longer feed holds the node back
        (RESTORE, {"a": (5, b"h5"), "b": (5, b"h5"), "c": (7, b"h7")}, (5, b"h5"), False,
         "peer c holds seq 7"),
    ],
)
def test_issue_gate_cases(
    mode: str, reports: dict[str, tuple[Any, ...] | None], own: tuple[int, bytes],
    allowed: bool, says: str,
) -> None:
    """The gate's table: None means "may issue"; a refusal says why. A report
    is (seq, head[, proven]); None: the peer was unreachable."""
    gate = IssueGate(mode, ["a", "b", "c"], quorum=2, why="restored")
    for peer, r in reports.items():
        if r is None:
            gate.unreachable(peer)
        else:
            gate.report(peer, *r)
    why = gate.refusal(*own)
    assert (why is None) == allowed, why
    if not allowed:
        assert says in (why or ""), why


def test_issue_gate_ignores_strangers_and_latches_after_a_restore() -> None:
    gate = IssueGate(RESTORE, ["a", "b"], quorum=2)
    gate.report("mallory", 9, b"x")
    gate.report("a", 5, b"h")
    gate.report("b", 5, b"h")
    assert gate.refusal(5, b"h") is None
    gate.report("b", 4, b"h4")  # behind now, but the restore is done
    assert gate.refusal(5, b"h") is None and gate.mode == OWN_STORE


class _LyingPeer(rpc.ExchangeServicer):
    """carrier-2's member port, played by the test with carrier-2's certificate:
    it reports whatever feed heads the test says and serves no record."""

    def __init__(self, d: Path, endpoint: str, heads: list[pb.FeedHead]) -> None:
        from concurrent import futures

        self.heads = heads
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        rpc.add_ExchangeServicer_to_server(self, self.server)
        pdir = d / "carrier-2"
        creds = grpc.ssl_server_credentials(
            [((pdir / "tls.key").read_bytes(), (pdir / "tls.pem").read_bytes())],
            root_certificates=(d / "ca" / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        self.server.add_secure_port(endpoint, creds)
        self.server.start()

    def Heads(self, request: Any, context: Any) -> pb.FeedHeads:  # noqa: N802
        return pb.FeedHeads(heads=self.heads)

    def Pull(self, request: Any, context: Any) -> Iterator[pb.RecordBatch]:  # noqa: N802
        return iter(())

    def Push(self, request_iterator: Any, context: Any) -> pb.PushAck:  # noqa: N802
        for _ in request_iterator:
            pass
        return pb.PushAck()

    def stop(self) -> None:
        self.server.stop(0).wait(5)


def test_a_restored_node_catches_up_and_one_lying_peer_cannot_make_it_equivocate(
    tmp_path: Path,
) -> None:
    """carrier-1 issues 5 records, its store is lost, and it starts again with
    --restored. With the institute honest and carrier-2 lying (a head of
    carrier-1's feed that it does not hold, or one beyond it), carrier-1
    catches up to seq 5 from the institute but signs nothing: one peer is no
    quorum (policy.restore_quorum = 2). On main it signed seq 1 again at once
    (its store was empty), an equivocation that froze its feed. Once the real
    carrier-2 is back, it continues at seq 6 and every node accepts it."""
    import shutil

    d = _consortium(tmp_path)
    c2_ep = NodeConfig.for_participant(d, "carrier-2").member_listen
    kw = {"sync_interval": 0.2}
    with _node(d, "institute", **kw) as inst:
        with _node(d, "carrier-2", **kw) as c2, _node(d, "carrier-1", **kw) as c1:
            with _channels(d) as kept:
                admin = rpc.AdminStub(_admin(d, c1, "carrier-1", kept))
                for i in range(5):
                    admin.IssueMark(rpb.Mark(number=f"1380000000{i}", category="fraud"), timeout=10)
            head = c1.core.ledger.feed("carrier-1")
            for other in (inst, c2):
                _wait(lambda o=other: o.core.ledger.feed("carrier-1").seq == 5, what="replication")
        shutil.rmtree(d / "carrier-1" / "data")
        (d / "carrier-1" / "data").mkdir()
        for lie in ((5, b"\x07" * 32), (9, b"\x09" * 32), (3, b"\x03" * 32)):
            liar = _LyingPeer(d, c2_ep, [pb.FeedHead(issuer="carrier-1", seq=lie[0],
                                                      head_id=lie[1])])
            try:
                with _node(d, "carrier-1", restored=True, **kw) as c1, _channels(d) as kept:
                    c1.issue_wait_s = 1.0
                    _wait(lambda c=c1: c.core.ledger.feed("carrier-1").seq == 5, what="catch-up")
                    _wait(lambda c=c1: "carrier-2" in c.gate._reports, what="the liar's report")
                    admin = rpc.AdminStub(_admin(d, c1, "carrier-1", kept))
                    with pytest.raises(grpc.RpcError) as e:
                        admin.IssueMark(rpb.Mark(number="13800000009", category="fraud"),
                                        timeout=10)
                    assert e.value.code() == S.UNAVAILABLE
                    detail = e.value.details() or ""
                    if lie[0] > 5:
                        assert "peer carrier-2 holds seq 9" in detail, detail
                    else:
                        assert "restored from a backup" in detail, detail
                        assert "2 peers agree" in detail and "1 agree so far" in detail, detail
                    assert c1.core.ledger.feed("carrier-1") == head
            finally:
                liar.stop()
        with _node(d, "carrier-2", **kw) as c2, _node(d, "carrier-1", restored=True, **kw) as c1:
            with _channels(d) as kept:
                admin = rpc.AdminStub(_admin(d, c1, "carrier-1", kept))
                out = admin.IssueMark(rpb.Mark(number="13800000009", category="fraud"), timeout=20)
                assert out.seq == 6
            for other in (inst, c2):
                _wait(lambda o=other: o.core.ledger.feed("carrier-1").seq == 6, what="seq 6")
                assert other.core.ledger.feed("carrier-1").frozen_at is None
                assert not other.core.ledger.equivocations()
            # Lost again, and restarted without --restored: node.toml still (wrongly)
            # says the feed is new, but peers that prove they hold it hold it back.
            c1.stop()
            shutil.rmtree(d / "carrier-1" / "data")
            (d / "carrier-1" / "data").mkdir()
            with _node(d, "carrier-1", **kw) as c1b, _channels(d) as kept:
                admin = rpc.AdminStub(_admin(d, c1b, "carrier-1", kept))
                out = admin.IssueMark(rpb.Mark(number="13800000010", category="fraud"), timeout=20)
                assert out.seq == 7
            for other in (inst, c2):
                _wait(lambda o=other: o.core.ledger.feed("carrier-1").seq == 7, what="seq 7")
                assert not other.core.ledger.equivocations()


def test_a_lying_peer_cannot_stop_a_healthy_node_from_issuing(tmp_path: Path) -> None:
    """A member that claims our feed is longer than it is, and cannot serve
    the record it names, is not believed once the node holds its own feed."""
    d = _consortium(tmp_path)
    liar = _LyingPeer(d, NodeConfig.for_participant(d, "carrier-2").member_listen,
                      [pb.FeedHead(issuer="carrier-1", seq=9, head_id=b"\x09" * 32)])
    try:
        with _node(d, sync_interval=0.1) as node, _channels(d) as kept:
            _wait(lambda: "carrier-2" in node.gate._reports, what="the liar's report")
            admin = rpc.AdminStub(_admin(d, node, "carrier-1", kept))
            for seq in (1, 2):
                out = admin.IssueMark(rpb.Mark(number=f"1380000000{seq}", category="fraud"),
                                      timeout=10)
                assert out.seq == seq
    finally:
        liar.stop()


def test_node_toml_without_new_feed_loads_and_an_empty_store_then_waits_for_a_quorum(
    tmp_path: Path,
) -> None:
    """`consortium init` states new feeds; a node.toml without the key (older
    files) still loads, and on an empty store that node does not sign alone."""
    d = _consortium(tmp_path)
    path = d / "carrier-1" / "node.toml"
    text = path.read_text()
    assert "new_feed = true" in text
    path.write_text("".join(ln for ln in text.splitlines(True) if not ln.startswith("new_feed")))
    assert NodeConfig.for_participant(d, "carrier-1").new_feed is False
    with _node(d) as node, _channels(d) as kept:
        node.issue_wait_s = 1.0
        admin = rpc.AdminStub(_admin(d, node, "carrier-1", kept))
        with pytest.raises(grpc.RpcError) as e:
            admin.IssueMark(rpb.Mark(number="13800000001", category="fraud"), timeout=10)
        assert e.value.code() == S.UNAVAILABLE
        assert "does not state it is new" in (e.value.details() or "")
        assert "new_feed = true" in (e.value.details() or "")
        assert node.core.ledger.feed("carrier-1").seq == 0
    path.write_text(text.replace("new_feed = true", 'new_feed = "yes"'))
    with pytest.raises(Exception, match="new_feed"):
        NodeConfig.for_participant(d, "carrier-1")


# ---------------------------------------------------------- point 2: what a member can make us hold


def test_the_writer_queue_is_bounded_and_drops_nothing(tmp_path: Path) -> None:
    """On main the writer's queue took every envelope any member sent, without
    bound. Now a full queue makes a caller wait (up to its timeout) and then
    refuses it with BufferFull; every queued job is written once the writer runs."""
    import threading

    from node.core import NodeCore

    d = _consortium(tmp_path)
    cons = _consortium_obj(d)
    store = Store(tmp_path / "db")
    core = NodeCore(store, cons, "carrier-1", _key(d, "carrier-1"))
    core.max_queued = 10
    try:
        recs, prev = [], b""
        for i in range(12):
            r = _envelope(d, "carrier-2", i + 1, prev, f"+861300000{i:04d}")
            recs.append(r)
            prev = r.id
        futs = [core.submit_async([r.envelope], "carrier-2") for r in recs[:10]]
        assert core.queued == 10
        t = time.monotonic()
        with pytest.raises(BufferFull, match="at most 10"):
            core.submit_async([recs[10].envelope], "carrier-2", wait=0.3)
        assert time.monotonic() - t >= 0.3
        waited: list[Any] = []
        waiter = threading.Thread(
            target=lambda: waited.append(core.submit_async([recs[11].envelope], "c", wait=20))
        )
        waiter.start()
        time.sleep(0.2)
        assert not waited  # still waiting for room
        core.start()  # the writer drains the queue; the waiting caller gets in
        waiter.join(20)
        outs = [f.result(20)[0].status for f in futs] + [waited[0].result(20)[0].status]
        # recs[10] was refused, so recs[11] waits in the out-of-order buffer: nothing is lost
        assert outs == ["accepted"] * 10 + ["buffered"]
        assert core.ledger.feed("carrier-2").seq == 10 and core.queued == 0
        with pytest.raises(TooLarge, match="at most 1000"):
            core.submit_async([b"\x0a"] * 1001, "carrier-2")
    finally:
        core.stop()
        store.close()


def test_a_member_gets_resource_exhausted_when_the_writer_queue_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node import services

    monkeypatch.setattr(services, "DELIVER_WAIT", 0.2)
    d = _consortium(tmp_path)
    rec = _envelope(d, "carrier-2", 1, b"", "+8613000000001")
    with _node(d) as node, _channels(d) as kept:
        ex = rpc.ExchangeStub(_member(d, node, "carrier-2", kept))
        node.core.max_queued = 0  # as full as a flood would make it
        with pytest.raises(grpc.RpcError) as e:
            ex.Deliver(pb.RecordBatch(envelopes=[rec.envelope]), timeout=10)
        assert e.value.code() == S.RESOURCE_EXHAUSTED
        assert (e.value.details() or "").startswith("BufferFull: the writer queue is full")
        node.core.max_queued = 20_000
        ack = ex.Deliver(pb.RecordBatch(envelopes=[rec.envelope]), timeout=10)
        assert ack.accepted == 1


def _signed_checkpoint(d: Path, cons: Consortium, pid: str, size: int, root: bytes) -> str:
    from ledger import note
    from ledger.log import log_origin

    origin = log_origin(cons.name, pid)
    return note.sign_note(note.Checkpoint(origin, size, root).body(), origin, _key(d, pid))


def test_fork_evidence_is_kept_once_per_peer_and_paged(tmp_path: Path) -> None:
    """On main every forked checkpoint a peer sent was stored again (disk grew
    with each), and GetEvidence returned all of it in one message."""
    import hashlib

    d = _consortium(tmp_path)
    cons = _consortium_obj(d)
    with _node(d) as node, _channels(d) as kept:
        for pid in ("carrier-2", "institute"):
            ex = rpc.ExchangeStub(_member(d, node, pid, kept))
            first = _signed_checkpoint(d, cons, pid, 5, hashlib.sha256(b"a").digest())
            ex.Cosign(pb.CosignRequest(note=first, old_size=0), timeout=10)
            for i in range(40):
                root = hashlib.sha256(b"fork %d" % i).digest()
                forked = _signed_checkpoint(d, cons, pid, 5, root)
                with pytest.raises(grpc.RpcError) as e:
                    ex.Cosign(pb.CosignRequest(note=forked, old_size=5), timeout=10)
                assert e.value.code() == S.ABORTED
                if i == 0:
                    witness_keys = node.store.count("witness")
            assert node.store.count("witness") == witness_keys
        # an equivocation of carrier-2 too: three items of evidence in all
        ex = rpc.ExchangeStub(_member(d, node, "carrier-2", kept))
        a = _envelope(d, "carrier-2", 1, b"", "+8613000000001")
        b = _envelope(d, "carrier-2", 1, b"", "+8613000000002")
        ex.Deliver(pb.RecordBatch(envelopes=[a.envelope]), timeout=10)
        with pytest.raises(grpc.RpcError):
            ex.Deliver(pb.RecordBatch(envelopes=[b.envelope]), timeout=10)
        # Evidence is read on the member port's Audit service (docs/publication.md).
        aud = rpc.AuditStub(_member(d, node, "auditor-1", kept))
        whole = aud.GetEvidence(pb.GetEvidenceRequest(), timeout=10)
        assert (len(whole.equivocations), len(whole.forks), whole.next_start) == (1, 2, 0)
        pages, start = [], 0
        while True:
            page = aud.GetEvidence(pb.GetEvidenceRequest(start=start, limit=1), timeout=10)
            pages.append((list(page.equivocations), list(page.forks)))
            if page.next_start == 0:
                break
            start = page.next_start
        assert pages == [
            (list(whole.equivocations), []),
            ([], [whole.forks[0]]),
            ([], [whole.forks[1]]),
        ]


def test_metrics_label_only_participants_whatever_a_peer_names(tmp_path: Path) -> None:
    """On main every issuer a peer named in Heads became a label value of
    markex_feed_lag_records before the membership check: a peer could add
    time series to our metrics without end."""
    from prometheus_client import generate_latest

    d = _consortium(tmp_path)
    junk = [pb.FeedHead(issuer=f"junk-{i}", seq=i + 1, head_id=b"\x01" * 32) for i in range(300)]
    liar = _LyingPeer(d, NodeConfig.for_participant(d, "carrier-2").member_listen,
                      [pb.FeedHead(issuer="institute", seq=0), *junk])
    try:
        with _node(d, sync_interval=0.1) as node:
            _wait(lambda: "carrier-2" in node.gate._reports, what="a round with the liar")
            time.sleep(0.3)
            text = generate_latest(node.metrics.registry).decode()
            assert 'issuer="institute"' in text
            assert "junk-" not in text
            assert all(not k.startswith("junk-") for k in node.links["carrier-2"].peer_heads)
    finally:
        liar.stop()


# ---------------------------------------------------------- point 1: anonymous callers


def _chain(d: Path, issuer: str, n: int, start: int = 1, prev: bytes = b"") -> list[Record]:
    out = []
    for i in range(start, start + n):
        r = _envelope(d, issuer, i, prev, f"+86130{i:08d}")
        out.append(r)
        prev = r.id
    return out


def test_idle_watch_and_reflection_streams_leave_lookups_answering(tmp_path: Path) -> None:
    """On main DecodeGuard dropped the health Watch's non-blocking mark, so 16
    idle watchers took all 16 threads and every lookup queued for good. Now
    40 idle watchers hold no thread, blocking reflection streams take at most
    their share (the rest are refused at once, RESOURCE_EXHAUSTED), and
    lookups still answer."""
    import threading

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    d = _consortium(tmp_path)
    with _node(d) as node, _channels(d) as kept:
        held: list[Any] = []
        for _c in range(10):
            hc = health_pb2_grpc.HealthStub(_public(d, node, kept))
            for _ in range(4):
                # (on main the 17th never answers: every thread holds a watcher)
                watch = hc.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                held.append(watch)
        quiet = threading.Event()

        def idle_requests() -> Iterator[Any]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            quiet.wait(60)  # then stays open, saying nothing

        opened = refused = 0
        for _c in range(10):
            rs = reflection_pb2_grpc.ServerReflectionStub(_public(d, node, kept))
            for _ in range(4):
                stream = rs.ServerReflectionInfo(idle_requests(), timeout=30)
                held.append(stream)
                try:
                    assert next(stream).list_services_response.service
                    opened += 1
                except grpc.RpcError as e:
                    assert e.code() == S.RESOURCE_EXHAUSTED, e
                    assert "streaming calls at once" in (e.details() or "")
                    refused += 1
        assert opened >= 1 and opened + refused == 40
        pub = rpc.PublicStub(_public(d, node, kept))
        for i in range(30):
            pub.Lookup(pb.LookupRequest(number=f"1380000{i:04d}"), timeout=3)
        assert node.public_gate.table.open_calls("watch") == 40
        quiet.set()
        for s in held:
            s.cancel()
        _wait(lambda: node.public_gate.table.open_calls("watch") == 0, 10, "watches closed")
        _wait(lambda: node.public_gate.table.open_calls("stream") == 0, 10, "streams closed")


def test_one_clients_flood_is_refused_while_another_is_served(tmp_path: Path) -> None:
    """On main nothing limited a caller: a flood from one client took what it
    wanted. Now each client spends its own token bucket: the flood gets
    RESOURCE_EXHAUSTED (no more answers than the burst and the rate allow),
    while another client, at the same time, gets every answer."""
    import threading

    from node.limits import PublicLimits

    d = _consortium(tmp_path)
    limits = PublicLimits(rate=20, burst=40)
    with _node(d, public_limits=limits) as node, _channels(d) as kept:
        flood = rpc.PublicStub(_public(d, node, kept))
        other = rpc.PublicStub(_public(d, node, kept))
        codes: list[grpc.StatusCode] = []
        details = set()

        def flooding() -> None:
            i = 0
            while time.monotonic() < t0 + 1.0:  # a second of calls, as fast as they go
                i += 1
                try:
                    flood.Lookup(pb.LookupRequest(number=f"1380000{i % 1000:04d}"), timeout=5)
                    codes.append(S.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
                    details.add(e.details())

        t0 = time.monotonic()
        flooder = threading.Thread(target=flooding)
        flooder.start()
        served = 0
        while flooder.is_alive() and served < 10:
            other.Lookup(pb.LookupRequest(number=f"1390000{served:04d}"), timeout=5)
            served += 1
            time.sleep(0.02)
        flooder.join(60)
        elapsed = time.monotonic() - t0
        assert served == 10 and len(codes) > 100
        assert codes.count(S.OK) <= 40 + 20 * elapsed + 1, (codes.count(S.OK), elapsed)
        assert S.RESOURCE_EXHAUSTED in codes and set(codes) <= {S.OK, S.RESOURCE_EXHAUSTED}
        assert details == {"rate limit: at most 20 request units per second per client "
                           "(bursts of 40); slow down"}
        # a batch costs by its size: 1000 numbers are 11 units (the bucket refilled
        # to 40 while the flood went on; 3 batches leave 7)
        for _ in range(3):
            other.LookupBatch(pb.LookupBatchRequest(numbers=["13800000001"] * 1000), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            other.LookupBatch(pb.LookupBatchRequest(numbers=["13800000001"] * 1000), timeout=10)
        assert e.value.code() == S.RESOURCE_EXHAUSTED


def test_a_big_anonymous_batch_does_not_hold_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On main a LookupBatch built every answer inside the view lock that the
    writer takes after each commit, so ingest waited for the whole batch. Here
    the view's proof reads are slowed (a slow disk: 5 ms a proof) so a batch
    of 1000 takes seconds; records are ingested while it is answered, and the
    answer still verifies against the checkpoint it came with."""
    import threading

    from ledger import view as V
    from node.lookup import verify_answer

    d = _consortium(tmp_path)
    cons = _consortium_obj(d)
    with _node(d) as node, _channels(d) as kept:
        ex = rpc.ExchangeStub(_member(d, node, "carrier-2", kept))
        pub = rpc.PublicStub(_public(d, node, kept))
        recs = _chain(d, "carrier-2", 60)
        ack = ex.Deliver(pb.RecordBatch(envelopes=[r.envelope for r in recs[:40]]), timeout=10)
        assert ack.accepted == 40
        real_proof = V.NationalView.proof

        def slow_proof(self: V.NationalView, number: str) -> V.ViewProof:
            time.sleep(0.005)
            return real_proof(self, number)

        monkeypatch.setattr(V.NationalView, "proof", slow_proof)
        numbers = [f"+86130{i:08d}" for i in range(1, 1001)]
        answer: list[Any] = []
        batch = threading.Thread(target=lambda: answer.append(pub.LookupBatch(
            pb.LookupBatchRequest(numbers=numbers, with_proofs=True), timeout=60)))
        batch.start()
        time.sleep(0.3)  # the batch is being answered
        took = []
        for r in recs[40:]:
            t = time.monotonic()
            ack = ex.Deliver(pb.RecordBatch(envelopes=[r.envelope]), timeout=30)
            took.append(time.monotonic() - t)
            assert ack.accepted == 1
        # Every record was taken while the batch was still being answered (on
        # main the first Deliver waited for the whole batch to end).
        assert batch.is_alive(), f"ingest waited for the batch, or the batch was quick: {took}"
        assert node.core.ledger.feed("carrier-2").seq == 60
        batch.join(60)
        resp = answer[0]
        assert len(resp.results) == 1000
        for num, r in zip(numbers, resp.results, strict=True):
            verify_answer(cons, num, r, resp.view_checkpoint, _now())
        assert sum(1 for r in resp.results if r.entry) in (40, 60)  # one view, one version


@pytest.mark.parametrize(
    "peer,client",
    [
        ("ipv4:203.0.113.7:50001", "203.0.113.7"),
        ("ipv4:203.0.113.7:50002", "203.0.113.7"),  # one address is one client
        ("ipv6:[2001:db8::1]:443", "2001:db8::1"),
        ("ipv4:127.0.0.1:40001", "ipv4:127.0.0.1:40001"),  # loopback: one connection
        ("ipv6:[::1]:40001", "ipv6:[::1]:40001"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_a_client_is_an_address_or_a_loopback_connection(peer: str, client: str) -> None:
    from node.limits import client_of

    assert client_of(peer) == client


def test_client_table_bounds_each_kind_and_forgets_only_idle_clients() -> None:
    from node.limits import STREAM, UNARY, WATCH, ClientTable, PublicLimits

    lim = PublicLimits(threads=8, max_streams=2, client_calls=2, client_streams=3, rate=10,
                       burst=10, max_clients=2)
    t = ClientTable(lim)
    assert t.admit("a", UNARY, 0.0) is None and t.admit("a", UNARY, 0.0) is None
    assert "at most 2 calls at once per client" in (t.admit("a", UNARY, 0.0) or "")
    t.release("a", UNARY)
    assert t.admit("a", UNARY, 0.0) is None
    assert t.admit("b", STREAM, 0.0) is None and t.admit("b", STREAM, 0.0) is None
    assert "at most 2 streaming calls" in (t.admit("a", STREAM, 0.0) or "")
    assert t.admit("b", WATCH, 0.0) is None
    assert "at most 3 open streams per client" in (t.admit("b", WATCH, 0.0) or "")
    assert "at most 2 clients" in (t.admit("c", UNARY, 100.0) or "")  # a and b hold calls
    for _ in range(3):
        t.release("a", UNARY)  # one more release than calls changes nothing
    assert t.open_calls(UNARY) == 0
    assert t.admit("c", UNARY, 100.0) is None  # a was idle and refilled: forgotten
    # the bucket: 10 units, 10 a second
    assert t.charge("c", 8.0, 100.0) is None
    assert "rate limit" in (t.charge("c", 5.0, 100.0) or "")
    assert t.charge("c", 5.0, 100.5) is None


def test_the_online_auditor_reads_every_page_of_evidence(tmp_path: Path) -> None:
    """101 equivocations of one feed are two pages; the auditor's source reads both."""
    from node.auditcli import GrpcLogSource

    d = _consortium(tmp_path)
    with _node(d) as node, _channels(d) as kept:
        ex = rpc.ExchangeStub(_member(d, node, "carrier-2", kept))
        chain = _chain(d, "carrier-2", 101)
        ack = ex.Deliver(pb.RecordBatch(envelopes=[r.envelope for r in chain]), timeout=30)
        assert ack.accepted == 101
        rivals = [_envelope(d, "carrier-2", r.seq, r.prev_id, "+8613900000001") for r in chain]
        for r in reversed(rivals):  # each lowers the freeze, so each is a new proof
            with pytest.raises(grpc.RpcError):
                ex.Deliver(pb.RecordBatch(envelopes=[r.envelope]), timeout=10)
        pub = rpc.PublicStub(_public(d, node, kept))
        aud = rpc.AuditStub(_member(d, node, "auditor-1", kept))
        first = aud.GetEvidence(pb.GetEvidenceRequest(), timeout=10)
        assert len(first.equivocations) == 100 and first.next_start == 100
        eqs, forks = GrpcLogSource(pub, aud).evidence()
        assert len(eqs) == 101 and len(set(eqs)) == 101 and forks == []
