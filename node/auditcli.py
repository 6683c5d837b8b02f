"""`markex audit`: the auditor's command line around `ledger.audit`.

    markex audit --node ID [--as ID] [--state FILE]
                                               online: checkpoints and proofs from the
                                               public port, entries and evidence from the
                                               member port's Audit service (as --as, by
                                               default the consortium's first auditor)
    markex audit --data-dir PATH [--as ID]     offline, on a stopped node's files
    markex audit verify-evidence FILE          check an evidence file with consortium.json
                                               (`verify_evidence_file`)

Every form verifies consortium.json with a pinned institute key
(--institute-key, $MARKEX_INSTITUTE_KEY, or --as ID's node.toml; offline also
the node.toml of the node whose data folder is audited) and refuses to run without one.

The online audit keeps a small state file (default: <consortium>/audit/<node>.json)
with the last audited checkpoint, so the next run verifies a consistency proof
and only the new entries. Evidence (equivocations, proven forks) is written as
portable JSON files (default: next to the state, in evidence/). Exit code 0
only when nothing is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from keys import ConfigError
from keys.consortium import Consortium
from keys.layout import NodeConfig, load_consortium
from ledger import audit, note
from ledger.errors import BadInput, LedgerError
from ledger.names import origin_of, participant_of_log
from ledger.store import Store
from node import client
from node.auditclient import (  # re-exported: tests and tools import them from here
    GrpcLogSource,
    audit_node_online,
    audit_online,
    load_state,
    save_state,
)
from node.command import Exit, UsageError, fail
from node.connect import Connect, reader_id

__all__ = [
    "GrpcLogSource",
    "audit_node_online",
    "audit_online",
    "cmd_audit",
    "cmd_verify_evidence",
    "load_state",
    "reader_id",
    "run_audit",
    "save_state",
    "verify_evidence_file",
    "write_evidence",
]

PROGRESS_MIN = 5000  # records; shorter runs print no progress


# ------------------------------------------------------------------ files


def write_evidence(directory: Path, ev: dict[str, Any]) -> Path:
    """One JSON file per piece of evidence; the name says what it is."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ev, indent=2, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    who = ev.get("issuer") or ev.get("log") or ev.get("peer") or "unknown"
    path = directory / f"{ev.get('kind', 'evidence')}-{who}-{digest}.json"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ progress


class _Progress:
    """A one-line progress indicator on stderr for long runs."""

    def __init__(self, label: str, unit: str = "records") -> None:
        self.label = label
        self.unit = unit
        self.t0 = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_MIN:
            return
        now = time.monotonic()
        if now - self.last < 0.5 and done < total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(
            f"\r{self.label} [{bar}] {done}/{total} ({100 * done // max(total, 1)}%) "
            f"{rate:,.0f} {self.unit}/s"
        )
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ------------------------------------------------------------------ commands


def _consortium_dir(arg: str | None, data_dir: Path | None = None) -> Path:
    if arg or os.environ.get(client.CONSORTIUM_ENV) or data_dir is None:
        return client.consortium_dir(arg)
    # A node's files live in <consortium>/<id>/data: look there before giving up.
    guess = data_dir.resolve().parent.parent
    if (guess / "consortium.json").is_file():
        return guess
    return client.consortium_dir(arg)


def _config_of_store(directory: Path, data_dir: Path) -> NodeConfig | None:
    """The node.toml under `directory` whose data folder is `data_dir`, if any."""
    want = data_dir.resolve()
    for toml in sorted(directory.glob("*/node.toml")):
        cfg = NodeConfig.load(toml)
        if cfg.data_dir.resolve() == want:
            return cfg
    return None


def _offline_consortium(args: argparse.Namespace, d: Path, data_dir: Path) -> Consortium:
    """consortium.json verified with the pin given, else with the one in the
    node.toml of the node whose files these are; refused without either."""
    if args.institute_key or os.environ.get(client.INSTITUTE_KEY_ENV) or args.as_id:
        return client.load_pinned(d, args.institute_key, args.as_id)
    cfg = _config_of_store(d, data_dir)
    if cfg is None:
        raise client.missing_pin(d)
    return load_consortium(cfg)


def _whose_store(directory: Path, cons: Consortium, data_dir: Path) -> tuple[str, Consortium]:
    """The participant whose node keeps `data_dir`, and the consortium as that
    node loads it (pinned institute key) when its node.toml is at hand."""
    want = data_dir.resolve()
    for p in cons.participants:
        toml = directory / p.id / "node.toml"
        if not toml.is_file():
            continue
        cfg = NodeConfig.load(toml)
        if cfg.data_dir.resolve() == want:
            return p.id, load_consortium(cfg)
    store = Store(data_dir, read_only=True)
    try:
        raw = store.get("checkpoints", b"log/latest")
    finally:
        store.close()
    if raw is not None:
        p = participant_of_log(cons.name, cons.participants, origin_of(note.Note.parse(raw).text))
        if p is not None:
            return p.id, cons
    raise ConfigError(f"cannot tell whose store {data_dir} is; name the participant with --as ID")


def _print_report(args: argparse.Namespace, rep: audit.AuditReport, paths: list[Path]) -> None:
    obj = rep.to_json()
    obj["evidence"] = [str(p) for p in paths]
    if args.json:
        print(json.dumps(obj, ensure_ascii=False))
        return
    c = rep.counts
    status = "OK" if rep.ok else "FAILED"
    print(f"audit of {rep.target} ({rep.mode}): {status}")
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in c.items() if k != "records_per_second"]
    print("  " + ", ".join(parts))
    print(f"  {rep.seconds:.2f} s ({c.get('records_per_second', 0):,} records/s)")
    for f in rep.findings:
        print(f"  finding  {f.line()}")
    for kind, n in sorted(rep.dropped.items()):
        print(f"  ... and {n} more {kind} not listed")
    for f in rep.warnings:
        print(f"  warning  {f.line()}")
    for p in paths:
        print(f"  evidence written: {p}")


def _verdict(args: argparse.Namespace, rep: audit.AuditReport) -> int:
    """0 when the audit passed; else 1 (not verified), its first finding on stderr."""
    if rep.ok:
        return 0
    first = rep.findings[0].line() if rep.findings else "see the report"
    n = len(rep.findings)
    return fail(args.json, Exit.NOT_VERIFIED,
                f"not verified: the audit of {rep.target} has {n} finding(s); first: {first}")


def _audit_offline(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    if not (data_dir / "CURRENT").is_file():
        raise ConfigError(f"{data_dir} holds no node database (no RocksDB CURRENT file)")
    d = _consortium_dir(args.consortium, data_dir)
    cons = _offline_consortium(args, d, data_dir)
    if args.as_id:
        if cons.participant(args.as_id) is None:
            raise ConfigError(f"--as {args.as_id!r} is not a participant of {cons.name}")
        pid = args.as_id
    else:
        pid, cons = _whose_store(d, cons, data_dir)
    progress = _Progress(f"audit {pid}")
    try:
        rep = audit.audit_store(data_dir, cons, pid, progress=progress)
    finally:
        progress.end()
    default = Path(args.state).parent if args.state else d / "audit"
    ev_dir = _evidence_dir(args, default / "evidence")
    paths = [write_evidence(ev_dir, ev) for ev in rep.evidence]
    _print_report(args, rep, paths)
    return _verdict(args, rep)


def _evidence_dir(args: argparse.Namespace, default: Path) -> Path:
    return Path(args.evidence_dir) if args.evidence_dir else default


def _audit_node(args: argparse.Namespace, connect: Connect) -> int:
    d = client.consortium_dir(args.consortium)
    cons = client.load_pinned(d, args.institute_key, args.as_id)
    if args.state:
        state_path = Path(args.state)
    else:
        ident = args.node if cons.participant(args.node) else args.node.replace(":", "_")
        state_path = d / "audit" / f"{ident}.json"
    progress = _Progress(f"audit {args.node}")
    try:
        rep, _ = audit_online(
            d, cons, args.node, state_path, progress, args.as_id, connect=connect
        )
    finally:
        progress.end()
    ev_dir = _evidence_dir(args, state_path.parent / "evidence")
    paths = [write_evidence(ev_dir, ev) for ev in rep.evidence]
    _print_report(args, rep, paths)
    return _verdict(args, rep)


def verify_evidence_file(args: argparse.Namespace, path: Path) -> int:
    """`markex audit verify-evidence FILE`: 0 when the file proves what it
    says under the pinned consortium, else 1 (not verified) with the reason."""
    d = client.consortium_dir(args.consortium)
    cons = client.load_pinned(d, args.institute_key, args.as_id)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path} is not a JSON evidence file: {e}") from e
    try:
        what = audit.verify_evidence(obj, cons)
    except LedgerError as e:
        if args.json:
            print(
                json.dumps({"valid": False, "file": str(path), "error": f"{type(e).__name__}: {e}"})
            )
        else:
            print(f"{path}: NOT valid evidence: {type(e).__name__}: {e}")
        return 1
    if args.json:
        print(
            json.dumps({"valid": True, "file": str(path), "kind": obj.get("kind"), "proves": what})
        )
    else:
        print(f"{path}: valid evidence: {what}")
    return 0


def cmd_verify_evidence(args: argparse.Namespace, _connect: Connect) -> int:
    """`markex audit verify-evidence FILE`."""
    return verify_evidence_file(args, Path(args.file))


def run_audit(args: argparse.Namespace, connect: Connect) -> int:
    """`markex audit` online or offline (verify-evidence: `verify_evidence_file`);
    `connect` reaches the node online."""
    if bool(args.node) == bool(args.data_dir):
        raise UsageError("give exactly one of --node ID (online) or --data-dir PATH (offline)")
    if args.data_dir:
        return _audit_offline(args)
    return _audit_node(args, connect)


cmd_audit = run_audit  # what node/cli.py runs for `markex audit`
