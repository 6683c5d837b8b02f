"""lookup_batch_workers: the public port on every core (node/workers.py).

One node (node.localnet) with a view of N entries, written into its store
before it starts as bench.view_bench does, is run as one process
(`--workers 1`) and with `--workers` = the cores, alternately, `rounds`
times each, in the same benchmark. Each run is driven by the same client:
one process, CONNECTIONS channels of their own (each its own TCP connection,
so the kernel's SO_REUSEPORT hash spreads them over the workers), one call in
flight on each, sending batches of 1000 numbers (half in the view, half not,
with_proofs false) for `seconds`. The client is as cheap as gRPC allows so
that it is not what bounds the server on a machine it shares: the requests
are encoded once before the run and the answers are taken as bytes (a
channel method without serializers); they are decoded only after the timed
window (every distinct answer: the numbers found and the view root, checked
against the view). The client's own CPU over the window is reported.

A first pass over every batch (untimed) warms each process's caches, so the
one process and the workers are timed in the same cache state.

    value   numbers/s with workers = cores (summed over the rounds)
    limit   cores x numbers/s of the one process (same client, same run)
    ratio   value / limit; target 0.8 (issue 17: at least 0.8 x the cores)

`python -m bench.workers_bench` prints JSON (BENCH_QUICK=1: small).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import ingest, report
from bench.exchange_bench import mark_number
from bench.view_bench import BATCH, NODE, SEED, _fill, _mix
from node.localnet import LocalNet
from node.workers import default_workers

TARGET = 0.8
CONNECTIONS = 16  # channels of the client; enough that the kernel's hash feeds every worker
METHOD = "/markex.v1.Public/LookupBatch"


@dataclass(frozen=True)
class Drive:
    """What one client run measured (numbers answered over the timed window)."""

    numbers: int
    started: float  # wall time (time.time) of the window's start
    seconds: float
    client_cpu_s: float
    # batch index -> numbers found, of every distinct answer; the view roots answered under
    found: list[tuple[int, int]]
    roots: frozenset[str]


def _drive(directory: str, endpoint: str, requests: list[bytes], seconds: float,
           connections: int) -> Drive:
    """The client process: `connections` channels, one blocking call in
    flight on each, cycling over `requests` (each channel from its own
    offset) until `seconds` have passed after a warm-up pass over all of them."""
    import grpc

    from ledger import note
    from ledger import view as V
    from markex.v1 import service_pb2 as pb

    ca = (Path(directory) / "ca" / "ca.pem").read_bytes()
    channels = [
        grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(ca), options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.use_local_subchannel_pool", 1),  # a connection of its own, not a shared one
        ])
        for _ in range(connections)
    ]
    # Raw bytes in and out: no serializer on either side of the client.
    calls = [ch.unary_unary(METHOD) for ch in channels]
    first: dict[int, bytes] = {}   # batch index -> the first answer's bytes
    other: set[tuple[int, bytes]] = set()  # a later answer that differs (a re-signed note)
    lock = threading.Lock()

    def warm(c: int) -> None:
        for i in range(c, len(requests), connections):
            got = calls[c](requests[i], timeout=60)
            with lock:
                first.setdefault(i, got)

    counts = [0] * connections
    stop_at = [0.0]

    def run(c: int) -> None:
        i = (c * len(requests)) // connections
        n = 0
        while time.perf_counter() < stop_at[0]:
            got = calls[c](requests[i], timeout=60)
            if got != first[i]:  # a memcmp; equal answers need no second decoding
                with lock:
                    other.add((i, got))
            n += 1
            i = (i + 1) % len(requests)
        counts[c] = n

    for fn in (warm, run):
        threads = [threading.Thread(target=fn, args=(c,)) for c in range(connections)]
        if fn is run:
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            t0, wall0 = time.perf_counter(), time.time()
            stop_at[0] = t0 + seconds
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    took = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for ch in channels:
        ch.close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    found, roots = [], set()
    for i, raw in [*first.items(), *other]:
        resp = pb.LookupBatchResponse.FromString(raw)
        found.append((i, sum(1 for r in resp.results if r.entry)))
        cp = V.parse_view_checkpoint(note.Note.parse(resp.view_checkpoint).text)
        roots.add(cp.root.hex())
    answered = sum(counts) * BATCH
    return Drive(answered, wall0, took, cpu, found, frozenset(roots))


def _server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by the node process `pid` and its workers."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


@dataclass
class Tally:
    """One configuration's runs, summed."""

    numbers: int = 0
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0

    def add(self, d: Drive, server_cpu_s: float) -> None:
        self.numbers += d.numbers
        self.seconds += d.seconds
        self.client_cpu_s += d.client_cpu_s
        self.server_cpu_s += server_cpu_s

    @property
    def rate(self) -> float:
        return self.numbers / self.seconds

    def client_cores(self) -> float:
        return self.client_cpu_s / self.seconds

    def per_cpu_s(self) -> float:
        return self.numbers / max(self.server_cpu_s, 1e-3)


class CpuSampler:
    """The node's CPU seconds (process and workers), sampled every SAMPLE_S
    on a thread, so the timed window's share can be read after it."""

    SAMPLE_S = 0.05

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.samples.append((time.time(), _server_cpu_s(self.pid)))
            if self._stop.wait(self.SAMPLE_S):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> float:
        """CPU seconds from the last sample at or before t0 to the first at or after t1."""
        before = [c for t, c in self.samples if t <= t0] or [self.samples[0][1]]
        after = [c for t, c in self.samples if t >= t1] or [self.samples[-1][1]]
        return after[0] - before[-1]


def _run(net: LocalNet, pool: ProcessPoolExecutor, requests: list[bytes], seconds: float,
         connections: int, expected: list[int]) -> tuple[Drive, float]:
    """One client run against the node as started, and the node's CPU
    seconds over the timed window (within a sample either side)."""
    ep = net.consortium.participant(NODE).public_endpoint  # type: ignore[union-attr]
    sampler = CpuSampler(net.nodes[NODE].proc.pid)  # type: ignore[union-attr]
    try:
        d = pool.submit(_drive, str(net.dir), ep, requests, seconds, connections).result()
    finally:
        sampler.stop()
    cpu = sampler.between(d.started, d.started + d.seconds)
    wrong = [(i, n, expected[i]) for i, n in d.found if n != expected[i]]
    if wrong:
        raise AssertionError(f"batches answered with the wrong entries (batch, found, in): "
                             f"{wrong[:5]}")
    return d, cpu


def bench_lookup_batch_workers(entries: int = 200_000, seconds: float = 8.0,
                               workers: int | None = None, rounds: int = 2,
                               connections: int = CONNECTIONS) -> dict[str, Any]:
    from markex.v1 import service_pb2 as pb

    cores = default_workers()
    n_workers = workers or cores
    rng = random.Random(SEED)
    numbers = max(20 * BATCH, min(entries, 200_000))
    mix = _mix(rng, entries, numbers)
    batches = [mix[i : i + BATCH] for i in range(0, len(mix), BATCH)]
    present = {mark_number(i) for i in range(entries)}
    expected = [sum(1 for n in b if n in present) for b in batches]
    requests = [pb.LookupBatchRequest(numbers=b, with_proofs=False).SerializeToString()
                for b in batches]
    tallies = {1: Tally(), n_workers: Tally()}
    roots: set[str] = set()
    ctx = multiprocessing.get_context("spawn")
    with ingest.scratch_dir() as d, ProcessPoolExecutor(1, mp_context=ctx) as pool:
        net = LocalNet(d / "consortium")
        try:
            _fill(net, entries)
            for _ in range(rounds):
                for w in (1, n_workers):
                    net.start(NODE, workers=w)
                    try:
                        drive, cpu = _run(net, pool, requests, seconds, connections, expected)
                    finally:
                        net.terminate(NODE)
                    tallies[w].add(drive, cpu)
                    roots |= drive.roots
        finally:
            net.stop_all()
    if len(roots) != 1:
        raise AssertionError(f"the runs answered under different view roots: {roots}")
    one, many = tallies[1], tallies[n_workers]
    limit = one.rate * n_workers
    how = (
        f"Public.LookupBatch over TLS on loopback, batches of {BATCH} numbers (half in the "
        f"view of {entries} entries, half not; {len(batches)} distinct batches, every answer "
        f"checked after the window), with_proofs false; {rounds} alternating rounds of "
        f"{seconds:g} s each of --workers 1 and --workers {n_workers}, after an untimed pass "
        f"over every batch; one client process, {connections} connections with one call in "
        f"flight each, requests encoded before the run, answers read as bytes; value: the "
        f"node with --workers {n_workers} ({many.rate / n_workers:,.0f} numbers/s per "
        f"worker); limit: {n_workers} x the same node as one process (--workers 1: "
        f"{one.rate:,.0f} numbers/s), same client, same run; ratio = value / limit; this "
        f"machine has {cores} cores, shared with the client and any other load; the client "
        f"used {one.client_cores():.2f} cores against one process and "
        f"{many.client_cores():.2f} against the workers; numbers answered per CPU second of "
        f"the node's processes (sampled every 50 ms): {one.per_cpu_s():,.0f} as one process, "
        f"{many.per_cpu_s():,.0f} with the workers"
    )
    return report.throughput(many.rate, "numbers/s", limit, TARGET, how)


if __name__ == "__main__":
    quick = os.environ.get("BENCH_QUICK") == "1"
    kw: dict[str, Any] = {"entries": 20_000, "seconds": 3.0} if quick else {}
    json.dump(bench_lookup_batch_workers(**kw), sys.stdout, indent=2)
    print()
