"""Evidence of misbehaviour: one portable format for its three kinds, one
builder per kind, and one verifier for all of them.

An evidence object is a JSON object, self-contained: `verify_evidence`
checks it offline with only the consortium configuration.

    {"format": "markex-evidence/v1", "kind": K, "consortium": NAME, ...}

    equivocation  "issuer", "seq", "first", "second" (base64 envelopes): two
                  different records, both validly signed by the issuer at one seq.
    log-fork      "log", "first", "second": two checkpoint notes signed by the
                  log's key under its origin that no consistency proof can join:
                  one size and two roots; or sizes a < b with "prefix_root" and
                  "proof" (base64), an RFC 9162 consistency proof from (a,
                  prefix_root) to the larger root, where prefix_root is not the
                  smaller checkpoint's root.
    view-fork     "witness", "peer", "ours", "theirs": two view checkpoint notes,
                  "ours" signed by the witness and "theirs" by the peer, naming
                  one vector and another root or entry count. The view is a
                  function of the records up to the vector, so one of the two
                  signed a view that does not follow from them, or the two hold
                  different records at one seq (an equivocation, proven apart).

Who writes them: the auditor (equivocations, log forks proven from entries),
the witness (node/witness.py: a peer's log checkpoints no proof joins) and the
view keeper (node/viewkeeper.py: a peer's view of this node's vector with
another root). A witness that saw two sizes no proof joined holds no entries
to prove it: it keeps a claim (`log_fork_evidence(..., claim=True)`: both
notes, signatures checked), which `verify_evidence` refuses and an auditor
reports as the node's word.

Nodes before this format stored forks as ad-hoc JSON without "format" and
"consortium" ({"kind": "log-fork", "log", "first", "second"} and {"kind":
"view-fork", "peer", "theirs", "ours"}); `read_evidence` and `verify_evidence`
read them as their translation into this format.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from keys.consortium import Consortium, Participant
from ledger import merkle, note
from ledger.errors import BadInput, LedgerError, UnknownIssuer
from ledger.feed import EquivocationProof
from ledger.names import log_origin, origin_of, participant_of_view, view_origin
from ledger.view import ViewCheckpoint, open_view_checkpoint

__all__ = [
    "EVIDENCE_FORMAT",
    "KINDS",
    "equivocation_evidence",
    "fork_evidence",
    "log_fork_evidence",
    "log_fork_from_leaves",
    "read_evidence",
    "verify_evidence",
    "view_fork_evidence",
]

EVIDENCE_FORMAT = "markex-evidence/v1"
KINDS = ("equivocation", "log-fork", "view-fork")


def b64(b: bytes) -> str:
    """Bytes as the base64 text every evidence (and audit state) field holds."""
    return base64.b64encode(b).decode("ascii")


def unb64(s: Any, what: str) -> bytes:
    """The bytes of base64 text `s`; BadInput naming `what` when it is not."""
    if not isinstance(s, str):
        raise BadInput(f"{what} must be a base64 string")
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise BadInput(f"{what} is not base64") from e


def _head(cons: Consortium, kind: str) -> dict[str, Any]:
    return {"format": EVIDENCE_FORMAT, "kind": kind, "consortium": cons.name}


# ---------------------------------------------------------------- builders


def equivocation_evidence(proof: EquivocationProof, cons: Consortium) -> dict[str, Any]:
    """Evidence of an equivocation. Raises a LedgerError unless the proof verifies."""
    a, _ = proof.verify(cons)
    return {
        **_head(cons, "equivocation"),
        "issuer": a.issuer,
        "seq": a.seq,
        "first": b64(proof.first),
        "second": b64(proof.second),
    }


def log_fork_evidence(
    cons: Consortium,
    log: str,
    first: str,
    second: str,
    prefix_root: bytes | None = None,
    proof: Sequence[bytes] = (),
    *,
    claim: bool = False,
) -> dict[str, Any]:
    """Evidence that `log` forked: two of its signed checkpoint notes and, when
    their sizes differ, the root of the larger tree's first `smaller size`
    leaves with a consistency proof to the larger root. Raises a LedgerError
    unless it verifies (`verify_evidence`); with `claim`, only unless both
    notes are the log's (a witness's word that no proof joined them)."""
    ev = {**_head(cons, "log-fork"), "log": log, "first": first, "second": second}
    if prefix_root is not None:
        ev["prefix_root"] = b64(prefix_root)
        ev["proof"] = [b64(h) for h in proof]
    if claim:
        _log_notes(ev, cons)
    else:
        verify_evidence(ev, cons)
    return ev


fork_evidence = log_fork_evidence  # the name ledger.audit has always exported


def view_fork_evidence(
    cons: Consortium, witness: str, ours: str, peer: str, theirs: str
) -> dict[str, Any]:
    """Evidence that `witness` (note `ours`) and `peer` (note `theirs`) signed
    two views of one vector. Raises a LedgerError unless it verifies."""
    ev = {
        **_head(cons, "view-fork"),
        "witness": witness,
        "peer": peer,
        "ours": ours,
        "theirs": theirs,
    }
    verify_evidence(ev, cons)
    return ev


def log_fork_from_leaves(
    cons: Consortium,
    log: str,
    small: tuple[str, note.Checkpoint],
    big: tuple[str, note.Checkpoint],
    leaf_hashes: bytes,
) -> dict[str, Any] | None:
    """Proven log fork evidence from `big`'s tree as a node serves it now
    (`leaf_hashes`: its leaves' hashes, 32 bytes each, at least `big`'s size),
    when they hash to `big`'s root and their first `small` size leaves do not
    hash to `small`'s; else None. `small` and `big` are (note, checkpoint)."""
    n = big[1].size
    if len(leaf_hashes) < 32 * n:
        return None
    tree = merkle.MemoryNodes()
    for i in range(n):
        tree.append(leaf_hashes[32 * i : 32 * i + 32])
    if tree.root() != big[1].root:
        return None
    prefix = merkle.root_at(tree, small[1].size)
    if prefix == small[1].root:
        return None
    proof = merkle.consistency_proof(tree, small[1].size, n) if small[1].size else []
    try:
        return log_fork_evidence(cons, log, small[0], big[0], prefix, proof)
    except LedgerError:
        return None


# ---------------------------------------------------------------- reading


def in_format(raw: bytes, cons: Consortium) -> bytes:
    """Stored evidence as served, in this format: what an older node kept in
    its own fork JSON is translated (`read_evidence`); anything else is
    served as stored."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(obj, dict) or "format" in obj:
        return raw
    try:
        return json.dumps(read_evidence(obj, cons)).encode()
    except LedgerError:
        return raw


def read_evidence(raw: Any, cons: Consortium) -> dict[str, Any]:
    """The evidence object in `raw` (JSON bytes or text, or a parsed object),
    in this format: an older node's ad-hoc fork JSON is translated (it names no
    consortium: `cons` is assumed). Not verified. Raises BadInput."""
    obj = raw
    if isinstance(raw, bytes | str):
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadInput(f"evidence is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise BadInput("evidence is a JSON object")
    if "format" in obj or obj.get("kind") not in ("log-fork", "view-fork"):
        return obj
    if obj["kind"] == "log-fork":
        return {
            **_head(cons, "log-fork"),
            "log": obj.get("log"),
            "first": obj.get("first"),
            "second": obj.get("second"),
        }
    # The old view fork did not name its writer: the origin of its own note does.
    ours = obj.get("ours")
    writer = (
        participant_of_view(cons.name, cons.participants, origin_of(ours))
        if isinstance(ours, str)
        else None
    )
    return {
        **_head(cons, "view-fork"),
        "witness": writer.id if writer is not None else None,
        "peer": obj.get("peer"),
        "ours": ours,
        "theirs": obj.get("theirs"),
    }


def verify_evidence(ev: Any, cons: Consortium) -> str:
    """Check an evidence object (any kind; see the module docstring) offline
    with only the consortium configuration. Returns a one-line description of
    what it proves; raises a LedgerError (BadInput, BadSignature, UnknownIssuer,
    MalformedProof, ProofMismatch, ...) saying why it is not evidence of
    misbehaviour. An older node's ad-hoc fork JSON is read as its translation."""
    ev = read_evidence(ev, cons)
    if ev.get("format") != EVIDENCE_FORMAT:
        raise BadInput(f"evidence format must be {EVIDENCE_FORMAT!r}")
    if ev.get("consortium") != cons.name:
        raise BadInput(f"evidence is for consortium {ev.get('consortium')!r}, not {cons.name!r}")
    kind = ev.get("kind")
    if kind == "equivocation":
        return _verify_equivocation(ev, cons)
    if kind == "log-fork":
        return _verify_log_fork(ev, cons)
    if kind == "view-fork":
        return _verify_view_fork(ev, cons)
    raise BadInput(f"unknown evidence kind {kind!r} (one of {', '.join(KINDS)})")


def _verify_equivocation(ev: dict[str, Any], cons: Consortium) -> str:
    proof = EquivocationProof(unb64(ev.get("first"), "first"), unb64(ev.get("second"), "second"))
    a, b = proof.verify(cons)
    if ev.get("issuer") not in (None, a.issuer) or ev.get("seq") not in (None, a.seq):
        raise BadInput("the evidence names another issuer or seq than its records")
    return (
        f"equivocation: {a.issuer} signed two different records at seq {a.seq} "
        f"({a.id.hex()[:16]}… and {b.id.hex()[:16]}…)"
    )


def _member(cons: Consortium, pid: Any, what: str) -> Participant:
    p = cons.participant(pid) if isinstance(pid, str) else None
    if p is None:
        raise UnknownIssuer(f"{what} {pid!r} is not a participant of {cons.name}")
    return p


def _log_notes(ev: dict[str, Any], cons: Consortium) -> tuple[note.Checkpoint, note.Checkpoint]:
    """The two checkpoints of a log fork, each verified under the log's key and origin."""
    p = _member(cons, ev.get("log"), "log")
    origin = log_origin(cons.name, p.id)
    verifier = note.Verifier.for_key(origin, p.public_key)
    first, second = ev.get("first"), ev.get("second")
    if not isinstance(first, str) or not isinstance(second, str):
        raise BadInput("a log fork needs two signed checkpoint notes, first and second")
    return (
        note.open_checkpoint(first, verifier, origin),
        note.open_checkpoint(second, verifier, origin),
    )


def _verify_log_fork(ev: dict[str, Any], cons: Consortium) -> str:
    log = ev["log"]
    c1, c2 = _log_notes(ev, cons)
    if c1.size == c2.size:
        if c1.root == c2.root:
            raise BadInput("the two checkpoints name the same tree: no fork")
        return f"log fork: {log} signed two different roots for size {c1.size}"
    small, big = (c1, c2) if c1.size < c2.size else (c2, c1)
    if "prefix_root" not in ev:
        raise BadInput(
            "two checkpoints of different sizes may be consistent; a fork needs "
            "prefix_root and proof"
        )
    prefix = unb64(ev["prefix_root"], "prefix_root")
    raw_proof = ev.get("proof")
    if not isinstance(raw_proof, list):
        raise BadInput("proof must be a list of base64 hashes")
    hashes = [unb64(h, "proof hash") for h in raw_proof]
    merkle.verify_consistency(small.size, big.size, prefix, big.root, hashes)
    if prefix == small.root:
        raise BadInput("the proof joins the two checkpoints: no fork")
    return (
        f"log fork: {log}'s tree of size {big.size} does not extend its tree of size "
        f"{small.size} (its first {small.size} leaves hash to another root)"
    )


def _view_note(ev: dict[str, Any], cons: Consortium, who: str, which: str) -> ViewCheckpoint:
    p = _member(cons, ev.get(who), who)
    text = ev.get(which)
    if not isinstance(text, str):
        raise BadInput(f"a view fork needs two signed view checkpoint notes: {which} is missing")
    origin = view_origin(cons.name, p.id)
    return open_view_checkpoint(text, note.Verifier.for_key(origin, p.public_key), origin)


def _verify_view_fork(ev: dict[str, Any], cons: Consortium) -> str:
    ours = _view_note(ev, cons, "witness", "ours")
    theirs = _view_note(ev, cons, "peer", "theirs")
    if ours.vector != theirs.vector:
        raise BadInput("the two view checkpoints name different vectors: no fork")
    if (ours.root, ours.count) == (theirs.root, theirs.count):
        raise BadInput("the two view checkpoints name the same view: no fork")
    w, p = ev["witness"], ev["peer"]
    return (
        f"view fork: for one vector ({len(ours.vector)} feeds) {w} signed "
        f"{ours.count} entries with root {ours.root.hex()[:16]}…, {p} {theirs.count} "
        f"with root {theirs.root.hex()[:16]}…: one of them does not follow from the records "
        "(or they hold two records at one seq of a feed: an equivocation)"
    )
