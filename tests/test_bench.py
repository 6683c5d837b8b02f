"""The benchmark harness: the ingest benchmark at a tiny size and the report
in the fixed format of design.md. Nothing here asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main
from bench import report
from bench.ingest import bench_ingest

N = 300


def _check_shape(result: dict[str, Any]) -> None:
    assert set(result) == {"value", "unit", "limit", "ratio", "target", "how"}
    for k in ("value", "limit", "ratio", "target"):
        assert isinstance(result[k], float | int) and result[k] > 0
    assert isinstance(result["how"], str) and result["how"]


@pytest.fixture(scope="module")
def ingest() -> dict[str, Any]:
    return bench_ingest(N, rounds=1)


def test_ingest_result_shape(ingest: dict[str, Any]) -> None:
    _check_shape(ingest)
    assert ingest["unit"] == "records/s"
    assert ingest["target"] == 0.7
    assert ingest["ratio"] == pytest.approx(ingest["value"] / ingest["limit"])


def test_report_file_has_the_fixed_format(tmp_path: Path, ingest: dict[str, Any]) -> None:
    out = tmp_path / "report.json"
    report.write(out, {"ingest": ingest})
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "benchmarks"}
    assert {"cpus", "cpu_model", "python", "platform"} <= set(data["machine"])
    assert list(data["benchmarks"]) == ["ingest"]
    got = data["benchmarks"]["ingest"]
    _check_shape(got)
    assert got["ratio"] == pytest.approx(got["value"] / got["limit"])
    assert "ingest" in report.table(data)


def test_report_rejects_a_result_outside_the_format(tmp_path: Path) -> None:
    bad = {"value": 1.0, "unit": "x/s", "limit": 2.0, "ratio": 0.5, "target": 1.0}
    with pytest.raises(ValueError):
        report.write(tmp_path / "report.json", {"nameless": bad})
    assert not (tmp_path / "report.json").exists()


def test_latency_convention() -> None:
    r = report.latency(50.0, "ms", 200.0, "p99 of something")
    assert r["limit"] == r["target"] == 200.0
    assert r["ratio"] == pytest.approx(4.0)
    assert report.meets_target(r)
    assert not report.meets_target(report.latency(400.0, "ms", 200.0, "too slow"))


def test_main_runs_a_subset_and_merges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    old = report.latency(10.0, "ms", 100.0, "kept from an earlier run")
    report.write(out, {"lookup_p99": old})
    tiny = bench_main.Benchmark("bench.ingest", "bench_ingest", {"n": N, "rounds": 1})
    missing = bench_main.Benchmark("bench.not_written_yet", "bench_nothing")
    monkeypatch.setattr(bench_main, "BENCHMARKS", {"ingest": tiny, "audit": missing})
    assert bench_main.main(["--out", str(out), "ingest", "audit"]) == 0
    data = json.loads(out.read_text())
    assert set(data["benchmarks"]) == {"ingest", "lookup_p99"}
    assert data["benchmarks"]["lookup_p99"] == old
    got = data["benchmarks"]["ingest"]
    assert got["ratio"] == pytest.approx(got["value"] / got["limit"])
    assert "ingest" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_main.main(["--out", str(out), "no-such-benchmark"])


def test_a_plain_run_keeps_only_the_opt_in_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report.json"
    scale = report.throughput(3000.0, "records/s", 9000.0, 0.3, "the hour-long run")
    rss = report.latency(800.0, "MiB", 1024.0, "peak RSS of the same run")
    stale = report.latency(10.0, "ms", 100.0, "a benchmark that no longer exists")
    report.write(out, {"scale": scale, "scale_peak_rss": rss, "gone": stale})
    tiny = bench_main.Benchmark("bench.ingest", "bench_ingest", {"n": N, "rounds": 1})
    opt = bench_main.Benchmark("bench.not_written_yet", "bench_nothing", opt_in=True)
    monkeypatch.setattr(bench_main, "BENCHMARKS", {"ingest": tiny, "scale": opt})
    assert bench_main.main(["--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["benchmarks"]) == {"ingest", "scale", "scale_peak_rss"}
    assert data["benchmarks"]["scale"] == scale


def test_audit_benchmark_runs_at_a_small_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builds its store, audits it (clean, or the benchmark raises) against
    the raw verify limit, each side the best of its runs."""
    from bench import audit_bench

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(audit_bench, "LIMIT_SAMPLE", 1000)
    got = audit_bench.bench_audit(2000, view_n=0)
    _check_shape(got)
    assert got["unit"] == "records/s" and got["target"] == audit_bench.TARGET
    assert f"the best of {audit_bench.AUDIT_RUNS} audits" in got["how"]
    assert (tmp_path / "audit-2000-v2" / "complete.json").exists()


def test_bulk_issue_benchmark_runs_at_a_small_size() -> None:
    """`markex import` to a real node process against ingest's limit (docs/import.md)."""
    from bench import import_bench

    got = import_bench.bench_bulk_issue(200, rounds=1)
    _check_shape(got)
    assert got["unit"] == "records/s" and got["target"] == import_bench.TARGET
    assert got["ratio"] == pytest.approx(got["value"] / got["limit"])
    assert "bulk_issue" in bench_main.BENCHMARKS


# ---- issue 15: the consent and screen benchmarks at tiny sizes (real node processes)


def test_preference_propagation_runs_on_six_nodes() -> None:
    """Preferences issued at the carriers and the institute reach every
    node's screen (each node answered BLOCK for each, or the run raises)."""
    from bench import consent_bench

    got = consent_bench.bench_preference_propagation(seconds=1.0, rate=8.0)
    _check_shape(got)
    assert got["unit"] == "s" and got["limit"] == got["target"] == 1.0
    assert got["ratio"] == pytest.approx(1.0 / got["value"])
    assert "8 preferences" in got["how"]


def test_screen_suite_runs_at_a_small_size() -> None:
    """Builds a node with marks, lines and preferences, screens it in
    batches (every refused line call BLOCK, or it raises), looks up the same
    callers, and screens single calls at a paced rate."""
    from bench import consent_bench

    got = consent_bench.screen_suite(1000, 1000, 0.5, rate=100.0)
    assert set(got) == {"screen_batch", "screen_batch_rate", "screen_p99"}
    for r in got.values():
        _check_shape(r)
    batch, rate, p99 = got["screen_batch"], got["screen_batch_rate"], got["screen_p99"]
    assert batch["unit"] == rate["unit"] == "decisions/s"
    assert batch["target"] == consent_bench.SCREEN_BATCH_TARGET
    assert batch["value"] == rate["value"]
    assert rate["limit"] == consent_bench.SCREEN_RATE_TARGET
    assert "Public.LookupBatch" in batch["how"]
    assert p99["unit"] == "ms" and p99["limit"] == consent_bench.SCREEN_P99_TARGET_MS
    assert "threads with blocking calls" in p99["how"] and "collector off" in p99["how"]
    # The three names are one run, cached per size.
    assert consent_bench.screen_suite(1000, 1000, 0.5, rate=100.0)["screen_p99"] is p99


def test_scale_screen_short_run_writes_its_results(tmp_path: Path) -> None:
    """The 10M-preference run's code path at a tiny size: two steps, the
    node restarted between them, three results merged into the report."""
    from bench import scale

    out = tmp_path / "report.json"
    got = scale.bench_scale_screen(
        preferences=2000, small=1000, entries=500, seconds=0.5, rate=100.0, out=out
    )
    _check_shape(got)
    data = json.loads(out.read_text())
    assert set(data["benchmarks"]) == {"scale_screen", "scale_screen_p99_ratio", "scale_screen_rss"}
    for r in data["benchmarks"].values():
        _check_shape(r)
    steps = data["benchmarks"]["scale_screen"]["how"]
    assert "at 1,000 preferences: p99" in steps and "at 2,000 preferences: p99" in steps
    assert "beside" in data["benchmarks"]["scale_screen_rss"]["how"]


def test_the_registry_names_the_issue_15_benchmarks() -> None:
    for name in ("preference_propagation_p99", "screen_batch", "screen_batch_rate", "screen_p99"):
        assert not bench_main.BENCHMARKS[name].opt_in
        assert callable(bench_main.BENCHMARKS[name].load())
    assert bench_main.BENCHMARKS["scale_screen"].opt_in


def test_watch_lag_benchmark_runs_at_a_tiny_size() -> None:
    """watch_lag_p99 on three in-process nodes, three marks: the format only."""
    from bench.watch_bench import TARGET_S, bench_watch_lag

    got = bench_watch_lag(n=3, rate=10.0)
    _check_shape(got)
    assert got["unit"] == "s" and got["limit"] == got["target"] == TARGET_S
    assert "WatchView consumer verified" in got["how"]


def test_propagation_runs_with_another_topology_and_the_12_node_entry_is_registered() -> None:
    """propagation_p99_12 is bench_propagation with exchange_bench.TWELVE: here
    the same code at three nodes for a second (format only, never speed)."""
    from bench import exchange_bench

    entry = bench_main.BENCHMARKS["propagation_p99_12"]
    assert entry.load() is exchange_bench.bench_propagation_12
    assert 1 + sum(exchange_bench.TWELVE.values()) == 12  # the institute is always there
    got = exchange_bench.bench_propagation(1.0, rate=20.0, carriers=1, internet=1)
    _check_shape(got)
    assert got["unit"] == "s" and got["target"] == exchange_bench.PROPAGATION_TARGET_S
    assert "on all 3 nodes" in got["how"] and "mean signed envelope" in got["how"]


def test_catchup_runs_tiny_and_times_after_the_peer_settled() -> None:
    """catchup at four nodes and 300 records (format only, never speed): its
    `how` gives the serving peer's settling wait, which is not timed."""
    from bench import exchange_bench

    got = exchange_bench.bench_catchup(300, carriers=1, internet=2)
    _check_shape(got)
    assert got["unit"] == "records/s" and got["target"] == exchange_bench.CATCHUP_TARGET
    assert "took 300 records" in got["how"] and "its settling" in got["how"]


@pytest.mark.timeout(240)
def test_lookup_batch_workers_reports_against_one_process() -> None:
    from bench.workers_bench import bench_lookup_batch_workers

    r = bench_lookup_batch_workers(entries=500, seconds=0.5, workers=2, rounds=1)
    _check_shape(r)
    assert r["unit"] == "numbers/s" and r["target"] == 0.8
    assert r["ratio"] == pytest.approx(r["value"] / r["limit"])
    assert "--workers 2" in r["how"] and "--workers 1" in r["how"]
    assert "the client used" in r["how"]


# ---- issue 16: the complaint and stats benchmarks at tiny sizes


def test_complaint_to_queue_runs_on_real_nodes() -> None:
    """Complaints filed at complaints-1's node are each found in the serving
    carrier's queue on that carrier's own node (or the run raises)."""
    from bench import complaint_bench

    got = complaint_bench.bench_complaint_to_queue(n=6)
    _check_shape(got)
    assert got["unit"] == "s" and got["limit"] == got["target"] == complaint_bench.QUEUE_TARGET_S
    assert got["ratio"] == pytest.approx(1.0 / got["value"])
    assert "p99 over 6 complaints" in got["how"] and "carrier-1 and carrier-2" in got["how"]


def test_stats_recompute_runs_at_a_small_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figures of the audit benchmark's store count every record (or the
    run raises), against the audit's limit measured in the same run."""
    from bench import audit_bench, complaint_bench

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(audit_bench, "LIMIT_SAMPLE", 500)
    got = complaint_bench.bench_stats_recompute(1000)
    _check_shape(got)
    assert got["unit"] == "records/s" and got["target"] == complaint_bench.STATS_TARGET
    assert got["ratio"] == pytest.approx(got["value"] / got["limit"])
    assert "audit_bench.raw_limit" in got["how"] and "over 500 of the same" in got["how"]
    path, _, built = audit_bench.cached_store(1000)
    assert not built  # the audit benchmark's store, reused
    _, figures = complaint_bench.recompute(path, 1000)
    assert sum(f["marks_issued"] for f in figures["participants"].values()) == 1000


def test_the_registry_names_the_issue_16_benchmarks() -> None:
    for name in ("complaint_to_queue_p99", "stats_recompute"):
        b = bench_main.BENCHMARKS[name]
        assert not b.opt_in and callable(b.load())
        assert b.quick["n"] < b.full["n"]
    assert bench_main.BENCHMARKS["stats_recompute"].full["n"] == 1_000_000
