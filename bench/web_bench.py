"""The web front end through the whole stack: a local consortium of node
processes (node.localnet), `markex web` as its own process reading
carrier-1, and HTTP clients on loopback.

    web_lookup_p99        p99 latency of a number's page (GET /numbers/N:
                          lookup, server-side verification, log checkpoint,
                          records' indexes and inclusion proofs, the HTML)
                          sent open loop at 100 requests/s, each timed from
                          its scheduled send time; target 50 ms, ratio =
                          target / p99 as lookup_p99 reports it.
    web_api_lookup_batch  numbers/s of the JSON API's batch form (POST
                          /api/v1/numbers, 1000 numbers a request, two clients,
                          keep-alive: entries, proofs and the one view
                          checkpoint) against the node's own Public.LookupBatch
                          (batches of 1000, with proofs, two calls in flight)
                          measured in the same run on the same node: ratio =
                          value / limit, target 0.5.

Half the numbers asked are marked (by two participants each), half are not.
Both results come from one run (`web_suite`, cached per arguments).
`python -m bench.web_bench` prints JSON (BENCH_QUICK=1: small)."""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import ingest, report
from bench.exchange_bench import percentile
from markex.v1 import service_pb2 as pb
from node.localnet import LocalNet, free_port_block

NODE = "carrier-1"
RATE = 100.0
P99_TARGET_MS = 50.0
API_TARGET = 0.5
BATCH = 1000
SEED = 14

_SUITES: dict[tuple[int, float], dict[str, dict[str, Any]]] = {}


def bench_web_lookup_p99(marked: int = 400, seconds: float = 10.0) -> dict[str, Any]:
    return web_suite(marked, seconds)["web_lookup_p99"]


def bench_web_api_lookup_batch(marked: int = 400, seconds: float = 10.0) -> dict[str, Any]:
    return web_suite(marked, seconds)["web_api_lookup_batch"]


def web_suite(marked: int, seconds: float) -> dict[str, dict[str, Any]]:
    key = (marked, seconds)
    if key not in _SUITES:
        _SUITES.clear()
        _SUITES[key] = _run(marked, seconds)
    return _SUITES[key]


def _number(i: int) -> str:
    return f"+86138{i:08d}"


def _fill(net: LocalNet, marked: int) -> None:
    """`marked` numbers marked by carrier-1 and by internet-1, through the Admin API."""
    for i in range(marked):
        net.mark("carrier-1", _number(i), "fraud", 70, 2)
        net.mark("internet-1", _number(i), "harassment", 60, 5)
    net.wait_converged(timeout=120)


def _start_web(net: LocalNet) -> tuple[subprocess.Popen[str], int]:
    port = free_port_block(1, start=35000)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "web", "--consortium", str(net.dir), "--as", NODE,
         "--node", NODE, "--listen", f"127.0.0.1:{port}", "--lookups-per-minute", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    assert proc.stdout is not None
    if "http://" not in proc.stdout.readline():
        proc.kill()
        raise RuntimeError("markex web did not start")
    return proc, port


def _settled(port: int, numbers: list[str], timeout: float = 60) -> None:
    """Until every answer verifies and its records are proven in a cosigned log checkpoint."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.monotonic() + timeout
    for n in numbers:
        while True:
            conn.request("GET", f"/api/v1/numbers/{n}")
            rep = json.loads(conn.getresponse().read())
            if rep["verified"]["ok"] and all(x.get("verified") for x in rep["records"]):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} did not settle: {rep.get('verified')}")
            time.sleep(0.3)
    conn.close()


def _paced_pages(port: int, numbers: list[str], rate: float) -> tuple[list[float], float]:
    """GET /numbers/N open loop at `rate`/s from a pool of keep-alive
    connections; latency (ms) from each request's scheduled send time."""
    local = threading.local()
    lat: list[float] = []
    lock = threading.Lock()

    def get(path: str, due: float) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200 or b"data-verified=\"yes\"" not in body:
            raise AssertionError(f"{path}: {r.status}")
        with lock:
            lat.append((time.perf_counter() - due) * 1000)

    with ThreadPoolExecutor(16, thread_name_prefix="web-page") as pool:
        start = time.perf_counter()
        futs = []
        for i, n in enumerate(numbers):
            due = start + i / rate
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            futs.append(pool.submit(get, f"/numbers/{n}", due))
        for f in futs:
            f.result()
        sent = time.perf_counter() - start
    return sorted(lat), sent


def _api_rate(port: int, numbers: list[str], seconds: float) -> float:
    """Numbers/s of POST /api/v1/numbers (batches of BATCH) from two keep-alive
    clients for `seconds`, as the node's LookupBatch limit is measured."""
    stop = time.perf_counter() + seconds
    batch = json.dumps({"numbers": [numbers[i % len(numbers)] for i in range(BATCH)]})
    counts = [0, 0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < stop:
            conn.request("POST", "/api/v1/numbers", batch,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise AssertionError(f"API answered {r.status}: {body[:200]!r}")
            counts[k] += len(json.loads(body)["results"])
        conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(client, range(2)))
    return sum(counts) / (time.perf_counter() - start)


def _batch_rate(net: LocalNet, numbers: list[str], seconds: float) -> float:
    """Numbers/s of Public.LookupBatch (with proofs) on the same node, two calls in flight."""
    stub = net.public(NODE)
    batch = [numbers[i % len(numbers)] for i in range(BATCH)]
    stop = time.perf_counter() + seconds
    done = [0, 0]

    def caller(k: int) -> None:
        while time.perf_counter() < stop:
            req = pb.LookupBatchRequest(numbers=batch, with_proofs=True)
            done[k] += len(stub.LookupBatch(req, timeout=60).results)

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(caller, range(2)))
    return sum(done) / (time.perf_counter() - start)


def _run(marked: int, seconds: float) -> dict[str, dict[str, Any]]:
    rng = random.Random(SEED)
    with ingest.scratch_dir() as d:
        net = LocalNet(d / "consortium", carriers=1, internet=1)
        web = None
        try:
            net.start_all()
            _fill(net, marked)
            web, port = _start_web(net)
            numbers = [_number(i) for i in range(2 * marked)]  # the second half is unmarked
            rng.shuffle(numbers)
            _settled(port, [_number(0), _number(marked)])
            _paced_pages(port, numbers[:50], RATE)  # warm up
            n = max(100, int(seconds * RATE))
            lat, sent = _paced_pages(port, [numbers[i % len(numbers)] for i in range(n)], RATE)
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            api = _api_rate(port, numbers, seconds)
            limit = _batch_rate(net, numbers, seconds)
        finally:
            if web is not None:
                web.terminate()
                web.wait(timeout=20)
            net.stop_all()
    setup = (
        f"markex web as its own process reading {NODE} of a 3-node local consortium "
        f"(node processes, TLS on loopback), {marked} numbers marked by two participants, "
        f"half the numbers asked marked and half not"
    )
    return {
        "web_lookup_p99": report.latency(
            p99, "ms", P99_TARGET_MS,
            f"p99 {p99:.1f} ms, p50 {p50:.1f} ms, max {lat[-1]:.1f} ms: {len(lat)} GET "
            f"/numbers/N at {len(lat) / sent:.0f}/s open loop, each timed from its scheduled "
            f"send (lookup, verification, log checkpoint, record indexes and inclusion proofs, "
            f"HTML); {setup}",
        ),
        "web_api_lookup_batch": report.throughput(
            api, "numbers/s", limit, API_TARGET,
            f"POST /api/v1/numbers with {BATCH} numbers a request, two keep-alive clients for "
            f"{seconds:.0f} s (entries and view proofs as JSON under one checkpoint); limit: "
            f"Public.LookupBatch with proofs on the same node in the same run, batches of "
            f"{BATCH}, two calls in flight; {setup}",
        ),
    }


if __name__ == "__main__":
    quick = os.environ.get("BENCH_QUICK") == "1"
    print(json.dumps(web_suite(100 if quick else 400, 3.0 if quick else 10.0), indent=1))
