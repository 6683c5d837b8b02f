"""lookup_batch_workers: the public port on every core (node/workers.py).

One node (node.localnet) with a view of N entries, written into its store
before it starts as bench.view_bench does, is run twice in the same
benchmark: once as one process (`--workers 1`) and once with `--workers` =
the cores. Each time the same batches of 1000 numbers (half in the view,
half not, with_proofs false) are sent by several client processes (each its
own channel, hence its own connection, two calls in flight), so the client
is not the bottleneck; numbers/s = numbers answered / (last answer - first
call). Both runs must find exactly the numbers present and answer under the
same view root.

    value   numbers/s with workers = cores
    limit   cores x numbers/s of the one process (measured in the same run)
    ratio   value / limit; target 0.8 (issue 17: at least 0.8 x the cores)

`python -m bench.workers_bench` prints JSON (BENCH_QUICK=1: small).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench import ingest, report
from bench.view_bench import BATCH, NODE, SEED, _fill, _mix
from node.localnet import LocalNet
from node.workers import default_workers

TARGET = 0.8
CALLS_IN_FLIGHT = 2  # per client process


def _client(directory: str, endpoint: str, batches: list[list[str]],
            start_at: float) -> tuple[int, int, float, float, list[str]]:
    """One client process: its own channel, CALLS_IN_FLIGHT threads sending
    `batches` from wall time `start_at`. Returns (numbers, found, first call,
    last answer, view roots seen)."""
    from ledger import note
    from ledger import view as V
    from markex.v1 import service_pb2 as pb
    from markex.v1 import service_pb2_grpc as rpc
    from node import client

    ch = client.public_channel(Path(directory), endpoint)
    stub = rpc.PublicStub(ch)
    stub.LookupBatch(pb.LookupBatchRequest(numbers=batches[0], with_proofs=False), timeout=60)
    lock = threading.Lock()
    todo = list(batches)
    found = [0]
    notes: set[str] = set()

    def run() -> None:
        while True:
            with lock:
                if not todo:
                    return
                b = todo.pop()
            resp = stub.LookupBatch(pb.LookupBatchRequest(numbers=b, with_proofs=False),
                                    timeout=60)
            hits = sum(1 for r in resp.results if r.entry)
            with lock:
                found[0] += hits
                notes.add(resp.view_checkpoint)

    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.time()
    threads = [threading.Thread(target=run) for _ in range(CALLS_IN_FLIGHT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.time()
    ch.close()
    roots = sorted({V.parse_view_checkpoint(note.Note.parse(n).text).root.hex() for n in notes})
    return sum(len(b) for b in batches), found[0], t0, t1, roots


def _measure(net: LocalNet, batches: list[list[str]], clients: int) -> tuple[float, int, set]:
    """numbers/s of `clients` processes sending `batches` (dealt round robin)."""
    ep = net.consortium.participant(NODE).public_endpoint  # type: ignore[union-attr]
    shares = [batches[i::clients] for i in range(clients)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(clients, mp_context=ctx) as pool:
        start_at = time.time() + 3.0  # every client imported and connected by then
        futs = [pool.submit(_client, str(net.dir), ep, s, start_at) for s in shares]
        got = [f.result() for f in futs]
    numbers = sum(g[0] for g in got)
    found = sum(g[1] for g in got)
    took = max(g[3] for g in got) - min(g[2] for g in got)
    return numbers / took, found, {r for g in got for r in g[4]}


def bench_lookup_batch_workers(entries: int = 200_000, numbers: int = 200_000,
                               workers: int | None = None,
                               clients: int | None = None) -> dict[str, Any]:
    cores = default_workers()
    n_workers = workers or cores
    n_clients = clients or max(2, cores)
    rng = random.Random(SEED)
    with ingest.scratch_dir() as d:
        net = LocalNet(d / "consortium")
        try:
            _fill(net, entries)
            mix = _mix(rng, entries, numbers)
            batches = [mix[i : i + BATCH] for i in range(0, len(mix), BATCH)]
            results = {}
            for w in (1, n_workers):
                net.start(NODE, workers=w)
                try:
                    results[w] = _measure(net, batches, n_clients)
                finally:
                    net.terminate(NODE)
        finally:
            net.stop_all()
    (single, found1, roots1), (multi, found_n, roots_n) = results[1], results[n_workers]
    if found1 != numbers // 2 or found_n != numbers // 2:
        raise AssertionError(f"found {found1} and {found_n} of {numbers}; {numbers // 2} are in")
    if len(roots1 | roots_n) != 1:
        raise AssertionError(f"the runs answered under different view roots: {roots1 | roots_n}")
    limit = single * n_workers
    how = (
        f"Public.LookupBatch over TLS on loopback, {numbers} numbers (half in the view of "
        f"{entries} entries, half not) in batches of {BATCH}, with_proofs false, from "
        f"{n_clients} client processes with {CALLS_IN_FLIGHT} calls in flight each; value: "
        f"the node with --workers {n_workers} ({multi / n_workers:,.0f} numbers/s per worker); "
        f"limit: {n_workers} x the same node as one process (--workers 1: {single:,.0f} "
        f"numbers/s), same view, same batches, same run; ratio = value / limit = value / "
        f"(one process x {n_workers}); this machine has {cores} cores, shared with the "
        f"client processes"
    )
    return report.throughput(multi, "numbers/s", limit, TARGET, how)


if __name__ == "__main__":
    quick = os.environ.get("BENCH_QUICK") == "1"
    kw = {"entries": 20_000, "numbers": 40_000} if quick else {}
    json.dump(bench_lookup_batch_workers(**kw), sys.stdout, indent=2)
    print()
