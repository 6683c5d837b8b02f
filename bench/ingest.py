"""Ingest benchmark: signed records appended to a node's store, against the
raw limit of the work no ingest path can avoid, measured in the same run.

    ours   NodeLedger.submit in batches of BATCH envelopes into a fresh Store on
           disk: parse and check each record (structure, E.164 number, issuer,
           signature, role, taxonomy, clock, feed position), Merkle append,
           one atomic synced WriteBatch per batch.
    limit  a tight loop over the same envelopes: Ed25519 verify (the issuer's
           cryptography key) + SHA-256 of the envelope + a rocksdict
           WriteBatch put of the envelope under its hash, written as synced
           batches of the same size into a fresh rocksdict database.

Records come from several issuers with fixed test keys, interleaved so every
batch extends several feeds, and are all signed before any timing starts.
`python -m bench.ingest [N]` prints the result as JSON.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from keys.consortium import Consortium, Participant
from keys.signing import SigningKey
from ledger.log import NodeLedger
from ledger.record import Mark, Record, record_context
from ledger.store import Store

BATCH = 1000
TARGET = 0.7
NOW = 1_790_000_000_000  # a fixed "now"; records are issued just before it
ROLES = {
    "institute": "institute",
    "carrier-1": "carrier",
    "carrier-2": "carrier",
    "internet-1": "internet",
    "internet-2": "internet",
}
CATEGORIES = ("fraud", "harassment", "marketing", "debt-collection", "delivery")


def bench_key(pid: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"markex bench key " + pid.encode()).digest())


KEYS = {pid: bench_key(pid) for pid in ROLES}
CONSORTIUM = "markex-bench"  # the name bench_consortium() has, which every record signs


def bench_consortium() -> Consortium:
    """A small consortium like the tests' (the benchmark does not import tests)."""
    weights = {"institute": 5, "carrier": 2, "internet": 1}
    parts = tuple(
        Participant(pid, role, KEYS[pid].public_bytes, weights[role], "", "")
        for pid, role in ROLES.items()
    )
    ranges = {"carrier-1": ("+86138", "+86139", "+8610"), "carrier-2": ("+86130", "+86131")}
    return Consortium(CONSORTIUM, parts, ranges)


def signed_records(n: int) -> list[Record]:
    """n marks, issuers taking turns, each issuer's records chained into its feed."""
    issuers = list(ROLES)
    heads = {pid: (0, b"") for pid in issuers}
    out = []
    for i in range(n):
        pid = issuers[i % len(issuers)]
        seq, prev = heads[pid]
        mark = Mark(
            number=f"+86138{(i * 7919) % 10**8:08d}",
            category=CATEGORIES[i % len(CATEGORIES)],
            score=50 + i % 50,
            reports=1 + i % 9,
            observed_at_ms=NOW - 60_000,
            evidence_digest=hashlib.sha256(i.to_bytes(8, "big")).digest(),
        )
        rec = Record.issue(KEYS[pid], pid, seq + 1, prev, NOW - 1000, mark, consortium=CONSORTIUM)
        heads[pid] = (rec.seq, rec.id)
        out.append(rec)
    return out


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh directory on disk (BENCH_TMPDIR, or the system temp dir)."""
    d = Path(tempfile.mkdtemp(prefix="markex-bench-", dir=os.environ.get("BENCH_TMPDIR")))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_ours(envelopes: list[bytes], consortium: Consortium, path: Path) -> float:
    """Seconds for NodeLedger.submit of every envelope, BATCH at a time."""
    ledger = NodeLedger(Store(path), consortium, "carrier-1")
    try:
        batches = _batches(envelopes, BATCH)
        gc.collect()
        start = time.perf_counter()
        for batch in batches:
            ledger.submit(batch, NOW)
        elapsed = time.perf_counter() - start
        if ledger.size != len(envelopes):
            raise AssertionError(f"the ledger accepted {ledger.size} of {len(envelopes)} records")
    finally:
        ledger.close()
    return elapsed


def run_limit(records: list[Record], consortium: Consortium, path: Path) -> float:
    """Seconds for verify + SHA-256 + synced batch put of the same envelopes."""
    db = Rdict(str(path), Options(raw_mode=True))
    sync = WriteOptions()
    sync.sync = True
    sha256 = hashlib.sha256
    try:
        batches = _batches(
            [(consortium.participant(r.issuer), r.signature, r.body, r.envelope) for r in records],
            BATCH,
        )
        gc.collect()
        start = time.perf_counter()
        context = record_context(consortium.name)
        for batch in batches:
            wb = WriteBatch(raw_mode=True)
            for p, sig, body, env in batch:
                if not p.verify(sig, context + body):
                    raise AssertionError("a benchmark record does not verify")
                wb.put(sha256(env).digest(), env)
            db.write(wb, sync)
        elapsed = time.perf_counter() - start
    finally:
        db.close()
    return elapsed


def bench_ingest(n: int, rounds: int = 2) -> dict[str, Any]:
    """Records/s appended by NodeLedger.submit vs the raw limit; best of `rounds`
    alternating runs, each into a fresh store."""
    consortium = bench_consortium()
    records = signed_records(n)
    envelopes = [r.envelope for r in records]
    ours_s = limit_s = float("inf")
    for _ in range(rounds):
        with scratch_dir() as d:
            ours_s = min(ours_s, run_ours(envelopes, consortium, d / "node"))
        with scratch_dir() as d:
            limit_s = min(limit_s, run_limit(records, consortium, d / "raw"))
    ours = n / ours_s
    limit = n / limit_s
    return {
        "value": ours,
        "unit": "records/s",
        "limit": limit,
        "ratio": ours / limit,
        "target": TARGET,
        "how": (
            f"{n} signed marks from 5 issuers through NodeLedger.submit in synced batches of "
            f"{BATCH} into a fresh on-disk store, vs a tight loop of Ed25519 verify + SHA-256 + "
            f"rocksdict WriteBatch put over the same envelopes in synced batches of {BATCH} "
            f"(best of {rounds}, one process)"
        ),
    }


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(json.dumps(bench_ingest(size), indent=2))
