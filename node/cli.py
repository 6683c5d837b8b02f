"""`markex`: the one command, and the root of the command line: it builds
the parser from its own commands, the ceremony's (node/ceremony.py),
`markex audit` (node/auditcli.py), `record get` and the log proofs
(node/recordcli.py) and `lookup` (node/lookupcli.py), and runs one.
`main(argv, connect=...)` returns an exit code and is what tests call;
`connect` reaches the nodes (node/connect.py; default: TLS channels as the
consortium folder gives them). With --json a command prints exactly one JSON
object on stdout; an error is one sentence on stderr (one JSON object with
--json) and an exit code of the table in node/command.py and docs/cli.md.

Modules only some commands need are imported when those run, so that
`markex --help` and a lookup start quickly (bench/cli_startup.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node import ceremony
from node.command import (
    OPTION_DEFAULTS,
    Exit,
    NotVerified,
    Parser,
    UsageError,
    acting,
    add_options,
    category_list,
    common_options,
    exit_code_epilog,
    fail,
    finite_float,
    parse_time,
    participant_list,
    pinned_consortium,
    run,
    show,
    table,
    uint32,
    uint64,
)
from node.connect import Connect, Dial, TlsConnect, reader_id

__all__ = ["UsageError", "build_parser", "main"]

GIT_FLAG = "--inside-git"


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _endpoint(args: argparse.Namespace) -> tuple[Path, Any, str, Any]:
    """(folder, consortium, acting id, its node's endpoints) of an issuing command."""
    from node import client

    d, cons = pinned_consortium(args)
    who = acting(args, cons)
    return d, cons, who, client.resolve_node(cons, args.node or who)


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


def _record(args: argparse.Namespace, ref: str, connect: Connect, d: Path, ep: Any,
            who: str) -> bytes:
    """A record id given whole or by a unique prefix (resolved at the node asked)."""
    from node.recordcli import id_ref, resolve_id

    ref = id_ref(ref)
    if len(ref) == 64:
        return bytes.fromhex(ref)
    return resolve_id(ref, connect("audit", Dial(d, ep, who)), ep.participant or ep.member)


# ------------------------------------------------------------------ commands


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
        now=datetime.now(UTC),
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
    refuse = Path(args.test_refuse_file) if args.test_refuse_file else None
    return run_node(
        NodeConfig.for_participant(d, args.as_id), refuse_file=refuse, restored=args.restored
    )


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

    d, cons, who, ep = _endpoint(args)
    if args.withdraw == bool(args.category):
        raise UsageError("give exactly one of --withdraw or --category C")
    if args.category and args.category not in cons.categories:
        raise UsageError(f"--category {args.category!r} is not a category of {cons.name}; "
                         f"categories: {category_list(cons)}")
    target = _record(args, args.record_id, connect, d, ep, who)
    c = rpb.Correction(
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

    d, _, who, ep = _endpoint(args)
    if args.uphold == args.reject:
        raise UsageError("give exactly one of --uphold or --reject")
    appeal = _record(args, args.appeal_id, connect, d, ep, who)
    c = rpb.Correction(
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


def _public(args: argparse.Namespace, connect: Connect) -> tuple[Any, Any]:
    """The Public service of --node, and the verified consortium."""
    from node import client

    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    return connect("public", Dial(d, client.resolve_node(cons, args.node))), cons


def cmd_log_checkpoint(args: argparse.Namespace, connect: Connect) -> int:
    import base64
    import json

    from markex.v1 import service_pb2 as pb

    stub, _ = _public(args, connect)
    cp = stub.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
    if args.json:
        root = base64.b64encode(cp.root).decode()
        print(json.dumps({"note": cp.note, "size": cp.size, "root": root}))
    else:
        sys.stdout.write(cp.note)
    return 0


def cmd_log_entries(args: argparse.Namespace, connect: Connect) -> int:
    import base64

    from markex.v1 import service_pb2 as pb
    from node import client

    # Raw entries are for members and auditors: the member port's Audit service,
    # as --as or, like `markex audit`, the consortium's first auditor.
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    if args.as_id:
        acting(args, cons)
    if args.end <= args.start:
        raise UsageError("--end must be greater than --start")
    stub = connect("audit", Dial(d, client.resolve_node(cons, args.node),
                                 reader_id(cons, args.as_id)))
    entries: list[str] = []
    i = args.start
    while i < args.end:
        r = stub.GetEntries(pb.GetEntriesRequest(start=i, end=args.end), timeout=30)
        if not r.envelopes:
            break
        entries.extend(base64.b64encode(e).decode() for e in r.envelopes)
        i += len(r.envelopes)
    end = args.start + len(entries)
    show(args, {"start": args.start, "end": end, "entries": entries}, "\n".join(entries))
    return 0


def cmd_log_inclusion(args: argparse.Namespace, connect: Connect) -> int:
    from node.recordcli import cmd_log_inclusion as inclusion

    return inclusion(args, connect)


def cmd_log_consistency(args: argparse.Namespace, connect: Connect) -> int:
    from node.recordcli import cmd_log_consistency as consistency

    return consistency(args, connect)


def cmd_node_wait(args: argparse.Namespace, connect: Connect) -> int:
    from node.recordcli import cmd_node_wait as node_wait

    return node_wait(args, connect)


def cmd_record_get(args: argparse.Namespace, connect: Connect) -> int:
    from node.recordcli import cmd_record_get as record_get

    return record_get(args, connect)


def cmd_keys_verifier(args: argparse.Namespace, _connect: Connect) -> int:
    from ledger import note
    from ledger.names import log_origin

    _, cons = pinned_consortium(args)
    p = cons.participant(args.participant)
    if p is None:
        raise UsageError(f"{args.participant!r} is not a participant of {cons.name}; "
                         f"participants: {participant_list(cons)}")
    vkey = note.Verifier.for_key(log_origin(cons.name, p.id), p.public_key).to_string()
    show(args, {"participant": p.id, "verifier": vkey}, vkey)
    return 0


def cmd_categories(args: argparse.Namespace, _connect: Connect) -> int:
    from keys.consortium import DEFAULT_TAXONOMY

    if args.consortium or _env_consortium():
        _, cons = pinned_consortium(args)
        taxonomy, whose = cons.taxonomy, cons.name
    else:
        taxonomy, whose = DEFAULT_TAXONOMY, "the default taxonomy (no consortium given)"
    cats = [{"id": c.id, "label": c.label, "rank": c.rank, "risk": c.risk} for c in taxonomy]
    rows = [(c["id"], f"{c['label']}, rank {c['rank']}, "
                      f"{'a risk' if c['risk'] else 'an identity label (not a risk)'}")
            for c in cats]
    show(args, {"consortium": whose, "categories": cats}, f"{whose}:\n" + table(rows))
    return 0


def _env_consortium() -> bool:
    import os

    from node.client import CONSORTIUM_ENV

    return bool(os.environ.get(CONSORTIUM_ENV))


def cmd_lookup(args: argparse.Namespace, connect: Connect) -> int:
    from node.lookupcli import cmd_lookup as lookup

    return lookup(args, connect)


def cmd_view_checkpoint(args: argparse.Namespace, connect: Connect) -> int:
    import json

    from ledger.errors import LedgerError
    from markex.v1 import service_pb2 as pb
    from node.lookup import view_checkpoint_summary

    stub, cons = _public(args, connect)
    text = stub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=10).note
    try:
        obj = view_checkpoint_summary(cons, text)
    except LedgerError as e:  # the node's note, not the caller's input
        raise NotVerified(f"the view checkpoint does not verify: {e}") from e
    if args.json:
        print(json.dumps(obj))
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo(args: argparse.Namespace, _connect: Connect) -> int:
    # Imported when run: the demo brings up processes; no other command needs it.
    from node.demo import run_demo

    return run_demo(quick=args.quick, numbers=args.numbers)


def cmd_audit(args: argparse.Namespace, connect: Connect) -> int:
    # Imported when run: the auditor is large and no other command needs it.
    from node.auditcli import run_audit

    return run_audit(args, connect)


def cmd_verify_evidence(args: argparse.Namespace, connect: Connect) -> int:
    from node.auditcli import verify_evidence_file

    return verify_evidence_file(args, Path(args.file))


# ------------------------------------------------------------------ parser

READER = "a member or auditor to read as (default: the consortium's auditor); its node.toml " \
         "also pins the institute key"
PINNER = "a participant whose node.toml pins the institute key"
ISSUE = "consortium as node json pin"


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the new record's id (e.g. ID=$(markex mark -q ...))")
READ = "consortium as node json pin"


def _cmd(sub: Any, name: str, fn: Any, help_: str, example: str, opts: str,
         as_help: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """One subcommand with its help line, its example (the epilog) and the
    shared options it means something for."""
    p = sub.add_parser(name, help=help_, description=description or help_,
                       epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, *opts.split(), as_help=as_help)
    p.set_defaults(fn=fn)
    return p


def _group(sub: Any, name: str, help_: str) -> Any:
    g = sub.add_parser(name, help=help_, description=help_)
    g.set_defaults(fn=None, usage_of=g)
    return g.add_subparsers(dest="sub", title="commands", metavar="COMMAND")


class _Version(argparse.Action):
    """--version, reading the installed version only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("markex")
        except PackageNotFoundError:
            v = "unknown (not installed)"
        print(f"markex {v}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="markex", description="The national number-mark exchange.",
               epilog=exit_code_epilog() + "\n\nmore: docs/cli.md; every command's --help "
                                           "shows an example",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    p.set_defaults(fn=None, usage_of=p, **OPTION_DEFAULTS)
    sub = p.add_subparsers(dest="cmd", title="commands", metavar="COMMAND")

    cons = _group(sub, "consortium", "set up a consortium: keys, CA, signed consortium.json")
    ci = _cmd(cons, "init", cmd_consortium_init,
              "a whole local consortium in one folder: keys, CA, certificates, node.toml, "
              "signed consortium.json", "markex consortium init ~/markex-c", "json")
    ci.add_argument("dir", metavar="DIR", help="the folder to create (must be empty)")
    ci.add_argument("--carriers", type=uint32, default=3, help="how many carriers (default 3)")
    ci.add_argument("--internet", type=uint32, default=2,
                    help="how many internet firms (default 2)")
    ci.add_argument("--base-port", type=uint32, default=7400,
                    help="the first of the loopback ports the nodes listen on (default 7400)")
    ci.add_argument(GIT_FLAG, action="store_true",
                    help="allow DIR inside a git work tree (it holds private keys: "
                         "keep it in .gitignore)")

    nd = _group(sub, "node", "run or configure a node")
    nr = _cmd(nd, "run", cmd_node_run, "run this participant's node until SIGTERM",
              "markex node run --consortium ~/markex-c --as carrier-1", "consortium as",
              as_help="the participant whose node this is")
    nr.add_argument("--restored", action="store_true",
                    help="the store was restored from a backup: issue only once a quorum of "
                         "peers agree on this node's own feed head")
    nr.add_argument("--test-refuse-file", metavar="FILE",
                    help="TESTS ONLY: refuse the peers listed in FILE (simulated partitions)")
    nw = _cmd(nd, "wait", cmd_node_wait,
              "wait until nodes answer with cosigned checkpoints (with --for: covering a "
              "record, in the log and in the view)",
              "markex node wait --node internet-1 --for 1a2b3c4d5e6f7a8b",
              "consortium as node json pin",
              as_help=READER)
    nw.add_argument("--for", dest="for_records", metavar="RECORD_ID", action="append",
                    help="a record every node asked must hold in its cosigned log and view "
                         "checkpoints (64 hex digits or a unique prefix; may be repeated)")
    nw.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                    help="give up after this long, 0..3600, exit code 5 (default 60)")

    dm = _cmd(sub, "demo", cmd_demo, "a whole local consortium, a scenario, the view, an audit",
              "markex demo --quick", "")
    dm.add_argument("--quick", action="store_true", help="fewer numbers")
    dm.add_argument("--numbers", type=uint32, default=0,
                    help="how many numbers to mark (default 0: the scenario's own count)")

    mk = _cmd(sub, "mark", cmd_mark, "sign and append a mark on a number",
              "markex mark --as carrier-1 13812345678 fraud --score 80", ISSUE,
              description="Sign and append a mark on a number.\n\ncategories (the default "
                          "taxonomy; `markex categories` lists a consortium's own):\n"
                          "  risks: fraud, harassment, debt-collection, one-ring, marketing,\n"
                          "         real-estate, finance-insurance, recruitment\n"
                          "  identity labels (not risks): delivery, taxi, customer-service")
    _quiet(mk)
    mk.add_argument("number", metavar="NUMBER", help="the number, E.164 or national form")
    mk.add_argument("category", metavar="CATEGORY",
                    help="a category of the consortium's taxonomy (see `markex categories`)")
    mk.add_argument("--score", type=_score, default=60, help="how sure, 0..100 (default 60)")
    mk.add_argument("--reports", type=uint32, default=1,
                    help="how many reports back the mark (default 1)")
    mk.add_argument("--expires-days", type=finite_float, default=0, metavar="DAYS",
                    help="days until the mark expires (default 0: the policy's expiry, "
                         "180 days by default)")

    co = _cmd(sub, "correct", cmd_correct,
              "correct a mark: at once on one's own, an appeal on another's",
              "markex correct --as carrier-2 1a2b3c4d --withdraw --reason 'licensed courier'",
              ISSUE)
    _quiet(co)
    co.add_argument("record_id", metavar="RECORD_ID",
                    help="the mark's id: 64 hex digits or a unique prefix of at least 8")
    co.add_argument("--withdraw", action="store_true", help="withdraw the mark")
    co.add_argument("--category", metavar="C", help="recategorize the mark as C")
    co.add_argument("--reason", metavar="TEXT", help="why (kept in the record)")

    de = _cmd(sub, "decide", cmd_decide, "the institute decides an appeal",
              "markex decide --as institute 5e6f7a8b --uphold --reason 'courier confirmed'",
              ISSUE)
    _quiet(de)
    de.add_argument("appeal_id", metavar="APPEAL_ID",
                    help="the appeal's id: 64 hex digits or a unique prefix of at least 8")
    de.add_argument("--uphold", action="store_true", help="the marks are set aside")
    de.add_argument("--reject", action="store_true", help="the marks stand")
    de.add_argument("--reason", metavar="TEXT", help="why (kept in the record)")

    ra = _cmd(sub, "reassign", cmd_reassign, "declare a number given to a new holder",
              "markex reassign --as carrier-1 13812345678 --at 2026-12-01T00:00:00Z", ISSUE)
    _quiet(ra)
    ra.add_argument("number", metavar="NUMBER", help="the number, E.164 or national form")
    ra.add_argument("--at", required=True, metavar="ISO8601",
                    help="when the new holder got it, e.g. 2026-12-01T00:00:00Z (UTC when no "
                         "zone is given); marks observed before no longer count")

    lk = _cmd(sub, "lookup", cmd_lookup,
              "a number's national view entry, verified against a cosigned view checkpoint",
              "markex lookup --node internet-1 13812345678", READ, as_help=READER)
    lk.add_argument("number", metavar="NUMBER", nargs="?", help="the number looked up")
    lk.add_argument("--batch", metavar="FILE",
                    help="look up every number of FILE (one a line) through LookupBatch")
    lk.add_argument("--at", metavar="ISO8601",
                    help="evaluate the entry at this time, e.g. 2026-12-01T00:00:00Z "
                         "(default: now)")

    _cmd(sub, "categories", cmd_categories, "the mark categories and the names users know",
         "markex categories", "consortium as json pin", as_help=PINNER)

    rc = _group(sub, "record", "one record, followed to its proof")
    rg = _cmd(rc, "get", cmd_record_get,
              "a record decoded, with its log index and its inclusion proof verified against "
              "the node's cosigned log checkpoint",
              "markex record get --node carrier-1 1a2b3c4d", READ, as_help=READER)
    rg.add_argument("record_id", metavar="RECORD_ID",
                    help="64 hex digits or a unique prefix of at least 8")

    vw = _group(sub, "view", "the national view")
    _cmd(vw, "checkpoint", cmd_view_checkpoint, "the node's latest signed view checkpoint",
         "markex view checkpoint --node carrier-1", "consortium as node json pin",
         as_help=PINNER)

    lg = _group(sub, "log", "the node's Merkle log")
    _cmd(lg, "checkpoint", cmd_log_checkpoint,
         "the node's latest signed log checkpoint, as the note text (with cosignatures)",
         "markex log checkpoint --node carrier-1", "consortium as node json pin",
         as_help=PINNER)
    le = _cmd(lg, "entries", cmd_log_entries,
              "envelopes START..END-1 of the node's log (members and auditors)",
              "markex log entries --node carrier-1 --start 0 --end 10", READ, as_help=READER)
    le.add_argument("--start", type=uint64, required=True, help="the first index")
    le.add_argument("--end", type=uint64, required=True, help="one past the last index")
    li = _cmd(lg, "inclusion", cmd_log_inclusion,
              "an inclusion proof, verified against the node's cosigned log checkpoint",
              "markex log inclusion --node carrier-1 --index 3", "consortium as node json pin",
              as_help=PINNER)
    li.add_argument("--index", type=uint64, required=True, help="the leaf's index")
    li.add_argument("--size", type=uint64,
                    help="the tree size (default: the latest checkpoint's)")
    lcs = _cmd(lg, "consistency", cmd_log_consistency,
               "a consistency proof, verified against the node's cosigned log checkpoint",
               "markex log consistency --node carrier-1 --old 2", "consortium as node json pin",
               as_help=PINNER)
    lcs.add_argument("--old", type=uint64, required=True, help="the older tree size")
    lcs.add_argument("--new", type=uint64,
                     help="the newer tree size (default: the latest checkpoint's)")

    au = _cmd(sub, "audit", cmd_audit,
              "verify a node's log, checkpoints and view, online or on a stopped node's files",
              "markex audit --node carrier-1", READ, as_help=READER)
    au.add_argument("--data-dir", metavar="PATH", help="audit a stopped node's files offline")
    au.add_argument("--state", metavar="FILE",
                    help="auditor state file (remembers audited checkpoints)")
    au.add_argument("--evidence-dir", metavar="DIR",
                    help="where evidence files go (default: beside the state)")
    aus = au.add_subparsers(dest="sub", title="commands", metavar="COMMAND")
    ve = _cmd(aus, "verify-evidence", cmd_verify_evidence,
              "check an evidence file (equivocation, fork) with consortium.json",
              "markex audit verify-evidence c/audit/evidence/equivocation-x.json",
              "consortium as json pin", as_help=PINNER)
    ve.add_argument("file", metavar="FILE", help="the evidence file")

    ky = _group(sub, "keys", "keys")
    kv = _cmd(ky, "verifier", cmd_keys_verifier, "a participant's signed-note verifier key",
              "markex keys verifier --participant carrier-1", "consortium as json pin",
              as_help=PINNER)
    kv.add_argument("--participant", required=True, metavar="ID", help="whose key")

    ceremony.register(sub, cons, ky, nd, common_options())
    return p


def _seconds(s: str) -> float:
    v = finite_float(s)
    if not 0 <= v <= 3600:
        raise argparse.ArgumentTypeError(f"{s} is not between 0 and 3600 seconds")
    return v


def _score(s: str) -> int:
    try:
        v = int(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from e
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"{s} is not between 0 and 100")
    return v


def main(argv: list[str] | None = None, *, connect: Connect | None = None) -> int:
    """Run `markex` with `argv` (default: sys.argv[1:]) and return its exit
    code. `connect` reaches the nodes (default: TLS channels from the
    consortium folder, all closed before this returns)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return fail("--json" in argv, Exit.USAGE, str(e))
    if args.fn is None:  # `markex` or `markex log` alone: what there is to run
        args.usage_of.print_help(sys.stderr)
        return int(Exit.USAGE)
    if connect is not None:
        return run(args.fn, args, connect)
    with TlsConnect() as tls:
        return run(args.fn, args, tls)


if __name__ == "__main__":
    sys.exit(main())
