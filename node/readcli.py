"""The commands that read what a node or the consortium publishes as it is:
`log checkpoint` (the note), `log entries` (raw envelopes, for members and
auditors), `view checkpoint`, `keys verifier` and `categories`. node/cli.py
runs these by name."""

from __future__ import annotations

import argparse
import sys

from node.command import (
    NotVerified,
    UsageError,
    acting,
    node_endpoints,
    participant_list,
    pinned_consortium,
    public_of,
    show,
    table,
)
from node.connect import Connect, Dial, reader_id


def cmd_log_checkpoint(args: argparse.Namespace, connect: Connect) -> int:
    import base64
    import json

    from markex.v1 import service_pb2 as pb

    stub, _ = public_of(args, connect)
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

    # Raw entries are for members and auditors: the member port's Audit service,
    # as --as or, like `markex audit`, the consortium's first auditor.
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    if args.as_id:
        acting(args, cons)
    if args.end <= args.start:
        raise UsageError("--end must be greater than --start")
    stub = connect("audit", Dial(d, node_endpoints(cons, args.node),
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


def cmd_view_checkpoint(args: argparse.Namespace, connect: Connect) -> int:
    import json

    from ledger.errors import LedgerError
    from markex.v1 import service_pb2 as pb
    from node.lookup import view_checkpoint_summary

    stub, cons = public_of(args, connect)
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
