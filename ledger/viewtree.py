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
    binary node at depth d < 24, children l (next bit 0) and r (next bit 1):
                    both empty:   EMPTY (32 zero bytes, an empty subtree at any height)
                    one empty:    SHA-256(0x05 || u8 (2 * d + side of the other) || other)
                    neither:      SHA-256(0x04 || l || r)
    sixteen-way node at depth d in 24, 28, .., 60, child i holding the next
    four bits = i:  all empty:    EMPTY
                    only c_i:     SHA-256(0x07 || u8 d || u8 i || c_i)
                    two or more:  SHA-256(0x06 || u8 d || u16be mask || the non-empty
                                  children in index order), mask bit 15 - i for c_i

The tree is cut at depth `top_bits`: above it a dense in-memory tree of
2**top_bits subtree hashes (`TopTree`), below it one *bucket* per subtree,
whose positions (`Slot`) each cache their lonely chain at two depths, so a
bucket is rehashed in O(positions) hashes instead of 34 per position (the
sixteen-way nodes make a lonely chain 34 hashes long, not 64). The cut
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
    "BITMAP_BITS",
    "DEPTH",
    "EMPTY",
    "KEY_CONTEXT",
    "MAX_TOP_BITS",
    "PROOF_VERSION",
    "Slot",
    "TopTree",
    "ViewProof",
    "bucket_path",
    "boundary_up",
    "bucket_range",
    "child_index",
    "is_boundary",
    "leaf_hash",
    "node_hash",
    "node_of",
    "position",
    "proof_bit",
    "proof_root",
    "rehash_bucket",
    "slots_of",
    "tree_root",
    "view_key",
    "wide_hash",
]

PROOF_VERSION = 3                 # 3: sixteen-way nodes below depth WIDE_FROM (2: binary)
DEPTH = 64                        # key bits that place an entry; see docs/view.md for why 64
WIDE_FROM = 24                    # nodes at depths 24, 28, .., 60 have 16 children
WIDE_BITS = 4                     # key bits one sixteen-way node consumes
MAX_TOP_BITS = 22                 # the dense top in memory: ~75 B * 2**(bits + 1) at most
KEY_CONTEXT = b"markex/v1/view/key\x00"
LEAF_PREFIX = b"\x03"             # apart from RFC 9162's 0x00 (entry hash) and 0x01
NODE_PREFIX = b"\x04"             # two non-empty children
ONE_PREFIX = b"\x05"              # one non-empty child (34 bytes hashed: one SHA-256 block)
WIDE_PREFIX = b"\x06"             # a sixteen-way node with two or more non-empty children
WIDE_ONE_PREFIX = b"\x07"         # a sixteen-way node with one (35 bytes: one block)
HASH = 32
MAX_LISTED = 255                  # entries sharing one position that a proof may list
# Bitmap bits of a proof: one per binary depth, then 16 per sixteen-way node.
BITMAP_BITS = WIDE_FROM + (1 << WIDE_BITS) * ((DEPTH - WIDE_FROM) // WIDE_BITS)   # 184
BITMAP_BYTES = BITMAP_BITS // 8

_sha256 = hashlib.sha256
try:    # CPython's own SHA-256 skips OpenSSL's EVP setup: less CPU for a one-block message
    from _sha256 import sha256 as _sha256_block  # Python 3.11
except ImportError:     # pragma: no cover - 3.12 renamed it; elsewhere OpenSSL's
    try:
        from _sha2 import sha256 as _sha256_block  # type: ignore[no-redef]
    except ImportError:
        _sha256_block = hashlib.sha256
EMPTY = bytes(HASH)                # the hash of an empty subtree, at every height

# The depths that hold nodes (0..23, then 24, 28, .., 60), each with its width
# in key bits and, per child index, the prefix of its one-child hash.
_NODES = tuple(range(WIDE_FROM)) + tuple(range(WIDE_FROM, DEPTH, WIDE_BITS))
_WIDTH = {d: 1 if d < WIDE_FROM else WIDE_BITS for d in _NODES}
_STEP = {
    d: (
        (ONE_PREFIX + bytes((2 * d,)), ONE_PREFIX + bytes((2 * d + 1,)))
        if d < WIDE_FROM
        else tuple(WIDE_ONE_PREFIX + bytes((d, i)) for i in range(1 << WIDE_BITS))
    )
    for d in _NODES
}
_BOUNDARY = frozenset(_NODES) | {DEPTH}      # depths where a subtree starts
# For each boundary depth, the index in _CHAIN of its node (DEPTH: one past the last).
_CHAIN = tuple((DEPTH - d - _WIDTH[d], (1 << _WIDTH[d]) - 1, _STEP[d]) for d in _NODES)
_AT = {d: i for i, d in enumerate(_NODES)} | {DEPTH: len(_NODES)}
DEEP_STEP = 8     # a slot also caches its chain this far below the top (see Slot)


def is_boundary(depth: int) -> bool:
    """True when a subtree starts at `depth` (a node's depth, or DEPTH)."""
    return depth in _BOUNDARY


def boundary_up(depth: int) -> int:
    """The first depth >= `depth` where a subtree starts."""
    while depth not in _BOUNDARY:
        depth += 1
    return depth


def node_of(bit: int) -> int:
    """The depth of the node that branches on key bit `bit` (0..63)."""
    return bit if bit < WIDE_FROM else bit - (bit - WIDE_FROM) % WIDE_BITS


def child_index(pos: int, depth: int) -> int:
    """Which child of the node at `depth` holds position `pos`."""
    w = _WIDTH[depth]
    return (pos >> (DEPTH - depth - w)) & ((1 << w) - 1)


def proof_bit(depth: int, index: int) -> int:
    """The bitmap bit that says the child `index` of the node at `depth` on the
    proven path is a non-empty sibling (binary nodes: one bit per depth)."""
    if depth < WIDE_FROM:
        return depth
    return WIDE_FROM + ((depth - WIDE_FROM) >> 2 << WIDE_BITS) + index


def view_key(number: str) -> bytes:
    """The 32-byte key that places `number` in the tree."""
    return _sha256_block(KEY_CONTEXT + number.encode("utf-8")).digest()


def position(key: bytes) -> int:
    """The first 64 bits of a key, as an integer: the entry's leaf position."""
    return int.from_bytes(key[:8], "big")


def leaf_hash(members: Sequence[tuple[bytes, bytes]]) -> bytes:
    """SHA-256(0x03 || key || entry hash for each member, sorted by key)."""
    return _sha256(LEAF_PREFIX + b"".join(k + e for k, e in sorted(members))).digest()


def node_hash(depth: int, left: bytes, right: bytes) -> bytes:
    """The hash of a binary node at `depth` (< WIDE_FROM) from its children's hashes."""
    if right == EMPTY:
        return EMPTY if left == EMPTY else _sha256(_STEP[depth][0] + left).digest()
    if left == EMPTY:
        return _sha256(_STEP[depth][1] + right).digest()
    return _sha256(NODE_PREFIX + left + right).digest()


def wide_hash(depth: int, children: dict[int, bytes]) -> bytes:
    """The hash of a sixteen-way node at `depth` from its non-empty children
    (index -> hash)."""
    if not children:
        return EMPTY
    if len(children) == 1:
        ((i, c),) = children.items()
        return _sha256(_STEP[depth][i] + c).digest()
    mask = sum(1 << (15 - i) for i in children)
    body = b"".join(children[i] for i in sorted(children))
    return _sha256(WIDE_PREFIX + bytes((depth,)) + mask.to_bytes(2, "big") + body).digest()


# (frm, to) -> the steps of _CHAIN from depth frm up to depth to, deepest first
# (both boundaries, to < frm): sliced once here, not on every lift.
_SEGMENTS = {
    (frm, to): _CHAIN[_AT[frm] - 1 : _AT[to] - 1 if to else None : -1]
    for frm in _BOUNDARY for to in _BOUNDARY if to < frm
}


def _lift(x: bytes, pos: int, frm: int, to: int) -> bytes:
    """The hash at depth `to` of the subtree on `pos`'s path whose only
    non-empty part is `x` at depth `frm` (to <= frm, both boundaries)."""
    if frm <= to:
        return x
    sha = _sha256_block             # 34 or 35 bytes: one block
    for shift, mask, steps in _SEGMENTS[frm, to]:
        x = sha(steps[(pos >> shift) & mask] + x).digest()
    return x


class Slot:
    """One occupied position of a bucket: its entries (key, entry hash), sorted
    by key (more than one only when keys share 64 bits), and two cached points
    of its lonely chain: `top` is the hash at depth `depth` of the subtree
    holding this position alone (where the bucket's tree meets it), `deep` the
    same at depth `deep_depth` >= `depth` (where a new neighbour most likely
    splits the chain, so the split costs a few hashes rather than the whole
    chain). Both depths are boundaries (`is_boundary`)."""

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
        ms = tuple(members)
        if len(ms) > 1:             # two keys at one 64-bit position: almost never
            ms = tuple(sorted(ms))
        # leaf_hash without its second sort (ms is sorted): an apply makes one per change.
        leaf = _sha256(LEAF_PREFIX + b"".join([k + e for k, e in ms])).digest()
        return cls(int.from_bytes(ms[0][0][:8], "big"), ms, DEPTH, leaf, DEPTH, leaf)

    def at(self, depth: int) -> bytes:
        """The hash at `depth` (a boundary) of the subtree holding this position alone."""
        if self.depth >= depth:
            return _lift(self.top, self.pos, self.depth, depth)
        if self.deep_depth >= depth:
            return _lift(self.deep, self.pos, self.deep_depth, depth)
        return _lift(leaf_hash(self.members), self.pos, DEPTH, depth)

    def move(self, depth: int, deep_depth: int) -> bool:
        """Move the cached points to `depth` and max(depth, `deep_depth`)
        (boundaries); True when they changed."""
        if deep_depth < depth:
            deep_depth = depth
        elif deep_depth > DEPTH:
            deep_depth = DEPTH
        if self.depth == depth and self.deep_depth == deep_depth:
            return False
        if self.deep_depth != deep_depth:
            self.deep = self.at(deep_depth)
            self.deep_depth = deep_depth
        self.top = _lift(self.deep, self.pos, deep_depth, depth)
        self.depth = depth
        return True


def _branch(positions: Sequence[int], lo: int, hi: int) -> int:
    """The key bit at which the positions of [lo, hi) (at least two, sorted) part."""
    return DEPTH - (positions[lo] ^ positions[hi - 1]).bit_length()


def _children(
    positions: Sequence[int], lo: int, hi: int, depth: int
) -> list[tuple[int, int, int]]:
    """The non-empty children of the node at `depth` over [lo, hi) (sharing
    the bits above `depth`), as (index, lo, hi) in index order."""
    w = _WIDTH[depth]
    shift = DEPTH - depth - w
    base = positions[lo] >> (shift + w) << (shift + w)
    out = []
    while lo < hi:
        i = (positions[lo] >> shift) & ((1 << w) - 1)
        end = bisect_left(positions, base + ((i + 1) << shift), lo, hi)
        out.append((i, lo, end))
        lo = end
    return out


def _subtree(
    slots: Sequence[Slot],
    positions: Sequence[int],
    lo: int,
    hi: int,
    depth: int,
    moved: list[Slot] | None,
    deep_depth: int = DEPTH,
) -> bytes:
    """The hash at `depth` (a boundary) of the subtree holding slots[lo:hi]
    (which share the first `depth` bits). With `moved`, each lonely slot's
    cache is moved to the depth asked for (its deep point to `deep_depth`) and
    the slots whose cache changed are appended."""
    if lo == hi:
        return EMPTY
    if hi - lo == 1:
        s = slots[lo]
        if moved is None:
            return s.at(depth)
        if s.move(depth, deep_depth):
            moved.append(s)
        return s.top
    br = DEPTH - (positions[lo] ^ positions[hi - 1]).bit_length()    # _branch, inlined
    if br < WIDE_FROM:          # a binary node: both children are non-empty (they part here)
        mid = bisect_left(positions, (positions[lo] >> (63 - br) | 1) << (63 - br), lo, hi)
        x = _sha256(
            NODE_PREFIX
            + _subtree(slots, positions, lo, mid, br + 1, moved, deep_depth)
            + _subtree(slots, positions, mid, hi, br + 1, moved, deep_depth)
        ).digest()
        return _lift(x, positions[lo], br, depth)
    at = node_of(br)
    below = at + WIDE_BITS
    kids = {
        i: _subtree(slots, positions, a, b, below, moved, deep_depth)
        for i, a, b in _children(positions, lo, hi, at)
    }
    return _lift(wide_hash(at, kids), positions[lo], at, depth)


def rehash_bucket(slots: Sequence[Slot], top_bits: int) -> tuple[bytes, list[Slot]]:
    """The hash at depth `top_bits` of a bucket's slots (sorted by position),
    and the slots whose cache moved (to be stored again)."""
    moved: list[Slot] = []
    if len(slots) == 1:             # a lonely position: its chain, from the cached points
        s = slots[0]
        if s.move(top_bits, _DEEP_OF[top_bits]):
            moved.append(s)
        return s.top, moved
    positions = [s.pos for s in slots]
    return _subtree(slots, positions, 0, len(slots), top_bits, moved, _DEEP_OF[top_bits]), moved


# top bits -> the depth of a slot's deeper cached point (rehash_bucket)
_DEEP_OF = {t: boundary_up(min(DEPTH, t + DEEP_STEP)) for t in range(DEPTH + 1)}


def bucket_path(
    slots: Sequence[Slot], top_bits: int, pos: int
) -> tuple[list[tuple[int, bytes]], Slot | None]:
    """The non-empty siblings below depth `top_bits` on `pos`'s path, deepest
    first, as (bitmap bit, hash) (see `proof_bit`; within a sixteen-way node
    the highest index first); and the slot at `pos`, if any. Reads the
    caches, never moves them."""
    positions = [s.pos for s in slots]
    out: list[tuple[int, bytes]] = []
    lo, hi = 0, len(slots)
    while lo < hi:
        a = positions[lo]
        br = DEPTH if hi - lo == 1 else _branch(positions, lo, hi)
        off = DEPTH - (a ^ pos).bit_length()        # where pos leaves a's bits
        stop = min(br, off)
        if stop == DEPTH:                            # the one slot left is pos's
            out.reverse()
            return out, slots[lo]
        at = node_of(stop)          # the first node below which pos's path holds less
        below = at + _WIDTH[at]
        own = child_index(pos, at)
        nxt = (lo, lo)
        for i, c_lo, c_hi in _children(positions, lo, hi, at):
            if i == own:
                nxt = (c_lo, c_hi)
            else:
                out.append((proof_bit(at, i), _subtree(slots, positions, c_lo, c_hi, below, None)))
        lo, hi = nxt
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
        sha, one = _sha256, _sha256_block
        if len(dirty) == 1:                   # one bucket changed (a small apply): its path
            (i,) = dirty
            for d in range(self.bits - 1, -1, -1):
                below = self.levels[d + 1]
                left, right = below[2 * i], below[2 * i + 1]
                if right == EMPTY:
                    h = EMPTY if left == EMPTY else one(_STEP[d][0] + left).digest()
                elif left == EMPTY:
                    h = one(_STEP[d][1] + right).digest()
                else:
                    h = sha(NODE_PREFIX + left + right).digest()
                self.levels[d][i] = h
                i >>= 1
            return
        for d in range(self.bits - 1, -1, -1):
            if not dirty:
                return
            below, here = self.levels[d + 1], self.levels[d]
            left_only, right_only = _STEP[d]
            for i in dirty:                   # node_hash, inlined: ~10 of these per record
                left, right = below[2 * i], below[2 * i + 1]
                if right == EMPTY:
                    here[i] = EMPTY if left == EMPTY else one(left_only + left).digest()
                elif left == EMPTY:
                    here[i] = one(right_only + right).digest()
                else:
                    here[i] = sha(NODE_PREFIX + left + right).digest()
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

    Bytes: u8 version (3) || u8 n || n * (32-byte key || 32-byte entry hash)
    || 23-byte bitmap || one 32-byte hash per set bit, from the last set bit
    to the first. Bitmap bits, counted from the most significant: bit d
    (0..23) is set when the sibling across the number's bit d (at depth
    d + 1) is not empty; bit 24 + 16 * k + i is set when child i of the
    sixteen-way node at depth 24 + 4 * k on the number's path is a non-empty
    sibling (never the number's own child)."""

    listed: tuple[tuple[bytes, bytes], ...]
    bitmap: int
    siblings: tuple[bytes, ...]

    def encode(self) -> bytes:
        out = [struct.pack(">BB", PROOF_VERSION, len(self.listed))]
        out.extend(k + e for k, e in self.listed)
        out.append(self.bitmap.to_bytes(BITMAP_BYTES, "big"))
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
        if len(data) < off + BITMAP_BYTES:
            raise MalformedProof("view proof is truncated")
        listed = tuple(
            (data[2 + 2 * HASH * i : 2 + HASH * (2 * i + 1)],
             data[2 + HASH * (2 * i + 1) : 2 + 2 * HASH * (i + 1)])
            for i in range(n)
        )
        bitmap = int.from_bytes(data[off : off + BITMAP_BYTES], "big")
        off += BITMAP_BYTES
        m = bitmap.bit_count()
        if len(data) != off + HASH * m:
            raise MalformedProof("view proof siblings do not match its bitmap, or trail")
        siblings = tuple(data[off + HASH * i : off + HASH * (i + 1)] for i in range(m))
        return cls(listed, bitmap, siblings)


# A verifier's walk, deepest node first: ([depth,] shift of its bitmap bits,
# shift of its child index in the position, one-child prefixes).
_WALK_WIDE = tuple(
    (d, BITMAP_BITS - proof_bit(d, 0) - 16, DEPTH - d - WIDE_BITS, _STEP[d])
    for d in _NODES[::-1]
    if d >= WIDE_FROM
)
_WALK_BINARY = tuple(
    (BITMAP_BITS - 1 - d, DEPTH - 1 - d, _STEP[d]) for d in _NODES[::-1] if d < WIDE_FROM
)


def proof_root(key: bytes, entry: bytes | None, proof: ViewProof) -> bytes:
    """The root `proof` leads to for `key` holding entry hash `entry` (None:
    holding nothing). Raises MalformedProof for a proof that is not in its
    one canonical form: a listed key not at `key`'s position, equal to `key`,
    or out of order; a hash that is not 32 bytes; a sibling given as empty;
    a bit set for the number's own child of a sixteen-way node."""
    if len(key) != HASH:
        raise MalformedProof("a view key is 32 bytes")
    if entry is not None and len(entry) != HASH:
        raise MalformedProof("an entry hash is 32 bytes")
    if isinstance(proof.bitmap, bool) or not isinstance(proof.bitmap, int) or not (
        0 <= proof.bitmap < 1 << BITMAP_BITS
    ):
        raise MalformedProof(f"a view proof bitmap has {BITMAP_BITS} bits")
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

    def sibling() -> bytes:
        s = next(it)
        if len(s) != HASH or s == EMPTY:
            raise MalformedProof("a sibling is not a 32-byte non-empty subtree hash")
        return s

    sha, one = _sha256, _sha256_block
    for d, mshift, pshift, steps in _WALK_WIDE:
        mask = (bitmap >> mshift) & 0xFFFF
        own = (pos >> pshift) & 0xF
        if not mask:                         # the common case: no sibling in this node
            if x is not None:
                x = one(steps[own] + x).digest()
            continue
        if mask >> (15 - own) & 1:
            raise MalformedProof("a proof names the number's own child as a sibling")
        kids = {i: sibling() for i in range(15, -1, -1) if mask >> (15 - i) & 1}
        if x is not None:
            kids[own] = x
        x = wide_hash(d, kids)
    for mshift, pshift, steps in _WALK_BINARY:
        bit = (pos >> pshift) & 1
        if (bitmap >> mshift) & 1:
            s = sibling()
            if x is None:
                x = one(steps[1 - bit] + s).digest()
            else:
                x = sha(NODE_PREFIX + (s + x if bit else x + s)).digest()
        elif x is not None:
            x = one(steps[bit] + x).digest()
    return EMPTY if x is None else x
