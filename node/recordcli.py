"""Following a record to its proof: `markex record get` (the decoded record,
its log index and its inclusion proof checked against the node's cosigned log
checkpoint, like rekor-cli get/verify), `markex log inclusion` and
`markex log consistency` (what they print, checked against that checkpoint),
record ids given by a unique prefix of at least 8 hex digits, and
`markex node wait` (until nodes' cosigned checkpoints cover a record: what a
script runs between issuing a record and reading it back).

Nothing here believes the node: the checkpoint must be signed by the node's
log key and cosigned by `policy.cosign_quorum` other members; a tree size
below the checkpoint's is proven through a consistency proof up to it; a
record's leaf hash is computed from its envelope, never taken from the node.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import grpc

from keys.consortium import Consortium
from ledger import merkle, note
from ledger.errors import LedgerError
from ledger.log import verify_envelopes
from ledger.names import log_origin, origin_of, participant_of_log, witness_name
from ledger.record import Record
from markex.v1 import service_pb2 as pb
from node.command import (
    CommandError,
    Exit,
    Missing,
    NotVerified,
    UsageError,
    iso,
    node_endpoints,
    pinned_consortium,
    public_of,
    show,
    table,
)
from node.connect import Connect, Dial, reader_id

MIN_PREFIX = 8  # hex digits: below this a prefix names too many records to be worth a call


# ------------------------------------------------------------------ record ids


def id_ref(s: str) -> str:
    """A record id as given: 64 hex digits, or a prefix of at least 8 (lowercased)."""
    ref = s.strip().lower()
    if not MIN_PREFIX <= len(ref) <= 64 or ref.strip("0123456789abcdef"):
        raise UsageError(
            f"{s[:70]!r} is not a record id: give its 64 hex digits, or a unique prefix "
            f"of at least {MIN_PREFIX}"
        )
    return ref


def resolve_id(ref: str, audit_stub: Any, node: str) -> bytes:
    """The record id `ref` names (see `id_ref`): a full id as it is, a prefix
    through the node's FindRecords. Missing when no record there starts with
    it; UsageError, listing them, when two do."""
    ref = id_ref(ref)
    if len(ref) == 64:
        return bytes.fromhex(ref)
    found = audit_stub.FindRecords(pb.FindRecordsRequest(id_prefix=ref, limit=2), timeout=10)
    ids = list(found.ids)
    if not ids:
        raise Missing(f"no record at {node} has an id starting with {ref}")
    if len(ids) > 1:
        raise UsageError(
            f"id prefix {ref} matches more than one record at {node} "
            f"({', '.join(i.hex() for i in ids)}); give more digits"
        )
    return ids[0]


# ------------------------------------------------------------------ the checkpoint


@dataclass(frozen=True)
class TrustedCheckpoint:
    """A node's log checkpoint whose signature verified, with the members whose
    cosignature verified; `why_not` says what is missing for a quorum (None: trusted)."""

    node: str
    checkpoint: note.Checkpoint
    cosigned_by: tuple[str, ...]
    why_not: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "size": self.checkpoint.size,
            "root": self.checkpoint.root.hex(),
            "cosigned_by": list(self.cosigned_by),
        }


def open_log_checkpoint(cons: Consortium, text: str) -> TrustedCheckpoint:
    """Verify a log checkpoint note against the pinned consortium: the node's
    own signature (NotVerified otherwise) and the member cosignatures on it."""
    try:
        p = participant_of_log(cons.name, cons.participants, origin_of(text))
        if p is None:
            raise NotVerified(f"log checkpoint origin {origin_of(text)[:60]!r} names no node "
                              f"of {cons.name}")
        cp = note.open_checkpoint(text, note.Verifier.for_key(log_origin(cons.name, p.id),
                                                              p.public_key))
        names = {witness_name(cons.name, w.id): w for w in cons.witnesses if w.id != p.id}
        cosigners = note.count_cosignatures(text, {n: w.public_key for n, w in names.items()})
    except LedgerError as e:
        raise NotVerified(f"the log checkpoint does not verify: {e}") from e
    ids = tuple(names[n].id for n in cosigners)
    quorum = cons.policy.cosign_quorum
    why = None
    if len(ids) < quorum:
        why = f"{len(ids)} of {quorum} required cosignatures on {p.id}'s log checkpoint"
    return TrustedCheckpoint(p.id, cp, ids, why)


def _checkpoint(stub: Any, cons: Consortium) -> tuple[TrustedCheckpoint | None, int, str | None]:
    """The node's checkpoint, verified (else None and why), and the tree size it names."""
    got = stub.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
    try:
        trusted = open_log_checkpoint(cons, got.note)
    except NotVerified as e:
        return None, got.size, str(e)
    return trusted, trusted.checkpoint.size, None


def proven_root(stub: Any, size: int, trusted: TrustedCheckpoint | None) -> bytes:
    """The root of the node's tree at `size`, proven against the checkpoint
    (through a consistency proof up to it when smaller). NotVerified when the
    checkpoint does not cover `size` or a proof fails (or there is none)."""
    if trusted is None:
        raise NotVerified("no verified checkpoint to check against")
    cp = trusted.checkpoint
    if size == cp.size:
        return cp.root
    if size == 0:
        return merkle.EMPTY_ROOT
    if size > cp.size:
        raise NotVerified(
            f"{trusted.node}'s latest checkpoint covers {cp.size} entries, not {size}; "
            "ask for a smaller size, or again once the next checkpoint is signed"
        )
    try:
        inc = stub.GetInclusionProof(pb.GetInclusionProofRequest(index=size - 1, size=size),
                                     timeout=10)
        root = merkle.root_from_inclusion(inc.leaf_hash, size - 1, size, list(inc.path))
        con = stub.GetConsistencyProof(
            pb.GetConsistencyProofRequest(old_size=size, new_size=cp.size), timeout=10)
        merkle.verify_consistency(size, cp.size, root, cp.root, list(con.path))
    except LedgerError as e:
        raise NotVerified(f"the tree of size {size} is not proven against the checkpoint: "
                          f"{e}") from e
    return root


def _verdict(out: dict[str, Any], trusted: TrustedCheckpoint | None, why: str | None) -> None:
    why = why or (trusted.why_not if trusted else "no verified checkpoint")
    out["checkpoint"] = trusted.to_json() if trusted else None
    out["verified"] = why is None
    if why is not None:
        out["error"] = why


def _finish(args: argparse.Namespace, out: dict[str, Any], rows: list[tuple[str, Any]]) -> int:
    if out["verified"]:
        rows.append(("verified", f"yes, against {_how_of(out)}"))
    else:
        rows.append(("verified", "no"))
    show(args, out, table(rows))
    if not out["verified"]:
        raise NotVerified(out["error"])
    return 0


def _how_of(out: dict[str, Any]) -> str:
    cp = out["checkpoint"]
    by = ", ".join(cp["cosigned_by"]) or "nobody"
    return f"{cp['node']}'s log checkpoint of size {cp['size']} (cosigned by {by})"


# ------------------------------------------------------------------ commands


def cmd_log_inclusion(args: argparse.Namespace, connect: Connect) -> int:
    stub, cons = public_of(args, connect)
    trusted, cp_size, bad = _checkpoint(stub, cons)
    size = cp_size if args.size is None else args.size
    if args.index >= size:
        raise Missing(f"the log has {size} entries (its latest checkpoint), no index "
                      f"{args.index}")
    r = stub.GetInclusionProof(pb.GetInclusionProofRequest(index=args.index, size=size),
                               timeout=10)
    out: dict[str, Any] = {"index": r.index, "size": r.size, "leaf_hash": r.leaf_hash.hex(),
                           "proof": [h.hex() for h in r.path]}
    why = bad
    try:
        root = proven_root(stub, size, trusted)
        merkle.verify_inclusion(r.leaf_hash, args.index, size, list(r.path), root)
    except NotVerified as e:
        why = why or str(e)
    except LedgerError as e:
        why = why or f"the inclusion proof does not verify: {e}"
    _verdict(out, trusted, why)
    rows = [("index", out["index"]), ("tree size", out["size"]),
            ("leaf hash", out["leaf_hash"]), ("proof", out["proof"])]
    return _finish(args, out, rows)


def cmd_log_consistency(args: argparse.Namespace, connect: Connect) -> int:
    stub, cons = public_of(args, connect)
    trusted, cp_size, bad = _checkpoint(stub, cons)
    new = cp_size if args.new is None else args.new
    if args.old > new:
        raise UsageError(f"--old {args.old} is above --new {new}")
    r = stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(old_size=args.old, new_size=new), timeout=10)
    out: dict[str, Any] = {"old": r.old_size, "new": r.new_size,
                           "proof": [h.hex() for h in r.path]}
    why = bad
    try:
        new_root = proven_root(stub, new, trusted)
        old_root = proven_root(stub, args.old, trusted)
        merkle.verify_consistency(args.old, new, old_root, new_root, list(r.path))
        out["old_root"], out["new_root"] = old_root.hex(), new_root.hex()
    except NotVerified as e:
        why = why or str(e)
    except LedgerError as e:
        why = why or f"the consistency proof does not verify: {e}"
    _verdict(out, trusted, why)
    rows = [("old size", out["old"]), ("new size", out["new"]),
            ("old root", out.get("old_root")), ("new root", out.get("new_root")),
            ("proof", out["proof"])]
    return _finish(args, out, rows)


def payload_json(rec: Record) -> dict[str, Any]:
    """A record's payload as JSON: ids in hex, every `*_ms` time also in ISO 8601."""
    out: dict[str, Any] = {}
    for k, v in dataclasses.asdict(rec.payload).items():  # type: ignore[call-overload]
        if isinstance(v, bytes):
            v = v.hex()
        elif isinstance(v, tuple | list):
            v = [x.hex() if isinstance(x, bytes) else x for x in v]
        out[k] = v
        if k.endswith("_ms") and isinstance(v, int):
            out[k[:-3]] = iso(v)
    return out


def record_json(rec: Record) -> dict[str, Any]:
    return {
        "id": rec.id.hex(),
        "kind": rec.kind,
        "issuer": rec.issuer,
        "seq": rec.seq,
        "prev_id": rec.prev_id.hex(),
        "issued_at_ms": rec.issued_at_ms,
        "issued_at": iso(rec.issued_at_ms),
        "payload": payload_json(rec),
    }


def cmd_record_get(args: argparse.Namespace, connect: Connect) -> int:
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    ep = node_endpoints(cons, args.node)
    audit = connect("audit", Dial(d, ep, reader_id(cons, args.as_id)))
    rid = resolve_id(args.record_id, audit, args.node)
    got = audit.GetRecord(pb.GetRecordRequest(id=rid), timeout=10)
    if hashlib.sha256(got.envelope).digest() != rid:
        raise NotVerified(f"{args.node} answered with another record than {rid.hex()}")
    try:
        rec = verify_envelopes([got.envelope], cons)[0]
    except LedgerError as e:
        raise NotVerified(f"record {rid.hex()} does not verify: {e}") from e
    public = connect("public", Dial(d, ep))
    trusted, size, why = _checkpoint(public, cons)
    out = record_json(rec)
    out["index"] = got.index
    if trusted is None:
        pass
    elif got.index >= size:
        why = (f"{trusted.node}'s latest checkpoint covers {size} entries, not index "
               f"{got.index} yet; try again once the next one is signed")
    else:
        inc = public.GetInclusionProof(pb.GetInclusionProofRequest(index=got.index, size=size),
                                       timeout=10)
        out["inclusion_proof"] = [h.hex() for h in inc.path]
        try:
            merkle.verify_inclusion(merkle.leaf_hash(got.envelope), got.index, size,
                                    list(inc.path), trusted.checkpoint.root)
        except LedgerError as e:
            why = f"the inclusion proof does not verify: {e}"
    _verdict(out, trusted, why)
    rows: list[tuple[str, Any]] = [
        ("record", out["id"]), ("kind", out["kind"]), ("issuer", out["issuer"]),
        ("seq", out["seq"]), ("issued at", out["issued_at"]),
    ]
    for k, v in out["payload"].items():
        if not k.endswith("_ms") and v not in ("", [], None):
            rows.append((k.replace("_", " "), v))
    rows.append(("log index", f"{got.index} in {args.node}'s log"))
    return _finish(args, out, rows)


# ------------------------------------------------------------------ waiting


class NotReady(CommandError):
    """A node did not get ready in time (exit code 5: try again)."""

    exit = Exit.UNAVAILABLE


def _ready(cons: Consortium, public: Any, audit: Any, pid: str, ref: str | None,
           now_ms: int) -> tuple[str | None, dict[str, Any]]:
    """(None, what it holds) when node `pid` has cosigned log and view
    checkpoints covering record `ref` (if given); else (why not, {})."""
    try:
        trusted, _, bad = _checkpoint(public, cons)
        if trusted is None:
            return bad, {}
        if trusted.why_not:
            return trusted.why_not, {}
        size = trusted.checkpoint.size
        held: dict[str, Any] = {"log_size": size, "cosigned_by": list(trusted.cosigned_by)}
        if ref is None:
            return None, held
        rid = resolve_id(ref, audit, pid)
        got = audit.GetRecord(pb.GetRecordRequest(id=rid), timeout=10)
        rec = Record.from_envelope(got.envelope)
        if got.index >= size:
            return f"its log checkpoint covers {size} entries, not index {got.index} yet", {}
        from node.lookup import check_fresh, open_view

        view = open_view(cons, public.GetViewCheckpoint(pb.GetViewCheckpointRequest(),
                                                        timeout=10).note)
        fresh = check_fresh(view, cons.policy, now_ms)
        if dict(view.checkpoint.vector).get(rec.issuer, 0) < rec.seq:
            return f"its view checkpoint does not hold {rec.issuer}'s record {rec.seq} yet", {}
        if len(fresh) < cons.policy.cosign_quorum:
            return f"its view checkpoint has {len(fresh)} of {cons.policy.cosign_quorum} " \
                   "fresh cosignatures", {}
        held.update(index=got.index, view_entries=view.checkpoint.count)
        return None, held
    except (grpc.RpcError, LedgerError, Missing) as e:
        return (e.details() if isinstance(e, grpc.RpcError) else str(e)) or "no answer", {}


def cmd_node_wait(args: argparse.Namespace, connect: Connect) -> int:
    """`markex node wait`: until each node answers with a cosigned log
    checkpoint (and, with --for, cosigned log and view checkpoints covering
    that record); NotReady after --timeout seconds."""
    d, cons = pinned_consortium(args)
    refs = [id_ref(r) for r in args.for_records or []]
    pids = [args.node] if args.node else [p.id for p in cons.witnesses]
    deadline = time.monotonic() + args.timeout
    held: dict[str, Any] = {}
    for pid in pids:
        ep = node_endpoints(cons, pid)
        public = connect("public", Dial(d, ep))
        audit = connect("audit", Dial(d, ep, reader_id(cons, args.as_id))) if refs else None
        for ref in refs or [None]:
            while True:
                why, got = _ready(cons, public, audit, pid, ref, int(time.time() * 1000))
                if why is None:
                    held[pid] = got
                    break
                if time.monotonic() > deadline:
                    raise NotReady(f"node {pid} not ready after {args.timeout:g} s: {why}")
                time.sleep(0.2)
    rows = [(pid, f"ready: log of {h['log_size']} entries cosigned by "
                  f"{', '.join(h['cosigned_by'])}"
                  + (f"; record at index {h['index']}, in the view" if "index" in h else ""))
            for pid, h in held.items()]
    show(args, {"nodes": held}, table(rows))
    return 0
