"""The node's public port on every core: N worker processes share the port
(SO_REUSEPORT: `grpc.so_reuseport` 1 on every listener, the kernel spreads the
connections) and each reads the node's RocksDB as two secondary instances
(node/readview.py: one is read while the other catches up, then they swap).
`markex node run --workers N`; N = 1 is the single process of before.

The primary keeps the member port, the writer and every signature: it
reserves the public port (a bound, never listening, SO_REUSEPORT socket, so
port 0 picks one port for all and nobody else takes it while workers
restart), writes the notes it serves into its store (ViewKeeper.publish,
LogNotes), starts the workers and restarts one that dies, and stops them all
at its own stop (SIGTERM, then SIGKILL after a grace).

A worker serves the Public service read-only, with the node's proofs:
Lookup, LookupBatch, GetViewCheckpoint (entries read only at the vector of the
node's note), GetLogCheckpoint (the note the node served at its last tick),
GetInclusionProof, GetConsistencyProof and GetFeedHeads (the log as of the
worker's last catch-up), plus grpc.health.v1 (SERVING once it holds a signed
state) and reflection. Each worker keeps its own per-client limits
(node/limits.py), so a client's share of the port is N times one process's.

What a worker cannot serve from its secondary it relays to the primary
(`--upstream HOST:PORT`): WatchView (the change stream needs the primary's
ViewKeeper and its change log) and GetBadList (the primary's complaint and
consent state). Those are all of Public's methods beyond the seven above. The
primary serves its full public service on an internal 127.0.0.1 listener
(`Upstream`: TLS with the node's certificate, its own gate that does not
throttle the workers: each client's limits were applied by the worker it
dialled). Relaying is trust-neutral: each answer carries its own proofs and
cosigned notes, which the client checks against the pinned keys as if it had
dialled the primary; a worker can drop or delay an answer, never forge one.

    python -m node.workers --config NODE_TOML --port P --secondary DIR
                           [--upstream HOST:PORT] [--log-level L]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from rocksdict import Cache

from keys.layout import NodeConfig, load_consortium
from keys.signing import read_private
from keys.tls import participant_dns_name
from ledger.errors import StorageFailure
from ledger.store import BLOCK_CACHE_BYTES, Store
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.limits import ClientTable, PublicGate, PublicLimits, client_of
from node.logkeeper import LogKeeper
from node.logs import event
from node.readview import Behind, ReadView
from node.services import PublicService
from node.signals import StopSignal
from node.status import DecodeGuard
from node.viewkeeper import LOG_NOTE_KEY
from node.watch import end_stream

log = logging.getLogger("markex.workers")

REFRESH_INTERVAL = 0.05  # s between catch-ups: a mark reaches the workers within ~this
BEHIND_RETRY = 0.003     # s before catching up again when the node's note is a moment late
RESTART_DELAY = 0.5      # s before a dead worker is started again
MAX_RESTART_DELAY = 30.0  # s, for a worker that keeps dying as it starts
QUICK_DEATH_S = 10.0
RELAY_RATE = 1e12  # request units/s (and burst) of a worker on its upstream: unreachable
RELAY_TIMEOUT = 30.0  # s, a relayed unary call's deadline when its client set none
START_TIMEOUT = 30.0
STOP_GRACE = 5.0


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_workers(n: int) -> int:
    """`--workers N`: 1 (the single process) up to 256; ValueError otherwise."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256:
        raise ValueError(f"--workers takes 1 to 256 processes, not {n!r}")
    return n


# ====================================================================== primary side


class LogNotes:
    """Writes the log checkpoint note the node serves now (`logs`) to the
    store when it changed: the workers' GetLogCheckpoint. Unsynced, like the
    cosigned checkpoint it often is."""

    def __init__(self, logs: LogKeeper, store: Store) -> None:
        self.logs, self.store = logs, store
        self._last: str | None = None

    def publish(self) -> None:
        text = self.logs.checkpoint_note()
        if text is not None and text != self._last:
            self.store.put("meta", LOG_NOTE_KEY, text.encode(), sync=False)
            self._last = text


def reserve_port(address: str) -> tuple[socket.socket, int]:
    """A bound, non-listening SO_REUSEPORT socket on `address` (HOST:PORT,
    port 0: a free one): it holds the port for the workers, who bind it with
    SO_REUSEPORT too, and takes no connection itself. OSError when taken."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = info[0]
    s = socket.socket(family, kind, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(sockaddr)
    except OSError:
        s.close()
        raise
    return s, s.getsockname()[1]


class WorkerPool:
    """N worker processes on the public port, each with its own secondary
    folder; a dead one is restarted after RESTART_DELAY; `stop` ends them."""

    def __init__(self, config: Path, data_dir: Path, address: str, count: int,
                 log_file: Path | None = None, upstream: str | None = None) -> None:
        self.config, self.data_dir, self.count = Path(config), Path(data_dir), check_workers(count)
        self._reserved, self.port = reserve_port(address)
        host = address.rpartition(":")[0]
        self.address = f"{host}:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="markex-workers-"))
        self._procs: list[subprocess.Popen | None] = [None] * count
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._log_file = log_file
        self.upstream = upstream  # the primary's internal public listener (Upstream)
        self._watcher: threading.Thread | None = None

    def pids(self) -> list[int]:
        """The workers' process ids now (a restarted one has a new id)."""
        with self._lock:
            return [p.pid for p in self._procs if p is not None and p.poll() is None]

    def start(self, timeout: float = START_TIMEOUT) -> WorkerPool:
        """Start every worker and wait until each answers (its ready line)."""
        with self._lock:
            for i in range(self.count):
                self._procs[i] = self._spawn(i)
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self._procs):
            assert proc is not None
            self._await_ready(i, proc, deadline)
        self._watcher = threading.Thread(target=self._watch, name="workers", daemon=True)
        self._watcher.start()
        return self

    def _spawn(self, i: int) -> subprocess.Popen:
        secondary = self._dir / str(i)
        shutil.rmtree(secondary, ignore_errors=True)
        # The workers log at the node's level (its --log-level wins over node.toml's).
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        argv = [sys.executable, "-m", "node.workers", "--config", str(self.config),
                "--port", str(self.port), "--secondary", str(secondary), "--log-level", level,
                "--parent", str(os.getpid())]
        if self.upstream is not None:
            argv += ["--upstream", self.upstream]
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
        )

    def _await_ready(self, i: int, proc: subprocess.Popen, deadline: float) -> None:
        """The worker's one line, printed once it serves; StorageFailure (and every
        worker stopped) when it exits first or is silent past `deadline`."""
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise StorageFailure(
                f"public worker {i} did not start within {START_TIMEOUT:.0f} s "
                f"(exit {proc.poll()}); see the node's log")

    def _watch(self) -> None:
        """Restart a worker that died, until stop; one that keeps dying soon
        after its start waits twice as long each time (up to MAX_RESTART_DELAY)."""
        started = [time.monotonic()] * self.count
        quick = [0] * self.count  # deaths in a row within QUICK_DEATH_S of a start
        while not self._stop.wait(0.2):
            for i in range(self.count):
                with self._lock:
                    proc = self._procs[i]
                    if self._stop.is_set() or proc is None or proc.poll() is None:
                        continue
                    code = proc.returncode
                quick[i] = quick[i] + 1 if time.monotonic() - started[i] < QUICK_DEATH_S else 0
                delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** quick[i])
                event(log, logging.WARNING, "worker-died", worker=i, pid=proc.pid, exit=code,
                      restart_in_s=delay)
                if self._stop.wait(delay):
                    return
                started[i] = time.monotonic()
                with self._lock:
                    if self._stop.is_set():
                        return
                    new = self._spawn(i)
                    self._procs[i] = new
                    self.restarts += 1
                # Its ready line is read off this thread's path: a slow start delays no other.
                threading.Thread(target=_drain, args=(new,), daemon=True).start()
                event(log, logging.INFO, "worker-restarted", worker=i, pid=new.pid)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every worker, SIGKILL those still running after `grace` s."""
        self._stop.set()
        with self._lock:
            procs = [p for p in self._procs if p is not None]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(1)
        self._reserved.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def relay_limits(base: PublicLimits) -> PublicLimits:
    """The upstream's gate: no per-client throttling. Its only clients are the
    workers (one connection each, so one "client" each on loopback), and each
    worker already applied every one of its clients' limits; a per-client
    bound here would throttle all the clients behind a worker as one. So a
    client may hold every thread (less one for reflection's stream), open as
    many watches as the port, and the rate is beyond reach (RELAY_RATE); what remains are the
    port-wide bounds (threads, queued calls, watches: the Watcher's own
    max_watches), which guard the primary, the node's writer."""
    threads = base.threads
    return PublicLimits(
        threads=threads, max_calls=base.max_calls, max_streams=1,
        max_watches=base.max_watches, client_calls=threads - 2,
        client_streams=base.max_watches, rate=RELAY_RATE, burst=RELAY_RATE,
        numbers_per_unit=base.numbers_per_unit, max_clients=base.max_clients,
    )


class Upstream:
    """The primary's full public service (a WatchingPublic) on an internal
    listener, 127.0.0.1 port 0, for its workers' relayed calls: TLS with the
    node's certificate, as the public port has, and its own gate (relay_limits)."""

    def __init__(self, service: PublicService, key: bytes, cert: bytes,
                 base: PublicLimits) -> None:
        self.service = service
        self.limits = relay_limits(base)
        self.gate = PublicGate(ClientTable(self.limits))
        self._creds = grpc.ssl_server_credentials([(key, cert)])
        self.address = ""

    def start(self) -> Upstream:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(self.limits.threads, thread_name_prefix="upstream"),
            options=[("grpc.max_receive_message_length", 4 * 1024 * 1024),
                     ("grpc.max_send_message_length", 64 * 1024 * 1024),
                     ("grpc.so_reuseport", 0)],
            interceptors=[self.gate, DecodeGuard()],
            maximum_concurrent_rpcs=self.limits.max_calls,
        )
        rpc.add_PublicServicer_to_server(self.service, self.server)
        port = self.server.add_secure_port("127.0.0.1:0", self._creds)
        if not port:
            raise StorageFailure("the workers' upstream listener did not bind 127.0.0.1")
        self.address = f"127.0.0.1:{port}"
        self.server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace).wait(grace + 1)


def _drain(proc: subprocess.Popen) -> None:
    if proc.stdout is not None:
        with contextlib.suppress(ValueError, OSError):
            proc.stdout.readline()


# ====================================================================== worker side


def _unavailable_when_behind(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A Public method that answers UNAVAILABLE while the worker is behind its node."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Behind as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"Behind: {e}")

    return wrapper


class UpstreamClient:
    """A worker's one channel to its primary's Upstream: the consortium CA as
    root and the node's participant name as the TLS target, so only the
    node's own certificate is accepted (as node/client.py dials a public port)."""

    def __init__(self, address: str, ca: bytes, participant: str) -> None:
        self.address = address
        self.channel = grpc.secure_channel(
            address, grpc.ssl_channel_credentials(ca),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                     ("grpc.ssl_target_name_override", participant_dns_name(participant))],
        )
        self.stub = rpc.PublicStub(self.channel)

    def close(self) -> None:
        self.channel.close()


def _relay_error(context: grpc.ServicerContext, e: grpc.RpcError) -> None:
    """The upstream's status, as the client would have had it from the primary."""
    code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNAVAILABLE
    details = e.details() if isinstance(e, grpc.Call) else str(e)
    context.abort(code, details or "the node's primary did not answer")


class WorkerPublicService(PublicService):
    """PublicService over a ReadView and its ReadLog (see the module doc);
    WatchView and GetBadList relayed to the primary's Upstream (None: refused
    UNIMPLEMENTED, as a worker without one cannot serve them)."""

    upstream: UpstreamClient | None = None

    GetLogCheckpoint = _unavailable_when_behind(PublicService.GetLogCheckpoint)
    GetInclusionProof = _unavailable_when_behind(PublicService.GetInclusionProof)
    GetConsistencyProof = _unavailable_when_behind(PublicService.GetConsistencyProof)
    GetFeedHeads = _unavailable_when_behind(PublicService.GetFeedHeads)
    Lookup = _unavailable_when_behind(PublicService.Lookup)
    LookupBatch = _unavailable_when_behind(PublicService.LookupBatch)
    GetViewCheckpoint = _unavailable_when_behind(PublicService.GetViewCheckpoint)

    # Relaying is trust-neutral: a bad list carries each sanction's envelope and
    # inclusion proof, a watch each delta's cosigned view checkpoint; the client
    # checks them against its pinned keys as if it had dialled the node itself.
    def _upstream(self, context: grpc.ServicerContext) -> UpstreamClient:
        if self.upstream is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this worker has no upstream to relay to")
        assert self.upstream is not None
        return self.upstream

    def GetBadList(self, request, context):  # noqa: N802
        up = self._upstream(context)
        left = context.time_remaining()
        timeout = RELAY_TIMEOUT if left is None else min(left, RELAY_TIMEOUT)
        try:
            return up.stub.GetBadList(request, timeout=timeout)
        except grpc.RpcError as e:
            _relay_error(context, e)

    def WatchView(self, request, context, send_response_callback=None):  # noqa: N802
        """Non-blocking, as the primary's: the gate counts it as a watch and it
        holds none of the port's threads; one thread per watch relays what the
        upstream yields, blocking in `send` while the client's window is full."""
        up = self._upstream(context)
        if send_response_callback is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "WatchView needs a non-blocking server")
        call = up.stub.WatchView(request)
        # The client went away (or the worker stops): the upstream call ends too.
        if not context.add_callback(call.cancel):
            call.cancel()
            return
        threading.Thread(target=self._relay_watch, args=(call, context, send_response_callback),
                         name="watch-relay", daemon=True).start()

    WatchView.experimental_non_blocking = True  # type: ignore[attr-defined]
    WatchView.experimental_thread_pool = None  # type: ignore[attr-defined]

    def _relay_watch(self, call: Any, context: grpc.ServicerContext,
                     send: Callable[[Any], None]) -> None:
        # A snapshot is billed to the client here, page by page, as the primary
        # bills it (a LookupBatch of as many numbers): the upstream's gate does not.
        per_unit = self.limits.numbers_per_unit
        client = client_of(context.peer())
        snapshot = False
        try:
            for msg in call:
                snapshot = snapshot or msg.snapshot
                if snapshot:
                    why = self.gate.table.charge(client, len(msg.entries) / per_unit,
                                                 self.gate.clock())
                    if why is not None:
                        end_stream(context, send, grpc.StatusCode.RESOURCE_EXHAUSTED, why)
                        return
                    snapshot = not msg.checkpoint  # the snapshot ends with its checkpoint
                send(msg)
        except grpc.RpcError as e:
            if not context.is_active():
                return  # the client went away (its callback cancelled the upstream)
            code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNAVAILABLE
            details = (e.details() if isinstance(e, grpc.Call) else "") or str(e)
            end_stream(context, send, code, details)  # the node's status, as the client sees it
        except Exception:
            log.exception("watch relay failed")
            end_stream(context, send, grpc.StatusCode.INTERNAL, "the relayed watch failed")
        else:
            send(None)  # the primary ended the watch (it stops): end it with OK
        finally:
            call.cancel()


class Worker:
    """One worker: the two secondary stores, its ReadView, the Public service on
    the shared port, and the timer that catches up."""

    def __init__(self, cfg: NodeConfig, port: int, secondary: Path,
                 limits: PublicLimits | None = None, upstream: str | None = None) -> None:
        self.cfg = cfg
        self.consortium = load_consortium(cfg)
        # Two copies of the store (node/readview.py): one read while the other
        # catches up; one block cache for both, as they read the same tables.
        cache = Cache(BLOCK_CACHE_BYTES)
        self.store = Store(cfg.data_dir, secondary=secondary / "a", cache=cache)
        self.spare = Store(cfg.data_dir, secondary=secondary / "b", cache=cache)
        self.view = ReadView(self.store, self.consortium, cfg.participant, spare=self.spare)
        self.limits = limits or PublicLimits()
        self.gate = PublicGate(ClientTable(self.limits))
        self.service = WorkerPublicService(
            self.view.log,  # type: ignore[arg-type]  # the ledger's reads PublicService uses
            self.view.log,  # type: ignore[arg-type]  # and the LogKeeper's checkpoint_note
            self.view,  # type: ignore[arg-type]  # the ViewKeeper's reads
            self.gate,
            self.limits,
        )
        if upstream is not None:
            self.service.upstream = UpstreamClient(upstream, cfg.ca_cert.read_bytes(),
                                                   cfg.participant)
        host = cfg.public_listen.rpartition(":")[0]
        self.address = f"{host}:{port}"
        self._stop = threading.Event()

    def start(self) -> Worker:
        self._refresh_until_signed()
        lim = self.limits
        self.server = grpc.server(
            futures.ThreadPoolExecutor(lim.threads, thread_name_prefix="public"),
            options=[
                ("grpc.max_receive_message_length", 4 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 1),  # the port is shared with the other workers
            ],
            interceptors=[self.gate, DecodeGuard()],
            maximum_concurrent_rpcs=lim.max_calls,
        )
        rpc.add_PublicServicer_to_server(self.service, self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (pb.DESCRIPTOR.services_by_name["Public"].full_name,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )
        key = read_private(self.cfg.tls_key)
        creds = grpc.ssl_server_credentials([(key, self.cfg.tls_cert.read_bytes())])
        self.server.add_secure_port(self.address, creds)
        self.server.start()
        self._set_health()
        self._timer = threading.Thread(target=self._refresh_loop, name="catch-up", daemon=True)
        self._timer.start()
        return self

    def _refresh_until_signed(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.view.refresh():
            if time.monotonic() > deadline:
                raise StorageFailure("the node has published no view checkpoint to serve")
            time.sleep(BEHIND_RETRY)

    def _refresh_loop(self) -> None:
        wait = REFRESH_INTERVAL
        while not self._stop.wait(wait):
            try:
                signed = self.view.refresh()
            except StorageFailure as e:
                event(log, logging.ERROR, "worker-catch-up-failed", error=str(e)[:300])
                signed = False
            # Behind: the node writes the note just after its view, so look again soon.
            wait = REFRESH_INTERVAL if signed and not self.view.lagging else BEHIND_RETRY
            self._set_health()

    def _set_health(self) -> None:
        s = health_pb2.HealthCheckResponse
        status = s.SERVING if self.view.signed else s.NOT_SERVING
        for name in ("", "markex.v1.Public"):
            self.health.set(name, status)

    def stop(self, grace: float = 2.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait(grace + 1)
        if self.service.upstream is not None:
            self.service.upstream.close()
        self.view.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m node.workers")
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--secondary", required=True, type=Path)
    ap.add_argument("--upstream", default=None, help="the primary's internal public listener")
    ap.add_argument("--log-level", default=None)
    ap.add_argument("--parent", type=int, default=None,
                    help="the primary's pid: the worker stops when it is no longer its parent")
    args = ap.parse_args(argv)
    # A primary killed outright sends no SIGTERM: a worker whose parent is gone
    # stops (Linux's parent-death signal, asked for before anything else; then
    # a look every 0.2 s). The parent is the pid the primary passed, not the
    # one found later: a primary killed while this worker starts would
    # otherwise be replaced by init as "the parent" and never be missed.
    parent = args.parent if args.parent is not None else os.getppid()
    _term_with_parent()
    from node import logs

    cfg = NodeConfig.load(args.config)
    logs.setup(f"{cfg.participant}/worker", logs.parse_level(args.log_level or cfg.log_level))
    stop = StopSignal()
    worker = Worker(cfg, args.port, args.secondary, upstream=args.upstream).start()
    print(json.dumps({"worker": os.getpid(), "port": args.port}), flush=True)
    event(log, logging.INFO, "worker-started", pid=os.getpid(), port=args.port)
    stop.wait(until=lambda: os.getppid() != parent)
    worker.stop(grace=2.0 if os.getppid() == parent else 0.2)
    return 0


def _term_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) where there is one (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


if __name__ == "__main__":
    sys.exit(main())
