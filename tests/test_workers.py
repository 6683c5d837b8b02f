"""The public port on every core (node/workers.py, node/readview.py).

In-process: a node's parts writing a real store and a ReadView over it as a
RocksDB secondary: the worker answers with the node's very bytes, and never
serves a note whose vector its store does not hold. With real processes: a
node run with `--workers 2` answers lookups through the shared port from
several channels (each verified as a client verifies a node), sees a new mark
within a bounded time, keeps answering when a worker is SIGKILLed (and
restarts it), relays WatchView and GetBadList to the node (a watch reaches
the node's root and resumes after its worker died, a bad list verifies, a
closed watch frees its upstream), and stops with its workers."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.signing import SigningKey
from ledger import merkle, note, verify
from ledger import view as V
from ledger.errors import StorageFailure
from ledger.names import log_origin
from ledger.payloads.line import uscc_check_char
from ledger.record import Mark
from ledger.store import Store
from ledger.watch import Change, WatchCopy
from markex.v1 import record_pb2
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import cli, client, readview
from node.command import NotVerified
from node.complaintcli import verify_bad_list
from node.core import NodeCore
from node.limits import UNARY, WATCH, ClientTable, PublicGate, PublicLimits
from node.localnet import LocalNet, free_port_block
from node.logkeeper import LogKeeper
from node.readview import Behind, ReadView
from node.viewkeeper import VIEW_NOTE_KEY, ViewKeeper
from node.watch import MAX_WATCHES
from node.workers import LogNotes, Worker, WorkerPublicService, relay_limits

pytestmark = pytest.mark.timeout(180)
OWN = "carrier-1"


def _now() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


# ====================================================================== in-process


class Primary:
    def __init__(self, d: Path, cons: Consortium, db: Path) -> None:
        self.store = Store(db)
        self.core = NodeCore(self.store, cons, OWN, SigningKey.load(d / OWN / "signing.key"),
                             _now)
        self.logs = LogKeeper(self.core.ledger)
        self.view = ViewKeeper(self.core.ledger, _now)
        self.view.publishes = True
        self.notes = LogNotes(self.logs, self.store)
        self.core.subscribe(self.logs.grew)
        self.core.subscribe(self.view.apply)
        self.core.start()
        self.view.start()

    def close(self) -> None:
        self.core.stop()
        self.store.close()


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[tuple[Primary, Consortium]]:
    d = tmp_path / "c"
    cons = init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                           now=datetime.now(UTC))
    p = Primary(d, cons, NodeConfig.for_participant(d, OWN).data_dir)
    try:
        yield p, cons
    finally:
        p.close()


def test_a_secondary_answers_with_the_nodes_bytes(
    primary: tuple[Primary, Consortium], tmp_path: Path
) -> None:
    p, cons = primary
    worker = ReadView(Store(p.store.path, secondary=tmp_path / "sec"), cons, OWN)
    try:
        assert worker.refresh()  # the empty view's note, published at start
        p.core.issue(Mark("+8613800000001", "fraud", 70))
        p.core.issue(Mark("+8613800000002", "harassment", 40))
        before = worker.lookup("+8613800000001", True)
        assert before.entry == b""  # not caught up yet: the old state, under its own note
        assert worker.refresh()
        numbers = ["+8613800000001", "+8613800000002", "+8613800000003"]
        mine, theirs = worker.lookup_batch(numbers, True), p.view.lookup_batch(numbers, True)
        assert mine == theirs  # the same note, entries and proofs, byte for byte
        rows = verify.verify_answers(cons, numbers, list(mine.results), mine.view_checkpoint,
                                     _now())
        # Proofs and signature check (verify_answers raises for neither); a node
        # without peers has no cosignatures, which the client says.
        assert [r["number"] for r in rows] == numbers
        assert all("quorum" in r.get("error", "") or "cosign" in r.get("error", "")
                   for r in rows), rows
        cp = V.parse_view_checkpoint(note.Note.parse(mine.view_checkpoint).text)
        assert dict(cp.vector) == {OWN: 2}
        # The log: the note the node served, proofs of its entries.
        p.logs.sign_if_grown()
        p.notes.publish()
        assert worker.refresh()
        text = worker.log.checkpoint_note()
        assert text is not None
        lc = note.open_checkpoint(text, note.Verifier.for_key(
            log_origin(cons.name, OWN), cons.participant(OWN).public_key))  # type: ignore[union-attr]
        path = worker.log.inclusion_proof(1, lc.size)
        merkle.verify_inclusion(worker.log.leaf_hash(1), 1, lc.size, path, lc.root)
    finally:
        worker.store.close()


def test_a_worker_following_many_notes_holds_the_nodes_root_after_each(
    primary: tuple[Primary, Consortium], tmp_path: Path
) -> None:
    """The journal path: after the first full read, each catch-up re-reads only
    the buckets the node's notes name, and still answers with the node's bytes."""
    p, cons = primary
    worker = ReadView(Store(p.store.path, secondary=tmp_path / "sec"), cons, OWN)
    numbers = [f"+86138{i:08d}" for i in range(40)]
    try:
        assert worker.refresh()
        for r in range(8):
            for n in numbers[r * 5 : r * 5 + 5]:
                p.core.issue(Mark(n, "fraud", 50 + r))
            p.core.issue(Mark(numbers[r], "harassment", 90))  # an entry changed again
            assert worker.refresh()
            assert worker._state is not None and worker._state._seq is not None
            assert worker.lookup_batch(numbers, True) == p.view.lookup_batch(numbers, True)
        assert worker.snapshot() == p.view.snapshot()
    finally:
        worker.store.close()


def test_a_note_for_another_vector_is_never_served(
    primary: tuple[Primary, Consortium], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p, cons = primary
    p.core.issue(Mark("+8613800000001", "fraud", 70))
    old = p.view.checkpoint_note()
    assert old is not None
    p.core.issue(Mark("+8613800000001", "harassment", 90))
    # The node's served note lags its view (as in the moment between the two writes).
    p.store.put("meta", VIEW_NOTE_KEY, old.encode())
    worker = ReadView(Store(p.store.path, secondary=tmp_path / "sec"), cons, OWN)
    monkeypatch.setattr(readview, "READY_WAIT_S", 0.2)
    try:
        assert not worker.refresh()
        with pytest.raises(Behind):
            worker.lookup("+8613800000001", True)
        with pytest.raises(Behind):
            worker.checkpoint_note()
        p.view.publish()  # unchanged since its last write: not written again
        p.view._published = None  # as after a restart: write it
        p.view.publish()
        assert worker.refresh()
        resp = worker.lookup("+8613800000001", True)
        assert resp == p.view.lookup("+8613800000001", True)
    finally:
        worker.store.close()


def test_a_worker_behind_its_node_answers_unavailable_and_catches_up(
    primary: tuple[Primary, Consortium], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p, cons = primary
    d = p.store.path.parent.parent
    monkeypatch.setattr(readview, "READY_WAIT_S", 0.2)
    port = free_port_block(1)
    worker = Worker(NodeConfig.for_participant(d, OWN), port, tmp_path / "sec").start()
    ch = client.public_channel(d, f"127.0.0.1:{port}")
    try:
        stub = rpc.PublicStub(ch)
        first = stub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=5).note
        assert first == p.view.checkpoint_note()
        p.core.issue(Mark("+8613800000001", "fraud", 70))
        stale = p.view.checkpoint_note()
        p.core.issue(Mark("+8613800000001", "harassment", 90))
        p.store.put("meta", VIEW_NOTE_KEY, stale.encode())  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and worker.view.signed:
            time.sleep(0.01)
        for call in (lambda: stub.Lookup(pb.LookupRequest(number="+8613800000001"), timeout=5),
                     lambda: stub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=5)):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "has not caught up" in (e.value.details() or "")
        p.view._published = None
        p.view.publish()  # the node's note for its view: the worker takes it on its timer
        deadline = time.monotonic() + 5
        while True:
            try:
                resp = stub.Lookup(pb.LookupRequest(number="+8613800000001"), timeout=5)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
        assert resp == p.view.lookup("+8613800000001", True)
    finally:
        ch.close()
        worker.stop()


def test_a_secondary_store_does_not_write_and_a_primary_does_not_catch_up(
    primary: tuple[Primary, Consortium], tmp_path: Path
) -> None:
    p, _ = primary
    with pytest.raises(ValueError, match="only a secondary"):
        p.store.catch_up()
    sec = Store(p.store.path, secondary=tmp_path / "sec")
    try:
        with pytest.raises(StorageFailure):
            sec.put("meta", b"worker", b"x")
        sec.catch_up()
        assert p.store.get("meta", b"worker") is None and sec.get("meta", b"worker") is None
    finally:
        sec.close()


def test_a_secondary_catches_up_only_after_its_primary_wrote(
    primary: tuple[Primary, Consortium], tmp_path: Path
) -> None:
    p, _ = primary
    sec = Store(p.store.path, secondary=tmp_path / "sec")
    try:
        assert sec.primary_moved()  # never caught up
        sec.catch_up()
        assert not sec.primary_moved()
        p.store.put("meta", b"probe", b"1", sync=False)  # an unsynced write moves it too
        assert sec.primary_moved()
        sec.catch_up()
        assert not sec.primary_moved() and sec.get("meta", b"probe") == b"1"
        p.store.put("meta", b"probe", b"2")
        assert sec.primary_moved()
    finally:
        sec.close()


def test_a_worker_reads_nothing_while_its_node_writes_nothing(
    primary: tuple[Primary, Consortium], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle node costs its workers a directory listing per refresh, and
    their reads are never held for a catch-up; a mark is still seen at once."""
    p, cons = primary
    worker = ReadView(Store(p.store.path, secondary=tmp_path / "sec"), cons, OWN)
    catch_ups = []
    real = worker.store.catch_up
    monkeypatch.setattr(worker.store, "catch_up", lambda: catch_ups.append(1) or real())
    try:
        assert worker.refresh()
        version = worker._version
        for _ in range(5):
            assert worker.refresh()
        assert len(catch_ups) == 1 and worker._version == version  # no read was held
        p.core.issue(Mark("+8613800000001", "fraud", 70))
        assert worker.refresh() and len(catch_ups) == 2
        numbers = ["+8613800000001"]
        assert worker.lookup_batch(numbers, True) == p.view.lookup_batch(numbers, True)
    finally:
        worker.store.close()


def _two_copies(p: Primary, cons: Consortium, tmp_path: Path) -> ReadView:
    return ReadView(Store(p.store.path, secondary=tmp_path / "a"), cons, OWN,
                    spare=Store(p.store.path, secondary=tmp_path / "b"))


def test_a_catch_up_holds_no_read_and_waits_for_the_reads_on_its_copy(
    primary: tuple[Primary, Consortium], tmp_path: Path
) -> None:
    p, cons = primary
    worker = _two_copies(p, cons, tmp_path)
    number = "+8613800000001"
    entered, release = threading.Event(), threading.Event()
    got: list[tuple[str, list[bytes | None]]] = []

    def slow_read(view: V.NationalView) -> list[bytes | None]:
        entered.set()
        release.wait(10)
        return view.entries_bytes([number])

    try:
        assert worker.refresh()
        before = worker.checkpoint_note()
        reader = threading.Thread(target=lambda: got.append(worker._consistent(slow_read)))
        reader.start()
        assert entered.wait(10)
        p.core.issue(Mark(number, "fraud", 70))
        assert worker.refresh()  # the other copy caught up while the read is on this one
        now = worker.lookup_batch([number], True)
        assert now == p.view.lookup_batch([number], True) and now.view_checkpoint != before
        p.core.issue(Mark(number, "harassment", 90))
        second = threading.Thread(target=worker.refresh)
        second.start()  # the copy to catch up now is the one the slow read is on
        second.join(0.3)
        assert second.is_alive()
        assert worker.lookup_batch([number], True) == now  # reads go on meanwhile
        release.set()
        reader.join(10)
        second.join(10)
        assert got == [(before, [None])]  # the slow read's note and entries, of one state
        assert worker.lookup_batch([number], True) == p.view.lookup_batch([number], True)
        assert worker.log.feeds() == p.core.ledger.feeds()  # the log of the copy read now
    finally:
        release.set()
        worker.close()


def test_a_worker_without_a_newer_note_serves_its_last_for_a_bounded_time(
    primary: tuple[Primary, Consortium], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p, cons = primary
    monkeypatch.setattr(readview, "BEHIND_LIMIT_S", 0.2)
    monkeypatch.setattr(readview, "READY_WAIT_S", 0.1)
    worker = _two_copies(p, cons, tmp_path)
    number = "+8613800000001"
    try:
        p.core.issue(Mark(number, "fraud", 70))
        assert worker.refresh()
        held = worker.lookup(number, True)
        assert held == p.view.lookup(number, True)
        stale = p.view.checkpoint_note()
        p.core.issue(Mark(number, "harassment", 90))
        p.store.put("meta", VIEW_NOTE_KEY, stale.encode())  # type: ignore[union-attr]
        assert worker.refresh() and worker.lookup(number, True) == held  # the last signed
        time.sleep(0.3)
        p.store.put("meta", b"probe", b"1")  # the node writes on, its note still stale
        assert not worker.refresh()
        with pytest.raises(Behind):
            worker.lookup(number, True)
        p.view._published = None
        p.view.publish()
        assert worker.refresh()
        assert worker.lookup(number, True) == p.view.lookup(number, True)
    finally:
        worker.close()


def test_a_worker_whose_catch_up_keeps_failing_is_behind_after_the_limit(
    primary: tuple[Primary, Consortium], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage failure in the catch-up is no newer signed state either:
    the last one is served for BEHIND_LIMIT_S, then the worker is behind."""
    from ledger.errors import StorageFailure

    p, cons = primary
    monkeypatch.setattr(readview, "BEHIND_LIMIT_S", 0.2)
    worker = _two_copies(p, cons, tmp_path)
    number = "+8613800000001"
    try:
        p.core.issue(Mark(number, "fraud", 70))
        assert worker.refresh()

        def broken(copy: object) -> None:
            raise StorageFailure("the secondary cannot read the primary's files")

        monkeypatch.setattr(worker, "_catch_up", broken)
        p.store.put("meta", b"probe", b"1")
        with pytest.raises(StorageFailure):
            worker.refresh()
        worker.lookup(number, True)                 # still the last signed state
        time.sleep(0.3)
        p.store.put("meta", b"probe", b"2")
        with pytest.raises(StorageFailure):
            worker.refresh()
        with pytest.raises(Behind):
            worker.lookup(number, True)
    finally:
        worker.close()


def test_workers_out_of_range_are_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                    now=datetime.now(UTC))
    for bad in ("0", "-3", "257"):
        code = cli.main(["node", "run", "--consortium", str(d), "--as", OWN, "--workers", bad])
        assert code != 0
        assert "--workers takes 1 to 256 processes" in capsys.readouterr().err
    assert not (d / OWN / "data").exists() or not any((d / OWN / "data").iterdir())


class _Aborted(Exception):
    pass


class _Context:
    """What the relay uses of a grpc.ServicerContext: the caller, abort, and
    the status a stream is ended with off its handler (set_code, set_details)."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    def peer(self) -> str:
        return "ipv4:192.0.2.7:40000"

    def is_active(self) -> bool:
        return self.status is None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise _Aborted(details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = (code, self.status[1] if self.status else "")

    def set_details(self, details: str) -> None:
        assert self.status is not None
        self.status = (self.status[0], details)


class _UpstreamCall:
    """The upstream's stream as the relay reads it: messages, then cancel."""

    def __init__(self, msgs: list[pb.WatchViewMessage]) -> None:
        self.msgs, self.cancelled = msgs, False

    def __iter__(self) -> Iterator[pb.WatchViewMessage]:
        for m in self.msgs:
            if self.cancelled:
                return
            yield m

    def cancel(self) -> None:
        self.cancelled = True


def _page(n: int, snapshot: bool = False, checkpoint: str = "") -> pb.WatchViewMessage:
    return pb.WatchViewMessage(entries=[pb.WatchedEntry(number=f"+86138{i:08d}", entry=b"x")
                                        for i in range(n)], snapshot=snapshot,
                               checkpoint=checkpoint)


def test_a_relayed_snapshot_is_charged_by_the_worker_and_refused_beyond_the_burst() -> None:
    limits = PublicLimits(rate=0.001, burst=5.0, numbers_per_unit=100)
    svc = WorkerPublicService(None, None, None, PublicGate(ClientTable(limits)), limits)  # type: ignore[arg-type]
    # A snapshot of 300 numbers in two pages (3 units), then a delta: not charged.
    sent: list[pb.WatchViewMessage | None] = []
    call = _UpstreamCall([_page(200, snapshot=True), _page(100, checkpoint="cp1"),
                          _page(900, checkpoint="cp2")])
    ctx = _Context()
    svc._relay_watch(call, ctx, sent.append)  # noqa: SLF001
    assert ctx.status is None and [m.checkpoint if m else None for m in sent] == [
        "", "cp1", "cp2", None]
    # 2 units left: a second snapshot of 300 numbers is refused at its second page.
    sent.clear()
    call = _UpstreamCall([_page(100, snapshot=True), _page(200, checkpoint="cp3")])
    ctx = _Context()
    svc._relay_watch(call, ctx, sent.append)  # noqa: SLF001
    assert ctx.status is not None and ctx.status[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert call.cancelled   # the upstream call ends too
    # The page past the limit never reached the client; the call ends with the status.
    assert len(sent) == 2 and sent[0] is not None and sent[1] is None


def test_the_upstreams_gate_throttles_no_worker() -> None:
    base = PublicLimits()
    relay = ClientTable(relay_limits(base))
    plain = ClientTable(base)
    now = 1.0
    # One worker's connection: far more watches and units than one client may hold.
    assert all(relay.admit("w", WATCH, now) is None for _ in range(base.max_watches))
    assert relay.charge("w", 1e9, now) is None
    assert all(relay.admit("w", UNARY, now) is None for _ in range(base.threads - 2))
    assert plain.charge("c", base.burst + 1, now) is not None
    refused = [plain.admit("c", WATCH, now) for _ in range(base.client_streams + 1)]
    assert refused[-1] is not None


# ====================================================================== processes


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    n = LocalNet(tmp_path_factory.mktemp("workers") / "c", carriers=1, internet=1,
                 sync_interval=0.3, regulators=1)
    try:
        for pid in n.ids:
            n.start(pid, wait=False, workers=2 if pid == OWN else 1)
        for pid in n.ids:
            n.wait_ready(pid)
        yield n
    finally:
        n.stop_all()


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out.update(int(c) for c in (task / "children").read_text().split())
    return out


def _channels(net: LocalNet, n: int) -> list[grpc.Channel]:
    ep = net.consortium.participant(OWN).public_endpoint  # type: ignore[union-attr]
    # Distinct channels are distinct connections: the kernel spreads them over the workers.
    return [client.public_channel(net.dir, ep) for _ in range(n)]


def _verified(net: LocalNet, ch: grpc.Channel, number: str) -> dict:
    resp = rpc.PublicStub(ch).Lookup(pb.LookupRequest(number=number), timeout=10)
    return verify.verify_answer(net.consortium, number, resp, resp.view_checkpoint, _now())


def test_lookups_through_the_shared_port_verify_and_see_a_new_mark(net: LocalNet) -> None:
    workers = net.nodes[OWN].ports["workers"]
    assert len(workers) == 2 and set(workers) <= _children(net.nodes[OWN].proc.pid)  # type: ignore[union-attr]
    number = "+8613800000123"
    issued = net.mark(OWN, number, "harassment")
    chans = _channels(net, 6)
    try:
        deadline = time.monotonic() + 15
        pending = set(range(len(chans)))
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                r = _verified(net, chans[i], number)
                if r["verified"] and r["category"] == "harassment":
                    assert [m["record_id"] for m in r["markers"]] == [issued.id.hex()]
                    pending.discard(i)
            time.sleep(0.05)
        assert not pending, f"channels {sorted(pending)} never saw the mark verified"
        numbers = [number, "+8613800000124"]
        for ch in chans:
            b = rpc.PublicStub(ch).LookupBatch(
                pb.LookupBatchRequest(numbers=numbers, with_proofs=True), timeout=10)
            rows = verify.verify_answers(net.consortium, numbers, list(b.results),
                                         b.view_checkpoint, _now())
            assert [r["verified"] for r in rows] == [True, True], rows
            vc = rpc.PublicStub(ch).GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=10)
            assert verify.open_view(net.consortium, vc.note)
            lc = rpc.PublicStub(ch).GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
            cp = note.open_checkpoint(lc.note, note.Verifier.for_key(
                log_origin(net.consortium.name, OWN),
                net.consortium.participant(OWN).public_key))  # type: ignore[union-attr]
            if cp.size:
                inc = rpc.PublicStub(ch).GetInclusionProof(
                    pb.GetInclusionProofRequest(index=0, size=cp.size), timeout=10)
                merkle.verify_inclusion(inc.leaf_hash, 0, cp.size, list(inc.path), cp.root)
    finally:
        for ch in chans:
            ch.close()


def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(net: LocalNet) -> None:
    node_pid = net.nodes[OWN].proc.pid  # type: ignore[union-attr]
    before = _children(node_pid)
    victim = net.nodes[OWN].ports["workers"][0]
    assert victim in before
    os.kill(victim, signal.SIGKILL)
    chans = _channels(net, 4)
    try:
        for ch in chans:  # every new connection lands on a worker that is alive
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert _verified(net, ch, "+8613800000123")["verified"]
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
    finally:
        for ch in chans:
            ch.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _children(node_pid)
        if victim not in now and len(now - before) == 1 and len(now) == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the worker was not restarted: children {sorted(_children(node_pid))}")
    net.nodes[OWN].ports["workers"] = sorted(now)


# ------------------------------------------------------------------ relayed to the primary


def _log_checkpoint(net: LocalNet, ch: grpc.Channel) -> note.Checkpoint:
    lc = rpc.PublicStub(ch).GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
    return note.open_checkpoint(lc.note, note.Verifier.for_key(
        log_origin(net.consortium.name, OWN),
        net.consortium.participant(OWN).public_key))  # type: ignore[union-attr]


def test_a_bad_list_through_the_shared_port_verifies_after_a_sanction(net: LocalNet) -> None:
    uscc = "91110000600037341" + uscc_check_char("91110000600037341")
    issued = net.admin("regulator-1").IssueSanction(record_pb2.Sanction(
        enterprise="北京某某营销有限公司", uscc=uscc, reason="骚扰电话",
        document="工信罚〔2026〕12号", listed_at_ms=_now() - 1000), timeout=30)
    chans = _channels(net, 4)  # several connections: more than one worker relays
    try:
        deadline = time.monotonic() + 30
        pending = set(range(len(chans)))
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                cp, at = _log_checkpoint(net, chans[i]), _now()
                got = rpc.PublicStub(chans[i]).GetBadList(
                    pb.BadListRequest(at_ms=at, size=cp.size), timeout=10)
                try:
                    v = verify_bad_list(net.consortium, got, cp.size, cp.root, at)
                except NotVerified as e:  # the sanction is past the note the worker serves
                    assert "ask again once the next one is signed" in str(e), e
                    continue
                if [e.record.id for e in v.listed] == [issued.id]:
                    assert v.listed[0].sanction.uscc == uscc
                    pending.discard(i)
            time.sleep(0.1)
        assert not pending, f"channels {sorted(pending)} never listed the sanction"
        # A bent question is refused by the node, its status relayed as is.
        with pytest.raises(grpc.RpcError) as e:
            rpc.PublicStub(chans[0]).GetBadList(pb.BadListRequest(at_ms=_now(), check="hello"),
                                                timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    finally:
        for ch in chans:
            ch.close()


def _read_delta(stream: Iterator[pb.WatchViewMessage]) -> tuple[list[Change], str, bool]:
    """The pages up to the next checkpoint: the changes, the note, the snapshot flag."""
    changes: list[Change] = []
    snapshot = False
    for msg in stream:
        snapshot = snapshot or msg.snapshot
        changes.extend(Change(e.number, e.entry) for e in msg.entries)
        if msg.checkpoint:
            return changes, msg.checkpoint, snapshot
    raise AssertionError("the watch ended before a checkpoint")


def test_a_watch_through_the_shared_port_reaches_the_nodes_root(net: LocalNet) -> None:
    (ch,) = _channels(net, 1)
    try:
        stream = rpc.PublicStub(ch).WatchView(pb.WatchViewRequest(), timeout=60)
        copy = WatchCopy(net.consortium, OWN)
        changes, text, snapshot = _read_delta(stream)
        assert snapshot
        copy.apply(changes, text, _now(), snapshot=True)
        number = "+8613800000321"
        net.mark(OWN, number, "fraud")
        while True:  # each delta verified; until one brings the new mark
            changes, text, snapshot = _read_delta(stream)
            cp = copy.apply(changes, text, _now(), snapshot=snapshot)
            if number in {c.number for c in changes}:
                break
        assert copy.root() == cp.root
        # The node's own view checkpoint (any worker's) reaches that root, or one
        # later: a worker answering from its secondary catches up within its interval.
        deadline = time.monotonic() + 10
        while True:
            vc = rpc.PublicStub(ch).GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=10)
            node_cp = verify.open_view(net.consortium, vc.note).checkpoint
            if node_cp.count >= cp.count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert node_cp.count >= cp.count and dict(node_cp.vector).get(OWN, 0) >= dict(
            cp.vector).get(OWN, 0)
        stream.cancel()
        # A `since` the node never signed: the node's refusal, relayed as it is.
        with pytest.raises(grpc.RpcError) as e:
            next(rpc.PublicStub(ch).WatchView(pb.WatchViewRequest(since="no note"), timeout=10))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "no view checkpoint this node signed" in (e.value.details() or "")
    finally:
        ch.close()


def test_a_closed_watch_frees_its_upstream_call(net: LocalNet) -> None:
    # The node holds at most MAX_WATCHES watches: were a relayed watch not
    # cancelled upstream when its client goes, the ones after would be refused.
    for _ in range(MAX_WATCHES + 8):
        (ch,) = _channels(net, 1)
        try:
            stream = rpc.PublicStub(ch).WatchView(pb.WatchViewRequest(), timeout=30)
            assert next(stream).checkpoint
            stream.cancel()
        finally:
            ch.close()


def test_a_watch_resumes_through_the_port_after_its_worker_died(net: LocalNet) -> None:
    node_pid = net.nodes[OWN].proc.pid  # type: ignore[union-attr]
    (ch,) = _channels(net, 1)
    copy = WatchCopy(net.consortium, OWN)
    try:
        stream = rpc.PublicStub(ch).WatchView(pb.WatchViewRequest(), timeout=60)
        changes, text, _ = _read_delta(stream)
        copy.apply(changes, text, _now(), snapshot=True)
        for w in _children(node_pid):  # whichever worker relays it, it dies
            os.kill(w, signal.SIGKILL)
        with pytest.raises(grpc.RpcError):
            _read_delta(stream)
    finally:
        ch.close()
    number = "+8613800000654"
    net.mark(OWN, number, "fraud")
    deadline = time.monotonic() + 30
    while True:  # the restarted workers relay again; resume from the checkpoint held
        (ch,) = _channels(net, 1)
        try:
            stream = rpc.PublicStub(ch).WatchView(pb.WatchViewRequest(since=copy.note),
                                                  timeout=30)
            changes, text, snapshot = _read_delta(stream)
            assert not snapshot  # a delta since the held checkpoint, not a reload
            copy.apply(changes, text, _now())
            if number in {c.number for c in changes}:
                break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "no worker relayed the watch again"
            time.sleep(0.2)
        finally:
            ch.close()
    deadline = time.monotonic() + 30
    while len(_children(node_pid)) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    net.nodes[OWN].ports["workers"] = sorted(_children(node_pid))

def test_the_node_stops_with_its_workers(net: LocalNet) -> None:
    node_pid = net.nodes[OWN].proc.pid  # type: ignore[union-attr]
    workers = _children(node_pid)
    assert len(workers) == 2
    assert net.terminate(OWN) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [w for w in workers if Path(f"/proc/{w}").exists()]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their node"
    # The port is free again: no listener answers.
    ch = _channels(net, 1)[0]
    try:
        with pytest.raises(grpc.RpcError) as e:
            rpc.PublicStub(ch).GetFeedHeads(pb.FeedHeadsRequest(), timeout=2)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        ch.close()


def test_a_worker_whose_primary_died_while_it_started_stops_by_itself(
    net: LocalNet, tmp_path: Path
) -> None:
    """The primary passes its pid; a worker that finds another parent once it
    is up (the primary was killed while it started: init took its place, and
    the parent-death signal, asked for too late, never comes) stops and frees
    its port instead of serving forever."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.workers", "--config", str(net.dir / OWN / "node.toml"),
         "--port", str(free_port_block(1)), "--secondary", str(tmp_path / "secondary"),
         "--parent", "1"],  # not this worker's parent: the test is
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=root)
    try:
        assert proc.stdout is not None
        assert b'"worker"' in proc.stdout.readline()   # it came up, then
        assert proc.wait(timeout=60) == 0             # it stopped by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_node_killed_outright_takes_its_workers_and_restarts_on_its_port(
    tmp_path: Path,
) -> None:
    import json
    import subprocess
    import sys

    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, base_port=free_port_block(8),
                    now=datetime.now(UTC))
    root = Path(__file__).resolve().parent.parent
    procs: list[subprocess.Popen] = []

    def start() -> dict:
        log = tmp_path / f"node-{len(procs)}.log"
        with open(log, "wb") as err:
            p = subprocess.Popen(
                [sys.executable, "-m", "node.cli", "node", "run", "--consortium", str(d),
                 "--as", OWN, "--workers", "2"],
                stdout=subprocess.PIPE, stderr=err, cwd=root)
        procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line, log.read_text()[-3000:]
        return json.loads(line)

    def alive(pid: int) -> bool:
        try:
            return "zombie" not in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False

    try:
        first = start()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        deadline = time.monotonic() + 5
        while any(alive(w) for w in first["workers"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(alive(w) for w in first["workers"]), (tmp_path / "node-0.log").read_text()
        second = start()  # the port is free again: the same node.toml starts
        assert second["public_port"] == first["public_port"]
        ch = client.public_channel(d, f"127.0.0.1:{second['public_port']}")
        try:
            heads = rpc.PublicStub(ch).GetFeedHeads(pb.FeedHeadsRequest(), timeout=10)
            assert heads is not None
        finally:
            ch.close()
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(20) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            if p.stdout is not None:
                p.stdout.close()
