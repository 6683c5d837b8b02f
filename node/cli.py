"""`markex`: the one command, and the root of the command line: it builds
the parser from its own commands, the ceremony's (node/ceremony.py) and
`markex audit` (node/auditcli.py), and runs one. `main(argv, connect=...)`
returns an exit code and is what tests call; `connect` reaches the nodes
(node/connect.py; default: TLS channels as the consortium folder gives them).
With --json a command prints exactly one JSON object on stdout; errors go to
stderr with a message that says what was wrong, and exit 1 (2 for usage
errors)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keys.consortium import Consortium
from ledger import note
from ledger.names import log_origin
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from node import ceremony, client, exportcli
from node.command import (
    UsageError,
    acting,
    common_options,
    finite_float,
    parse_time,
    pinned_consortium,
    record_id,
    run,
    show,
    uint32,
    uint64,
)
from node.connect import Connect, Dial, TlsConnect, reader_id

__all__ = ["UsageError", "build_parser", "main"]


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _admin(args: argparse.Namespace, connect: Connect) -> Any:
    """The Admin service of --as's node (or --node's), with --as's admin certificate."""
    d, cons = pinned_consortium(args)
    who = acting(args, cons)
    ep = client.resolve_node(cons, args.node or who)
    return connect("admin", Dial(d, ep, who))


def _public(args: argparse.Namespace, connect: Connect) -> tuple[Any, Consortium]:
    """The Public service of --node, and the verified consortium."""
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    return connect("public", Dial(d, client.resolve_node(cons, args.node))), cons


def _issued(args: argparse.Namespace, r: pb.Issued, with_appeal: bool = False) -> None:
    obj: dict[str, Any] = {"id": r.id.hex(), "issuer": r.issuer, "seq": r.seq}
    if with_appeal:
        obj["appeal"] = r.appeal
    show(args, obj)


# ------------------------------------------------------------------ commands


def cmd_consortium_init(args: argparse.Namespace, _connect: Connect) -> int:
    from keys.layout import init_consortium

    cons = init_consortium(
        Path(args.dir).resolve(),
        carriers=args.carriers,
        internet=args.internet,
        base_port=args.base_port,
        hosts=args.host or (),
        now=datetime.now(UTC),
        listen_all=args.listen_all,
    )
    show(
        args,
        {
            "dir": str(Path(args.dir).resolve()),
            "name": cons.name,
            "participants": [p.id for p in cons.participants],
        },
    )
    return 0


def cmd_node_run(args: argparse.Namespace, _connect: Connect) -> int:
    from keys.layout import NodeConfig
    from node.server import run_node

    d = client.consortium_dir(args.consortium)
    if not args.as_id:
        raise UsageError("--as ID is required: the participant whose node this is")
    refuse = Path(args.test_refuse_file) if args.test_refuse_file else None
    return run_node(
        NodeConfig.for_participant(d, args.as_id), refuse_file=refuse, restored=args.restored
    )


def cmd_mark(args: argparse.Namespace, connect: Connect) -> int:
    stub = _admin(args, connect)
    from ledger.numbers import normalize

    number = normalize(args.number)
    now = _now_ms()
    expires = now + int(args.expires_days * 86_400_000) if args.expires_days else 0
    if not -(2**63) <= expires < 2**63:  # the field is an int64
        raise UsageError(f"--expires-days {args.expires_days:g} is out of range")
    m = rpb.Mark(
        number=number,
        category=args.category,
        score=args.score,
        reports=args.reports,
        observed_at_ms=now,
        expires_at_ms=expires,
    )
    _issued(args, stub.IssueMark(m, timeout=30))
    return 0


def cmd_correct(args: argparse.Namespace, connect: Connect) -> int:
    stub = _admin(args, connect)
    if args.withdraw == bool(args.category):
        raise UsageError("give exactly one of --withdraw or --category C")
    c = pb.CorrectionRequest(
        targets=[record_id(args.record_id)],
        action=rpb.CORRECTION_ACTION_WITHDRAW
        if args.withdraw
        else rpb.CORRECTION_ACTION_RECATEGORIZE,
        category=args.category or "",
        reason=args.reason or "",
        wait_for_target=args.wait_for_target,
    )
    _issued(args, stub.IssueCorrection(c, timeout=30), with_appeal=True)
    return 0


def cmd_decide(args: argparse.Namespace, connect: Connect) -> int:
    stub = _admin(args, connect)
    if args.uphold == args.reject:
        raise UsageError("give exactly one of --uphold or --reject")
    c = rpb.Correction(
        appeal_id=record_id(args.appeal_id),
        outcome=rpb.APPEAL_OUTCOME_UPHOLD if args.uphold else rpb.APPEAL_OUTCOME_REJECT,
        reason=args.reason or "",
    )
    _issued(args, stub.IssueCorrection(c, timeout=30))
    return 0


def cmd_reassign(args: argparse.Namespace, connect: Connect) -> int:
    stub = _admin(args, connect)
    from ledger.numbers import normalize

    r = rpb.Reassignment(number=normalize(args.number), effective_at_ms=parse_time(args.at))
    _issued(args, stub.IssueReassignment(r, timeout=30))
    return 0


def cmd_log_checkpoint(args: argparse.Namespace, connect: Connect) -> int:
    stub, _ = _public(args, connect)
    cp = stub.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
    if args.json:
        print(
            json.dumps(
                {"note": cp.note, "size": cp.size, "root": base64.b64encode(cp.root).decode()}
            )
        )
    else:
        sys.stdout.write(cp.note)
    return 0


def cmd_log_entries(args: argparse.Namespace, connect: Connect) -> int:
    # Raw entries are for members and auditors: the member port's Audit service,
    # as --as or, like `markex audit`, the consortium's first auditor.
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    if args.as_id:
        acting(args, cons)
    who = reader_id(cons, args.as_id)
    stub = connect("audit", Dial(d, client.resolve_node(cons, args.node), who))
    if args.end <= args.start:
        raise UsageError("--end must be greater than --start")
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
    stub, _ = _public(args, connect)
    r = stub.GetInclusionProof(
        pb.GetInclusionProofRequest(index=args.index, size=args.size), timeout=10
    )
    show(
        args,
        {
            "index": r.index,
            "size": r.size,
            "leaf_hash": r.leaf_hash.hex(),
            "proof": [h.hex() for h in r.path],
        },
    )
    return 0


def cmd_log_consistency(args: argparse.Namespace, connect: Connect) -> int:
    stub, _ = _public(args, connect)
    r = stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(old_size=args.old, new_size=args.new), timeout=10
    )
    show(args, {"old": r.old_size, "new": r.new_size, "proof": [h.hex() for h in r.path]})
    return 0


def cmd_keys_verifier(args: argparse.Namespace, _connect: Connect) -> int:
    _, cons = pinned_consortium(args)
    p = cons.participant(args.participant)
    if p is None:
        raise UsageError(f"{args.participant!r} is not a participant of {cons.name}")
    vkey = note.Verifier.for_key(log_origin(cons.name, p.id), p.public_key).to_string()
    if args.json:
        print(json.dumps({"participant": p.id, "verifier": vkey}))
    else:
        print(vkey)
    return 0


def cmd_lookup(args: argparse.Namespace, connect: Connect) -> int:
    from node.lookup import lookup_verified

    stub, cons = _public(args, connect)
    now = _now_ms()
    at = parse_time(args.at) if args.at else now
    # Freshness is judged at the real time, whatever time the entry is evaluated at.
    obj = lookup_verified(stub, cons, args.number, at, now_ms=now)
    show(args, obj)
    return 0 if obj["verified"] else 1


def cmd_view_checkpoint(args: argparse.Namespace, connect: Connect) -> int:
    from node.lookup import view_checkpoint_summary

    stub, cons = _public(args, connect)
    text = stub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=10).note
    obj = view_checkpoint_summary(cons, text)
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


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    common = common_options()

    p = argparse.ArgumentParser(prog="markex", description="The national number-mark exchange.")
    sub = p.add_subparsers(dest="cmd", required=True)

    cons = sub.add_parser("consortium", help="consortium set-up").add_subparsers(
        dest="sub", required=True
    )
    ci = cons.add_parser(
        "init", parents=[common], help="keys, CA, certificates, signed consortium.json"
    )
    ci.add_argument("dir")
    ci.add_argument("--carriers", type=int, default=3)
    ci.add_argument("--internet", type=int, default=2)
    ci.add_argument("--base-port", type=int, default=7400)
    ci.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="a DNS name or IP address of the machine the nodes run on (repeatable): every "
        "node certificate names it, and consortium.json's endpoints use the first "
        "(default 127.0.0.1); see docs/config.md",
    )
    ci.add_argument(
        "--listen-all",
        action="store_true",
        help="nodes listen on 0.0.0.0 (every interface); default: the first --host when it "
        "is an IP address, else 127.0.0.1",
    )
    ci.set_defaults(fn=cmd_consortium_init)

    nd = sub.add_parser("node", help="run a node").add_subparsers(dest="sub", required=True)
    nr = nd.add_parser("run", parents=[common], help="run this participant's node until SIGTERM")
    nr.add_argument(
        "--restored",
        action="store_true",
        help="the store was restored from a backup: issue only once a quorum of peers "
        "agree on this node's own feed head",
    )
    nr.add_argument(
        "--test-refuse-file",
        metavar="FILE",
        help="TESTS ONLY: refuse the peers listed in FILE (simulated partitions)",
    )
    nr.set_defaults(fn=cmd_node_run)

    dm = sub.add_parser("demo", parents=[common], help="a whole local consortium and a scenario")
    dm.add_argument("--quick", action="store_true", help="fewer numbers")
    dm.add_argument("--numbers", type=int, default=0, help="how many numbers to mark")
    dm.set_defaults(fn=cmd_demo)

    mk = sub.add_parser("mark", parents=[common], help="sign and append a mark")
    mk.add_argument("number")
    mk.add_argument("category")
    mk.add_argument("--score", type=uint32, default=60)
    mk.add_argument("--reports", type=uint32, default=1)
    mk.add_argument("--expires-days", type=finite_float, default=0)
    mk.set_defaults(fn=cmd_mark)

    co = sub.add_parser("correct", parents=[common], help="correct a mark (an appeal on another's)")
    co.add_argument("record_id")
    co.add_argument("--withdraw", action="store_true")
    co.add_argument("--category")
    co.add_argument("--reason")
    co.add_argument(
        "--wait-for-target",
        action="store_true",
        help="issue even if the node has not seen RECORD_ID yet; the correction applies "
        "once it arrives (without it: refused, not found)",
    )
    co.set_defaults(fn=cmd_correct)

    de = sub.add_parser("decide", parents=[common], help="the institute decides an appeal")
    de.add_argument("appeal_id")
    de.add_argument("--uphold", action="store_true")
    de.add_argument("--reject", action="store_true")
    de.add_argument("--reason")
    de.set_defaults(fn=cmd_decide)

    ra = sub.add_parser("reassign", parents=[common], help="declare a number given to a new holder")
    ra.add_argument("number")
    ra.add_argument("--at", required=True)
    ra.set_defaults(fn=cmd_reassign)

    lk = sub.add_parser("lookup", parents=[common], help="verified national view entry")
    lk.add_argument("number")
    lk.add_argument("--at")
    lk.set_defaults(fn=cmd_lookup)

    vw = sub.add_parser("view", help="the national view").add_subparsers(dest="sub", required=True)
    vc = vw.add_parser("checkpoint", parents=[common])
    vc.set_defaults(fn=cmd_view_checkpoint)
    exportcli.register(vw, common)

    lg = sub.add_parser("log", help="the node's Merkle log").add_subparsers(
        dest="sub", required=True
    )
    lc = lg.add_parser("checkpoint", parents=[common])
    lc.set_defaults(fn=cmd_log_checkpoint)
    le = lg.add_parser("entries", parents=[common])
    le.add_argument("--start", type=uint64, required=True)
    le.add_argument("--end", type=uint64, required=True)
    le.set_defaults(fn=cmd_log_entries)
    li = lg.add_parser("inclusion", parents=[common])
    li.add_argument("--index", type=uint64, required=True)
    li.add_argument("--size", type=uint64, required=True)
    li.set_defaults(fn=cmd_log_inclusion)
    lcs = lg.add_parser("consistency", parents=[common])
    lcs.add_argument("--old", type=uint64, required=True)
    lcs.add_argument("--new", type=uint64, required=True)
    lcs.set_defaults(fn=cmd_log_consistency)

    au = sub.add_parser("audit", parents=[common], help="verify a node's log, checkpoints and view")
    au.add_argument("--data-dir")
    au.add_argument("--state", help="auditor state file (remembers audited checkpoints)")
    au.add_argument("--evidence-dir", help="where evidence files go (default: beside the state)")
    au.add_argument("verify_evidence", nargs="*", help=argparse.SUPPRESS)
    au.set_defaults(fn=cmd_audit)

    ky = sub.add_parser("keys", help="keys").add_subparsers(dest="sub", required=True)
    kv = ky.add_parser(
        "verifier", parents=[common], help="a participant's signed-note verifier key"
    )
    kv.add_argument("--participant", required=True)
    kv.set_defaults(fn=cmd_keys_verifier)

    ceremony.register(sub, cons, ky, nd, common)
    return p


def main(argv: list[str] | None = None, *, connect: Connect | None = None) -> int:
    """Run `markex` with `argv` (default: sys.argv[1:]) and return its exit
    code. `connect` reaches the nodes (default: TLS channels from the
    consortium folder, all closed before this returns)."""
    args = build_parser().parse_args(argv)
    if connect is not None:
        return run(args.fn, args, connect)
    with TlsConnect() as tls:
        return run(args.fn, args, tls)


if __name__ == "__main__":
    sys.exit(main())
