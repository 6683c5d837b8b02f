"""Reliability soak: sustained load, SIGKILL and partitions, then proof that
nothing acknowledged was lost and every node tells the same story.

Six real node processes on loopback (`node.localnet.LocalNet`). For the set
duration:

- load: marks on random numbers issued at random nodes at a fixed total rate;
  every acknowledged (node, record id, seq) is kept;
- readers: for acknowledged records, fetch an inclusion proof from a random
  node and verify it as a client that trusts no node would: the node's
  signature on its log checkpoint, at least `cosign_quorum` member
  cosignatures, the RFC 9162 inclusion proof, and a consistency proof between
  every two checkpoints one node showed;
- chaos: random nodes are killed with SIGKILL at random moments (sometimes
  while they start) and restarted; at least `min_up` nodes stay up;
- partitions: one node's peers refuse it (and it refuses them) for random
  intervals; the last partition lasts until the load ends.

Then: the last heal, the time until all nodes hold the same feed heads, every
acknowledged record on every node, every node's log audited, every view root
equal, a sample of lookups verified against cosigned view checkpoints.

    python -m tests.soak [--seconds S] [--rate R] [--kills K] [--partitions P] [--seed N]

Defaults come from SOAK_SECONDS (300), SOAK_RATE (50), SOAK_KILLS (100),
SOAK_PARTITIONS (8), SOAK_SEED (random, printed). The exit status is 0 only
when every check held. A failed run keeps its directory (node logs in
<dir>/<participant>/node.log).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from keys.consortium import Consortium
from ledger import merkle, note
from ledger.errors import LedgerError
from ledger.log import log_origin, verify_envelopes
from ledger.record import Record, record_id
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.localnet import LocalNet
from node.lookup import open_cosigned_view, verify_answer
from node.witness import witness_name

Out = Callable[[str], None]

# A node that is down, starting or partitioned answers with these; they are retried.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
RPC_TIMEOUT = 5.0
STARTUP_KILL_CHANCE = 0.2
MOBILE_PREFIXES = ("130", "133", "135", "136", "137", "138", "139", "150", "158", "186", "188")
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # A restarted node must be reachable again at once, not after a long backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


# ---------------------------------------------------------------- shared state


@dataclass(frozen=True)
class Ack:
    """An acknowledged record: the node that issued it, its id, its feed seq."""

    node: str
    rid: bytes
    seq: int
    number: str


@dataclass
class Tally:
    """Counters and failures shared by every thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def get(self, name: str) -> int:
        with self.lock:
            return self.counts.get(name, 0)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failure_count += 1
            if len(self.failures) < 100:
                self.failures.append(what)


class Channels:
    """Thread-safe channels to every node, by endpoint (fixed across restarts)."""

    def __init__(self, net: LocalNet) -> None:
        self.dir = net.dir
        self.cons = net.consortium
        self._lock = threading.Lock()
        self._ch: dict[tuple[str, str], grpc.Channel] = {}
        self._ca = (self.dir / "ca" / "ca.pem").read_bytes()
        self.auditor = net.auditor

    def _channel(self, kind: str, pid: str) -> grpc.Channel:
        key = (kind, pid)
        with self._lock:
            ch = self._ch.get(key)
            if ch is None:
                p = self.cons.participant(pid)
                assert p is not None
                if kind == "public":
                    creds = grpc.ssl_channel_credentials(self._ca)
                    ch = grpc.secure_channel(p.public_endpoint, creds, options=CHANNEL_OPTIONS)
                else:
                    # Admin: the operator's admin certificate; audit: the auditor's member one.
                    pdir = self.dir / (pid if kind == "admin" else self.auditor)
                    stem = "admin" if kind == "admin" else "tls"
                    creds = grpc.ssl_channel_credentials(
                        root_certificates=self._ca,
                        private_key=(pdir / f"{stem}.key").read_bytes(),
                        certificate_chain=(pdir / f"{stem}.pem").read_bytes(),
                    )
                    ch = grpc.secure_channel(p.member_endpoint, creds, options=CHANNEL_OPTIONS)
                self._ch[key] = ch
            return ch

    def public(self, pid: str) -> rpc.PublicStub:
        return rpc.PublicStub(self._channel("public", pid))

    def admin(self, pid: str) -> rpc.AdminStub:
        return rpc.AdminStub(self._channel("admin", pid))

    def audit(self, pid: str) -> rpc.AuditStub:
        """Raw records and evidence: the member port's Audit service, as the auditor."""
        return rpc.AuditStub(self._channel("audit", pid))

    def close(self) -> None:
        with self._lock:
            for ch in self._ch.values():
                ch.close()
            self._ch.clear()


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n    ".join(text[-lines:])


# ---------------------------------------------------------------- chaos


class Chaos:
    """Kills random nodes with SIGKILL on a paced schedule and restarts them.

    Node states: up (answers), starting (restarted, not answering yet), down
    (killed, restart pending). Only this thread starts and kills processes;
    a node that exits without being killed is a failure."""

    def __init__(
        self,
        net: LocalNet,
        chans: Channels,
        tally: Tally,
        rng: random.Random,
        kills_target: int,
        duration: float,
        min_up: int,
        out: Out,
    ) -> None:
        self.net, self.chans, self.tally, self.rng, self.out = net, chans, tally, rng, out
        self.kills_target = kills_target
        self.duration = duration
        self.min_up = min_up
        self.state = {pid: "up" for pid in net.ids}
        self.gen = {pid: 0 for pid in net.ids}
        self.restart_at: dict[str, float] = {}
        self.startup_kill_at: dict[str, tuple[float, int]] = {}
        self.started_at: dict[str, float] = {}
        self.startup_s: list[float] = []
        self.kills = 0
        self.kills_while_starting = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def up(self) -> list[str]:
        with self._lock:
            return [p for p, s in self.state.items() if s == "up"]

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        spacing = self.duration * 0.9 / max(1, self.kills_target)
        paced = 0
        next_kill = self.t0 + spacing * self.rng.uniform(0.5, 1.0)
        while not self._stop.wait(0.02):
            now = time.monotonic()
            self._check_exits()
            for pid, at in list(self.restart_at.items()):
                if at <= now:
                    del self.restart_at[pid]
                    self._restart(pid)
            for pid, (at, gen) in list(self.startup_kill_at.items()):
                if at <= now:
                    del self.startup_kill_at[pid]
                    with self._lock:
                        starting = self.gen[pid] == gen and self.state[pid] == "starting"
                    if starting:
                        self.kills_while_starting += 1
                        self._kill(pid)
            if self.kills_target and now >= next_kill and self._kill_one():
                paced += 1
                # Paced against the schedule, so a late kill does not shift the rest.
                base = self.t0 + spacing * (paced + 0.5)
                next_kill = max(now + 0.2, base + spacing * self.rng.uniform(-0.4, 0.4))

    def _kill_one(self) -> bool:
        with self._lock:
            up = [p for p, s in self.state.items() if s == "up"]
        if len(up) - 1 < self.min_up:
            return False
        self._kill(self.rng.choice(up))
        return True

    def _kill(self, pid: str) -> None:
        with self._lock:
            was = self.state[pid]
            self.state[pid] = "down"
            self.gen[pid] += 1
        proc = self.net.nodes[pid].proc
        self.net.kill(pid)
        if was == "up" and proc is not None and proc.stdout is not None:
            proc.stdout.close()  # a starting node's reader thread closes its own
        self.kills += 1
        spacing = self.duration / max(1, self.kills_target)
        self.restart_at[pid] = time.monotonic() + self.rng.uniform(0.1, min(3.0, 1.5 * spacing))

    def _restart(self, pid: str) -> None:
        with self._lock:
            self.state[pid] = "starting"
            self.gen[pid] += 1
            gen = self.gen[pid]
        self.started_at[pid] = time.monotonic()
        if not self._stop.is_set() and self.rng.random() < STARTUP_KILL_CHANCE:
            # Some restarts die again at a random moment of their startup.
            at = time.monotonic() + self.rng.uniform(0.05, 1.0)
            self.startup_kill_at[pid] = (at, gen)
        self.net.start(pid, wait=False)
        proc = self.net.nodes[pid].proc
        threading.Thread(
            target=self._await_ready, args=(pid, gen, proc), name=f"ready-{pid}", daemon=True
        ).start()

    def _await_ready(self, pid: str, gen: int, proc: Any) -> None:
        try:
            line = proc.stdout.readline()
            proc.stdout.close()  # the node prints one line; an open pipe per restart adds up
        except (OSError, ValueError):
            return
        if not line:
            return  # it died; _check_exits tells a kill from a crash
        t_start = self.started_at.get(pid, time.monotonic())
        while proc.poll() is None:
            with self._lock:
                if self.gen[pid] != gen:
                    return
            try:
                self.chans.public(pid).GetFeedHeads(pb.FeedHeadsRequest(), timeout=2)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            with self._lock:
                if self.gen[pid] == gen and self.state[pid] == "starting":
                    self.state[pid] = "up"
                    self.startup_s.append(time.monotonic() - t_start)
            return

    def _check_exits(self) -> None:
        for pid in self.net.ids:
            with self._lock:
                st = self.state[pid]
            if st == "down":
                continue
            proc = self.net.nodes[pid].proc
            if proc is None or proc.poll() is None:
                continue
            self.tally.fail(
                f"node {pid} exited by itself (status {proc.returncode}) while {st}:\n    "
                + _tail(self.net.nodes[pid].log_path)
            )
            with self._lock:
                self.state[pid] = "down"
                self.gen[pid] += 1
            if st == "up" and proc.stdout is not None:
                proc.stdout.close()
            self.restart_at[pid] = time.monotonic() + 0.5

    def halt(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def finish(self, timeout: float = 90) -> None:
        """Stop killing; start every node that is down; wait until all answer."""
        self.halt()
        for pid in list(self.restart_at):
            del self.restart_at[pid]
            self._restart(pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_exits()
            for pid in list(self.restart_at):
                del self.restart_at[pid]
                self._restart(pid)
            with self._lock:
                if all(s == "up" for s in self.state.values()):
                    return
            time.sleep(0.05)
        with self._lock:
            late = [p for p, s in self.state.items() if s != "up"]
        self.tally.fail(f"nodes {late} did not come back within {timeout}s")


# ---------------------------------------------------------------- partitions


class Partitions:
    """Isolates one random node at a time for a random interval. The last
    partition is left in place: the caller heals it once the load stopped."""

    def __init__(
        self,
        net: LocalNet,
        chans: Channels,
        rng: random.Random,
        count: int,
        duration: float,
        out: Out,
    ) -> None:
        self.net, self.chans, self.rng, self.out = net, chans, rng, out
        self.count = count
        self.duration = duration
        self.done = 0
        self.isolated: str | None = None
        self.held_s: list[float] = []
        self.catchup_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="partitions", daemon=True)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        if self.count <= 0:
            return
        slot = self.duration / self.count
        for i in range(self.count):
            begin = self.t0 + slot * (i + self.rng.uniform(0.05, 0.3))
            if self._stop.wait(max(0.0, begin - time.monotonic())):
                return
            victim = self.rng.choice(self.net.ids)
            self.net.isolate(victim)
            self.isolated = victim
            self.done += 1
            since = time.monotonic()
            if i == self.count - 1:
                return  # held until the load ends
            if self._stop.wait(slot * self.rng.uniform(0.3, 0.55)):
                return
            heads_before = self._others_heads(victim)
            self.net.heal()
            self.isolated = None
            self.held_s.append(time.monotonic() - since)
            self._measure_catchup(victim, heads_before, timeout=slot * 0.4)

    def _others_heads(self, victim: str) -> dict[str, int]:
        best: dict[str, int] = {}
        for pid in self.net.ids:
            if pid == victim:
                continue
            try:
                r = self.chans.public(pid).GetFeedHeads(pb.FeedHeadsRequest(), timeout=2)
            except grpc.RpcError:
                continue
            for h in r.heads:
                best[h.issuer] = max(best.get(h.issuer, 0), h.seq)
        return best

    def _measure_catchup(self, pid: str, target: dict[str, int], timeout: float) -> None:
        """Seconds until the healed node holds what the others held at the heal
        (best effort: the node may be killed meanwhile)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout and not self._stop.is_set():
            try:
                r = self.chans.public(pid).GetFeedHeads(pb.FeedHeadsRequest(), timeout=2)
                have = {h.issuer: h.seq for h in r.heads}
                if all(have.get(i, 0) >= s for i, s in target.items()):
                    self.catchup_s.append(time.monotonic() - t0)
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# ---------------------------------------------------------------- load


class Load:
    """Issues marks at random nodes at a fixed total rate, for a fixed time."""

    def __init__(
        self,
        chans: Channels,
        ids: list[str],
        categories: list[str],
        tally: Tally,
        seed: int,
        rate: float,
        duration: float,
        on_ack: Callable[[Ack], None],
        workers: int = 48,
    ) -> None:
        self.chans, self.ids, self.categories, self.tally = chans, ids, categories, tally
        self.seed, self.rate, self.duration, self.on_ack = seed, rate, duration, on_ack
        self.workers = workers
        self.error_codes: dict[str, int] = {}
        self._avoid_until: dict[str, float] = {}  # like a client: skip a node that just failed
        self._slots = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        total = int(self.rate * self.duration)
        t0 = time.monotonic()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="issue") as pool:
            for k in range(total):
                delay = t0 + k / self.rate - time.monotonic()
                if self._stop.wait(max(0.0, delay)):
                    return
                if not self._slots.acquire(blocking=False):
                    self.tally.add("issue_skipped")  # every worker is waiting on a node
                    continue
                pool.submit(self._issue, k)

    def _issue(self, k: int) -> None:
        try:
            rng = random.Random(self.seed * 1_000_003 + k)
            for attempt in range(2):
                now = time.monotonic()
                with self._lock:
                    live = [p for p in self.ids if self._avoid_until.get(p, 0.0) <= now]
                pid = rng.choice(live or self.ids)
                number = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
                mark = rpb.Mark(
                    number=number,
                    category=rng.choice(self.categories),
                    score=rng.randint(10, 100),
                    reports=rng.randint(1, 5),
                )
                self.tally.add("issue_attempts")
                try:
                    got = self.chans.admin(pid).IssueMark(mark, timeout=RPC_TIMEOUT)
                except grpc.RpcError as e:
                    code = e.code()
                    with self._lock:
                        self.error_codes[code.name] = self.error_codes.get(code.name, 0) + 1
                        self._avoid_until[pid] = time.monotonic() + 1.0
                    if code not in TRANSIENT:
                        self.tally.fail(f"IssueMark at {pid} refused a valid mark: {e.details()}")
                        return
                    if attempt == 0:
                        continue  # try another node
                    return
                if got.issuer != pid or len(got.id) != 32 or got.seq < 1:
                    self.tally.fail(f"IssueMark at {pid} acknowledged nonsense: {got}")
                    return
                self.on_ack(Ack(pid, bytes(got.id), got.seq, number))
                return
        finally:
            self._slots.release()


# ---------------------------------------------------------------- readers


class Retry(Exception):
    """Not verifiable yet (node down, record not there yet, checkpoint not cosigned)."""


class Readers:
    """Verify inclusion proofs of acknowledged records as an untrusting client.

    Each acknowledged record waits in `pending` until one proof of it
    verified; readers also re-verify random older records at random nodes."""

    def __init__(
        self,
        chans: Channels,
        cons: Consortium,
        tally: Tally,
        seed: int,
        count: int,
        max_rate: float,
    ) -> None:
        self.chans, self.cons, self.tally = chans, cons, tally
        self.ids = [p.id for p in cons.witnesses]  # nodes only
        self.seed = seed
        self.quorum = cons.policy.cosign_quorum
        self.max_rate = max_rate
        self.acks: list[Ack] = []
        self.pending: deque[tuple[float, int, Ack]] = deque()
        self._lock = threading.Lock()
        self._trust: dict[str, tuple[int, bytes]] = {}  # node -> largest checkpoint seen
        self._trust_locks = {pid: threading.Lock() for pid in self.ids}
        self._keys = {p.id: p.public_key for p in cons.participants}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"reader-{i}", daemon=True)
            for i in range(count)
        ]

    def add(self, ack: Ack) -> None:
        with self._lock:
            self.acks.append(ack)
            self.pending.append((time.monotonic(), 0, ack))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join()

    def drain(self, timeout: float) -> int:
        """Wait until every acknowledged record has one verified proof; returns
        how many still wait."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.pending:
                    return 0
            time.sleep(0.1)
        with self._lock:
            return len(self.pending)

    def backlog(self) -> int:
        with self._lock:
            return len(self.pending)

    def trusted(self) -> dict[str, tuple[int, bytes]]:
        return dict(self._trust)

    def _next(self, rng: random.Random) -> tuple[Ack, int, bool] | None:
        with self._lock:
            if self.pending and self.pending[0][0] <= time.monotonic():
                _, tries, ack = self.pending.popleft()
                return ack, tries, True
            if self.acks and rng.random() < 0.5:
                return rng.choice(self.acks), 0, False
        return None

    def _run(self, i: int) -> None:
        rng = random.Random(self.seed * 7919 + i)
        gap = len(self._threads) / self.max_rate
        while not self._stop.is_set():
            t = time.monotonic()
            nxt = self._next(rng)
            if nxt is None:
                self._stop.wait(0.02)
                continue
            ack, tries, first = nxt
            pid = rng.choice(self.ids)
            try:
                self.verify(ack, pid)
                self.tally.add("proofs_verified")
            except Retry:
                self.tally.add("proof_retries")
                if first:
                    with self._lock:
                        backoff = min(2.0, 0.05 * (tries + 1))
                        self.pending.append((time.monotonic() + backoff, tries + 1, ack))
                        if tries == 200:
                            self.tally.add("records_slow_to_verify")
            except Exception as e:  # every other outcome is a proof that failed
                self.tally.fail(
                    f"proof of {ack.node}#{ack.seq} ({ack.rid.hex()[:16]}) at {pid}: "
                    f"{type(e).__name__}: {e}"
                )
            self._stop.wait(max(0.0, gap - (time.monotonic() - t)))

    def _call(self, fn: Callable[..., Any], req: Any) -> Any:
        try:
            return fn(req, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            if e.code() in TRANSIENT:
                raise Retry(e.code().name) from None
            raise

    def verify(self, ack: Ack, pid: str) -> None:
        """Raise Retry when not verifiable yet, anything else when the proof fails."""
        pub = self.chans.public(pid)
        try:
            got = self._call(self.chans.audit(pid).GetRecord, pb.GetRecordRequest(id=ack.rid))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise Retry("not replicated yet") from None
            raise
        env = bytes(got.envelope)
        if record_id(env) != ack.rid:
            raise LedgerError(f"GetRecord returned another envelope at index {got.index}")
        rec = Record.from_envelope(env)
        if (rec.issuer, rec.seq) != (ack.node, ack.seq):
            raise LedgerError(f"record is {rec.issuer}#{rec.seq}, acknowledged as #{ack.seq}")
        try:
            cp_resp = self._call(pub.GetLogCheckpoint, pb.GetLogCheckpointRequest())
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise Retry("no checkpoint yet") from None
            raise
        text = cp_resp.note
        origin = log_origin(self.cons.name, pid)
        cp = note.open_checkpoint(text, note.Verifier.for_key(origin, self._keys[pid]), origin)
        witnesses = {witness_name(self.cons.name, w): self._keys[w] for w in self.ids if w != pid}
        if len(note.count_cosignatures(text, witnesses)) < self.quorum:
            self.tally.add("checkpoints_below_quorum")
            raise Retry("checkpoint not cosigned by a quorum yet")
        self.check_consistency(pid, cp.size, cp.root)
        if got.index >= cp.size:
            raise Retry("record not in the cosigned checkpoint yet")
        proof = self._call(
            pub.GetInclusionProof, pb.GetInclusionProofRequest(index=got.index, size=cp.size)
        )
        leaf = merkle.leaf_hash(env)
        if proof.leaf_hash and bytes(proof.leaf_hash) != leaf:
            raise LedgerError("the node's leaf hash is not the envelope's")
        merkle.verify_inclusion(leaf, got.index, cp.size, list(proof.path), cp.root)

    def check_consistency(self, pid: str, size: int, root: bytes) -> None:
        """Every two checkpoints a node showed must be one log: same root for
        one size, a verified consistency proof between two sizes."""
        with self._trust_locks[pid]:
            known = self._trust.get(pid)
            if known is None or known[0] == 0:
                self._trust[pid] = (size, root)
                return
            ksize, kroot = known
            if size == ksize:
                if root != kroot:
                    raise LedgerError(f"{pid} signed two roots for size {size}")
                return
            (a, ra), (b, rb) = sorted([(ksize, kroot), (size, root)])
            if a == 0:
                self._trust[pid] = (b, rb)
                return
            pub = self.chans.public(pid)
            try:
                proof = self._call(
                    pub.GetConsistencyProof, pb.GetConsistencyProofRequest(old_size=a, new_size=b)
                )
            except Retry:
                return  # checked at the next checkpoint
            merkle.verify_consistency(a, b, ra, rb, list(proof.path))
            self.tally.add("consistency_verified")
            self._trust[pid] = (b, rb)


# ---------------------------------------------------------------- end checks


def _retrying(fn: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except grpc.RpcError as e:
            if e.code() not in TRANSIENT or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def fetch_log(pub: rpc.AuditStub, size: int) -> list[bytes]:
    """Envelopes 0..size-1 of a node's log, in pages."""
    out: list[bytes] = []
    while len(out) < size:
        start = len(out)
        r = _retrying(
            lambda s=start: pub.GetEntries(pb.GetEntriesRequest(start=s, end=size), timeout=30)
        )
        if r.start != start or not r.envelopes:
            raise LedgerError(f"GetEntries({start}, {size}) answered start {r.start}")
        out.extend(bytes(e) for e in r.envelopes)
    return out[:size]


def cosigned_checkpoint(
    chans: Channels, cons: Consortium, pid: str, size: int, timeout: float = 30
) -> tuple[str, note.Checkpoint, list[str]]:
    """The node's log checkpoint once it covers `size` entries with a quorum
    of cosignatures (or the best one seen when the time is up)."""
    origin = log_origin(cons.name, pid)
    p = cons.participant(pid)
    assert p is not None
    witnesses = {
        witness_name(cons.name, q.id): q.public_key for q in cons.participants if q.id != pid
    }
    deadline = time.monotonic() + timeout
    while True:
        text = _retrying(
            lambda: chans.public(pid).GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=5)
        ).note
        cp = note.open_checkpoint(text, note.Verifier.for_key(origin, p.public_key), origin)
        names = note.count_cosignatures(text, witnesses)
        if (cp.size >= size and len(names) >= cons.policy.cosign_quorum) or (
            time.monotonic() > deadline
        ):
            return text, cp, names
        time.sleep(0.1)


def audit_node(
    chans: Channels,
    cons: Consortium,
    pid: str,
    trusted: tuple[int, bytes] | None,
) -> tuple[list[str], list[bytes], note.Checkpoint]:
    """What an auditor checks online, from the public port and (entries,
    evidence) the member port's Audit service: the signed,
    cosigned checkpoint covers the whole log; the root recomputed from every
    entry is the checkpoint's; every envelope is genuine; every feed is a
    gap-free hash chain in log order; no equivocation or fork evidence; the
    checkpoint extends the largest one readers trusted during the run.
    Returns (findings, entries, checkpoint)."""
    findings: list[str] = []
    pub = chans.public(pid)
    heads = _retrying(lambda: pub.GetFeedHeads(pb.FeedHeadsRequest(), timeout=5)).heads
    size = sum(h.seq for h in heads)
    _, cp, names = cosigned_checkpoint(chans, cons, pid, size)
    if len(names) < cons.policy.cosign_quorum:
        findings.append(f"checkpoint at size {cp.size} has {len(names)} cosignatures")
    if cp.size != size:
        findings.append(f"checkpoint size {cp.size} is not the log size {size}")
    entries = fetch_log(chans.audit(pid), cp.size)
    frontier = merkle.Frontier.empty()
    for env in entries:
        frontier.append(merkle.leaf_hash(env))
    if frontier.root() != cp.root:
        findings.append(f"root recomputed from {cp.size} entries is not the checkpoint's")
    try:
        recs = verify_envelopes(entries, cons)
    except LedgerError as e:
        findings.append(f"an entry is not genuine: {type(e).__name__}: {e}")
        recs = []
    chain: dict[str, tuple[int, bytes]] = {}
    seen: set[bytes] = set()
    for i, r in enumerate(recs):
        if r.id in seen:
            findings.append(f"entry {i} repeats record {r.id.hex()[:16]}")
        seen.add(r.id)
        seq, head = chain.get(r.issuer, (0, b""))
        if r.seq != seq + 1 or r.prev_id != head:
            findings.append(f"entry {i}: {r.issuer}#{r.seq} does not follow #{seq}")
        chain[r.issuer] = (r.seq, r.id)
    for h in heads:
        if chain.get(h.issuer, (0, b""))[0] != h.seq:
            findings.append(f"feed head {h.issuer}#{h.seq} is not what the log holds")
        if h.frozen:
            findings.append(f"feed {h.issuer} is frozen")
    ev = _retrying(lambda: chans.audit(pid).GetEvidence(pb.GetEvidenceRequest(), timeout=10))
    if ev.equivocations or ev.forks:
        findings.append(f"evidence: {len(ev.equivocations)} equivocations, {len(ev.forks)} forks")
    if trusted is not None and trusted[0] > 0:
        old, old_root = trusted
        if old > cp.size:
            findings.append(f"log shrank from {old} to {cp.size}")
        else:
            p = _retrying(
                lambda: pub.GetConsistencyProof(
                    pb.GetConsistencyProofRequest(old_size=old, new_size=cp.size), timeout=10
                )
            )
            try:
                merkle.verify_consistency(old, cp.size, old_root, cp.root, list(p.path))
            except LedgerError as e:
                findings.append(f"final checkpoint does not extend size {old}: {e}")
    return findings, entries, cp


def external_audit(net: LocalNet, pid: str) -> tuple[bool, list[str]] | None:
    """The project's online auditor (`markex audit --node`), a full audit
    with no saved state; None when this tree has no auditor."""
    try:
        from node.auditcli import audit_online
    except ImportError:
        return None
    try:
        rep, _ = audit_online(net.dir, net.consortium, pid, None)
    except Exception as e:  # the auditor could not finish: that is a finding too
        return False, [f"the auditor stopped: {type(e).__name__}: {e}"]
    return rep.ok, [f.line() for f in rep.findings]


def views_agree(
    chans: Channels, cons: Consortium, heads: dict[str, int], timeout: float = 30
) -> tuple[bool, dict[str, Any]]:
    """Every node's signed view checkpoint names the converged vector and one root."""
    want = {i: s for i, s in heads.items() if s > 0}
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[str, Any] = {}
        for pid in [p.id for p in cons.witnesses]:
            text = _retrying(
                lambda pid=pid: chans.public(pid).GetViewCheckpoint(
                    pb.GetViewCheckpointRequest(), timeout=5
                )
            ).note
            cp, signer, cosigners = open_cosigned_view(cons, text)
            if signer != pid:
                raise LedgerError(f"{pid} served a view checkpoint signed by {signer}")
            seen[pid] = (cp.root.hex(), dict(cp.vector), cp.count, len(cosigners))
        roots = {v[0] for v in seen.values()}
        vectors_ok = all(v[1] == want for v in seen.values())
        counts = {v[2] for v in seen.values()}
        if (len(roots) == 1 and vectors_ok and len(counts) == 1) or time.monotonic() > deadline:
            return len(roots) == 1 and vectors_ok and len(counts) == 1, seen
        time.sleep(0.2)


def verify_lookups(
    chans: Channels, cons: Consortium, acks: list[Ack], rng: random.Random, n: int = 30
) -> tuple[int, list[str]]:
    """Look up acknowledged numbers at random nodes; each answer must verify
    against a cosigned view checkpoint and show the number's entry."""
    bad: list[str] = []
    ok = 0
    ids = [p.id for p in cons.witnesses]
    for ack in rng.sample(acks, min(n, len(acks))):
        pid = rng.choice(ids)
        deadline = time.monotonic() + 20
        while True:
            now_ms = time.time_ns() // 1_000_000
            resp = _retrying(
                lambda pid=pid, num=ack.number, t=now_ms: chans.public(pid).Lookup(
                    pb.LookupRequest(number=num, at_ms=t), timeout=10
                )
            )
            # against the number asked (never resp.number), at the time it is verified
            res = verify_answer(cons, ack.number, resp, resp.view_checkpoint, now_ms, now_ms)
            if (res["verified"] and resp.entry) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if res["verified"] and resp.entry and res["markers"]:
            ok += 1
        else:
            bad.append(
                f"lookup of {ack.number} at {pid}: verified={res['verified']} "
                f"entry={'yes' if resp.entry else 'no'} cosigned_by={res['cosigned_by']}"
            )
    return ok, bad


# ---------------------------------------------------------------- the run


def run_soak(
    duration_s: float,
    rate: float,
    kills_target: int,
    partitions: int,
    seed: int,
    out: Out = print,
    *,
    readers: int = 5,
    min_up: int = 4,
    directory: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the soak on a fresh local consortium; returns the figures.

    `ok` is True only when no proof failed, every acknowledged record is on
    every node, every node audits clean, every view root agrees, the nodes
    converged after the last heal and no node died without being killed."""
    rng = random.Random(seed)
    workdir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="markex-soak-"))
    tally = Tally()
    out(
        f"soak: {duration_s:.0f}s, {rate:g} records/s, >= {kills_target} kills, "
        f"{partitions} partitions, seed {seed}, dir {workdir}"
    )
    net = LocalNet(workdir / "consortium", sync_interval=0.3)
    chans = Channels(net)
    cons = net.consortium
    chaos = Chaos(net, chans, tally, rng, kills_target, duration_s, min_up, out)
    parts = Partitions(net, chans, rng, partitions, duration_s, out)
    reader = Readers(chans, cons, tally, seed, readers, max_rate=max(20.0, 2 * rate))
    load = Load(chans, net.ids, sorted(cons.categories), tally, seed, rate, duration_s, reader.add)
    ok = False
    try:
        t_boot = time.monotonic()
        net.start_all()
        out(f"  {len(net.ids)} nodes up in {time.monotonic() - t_boot:.1f}s")
        t0 = time.monotonic()
        reader.start()
        chaos.start()
        parts.start()
        load.start()
        next_report = t0 + 30
        while load.running():
            load.join(0.5)
            if time.monotonic() >= next_report:
                next_report += 30
                out(
                    f"  t={time.monotonic() - t0:5.0f}s acknowledged={len(reader.acks)} "
                    f"proofs={tally.get('proofs_verified')} kills={chaos.kills} "
                    f"partitions={parts.done} up={len(chaos.up())} failures={tally.failure_count}"
                )
        load_s = time.monotonic() - t0
        # On a slow or loaded machine restarts take longer, so fewer nodes are up to
        # kill and the paced schedule falls behind: the kills go on after the load
        # (up to the load's own length again), counted apart, rather than the run
        # ending short of its kills.
        kills_in_load = chaos.kills
        overtime_until = time.monotonic() + max(load_s, duration_s)
        while chaos.kills < kills_target and time.monotonic() < overtime_until:
            time.sleep(0.2)
        kills_after_load = chaos.kills - kills_in_load
        parts.stop()
        chaos.finish()
        t_heal = time.monotonic()
        net.heal()
        converge_s: float | None
        try:
            net.wait_converged(timeout=120)
            converge_s = time.monotonic() - t_heal
        except TimeoutError as e:
            converge_s = None
            tally.fail(f"no convergence after the last heal: {e}")
        backlog = reader.backlog()
        # Readers share two cores with six nodes: allow for the backlog at the end.
        unverified = reader.drain(timeout=60 + backlog / 20)
        reader.stop()
        if unverified:
            tally.fail(f"{unverified} acknowledged records never got a verified proof")
        t_checks = time.monotonic()
        heads = net.heads(net.ids[0])
        acks = list(reader.acks)
        ack_ids = {a.rid for a in acks}

        # Every node: audit its whole log, and find every acknowledged record in it.
        audits: dict[str, bool] = {}
        auditor_used = False
        missing_total = 0
        trusted = reader.trusted()
        getrecord_checked = 0
        for pid in net.ids:
            findings, entries, cp = audit_node(chans, cons, pid, trusted.get(pid))
            ext = external_audit(net, pid)
            if ext is not None:
                auditor_used = True
                if not ext[0]:
                    findings += [f"auditor: {f}" for f in ext[1]] or ["auditor: not ok"]
            audits[pid] = not findings
            for f in findings[:10]:
                tally.fail(f"audit of {pid}: {f}")
            index_of = {record_id(e): i for i, e in enumerate(entries)}
            missing = ack_ids - index_of.keys()
            missing_total += len(missing)
            for rid in list(missing)[:5]:
                tally.fail(f"acknowledged record {rid.hex()[:16]} is missing on {pid}")
            # GetRecord must agree with the log: every record when few, else a sample.
            sample = acks if len(acks) <= 1500 else rng.sample(acks, 500)
            aud = chans.audit(pid)
            for a in sample:
                if a.rid in missing:
                    continue
                try:
                    got = _retrying(
                        lambda rid=a.rid, pub=aud: pub.GetRecord(
                            pb.GetRecordRequest(id=rid), timeout=5
                        )
                    )
                except grpc.RpcError as e:
                    tally.fail(f"GetRecord {a.rid.hex()[:16]} at {pid}: {e.code().name}")
                    continue
                getrecord_checked += 1
                if got.index != index_of[a.rid] or bytes(got.envelope) != entries[got.index]:
                    tally.fail(f"GetRecord {a.rid.hex()[:16]} at {pid} disagrees with the log")
        roots_ok, views = views_agree(chans, cons, heads)
        if not roots_ok:
            tally.fail(f"view checkpoints disagree: {views}")
        lookups_ok, lookup_bad = verify_lookups(chans, cons, acks, rng)
        for b in lookup_bad:
            tally.fail(b)

        audits_ok = all(audits.values())
        if chaos.kills < kills_target:
            tally.fail(f"only {chaos.kills} kills of the {kills_target} asked for")
        if parts.done < partitions:
            tally.fail(f"only {parts.done} partitions of the {partitions} asked for")
        tracebacks = _scan_logs(net, out)
        checks_s = time.monotonic() - t_checks
        ok = (
            tally.failure_count == 0
            and missing_total == 0
            and audits_ok
            and roots_ok
            and converge_s is not None
            and chaos.kills >= kills_target
            and parts.done >= partitions
        )
        startup = sorted(chaos.startup_s)
        result = {
            "acknowledged": len(acks),
            "proofs_verified": tally.get("proofs_verified"),
            "failures": tally.failure_count,
            "kills": chaos.kills,
            "partitions": parts.done,
            "converge_seconds": None if converge_s is None else round(converge_s, 3),
            "roots_agree": roots_ok,
            "audits_ok": audits_ok,
            "ok": ok,
            "auditor": "markex audit (node.auditcli) + soak checks"
            if auditor_used
            else "soak checks",
            # more figures
            "seed": seed,
            "load_seconds": round(load_s, 1),
            "checks_seconds": round(checks_s, 1),
            "issue_attempts": tally.get("issue_attempts"),
            "issue_skipped": tally.get("issue_skipped"),
            "issue_errors": dict(load.error_codes),
            "consistency_proofs_verified": tally.get("consistency_verified"),
            "proof_retries": tally.get("proof_retries"),
            "checkpoints_below_quorum": tally.get("checkpoints_below_quorum"),
            "node_log_tracebacks": tracebacks,
            "missing_records": missing_total,
            "getrecord_checked": getrecord_checked,
            "log_size": sum(heads.values()),
            "kills_while_starting": chaos.kills_while_starting,
            "kills_after_load": kills_after_load,
            "restart_p50_seconds": round(startup[len(startup) // 2], 3) if startup else None,
            "restart_max_seconds": round(startup[-1], 3) if startup else None,
            "partition_catchup_seconds": [round(s, 3) for s in parts.catchup_s],
            "lookups_verified": lookups_ok,
            "view_root": next(iter(views.values()))[0] if views else None,
            "failure_details": list(tally.failures),
        }
        _print_figures(result, out)
        return result
    finally:
        # Nothing may start a node again once they are stopped.
        load.stop()
        chaos.halt()
        parts.stop()
        reader.stop()
        net.stop_all()
        chans.close()
        if ok and not keep and directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            out(f"soak: kept {workdir} (node logs in <dir>/consortium/<participant>/node.log)")


def _scan_logs(net: LocalNet, out: Out) -> int:
    """Tracebacks the nodes logged (reported, not failed: some are handled)."""
    n = 0
    for pid in net.ids:
        path = net.nodes[pid].log_path
        if path is None or not path.exists():
            continue
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                n += 1
                if n <= 3:
                    out(f"  node {pid} logged: {lines[i - 1][:120]} / {lines[-1][:120]}")
    return n


def _print_figures(r: dict[str, Any], out: Out) -> None:
    out("soak figures")
    rows = [
        ("records acknowledged", r["acknowledged"]),
        ("inclusion proofs verified", r["proofs_verified"]),
        ("consistency proofs verified", r["consistency_proofs_verified"]),
        ("failures", r["failures"]),
        (
            "SIGKILLs (during startup, after the load)",
            f"{r['kills']} ({r['kills_while_starting']}, {r['kills_after_load']})",
        ),
        (
            "restart to serving, p50 / max s",
            f"{r['restart_p50_seconds']} / {r['restart_max_seconds']}",
        ),
        ("partitions", r["partitions"]),
        ("catch-up after mid-run heals, s", r["partition_catchup_seconds"]),
        ("converged after last heal, s", r["converge_seconds"]),
        ("log size on every node", r["log_size"]),
        ("acknowledged records missing", r["missing_records"]),
        ("GetRecord cross-checks", r["getrecord_checked"]),
        ("every node audits clean", r["audits_ok"]),
        ("audited by", r["auditor"]),
        ("view roots agree", r["roots_agree"]),
        ("lookups verified (cosigned view)", r["lookups_verified"]),
        ("checkpoints served below quorum", r["checkpoints_below_quorum"]),
        ("tracebacks in node logs", r["node_log_tracebacks"]),
        ("issue attempts / skipped", f"{r['issue_attempts']} / {r['issue_skipped']}"),
        ("issue errors (retried)", r["issue_errors"]),
        ("load / end checks, s", f"{r['load_seconds']} / {r['checks_seconds']}"),
        ("ok", r["ok"]),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out(f"  {k:<{width}}  {v}")
    for f in r["failure_details"][:20]:
        out(f"  FAILURE: {f}")


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    ap = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=float(env.get("SOAK_SECONDS", "300")))
    ap.add_argument("--rate", type=float, default=float(env.get("SOAK_RATE", "50")))
    ap.add_argument("--kills", type=int, default=int(env.get("SOAK_KILLS", "100")))
    ap.add_argument("--partitions", type=int, default=int(env.get("SOAK_PARTITIONS", "8")))
    ap.add_argument("--seed", type=int, default=int(env.get("SOAK_SEED", "0")) or None)
    ap.add_argument("--readers", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="keep the run in this directory")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    # SIGTERM (make's, CI's) still runs the cleanup that stops every node.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    r = run_soak(
        args.seconds,
        args.rate,
        args.kills,
        args.partitions,
        seed,
        readers=args.readers,
        directory=args.dir,
        keep=args.dir is not None,
    )
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
