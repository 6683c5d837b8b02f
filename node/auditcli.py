"""`markex audit`: the auditor's command line around `ledger.audit`.

    markex audit --node ID [--as ID] [--state FILE]
                                               online: checkpoints and proofs from the
                                               public port, entries and evidence from the
                                               member port's Audit service (as --as, by
                                               default the consortium's first auditor)
    markex audit --data-dir PATH [--as ID]     offline, on a stopped node's files
    markex audit verify-evidence FILE          check an evidence file with consortium.json

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

import grpc

from keys import ConfigError
from keys.consortium import Consortium
from keys.layout import NodeConfig, load_consortium
from ledger import audit, note
from ledger.errors import BadInput, LedgerError, NotFound
from ledger.log import log_origin
from ledger.store import Store
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.status import error_from_rpc

PROGRESS_MIN = 5000  # records; shorter runs print no progress


EVIDENCE_PAGES = 1000  # pages of GetEvidence read at most (a node could serve them forever)


class GrpcLogSource:
    """`ledger.audit.LogSource` over a node's gRPC services: checkpoints, proofs
    and feed heads from `Public`; raw entries and evidence from `Audit`, which
    the node serves only to members and auditors (docs/publication.md)."""

    def __init__(
        self, stub: rpc.PublicStub, audit_stub: rpc.AuditStub, timeout: float = 30
    ) -> None:
        self.stub = stub
        self.audit = audit_stub
        self.timeout = timeout

    def _rpc(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from e

    def log_checkpoint(self) -> str:
        return self._rpc(self.stub.GetLogCheckpoint, pb.GetLogCheckpointRequest()).note

    def entries(self, start: int, end: int) -> list[bytes]:
        r = self._rpc(self.audit.GetEntries, pb.GetEntriesRequest(start=start, end=end))
        if r.start != start:
            raise BadInput(f"asked for entries from {start}, the node answered from {r.start}")
        return list(r.envelopes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        r = self._rpc(
            self.stub.GetConsistencyProof,
            pb.GetConsistencyProofRequest(old_size=old_size, new_size=new_size),
        )
        return list(r.path)

    def view_checkpoint(self) -> str | None:
        try:
            return self._rpc(self.stub.GetViewCheckpoint, pb.GetViewCheckpointRequest()).note
        except NotFound:
            return None

    def feed_heads(self) -> dict[str, tuple[int, bytes, bool]]:
        r = self._rpc(self.stub.GetFeedHeads, pb.FeedHeadsRequest())
        return {h.issuer: (h.seq, h.head_id, h.frozen) for h in r.heads}

    def evidence(self) -> tuple[list[bytes], list[bytes]]:
        """Every page of the node's evidence (GetEvidence is paged)."""
        eqs: list[bytes] = []
        forks: list[bytes] = []
        start = 0
        for _page in range(EVIDENCE_PAGES):
            r = self._rpc(self.audit.GetEvidence, pb.GetEvidenceRequest(start=start))
            eqs.extend(r.equivocations)
            forks.extend(r.forks)
            if r.next_start <= start:  # 0 at the end; never backwards
                return eqs, forks
            start = r.next_start
        raise BadInput(f"the node serves more than {EVIDENCE_PAGES} pages of evidence")


# ------------------------------------------------------------------ files


def load_state(path: Path, cons: Consortium) -> audit.AuditState | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"audit state {path} does not parse: {e}") from e
    try:
        return audit.AuditState.from_json(obj, cons)
    except LedgerError as e:
        raise BadInput(
            f"audit state {path} is not a verified checkpoint of this consortium ({e}); "
            "remove it to start a fresh audit"
        ) from e


def save_state(path: Path, state: audit.AuditState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_evidence(directory: Path, ev: dict[str, Any]) -> Path:
    """One JSON file per piece of evidence; the name says what it is."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ev, indent=2, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    who = ev.get("issuer") or ev.get("log") or "unknown"
    path = directory / f"{ev.get('kind', 'evidence')}-{who}-{digest}.json"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ progress


class _Progress:
    """A one-line progress indicator on stderr for long runs."""

    def __init__(self, label: str) -> None:
        self.label = label
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
            f"{rate:,.0f} records/s"
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
        origin = note.Note.parse(raw).text.split("\n", 1)[0]
        for p in cons.participants:
            if origin == log_origin(cons.name, p.id):
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
    return 0 if rep.ok else 1


def _evidence_dir(args: argparse.Namespace, default: Path) -> Path:
    chosen = getattr(args, "evidence_dir", None)
    return Path(chosen) if chosen else default


def _log_of(cons: Consortium, node: str, src: GrpcLogSource) -> str:
    """The participant whose log `--node` serves (an id, or found from the
    checkpoint's origin when the node is given as HOST:PORT)."""
    if cons.participant(node) is not None:
        return node
    origin = note.Note.parse(src.log_checkpoint()).text.split("\n", 1)[0]
    for p in cons.participants:
        if origin == log_origin(cons.name, p.id):
            return p.id
    raise ConfigError(f"the node at {node} serves log {origin!r}, not one of {cons.name}")


def reader_id(cons: Consortium, as_id: str | None) -> str:
    """Who reads the Audit service: `as_id`, else the consortium's first auditor."""
    if as_id:
        if cons.participant(as_id) is None:
            raise ConfigError(f"--as {as_id!r} is not a participant of {cons.name}")
        return as_id
    for p in cons.participants:
        if p.role == "auditor":
            return p.id
    raise ConfigError(f"{cons.name} has no auditor: pass --as ID (a member or an auditor)")


def audit_online(
    directory: Path,
    cons: Consortium,
    node: str,
    state_path: Path | None,
    progress: audit.Progress | None = None,
    as_id: str | None = None,
) -> tuple[audit.AuditReport, str]:
    """Audit `node` through its public port and, as member or auditor `as_id`
    (default: the first auditor), its Audit service; keep the state at
    `state_path` (None: a full audit that remembers nothing)."""
    ep = client.resolve_node(cons, node)
    reader = reader_id(cons, as_id)
    channel = client.public_channel(directory, ep.public, ep.participant)
    member = client.member_channel(directory, reader, ep.member, ep.participant)
    try:
        src = GrpcLogSource(rpc.PublicStub(channel), rpc.AuditStub(member))
        pid = _log_of(cons, node, src)
        state = load_state(state_path, cons) if state_path is not None else None
        if state is not None and state.log != pid:
            raise BadInput(f"audit state {state_path} is for {state.log}, not {pid}")
        rep, new_state = audit.audit_source(src, cons, pid, state, progress=progress)
    finally:
        channel.close()
        member.close()
    if state_path is not None and new_state is not None:
        save_state(state_path, new_state)
    return rep, pid


def audit_node_online(directory: Path, cons: Consortium, pid: str) -> dict[str, Any]:
    """A full online audit of one node, as a JSON-ready dict (used by the demo)."""
    rep, _ = audit_online(Path(directory), cons, pid, None)
    return rep.to_json()


def _audit_node(args: argparse.Namespace) -> int:
    d = client.consortium_dir(args.consortium)
    cons = client.load_pinned(d, args.institute_key, args.as_id)
    if args.state:
        state_path = Path(args.state)
    else:
        ident = args.node if cons.participant(args.node) else args.node.replace(":", "_")
        state_path = d / "audit" / f"{ident}.json"
    progress = _Progress(f"audit {args.node}")
    try:
        rep, _ = audit_online(d, cons, args.node, state_path, progress, args.as_id)
    finally:
        progress.end()
    ev_dir = _evidence_dir(args, state_path.parent / "evidence")
    paths = [write_evidence(ev_dir, ev) for ev in rep.evidence]
    _print_report(args, rep, paths)
    return 0 if rep.ok else 1


def _verify_evidence(args: argparse.Namespace, path: Path) -> int:
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


def run_audit(args: argparse.Namespace) -> int:
    from node.cli import UsageError

    extra = list(getattr(args, "verify_evidence", None) or [])
    if extra:
        if extra[0] != "verify-evidence" or len(extra) != 2:
            raise UsageError(
                f"unexpected {' '.join(extra)!r}: use `markex audit verify-evidence FILE`"
            )
        return _verify_evidence(args, Path(extra[1]))
    if bool(args.node) == bool(args.data_dir):
        raise UsageError("give exactly one of --node ID (online) or --data-dir PATH (offline)")
    if args.data_dir:
        return _audit_offline(args)
    return _audit_node(args)
