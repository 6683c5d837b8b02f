"""The view root: a sparse Merkle tree keyed by a hash of the number, and its proofs.

A lookup proof for a number N carries no other number, no hash of another
number and nothing computable from another number alone: its siblings are
opaque subtree hashes, each of which also depends on entry bytes. (Only keys
that share all 64 bits of N's position are listed, see docs/view.md.) The byte
formats, the residual leakage and the trade-offs are in docs/view.md ("The
view root").

    key(N)        = SHA-256("markex/v1/view/key" || 0x00 || utf8(N))      32 bytes
    position(N)   = the first 64 bits of key(N)                           depth 64
    leaf          = SHA-256(0x03 || for each entry at that position, sorted by key:
                                    key || entry hash)
    node at depth d, children l (next bit 0) and r (next bit 1):
                    both empty:   EMPTY (32 zero bytes, an empty subtree at any height)
                    one empty:    SHA-256(0x05 || u8 (2 * d + side of the other) || other)
                    neither:      SHA-256(0x04 || l || r)

The tree is cut at depth `top_bits`: above it a dense in-memory tree of
2**top_bits subtree hashes (`TopTree`), below it one *bucket* per subtree,
whose positions (`Slot`) each cache their lonely chain at two depths, so a
bucket is rehashed in O(positions) hashes instead of 64 per position. The cut
and the caches are how the tree is kept; the root does not depend on them.

Errors: `ViewProof.decode` and `proof_root` raise MalformedProof.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.errors import MalformedProof

__all__ = [
    "DEPTH",
    "EMPTY",
    "KEY_CONTEXT",
    "MAX_TOP_BITS",
    "PROOF_VERSION",
    "Slot",
    "TopTree",
    "ViewProof",
    "bucket_path",
    "bucket_range",
    "leaf_hash",
    "node_hash",
    "position",
    "proof_root",
    "rehash_bucket",
    "slots_of",
    "tree_root",
    "view_key",
]

PROOF_VERSION = 2
DEPTH = 64                        # key bits that place an entry; see docs/view.md for why 64
MAX_TOP_BITS = 22                 # the dense top in memory: ~75 B * 2**(bits + 1) at most
KEY_CONTEXT = b"markex/v1/view/key\x00"
LEAF_PREFIX = b"\x03"             # apart from RFC 9162's 0x00 (entry hash) and 0x01
NODE_PREFIX = b"\x04"             # two non-empty children
ONE_PREFIX = b"\x05"              # one non-empty child (34 bytes hashed: one SHA-256 block)
HASH = 32
MAX_LISTED = 255                  # entries sharing one position that a proof may list

_sha256 = hashlib.sha256
EMPTY = bytes(HASH)                # the hash of an empty subtree, at every height

# A single non-empty child under its parent at depth d: sha256(_STEP[d][side] + child).
_STEP = tuple(
    (ONE_PREFIX + bytes((2 * d,)), ONE_PREFIX + bytes((2 * d + 1,))) for d in range(DEPTH)
)
DEEP_STEP = 8     # a slot also caches its chain this far below the top (see Slot)


def view_key(number: str) -> bytes:
    """The 32-byte key that places `number` in the tree."""
    return _sha256(KEY_CONTEXT + number.encode("utf-8")).digest()


def position(key: bytes) -> int:
    """The first 64 bits of a key, as an integer: the entry's leaf position."""
    return int.from_bytes(key[:8], "big")


def leaf_hash(members: Sequence[tuple[bytes, bytes]]) -> bytes:
    """SHA-256(0x03 || key || entry hash for each member, sorted by key)."""
    return _sha256(LEAF_PREFIX + b"".join(k + e for k, e in sorted(members))).digest()


def node_hash(depth: int, left: bytes, right: bytes) -> bytes:
    """The hash of a node at `depth` from its children's hashes."""
    if right == EMPTY:
        return EMPTY if left == EMPTY else _sha256(_STEP[depth][0] + left).digest()
    if left == EMPTY:
        return _sha256(_STEP[depth][1] + right).digest()
    return _sha256(NODE_PREFIX + left + right).digest()


def _lift(x: bytes, pos: int, frm: int, to: int) -> bytes:
    """The hash at depth `to` of the subtree on `pos`'s path whose only
    non-empty part is `x` at depth `frm` (to <= frm)."""
    if frm <= to:
        return x
    sha, bits = _sha256, pos >> (DEPTH - frm)
    for step in _STEP[frm - 1 : to - 1 if to else None : -1]:
        x = sha(step[bits & 1] + x).digest()
        bits >>= 1
    return x


class Slot:
    """One occupied position of a bucket: its entries (key, entry hash), sorted
    by key (more than one only when keys share 64 bits), and two cached points
    of its lonely chain: `top` is the hash at depth `depth` of the subtree
    holding this position alone (where the bucket's tree meets it), `deep` the
    same at depth `deep_depth` >= `depth` (where a new neighbour most likely
    splits the chain, so the split costs a few hashes rather than 64)."""

    __slots__ = ("deep", "deep_depth", "depth", "members", "pos", "top")

    def __init__(
        self,
        pos: int,
        members: tuple[tuple[bytes, bytes], ...],
        depth: int,
        top: bytes,
        deep_depth: int,
        deep: bytes,
    ) -> None:
        self.pos = pos
        self.members = members
        self.depth = depth
        self.top = top
        self.deep_depth = deep_depth
        self.deep = deep

    @classmethod
    def of(cls, members: Iterable[tuple[bytes, bytes]]) -> Slot:
        """A slot with a fresh cache (the leaf itself)."""
        ms = tuple(sorted(members))
        leaf = leaf_hash(ms)
        return cls(position(ms[0][0]), ms, DEPTH, leaf, DEPTH, leaf)

    def at(self, depth: int) -> bytes:
        """The hash at `depth` of the subtree holding this position alone."""
        if self.depth >= depth:
            return _lift(self.top, self.pos, self.depth, depth)
        if self.deep_depth >= depth:
            return _lift(self.deep, self.pos, self.deep_depth, depth)
        return _lift(leaf_hash(self.members), self.pos, DEPTH, depth)

    def move(self, depth: int, deep_depth: int) -> bool:
        """Move the cached points to `depth` and max(depth, `deep_depth`);
        True when they changed."""
        deep_depth = min(DEPTH, max(depth, deep_depth))
        if (self.depth, self.deep_depth) == (depth, deep_depth):
            return False
        if self.deep_depth != deep_depth:
            self.deep = self.at(deep_depth)
            self.deep_depth = deep_depth
        self.top = _lift(self.deep, self.pos, deep_depth, depth)
        self.depth = depth
        return True


def _split(positions: Sequence[int], lo: int, hi: int, depth: int) -> int:
    """The first index in [lo, hi) whose position has bit `depth` set (all share
    the bits above `depth`)."""
    a = positions[lo]
    return bisect_left(positions, ((a >> (63 - depth)) | 1) << (63 - depth), lo, hi)


def _branch(positions: Sequence[int], lo: int, hi: int) -> int:
    """The depth at which the positions of [lo, hi) (at least two, sorted) part."""
    return DEPTH - (positions[lo] ^ positions[hi - 1]).bit_length()


def _subtree(
    slots: Sequence[Slot],
    positions: Sequence[int],
    lo: int,
    hi: int,
    depth: int,
    moved: list[Slot] | None,
    deep_depth: int = DEPTH,
) -> bytes:
    """The hash at `depth` of the subtree holding slots[lo:hi] (which share the
    first `depth` bits). With `moved`, each lonely slot's cache is moved to
    the depth asked for (its deep point to `deep_depth`) and the slots whose
    cache changed are appended."""
    if lo == hi:
        return EMPTY
    if hi - lo == 1:
        s = slots[lo]
        if moved is None:
            return s.at(depth)
        if s.move(depth, deep_depth):
            moved.append(s)
        return s.top
    br = _branch(positions, lo, hi)
    mid = _split(positions, lo, hi, br)
    x = _sha256(
        NODE_PREFIX
        + _subtree(slots, positions, lo, mid, br + 1, moved, deep_depth)
        + _subtree(slots, positions, mid, hi, br + 1, moved, deep_depth)
    ).digest()
    return _lift(x, positions[lo], br, depth)


def rehash_bucket(slots: Sequence[Slot], top_bits: int) -> tuple[bytes, list[Slot]]:
    """The hash at depth `top_bits` of a bucket's slots (sorted by position),
    and the slots whose cache moved (to be stored again)."""
    moved: list[Slot] = []
    positions = [s.pos for s in slots]
    deep = min(DEPTH, top_bits + DEEP_STEP)
    return _subtree(slots, positions, 0, len(slots), top_bits, moved, deep), moved


def bucket_path(
    slots: Sequence[Slot], top_bits: int, pos: int
) -> tuple[list[tuple[int, bytes]], Slot | None]:
    """The non-empty siblings below depth `top_bits` on `pos`'s path, deepest
    first, as (d, hash): the sibling at depth d + 1 across bit d; and the slot
    at `pos`, if any. Reads the caches, never moves them."""
    positions = [s.pos for s in slots]
    out: list[tuple[int, bytes]] = []
    lo, hi = 0, len(slots)
    while lo < hi:
        a = positions[lo]
        if hi - lo == 1 and a == pos:
            out.reverse()
            return out, slots[lo]
        br = DEPTH if hi - lo == 1 else _branch(positions, lo, hi)
        off = DEPTH - (a ^ pos).bit_length()        # where pos leaves a's bits
        if off < br:      # pos leaves the range's common prefix: the range is one sibling
            out.append((off, _subtree(slots, positions, lo, hi, off + 1, None)))
            break
        mid = _split(positions, lo, hi, br)
        if (pos >> (63 - br)) & 1:
            out.append((br, _subtree(slots, positions, lo, mid, br + 1, None)))
            lo = mid
        else:
            out.append((br, _subtree(slots, positions, mid, hi, br + 1, None)))
            hi = mid
    out.reverse()
    return out, None


def slots_of(members: Iterable[tuple[bytes, bytes]]) -> list[Slot]:
    """Fresh slots (sorted by position) for (key, entry hash) pairs."""
    by_pos: dict[int, list[tuple[bytes, bytes]]] = {}
    for k, e in members:
        by_pos.setdefault(position(k), []).append((k, e))
    return [Slot.of(by_pos[p]) for p in sorted(by_pos)]


def tree_root(items: Iterable[tuple[str, bytes]]) -> bytes:
    """The root over (number, entry hash) pairs, computed from nothing: the
    reference the incremental views are held to."""
    slots = slots_of((view_key(n), e) for n, e in items)
    return _subtree(slots, [s.pos for s in slots], 0, len(slots), 0, None)


def bucket_range(bucket: int, top_bits: int) -> tuple[bytes, bytes | None]:
    """The keys [start, end) of a bucket (end None: the last bucket)."""
    shift = 32 - top_bits
    end = (bucket + 1) << shift
    return (bucket << shift).to_bytes(4, "big"), None if end >> 32 else end.to_bytes(4, "big")


class TopTree:
    """The dense top of the tree: depths 0..bits, level d a list of 2**d
    hashes (empty subtrees share one object). Bucket hashes are set at once;
    the levels above are rehashed when next read (`root`, `path`), so the
    paths of many batches between two reads are hashed once: O(k * bits)
    hashes for k changed buckets."""

    def __init__(self, bits: int) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= MAX_TOP_BITS:
            raise ValueError(f"the tree's top has 0..{MAX_TOP_BITS} levels, not {bits!r}")
        self.bits = bits
        self.levels = [[EMPTY] * (1 << d) for d in range(bits + 1)]
        self._dirty: set[int] = set()      # parents (at depth bits - 1) of changed buckets

    def root(self) -> bytes:
        self._rehash()
        return self.levels[0][0]

    def bucket(self, b: int) -> bytes:
        return self.levels[self.bits][b]

    def update(self, changes: dict[int, bytes]) -> None:
        """Set bucket hashes (the levels above follow when next read)."""
        bottom = self.levels[self.bits]
        for b, h in changes.items():
            bottom[b] = h
        if self.bits:
            self._dirty.update(b >> 1 for b in changes)

    def _rehash(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for d in range(self.bits - 1, -1, -1):
            if not dirty:
                return
            below, here = self.levels[d + 1], self.levels[d]
            for i in dirty:
                here[i] = node_hash(d, below[2 * i], below[2 * i + 1])
            dirty = {i >> 1 for i in dirty}

    def path(self, b: int) -> list[tuple[int, bytes]]:
        """The non-empty siblings above bucket `b`, deepest first, as (d, hash)."""
        self._rehash()
        out = []
        for d in range(self.bits - 1, -1, -1):
            h = self.levels[d + 1][(b >> (self.bits - 1 - d)) ^ 1]
            if h != EMPTY:
                out.append((d, h))
        return out


# ====================================================================== proofs


@dataclass(frozen=True)
class ViewProof:
    """The proof that a number's entry (or its absence) is in a view root:
    the non-empty siblings on the number's path and, only when other entries
    share its 64-bit position, those entries' keys and entry hashes.

    Bytes: u8 version (2) || u8 n || n * (32-byte key || 32-byte entry hash)
    || u64be bitmap || one 32-byte hash per set bit, deepest first. Bit d of
    the bitmap (counted from the most significant) is set when the sibling
    across the number's bit d (at depth d + 1) is not empty."""

    listed: tuple[tuple[bytes, bytes], ...]
    bitmap: int
    siblings: tuple[bytes, ...]

    def encode(self) -> bytes:
        out = [struct.pack(">BB", PROOF_VERSION, len(self.listed))]
        out.extend(k + e for k, e in self.listed)
        out.append(struct.pack(">Q", self.bitmap))
        out.extend(self.siblings)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> ViewProof:
        """Strict: exact lengths, nothing trailing. Raises MalformedProof."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedProof("a view proof is bytes")
        data = bytes(data)
        if len(data) < 2 or data[0] != PROOF_VERSION:
            version = data[0] if data else None
            raise MalformedProof(f"view proof version {version} is not {PROOF_VERSION}")
        n = data[1]
        off = 2 + 2 * HASH * n
        if len(data) < off + 8:
            raise MalformedProof("view proof is truncated")
        listed = tuple(
            (data[2 + 2 * HASH * i : 2 + HASH * (2 * i + 1)],
             data[2 + HASH * (2 * i + 1) : 2 + 2 * HASH * (i + 1)])
            for i in range(n)
        )
        (bitmap,) = struct.unpack_from(">Q", data, off)
        off += 8
        m = bitmap.bit_count()
        if len(data) != off + HASH * m:
            raise MalformedProof("view proof siblings do not match its bitmap, or trail")
        siblings = tuple(data[off + HASH * i : off + HASH * (i + 1)] for i in range(m))
        return cls(listed, bitmap, siblings)


def proof_root(key: bytes, entry: bytes | None, proof: ViewProof) -> bytes:
    """The root `proof` leads to for `key` holding entry hash `entry` (None:
    holding nothing). Raises MalformedProof for a proof that is not in its
    one canonical form: a listed key not at `key`'s position, equal to `key`,
    or out of order; a hash that is not 32 bytes; a sibling given as empty."""
    if len(key) != HASH:
        raise MalformedProof("a view key is 32 bytes")
    if entry is not None and len(entry) != HASH:
        raise MalformedProof("an entry hash is 32 bytes")
    if isinstance(proof.bitmap, bool) or not isinstance(proof.bitmap, int) or not (
        0 <= proof.bitmap < 1 << DEPTH
    ):
        raise MalformedProof("a view proof bitmap has 64 bits")
    if len(proof.siblings) != proof.bitmap.bit_count() or len(proof.listed) > MAX_LISTED:
        raise MalformedProof("view proof siblings do not match its bitmap")
    pos = position(key)
    prefix = key[:8]
    prev = b""
    for k, e in proof.listed:
        if len(k) != HASH or len(e) != HASH:
            raise MalformedProof("a listed key or entry hash is not 32 bytes")
        if k[:8] != prefix:
            raise MalformedProof("a listed entry is not at the number's position")
        if k == key:
            raise MalformedProof("the proof lists the number's own key")
        if k <= prev:
            raise MalformedProof("the listed entries are not sorted by key")
        prev = k
    members = list(proof.listed)
    if entry is not None:
        members.append((key, entry))
    x = leaf_hash(members) if members else None      # None: still an empty subtree
    bitmap = proof.bitmap
    it = iter(proof.siblings)
    for d in range(DEPTH - 1, -1, -1):
        bit = (pos >> (63 - d)) & 1
        if (bitmap >> (63 - d)) & 1:
            s = next(it)
            if len(s) != HASH or s == EMPTY:
                raise MalformedProof("a sibling is not a 32-byte non-empty subtree hash")
            if x is None:
                x = _sha256(_STEP[d][1 - bit] + s).digest()
            else:
                x = _sha256(NODE_PREFIX + (s + x if bit else x + s)).digest()
        elif x is not None:
            x = _sha256(_STEP[d][bit] + x).digest()
    return EMPTY if x is None else x
