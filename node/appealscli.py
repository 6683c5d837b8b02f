"""`markex appeals --as institute [--pending] [--node ID]`: the appeals a
node's view holds (the institute's queue), oldest first, with their age.
Read from the member port's Holders service (node/holders.py) with the
participant's own certificate: the holder's statement is shown to members
only. Decisions stay with `markex decide`. node/cli.py runs it by name."""

from __future__ import annotations

import argparse
import time
from typing import Any

from node.command import acting, node_endpoints, pinned_consortium, show
from node.connect import Connect, Dial

RPC_TIMEOUT_S = 30


def appeal_rows(appeals: Any, now_ms: int) -> list[dict[str, Any]]:
    """The JSON rows of AppealSummary messages at `now_ms`."""
    return [
        {
            "id": a.id.hex(),
            "number": a.number,
            "status": a.status,
            "filed_at": a.filed_at_ms,
            "age_s": max(0, (now_ms - a.filed_at_ms) // 1000),
            "filed_by": a.appellant,
            "statement": a.statement,
            "decided_at": a.closed_at_ms or None,
        }
        for a in appeals
    ]


def cmd_appeals(args: argparse.Namespace, connect: Connect) -> int:
    from markex.v1 import service_pb2 as pb

    d, cons = pinned_consortium(args)
    as_id = acting(args, cons)
    stub = connect("holders", Dial(d, node_endpoints(cons, args.node or as_id), as_id))
    got = stub.ListAppeals(pb.ListAppealsRequest(pending_only=args.pending),
                           timeout=RPC_TIMEOUT_S)
    rows = appeal_rows(got.appeals, int(time.time() * 1000))
    if args.json:
        show(args, {"appeals": rows})
        return 0
    if not rows:
        print("no pending appeals" if args.pending else "no appeals")
        return 0
    for r in rows:
        age = f"{r['age_s'] // 86400}d {r['age_s'] % 86400 // 3600}h"
        print(f"{r['id'][:16]}  {r['number']:<16} {r['status']:<9} {age:>8}  "
              f"by {r['filed_by']}: {r['statement'][:60]}")
    return 0
