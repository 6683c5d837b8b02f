"""WatchView and `markex view watch` (docs/watch.md): a consumer killed and
resumed while marks flow ends with the node's root without a full reload; a
stream whose entries were bent is refused and the copy stays where it was; a
`since` the node never signed is refused."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys.layout import NodeConfig
from ledger import view as V
from ledger.errors import LedgerError
from ledger.verify import StaleView, ViewRollback, open_view
from ledger.viewtree import tree_root
from ledger.watch import BentEntry, Change, DeltaMismatch, WatchCopy
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.client import INSTITUTE_KEY_ENV
from node.server import Node
from node.watch import ChangeLog, NotOurCheckpoint
from node.watchcli import KeptCopy, watch
from tests.test_export import InProcessNet

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    n = InProcessNet(tmp_path_factory.mktemp("watch") / "c", carriers=1, internet=1,
                     sync_interval=0.2)
    n.start_all()
    key = NodeConfig.for_participant(n.dir, "institute").institute_key
    n.institute_key = base64.b64encode(key).decode()
    try:
        yield n
    finally:
        n.stop_all()


def _node(net: InProcessNet, pid: str) -> Any:
    return next(x for x in net.nodes_running if x.participant_id == pid)


def _settled_root(node: Any, seq: int) -> str:
    """The node's view root (base64) once its view applied carrier-1's `seq`."""
    _wait_for(lambda: node.view.view.vector.get("carrier-1", 0) >= seq)
    return base64.b64encode(node.view.view.root()).decode()


def _read(stub: Any, since: str = "", n: int = 1) -> list[pb.WatchViewMessage]:
    """The messages of one WatchView call up to its n-th checkpoint."""
    out: list[pb.WatchViewMessage] = []
    call = stub.WatchView(pb.WatchViewRequest(since=since), timeout=30)
    for msg in call:
        out.append(msg)
        if msg.checkpoint:
            n -= 1
            if n == 0:
                break
    call.cancel()
    return out


# ------------------------------------------------------------------ pure parts


def test_change_log_answers_since_and_forgets_the_oldest() -> None:
    log = ChangeLog(max_applies=3)
    log.reset({"a": 1})
    log.record({"a": 2}, {"+1"})
    log.record({"a": 3}, {"+2"})
    assert log.since((("a", 1),)) == {"+1", "+2"}
    assert log.since((("a", 3),)) == set()
    assert log.passed((("a", 9),)) is False           # beyond the newest: never there
    log.record({"a": 4}, {"+3"})                       # a=1 drops out
    assert log.since((("a", 1),)) is None
    assert log.passed((("a", 1),)) is None             # older than the log: a snapshot
    log.record({"a": 5}, None)                         # a catch-up: anything may have changed
    assert log.since((("a", 4),)) is None


def test_copy_root_equals_the_tree_from_nothing(net: InProcessNet) -> None:
    for i in range(5):
        net.mark("carrier-1", f"1381999000{i}", "fraud")
    msgs = _read(net.public("carrier-1"))
    rows = [(e.number, e.entry) for m in msgs for e in m.entries]
    assert msgs[0].snapshot and msgs[0].reason == "no checkpoint given"
    copy = WatchCopy(net.consortium, "carrier-1")
    cp = copy.apply([Change(n, b) for n, b in rows], msgs[-1].checkpoint,
                    time.time_ns() // 10**6, snapshot=True)
    assert copy.root() == cp.root == tree_root((n, V.entry_hash(b)) for n, b in rows)
    assert copy.count == cp.count == len(rows)


# ------------------------------------------------------------------ refusals


def test_since_the_node_never_signed_is_refused(net: InProcessNet) -> None:
    stub = net.public("carrier-1")
    other = net.public("internet-1").GetViewCheckpoint(pb.GetViewCheckpointRequest()).note
    with pytest.raises(grpc.RpcError) as e:
        _read(stub, since=other)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NotOurCheckpoint" in (e.value.details() or "")
    # Signed with the node's own key, at a vector its view never held.
    node = _node(net, "carrier-1")
    cp = V.ViewCheckpoint(node.view.origin, (("carrier-1", 10**6),), 1, bytes(32),
                          time.time_ns() // 10**6)
    with pytest.raises(grpc.RpcError) as e:
        _read(stub, since=V.sign_view_checkpoint(cp, node.view.key))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "never was at the vector" in (e.value.details() or "")
    with pytest.raises(grpc.RpcError) as e:
        _read(stub, since="not a note")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class BendingProxy(rpc.PublicServicer):
    """Forwards WatchView; on a resumed watch (a `since`) bends the first
    message that carries entries."""

    def __init__(self, upstream: Any, how: str, other: bytes) -> None:
        self.upstream = upstream
        self.how = how
        self.other = other      # a real entry of another number

    def WatchView(self, request, context):  # noqa: N802
        bent = not request.since
        for msg in self.upstream.WatchView(request):
            if not bent and msg.entries:
                bent = True
                out = pb.WatchViewMessage()
                out.CopyFrom(msg)
                if self.how == "swap":
                    out.entries[0].entry = self.other
                elif self.how == "flip":
                    raw = bytearray(out.entries[0].entry)
                    raw[len(raw) // 2] ^= 0x01
                    out.entries[0].entry = bytes(raw)
                else:                     # drop an entry
                    del out.entries[0]
                msg = out
            yield msg


@pytest.mark.parametrize("how", ["swap", "flip", "drop"])
def test_bent_stream_is_refused_and_copy_stays(net: InProcessNet, how: str) -> None:
    net.mark("carrier-1", "13819990099", "fraud")
    other = net.public("carrier-1").Lookup(pb.LookupRequest(number="+8613819990099")).entry
    proxy = BendingProxy(net.public("carrier-1"), how, other)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    rpc.add_PublicServicer_to_server(proxy, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        net.mark("carrier-1", "13819990100", "fraud")
        stub = rpc.PublicStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        copy = WatchCopy(net.consortium, "carrier-1")
        assert watch(stub, copy, None, False, 1) == 1        # the snapshot verifies
        before = (copy.root(), copy.count, copy.note)
        t = threading.Timer(0.3, lambda: net.mark("carrier-1", "13819990101", "fraud"))
        t.start()
        expected = DeltaMismatch if how == "drop" else (BentEntry, DeltaMismatch)
        with pytest.raises(expected):
            watch(stub, copy, None, False, 1)
        t.join()
        assert (copy.root(), copy.count, copy.note) == before
    finally:
        server.stop(0)


def test_checkpoint_of_another_node_or_without_quorum_is_refused(net: InProcessNet) -> None:
    msgs = _read(net.public("internet-1"))
    rows = [Change(e.number, e.entry) for m in msgs for e in m.entries]
    copy = WatchCopy(net.consortium, "carrier-1")       # pinned to carrier-1
    with pytest.raises(LedgerError, match="not carrier-1's"):
        copy.apply(rows, msgs[-1].checkpoint, time.time_ns() // 10**6, snapshot=True)
    bare = open_view(net.consortium, msgs[-1].checkpoint)
    assert bare.cosigned_at                              # it had cosignatures ...
    lone = msgs[-1].checkpoint.split("\n\n")[0] + "\n\n" + \
        msgs[-1].checkpoint.split("\n\n")[1].splitlines()[0] + "\n"
    mine = WatchCopy(net.consortium, "internet-1")
    with pytest.raises(LedgerError, match="cosignature"):  # ... but not once stripped
        mine.apply(rows, lone, time.time_ns() // 10**6, snapshot=True)
    assert mine.checkpoint is None and mine.count == 0


def test_rollback_stale_and_a_copy_changed_on_disk_are_refused(net: InProcessNet) -> None:
    stub = net.public("carrier-1")
    net.mark("carrier-1", "13819990201", "fraud")
    net.mark("carrier-1", "13819990202", "fraud")
    first = _read(stub)
    rows = [Change(e.number, e.entry) for m in first for e in m.entries]
    now = time.time_ns() // 10**6
    copy = WatchCopy(net.consortium, "carrier-1")
    copy.apply(rows, first[-1].checkpoint, now, snapshot=True)
    net.mark("carrier-1", "13819990200", "fraud")
    nxt = _read(stub, since=first[-1].checkpoint)
    delta = [Change(e.number, e.entry or None) for m in nxt for e in m.entries]
    assert [c.number for c in delta] == ["+8613819990200"]
    copy.apply(delta, nxt[-1].checkpoint, time.time_ns() // 10**6)
    state = (copy.root(), copy.count, copy.note)
    with pytest.raises(ViewRollback):                   # the older checkpoint again
        copy.apply([], first[-1].checkpoint, time.time_ns() // 10**6)
    later = time.time_ns() // 10**6 + net.consortium.policy.view_max_age_ms + 60_000
    with pytest.raises(StaleView):
        copy.apply([], nxt[-1].checkpoint, later)
    assert (copy.root(), copy.count, copy.note) == state
    # The kept copy reloads and verifies; one entry changed on disk does not.
    kept = rows + delta
    again = WatchCopy(net.consortium, "carrier-1")
    again.load([(c.number, c.entry) for c in kept if c.entry], nxt[-1].checkpoint)
    assert again.root() == copy.root() and again.count == copy.count
    bent = [(c.number, c.entry) for c in kept if c.entry]
    bent[0] = (bent[0][0], bent[1][1])
    with pytest.raises(BentEntry):
        WatchCopy(net.consortium, "carrier-1").load(bent, nxt[-1].checkpoint)
    with pytest.raises(DeltaMismatch):
        WatchCopy(net.consortium, "carrier-1").load(
            [(c.number, c.entry) for c in kept[1:] if c.entry], nxt[-1].checkpoint)


def test_since_older_than_the_change_log_gets_a_flagged_snapshot(net: InProcessNet) -> None:
    stub = net.public("carrier-1")
    old = _read(stub)[-1].checkpoint
    changes = _node(net, "carrier-1").watcher.changes
    keep = changes._max_applies
    changes._max_applies = 1               # the log keeps only the newest apply
    try:
        net.mark("carrier-1", "13819990300", "fraud")
        net.mark("carrier-1", "13819990301", "fraud")
        msgs = _read(stub, since=old)
    finally:
        changes._max_applies = keep
    assert msgs[0].snapshot
    assert msgs[0].reason == "the checkpoint is older than the node's change log"
    copy = WatchCopy(net.consortium, "carrier-1")
    rows = [Change(e.number, e.entry or None) for m in msgs for e in m.entries]
    cp = copy.apply(rows, msgs[-1].checkpoint, time.time_ns() // 10**6, snapshot=True)
    assert copy.root() == cp.root and cp.count == len(rows)


def test_a_slow_consumer_gets_the_changes_coalesced(net: InProcessNet) -> None:
    """While a consumer does not take its messages the node queues nothing for
    it: its next delta is everything since the vector it last got."""
    watcher = _node(net, "carrier-1").watcher
    got: list[pb.WatchViewMessage] = []
    release, gone = threading.Event(), threading.Event()

    def send(msg: pb.WatchViewMessage) -> None:    # gRPC's send, blocked by the consumer
        got.append(msg)
        release.wait(60)

    t = threading.Thread(target=watcher._stream, args=(None, send, gone))
    t.start()
    try:
        _wait_for(lambda: bool(got))                # the snapshot, then the send blocks
        numbers = {f"+86138199904{i:02d}" for i in range(20)}
        for n in sorted(numbers):
            net.mark("carrier-1", n, "fraud")
        time.sleep(0.5)
        assert len(got) == 1                       # nothing more was read meanwhile
        release.set()
        _wait_for(lambda: len(got) >= 2)
        assert {e.number for e in got[1].entries} == numbers and got[1].checkpoint
    finally:
        release.set()
        gone.set()
        t.join(10)


def test_a_snapshot_is_charged_like_a_lookup_batch(net: InProcessNet) -> None:
    """The public gate bills a snapshot by its entries: a client without the
    units is refused RESOURCE_EXHAUSTED before anything is read."""
    node = _node(net, "carrier-1")
    net.mark("carrier-1", "13819990500", "fraud")
    limits, table = node.public_service.limits, node.public_gate.table.limits
    node.public_service.limits = replace(limits, numbers_per_unit=1)
    node.public_gate.table.limits = replace(table, burst=1.5, rate=0.001)
    try:
        with pytest.raises(grpc.RpcError) as e:
            _read(net.public("carrier-1"))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit" in (e.value.details() or "")
    finally:
        node.public_service.limits, node.public_gate.table.limits = limits, table


def test_a_watch_failing_on_its_own_thread_ends_with_its_status(
        net: InProcessNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch streams from a thread of its own after the handler returned;
    an error there ends the call with the error's code at once (abort from
    that thread would leave the client waiting for its deadline)."""
    node = _node(net, "carrier-1")

    def failing(since: Any, send: Any, gone: Any) -> None:
        raise NotOurCheckpoint("the watch found a checkpoint it cannot serve")

    monkeypatch.setattr(node.watcher, "_stream", failing)
    call = net.public("carrier-1").WatchView(pb.WatchViewRequest(), timeout=60)
    with pytest.raises(grpc.RpcError) as e:
        list(call)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot serve" in (e.value.details() or "")
    # the slot is given back on the watch's thread just after the call ended
    _wait_for(lambda: node.watcher._open == 0, timeout=10)


# ------------------------------------------------------------------ the command


def _consumer(net: InProcessNet, file: Path, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{INSTITUTE_KEY_ENV: net.institute_key})
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli", "view", "watch", "--consortium", str(net.dir),
         "--node", "carrier-1", "--from", str(file), "--jsonl"],
        cwd=ROOT, env=env, stdout=out.open("ab"), stderr=out.with_suffix(".err").open("ab"),
    )


def _lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]


def _wait_for(cond: Any, timeout: float = 30, what: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what and what.read_text()[-2000:]}"
        time.sleep(0.1)


def test_consumer_killed_and_resumed_ends_with_the_nodes_root(
    net: InProcessNet, tmp_path: Path
) -> None:
    file, out = tmp_path / "view.cp", tmp_path / "out.jsonl"
    stop = threading.Event()

    def flow() -> None:
        i = 0
        while not stop.is_set():
            net.mark("carrier-1", f"1382000{i:04d}", "fraud")
            i += 1
            time.sleep(0.05)

    marker = threading.Thread(target=flow)
    marker.start()
    p = _consumer(net, file, out)
    try:
        _wait_for(lambda: sum("checkpoint" in x for x in _lines(out)) >= 3,
                  what=out.with_suffix(".err"))
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        first = len(_lines(out))
        time.sleep(1.0)                      # marks keep flowing while it is down
        p = _consumer(net, file, out)
        _wait_for(lambda: any("checkpoint" in x for x in _lines(out)[first:]))
        resumed = [x for x in _lines(out)[first:] if "checkpoint" in x]
        assert resumed[0]["snapshot"] is False      # no full reload
        assert resumed[0]["verified"] is True
        assert any(set(x) == {"number", "entry"} for x in _lines(out))   # the changed entries
        stop.set()
        marker.join()
        node = _node(net, "carrier-1")
        want = _settled_root(node, node.core.ledger.feed("carrier-1").seq)

        def caught_up() -> bool:
            cps = [x for x in _lines(out) if "checkpoint" in x]
            return bool(cps) and cps[-1]["checkpoint"]["root"] == want

        _wait_for(caught_up)
        p.kill()
        p.wait(10)
        # What it kept: FILE's note signs the node's root, FILE.d reloads to it.
        kept_cp = open_view(net.consortium, file.read_text()).checkpoint
        assert base64.b64encode(kept_cp.root).decode() == want
        kept = KeptCopy(file)
        try:
            copy = WatchCopy(net.consortium, "carrier-1")
            copy.load(kept.entries(), kept.note())
            assert base64.b64encode(copy.root()).decode() == want
        finally:
            kept.close()
    finally:
        stop.set()
        marker.join()
        p.kill()
        p.wait(10)


def test_consumer_dials_again_after_the_node_restarts(net: InProcessNet, tmp_path: Path) -> None:
    """The node goes away under a running consumer and comes back: the
    consumer dials again with backoff and ends at the restarted node's root."""
    file, out = tmp_path / "view.cp", tmp_path / "out.jsonl"
    p = _consumer(net, file, out)
    try:
        _wait_for(lambda: any("checkpoint" in x for x in _lines(out)), what=out.with_suffix(".err"))
        old = _node(net, "carrier-1")
        old.stop(grace=0.1)
        net.nodes_running.remove(old)
        time.sleep(1.5)
        node = Node(NodeConfig.for_participant(net.dir, "carrier-1"), sync_interval=0.2)
        node.start()
        net.nodes_running.append(node)
        net._drop_channels("carrier-1")
        want = _settled_root(node, net.mark("carrier-1", "13819990600", "fraud").seq)

        def caught_up() -> bool:
            cps = [x for x in _lines(out) if "checkpoint" in x]
            return cps[-1]["checkpoint"]["root"] == want

        _wait_for(caught_up, timeout=60, what=out.with_suffix(".err"))
        assert "dialling again" in out.with_suffix(".err").read_text()
        assert p.poll() is None                      # still watching
    finally:
        p.kill()
        p.wait(10)
