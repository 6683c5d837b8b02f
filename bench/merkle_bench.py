"""Merkle log benchmarks against pymerkle doing the same job on the same leaves.

    merkle_append_vs_pymerkle  leaves/s: leaf hash + Frontier append + storing
                               every new complete node (MemoryNodes), against
                               pymerkle InmemoryTree.append_entry.
    merkle_proof_vs_pymerkle   proofs/s: inclusion proof from stored nodes +
                               strict verification, against pymerkle
                               prove_inclusion + verify_inclusion.

Both sides run in the same process, on the same machine, in the same run, and
are checked to agree (roots, proof paths) before anything is reported.
`python -m bench.merkle_bench` prints both results as one JSON object;
BENCH_QUICK=1 uses smaller sizes.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from typing import Any

from pymerkle import InmemoryTree
from pymerkle import verify_inclusion as pymerkle_verify_inclusion

from ledger.merkle import MemoryNodes, inclusion_proof, leaf_hash, verify_inclusion

ENTRY_SIZE = 128  # about one signed envelope
SEED = 9162


def _entries(n: int) -> list[bytes]:
    rng = random.Random(SEED)
    return [rng.randbytes(ENTRY_SIZE) for _ in range(n)]


def _timed(fn: Any) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _result(value: float, unit: str, limit: float, how: str) -> dict[str, Any]:
    return {
        "value": value,
        "unit": unit,
        "limit": limit,
        "ratio": value / limit,
        "target": 1.0,
        "how": how,
    }


def _build_ours(entries: list[bytes]) -> MemoryNodes:
    nodes = MemoryNodes()
    append = nodes.append
    for data in entries:
        append(leaf_hash(data))
    return nodes


def _build_pymerkle(entries: list[bytes]) -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")
    append = tree.append_entry
    for data in entries:
        append(data)
    return tree


def bench_append(n: int) -> dict[str, Any]:
    """Leaves/s appending n entries: ours (leaf hash, Frontier, MemoryNodes) vs pymerkle."""
    entries = _entries(n)
    built: dict[str, Any] = {}
    ours_s = _timed(lambda: built.__setitem__("ours", _build_ours(entries)))
    theirs_s = _timed(lambda: built.__setitem__("theirs", _build_pymerkle(entries)))
    if built["ours"].root() != built["theirs"].get_root():
        raise AssertionError("ledger.merkle and pymerkle disagree on the root")
    return _result(
        n / ours_s,
        "leaves/s",
        n / theirs_s,
        f"append {n} x {ENTRY_SIZE}-byte entries: leaf hash + Frontier.append + MemoryNodes "
        "vs pymerkle 7 InmemoryTree.append_entry (same entries, same roots)",
    )


def bench_proof(n: int, samples: int) -> dict[str, Any]:
    """Proofs/s for inclusion proof generation + verification at random leaves of an n-leaf tree."""
    entries = _entries(n)
    ours = _build_ours(entries)
    theirs = _build_pymerkle(entries)
    root = ours.root()
    if theirs.get_root() != root:
        raise AssertionError("ledger.merkle and pymerkle disagree on the root")
    rng = random.Random(SEED)
    indexes = [rng.randrange(n) for _ in range(samples)]
    for i in indexes[:20]:
        leaf = ours.get_node(0, i)
        if theirs.prove_inclusion(i + 1, n).path != [leaf, *inclusion_proof(ours, i, n)]:
            raise AssertionError(f"ledger.merkle and pymerkle disagree on the proof for {i}")

    def run_ours() -> None:
        get = ours.get_node
        for i in indexes:
            proof = inclusion_proof(ours, i, n)
            verify_inclusion(get(0, i), i, n, proof, root)

    def run_theirs() -> None:
        theirs_root = theirs.get_root()
        for i in indexes:
            proof = theirs.prove_inclusion(i + 1, n)
            pymerkle_verify_inclusion(theirs.get_leaf(i + 1), theirs_root, proof)

    ours_s = _timed(run_ours)
    theirs_s = _timed(run_theirs)
    return _result(
        samples / ours_s,
        "proofs/s",
        samples / theirs_s,
        f"{samples} inclusion proofs at random leaves of a {n}-leaf tree, each generated "
        "from stored nodes and verified, vs pymerkle 7 prove_inclusion + verify_inclusion",
    )


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    n = 20_000 if quick else 100_000
    samples = 1_000 if quick else 5_000
    report = {
        "merkle_append_vs_pymerkle": bench_append(n),
        "merkle_proof_vs_pymerkle": bench_proof(n, samples),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
