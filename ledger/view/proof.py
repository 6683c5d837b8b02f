"""Checking a lookup answer against a view root, and where a number's leaf is kept.

`verify_lookup` is what a client runs (it needs no view): it raises
MalformedProof (ill-formed or non-canonical proof, entry bytes that do not
decode, an entry for another number) or ProofMismatch (well formed, wrong root).
"""

from __future__ import annotations

from ledger import merkle, viewtree
from ledger.errors import BadInput, MalformedProof, ProofMismatch
from ledger.view.entries import Entry, entry_hash
from ledger.view.parts import MAX_NUMBER_BYTES
from ledger.viewtree import ViewProof


def bucket_of(number: str, bits: int) -> int:
    """The first `bits` bits of the number's view key: the subtree below the
    in-memory top that holds it (a storage choice; the root ignores it)."""
    return viewtree.position(viewtree.view_key(number)) >> (viewtree.DEPTH - bits)


def verify_lookup(
    number: str,
    entry_bytes: bytes | None,
    proof: ViewProof | bytes,
    root: bytes,
    bucket_bits: int | None = None,
) -> Entry | None:
    """Check a lookup answer against a view root (take the root from a view
    checkpoint whose signatures you checked).

    `entry_bytes` None claims absence: accepted only when the proven leaf at
    the number's position lacks it. Returns the decoded entry, or None for a
    proven absence. Raises MalformedProof (ill-formed proof or entry, a proof
    not in canonical form) or ProofMismatch (well formed, does not reach
    `root`). `bucket_bits` is accepted for callers written against proof
    version 1 and ignored: the tree no longer depends on it.
    """
    del bucket_bits
    if not isinstance(root, bytes) or len(root) != merkle.HASH_SIZE:
        raise MalformedProof("a view root is 32 bytes")
    if not isinstance(proof, ViewProof):
        proof = ViewProof.decode(proof)
    if not isinstance(number, str) or not 0 < len(number.encode("utf-8")) <= MAX_NUMBER_BYTES:
        raise MalformedProof("the number asked for is empty or too long")
    eh = None if entry_bytes is None else entry_hash(bytes(entry_bytes))
    if viewtree.proof_root(viewtree.view_key(number), eh, proof) != root:
        raise ProofMismatch("the view proof does not lead to the view root")
    if entry_bytes is None:
        return None
    try:
        entry = Entry.decode(bytes(entry_bytes))
    except BadInput as e:
        raise MalformedProof(f"the proven entry does not decode: {e}") from e
    if entry.number != number:
        raise MalformedProof(f"the proven entry is for {entry.number}, not {number}")
    return entry
