"""Replicas (issue 17): `markex replica run` as real processes following real
nodes. A replica follows a node while marks flow and its answers verify as a
node's and reach the node's root; three replicas behind one round_robin
channel keep answering when one is killed; a replica fed a forked or bent log
(through a proxy servicer) stops applying, keeps serving its last verified
state and says so in its health and its status; bad arguments get one clean
sentence."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keys.signing import SigningKey
from ledger import note
from ledger import view as V
from ledger.evidence import verify_evidence
from ledger.names import log_origin, witness_name
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.cli import main
from node.localnet import LocalNet
from node.lookup import lookup_verified

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    n = LocalNet(tmp_path_factory.mktemp("consortium") / "c", carriers=1, internet=1,
                 sync_interval=0.3)
    n.start_all()
    try:
        yield n
    finally:
        n.stop_all()


class ReplicaProcess:
    """`markex replica run` in a child process, stopped (and killed if it
    must be) by the test."""

    def __init__(self, net: LocalNet, follow: str, data_dir: Path, as_id: str = "carrier-1"):
        self.stderr_path = data_dir.with_suffix(".log")
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node.cli", "replica", "run", "--consortium",
                 str(net.dir), "--as", as_id, "--follow", follow, "--listen", "127.0.0.1:0",
                 "--data-dir", str(data_dir), "--interval", "0.2"],
                stdout=subprocess.PIPE, stderr=err, cwd=str(ROOT),
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"replica exited: {self.stderr_path.read_text()}")
        self.port = int(json.loads(line)["listen"])
        self.channel = client.public_channel(net.dir, self.address)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def public(self) -> rpc.PublicStub:
        return rpc.PublicStub(self.channel)

    def status(self) -> pb.ReplicaStatus:
        return rpc.ReplicaStub(self.channel).GetStatus(pb.ReplicaStatusRequest(), timeout=5)

    def health(self, service: str) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def kill(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextlib.contextmanager
def replicas(net: LocalNet, tmp: Path, *follows: str) -> Iterator[list[ReplicaProcess]]:
    started: list[ReplicaProcess] = []
    try:
        for i, follow in enumerate(follows):
            started.append(ReplicaProcess(net, follow, tmp / f"replica-{i}"))
        yield started
    finally:
        for r in started:
            r.stop()


def wait_for(pred: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except grpc.RpcError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def checkpoint_of(text: str) -> V.ViewCheckpoint:
    return V.parse_view_checkpoint(note.Note.parse(text).text)


def view_note(stub: rpc.PublicStub) -> str:
    return stub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=5).note


def same_view(a: str, b: str) -> bool:
    x, y = checkpoint_of(a), checkpoint_of(b)
    return (x.vector, x.root, x.count) == (y.vector, y.root, y.count)


def now_ms() -> int:
    return int(time.time() * 1000)


def verified(stub: rpc.PublicStub, net: LocalNet, number: str) -> dict[str, Any]:
    return lookup_verified(stub, net.consortium, number, now_ms())


# ------------------------------------------------------------------ following


def test_replica_follows_a_node_while_marks_flow(net: LocalNet, tmp_path: Path) -> None:
    issued: list[str] = []
    stop = threading.Event()

    def flow() -> None:
        i = 0
        while not stop.is_set() and i < 40:
            pid = ("carrier-1", "internet-1")[i % 2]
            number = f"+8613800{i:06d}"
            net.mark(pid, number, "harassment")
            issued.append(number)
            i += 1
            time.sleep(0.05)

    with replicas(net, tmp_path, "carrier-1") as (rep,):
        marks = threading.Thread(target=flow)
        marks.start()
        try:
            wait_for(lambda: rep.health("markex.v1.Replica") == SERVING, what="replica serving")
            # While marks flow: every answer verifies (signature, quorum, proof).
            while marks.is_alive() and issued:
                got = verified(rep.public, net, issued[0])
                assert got["verified"], got
                time.sleep(0.2)
        finally:
            stop.set()
            marks.join()
        node = net.public("carrier-1")
        # Then the replica's served checkpoint is the node's: same vector, root, count.
        wait_for(lambda: same_view(view_note(rep.public), view_note(node))
                 and checkpoint_of(view_note(node)).vector_dict.get("carrier-1", 0) >= 20,
                 what="the replica to reach the node's root")
        for number in (issued[0], issued[-1]):
            a, b = verified(rep.public, net, number), verified(node, net, number)
            assert a["verified"] and b["verified"]
            assert a["category"] == b["category"] == "harassment"
            assert a["view_root"] == b["view_root"]
        missing = verified(rep.public, net, "+8613899999999")
        assert missing["verified"] and missing["category"] is None
        batch = rep.public.LookupBatch(
            pb.LookupBatchRequest(numbers=issued[:5], with_proofs=True), timeout=5)
        assert [r.number for r in batch.results] == issued[:5]
        st = rep.status()
        assert st.state == "following" and st.logs[0].log == "carrier-1"
        assert st.logs[0].verified_size >= 40


def test_three_replicas_behind_one_round_robin_name(net: LocalNet, tmp_path: Path) -> None:
    net.mark("carrier-1", "+8613811000001", "fraud")
    with replicas(net, tmp_path, "carrier-1", "internet-1", "carrier-1,internet-1") as reps:
        for r in reps:
            wait_for(lambda r=r: r.health("") == SERVING, what=f"replica {r.address}")
        target = "ipv4:" + ",".join(r.address for r in reps)
        ca = (net.dir / "ca" / "ca.pem").read_bytes()
        channel = grpc.secure_channel(
            target, grpc.ssl_channel_credentials(ca),
            options=[("grpc.lb_policy_name", "round_robin"),
                     *client.target_options("carrier-1")],
        )
        try:
            stub = rpc.PublicStub(channel)
            for _ in range(9):
                assert verified(stub, net, "+8613811000001")["category"] == "fraud"
            # gRPC's round_robin spread them: every replica answered some.
            assert all(r.status().lookups > 0 for r in reps), [r.status().lookups for r in reps]
            reps[0].kill()
            net.mark("internet-1", "+8613811000002", "fraud")
            # The two left keep answering, verified, and keep following.
            for r in reps[1:]:
                wait_for(lambda r=r: verified(r.public, net, "+8613811000002")["category"]
                         == "fraud", what=f"the new mark at {r.address}")
            for _ in range(12):
                got = verified(stub, net, "+8613811000002")
                assert got["verified"] and got["category"] == "fraud", got
        finally:
            channel.close()


# ------------------------------------------------------------------ forked logs


class _Upstream:
    """A proxy servicer's view of the real node, and how it lies."""

    def __init__(self, net: LocalNet, node: str) -> None:
        self.public = net.public(node)
        self.audit = net.audit(node)
        self.mode = "honest"
        self.bend_from = 1 << 62
        self.key = SigningKey.load(net.dir / node / "signing.key")
        self.cons, self.dir = net.consortium, net.dir
        self.vector: tuple[tuple[str, int], ...] = ()
        self.origin = log_origin(net.consortium.name, node)

    def _real_checkpoint(self) -> pb.LogCheckpoint:
        return self.public.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=5)

    def checkpoint(self) -> pb.LogCheckpoint:
        real = self._real_checkpoint()
        if self.mode != "fork":
            return real
        # Signed with the node's own key: the same size, another root.
        forged = note.Checkpoint(self.origin, real.size, hashlib.sha256(real.root).digest())
        return pb.LogCheckpoint(note=note.sign_checkpoint(forged, self.origin, self.key),
                                size=forged.size, root=forged.root)

    def view_checkpoint(self) -> pb.ViewCheckpoint:
        real = self.public.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=5)
        cp = checkpoint_of(real.note)
        if self.mode != "view" or cp.vector == self.vector:
            return real
        # Once the node's view moved: its vector, another root, signed by the
        # node and cosigned by a quorum (keys this test holds).
        forged = replace(cp, root=hashlib.sha256(cp.root).digest())
        text = V.sign_view_checkpoint(forged, self.key)
        body = note.Note.parse(text).text
        lines = [note.cosign_line(body, witness_name(self.cons.name, pid),
                                  SigningKey.load(self.dir / pid / "signing.key"),
                                  int(time.time()))
                 for pid in ("institute", "internet-1")]
        return pb.ViewCheckpoint(note=note.add_signature_lines(text, lines))

    def entries(self, req: pb.GetEntriesRequest) -> pb.Entries:
        got = self.audit.GetEntries(req, timeout=10)
        if self.mode != "bend":
            return got
        envs = list(got.envelopes)
        for i in range(len(envs)):
            if got.start + i >= self.bend_from:
                env = bytearray(envs[i])
                env[-1] ^= 1  # one bit of the signature
                envs[i] = bytes(env)
        return pb.Entries(start=got.start, envelopes=envs)


def _forward(fn: Callable[[], Any], context: grpc.ServicerContext) -> Any:
    try:
        return fn()
    except grpc.RpcError as e:
        context.abort(e.code(), e.details())


class _ProxyPublic(rpc.PublicServicer):
    def __init__(self, up: _Upstream) -> None:
        self.up = up

    def GetLogCheckpoint(self, request, context):  # noqa: N802
        return _forward(self.up.checkpoint, context)

    def GetConsistencyProof(self, request, context):  # noqa: N802
        return _forward(lambda: self.up.public.GetConsistencyProof(request, timeout=5), context)

    def GetFeedHeads(self, request, context):  # noqa: N802
        return _forward(lambda: self.up.public.GetFeedHeads(request, timeout=5), context)

    def GetViewCheckpoint(self, request, context):  # noqa: N802
        return _forward(self.up.view_checkpoint, context)


class _ProxyAudit(rpc.AuditServicer):
    def __init__(self, up: _Upstream) -> None:
        self.up = up

    def GetEntries(self, request, context):  # noqa: N802
        return _forward(lambda: self.up.entries(request), context)

    def GetEvidence(self, request, context):  # noqa: N802
        return _forward(lambda: self.up.audit.GetEvidence(request, timeout=5), context)


@contextlib.contextmanager
def proxy(net: LocalNet, node: str) -> Iterator[tuple[_Upstream, str]]:
    """Public and Audit of `node` on one 127.0.0.1 TLS port (internet-1's
    certificate: a HOST:PORT node may present any member's)."""
    up = _Upstream(net, node)
    server = grpc.server(futures.ThreadPoolExecutor(8))
    rpc.add_PublicServicer_to_server(_ProxyPublic(up), server)
    rpc.add_AuditServicer_to_server(_ProxyAudit(up), server)
    pdir = net.dir / "internet-1"
    creds = grpc.ssl_server_credentials(
        [((pdir / "tls.key").read_bytes(), (pdir / "tls.pem").read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield up, f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


@pytest.mark.parametrize("mode", ["fork", "bend", "view"])
def test_replica_fed_a_forked_log_halts_and_keeps_its_verified_state(
    net: LocalNet, tmp_path: Path, mode: str
) -> None:
    net.mark("carrier-1", "+8613822000001", "fraud")
    late_number = {"fork": "", "bend": "+8613822000002", "view": "+8613822000003"}[mode]
    net.wait_converged(timeout=30)
    node = net.public("carrier-1")
    with proxy(net, "carrier-1") as (up, address), replicas(net, tmp_path, address) as (rep,):
        size = wait_for(lambda: node.GetLogCheckpoint(pb.GetLogCheckpointRequest(),
                                                      timeout=5).size, what="a log checkpoint")
        wait_for(lambda: rep.status().logs[0].verified_size >= size
                 and rep.health("markex.v1.Replica") == SERVING, what="the replica following")
        before = view_note(rep.public)
        up.bend_from = rep.status().logs[0].verified_size
        up.vector = checkpoint_of(before).vector
        up.mode = mode
        if mode in ("bend", "view"):
            net.mark("carrier-1", late_number, "fraud")  # new entries, bent or misviewed
        st = wait_for(lambda: (s := rep.status()).state == "halted" and s, what="halted")
        assert rep.health("markex.v1.Replica") == NOT_SERVING
        if mode != "view":
            assert rep.health("") == SERVING  # it still serves what it verified
        assert st.reason.startswith(address) and (st.findings or mode == "view")
        if mode == "fork":
            # Two checkpoints of one size, both signed by carrier-1: proven.
            assert any("fork" in line for line in st.findings)
            assert "carrier-1" in verify_evidence(json.loads(st.evidence[0]), net.consortium)
        elif mode == "bend":
            assert any("signature" in line or "root" in line for line in st.findings)
        else:
            # The records were verified and applied, the root compared: refused,
            # and the view rebuilt to the note it served before.
            assert "ViewRefused" in st.reason
            wait_for(lambda: rep.health("") == SERVING, what="the view restored")
        # Its last verified state: the same checkpoint, answers that verify.
        assert same_view(view_note(rep.public), before)
        got = verified(rep.public, net, "+8613822000001")
        assert got["verified"] and got["category"] == "fraud"
        if mode in ("bend", "view"):
            time.sleep(1)  # rounds would have applied it by now, had it not stopped
            late = verified(rep.public, net, late_number)
            assert late["category"] is None, (late, rep.stderr_path.read_text()[-3000:])
        log = rep.stderr_path.read_text()
        assert '"replica-halted"' in log or "replica-halted" in log


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--follow", "", "--listen", "127.0.0.1:0"], "--follow"),
        (["--follow", "carrier-1,carrier-1", "--listen", "127.0.0.1:0"], "twice"),
        (["--follow", "nobody", "--listen", "127.0.0.1:0"], "nobody"),
        (["--follow", "auditor-1", "--listen", "127.0.0.1:0"], "runs no node"),
        (["--follow", "127.0.0.1:99999999", "--listen", "127.0.0.1:0"], "65535"),
        (["--follow", "127.0.0.1:0", "--listen", "127.0.0.1:0"], "65535"),
        (["--follow", "carrier-1", "--listen", "nowhere"], "--listen"),
        (["--follow", "carrier-1", "--listen", "127.0.0.1:0", "--interval", "0"], "--interval"),
        (["--follow", "carrier-1", "--listen", "127.0.0.1:0", "--log-level", "loud"], "loud"),
    ],
)
def test_bad_arguments_get_a_clean_error(
    net: LocalNet, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    code = main(["replica", "run", "--consortium", str(net.dir), "--as", "carrier-1",
                 "--data-dir", str(tmp_path / "r"), *extra])
    err = capsys.readouterr().err
    assert code != 0 and says in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing opened


def test_unknown_participant_and_port_zero_without_data_dir(
    net: LocalNet, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replica", "run", "--consortium", str(net.dir), "--as", "nobody",
                 "--follow", "carrier-1", "--listen", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert code != 0 and "nobody" in err and "Traceback" not in err
    code = main(["replica", "run", "--consortium", str(net.dir), "--as", "carrier-1",
                 "--follow", "carrier-1", "--listen", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert code != 0 and "--data-dir" in err and "Traceback" not in err



def test_a_restarted_replica_resumes_from_its_own_store(net: LocalNet, tmp_path: Path) -> None:
    node = net.public("carrier-1")
    net.mark("carrier-1", "+8613833000001", "fraud")
    with replicas(net, tmp_path, "carrier-1") as (rep,):
        wait_for(lambda: verified(rep.public, net, "+8613833000001")["category"] == "fraud",
                 what="the first mark at the replica")
        assert rep.status().logs[0].resumed_size == 0  # a new store: audited from entry 0
        audited = wait_for(lambda: rep.status().logs[0].verified_size, what="a verified size")
    net.mark("internet-1", "+8613833000002", "fraud")
    # The same --data-dir: the view, the log's audit and the note served are
    # read from it, so the log is audited from where it was left, not again.
    with replicas(net, tmp_path, "carrier-1") as (rep,):
        first = rep.status()
        assert first.logs[0].resumed_size >= audited
        assert first.view_checkpoint  # a note served (the stored one, or a round's)
        wait_for(lambda: same_view(view_note(rep.public), view_note(node))
                 and verified(rep.public, net, "+8613833000002")["category"] == "fraud",
                 what="the restarted replica at the node's root")
        assert verified(rep.public, net, "+8613833000001")["verified"]


def test_watch_view_from_a_replica_reaches_the_nodes_root(net: LocalNet, tmp_path: Path) -> None:
    from ledger.watch import WatchCopy
    from node.watchcli import watch

    node = net.public("carrier-1")
    net.mark("carrier-1", "+8613844000001", "fraud")
    with replicas(net, tmp_path, "carrier-1") as (rep,):
        wait_for(lambda: verified(rep.public, net, "+8613844000001")["category"] == "fraud",
                 what="the mark at the replica")
        copy = WatchCopy(net.consortium, "carrier-1")  # pinned to the node, not the replica
        assert watch(rep.public, copy, None, False, 1) == 1  # a snapshot, verified
        assert copy.holds("+8613844000001")
        net.mark("internet-1", "+8613844000002", "fraud")
        # Resumed from the copy's checkpoint (a delta) until it holds the new mark.
        wait_for(lambda: watch(rep.public, copy, None, False, 1)
                 and copy.holds("+8613844000002"), what="the delta with the new mark")
        # No record after it: the copy's checkpoint is the node's view, root and all.
        assert copy.checkpoint is not None and copy.root() == copy.checkpoint.root
        wait_for(lambda: (checkpoint_of(view_note(node)).vector, checkpoint_of(
            view_note(node)).root) == (copy.checkpoint.vector, copy.root()),
            what="the copy at the node's root")


# ------------------------------------------------------------------ the pure follower


def _feed(issuer: str, numbers: list[str], t0: int = 1_790_000_000_000) -> list[Any]:
    from ledger.record import Mark, Record
    from tests.conftest import KEYS, NAME

    out: list[Any] = []
    prev = b""
    for i, n in enumerate(numbers):
        r = Record.issue(KEYS[issuer], issuer, i + 1, prev, t0 + i,
                         Mark(n, "fraud", 60, 1, t0 + i), consortium=NAME)
        out.append(r)
        prev = r.id
    return out


def test_view_follower_moves_only_to_a_checkpoint_the_records_give() -> None:
    from ledger.errors import OutOfOrder
    from ledger.follow import ViewFollower, ViewRefused
    from tests.conftest import make_consortium

    cons = make_consortium()
    c1 = _feed("carrier-1", ["+8613800000001", "+8613800000002", "+8613800000003"])
    c2 = _feed("carrier-2", ["+8613000000001"])
    follower = ViewFollower(V.NationalView(cons))
    assert follower.add([r.envelope for r in c1 + c2]) == 4
    target = V.resolve(c1[:2] + c2, cons).checkpoint("o", 1)
    assert follower.covers(target)
    assert follower.advance(target) == {"+8613800000001", "+8613800000002", "+8613000000001"}
    assert follower.matches(target) and list(follower.pending) == [("carrier-1", 3)]
    # Back on a feed, or beyond what was verified: not covered, nothing applied.
    back = V.resolve(c1[:1] + c2, cons).checkpoint("o", 2)
    ahead = replace(target, vector=(("carrier-1", 4), ("carrier-2", 1)))
    assert not follower.covers(back) and not follower.covers(ahead)
    with pytest.raises(OutOfOrder):
        follower.advance(ahead)
    assert follower.matches(target)
    # The next vector with another root than its records give: refused, said with both roots.
    wrong = replace(V.resolve(c1 + c2, cons).checkpoint("o", 3), root=bytes(32))
    with pytest.raises(ViewRefused, match="root"):
        follower.advance(wrong)
    # An envelope applied already is not kept again.
    assert follower.add([c1[0].envelope]) == 0


def test_two_records_at_one_seq_from_two_logs_are_an_equivocation() -> None:
    from ledger.errors import Equivocation
    from ledger.follow import ViewFollower
    from tests.conftest import make_consortium

    follower = ViewFollower(V.NationalView(make_consortium()))
    a = _feed("carrier-1", ["+8613800000001"])
    b = _feed("carrier-1", ["+8613800000009"])  # seq 1 again, another record
    follower.add([a[0].envelope])
    with pytest.raises(Equivocation, match="seq 1"):
        follower.add([b[0].envelope])


def test_a_replica_whose_node_does_not_answer_serves_nothing_and_says_why(
    net: LocalNet, tmp_path: Path
) -> None:
    from node.localnet import free_port_block

    nobody = f"127.0.0.1:{free_port_block(1, 40000)}"
    with replicas(net, tmp_path, nobody) as (rep,):
        st = wait_for(lambda: (s := rep.status()).logs[0].error and s, what="an error")
        assert st.state == "syncing" and not st.view_checkpoint
        assert rep.health("") == NOT_SERVING and rep.health("markex.v1.Replica") == NOT_SERVING
        with pytest.raises(grpc.RpcError) as e:
            view_note(rep.public)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_stored_following_state_that_does_not_verify_is_dropped(
        tmp_path: Path, consortium: Any) -> None:
    """node/replicastate.py: an audit state that is not JSON, is of another
    version, or whose checkpoint does not verify is dropped (that log is
    audited from the start); waiting records round-trip as they were written."""
    from ledger.follow import FollowedLog
    from ledger.store import Store
    from node import replicastate

    with Store(tmp_path / "s") as store:
        logs = [FollowedLog(n, "", None, consortium)  # type: ignore[arg-type]
                for n in ("carrier-1", "carrier-2", "institute")]
        store.put("meta", replicastate.AUDIT_PREFIX + b"carrier-1", b"not json")
        store.put("meta", replicastate.AUDIT_PREFIX + b"carrier-2", b'{"version": 99}')
        bent = {"version": 1, "consortium": consortium.name, "log": "institute", "size": 1,
                "root": "AA==", "note": "x\n\n— forged AAAA\n", "frontier": [], "heads": {}}
        store.put("meta", replicastate.AUDIT_PREFIX + b"institute", json.dumps(bent).encode())
        replicastate.load_audits(store, consortium, logs)
        assert [f.state for f in logs] == [None, None, None]
        assert [f.log for f in logs] == ["", "", ""]

        recs = _feed("carrier-1", ["+8613833000101", "+8613833000102"])
        store.put("viewchanged", b"+8613833000101", b"")  # the view's journal, unread here
        replicastate.save(store, logs, recs, "a note\n", {"carrier-1": 7})
        assert store.get("viewchanged", b"+8613833000101") is None
        assert replicastate.load_pending(store) == [r.envelope for r in recs]
        assert replicastate.load_note(store) == "a note\n"
        # the following stands on a view at that vector: one behind it drops it all
        assert replicastate.still_holds(store, {"carrier-1": 7, "institute": 1})
        assert not replicastate.still_holds(store, {"carrier-1": 6})
        assert not replicastate.still_holds(store, {})
        from node.replica import Replica
        Replica(consortium, store, []).stop()  # its view is empty: behind {"carrier-1": 7}
        assert replicastate.load_pending(store) == [] and replicastate.load_note(store) is None
        assert replicastate.still_holds(store, {})


def test_a_stored_audit_of_another_log_is_dropped(net: LocalNet, tmp_path: Path) -> None:
    """A stored audit that verifies, but is of another node's log than the
    one it is stored for (--follow changed), is dropped: that log is audited
    from the start instead of against the wrong origin."""
    from ledger.audit import audit_source
    from ledger.follow import FollowedLog
    from ledger.store import Store
    from node import replicastate
    from node.replica import tls_source

    src = tls_source(net.dir, net.consortium, "carrier-1", "carrier-1")
    _report, state = audit_source(src, net.consortium, "carrier-1", None, view=False, workers=1)
    assert state is not None and state.log == "carrier-1"
    with Store(tmp_path / "s") as store:
        store.put("meta", replicastate.AUDIT_PREFIX + b"internet-1",
                  json.dumps(state.to_json()).encode())
        store.put("meta", replicastate.AUDIT_PREFIX + b"carrier-1",
                  json.dumps(state.to_json()).encode())
        logs = [FollowedLog(n, "", src, net.consortium) for n in ("internet-1", "carrier-1")]
        replicastate.load_audits(store, net.consortium, logs)
        assert logs[0].state is None and logs[0].log == ""
        assert logs[1].state is not None and logs[1].size == state.size


class _Ctx:
    """A servicer context from one caller; `abort` raises as gRPC's does."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


def test_a_replica_charges_a_lookup_batch_per_number_as_a_node_does() -> None:
    """A replica's public port spends a caller's rate per number of a batch
    (one unit per numbers_per_unit), as the node's port does: a flood of
    batches is refused past the burst, and a batch past the bound is refused
    before it costs anything."""
    from node.limits import PublicLimits
    from node.replica import ReplicaPublic
    from node.viewkeeper import MAX_LOOKUP_BATCH, ViewReads

    class Reads:
        check_batch = staticmethod(ViewReads.check_batch)
        asked: list[int] = []

        def lookup_batch(self, numbers: list[str], with_proofs: bool) -> pb.LookupBatchResponse:
            self.asked.append(len(numbers))
            return pb.LookupBatchResponse()

    reads = Reads()
    public = ReplicaPublic(reads, PublicLimits(rate=0.001, burst=5.0, numbers_per_unit=100))  # type: ignore[arg-type]
    ctx = _Ctx()
    too_many = pb.LookupBatchRequest(numbers=["+8613800000000"] * (MAX_LOOKUP_BATCH + 1))
    with pytest.raises(_Aborted, match="at most 1000 numbers"):
        public.LookupBatch(too_many, ctx)
    batch = pb.LookupBatchRequest(numbers=[f"+86138{i:08d}" for i in range(200)])
    public.LookupBatch(batch, ctx)      # 2 of the 5 units
    public.LookupBatch(batch, ctx)      # 4
    with pytest.raises(_Aborted) as e:
        public.LookupBatch(batch, ctx)  # 6 > 5: refused
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reads.asked == [200, 200]
