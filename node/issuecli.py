"""The commands that set a consortium up and issue records: `consortium init`
(refusing a folder git would commit), `node run`, and `mark`, `correct`,
`decide`, `reassign`, each printing the record the node signed with its log
index (`--quiet`: the id alone). Record ids may be unique prefixes, resolved
at the node asked (node/recordcli.py). node/cli.py runs these by name."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.command import (
    UsageError,
    acting,
    category_list,
    node_endpoints,
    parse_time,
    pinned_consortium,
    show,
    table,
)
from node.connect import Connect, Dial

GIT_FLAG = "--inside-git"


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _endpoint(args: argparse.Namespace) -> tuple[Path, Any, str, Any]:
    """(folder, consortium, acting id, its node's endpoints) of an issuing command."""
    d, cons = pinned_consortium(args)
    who = acting(args, cons)
    return d, cons, who, node_endpoints(cons, args.node or who)


def _issued(args: argparse.Namespace, r: Any, with_appeal: bool = False) -> None:
    """The record the node signed: id, issuer, seq (design.md) and its log
    index; with --quiet its id alone (for `ID=$(markex mark -q ...)`)."""
    if args.quiet and not args.json:
        print(r.id.hex())
        return
    obj: dict[str, Any] = {"id": r.id.hex(), "issuer": r.issuer, "seq": r.seq}
    if with_appeal:
        obj["appeal"] = r.appeal
    obj["index"] = r.index
    rows = [("id", obj["id"]), ("issuer", obj["issuer"]), ("seq", obj["seq"])]
    if with_appeal:
        rows.append(("appeal", "yes (the institute decides it)" if r.appeal else "no"))
    rows.append(("log index", f"{r.index} in the log of {args.node or args.as_id}"))
    show(args, obj, table(rows))


def _record(ref: str, connect: Connect, d: Path, ep: Any, who: str) -> bytes:
    """A record id given whole or by a unique prefix (resolved at the node asked)."""
    from node.recordcli import id_ref, resolve_id

    ref = id_ref(ref)
    if len(ref) == 64:
        return bytes.fromhex(ref)
    return resolve_id(ref, connect("audit", Dial(d, ep, who)), ep.participant or ep.member)


def git_work_tree(directory: Path) -> Path | None:
    """The git work tree `directory` (existing or not) would be inside, if any."""
    here = directory.resolve()
    for p in (here, *here.parents):
        if (p / ".git").exists():
            return p
    return None


def git_ignores(tree: Path, directory: Path) -> bool:
    """True when git itself says `directory` is ignored in `tree` (False when
    git cannot tell or is not installed): `git add .` would leave it out."""
    import subprocess

    try:
        res = subprocess.run(["git", "-C", str(tree), "check-ignore", "-q",
                              str(directory.resolve() / "signing.key")],
                             capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def cmd_consortium_init(args: argparse.Namespace, _connect: Connect) -> int:
    from keys.layout import init_consortium

    target = Path(args.dir).resolve()
    tree = git_work_tree(target)
    if tree is not None and not args.inside_git and not git_ignores(tree, target):
        raise UsageError(
            f"{target} is inside the git work tree {tree}: the folder holds every "
            "participant's private keys, and `git add .` would commit them. Choose a folder "
            f"outside it or one .gitignore lists, or pass {GIT_FLAG}"
        )
    cons = init_consortium(
        target, carriers=args.carriers, internet=args.internet, base_port=args.base_port,
        hosts=args.host or (), now=datetime.now(UTC), listen_all=args.listen_all,
        complaints=args.complaints, regulators=args.regulators,
    )
    obj = {"dir": str(target), "name": cons.name,
           "participants": [p.id for p in cons.participants]}
    show(args, obj, table([("folder", obj["dir"]), ("consortium", obj["name"]),
                           ("participants", obj["participants"]),
                           ("pin", f"export MARKEX_INSTITUTE_KEY=$(cat {target}/config/"
                                   "config.pub)")]))
    return 0


def cmd_node_run(args: argparse.Namespace, _connect: Connect) -> int:
    from keys.layout import NodeConfig
    from node import client
    from node.server import run_node

    d = client.consortium_dir(args.consortium)
    if not args.as_id:
        raise UsageError("--as ID is required: the participant whose node this is")
    from node.workers import check_workers, default_workers

    refuse = Path(args.test_refuse_file) if args.test_refuse_file else None
    try:
        workers = check_workers(default_workers() if args.workers is None else args.workers)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return run_node(NodeConfig.for_participant(d, args.as_id), refuse_file=refuse,
                    restored=args.restored, log_level=args.log_level, workers=workers)


def cmd_mark(args: argparse.Namespace, connect: Connect) -> int:
    from ledger.numbers import normalize
    from markex.v1 import record_pb2 as rpb

    d, cons, who, ep = _endpoint(args)
    if args.category not in cons.categories:
        raise UsageError(f"{args.category!r} is not a category of {cons.name}; "
                         f"categories: {category_list(cons)}")
    number = normalize(args.number)
    now = _now_ms()
    expires = now + int(args.expires_days * 86_400_000) if args.expires_days else 0
    if not 0 <= expires < 2**63:  # the field is an int64, and a mark cannot expire before 1970
        raise UsageError(f"--expires-days {args.expires_days:g} is out of range")
    m = rpb.Mark(number=number, category=args.category, score=args.score,
                 reports=args.reports, observed_at_ms=now, expires_at_ms=expires)
    _issued(args, connect("admin", Dial(d, ep, who)).IssueMark(m, timeout=30))
    return 0


def cmd_correct(args: argparse.Namespace, connect: Connect) -> int:
    from markex.v1 import record_pb2 as rpb
    from markex.v1 import service_pb2 as pb

    d, cons, who, ep = _endpoint(args)
    if args.withdraw == bool(args.category):
        raise UsageError("give exactly one of --withdraw or --category C")
    if args.category and args.category not in cons.categories:
        raise UsageError(f"--category {args.category!r} is not a category of {cons.name}; "
                         f"categories: {category_list(cons)}")
    target = _record(args.record_id, connect, d, ep, who)
    c = pb.CorrectionRequest(
        wait_for_target=args.wait_for_target,
        targets=[target],
        action=rpb.CORRECTION_ACTION_WITHDRAW if args.withdraw
        else rpb.CORRECTION_ACTION_RECATEGORIZE,
        category=args.category or "",
        reason=args.reason or "",
    )
    _issued(args, connect("admin", Dial(d, ep, who)).IssueCorrection(c, timeout=30), True)
    return 0


def cmd_decide(args: argparse.Namespace, connect: Connect) -> int:
    from markex.v1 import record_pb2 as rpb
    from markex.v1 import service_pb2 as pb

    d, _, who, ep = _endpoint(args)
    if args.uphold == args.reject:
        raise UsageError("give exactly one of --uphold or --reject")
    appeal = _record(args.appeal_id, connect, d, ep, who)
    c = pb.CorrectionRequest(
        appeal_id=appeal,
        outcome=rpb.APPEAL_OUTCOME_UPHOLD if args.uphold else rpb.APPEAL_OUTCOME_REJECT,
        reason=args.reason or "",
    )
    _issued(args, connect("admin", Dial(d, ep, who)).IssueCorrection(c, timeout=30))
    return 0


def cmd_reassign(args: argparse.Namespace, connect: Connect) -> int:
    from ledger.numbers import normalize
    from markex.v1 import record_pb2 as rpb

    d, _, who, ep = _endpoint(args)
    r = rpb.Reassignment(number=normalize(args.number), effective_at_ms=parse_time(args.at))
    _issued(args, connect("admin", Dial(d, ep, who)).IssueReassignment(r, timeout=30))
    return 0
