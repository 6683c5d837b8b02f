"""A whole consortium on one machine: every node a real process on loopback.
Used by `markex demo`, the integration tests and the benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc

from keys.consortium import Consortium
from keys.layout import init_consortium
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client


def free_port_block(n: int, start: int = 21000) -> int:
    """A base port with n free consecutive loopback ports."""
    # Below the kernel's ephemeral ports (32768 and up), and apart per process.
    base = start + (os.getpid() % 250) * 40
    for _ in range(400):
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            base += n + 7
            if base + n > 32000:
                base = start
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free loopback ports")


@dataclass
class NodeProcess:
    pid: str
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    ports: dict = field(default_factory=dict)


class LocalNet:
    def __init__(
        self,
        directory: Path,
        carriers: int = 3,
        internet: int = 2,
        sync_interval: float | None = None,
        complaints: int = 0,
        regulators: int = 0,
        workers: int = 1,
    ) -> None:
        self.dir = Path(directory)
        n = 1 + carriers + internet + complaints + regulators
        base = free_port_block(4 * n)  # two gRPC ports, a tiles and a metrics port per node
        self.consortium: Consortium = init_consortium(
            self.dir, carriers=carriers, internet=internet, base_port=base, now=datetime.now(UTC),
            complaints=complaints, regulators=regulators,
        )
        # Nodes only: an auditor holds a certificate but runs no node.
        self.ids = [p.id for p in self.consortium.participants if p.member_endpoint]
        self.auditor = next(p.id for p in self.consortium.participants if p.role == "auditor")
        self.nodes = {pid: NodeProcess(pid) for pid in self.ids}
        self.sync_interval = sync_interval
        self.workers = workers  # `--workers` of each node: 1, one process (not the cores)
        self._channels: dict[tuple[str, str], grpc.Channel] = {}

    # ------------------------------------------------------------ processes
    def start(self, pid: str, wait: bool = True, restored: bool = False,
              workers: int | None = None) -> None:
        """Start `pid`'s node process; `restored` passes `--restored`;
        `workers` its `--workers` (default: the net's)."""
        np_ = self.nodes[pid]
        if np_.proc is not None and np_.proc.poll() is None:
            return
        env = dict(os.environ)
        if self.sync_interval is not None:
            env["MARKEX_SYNC_INTERVAL"] = str(self.sync_interval)
        np_.log_path = self.dir / pid / "node.log"
        logf = open(np_.log_path, "ab")  # noqa: SIM115 - owned by the child
        np_.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node.cli",
                "node",
                "run",
                "--consortium",
                str(self.dir),
                "--as",
                pid,
                # the partition hook: isolate()/heal() write this file
                "--test-refuse-file",
                str(self.refuse_file(pid)),
                "--workers",
                str(self.workers if workers is None else workers),
                *(["--restored"] if restored else []),
            ],
            stdout=subprocess.PIPE,
            stderr=logf,
            env=env,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        logf.close()
        if wait:
            self.wait_ready(pid)

    def wait_ready(self, pid: str, timeout: float = 30) -> None:
        np_ = self.nodes[pid]
        assert np_.proc is not None and np_.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = np_.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node {pid} exited: see {np_.log_path}")
        np_.ports = json.loads(line)
        while time.monotonic() < deadline:
            try:
                self.public(pid).GetFeedHeads(pb.FeedHeadsRequest(), timeout=2)
                return
            except grpc.RpcError:
                time.sleep(0.05)
        raise RuntimeError(f"node {pid} did not answer within {timeout}s")

    def start_all(self) -> None:
        for pid in self.ids:
            self.start(pid, wait=False)
        for pid in self.ids:
            self.wait_ready(pid)

    def kill(self, pid: str) -> None:
        """SIGKILL: no clean shutdown at all."""
        p = self.nodes[pid].proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        self._drop_channels(pid)

    def terminate(self, pid: str, timeout: float = 20) -> int:
        p = self.nodes[pid].proc
        if p is None:
            return 0
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._drop_channels(pid)
        return p.returncode

    def stop_all(self) -> None:
        for pid in self.ids:
            p = self.nodes[pid].proc
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for pid in self.ids:
            self.terminate(pid)
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ------------------------------------------------------------ partitions
    def refuse_file(self, pid: str) -> Path:
        return self.dir / pid / "refuse"

    def isolate(self, pid: str) -> None:
        """Every peer refuses `pid`, and `pid` refuses every peer."""
        for other in self.ids:
            if other == pid:
                continue
            f = self.refuse_file(other)
            cur = set(f.read_text().split()) if f.exists() else set()
            f.write_text("\n".join(sorted(cur | {pid})))
        self.refuse_file(pid).write_text("\n".join(o for o in self.ids if o != pid))

    def heal(self) -> None:
        for pid in self.ids:
            f = self.refuse_file(pid)
            if f.exists():
                f.unlink()

    # ------------------------------------------------------------ clients
    def _drop_channels(self, pid: str) -> None:
        for key in [k for k in self._channels if k[1] == pid]:
            self._channels.pop(key).close()

    def public(self, pid: str) -> rpc.PublicStub:
        key = ("public", pid)
        if key not in self._channels:
            ep = self.consortium.participant(pid).public_endpoint  # type: ignore[union-attr]
            self._channels[key] = client.public_channel(self.dir, ep)
        return rpc.PublicStub(self._channels[key])

    def admin(self, pid: str, as_id: str | None = None) -> rpc.AdminStub:
        """pid's Admin API with `as_id`'s (default pid's) operator admin certificate."""
        who = as_id or pid
        key = (f"admin:{who}", pid)
        if key not in self._channels:
            ep = self.consortium.participant(pid).member_endpoint  # type: ignore[union-attr]
            self._channels[key] = client.admin_channel(self.dir, who, ep)
        return rpc.AdminStub(self._channels[key])

    def audit(self, pid: str, as_id: str | None = None) -> rpc.AuditStub:
        """pid's Audit service (raw records, evidence) as `as_id`, by default the auditor."""
        who = as_id or self.auditor
        key = (f"audit:{who}", pid)
        if key not in self._channels:
            ep = self.consortium.participant(pid).member_endpoint  # type: ignore[union-attr]
            self._channels[key] = client.member_channel(self.dir, who, ep)
        return rpc.AuditStub(self._channels[key])

    def exchange(self, pid: str, as_id: str) -> rpc.ExchangeStub:
        key = (f"exchange:{as_id}", pid)
        if key not in self._channels:
            ep = self.consortium.participant(pid).member_endpoint  # type: ignore[union-attr]
            self._channels[key] = client.member_channel(self.dir, as_id, ep)
        return rpc.ExchangeStub(self._channels[key])

    def mark(
        self,
        pid: str,
        number: str,
        category: str,
        score: int = 60,
        reports: int = 1,
        observed_at_ms: int = 0,
    ) -> pb.Issued:
        return self.admin(pid).IssueMark(
            rpb.Mark(
                number=number,
                category=category,
                score=score,
                reports=reports,
                observed_at_ms=observed_at_ms,
            ),
            timeout=30,
        )

    # ------------------------------------------------------------ state
    def heads(self, pid: str) -> dict[str, int]:
        """Per issuer, the last seq that counts (a frozen feed counts up to its freeze)."""
        r = self.public(pid).GetFeedHeads(pb.FeedHeadsRequest(), timeout=5)
        return {h.issuer: (min(h.seq, h.frozen_at) if h.frozen else h.seq) for h in r.heads}

    def log_size(self, pid: str) -> int:
        r = self.public(pid).GetFeedHeads(pb.FeedHeadsRequest(), timeout=5)
        return sum(h.seq for h in r.heads)

    def wait_converged(self, pids: list[str] | None = None, timeout: float = 60) -> float:
        """Wait until every node holds the same feed heads; returns seconds waited."""
        pids = pids or self.ids
        t0 = time.monotonic()
        while True:
            try:
                hs = [self.heads(p) for p in pids]
                if all(h == hs[0] for h in hs):
                    return time.monotonic() - t0
            except grpc.RpcError:
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(
                    f"nodes did not converge in {timeout}s: "
                    + "; ".join(f"{p}={self._safe_heads(p)}" for p in pids)
                )
            time.sleep(0.05)

    def _safe_heads(self, pid: str) -> object:
        try:
            return self.heads(pid)
        except grpc.RpcError as e:
            return e.code().name
