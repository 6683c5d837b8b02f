"""The node's public port on every core: N worker processes share the port
(SO_REUSEPORT: `grpc.so_reuseport` 1 on every listener, the kernel spreads the
connections) and each reads the node's RocksDB as a secondary instance
(node/readview.py). `markex node run --workers N`; N = 1 is the single
process of before.

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

    python -m node.workers --config NODE_TOML --port P --secondary DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keys.layout import NodeConfig, load_consortium
from keys.signing import read_private
from ledger.errors import StorageFailure
from ledger.store import Store
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.limits import ClientTable, PublicGate, PublicLimits
from node.logkeeper import LogKeeper
from node.logs import event
from node.readview import ReadView
from node.services import PublicService
from node.status import DecodeGuard
from node.viewkeeper import LOG_NOTE_KEY

log = logging.getLogger("markex.workers")

REFRESH_INTERVAL = 0.05  # s between catch-ups: a mark reaches the workers within ~this
BEHIND_RETRY = 0.003     # s before catching up again when the node's note is a moment late
RESTART_DELAY = 0.5      # s before a dead worker is started again
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
            self.store.put("checkpoints", LOG_NOTE_KEY, text.encode(), sync=False)
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
                 log_file: Path | None = None) -> None:
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
        argv = [sys.executable, "-m", "node.workers", "--config", str(self.config),
                "--port", str(self.port), "--secondary", str(secondary)]
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
        )

    def _await_ready(self, i: int, proc: subprocess.Popen, deadline: float) -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the worker prints one line once it serves
        if not line or time.monotonic() > deadline:
            self.stop()
            raise StorageFailure(f"public worker {i} did not start (exit {proc.poll()})")

    def _watch(self) -> None:
        """Restart a worker that died, until stop."""
        while not self._stop.wait(0.2):
            for i in range(self.count):
                with self._lock:
                    proc = self._procs[i]
                    if self._stop.is_set() or proc is None or proc.poll() is None:
                        continue
                    code = proc.returncode
                event(log, logging.WARNING, "worker-died", worker=i, pid=proc.pid, exit=code)
                if self._stop.wait(RESTART_DELAY):
                    return
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


def _drain(proc: subprocess.Popen) -> None:
    if proc.stdout is not None:
        with contextlib.suppress(ValueError, OSError):
            proc.stdout.readline()


# ====================================================================== worker side


class Worker:
    """One worker: the secondary store, its ReadView, the Public service on
    the shared port, and the timer that catches up."""

    def __init__(self, cfg: NodeConfig, port: int, secondary: Path,
                 limits: PublicLimits | None = None) -> None:
        self.cfg = cfg
        self.consortium = load_consortium(cfg)
        self.store = Store(cfg.data_dir, secondary=secondary)
        self.view = ReadView(self.store, self.consortium, cfg.participant)
        self.limits = limits or PublicLimits()
        self.gate = PublicGate(ClientTable(self.limits))
        self.service = PublicService(
            self.view.log,  # type: ignore[arg-type]  # the ledger's reads PublicService uses
            self.view.log,  # type: ignore[arg-type]  # and the LogKeeper's checkpoint_note
            self.view,  # type: ignore[arg-type]  # the ViewKeeper's reads
            self.gate,
            self.limits,
        )
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
            wait = REFRESH_INTERVAL if signed else BEHIND_RETRY
            self._set_health()

    def _set_health(self) -> None:
        s = health_pb2.HealthCheckResponse
        status = s.SERVING if self.view.signed else s.NOT_SERVING
        for name in ("", "markex.v1.Public"):
            self.health.set(name, status)

    def stop(self, grace: float = 2.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait(grace + 1)
        self.store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m node.workers")
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--secondary", required=True, type=Path)
    args = ap.parse_args(argv)
    from node import logs

    cfg = NodeConfig.load(args.config)
    logs.setup(f"{cfg.participant}/worker", logs.parse_level(cfg.log_level))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    worker = Worker(cfg, args.port, args.secondary).start()
    print(json.dumps({"worker": os.getpid(), "port": args.port}), flush=True)
    event(log, logging.INFO, "worker-started", pid=os.getpid(), port=args.port)
    parent = os.getppid()
    # A primary killed outright sends no SIGTERM: a worker whose parent is gone stops.
    while not done.wait(0.5) and os.getppid() == parent:
        pass
    worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
