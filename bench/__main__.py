"""`python -m bench [NAME ...]`: run the benchmarks and write bench/report.json.

Every benchmark is one entry of BENCHMARKS: the module and function that
return its result dict (see bench/report.py for the fields and conventions)
and the keyword arguments for a full run and for BENCH_QUICK=1. Modules are
imported only when their benchmark runs; one that cannot be imported (a
missing optional library, a benchmark not written yet) is skipped.

With no names every available benchmark that is not opt-in runs and the
report is written afresh, keeping only the opt-in results it holds (the
scale run's); with names only those run and the report keeps the other
results it already holds. A readable table is printed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report

DEFAULT_OUT = Path(__file__).resolve().parent / "report.json"


@dataclass(frozen=True)
class Benchmark:
    module: str
    function: str
    full: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    opt_in: bool = False  # runs only when named (`python -m bench NAME`), never in a plain run

    def load(self) -> Callable[..., dict[str, Any]]:
        fn: Callable[..., dict[str, Any]] = getattr(
            importlib.import_module(self.module), self.function
        )
        return fn

    def kwargs(self, quick: bool) -> dict[str, Any]:
        return self.quick if quick else self.full


# One line per benchmark; names are fixed by design.md.
BENCHMARKS: dict[str, Benchmark] = {
    "ingest": Benchmark("bench.ingest", "bench_ingest", {"n": 50_000}, {"n": 10_000}),
    "merkle_append_vs_pymerkle": Benchmark(
        "bench.merkle_bench", "bench_append", {"n": 100_000}, {"n": 20_000}
    ),
    "merkle_proof_vs_pymerkle": Benchmark(
        "bench.merkle_bench",
        "bench_proof",
        {"n": 100_000, "samples": 5_000},
        {"n": 20_000, "samples": 1_000},
    ),
    "propagation_p99": Benchmark(
        "bench.exchange_bench", "bench_propagation", {"seconds": 20.0}, {"seconds": 5.0}
    ),
    "catchup": Benchmark("bench.exchange_bench", "bench_catchup", {"n": 200_000}, {"n": 20_000}),
    "bulk_issue": Benchmark("bench.import_bench", "bench_bulk_issue", {"n": 50_000}, {"n": 10_000}),
    # Twelve node processes: every role of the national consortium (exchange_bench.TWELVE).
    "propagation_p99_12": Benchmark(
        "bench.exchange_bench", "bench_propagation_12", {"seconds": 20.0}, {"seconds": 5.0}
    ),
    # The same load on twelve bare processes of the same stack, right after it: the floor.
    "propagation_floor_12": Benchmark(
        "bench.floor_bench", "bench_propagation_floor", {"seconds": 20.0}, {"seconds": 5.0}
    ),
    "catchup_12": Benchmark(
        "bench.exchange_bench", "bench_catchup_12", {"n": 200_000}, {"n": 20_000}
    ),
    # The four lookup results come from one node run (view_bench.lookup_suite), kept per size.
    # Writing the 1,000,000 signed marks into the node's store takes minutes (its `how` says).
    **{
        name: Benchmark(
            "bench.view_bench",
            f"bench_{name}",
            {"entries": 1_000_000, "seconds": 10.0},
            {"entries": 100_000, "seconds": 3.0},
        )
        for name in ("lookup_batch", "lookup_p99", "view_proof_bytes", "view_verify_us")
    },
    "audit": Benchmark(
        "bench.audit_bench", "bench_audit", {"n": 1_000_000, "view_n": 100_000}, {"n": 20_000}
    ),
    "view_update": Benchmark(
        "bench.view_bench",
        "bench_view_update",
        {"base": 100_000, "stream": 20_000},
        {"base": 20_000, "stream": 5_000},
    ),
    # The web front end's two results come from one run (web_bench.web_suite).
    **{
        name: Benchmark(
            "bench.web_bench",
            f"bench_{name}",
            {"marked": 400, "seconds": 10.0},
            {"marked": 100, "seconds": 3.0},
        )
        for name in ("web_lookup_p99", "web_api_lookup_batch")
    },
    # Issue 15: a preference issued at one node until every node's screen answers with it.
    "preference_propagation_p99": Benchmark(
        "bench.consent_bench",
        "bench_preference_propagation",
        {"seconds": 20.0},
        {"seconds": 5.0},
    ),
    # The three screen results come from one node run (consent_bench.screen_suite): 1M view
    # entries and 1M preferences written into its store (minutes; its `how` says).
    **{
        name: Benchmark(
            "bench.consent_bench",
            f"bench_{name}",
            {"entries": 1_000_000, "preferences": 1_000_000, "seconds": 10.0},
            {"entries": 100_000, "preferences": 100_000, "seconds": 3.0},
        )
        for name in ("screen_batch", "screen_batch_rate", "screen_p99")
    },
    # --workers = the cores against one process, same view and batches (bench/workers_bench.py)
    "lookup_batch_workers": Benchmark(
        "bench.workers_bench",
        "bench_lookup_batch_workers",
        {"entries": 200_000, "seconds": 8.0},
        {"entries": 20_000, "seconds": 3.0},
    ),
    # Issue 16: a complaint filed at the centre until it is in the carrier's queue on its node,
    # and the accountability figures recomputed offline (over the audit benchmark's store).
    "complaint_to_queue_p99": Benchmark(
        "bench.complaint_bench", "bench_complaint_to_queue", {"n": 300}, {"n": 60}
    ),
    "stats_recompute": Benchmark(
        "bench.complaint_bench", "bench_stats_recompute", {"n": 1_000_000}, {"n": 20_000}
    ),
    # Wall time of a `markex` process: --help, and a lookup against a running node.
    "cli_startup": Benchmark("bench.cli_startup", "bench_cli_startup", {"runs": 15}, {"runs": 5}),
    "cli_lookup": Benchmark("bench.cli_startup", "bench_cli_lookup", {"runs": 15}, {"runs": 5}),
    "watch_lag_p99": Benchmark("bench.watch_bench", "bench_watch_lag", {"n": 200}, {"n": 40}),
    # make bench-scale: 10M records (SCALE_RECORDS) in one node; also writes the
    # scale_lookup_p99_ratio, scale_peak_rss and scale_disk_per_record results, then
    # (unless SCALE_PREFERENCES=0) the 10M-preference run's scale_screen_* results.
    "scale": Benchmark("bench.scale", "bench_scale", opt_in=True),
    # The 10M-preference run alone (SCALE_PREFERENCES, default 10,000,000).
    "scale_screen": Benchmark("bench.scale", "bench_scale_screen", opt_in=True),
}


def run(names: Sequence[str], quick: bool) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Run `names`; returns the results and a list of problems (skips, failures)."""
    results: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name in names:
        bench = BENCHMARKS[name]
        try:
            fn = bench.load()
        except ImportError as e:
            problems.append(f"{name}: skipped, not available ({e})")
            print(f"[bench] {name}: skipped ({e})", file=sys.stderr)
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            result = fn(**bench.kwargs(quick))
            report.check_result(name, result)
        except Exception as e:
            traceback.print_exc()
            problems.append(f"{name}: failed ({type(e).__name__}: {e})")
            continue
        results[name] = result
        print(
            f"[bench] {name}: {result['value']:.4g} {result['unit']} "
            f"(ratio {result['ratio']:.2f}) in {time.perf_counter() - start:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    return results, problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all if none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report file to write")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, b in BENCHMARKS.items():
            print(f"{name}\t{b.module}.{b.function}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    quick = os.environ.get("BENCH_QUICK") == "1"
    names = list(dict.fromkeys(args.names)) or [n for n, b in BENCHMARKS.items() if not b.opt_in]
    results, problems = run(names, quick)
    opt_in = tuple(n for n, b in BENCHMARKS.items() if b.opt_in)
    written = report.write(args.out, results, merge=bool(args.names), keep_prefixes=opt_in)
    print(report.table(written))
    print(f"\nreport: {args.out}{' (BENCH_QUICK=1 sizes)' if quick else ''}")
    for p in problems:
        print(f"note: {p}", file=sys.stderr)
    return 1 if any("failed" in p for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
