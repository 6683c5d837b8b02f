"""propagation_floor_12: what this machine's stack carries without the node.

`propagation_p99_12` (bench/exchange_bench.py) does not meet its target on
two cores. This benchmark asks whether the stack itself could: twelve
processes of the same Python, grpcio (its sync server, as the nodes),
cryptography, rocksdict and mutual TLS, each doing for a record only the work
no node can skip, under the same load (RATE marks a second for SECONDS,
issued in turn at three of them). What each process does:

- `Issue` (a unary call, as Admin.IssueMark): the origin signs a mark record
  of the node's own format (the same protobuf bytes and signing context as
  Record.issue) and answers once its writer has written it, synced;
- its writer then queues the record for one push thread per peer, each
  feeding one client stream (`Push`, the request-iterator pattern of
  node/replication.py), batching what waits;
- a receiver's Push handler hands each message to its writer, which parses
  the envelope and its body (the C protobuf parser), checks the Ed25519
  signature against the origin's key, takes the record id (SHA-256) and
  writes the group in one synced rocksdict write.

There is no view, no checkpoint, no cosignature, no anti-entropy and no
polling: what is left is the floor of this stack for the load, not a node.
The latency is from the return of `Issue` to the synced write at the last of
the other processes (no poll's delay: the node benchmark's figure is an upper
bound from polls every 50 ms). It is reported as a latency against the same
1 s target, with the processes' CPU in `how`: the distance between this and
`propagation_p99_12`, run one after the other, is what the node's own work
costs (docs/deploy.md, "The sixteenth session").

`python -m bench.floor_bench [SECONDS [RATE [PROCESSES]]]` prints JSON; the
server side is `python -m bench.floor_bench --serve DIR INDEX COUNT`.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from bench import ingest, report
from bench.exchange_bench import ISSUING_NODES, cpu_seconds, mark_number, percentile
from keys.tls import make_ca, make_node_cert, participant_dns_name
from ledger.record import record_context, record_id
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb

TARGET_S = 1.0
ORIGINS = len(ISSUING_NODES)  # the node benchmark's three issuing nodes
CONSORTIUM = "markex-floor"
HELD_TIMEOUT_S = 120.0
IDLE_S = 3.0
REPO = Path(__file__).resolve().parent.parent
_RECORD_TIME = struct.Struct(">d")  # a record's id (32 bytes) then this: its write time


def _pid(i: int) -> str:
    return f"floor-{i}"


def _seed(i: int) -> bytes:
    return hashlib.sha256(b"markex floor benchmark key %d" % i).digest()


class Floor:
    """One process of the floor mesh: the server, the writer and, at an
    origin, the push threads (see the module doc)."""

    def __init__(self, index: int, count: int, certs: Path) -> None:
        from rocksdict import Options, Rdict, WriteBatch, WriteOptions

        self.index, self.count = index, count
        self._batch = WriteBatch
        self._db = Rdict(str(certs / f"db-{index}"), Options())
        self._synced = WriteOptions()
        self._synced.sync = True
        keys = [Ed25519PrivateKey.from_private_bytes(_seed(k)) for k in range(ORIGINS)]
        self._verifiers = {_pid(k): key.public_key() for k, key in enumerate(keys)}
        self._key = keys[index] if index < ORIGINS else None
        self._context = record_context(CONSORTIUM)
        self._seq, self._prev = 0, b""
        self._issue_lock = threading.Lock()
        self._q: queue.Queue[tuple[list[bytes], threading.Event | None]] = queue.Queue()
        self._links: dict[int, queue.Queue[list[bytes]]] = {}
        self.times: dict[bytes, float] = {}  # record id: when the writer had it synced
        self.refused = 0  # envelopes that did not parse or whose signature did not check
        self._ca = (certs / "ca.pem").read_bytes()
        self._key_pem = (certs / f"{index}.key").read_bytes()
        self._cert_pem = (certs / f"{index}.pem").read_bytes()

    # ------------------------------------------------------------ writer
    def _writer(self) -> None:
        while True:
            group = [self._q.get()]
            while True:
                try:
                    group.append(self._q.get_nowait())
                except queue.Empty:
                    break
            wb, held, own = self._batch(), [], []
            for envelopes, issued in group:
                for env in envelopes:
                    rid = self._check(env)
                    if rid is None:
                        self.refused += 1
                        continue
                    wb.put(rid, env)
                    (own if issued is not None else held).append((rid, env))
            self._db.write(wb, self._synced)
            now = time.time()
            for rid, _env in held:
                self.times[rid] = now
            for _envelopes, issued in group:
                if issued is not None:
                    issued.set()
            if own:
                envelopes = [env for _rid, env in own]  # the links only read it
                for q in self._links.values():
                    q.put(envelopes)

    def _check(self, env: bytes) -> bytes | None:
        try:
            signed = rpb.SignedRecord.FromString(env)
            issuer = rpb.Record.FromString(signed.body).issuer
        except DecodeError:
            return None
        verifier = self._verifiers.get(issuer)
        if verifier is None:
            return None
        try:
            verifier.verify(signed.signature, self._context + signed.body)
        except InvalidSignature:
            return None
        return record_id(env)

    # ------------------------------------------------------------ calls
    def issue(self, _req: pb.RecordBatch, ctx: grpc.ServicerContext) -> pb.RecordBatch:
        if self._key is None:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION,
                      f"{_pid(self.index)} issues nothing: only the first {ORIGINS} do")
        with self._issue_lock:  # one feed: seq and prev in order
            self._seq += 1
            body = rpb.Record(
                issuer=_pid(self.index), seq=self._seq, prev_id=self._prev,
                issued_at_ms=time.time_ns() // 1_000_000,
                mark=rpb.Mark(number=mark_number(self.index * 10**7 + self._seq),
                              category="fraud", score=80, reports=1,
                              observed_at_ms=time.time_ns() // 1_000_000),
            ).SerializeToString()
            env = rpb.SignedRecord(
                body=body, signature=self._key.sign(self._context + body)
            ).SerializeToString()
            rid = self._prev = record_id(env)
            written = threading.Event()
            self._q.put(([env], written))
        written.wait()
        return pb.RecordBatch(envelopes=[rid])

    def push(self, batches: Any, _ctx: grpc.ServicerContext) -> pb.PushAck:
        n = 0
        for batch in batches:
            self._q.put((list(batch.envelopes), None))
            n += len(batch.envelopes)
        return pb.PushAck(accepted=n)

    def held(self, _req: pb.RecordBatch, _ctx: grpc.ServicerContext) -> pb.RecordBatch:
        return pb.RecordBatch(envelopes=[struct.pack(">QQ", len(self.times), self.refused)])

    def report_times(self, _req: pb.RecordBatch, _ctx: grpc.ServicerContext) -> pb.RecordBatch:
        return pb.RecordBatch(
            envelopes=[rid + _RECORD_TIME.pack(t) for rid, t in list(self.times.items())]
        )

    # ------------------------------------------------------------ links
    def _link(self, peer: int, port: int) -> None:
        creds = grpc.ssl_channel_credentials(self._ca, self._key_pem, self._cert_pem)
        channel = grpc.secure_channel(
            f"127.0.0.1:{port}", creds,
            options=[("grpc.ssl_target_name_override", participant_dns_name(_pid(peer)))],
        )
        call = channel.stream_unary(
            "/floor/Push", request_serializer=pb.RecordBatch.SerializeToString,
            response_deserializer=pb.PushAck.FromString,
        )
        q = self._links[peer]

        def batches() -> Any:
            while True:
                out = list(q.get())
                while True:
                    try:
                        out.extend(q.get_nowait())
                    except queue.Empty:
                        break
                yield pb.RecordBatch(envelopes=out)

        call(batches())

    def serve(self) -> None:
        """Listen, say the port on stdout, read every process's port from
        stdin, open the links (at an origin) and serve until killed."""
        methods = {
            "Issue": grpc.unary_unary_rpc_method_handler(
                self.issue, pb.RecordBatch.FromString, pb.RecordBatch.SerializeToString),
            "Push": grpc.stream_unary_rpc_method_handler(
                self.push, pb.RecordBatch.FromString, pb.PushAck.SerializeToString),
            "Held": grpc.unary_unary_rpc_method_handler(
                self.held, pb.RecordBatch.FromString, pb.RecordBatch.SerializeToString),
            "Times": grpc.unary_unary_rpc_method_handler(
                self.report_times, pb.RecordBatch.FromString, pb.RecordBatch.SerializeToString),
        }
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4 * self.count + 8))
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("floor", methods)])
        creds = grpc.ssl_server_credentials(
            [(self._key_pem, self._cert_pem)], root_certificates=self._ca,
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        threading.Thread(target=self._writer, name="writer", daemon=True).start()
        print(port, flush=True)
        ports = [int(p) for p in sys.stdin.readline().split()]
        if self._key is not None:
            for peer, p in enumerate(ports):
                if peer != self.index:
                    self._links[peer] = queue.Queue()
                    threading.Thread(target=self._link, args=(peer, p), daemon=True,
                                     name=f"push-{peer}").start()
        print("linked", flush=True)
        server.wait_for_termination()


# ---------------------------------------------------------------- the run
class Mesh:
    """The processes of one run, started in `folder`, stopped by `close`."""

    def __init__(self, folder: Path, count: int) -> None:
        if count <= ORIGINS:
            raise ValueError(f"the mesh needs more than its {ORIGINS} origins")
        now = datetime.now(UTC)
        ca_key, ca = make_ca("markex floor benchmark", now)
        (folder / "ca.pem").write_bytes(ca)
        for i in range(count):
            key, cert = make_node_cert(ca_key, ca, _pid(i), [], now)
            (folder / f"{i}.key").write_bytes(key)
            (folder / f"{i}.pem").write_bytes(cert)
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for i in range(count):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.floor_bench", "--serve", str(folder), str(i),
                     str(count)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO),
                ))
            ports = [int(self._line(p)) for p in self.procs]
            for p in self.procs:
                assert p.stdin is not None
                p.stdin.write(" ".join(map(str, ports)) + "\n")
                p.stdin.flush()
            for p in self.procs:
                if self._line(p) != "linked":
                    raise RuntimeError("a floor process did not open its links")
        except BaseException:
            self.close()
            raise
        creds = grpc.ssl_channel_credentials(
            ca, (folder / "0.key").read_bytes(), (folder / "0.pem").read_bytes()
        )
        self.channels = [
            grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[
                ("grpc.ssl_target_name_override", participant_dns_name(_pid(i)))])
            for i, port in enumerate(ports)
        ]
        self.issue = [c.unary_unary("/floor/Issue", pb.RecordBatch.SerializeToString,
                                    pb.RecordBatch.FromString) for c in self.channels]
        self.held = [c.unary_unary("/floor/Held", pb.RecordBatch.SerializeToString,
                                   pb.RecordBatch.FromString) for c in self.channels]
        self.times = [c.unary_unary("/floor/Times", pb.RecordBatch.SerializeToString,
                                    pb.RecordBatch.FromString) for c in self.channels]

    @staticmethod
    def _line(p: subprocess.Popen[str]) -> str:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"a floor process ended before it was ready (exit {p.poll()})")
        return line

    def counts(self, i: int) -> tuple[int, int]:
        """Records process i holds from other processes, and envelopes it refused."""
        answer = self.held[i](pb.RecordBatch(), timeout=10)
        held, refused = struct.unpack(">QQ", answer.envelopes[0])
        return held, refused

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def close(self) -> None:
        for c in getattr(self, "channels", []):
            c.close()
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()


def _issue_paced(mesh: Mesh, total: int, rate: float) -> dict[bytes, float]:
    """Issue `total` records at `rate`, in turn at the origins, without waiting
    for one to send the next; returns each record's id and return time."""
    returned: dict[bytes, float] = {}
    failed: list[str] = []
    done = threading.Semaphore(0)

    def on_done(fut: grpc.Future) -> None:
        t = time.time()
        try:
            returned[fut.result().envelopes[0]] = t
        except grpc.RpcError as e:
            failed.append(e.code().name)
        done.release()

    start = time.time() + 0.05
    for i in range(total):
        pause = start + i / rate - time.time()
        if pause > 0:
            time.sleep(pause)
        mesh.issue[i % ORIGINS].future(pb.RecordBatch(), timeout=60).add_done_callback(on_done)
    for _ in range(total):
        done.acquire()
    if failed:
        raise RuntimeError(f"{len(failed)} issues failed: {sorted(set(failed))}")
    return returned


def _wait_held(mesh: Mesh, want: list[int]) -> None:
    deadline = time.monotonic() + HELD_TIMEOUT_S
    while True:
        counts = [mesh.counts(i)[0] for i in range(len(want))]
        if all(c >= w for c, w in zip(counts, want, strict=True)):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every record reached every process: {counts} of {want}")
        time.sleep(0.05)


def run_floor(seconds: float, rate: float, count: int) -> dict[str, Any]:
    """One run (see the module doc): the p99 and what the processes used."""
    total = max(ORIGINS, int(seconds * rate))
    with ingest.scratch_dir() as d:
        mesh = Mesh(d, count)
        try:
            warm = _issue_paced(mesh, ORIGINS, 10.0)  # every stream opened
            _wait_held(mesh, [ORIGINS - 1 if i < ORIGINS else ORIGINS for i in range(count)])
            idle0, t0 = mesh.cpu(), time.perf_counter()
            time.sleep(IDLE_S)
            idle = (mesh.cpu() - idle0) / (time.perf_counter() - t0)
            cpu0, t0 = mesh.cpu(), time.perf_counter()
            returned = _issue_paced(mesh, total, rate)
            # Everything but its own: an origin issued one warm-up record and every
            # ORIGINS-th of the run's, from its index on.
            own = [1 + (total - i + ORIGINS - 1) // ORIGINS if i < ORIGINS else 0
                   for i in range(count)]
            want = [ORIGINS + total - own[i] for i in range(count)]
            _wait_held(mesh, want)
            wall, used = time.perf_counter() - t0, mesh.cpu() - cpu0
            last: dict[bytes, float] = {}
            for i in range(count):
                for item in mesh.times[i](pb.RecordBatch(), timeout=30).envelopes:
                    rid, (t,) = item[:32], _RECORD_TIME.unpack(item[32:])
                    last[rid] = max(last.get(rid, t), t)
            refused = sum(mesh.counts(i)[1] for i in range(count))
        finally:
            mesh.close()
    lat = sorted(last[rid] - t for rid, t in returned.items() if rid not in warm)
    return {
        "p99": percentile(lat, 99), "p50": percentile(lat, 50), "max": lat[-1],
        "records": total, "cpu_s": used, "wall_s": wall, "idle_cores": idle,
        "refused": refused,
    }


def bench_propagation_floor(
    seconds: float = 20.0, rate: float = 200.0, processes: int = 12
) -> dict[str, Any]:
    r = run_floor(seconds, rate, processes)
    n = r["records"]
    return report.latency(r["p99"], "s", TARGET_S, (
        f"p99 {r['p99'] * 1000:.0f} ms, p50 {r['p50'] * 1000:.0f} ms, max {r['max'] * 1000:.0f} ms "
        f"from the return of Issue until the synced write at the last of {processes - 1} other "
        f"processes; {n} marks at {rate:.0f}/s for {seconds:.0f} s, in turn at {ORIGINS} of "
        f"{processes} processes on loopback, mutual TLS; each process only signs or checks, "
        f"hashes and writes a record synced and pushes its own on one stream a peer (no view, "
        f"checkpoints, cosignatures, anti-entropy or polls: bench/floor_bench.py); they used "
        f"{r['cpu_s']:.0f} CPU-s in the {r['wall_s']:.0f} s from the first issue until every "
        f"process held the last ({r['cpu_s'] / r['wall_s']:.1f} of {os.cpu_count()} cores; "
        f"{r['cpu_s'] / n * 1000:.1f} CPU-ms per record over all processes; idle "
        f"{r['idle_cores']:.2f} cores)"
    ))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        Floor(int(argv[2]), int(argv[3]), Path(argv[1])).serve()
        return
    args = [float(a) for a in argv]
    seconds, rate = (args + [20.0, 200.0][len(args):])[:2]
    processes = int(args[2]) if len(args) > 2 else 12
    print(json.dumps(bench_propagation_floor(seconds, rate, processes), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
