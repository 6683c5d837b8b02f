"""Bulk-issue benchmark (`bulk_issue`): records/s from a file to durable
acknowledgement through gRPC, against the `ingest` limit in the same run.

    ours   `markex import --as carrier-1 FILE --json` (in this process, over
           TLS to carrier-1's node, a real process on loopback): read and
           check the CSV, derive each line's idempotency key, stream the items
           through Admin.IssueMany; the node signs each (its signing stage,
           a group ahead of the writer), checks it, appends it in group
           commits (the key in the record's atomic synced batch), updates
           its view, and acknowledges it. Timed from the command's
           start until it returned (every line acknowledged durable).
    limit  bench/ingest.py's `run_limit` over the very records the node
           signed: Ed25519 verify + SHA-256 + synced rocksdict batch puts.

Only carrier-1's node runs (its one peer, the institute, is down), so no
replication shares the machine's cores with the measured path.
`python -m bench.import_bench [N]` prints the result as JSON.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.ingest import run_limit, scratch_dir
from keys.layout import NodeConfig
from ledger.log import NodeLedger
from ledger.record import Record
from ledger.store import Store
from node.localnet import LocalNet

TARGET = 0.7
ISSUER = "carrier-1"
READ_BATCH = 5000


def write_file(path: Path, n: int) -> None:
    """n marks on distinct numbers as a CSV with every column but the key."""
    cats = ("fraud", "harassment", "marketing", "debt-collection", "one-ring")
    with path.open("w", encoding="utf-8") as f:
        f.write("number,category,score,reports,expires_days\n")
        for i in range(n):
            f.write(f"+86135{i:08d},{cats[i % len(cats)]},{40 + i % 61},{1 + i % 9},"
                    f"{30 + i % 150}\n")


def run_import(net: LocalNet, path: Path) -> tuple[float, dict[str, Any]]:
    """Seconds for `markex import` of path as carrier-1, and its summary."""
    from node.cli import main
    from node.client import INSTITUTE_KEY_ENV

    key = NodeConfig.for_participant(net.dir, "institute").institute_key
    old = os.environ.get(INSTITUTE_KEY_ENV)
    os.environ[INSTITUTE_KEY_ENV] = base64.b64encode(key).decode()
    out, err = io.StringIO(), io.StringIO()
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["import", "--consortium", str(net.dir), "--as", ISSUER, str(path),
                         "--json"])
        elapsed = time.perf_counter() - start
    finally:
        if old is None:
            os.environ.pop(INSTITUTE_KEY_ENV, None)
        else:
            os.environ[INSTITUTE_KEY_ENV] = old
    if code != 0:
        raise AssertionError(f"markex import failed ({code}): {err.getvalue()[-2000:]}")
    return elapsed, json.loads(out.getvalue())


def signed_records(net: LocalNet, n: int) -> list[Record]:
    """The n records carrier-1's node signed, read from its stopped store."""
    cfg = NodeConfig.for_participant(net.dir, ISSUER)
    led = NodeLedger(Store(cfg.data_dir, read_only=True), net.consortium, ISSUER)
    try:
        envs: list[bytes] = []
        while len(envs) < n:
            got = led.records_after(ISSUER, len(envs), READ_BATCH)
            if not got:
                break
            envs.extend(got)
    finally:
        led.close()
    if len(envs) != n:
        raise AssertionError(f"the node holds {len(envs)} of its {n} records")
    return [Record.from_envelope(e) for e in envs]


def one_round(n: int) -> tuple[float, float]:
    """(seconds of the import, seconds of the limit over the records it made)."""
    with scratch_dir() as d:
        net = LocalNet(d / "c", carriers=1, internet=0, sync_interval=0.5)
        path = d / "marks.csv"
        write_file(path, n)
        try:
            net.start(ISSUER)
            ours_s, summary = run_import(net, path)
        finally:
            net.stop_all()
        if summary["issued"] != n or summary["errors"]:
            raise AssertionError(f"the import issued {summary['issued']} of {n}: {summary}")
        records = signed_records(net, n)
        return ours_s, run_limit(records, net.consortium, d / "raw")


def bench_bulk_issue(n: int, rounds: int = 2) -> dict[str, Any]:
    """Records/s of `markex import` vs the ingest limit; each the best of
    `rounds` alternating runs, each run on a fresh node."""
    ours_s = limit_s = float("inf")
    for _ in range(rounds):
        o, lim = one_round(n)
        ours_s, limit_s = min(ours_s, o), min(limit_s, lim)
    return report.throughput(
        n / ours_s, "records/s", n / limit_s, TARGET,
        f"`markex import` of a {n}-line CSV of marks through Admin.IssueMany over TLS to a "
        "real node process (sign a group ahead of the writer, check, group commit with the "
        "keys, view; the screen's rows "
        "built on their own thread, resting while the writer has work) until the last "
        "durable acknowledgement, vs bench/ingest.py's run_limit (Ed25519 verify + SHA-256 "
        f"+ synced rocksdict batches) over the same records; each the best of {rounds} runs",
    )


if __name__ == "__main__":
    print(json.dumps(bench_bulk_issue(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000),
                     indent=2))
