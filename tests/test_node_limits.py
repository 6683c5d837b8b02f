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
from ledger.errors import StorageFailure
from ledger.log import NodeLedger
from ledger.record import Mark, Record
from ledger.store import Store
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
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
    return Record.issue(_key(d, issuer), issuer, seq, prev, _now(), Mark(number, "fraud", 70))


@contextmanager
def _node(d: Path, pid: str = "carrier-1", **kw: Any) -> Iterator[Node]:
    node = Node(NodeConfig.for_participant(d, pid), **kw).start()
    try:
        yield node
    finally:
        node.stop()


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
        node.caught_up.set()  # no peer is running: nothing to catch up from
        admin = rpc.AdminStub(_member(d, node, "carrier-1", kept))
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
        node.caught_up.set()
        admin = rpc.AdminStub(_member(d, node, "carrier-1", kept))
        out = admin.IssueMark(rpb.Mark(number="13800000003", category="fraud"), timeout=10)
        assert out.seq == 2
