"""`markex view export` and `markex view verify-export` (docs/export.md), and
the snapshot fetch the web front end's download shares with them.

An export is every entry of a node's national view at one signed view
checkpoint that a quorum of members cosigned, written as rows (ledger/export.py).
The node serves the entries on its member port (Audit.ExportView: raw
listings of numbers are for members, docs/publication.md); the file carries
the checkpoint, so anyone holding the pinned consortium can check it.

Errors: a checkpoint signed by no member node, or with a member line that
does not verify: MalformedNote / BadSignature (ledger/verify.open_view); too
few member cosignatures: TooFewCosigners; rows that are not the checkpoint's
view: MalformedExport / ExportMismatch (ledger/export.py). verify-export
prints {"ok": false, ...} for each of them and exits 1 (not verified)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keys.consortium import Consortium
from ledger import note
from ledger.errors import BadInput, LedgerError
from ledger.export import (
    ExportMismatch,
    MalformedExport,
    Row,
    TooFewCosigners,
    apply_delta,
    delta_rows,
    open_export,
    open_quorum,
    row_of,
    verify_rows,
    write_export,
)
from ledger.verify import CosignedView
from ledger.view import Entry
from markex.v1 import service_pb2 as pb
from node.command import (
    Exit,
    UsageError,
    acting,
    fail,
    node_endpoints,
    pinned_consortium,
    show,
)
from node.connect import Connect, Dial, reader_id

__all__ = [
    "Snapshot",
    "TooFewCosigners",
    "cmd_view_export",
    "cmd_view_verify_export",
    "export_view",
    "fetch_snapshot",
    "open_quorum",
    "verify_export_file",
]

EXPORT_TIMEOUT_S = 300.0      # one ExportView call: 100k entries take seconds, not minutes
RETRY_S = 0.5                 # between snapshots while the latest lacks its quorum


@dataclass(frozen=True)
class Snapshot:
    """One node's view at one cosigned checkpoint: the note, its verified
    reading, and every row (in number order), already checked against it."""

    note: str
    view: CosignedView
    rows: tuple[Row, ...]


def fetch_snapshot(
    stub: Any,
    cons: Consortium,
    node_id: str | None,
    wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    timeout_s: float = EXPORT_TIMEOUT_S,
) -> Snapshot:
    """Ask `stub` (an Audit stub on the member port) for its view's entries
    until a snapshot's checkpoint has its quorum (retrying for up to `wait_s`
    seconds: a view that just changed is not cosigned yet), signed by
    `node_id` when given. The rows are verified against the checkpoint before
    they are returned. Raises as `open_quorum` and `verify_rows` do."""
    deadline = monotonic() + wait_s
    while True:
        text, entries = export_view(stub, timeout_s)
        try:
            view = open_quorum(cons, text)
        except TooFewCosigners:
            if monotonic() >= deadline:
                raise
            sleep(RETRY_S)
            continue
        if node_id is not None and view.signer != node_id:
            raise MalformedExport(f"{node_id} served a view checkpoint signed by {view.signer}")
        at = view.checkpoint.signed_at_ms
        rows = []
        for i, raw in enumerate(entries, start=1):
            try:
                rows.append(row_of(Entry.decode(raw), at, raw))
            except BadInput as e:
                raise MalformedExport(f"entry {i} the node served does not decode: {e}") from e
        verify_rows(view.checkpoint, rows)
        return Snapshot(text, view, tuple(rows))


def export_view(stub: Any, timeout_s: float = EXPORT_TIMEOUT_S) -> tuple[str, list[bytes]]:
    """One Audit.ExportView call: the note and the entry bytes, unchecked."""
    text = ""
    entries: list[bytes] = []
    for i, page in enumerate(stub.ExportView(pb.ExportViewRequest(), timeout=timeout_s)):
        if i == 0:
            text = page.view_checkpoint
        entries.extend(page.entries)
    if not text:
        raise MalformedExport("the node served its view without a view checkpoint")
    return text, entries


# ------------------------------------------------------------------ export


def cmd_view_export(args: argparse.Namespace, connect: Connect) -> int:
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    if args.as_id:
        acting(args, cons)
    base = _verified_base(cons, Path(args.since)) if args.since else None
    ep = node_endpoints(cons, args.node)
    stub = connect("audit", Dial(d, ep, reader_id(cons, args.as_id)))
    snap = fetch_snapshot(stub, cons, ep.participant, args.wait)
    rows: Iterable[Row] = snap.rows
    if base is not None:
        with open(args.since, encoding="utf-8", newline="") as f:
            rows = list(delta_rows(open_export(f).rows, snap.rows))
    since = None if base is None else base[0]
    if args.out is None:
        write_export(sys.stdout, args.format, snap.note, rows, since)
        return 0
    _write_atomic(Path(args.out), args.format, snap.note, rows, since)
    cp = snap.view.checkpoint
    obj: dict[str, Any] = {
        "out": str(args.out),
        "format": args.format,
        "entries": cp.count,
        "root": cp.root.hex(),
        "signed_at_ms": cp.signed_at_ms,
        "signed_by": snap.view.signer,
        "cosigned_by": sorted(snap.view.cosigned_at),
    }
    if base is not None:
        delta = list(rows)
        obj.update({"since_root": base[1].checkpoint.root.hex(), "rows": len(delta),
                    "removed": sum(r.removed for r in delta)})
    show(args, obj)
    return 0


def _verified_base(cons: Consortium, path: Path) -> tuple[str, CosignedView]:
    """A whole export (no delta) verified as verify-export does: the base of a delta."""
    with open(path, encoding="utf-8", newline="") as f:
        exp = open_export(f)
        if exp.since_note is not None:
            raise UsageError(f"{path} is a delta: a delta's base is a whole export")
        view = open_quorum(cons, exp.checkpoint_note)
        verify_rows(view.checkpoint, exp.rows)
    return exp.checkpoint_note, view


def _write_atomic(
    path: Path, fmt: str, text: str, rows: Iterable[Row], since: str | None
) -> None:
    """Write next to `path`, then rename: a reader never sees half an export."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write_export(f, fmt, text, rows, since)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ------------------------------------------------------------------ verify


def verify_export_file(
    cons: Consortium, lines: Iterable[str], base: Path | None = None
) -> dict[str, Any]:
    """Check an export (its lines): the checkpoint's signature and quorum
    first, then the rows; a delta against its `base` (a whole export,
    verified first, whose checkpoint must be the one the delta names).
    Returns {"ok": True, "entries", "root", ...}; raises as `open_quorum`
    and `verify_rows` do, UsageError for a delta without its base."""
    exp = open_export(lines)
    view = open_quorum(cons, exp.checkpoint_note)
    cp = view.checkpoint
    out: dict[str, Any] = {}
    if exp.since_note is None:
        if base is not None:
            raise UsageError("this export is whole, not a delta: verify it without --base")
        summary = verify_rows(cp, exp.rows)
    else:
        if base is None:
            raise UsageError("this export is a delta: give --base FILE, the export it is since")
        base_note, base_view = _verified_base(cons, base)
        if note.Note.parse(base_note).text != note.Note.parse(exp.since_note).text:
            raise ExportMismatch(f"{base} is not the export this delta is since")
        with open(base, encoding="utf-8", newline="") as f:
            summary = verify_rows(cp, apply_delta(open_export(f).rows, exp.rows,
                                                  cp.signed_at_ms))
        out["since_root"] = base_view.checkpoint.root.hex()
    return {
        "ok": True,
        "entries": summary.entries,
        "root": summary.root.hex(),
        "format": exp.format,
        "signed_at_ms": cp.signed_at_ms,
        "signed_by": view.signer,
        "cosigned_by": sorted(view.cosigned_at),
        **out,
    }


def cmd_view_verify_export(args: argparse.Namespace, _connect: Connect) -> int:
    _, cons = pinned_consortium(args)
    base = Path(args.base) if args.base else None
    with open(args.file, encoding="utf-8", newline="") as f:
        try:
            obj = verify_export_file(cons, f, base)
        except (LedgerError, UnicodeDecodeError) as e:
            why = f"{type(e).__name__}: {e}"
            show(args, {"ok": False, "entries": None, "root": None, "error": why})
            return fail(args.json, Exit.NOT_VERIFIED, f"not verified: {why}")
    show(args, obj)
    return 0
