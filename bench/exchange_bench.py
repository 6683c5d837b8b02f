"""Exchange benchmarks: real node processes on loopback (node.localnet).

    propagation_p99  seconds from an Admin.IssueMark call's return until the
                     record is in every node's feed heads; six nodes, marks
                     issued at a steady rate spread over three issuing nodes.
                     Every node's GetFeedHeads is polled every POLL_MS by its
                     own thread, so the first poll that shows a record's seq
                     dates its arrival there (an upper bound: the record came
                     after the previous poll was sent, the lower bound the
                     `how` gives). A latency: limit = target. The polls are
                     the nodes' work too: at 5 ms, 12 nodes answered about 700
                     a second, more CPU than the records' own exchange.
    propagation_p99_12  the same with twelve node processes, every role of the
                     national consortium (TWELVE: the institute, three
                     carriers, six internet firms, a complaints centre and the
                     regulator), the same target; its `how` also gives the
                     mean envelope size of the marks it issued (docs/deploy.md
                     prices full-mesh push with it).
    catchup          records/s at which a fresh, empty node takes a whole log
                     from its one reachable peer (the others refused by the
                     nodes' test hook), against the limit of NodeLedger.submit
                     of the same envelopes into a fresh store in-process, in
                     batches of 1000 (bench.ingest.run_ours), measured in the
                     same run while it fills that peer's data directory. The
                     catch-up starts once that peer has settled after its
                     start (its screen rows made: wait_quiet), so what it
                     measures is the fresh node's taking, not both.
    catchup_12       the same with the twelve nodes of TWELVE (ten feeds: the
                     complaints centre and the regulator issue no marks).

Also what view_bench uses: `signed_feeds`, which signs mark records for
several issuers on every core (a spawn Pool; each issuer's feed chained in
order) and yields them in batches as they are ready, and `mark_number`.
`python -m bench.exchange_bench [propagation|propagation_12|catchup|catchup_12]`
prints JSON.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import gc
import json
import math
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import ingest, report
from keys.signing import SigningKey
from ledger.payloads import ROLE_PAYLOADS
from ledger.record import Record, record_context, record_id
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from node.localnet import LocalNet

PROPAGATION_TARGET_S = 1.0
CATCHUP_TARGET = 0.5
ISSUING_NODES = ("carrier-1", "internet-1", "institute")
CATEGORIES = ("fraud", "harassment", "marketing", "debt-collection", "delivery", "one-ring")
CHUNK = 2000  # records per signing task and per Deliver call
IDLE_S = 3.0  # seconds the nodes' CPU is measured with no record flowing
QUIET_CORES = 0.2  # a started peer is settled once it uses less CPU than this
QUIET_WINDOW_S = 1.0  # ... over a window this long
# paced_calls' sender threads: each sends every SENDERS-th call with a blocking
# call. gRPC's futures answer on a channel thread that exits whenever no call
# is in flight, so an open loop whose answers come before its next send (500/s,
# ~1.5 ms) started a thread for nearly every call and waited for it to run
# (994 in 1000 calls; 0.19 ms a start on an idle host, ms under load: a
# one-off timing). At 500/s a thread has 64 ms for each of its calls.
SENDERS = 32
POLL_MS = 50.0  # each node's GetFeedHeads poll: a record's time there is known to this
# LocalNet's arguments for twelve nodes: every role the notice names (the
# institute is always there; the auditor holds keys but runs no node).
TWELVE: dict[str, int] = {"carriers": 3, "internet": 6, "complaints": 1, "regulators": 1}

MarkSpec = tuple[str, str, int]  # number, category, score


def mark_number(i: int) -> str:
    """The i-th benchmark number: distinct for distinct i < 10**8, all valid
    China Mobile numbers, scattered over the range (7919 is prime to 10**8)."""
    return f"+86138{(i * 7919 + 4_242_424) % 100_000_000:08d}"


def past_ms() -> int:
    """An issued-at time in the past both for the wall clock and for
    bench.ingest's fixed `now` (its limit runs submit at that time)."""
    return min(time.time_ns() // 1_000_000, ingest.NOW) - 60_000


def seed_of(key: SigningKey) -> bytes:
    return key.private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _sign_chain(
    task: tuple[str, bytes, str, int, bytes, int, list[MarkSpec]],
) -> tuple[list[bytes], bytes]:
    """Worker: sign consecutive marks of one feed. Builds the same bytes as
    Record.issue without re-parsing each one (the receiving node checks them)."""
    consortium, seed, issuer, seq, prev, issued_at, marks = task
    key = Ed25519PrivateKey.from_private_bytes(seed)
    context = record_context(consortium)
    out = []
    for number, category, score in marks:
        seq += 1
        body = rpb.Record(
            issuer=issuer,
            seq=seq,
            prev_id=prev,
            issued_at_ms=issued_at,
            mark=rpb.Mark(
                number=number, category=category, score=score, reports=1, observed_at_ms=issued_at
            ),
        ).SerializeToString()
        env = rpb.SignedRecord(body=body, signature=key.sign(context + body))
        raw = env.SerializeToString()
        prev = record_id(raw)
        out.append(raw)
    return out, prev


def workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def signed_feeds(
    seeds: Mapping[str, bytes],
    marks: Mapping[str, Sequence[MarkSpec]],
    issued_at_ms: int,
    chunk: int = CHUNK,
    *,
    consortium: str,
) -> Iterator[list[bytes]]:
    """Yield every issuer's marks as envelopes signed for `consortium` (its
    name), in batches of up to `chunk` consecutive records of one feed; each
    feed's batches come in feed order (seq 1 first). Signing runs in a pool
    of one process per core."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding gRPC threads
    with ctx.Pool(workers()) as pool:
        heads = {pid: (0, b"") for pid in marks}
        offset = dict.fromkeys(marks, 0)
        pending: deque[tuple[str, int, AsyncResult[tuple[list[bytes], bytes]]]] = deque()

        def send(pid: str) -> None:
            todo = list(marks[pid][offset[pid] : offset[pid] + chunk])
            if todo:
                offset[pid] += len(todo)
                seq, prev = heads[pid]
                task = (consortium, seeds[pid], pid, seq, prev, issued_at_ms, todo)
                pending.append((pid, len(todo), pool.apply_async(_sign_chain, (task,))))

        for pid in marks:
            send(pid)
        while pending:
            pid, n, res = pending.popleft()
            envs, last = res.get()
            heads[pid] = (heads[pid][0] + n, last)
            send(pid)
            yield envs


def consortium_seeds(net: LocalNet, pids: Sequence[str]) -> dict[str, bytes]:
    return {pid: seed_of(SigningKey.load(net.dir / pid / "signing.key")) for pid in pids}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        raise ValueError("no values")
    k = math.ceil(len(sorted_values) * q / 100) - 1
    return sorted_values[max(0, min(len(sorted_values) - 1, k))]


@dataclass
class Paced:
    """What `paced_calls` saw: latency per call in seconds from its
    scheduled send (None where it failed), the responses kept, the failures
    (status name: details), how long sending took and how late the sender
    handed each call to gRPC (seconds after its scheduled time: a stalled
    client shows here, not only in the latencies), and the sender's own
    garbage collections while it sent and waited (`collections`, their pause
    in `collect_s`: with the collector off they stay 0)."""

    latency: list[float | None]
    kept: dict[int, Any]
    failed: list[str]
    sent_s: float
    late: list[float] = field(default_factory=list)
    collections: int = 0
    collect_s: float = 0.0
    senders: int = 1

    def late_ms(self, pct: float) -> float:
        """The sender's lateness at percentile `pct`, in ms."""
        return percentile(sorted(x * 1000 for x in self.late), pct) if self.late else 0.0

    def answered_ms(self) -> list[float]:
        """Latencies of the answered calls in ms, ascending."""
        return sorted(x * 1000 for x in self.latency if x is not None)

    def sender(self) -> str:
        """What the sender did, for a benchmark's `how`."""
        return (
            f"sent by {self.senders} threads with blocking calls, call i by thread i mod "
            f"{self.senders} at its due time; "
            f"the sender's cyclic collector off while it sent and waited (its heap collected "
            f"and frozen before: {self.collections} collections, "
            f"{self.collect_s * 1000:.1f} ms, during the phase), calls handed to gRPC p99 "
            f"{self.late_ms(99):.2f} ms, max {self.late_ms(100):.2f} ms after their "
            f"scheduled time"
        )


class CollectorCount:
    """The calling process's garbage collections while in use (gc.callbacks):
    how many and their total pause in seconds."""

    def __init__(self) -> None:
        self.count = 0
        self.pause_s = 0.0
        self._t = 0.0

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.count += 1
            self.pause_s += time.perf_counter() - self._t

    def __enter__(self) -> CollectorCount:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The cyclic collector off for the block: what the process holds is
    collected and frozen first (gc.freeze), so a full collection over a big
    benchmark heap (one of 97 ms was seen in the sender of a full-size
    screen_p99 run) cannot land among timed calls. Afterwards, also on an
    error, the heap is unfrozen and the collector on again if it was."""
    was_on = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_on:
            gc.enable()


def paced_calls(
    method: Any,
    requests: Sequence[Any],
    rate: float,
    keep: Callable[[int, Any], bool],
    *,
    timeout: float = 30.0,
    what: str = "calls",
    senders: int = SENDERS,
) -> Paced:
    """Unary calls of `method` (a stub's method, called blocking) sent open
    loop at `rate`/s: call i is due at start + i/rate and sent then by
    sender thread i % `senders`, each timed from its due time, so a late
    sender counts as latency; the responses for which keep(i, response)
    holds are kept. Every call is counted; the sender's collector is off
    from the first send to the last answer (`collector_off`). An error
    other than a call's failure stops the sending and is raised."""
    n = len(requests)
    latency: list[float | None] = [None] * n
    kept: dict[int, Any] = {}
    failed: list[str] = []
    late: list[float] = [0.0] * n
    errors: list[BaseException] = []
    go = threading.Event()  # the threads are running before the schedule starts
    start = 0.0

    def send(first: int, step: int) -> None:
        go.wait()
        try:
            for i in range(first, n, step):
                if errors:
                    return
                due = start + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                late[i] = time.perf_counter() - due
                try:
                    resp = method(requests[i], timeout=timeout)
                except grpc.RpcError as e:
                    failed.append(f"{e.code().name}: {e.details()}")
                    continue
                latency[i] = time.perf_counter() - due
                if keep(i, resp):
                    kept[i] = resp
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
            errors.append(e)

    count = max(1, min(senders, n))
    threads = [
        threading.Thread(target=send, args=(k, count), name=f"{what}-sender-{k}", daemon=True)
        for k in range(count)
    ]
    for t in threads:
        t.start()
    with collector_off(), CollectorCount() as collected:
        start = time.perf_counter() + 0.05
        go.set()
        for t in threads:
            t.join(timeout=4 * timeout + n / rate)
            if t.is_alive():
                raise TimeoutError(f"{what} did not return within {4 * timeout:.0f} s")
    if errors:
        raise errors[0]
    sent_s = max((i / rate + late[i] for i in range(n)), default=0.0)
    return Paced(latency, kept, failed, sent_s, late, collected.count, collected.pause_s, count)


def paced_lookups(
    stub: Any,
    numbers: Sequence[str],
    rate: float,
    keep: Callable[[int, pb.LookupResponse], bool],
    *,
    timeout: float = 30.0,
) -> Paced:
    """Single Public.Lookup calls (with proof) at `rate`/s (`paced_calls`)."""
    return paced_calls(stub.Lookup, [pb.LookupRequest(number=n) for n in numbers], rate, keep,
                       timeout=timeout, what="lookups")


# ====================================================================== propagation


class HeadWatcher:
    """One thread per node polling GetFeedHeads every `interval` seconds;
    remembers, per node and issuer, when each new head was first seen (the
    answer of the poll that showed it) and when the poll before it was sent
    (the head was not there yet then: the earliest it can have come)."""

    def __init__(self, net: LocalNet, interval: float) -> None:
        self.interval = interval
        self.stubs = {pid: net.public(pid) for pid in net.ids}
        self.seen: dict[str, dict[str, list[tuple[int, float, float]]]] = {p: {} for p in net.ids}
        self.polls = dict.fromkeys(net.ids, 0)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(pid,), name=f"heads-{pid}", daemon=True)
            for pid in net.ids
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _run(self, pid: str) -> None:
        stub, seen, last = self.stubs[pid], self.seen[pid], {}
        before = time.perf_counter()  # when the previous poll was sent
        while not self._stop.is_set():
            sent = time.perf_counter()
            try:
                heads = stub.GetFeedHeads(pb.FeedHeadsRequest(), timeout=2).heads
            except grpc.RpcError:
                heads = []
            now = time.perf_counter()
            self.polls[pid] += 1
            for h in heads:
                if h.seq > last.get(h.issuer, 0):
                    last[h.issuer] = h.seq
                    seen.setdefault(h.issuer, []).append((h.seq, now, before))
            before = sent
            pause = sent + self.interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

    def head(self, pid: str, issuer: str) -> int:
        got = self.seen[pid].get(issuer)
        return got[-1][0] if got else 0

    def first_seen(self, pid: str, issuer: str, seq: int) -> float | None:
        """When a poll of `pid` first showed `issuer`'s feed at `seq` or beyond."""
        got = self.seen[pid].get(issuer, [])
        i = bisect.bisect_left(got, (seq, float("-inf"), float("-inf")))
        return got[i][1] if i < len(got) else None

    def not_before(self, pid: str, issuer: str, seq: int) -> float | None:
        """When the poll before that one was sent: `seq` came to `pid` later."""
        got = self.seen[pid].get(issuer, [])
        i = bisect.bisect_left(got, (seq, float("-inf"), float("-inf")))
        return got[i][2] if i < len(got) else None


def bench_propagation(
    seconds: float = 20.0, rate: float = 200.0, poll_ms: float = POLL_MS, **topology: int
) -> dict:
    """p99 seconds until a record issued at one node is on all of them (see
    module doc); `topology`: LocalNet's participant counts (default six nodes)."""
    with ingest.scratch_dir() as d:
        net = LocalNet(d / "consortium", **topology)
        try:
            net.start_all()
            return _propagation(net, seconds, rate, poll_ms / 1000)
        finally:
            net.stop_all()


def bench_propagation_12(
    seconds: float = 20.0, rate: float = 200.0, poll_ms: float = POLL_MS
) -> dict:
    """propagation_p99 with the twelve nodes of TWELVE, the same target."""
    return bench_propagation(seconds, rate, poll_ms, **TWELVE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, timeout: float) -> float:
    """Wait until process `pid` used under QUIET_CORES of CPU over a whole
    QUIET_WINDOW_S (its start's background work done: a started node makes
    its screen rows after it answers); returns the seconds waited."""
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(QUIET_WINDOW_S)
        if cpu_seconds(pid) - before < QUIET_CORES * QUIET_WINDOW_S:
            break
    return time.perf_counter() - start


def nodes_cpu_seconds(net: LocalNet) -> float:
    """CPU seconds all of `net`'s running node processes have used."""
    return sum(cpu_seconds(n.proc.pid) for n in net.nodes.values() if n.proc is not None)


def mean_envelope_bytes(net: LocalNet, pid: str, limit: int = 5000) -> tuple[float, int]:
    """The mean size of the first `limit` signed envelopes in `pid`'s log
    (read through Audit.GetEntries) and how many were read."""
    size = net.log_size(pid)
    end = min(size, limit)
    sizes: list[int] = []
    while len(sizes) < end:
        got = (
            net.audit(pid)
            .GetEntries(pb.GetEntriesRequest(start=len(sizes), end=end), timeout=30)
            .envelopes
        )
        if not got:
            raise AssertionError(f"{pid} returned no entries at {len(sizes)} of {end}")
        sizes.extend(len(e) for e in got)
    if not sizes:
        raise AssertionError(f"{pid}'s log is empty")
    return sum(sizes) / len(sizes), len(sizes)


def _propagation(net: LocalNet, seconds: float, rate: float, interval: float) -> dict:
    # Warm up: every node serving, channels and push streams open.
    for k, pid in enumerate(ISSUING_NODES):
        net.mark(pid, mark_number(10_000_000 + k), "harassment")
    net.wait_converged(timeout=60)
    # What the nodes burn with nothing to carry: anti-entropy rounds and cosigning, per link.
    idle0, t0 = nodes_cpu_seconds(net), time.perf_counter()
    time.sleep(IDLE_S)
    idle = (nodes_cpu_seconds(net) - idle0) / (time.perf_counter() - t0)
    watcher = HeadWatcher(net, interval)
    watcher.start()
    stubs = {pid: net.admin(pid) for pid in ISSUING_NODES}
    returned: list[tuple[str, int, float]] = []
    failed: list[str] = []
    done = threading.Semaphore(0)

    def on_done(pid: str, fut: grpc.Future) -> None:
        t = time.perf_counter()
        try:
            returned.append((pid, fut.result().seq, t))
        except grpc.RpcError as e:
            failed.append(f"{pid}: {e.code().name}")
        done.release()

    total = max(1, int(seconds * rate))
    cpu0, own0 = nodes_cpu_seconds(net), time.process_time()
    start = time.perf_counter() + 0.05
    try:
        for i in range(total):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            pid = ISSUING_NODES[i % len(ISSUING_NODES)]
            mark = rpb.Mark(
                number=mark_number(i), category=CATEGORIES[i % len(CATEGORIES)], score=60, reports=1
            )
            stubs[pid].IssueMark.future(mark, timeout=30).add_done_callback(
                functools.partial(on_done, pid)
            )
        sent_s = time.perf_counter() - start
        for _ in range(total):
            if not done.acquire(timeout=60):
                raise TimeoutError("issue calls did not return within 60 s")
        want = {pid: max((s for p, s, _ in returned if p == pid), default=0) for pid in stubs}
        deadline = time.monotonic() + 60
        while any(watcher.head(n, i) < s for n in net.ids for i, s in want.items()):
            if time.monotonic() > deadline:
                raise TimeoutError("records did not reach every node within 60 s")
            time.sleep(0.05)
        timed_s = time.perf_counter() - start
        cpu, own = nodes_cpu_seconds(net) - cpu0, time.process_time() - own0
    finally:
        watcher.stop()
    delays, earliest = [], []
    for pid, seq, t in returned:
        seen = [watcher.first_seen(n, pid, seq) for n in net.ids if n != pid]
        if any(s is None for s in seen):
            raise AssertionError(f"{pid}#{seq} was never seen on some node")
        delays.append(max(0.0, max(seen) - t))  # type: ignore[type-var]
        low = [watcher.not_before(n, pid, seq) for n in net.ids if n != pid]
        earliest.append(max(0.0, max(low) - t))  # type: ignore[type-var]
    delays.sort()
    earliest.sort()
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    polls = sum(watcher.polls.values()) / len(net.ids) / max(sent_s, 1e-9)
    envelope, counted = mean_envelope_bytes(net, ISSUING_NODES[0])
    nodes = len(net.ids)
    how = (
        f"p99 {p99 * 1000:.0f} ms, p50 {p50 * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms from "
        f"the return of Admin.IssueMark until GetFeedHeads showed the record on all {nodes} "
        f"nodes ({', '.join(net.ids)}); "
        f"{len(returned)} marks at {len(returned) / sent_s:.0f}/s for {sent_s:.0f} s, issued "
        f"in turn at {', '.join(ISSUING_NODES)}; each node polled by its own thread every "
        f"{interval * 1000:.0f} ms (achieved {polls:.0f} polls/s per node; a record's time "
        f"there is the answer time of the first poll showing it, an upper bound: from the "
        f"sending of the poll before it, the lower bound, p99 "
        f"{percentile(earliest, 99) * 1000:.0f} ms, p50 {percentile(earliest, 50) * 1000:.0f} "
        f"ms); {nodes} node processes on "
        f"loopback, mutual TLS; the nodes used {cpu:.0f} CPU-s in the {timed_s:.0f} s from "
        f"the first issue until every node held the last ({cpu / timed_s:.1f} of "
        f"{workers()} cores; {cpu / max(1, len(returned)) * 1000:.1f} CPU-ms per record "
        f"over all nodes; idle before it, no record flowing, {idle:.2f} cores for "
        f"{IDLE_S:.0f} s), this benchmark's own process {own:.0f} CPU-s; mean signed envelope "
        f"{envelope:.0f} B (the first {counted} entries of {ISSUING_NODES[0]}'s log, "
        f"Audit.GetEntries); {len(failed)} issue calls failed"
    )
    if failed:
        how += f" ({', '.join(sorted(set(failed)))})"
    return report.latency(p99, "s", PROPAGATION_TARGET_S, how)


# ====================================================================== catch-up


def bench_catchup(
    n: int = 200_000, source: str = "carrier-1", fresh: str = "internet-2", **topology: int
) -> dict:
    """Records/s for a fresh node to take an n-record log from one peer, vs
    single-node in-process ingest of the same envelopes (see module doc);
    `topology`: LocalNet's participant counts (default six nodes)."""
    with ingest.scratch_dir() as d:
        net = LocalNet(d / "consortium", **topology)
        try:
            return _catchup(net, n, source, fresh)
        finally:
            net.stop_all()


def bench_catchup_12(n: int = 200_000) -> dict:
    """catchup with the twelve nodes of TWELVE (ten feeds, ten peers refused)."""
    return bench_catchup(n, **TWELVE)


def _catchup(net: LocalNet, n: int, source: str, fresh: str) -> dict:
    # Every node that may mark (the complaints centre and the regulator issue only their own).
    roles = {p.id: p.role for p in net.consortium.participants}
    issuers = [pid for pid in net.ids if roles[pid] not in ROLE_PAYLOADS]
    marks: dict[str, list[MarkSpec]] = {pid: [] for pid in issuers}
    for i in range(n):
        marks[issuers[i % len(issuers)]].append(
            (mark_number(i), CATEGORIES[i % len(CATEGORIES)], 50 + i % 50)
        )
    t = time.perf_counter()
    feeds: dict[str, list[bytes]] = {pid: [] for pid in issuers}
    for batch in signed_feeds(
        consortium_seeds(net, issuers), marks, past_ms(), consortium=net.consortium.name
    ):
        feeds[Record.from_envelope(batch[0]).issuer].extend(batch)
    sign_s = time.perf_counter() - t
    # Issuers take turns, so every batch of 1000 extends every feed.
    envelopes = [feeds[issuers[i % len(issuers)]][i // len(issuers)] for i in range(n)]
    del feeds
    # The limit, measured while it fills the source node's data directory.
    data_dir = net.dir / source / "data"
    limit_s = ingest.run_ours(envelopes, net.consortium, data_dir)
    del envelopes
    t = time.perf_counter()
    net.start(source, wait=False)
    net.wait_ready(source, timeout=120 + n / 1000)  # it first builds its view from the log
    source_start_s = time.perf_counter() - t
    # The peer's screen rows of its whole view are made after it answers: the
    # catch-up is timed once they are (they would take the cores it runs on).
    proc = net.nodes[source].proc
    assert proc is not None
    settle_s = wait_quiet(proc.pid, timeout=60 + n / 1000)
    if net.log_size(source) != n:
        raise AssertionError(f"{source} holds {net.log_size(source)} records, not {n}")
    others = [p for p in net.ids if p not in (source, fresh)]
    refuse = net.refuse_file(fresh)
    refuse.write_text("\n".join([source, *others]))
    net.start(fresh)
    if net.log_size(fresh) != 0:
        raise AssertionError(f"{fresh} did not start empty")
    start = time.perf_counter()
    refuse.write_text("\n".join(others))  # from now on `source` is its only peer
    deadline = time.monotonic() + 120 + n / 500
    while (size := net.log_size(fresh)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{fresh} holds {size} of {n} records after the deadline")
        time.sleep(0.05)
    took = time.perf_counter() - start
    value, limit = n / took, n / limit_s
    how = (
        f"a fresh empty node ({fresh}) took {n} records ({len(issuers)} feeds) from its one "
        f"reachable peer ({source}; the other {len(others)} refused by the test hook; "
        f"{len(net.ids)} nodes) in {took:.1f} s, timed from the "
        f"moment that peer was let through (node already up; default anti-entropy: heads, then "
        f"Pull in batches; the node's view updated as records land) until its feed heads "
        f"summed to {n}; limit: NodeLedger.submit of the same envelopes in-process, batches "
        f"of {ingest.BATCH}, into the peer's fresh on-disk store ({limit_s:.1f} s; "
        f"bench.ingest.run_ours); signing took {sign_s:.1f} s, the peer's start "
        f"(view rebuilt from its log) {source_start_s:.1f} s and its settling (until it used "
        f"under {QUIET_CORES} cores for {QUIET_WINDOW_S:.0f} s: its screen rows made) "
        f"{settle_s:.1f} s, none timed"
    )
    return report.throughput(value, "records/s", limit, CATCHUP_TARGET, how)


if __name__ == "__main__":
    which = sys.argv[1:] or ["propagation", "catchup"]
    quick = os.environ.get("BENCH_QUICK") == "1"
    out: dict[str, Any] = {}
    if "propagation" in which:
        out["propagation_p99"] = bench_propagation(5.0 if quick else 20.0)
    if "propagation_12" in which:
        out["propagation_p99_12"] = bench_propagation_12(5.0 if quick else 20.0)
    if "catchup" in which:
        out["catchup"] = bench_catchup(20_000 if quick else 200_000)
    if "catchup_12" in which:
        out["catchup_12"] = bench_catchup_12(20_000 if quick else 200_000)
    print(json.dumps(out, indent=2))
