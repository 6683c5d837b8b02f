"""`markex view watch`: a downstream copy of a node's view through WatchView,
every delta verified (ledger/watch.py) before it is printed or kept.

    markex view watch --node ID [--from FILE] [--jsonl] [--count N]

With `--from FILE` the copy survives the process: FILE holds the last
verified checkpoint note (written whole or not at all), FILE.d/ a RocksDB with
the copy's entries and, in the same atomic write, the note they were verified
at (what a resume trusts: FILE is the readable copy of it). A restart reloads
the copy from FILE.d/, checks its root against that note again, and asks the
node for the changes since it: no full reload. A dropped connection is dialled
again with backoff (0.5 s doubling to 30 s); a delta that does not verify ends
the command (exit 1) with the copy at its last verified state.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from ledger.errors import LedgerError
from ledger.watch import Change, WatchCopy
from markex.v1 import service_pb2 as pb
from node.command import NotVerified, UsageError, node_endpoints, pinned_consortium
from node.connect import Connect, Dial
from node.status import error_from_rpc

BACKOFF_S = (0.5, 30.0)        # first and longest wait before dialling again
_NOTE = b"m/note"              # FILE.d: the note the entries were verified at
_ENTRY = b"e/"                 # FILE.d: e/<number> -> entry bytes
# Statuses after which dialling again cannot help: the node refuses the request itself.
FINAL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
         grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
         grpc.StatusCode.UNIMPLEMENTED)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class KeptCopy:
    """The copy's entries and note in FILE.d/ (RocksDB), FILE the note."""

    def __init__(self, file: Path) -> None:
        from rocksdict import Rdict

        self.file = file
        self.db = Rdict(str(file) + ".d")

    def note(self) -> str:
        raw = self.db.get(_NOTE)
        return "" if raw is None else bytes(raw).decode()

    def entries(self) -> list[tuple[str, bytes]]:
        out = []
        for k, v in self.db.items(from_key=_ENTRY):
            k = bytes(k)
            if not k.startswith(_ENTRY):
                break
            out.append((k[len(_ENTRY):].decode(), bytes(v)))
        return out

    def save(self, changes: list[Change], note: str, snapshot: bool) -> None:
        """The verified delta and its note, in one atomic write; then FILE."""
        from rocksdict import WriteBatch

        if snapshot:
            for k in [bytes(k) for k in self.db.keys(from_key=_ENTRY)]:
                if not k.startswith(_ENTRY):
                    break
                self.db.delete(k)
        wb = WriteBatch()
        for c in changes:
            key = _ENTRY + c.number.encode()
            if c.entry is None:
                wb.delete(key)
            else:
                wb.put(key, c.entry)
        wb.put(_NOTE, note.encode())
        self.db.write(wb)
        tmp = self.file.with_name(self.file.name + ".tmp")
        tmp.write_text(note)
        os.replace(tmp, self.file)

    def close(self) -> None:
        self.db.close()


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def _checkpoint_line(copy: WatchCopy, snapshot: bool, changed: int, reason: str) -> dict[str, Any]:
    cp = copy.checkpoint
    assert cp is not None
    return {"checkpoint": {"origin": cp.origin, "vector": dict(cp.vector), "entries": cp.count,
                           "root": base64.b64encode(cp.root).decode(),
                           "signed_at_ms": cp.signed_at_ms},
            "verified": True, "snapshot": snapshot, "changed": changed, "reason": reason}


def watch(stub: Any, copy: WatchCopy, kept: KeptCopy | None, jsonl: bool,
          count: int | None) -> int:
    """Read one WatchView call until it ends; returns the checkpoints verified.
    Raises LedgerError for a delta that does not verify, grpc.RpcError."""
    done = 0
    pending: list[Change] = []
    snapshot, reason = False, ""
    call = stub.WatchView(pb.WatchViewRequest(since=copy.note))
    try:
        for msg in call:
            if msg.snapshot:
                pending, snapshot, reason = [], True, msg.reason
            pending.extend(Change(e.number, e.entry or None) for e in msg.entries)
            if not msg.checkpoint:
                continue
            copy.apply(pending, msg.checkpoint, _now_ms(), snapshot=snapshot)
            if kept is not None:
                kept.save(pending, msg.checkpoint, snapshot)
            if jsonl:
                for c in pending:
                    _emit({"number": c.number, "entry": None if c.entry is None
                           else base64.b64encode(c.entry).decode()})
            line = _checkpoint_line(copy, snapshot, len(pending), reason)
            if jsonl:
                _emit(line)
            else:
                cp = line["checkpoint"]
                print(f"verified {cp['entries']} entries, root {cp['root']}, "
                      f"{len(pending)} changed{' (snapshot)' if snapshot else ''}", flush=True)
            pending, snapshot, reason = [], False, ""
            done += 1
            if count is not None and done >= count:
                return done
    finally:
        call.cancel()
    return done


def cmd_view_watch(args: argparse.Namespace, connect: Connect) -> int:
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID is required")
    ep = node_endpoints(cons, args.node)
    node = ep.participant or args.node
    if cons.participant(node) is None:
        raise UsageError("--node must name a participant: its view key is what is verified")
    copy = WatchCopy(cons, node)
    kept = None
    if args.from_file:
        kept = KeptCopy(Path(args.from_file))
        note = kept.note()
        if note:
            try:
                copy.load(kept.entries(), note)
            except LedgerError as e:
                raise NotVerified(f"the kept copy in {args.from_file}.d does not verify: "
                                  f"{type(e).__name__}: {e}") from e
    try:
        return _loop(connect, Dial(d, ep), copy, kept, args)
    finally:
        if kept is not None:
            kept.close()


def _loop(connect: Connect, dial: Dial, copy: WatchCopy, kept: KeptCopy | None,
          args: argparse.Namespace) -> int:
    wait = BACKOFF_S[0]
    left = args.count
    while True:
        stub = connect("public", dial)
        try:
            got = watch(stub, copy, kept, args.jsonl, left)
            if left is not None:
                left -= got
                if left <= 0:
                    return 0
            if got:
                wait = BACKOFF_S[0]
        except grpc.RpcError as e:
            if e.code() in FINAL:
                raise error_from_rpc(e) from None
            if e.code() != grpc.StatusCode.CANCELLED or left is None:
                print(f"watch: {e.code().name}: {e.details()}; dialling again in {wait:.1f} s",
                      file=sys.stderr, flush=True)
        except LedgerError as e:
            raise NotVerified(f"the node's delta does not verify, the copy stays at its last "
                              f"checkpoint: {type(e).__name__}: {e}") from e
        time.sleep(wait * random.uniform(0.8, 1.2))
        wait = min(BACKOFF_S[1], wait * 2)
