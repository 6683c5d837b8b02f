"""The exchange and view benchmarks at their tiniest sizes: real node
processes, results in the fixed report format. Nothing here asserts a speed."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report
from bench.exchange_bench import bench_propagation
from bench.view_bench import bench_view_update, lookup_suite

pytestmark = pytest.mark.timeout(180)


def _check_shape(name: str, result: dict[str, Any]) -> None:
    report.check_result(name, result)
    for k in ("value", "limit", "ratio", "target"):
        assert result[k] > 0, (name, k)
    assert result["how"]


def test_propagation_reports_a_latency() -> None:
    r = bench_propagation(seconds=1.0, rate=30.0)
    _check_shape("propagation_p99", r)
    assert r["unit"] == "s" and r["limit"] == r["target"] == 1.0
    assert r["ratio"] == pytest.approx(r["target"] / r["value"])


def test_lookup_suite_reports_every_lookup_result() -> None:
    results = lookup_suite(entries=500, seconds=0.5, rate=100.0)
    assert set(results) == {"lookup_batch", "lookup_p99", "view_proof_bytes", "view_verify_us"}
    for name, r in results.items():
        _check_shape(name, r)
    p99 = results["lookup_p99"]
    assert p99["unit"] == "ms" and p99["limit"] == p99["target"] == 5.0
    assert "threads with blocking calls" in p99["how"] and "collector off" in p99["how"]
    batch = results["lookup_batch"]
    assert batch["ratio"] == pytest.approx(batch["value"] / batch["limit"])


def test_view_update_reports_records_per_second_against_ingest() -> None:
    r = bench_view_update(base=200, stream=100)
    _check_shape("view_update", r)
    assert r["unit"] == "records/s" and r["target"] == 1.0
    assert r["ratio"] == pytest.approx(r["value"] / r["limit"])
