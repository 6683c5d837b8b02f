"""`markex`: the one command. `main(argv)` returns an exit code and is what
tests call. With --json a command prints exactly one JSON object on stdout;
errors go to stderr with a message that says what was wrong, and exit 1
(2 for usage errors)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from keys import KeysError
from keys.consortium import Consortium
from ledger import note
from ledger.errors import LedgerError, MalformedRecord
from ledger.log import log_origin
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from node import client
from node.status import error_from_rpc


class UsageError(Exception):
    pass


def _parse_time(s: str) -> int:
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as e:
        raise UsageError(f"{s!r} is not an ISO 8601 time (e.g. 2026-11-28T10:00:00Z)") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _record_id(s: str) -> bytes:
    try:
        b = bytes.fromhex(s)
    except ValueError as e:
        raise UsageError(f"{s!r} is not a hex record id") from e
    if len(b) != 32:
        raise UsageError(f"a record id is 64 hex digits, got {len(s)}")
    return b


def _out(args: argparse.Namespace, obj: dict[str, Any], text: str | None = None) -> None:
    if args.json:
        print(json.dumps(obj, ensure_ascii=False))
    else:
        print(text if text is not None else "\n".join(f"{k}: {v}" for k, v in obj.items()))


def _cons(args: argparse.Namespace) -> tuple[Path, Consortium]:
    """The consortium folder and its configuration, verified with the pinned
    institute key (--institute-key, $MARKEX_INSTITUTE_KEY or --as's node.toml)."""
    d = client.consortium_dir(args.consortium)
    return d, client.load_pinned(d, args.institute_key, args.as_id)


def _acting(args: argparse.Namespace, cons: Consortium) -> str:
    if not args.as_id:
        raise UsageError("--as ID is required: the participant acting")
    if cons.participant(args.as_id) is None:
        raise UsageError(f"--as {args.as_id!r} is not a participant of {cons.name}")
    return args.as_id


def _admin(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    d, cons = _cons(args)
    who = _acting(args, cons)
    ep = client.resolve_node(cons, args.node or who)
    return client.admin_stub(d, who, ep.member, ep.participant), who


def _public(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    d, cons = _cons(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    ep = client.resolve_node(cons, args.node)
    return client.public_stub(d, ep.public, ep.participant), d, cons


def _issued(args: argparse.Namespace, r: pb.Issued, with_appeal: bool = False) -> None:
    obj: dict[str, Any] = {"id": r.id.hex(), "issuer": r.issuer, "seq": r.seq}
    if with_appeal:
        obj["appeal"] = r.appeal
    _out(args, obj)


# ------------------------------------------------------------------ commands


def cmd_consortium_init(args: argparse.Namespace) -> int:
    from keys.layout import init_consortium

    cons = init_consortium(
        Path(args.dir).resolve(),
        carriers=args.carriers,
        internet=args.internet,
        base_port=args.base_port,
        now=datetime.now(UTC),
    )
    _out(
        args,
        {
            "dir": str(Path(args.dir).resolve()),
            "name": cons.name,
            "participants": [p.id for p in cons.participants],
        },
    )
    return 0


def cmd_node_run(args: argparse.Namespace) -> int:
    from keys.layout import NodeConfig
    from node.server import run_node

    d = client.consortium_dir(args.consortium)
    if not args.as_id:
        raise UsageError("--as ID is required: the participant whose node this is")
    refuse = Path(args.test_refuse_file) if args.test_refuse_file else None
    return run_node(
        NodeConfig.for_participant(d, args.as_id), refuse_file=refuse, restored=args.restored
    )


def cmd_mark(args: argparse.Namespace) -> int:
    stub, _ = _admin(args)
    from ledger.numbers import normalize

    number = normalize(args.number)
    now = int(datetime.now(UTC).timestamp() * 1000)
    expires = now + int(args.expires_days * 86_400_000) if args.expires_days else 0
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


def cmd_correct(args: argparse.Namespace) -> int:
    stub, _ = _admin(args)
    if args.withdraw == bool(args.category):
        raise UsageError("give exactly one of --withdraw or --category C")
    c = rpb.Correction(
        targets=[_record_id(args.record_id)],
        action=rpb.CORRECTION_ACTION_WITHDRAW
        if args.withdraw
        else rpb.CORRECTION_ACTION_RECATEGORIZE,
        category=args.category or "",
        reason=args.reason or "",
    )
    _issued(args, stub.IssueCorrection(c, timeout=30), with_appeal=True)
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    stub, _ = _admin(args)
    if args.uphold == args.reject:
        raise UsageError("give exactly one of --uphold or --reject")
    c = rpb.Correction(
        appeal_id=_record_id(args.appeal_id),
        outcome=rpb.APPEAL_OUTCOME_UPHOLD if args.uphold else rpb.APPEAL_OUTCOME_REJECT,
        reason=args.reason or "",
    )
    _issued(args, stub.IssueCorrection(c, timeout=30))
    return 0


def cmd_reassign(args: argparse.Namespace) -> int:
    stub, _ = _admin(args)
    from ledger.numbers import normalize

    r = rpb.Reassignment(number=normalize(args.number), effective_at_ms=_parse_time(args.at))
    _issued(args, stub.IssueReassignment(r, timeout=30))
    return 0


def cmd_log_checkpoint(args: argparse.Namespace) -> int:
    stub, _, _ = _public(args)
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


def cmd_log_entries(args: argparse.Namespace) -> int:
    # Raw entries are for members and auditors: the member port's Audit service,
    # as --as or, like `markex audit`, the consortium's first auditor.
    from node.auditcli import reader_id

    d, cons = _cons(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    if args.as_id:
        _acting(args, cons)
    who = reader_id(cons, args.as_id)
    stub = client.audit_stub(d, who, client.resolve_node(cons, args.node).member)
    if args.end <= args.start:
        raise UsageError("--end must be greater than --start")
    out: list[str] = []
    i = args.start
    while i < args.end:
        r = stub.GetEntries(pb.GetEntriesRequest(start=i, end=args.end), timeout=30)
        if not r.envelopes:
            break
        out.extend(base64.b64encode(e).decode() for e in r.envelopes)
        i += len(r.envelopes)
    _out(args, {"start": args.start, "end": args.start + len(out), "entries": out}, "\n".join(out))
    return 0


def cmd_log_inclusion(args: argparse.Namespace) -> int:
    stub, _, _ = _public(args)
    r = stub.GetInclusionProof(
        pb.GetInclusionProofRequest(index=args.index, size=args.size), timeout=10
    )
    _out(
        args,
        {
            "index": r.index,
            "size": r.size,
            "leaf_hash": r.leaf_hash.hex(),
            "proof": [h.hex() for h in r.path],
        },
    )
    return 0


def cmd_log_consistency(args: argparse.Namespace) -> int:
    stub, _, _ = _public(args)
    r = stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(old_size=args.old, new_size=args.new), timeout=10
    )
    _out(args, {"old": r.old_size, "new": r.new_size, "proof": [h.hex() for h in r.path]})
    return 0


def cmd_keys_verifier(args: argparse.Namespace) -> int:
    _, cons = _cons(args)
    p = cons.participant(args.participant)
    if p is None:
        raise UsageError(f"{args.participant!r} is not a participant of {cons.name}")
    vkey = note.Verifier.for_key(log_origin(cons.name, p.id), p.public_key).to_string()
    if args.json:
        print(json.dumps({"participant": p.id, "verifier": vkey}))
    else:
        print(vkey)
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    from node.lookup import lookup_verified

    stub, d, cons = _public(args)
    now = int(datetime.now(UTC).timestamp() * 1000)
    at = _parse_time(args.at) if args.at else now
    # Freshness is judged at the real time, whatever time the entry is evaluated at.
    obj = lookup_verified(stub, cons, args.number, at, now_ms=now)
    _out(args, obj)
    return 0 if obj["verified"] else 1


def cmd_view_checkpoint(args: argparse.Namespace) -> int:
    from node.lookup import view_checkpoint_summary

    stub, d, cons = _public(args)
    text = stub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=10).note
    obj = view_checkpoint_summary(cons, text)
    if args.json:
        print(json.dumps(obj))
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    return run_demo(quick=args.quick, numbers=args.numbers)


def cmd_audit(args: argparse.Namespace) -> int:
    from node.auditcli import run_audit

    return run_audit(args)


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--consortium", help="consortium folder (or MARKEX_CONSORTIUM)")
    common.add_argument("--as", dest="as_id", help="the acting participant")
    common.add_argument("--node", help="the node asked: participant id or HOST:PORT")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument(
        "--institute-key",
        metavar="B64",
        help="the institute's configuration key consortium.json must be signed with "
        "(or MARKEX_INSTITUTE_KEY; default: institute_key in <consortium>/<--as>/node.toml)",
    )

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
    mk.add_argument("--score", type=int, default=60)
    mk.add_argument("--reports", type=int, default=1)
    mk.add_argument("--expires-days", type=float, default=0)
    mk.set_defaults(fn=cmd_mark)

    co = sub.add_parser("correct", parents=[common], help="correct a mark (an appeal on another's)")
    co.add_argument("record_id")
    co.add_argument("--withdraw", action="store_true")
    co.add_argument("--category")
    co.add_argument("--reason")
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

    lg = sub.add_parser("log", help="the node's Merkle log").add_subparsers(
        dest="sub", required=True
    )
    lc = lg.add_parser("checkpoint", parents=[common])
    lc.set_defaults(fn=cmd_log_checkpoint)
    le = lg.add_parser("entries", parents=[common])
    le.add_argument("--start", type=int, required=True)
    le.add_argument("--end", type=int, required=True)
    le.set_defaults(fn=cmd_log_entries)
    li = lg.add_parser("inclusion", parents=[common])
    li.add_argument("--index", type=int, required=True)
    li.add_argument("--size", type=int, required=True)
    li.set_defaults(fn=cmd_log_inclusion)
    lcs = lg.add_parser("consistency", parents=[common])
    lcs.add_argument("--old", type=int, required=True)
    lcs.add_argument("--new", type=int, required=True)
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

    from node import ceremony

    ceremony.register(sub, cons, ky, nd, common)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except UsageError as e:
        print(f"markex: {e}", file=sys.stderr)
        return 2
    except (LedgerError, KeysError) as e:
        print(f"markex: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        err = error_from_rpc(e)
        print(f"markex: {e.code().name}: {e.details()}", file=sys.stderr)
        del err
        return 1
    except MalformedRecord as e:  # pragma: no cover - covered by LedgerError
        print(f"markex: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
