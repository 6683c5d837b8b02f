"""`markex screen`: the call-path decision for one call, or a call centre's
campaign list scrubbed (docs/screen.md).

    markex screen --as ID CALLER CALLEE [--at ISO8601] [--mode voice|sms] [--node ID] [--json]
    markex screen --as ID --caller CALLER --list FILE [--out F] [--mode voice|sms] [--at ISO8601]

The screen is asked on the member port of the node `--node` names (default:
--as's own node; a call centre runs none, so it must name one), with --as's
member certificate. The list form reads a CSV (one number per row in the
first column, an optional header `number`) and writes `number,result,reason`
(`allowed` or `refused`, the rule's code only: a subscriber's preference is
never spelled out), in ScreenBatch chunks; every number of a list is
screened at the same instant (--at, default: now). A bad row is reported
with its line number on stderr (with --json: in the JSON object's `bad`)
and the others are still screened; the command then ends with exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ledger.errors import BadInput
from ledger.numbers import normalize
from ledger.screen import SCREENING_ROLES
from markex.v1 import service_pb2 as pb
from node.command import (
    Exit,
    NotVerified,
    UsageError,
    acting,
    iso,
    node_endpoints,
    parse_time,
    pinned_consortium,
    show,
    table,
)
from node.connect import Connect, Dial

BATCH = 1000          # calls per ScreenBatch: the node's own cap
RPC_TIMEOUT_S = 60
MODES = {"voice": pb.CALL_MODE_VOICE, "sms": pb.CALL_MODE_SMS}
ACTION_NAMES = {pb.SCREEN_ACTION_ALLOW: "ALLOW", pb.SCREEN_ACTION_LABEL: "LABEL",
                pb.SCREEN_ACTION_WARN: "WARN", pb.SCREEN_ACTION_BLOCK: "BLOCK"}
HEADER = ("number", "result", "reason")


def decision_json(d: pb.ScreenDecision) -> dict[str, Any]:
    """A ScreenDecision as the command prints it."""
    return {
        "action": ACTION_NAMES.get(d.action, "UNSPECIFIED"),
        "category": d.category,
        "risk": d.risk,
        "reasons": [{"code": r.code, "records": [x.hex() for x in r.records],
                     "detail": r.detail} for r in d.reasons],
        "redress": d.redress,
        "caller": d.caller,
        "callee": d.callee,
        "at_ms": d.at_ms,
        "at": iso(d.at_ms),
    }


def _stub(args: argparse.Namespace, connect: Connect) -> Any:
    d, cons = pinned_consortium(args)
    as_id = acting(args, cons)
    me = cons.participant(as_id)
    assert me is not None
    if me.role not in SCREENING_ROLES:
        raise UsageError(f"--as {as_id} is a {me.role}: only carriers, the institute and call "
                         "centres screen calls")
    node = args.node
    if not node:
        if not me.member_endpoint:
            raise UsageError(f"--as {as_id} is a {me.role} and runs no node: name the node "
                             "it asks with --node ID (e.g. a carrier's, carrier-1)")
        node = as_id
    return connect("screening", Dial(d, node_endpoints(cons, node), as_id))


def _one(args: argparse.Namespace, stub: Any) -> int:
    caller, callee = normalize(args.caller_pos), normalize(args.callee)  # InvalidNumber: usage
    at = parse_time(args.at) if args.at else 0   # 0: the node's clock
    d = stub.Screen(pb.ScreenRequest(caller=caller, callee=callee, at_ms=at,
                                     mode=MODES[args.mode]), timeout=RPC_TIMEOUT_S)
    if d.error:
        raise NotVerified(f"the node did not screen the call: {d.error}")
    obj = {**decision_json(d), "mode": args.mode}
    rows: list[tuple[str, Any]] = [("action", obj["action"]), ("category", d.category or "-"),
                                   ("risk", d.risk), ("at", obj["at"])]
    rows += [(f"reason {r['code']}", r["detail"]) for r in obj["reasons"]]
    if d.redress:
        rows.append(("redress", d.redress))
    show(args, obj, table(rows))
    return 0


def read_list(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The numbers of a CSV list (line, E.164) and its bad rows (line, why)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason})") from e
    good: list[tuple[int, str]] = []
    bad: list[tuple[int, str]] = []
    reader = csv.reader(io.StringIO(text))
    first = True
    for row in reader:
        line = reader.line_num
        field = row[0].strip() if row else ""
        if not field:
            continue
        if first and field.lower() == "number":
            first = False
            continue
        first = False
        try:
            good.append((line, normalize(field)))
        except BadInput as e:
            bad.append((line, str(e)))
    return good, bad


def _write(out: str | None, rows: list[tuple[str, str, str]]) -> None:
    """The CSV, whole or not at all (a file is written beside and renamed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(rows)
    if out is None:
        sys.stdout.write(buf.getvalue())
        return
    target = Path(out)
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _list(args: argparse.Namespace, stub: Any) -> int:
    from node.auditcli import _Progress

    caller = normalize(args.caller)
    path = Path(args.list)
    numbers, bad = read_list(path)
    if not numbers and not bad:
        raise UsageError(f"{path} holds no numbers (one per row, in the first column)")
    # One instant for the whole list: every chunk is screened at the same time.
    at = parse_time(args.at) if args.at else int(time.time() * 1000)
    progress = _Progress(f"screen {path.name}", unit="numbers")
    rows: list[tuple[str, str, str]] = []
    for i in range(0, len(numbers), BATCH):
        chunk = numbers[i : i + BATCH]
        req = pb.ScreenBatchRequest(calls=[
            pb.ScreenRequest(caller=caller, callee=n, at_ms=at, mode=MODES[args.mode], tag=line)
            for line, n in chunk])
        resp = stub.ScreenBatch(req, timeout=RPC_TIMEOUT_S)
        if len(resp.decisions) != len(chunk):
            raise NotVerified(f"asked about {len(chunk)} calls, the node answered "
                              f"{len(resp.decisions)}")
        for (line, n), d in zip(chunk, resp.decisions, strict=True):
            if d.tag != line or d.callee != n:
                raise NotVerified(f"the node's answer for line {line} is about {d.callee}")
            if d.error:
                bad.append((line, d.error))
                continue
            result = "refused" if d.action == pb.SCREEN_ACTION_BLOCK else "allowed"
            rows.append((n, result, d.reasons[0].code if d.reasons else ""))
        progress(min(i + BATCH, len(numbers)), len(numbers))
    progress.end()
    if args.out or not args.json:   # --json without --out: the rows are in the JSON
        _write(args.out, rows)
    bad.sort()
    if not args.json:   # with --json the bad rows are in the one JSON object
        for line, why in bad:
            print(f"markex: {path}:{line}: {why}", file=sys.stderr)
    refused = sum(r[1] == "refused" for r in rows)
    summary: dict[str, Any] = {
        "caller": caller, "at_ms": at, "at": iso(at), "count": len(rows),
        "allowed": len(rows) - refused, "refused": refused,
        "bad": [{"line": ln, "error": why} for ln, why in bad],
    }
    if args.json:
        if args.out:
            summary["out"] = args.out
        else:
            summary["rows"] = [dict(zip(HEADER, r, strict=True)) for r in rows]
        show(args, summary)
    elif args.out:
        print(f"{len(rows)} numbers screened: {refused} refused, {len(rows) - refused} allowed"
              f"{f', {len(bad)} bad rows' if bad else ''}; written to {args.out}",
              file=sys.stderr)
    return int(Exit.USAGE) if bad else 0


def cmd_screen(args: argparse.Namespace, connect: Connect) -> int:
    if args.list:
        if args.caller_pos or args.callee:
            raise UsageError("--list screens one --caller against a file: give no CALLER CALLEE")
        if not args.caller:
            raise UsageError("--list needs --caller CALLER: the number the campaign calls from")
        return _list(args, _stub(args, connect))
    if args.caller or args.out:
        raise UsageError("--caller and --out go with --list FILE")
    if not args.caller_pos or not args.callee:
        raise UsageError("give CALLER CALLEE, or --caller CALLER --list FILE")
    return _one(args, _stub(args, connect))
