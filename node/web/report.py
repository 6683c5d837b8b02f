"""What a number's page and `GET /api/v1/numbers/{number}` show, built from
one node's answers and checked here before anything is shown.

`NodeReader` is the web front end's only way to a node: the public port
(lookups, log checkpoints, inclusion proofs) and, with the front end's own
participant certificate, the member port's Audit service (a record's index
in the node's log). `number_report` asks, verifies as `markex lookup` does
(node/lookup.py) and returns one JSON-ready dict: the bytes the browser
re-verifies (entry, proof, signed view checkpoint) beside the evaluated
answer and, for every record the entry names, its log index and inclusion
proof against the node's cosigned log checkpoint.

Errors: InvalidNumber (from `normalize`) for a number that does not
normalize; grpc.RpcError when the node does not answer. A reply that does
not verify is not an error: the report says `verified: false` and why."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from keys.consortium import Consortium
from ledger import merkle, note
from ledger import view as V
from ledger.errors import BadSignature, LedgerError
from ledger.names import log_origin, witness_name
from ledger.numbers import normalize
from ledger.record import Record
from ledger.verify import verify_answer
from markex.v1 import service_pb2 as pb

API_VERSION = 1
RPC_TIMEOUT_S = 10


@dataclass(frozen=True)
class NodeReader:
    """The stubs the front end reads one node through: `public`
    (rpc.PublicStub) and `audit` (rpc.AuditStub on the member port, or None
    when the front end has no member credential: records then show no index)."""

    node_id: str
    public: Any
    audit: Any | None = None

    def lookup(self, asked: str, at_ms: int) -> pb.LookupResponse:
        req = pb.LookupRequest(number=asked, at_ms=at_ms)
        return self.public.Lookup(req, timeout=RPC_TIMEOUT_S)

    def lookup_batch(self, numbers: list[str], at_ms: int) -> pb.LookupBatchResponse:
        req = pb.LookupBatchRequest(numbers=numbers, at_ms=at_ms, with_proofs=True)
        return self.public.LookupBatch(req, timeout=RPC_TIMEOUT_S)

    def log_checkpoint(self) -> str:
        req = pb.GetLogCheckpointRequest()
        return self.public.GetLogCheckpoint(req, timeout=RPC_TIMEOUT_S).note

    def records(self, ids: Iterable[bytes]) -> dict[bytes, tuple[int, bytes] | None]:
        """Record id -> (index in the node's log, envelope), None when the node
        does not hold it; all asked at once. Empty without a member credential."""
        if self.audit is None:
            return {}
        futures = {
            rid: self.audit.GetRecord.future(pb.GetRecordRequest(id=rid), timeout=RPC_TIMEOUT_S)
            for rid in ids
        }
        out: dict[bytes, tuple[int, bytes] | None] = {}
        for rid, fut in futures.items():
            try:
                r = fut.result()
                out[rid] = (r.index, r.envelope)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                out[rid] = None
        return out

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> dict[int, list[bytes]]:
        futures = {
            i: self.public.GetInclusionProof.future(
                pb.GetInclusionProofRequest(index=i, size=size), timeout=RPC_TIMEOUT_S
            )
            for i in indexes
        }
        return {i: list(f.result().path) for i, f in futures.items()}


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def record_ids(entry: V.Entry) -> list[bytes]:
    """Every record the entry names (marks, their corrections, appeals and
    decisions, reassignments, protections), each once, in a stable order."""
    seen: dict[bytes, None] = {}
    for m in entry.marks:
        seen[m.id] = None
        for r in m.recategorized:
            seen[r.ref] = None
        for s in m.set_aside:
            seen[s.ref] = None
    for a in entry.appeals:
        seen[a.id] = None
        if a.closed_by:
            seen[a.closed_by] = None
    for x in entry.reassignments:
        seen[x.id] = None
    for p in entry.protections:
        seen[p.decision] = None
    seen.pop(b"", None)
    return list(seen)


def open_log_checkpoint(
    cons: Consortium, node_id: str, text: str
) -> tuple[note.Checkpoint, dict[str, Any]]:
    """The node's log checkpoint, its signature checked against the node's
    key and its members' cosignatures counted, and its summary for the
    report. Raises MalformedNote, BadSignature."""
    p = cons.participant(node_id)
    if p is None:
        raise BadSignature(f"{node_id!r} is not a participant of {cons.name}")
    origin = log_origin(cons.name, node_id)
    cp = note.open_checkpoint(text, note.Verifier.for_key(origin, p.public_key), origin)
    witnesses = {
        witness_name(cons.name, w.id): w.public_key for w in cons.witnesses if w.id != p.id
    }
    names = note.count_cosignatures(text, witnesses)
    prefix = witness_name(cons.name, "")
    return cp, {
        "note": text,
        "size": cp.size,
        "root": cp.root.hex(),
        "cosigned_by": [n[len(prefix):] for n in names],
        "quorum": cons.policy.cosign_quorum,
    }


def _records(reader: NodeReader, entry: V.Entry, log: note.Checkpoint | None) -> list[dict]:
    ids = record_ids(entry)
    found = reader.records(ids)
    size = log.size if log else 0
    proofs = reader.inclusion_proofs(
        sorted({v[0] for v in found.values() if v is not None and v[0] < size}), size
    )
    out = []
    for rid in ids:
        row: dict[str, Any] = {"id": rid.hex(), "index": None, "inclusion": None, "verified": False}
        got = found.get(rid)
        if got is None:
            row["why"] = "no member credential" if reader.audit is None else "not on this node"
            out.append(row)
            continue
        index, envelope = got
        try:
            rec = Record.from_envelope(envelope)
        except LedgerError as e:
            row["why"] = f"the node's envelope does not parse: {type(e).__name__}"
            out.append(row)
            continue
        if rec.id != rid:
            row["why"] = "the node returned another record"
            out.append(row)
            continue
        row.update(index=index, kind=rec.kind, issuer=rec.issuer, issued_at=rec.issued_at_ms)
        leaf = merkle.leaf_hash(envelope)
        row["leaf_hash"] = leaf.hex()
        digest = getattr(rec.payload, "evidence_digest", b"")
        if digest:
            row["evidence_digest"] = digest.hex()
        if log is None or index not in proofs:
            row["why"] = "not yet in a cosigned log checkpoint"
            out.append(row)
            continue
        path = proofs[index]
        try:
            merkle.verify_inclusion(leaf, index, size, path, log.root)
            row["verified"] = True
        except LedgerError as e:
            row["verified"] = False
            row["why"] = f"{type(e).__name__}: {e}"
        row["inclusion"] = {"size": size, "path": [h.hex() for h in path]}
        out.append(row)
    return out


_ABSENT = {
    "category": None,
    "risk": "none",
    "score": 0,
    "markers": [],
    "set_aside": [],
    "appeal": "none",
    "appeals": [],
    "tenure_since": None,
}


def number_report(
    cons: Consortium, reader: NodeReader, number: str, at_ms: int, now_ms: int
) -> dict[str, Any]:
    """Ask `reader`'s node about `number` (normalized here; InvalidNumber
    when it does not normalize), verify the answer against what was asked
    at `now_ms`, and return the report (docs/web.md lists its fields)."""
    asked = normalize(number)
    resp = reader.lookup(asked, at_ms)
    out: dict[str, Any] = {
        "v": API_VERSION,
        "number": asked,
        "at_ms": at_ms,
        "node": reader.node_id,
        "entry": _b64(resp.entry) if resp.entry else None,
        "proof": _b64(resp.proof),
        "view_checkpoint": resp.view_checkpoint,
    }
    try:
        checked = verify_answer(cons, asked, resp, resp.view_checkpoint, at_ms, now_ms)
    except (LedgerError, BadSignature) as e:
        out.update(answer=None, entry_detail=None, records=[], log_checkpoint=None)
        out["verified"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return out
    cp = V.parse_view_checkpoint(note.Note.parse(resp.view_checkpoint).text)
    out["view"] = {
        "root": cp.root.hex(),
        "entries": cp.count,
        "vector": dict(cp.vector),
        "signed_at_ms": cp.signed_at_ms,
        "signed_by": checked["signed_by"],
        "cosigned_by": checked["cosigned_by"],
        "members": len(cons.witnesses),
        "quorum": cons.policy.cosign_quorum,
    }
    out["verified"] = {"ok": checked["verified"], "error": checked.get("error")}
    entry = V.Entry.decode(resp.entry) if resp.entry else None
    if entry is None:
        out.update(answer=dict(_ABSENT), entry_detail=None, records=[], log_checkpoint=None)
        return out
    res = entry.evaluate(at_ms).to_json()
    out["answer"] = {k: res[k] for k in _ABSENT}
    out["entry_detail"] = entry.to_json()
    log: note.Checkpoint | None = None
    out["log_checkpoint"] = None
    try:
        log, out["log_checkpoint"] = open_log_checkpoint(
            cons, reader.node_id, reader.log_checkpoint()
        )
    except (LedgerError, BadSignature) as e:
        out["log_error"] = f"{type(e).__name__}: {e}"
    except grpc.RpcError as e:  # a node without a signed log checkpoint yet: NOT_FOUND
        out["log_error"] = f"{e.code().name}: {e.details()}"
    summary = out["log_checkpoint"]
    if summary is not None and len(summary["cosigned_by"]) < summary["quorum"]:
        # Only a checkpoint the members hold the node to proves a record is in its log.
        out["log_error"] = (
            f"the log checkpoint is cosigned by {len(summary['cosigned_by'])} member(s); "
            f"the policy needs {summary['quorum']}"
        )
        log = None
    out["records"] = _records(reader, entry, log)
    return out


def batch_report(reader: NodeReader, numbers: list[str], at_ms: int) -> dict[str, Any]:
    """Several numbers (already normalized) answered under one view
    checkpoint, unverified here: each result is checked by the client as
    `markex lookup` checks one answer (entry, proof, the shared checkpoint)."""
    resp = reader.lookup_batch(numbers, at_ms)
    return {
        "v": API_VERSION,
        "at_ms": at_ms,
        "node": reader.node_id,
        "view_checkpoint": resp.view_checkpoint,
        "results": [
            {
                "number": r.number,
                "entry": _b64(r.entry) if r.entry else None,
                "proof": _b64(r.proof),
            }
            for r in resp.results
        ],
    }


def trust_anchor(cons: Consortium) -> dict[str, Any]:
    """What the browser verifies with: the consortium's name, every member
    that signs or cosigns view checkpoints with its Ed25519 public key, and
    the policy values lookup verification uses (from the pinned consortium)."""
    return {
        "consortium": cons.name,
        "members": [{"id": p.id, "public_key": _b64(p.public_key)} for p in cons.witnesses],
        "policy": {
            "view_max_age_ms": cons.policy.view_max_age_ms,
            "clock_skew_ms": cons.policy.clock_skew_ms,
            "cosign_quorum": cons.policy.cosign_quorum,
        },
    }
