"""bench/report.json: the fixed report format (design.md, "Benchmarks").

    {"machine": {"cpus", "cpu_model", "python", "platform", ...},
     "benchmarks": {NAME: {"value", "unit", "limit", "ratio", "target", "how"}}}

Conventions every benchmark follows, so above 1 is always better for `ratio`:

- throughput (records/s, leaves/s, ...): `limit` is measured in the same run on
  the same machine (a raw loop of the unavoidable work, or a peer library
  doing the same job); `ratio = value / limit`; `target` is the ratio to reach
  (0.7 means "at least 70% of the limit"). Build it with `throughput`.
- latency (ms, s, ...): `limit` is the target itself and `ratio = target /
  value`; `target` is in the value's unit and is met when ratio >= 1. Build
  it with `latency`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIELDS = ("value", "unit", "limit", "ratio", "target", "how")
LATENCY_UNITS = frozenset({"ns", "us", "µs", "ms", "s"})


def throughput(value: float, unit: str, limit: float, target: float, how: str) -> dict[str, Any]:
    """A result measured against a limit: ratio = value / limit, target is a ratio."""
    return {
        "value": value,
        "unit": unit,
        "limit": limit,
        "ratio": value / limit,
        "target": target,
        "how": how,
    }


def latency(value: float, unit: str, target: float, how: str) -> dict[str, Any]:
    """A latency against its target: limit = target, ratio = target / value."""
    return {
        "value": value,
        "unit": unit,
        "limit": target,
        "ratio": target / value if value > 0 else float("inf"),
        "target": target,
        "how": how,
    }


def is_latency(result: Mapping[str, Any]) -> bool:
    return result.get("unit") in LATENCY_UNITS


def meets_target(result: Mapping[str, Any]) -> bool:
    """Latencies meet their target at ratio >= 1, throughputs at ratio >= target."""
    needed = 1.0 if is_latency(result) else float(result["target"])
    return float(result["ratio"]) >= needed


def check_result(name: str, result: Mapping[str, Any]) -> None:
    """Raise ValueError unless `result` has exactly the fixed fields, well typed."""
    if set(result) != set(FIELDS):
        raise ValueError(f"benchmark {name} reports {sorted(result)}, not {list(FIELDS)}")
    for k in ("value", "limit", "ratio", "target"):
        v = result[k]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"benchmark {name}: {k} must be a number, got {v!r}")
    if not isinstance(result["unit"], str) or not isinstance(result["how"], str):
        raise ValueError(f"benchmark {name}: unit and how must be strings")


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load(path: Path) -> dict[str, Any] | None:
    """An existing report, or None when there is none or it is not readable JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict):
        return None
    return data


def write(
    path: Path,
    results: Mapping[str, Mapping[str, Any]],
    *,
    merge: bool = False,
    keep_prefixes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write the report for `results` (with this machine's description).

    With `merge`, benchmarks already in the report at `path` and not in
    `results` are kept (a run of a subset); without it only those whose name
    starts with one of `keep_prefixes` are (the opt-in runs, such as the
    hour-long scale run, which a plain run does not repeat). Returns what was
    written.
    """
    for name, result in results.items():
        check_result(name, result)
    benchmarks: dict[str, Any] = {}
    old = load(path)
    if old is not None:
        benchmarks.update(
            (name, r)
            for name, r in old["benchmarks"].items()
            if merge or name.startswith(keep_prefixes)
        )
    benchmarks.update({name: dict(r) for name, r in results.items()})
    report = {"machine": machine_info(), "benchmarks": benchmarks}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return report


def _num(x: float) -> str:
    if x == float("inf"):
        return "inf"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def table(report: Mapping[str, Any]) -> str:
    """The report as a readable text table."""
    rows = [("benchmark", "value", "unit", "limit", "ratio", "target", "met")]
    for name, r in sorted(report["benchmarks"].items()):
        rows.append(
            (
                name,
                _num(r["value"]),
                r["unit"],
                _num(r["limit"]),
                f"{r['ratio']:.2f}",
                _num(r["target"]),
                "yes" if meets_target(r) else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 3, 4, 5}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    m = report.get("machine", {})
    lines.append("")
    lines.append(
        f"machine: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} cpus, "
        f"python {m.get('python', '?')}, {m.get('platform', '?')}"
    )
    return "\n".join(lines)
