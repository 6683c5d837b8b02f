"""Client-side lookup verification: what a phone app or a carrier's call path
runs to trust an answer without trusting the node that gave it.

An answer is `verified` only when (1) the view checkpoint is signed by the
node that served it, (2) at least `policy.cosign_quorum` other members
cosigned the same checkpoint (they computed the same root for the same
vector), and (3) the entry (or its absence) is proven against that root."""

from __future__ import annotations

from typing import Any

from keys.consortium import Consortium
from ledger import note
from ledger import view as V
from ledger.errors import BadSignature, LedgerError, MalformedNote
from markex.v1 import service_pb2 as pb
from node.witness import witness_name


def open_cosigned_view(cons: Consortium, text: str) -> tuple[V.ViewCheckpoint, str, list[str]]:
    """Check the node's signature and count member cosignatures.
    Returns (checkpoint, signer id, cosigner ids)."""
    parsed = note.Note.parse(text)
    origin = parsed.text.split("\n", 1)[0]
    signer = None
    for p in cons.participants:
        if origin == V.view_origin(cons.name, p.id):
            signer = p
    if signer is None:
        raise MalformedNote(f"view checkpoint origin {origin!r} names no participant")
    note.verify_note(text, [note.Verifier.for_key(origin, signer.public_key)])
    cp = V.parse_view_checkpoint(parsed.text)
    witnesses = {
        witness_name(cons.name, p.id): p.public_key for p in cons.participants if p.id != signer.id
    }
    names = note.count_cosignatures(text, witnesses)
    ids = [n.rsplit("/", 1)[-1] for n in names]
    return cp, signer.id, ids


def verify_answer(
    cons: Consortium, number: str, resp: pb.LookupResponse, text: str, at_ms: int
) -> dict[str, Any]:
    cp, signer, cosigners = open_cosigned_view(cons, text)
    entry = V.verify_lookup(
        resp.number, resp.entry or None, resp.proof, cp.root, cons.policy.view_bucket_bits
    )
    out: dict[str, Any] = {"number": resp.number}
    if entry is None:
        out.update(
            {
                "category": None,
                "risk": "none",
                "score": 0,
                "markers": [],
                "set_aside": [],
                "appeal": None,
            }
        )
    else:
        res = entry.evaluate(at_ms).to_json()
        out.update({k: res.get(k) for k in ("category", "risk", "score", "markers", "set_aside")})
        out["appeal"] = res.get("appeal") or res.get("appeals")
    out["view_root"] = cp.root.hex()
    out["signed_by"] = signer
    out["cosigned_by"] = cosigners
    out["verified"] = len(cosigners) >= cons.policy.cosign_quorum
    return out


def lookup_verified(stub: Any, cons: Consortium, number: str, at_ms: int) -> dict[str, Any]:
    resp = stub.Lookup(pb.LookupRequest(number=number, at_ms=at_ms), timeout=10)
    try:
        return verify_answer(cons, number, resp, resp.view_checkpoint, at_ms)
    except (LedgerError, BadSignature) as e:
        return {
            "number": resp.number,
            "category": None,
            "risk": None,
            "score": None,
            "markers": [],
            "set_aside": [],
            "appeal": None,
            "view_root": None,
            "verified": False,
            "error": f"{type(e).__name__}: {e}",
        }


def view_checkpoint_summary(cons: Consortium, text: str) -> dict[str, Any]:
    cp, signer, cosigners = open_cosigned_view(cons, text)
    return {
        "vector": dict(cp.vector),
        "root": cp.root.hex(),
        "entries": cp.count,
        "signers": [signer, *cosigners],
    }
