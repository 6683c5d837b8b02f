"""The audit's report: findings (errors: something is wrong), warnings
(worth knowing, not wrong), counts and the evidence written.

Each kind of finding is listed MAX_PER_KIND times at most, the rest counted
in `dropped`, so a log tampered everywhere gives a report of bounded size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"
MAX_PER_KIND = 100  # findings listed per kind; the rest are counted in `dropped`

Progress = Callable[[int, int], None]  # (done, total), called as the audit goes


@dataclass(frozen=True)
class Finding:
    """One thing the audit found. `kind` names the check; `detail` says what
    failed; the other fields locate it (leaf index, record id, issuer, seq,
    or `where`: a store key, a Merkle node, a number)."""

    kind: str
    detail: str
    index: int | None = None
    record_id: str | None = None
    issuer: str | None = None
    seq: int | None = None
    where: str | None = None
    severity: str = ERROR

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "severity": self.severity}
        for k in ("index", "record_id", "issuer", "seq", "where"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        out["detail"] = self.detail
        return out

    def line(self) -> str:
        loc = []
        if self.index is not None:
            loc.append(f"leaf {self.index}")
        if self.issuer is not None:
            loc.append(self.issuer if self.seq is None else f"{self.issuer}#{self.seq}")
        if self.record_id is not None:
            loc.append(f"record {self.record_id[:16]}…")
        if self.where is not None:
            loc.append(self.where)
        at = f" [{', '.join(loc)}]" if loc else ""
        return f"{self.kind}{at}: {self.detail}"


@dataclass
class AuditReport:
    """What one audit found about one target (a store path or a node): `ok`
    holds only without errors; `evidence` holds the portable evidence objects
    (ledger.evidence) the audit proved."""

    target: str
    mode: str  # "offline" | "online"
    findings: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    evidence: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    _listed: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def add(self, f: Finding) -> None:
        key = f"{f.severity}:{f.kind}"
        listed = self._listed.get(key, 0)
        if listed >= MAX_PER_KIND:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return
        self._listed[key] = listed + 1
        (self.findings if f.severity == ERROR else self.warnings).append(f)

    def error(self, kind: str, detail: str, **where: Any) -> None:
        self.add(Finding(kind, detail, **where))

    def warn(self, kind: str, detail: str, **where: Any) -> None:
        self.add(Finding(kind, detail, severity=WARNING, **where))

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    @property
    def ok(self) -> bool:
        return not self.findings and not any(k.startswith(ERROR) for k in self.dropped)

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "mode": self.mode,
            "findings": [f.to_json() for f in self.findings],
            "warnings": [f.to_json() for f in self.warnings],
            "dropped": dict(self.dropped),
            "counts": dict(self.counts),
            "seconds": round(self.seconds, 3),
        }
