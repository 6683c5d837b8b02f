"""The node's Merkle log: RFC 9162 section 2.1 hashing, proofs, strict verifiers.

Hashing (fixed by the RFC)::

    leaf_hash(d)   = SHA-256(0x00 || d)
    node_hash(l,r) = SHA-256(0x01 || l || r)
    MTH({})        = SHA-256("")

Every ``leaf`` argument in this module is a *leaf hash* (32 bytes), never the
entry bytes: the log stores and proves leaf hashes.

Storage idea
------------
Only *complete* subtrees are stored, each under ``(level, index)``: the node at
``(level, index)`` covers leaves ``[index * 2**level, (index + 1) * 2**level)``
and level 0 holds the leaf hashes. Once written such a node never changes, so
a store only ever appends. A tree of ``size`` leaves is the complete subtrees
of the binary decomposition of ``size`` (largest on the left); its root, and
the hash of any incomplete right-edge subtree ``[start, size)``, is those
stored nodes folded right to left. So a root, an inclusion proof or a
consistency proof reads O(log n) stored nodes and never walks the tree.

`Frontier` keeps just those decomposition hashes in memory: appending a leaf
merges equal-sized subtrees from the right (one hash per trailing 1-bit of the
old size) and hands back every newly completed node for the store to write.

Errors: `MalformedProof` for anything ill-formed (index or size out of range,
wrong proof length, a hash that is not 32 bytes); `ProofMismatch` when a
well-formed proof does not lead to the expected root. Verifiers raise; they
never return a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from ledger.errors import BadInput, MalformedProof, NotFound, ProofMismatch

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "MemoryNodes",
    "NodeReader",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_at",
    "root_from_inclusion",
    "root_from_leaf_hashes",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# Tree sizes are uint64 in checkpoints and in the RFC's proof structures.
MAX_SIZE = 1 << 64

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


EMPTY_ROOT: bytes = _sha256(b"").digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over all of `hashes`, computed from scratch in O(n) hashes.

    Level by level, an unpaired last node moves up unchanged: this gives the
    same tree as the RFC's split at the largest power of two below n.
    """
    level = list(hashes)
    if not level:
        return EMPTY_ROOT
    sha = _sha256
    while len(level) > 1:
        paired = [
            sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


class NodeReader(Protocol):
    """Read access to stored complete subtrees."""

    def get_node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree over leaves [index*2**level, (index+1)*2**level).

        Level 0 is the leaf hashes. Raises NotFound (or StorageFailure) when
        the node is not stored.
        """
        ...


class Frontier:
    """Right edge of the tree for O(log n) appends: the complete-subtree hashes
    of the binary decomposition of size, largest (leftmost) first."""

    __slots__ = ("size", "_hashes")

    def __init__(self, size: int, hashes: list[bytes]) -> None:
        if size < 0 or size.bit_count() != len(hashes):
            raise BadInput(f"a frontier of size {size} has {size.bit_count()} hashes")
        self.size = size
        self._hashes = hashes

    @classmethod
    def empty(cls) -> Frontier:
        return cls(0, [])

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """A frontier from its decomposition hashes, largest subtree first."""
        return cls(size, list(hashes))

    @classmethod
    def from_reader(cls, reader: NodeReader, size: int) -> Frontier:
        """Rebuild from stored nodes: one read per 1-bit of `size`."""
        _check_size(size)
        return cls(size, _decomposition(reader, 0, size))

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The decomposition hashes, largest (leftmost) subtree first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return every newly complete node as (level, index, hash).

        The first is always (0, size_before, leaf); then one parent per
        trailing 1-bit of size_before, lowest level first.
        """
        if len(leaf) != HASH_SIZE:
            raise BadInput(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf)}")
        index = self.size
        self.size = index + 1
        hashes = self._hashes
        new = [(0, index, leaf)]
        h = leaf
        level = 0
        sha = _sha256
        while index & 1:
            h = sha(_NODE + hashes.pop() + h).digest()
            index >>= 1
            level += 1
            new.append((level, index, h))
        hashes.append(h)
        return new

    def extend(self, leaves: Sequence[bytes]) -> list[tuple[int, int, list[bytes]]]:
        """Add many leaf hashes; return every newly complete node, as runs
        (level, first index, hashes at first index, first + 1, ...), one run
        per level, lowest level first (the leaves themselves are level 0).

        The same nodes and the same frontier as `append` leaf by leaf, but
        each level is paired off in one pass, which is cheaper for batches."""
        if any(len(h) != HASH_SIZE for h in leaves):
            raise BadInput(f"a leaf hash is {HASH_SIZE} bytes")
        if not leaves:
            return []
        index = self.size
        self.size = index + len(leaves)
        hashes = self._hashes
        run = list(leaves)
        runs = [(0, index, list(leaves))]
        left_over: list[bytes] = []  # the new frontier's low part, lowest level first
        sha = _sha256
        while True:
            if index & 1:  # the run's first node pairs with the frontier's subtree at this level
                run = [hashes.pop(), *run]
                index -= 1
            if len(run) & 1:  # the last node waits for its right sibling: a frontier hash
                left_over.append(run[-1])
            run = [sha(_NODE + a + b).digest() for a, b in zip(run[::2], run[1::2], strict=False)]
            if not run:
                break
            index >>= 1
            runs.append((len(runs), index, run))
        hashes.extend(reversed(left_over))
        return runs

    def root(self) -> bytes:
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        h = hashes[-1]
        sha = _sha256
        for left in reversed(hashes[:-1]):
            h = sha(_NODE + left + h).digest()
        return h

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self._hashes))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self.size == other.size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Frontier(size={self.size}, root={self.root().hex()[:16]}…)"


def _check_size(size: object) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < MAX_SIZE:
        raise MalformedProof(f"tree size {size!r} is not in 0..2**64-1")


def _check_hash(h: object, what: str) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
        size = len(h) if isinstance(h, bytes | bytearray) else type(h).__name__
        raise MalformedProof(f"{what} must be a {HASH_SIZE}-byte hash, got {size}")


def _decomposition(reader: NodeReader, start: int, end: int) -> list[bytes]:
    """Stored complete subtrees tiling [start, end), largest first."""
    get = reader.get_node
    parts = []
    width = end - start
    pos = start
    for level in range(width.bit_length() - 1, -1, -1):
        if (width >> level) & 1:
            parts.append(get(level, pos >> level))
            pos += 1 << level
    return parts


def subtree_hash(reader: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that is a subtree in the RFC's recursion.

    Such a range starts at a multiple of the smallest power of two >= its
    width (every complete subtree, and every right-edge subtree [start, size)
    of a tree of `size` leaves). Reads one stored node per 1-bit of the width.
    """
    _check_size(start)
    _check_size(end)
    if end < start:
        raise MalformedProof(f"range [{start}, {end}) is backwards")
    width = end - start
    if width == 0:
        return EMPTY_ROOT
    if start & ((1 << (width - 1).bit_length()) - 1):
        raise MalformedProof(f"[{start}, {end}) is not a subtree of any RFC 9162 tree")
    parts = _decomposition(reader, start, end)
    h = parts.pop()
    sha = _sha256
    while parts:
        h = sha(_NODE + parts.pop() + h).digest()
    return h


def root_at(reader: NodeReader, size: int) -> bytes:
    """The root of the first `size` leaves, from at most log2(size)+1 reads."""
    return subtree_hash(reader, 0, size)


def _path(reader: NodeReader, base: int, index: int, size: int) -> list[bytes]:
    """Siblings, bottom-up, of node (base, index) on its way to the root of `size` leaves.

    Below level base+inner the node and the tree's last leaf sit in different
    halves, so every sibling exists (only the one at the top may be an
    incomplete right-edge subtree); above it the node is on the right edge and
    has a left sibling exactly where its index has a 1-bit.
    """
    get = reader.get_node
    inner = (index ^ ((size - 1) >> base)).bit_length()
    out = []
    for i in range(inner):
        level = base + i
        sibling = (index >> i) ^ 1
        if (sibling + 1) << level <= size:
            out.append(get(level, sibling))
        else:
            out.append(subtree_hash(reader, sibling << level, size))
    j = index >> inner
    level = base + inner
    while j:
        if j & 1:
            out.append(get(level, j ^ 1))
        j >>= 1
        level += 1
    return out


def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(index, D[0:size]); reads at most 2*log2(size)+1 nodes."""
    _check_size(size)
    _check_size(index)
    if index >= size:
        raise MalformedProof(f"leaf index {index} is not below tree size {size}")
    return _path(reader, 0, index, size)


def consistency_proof(reader: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(old_size, D[0:new_size]); empty when the sizes are equal.

    The proof is the rightmost complete subtree of the old tree (omitted when
    that subtree is the whole old tree) followed by its path in the new tree.
    """
    _check_size(old_size)
    _check_size(new_size)
    if not 1 <= old_size <= new_size:
        raise MalformedProof(f"no consistency proof from size {old_size} to {new_size}")
    if old_size == new_size:
        return []
    shift = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> shift
    proof = [] if index == 0 else [reader.get_node(shift, index)]
    proof.extend(_path(reader, shift, index, new_size))
    return proof


def _path_shape(index: int, last: int) -> tuple[int, int]:
    """(inner, border): how many path siblings lie below / above the right edge."""
    inner = (index ^ last).bit_length()
    return inner, (index >> inner).bit_count()


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` gives for leaf hash `leaf` at `index` in a tree of `size`.

    Raises MalformedProof unless index < size, every hash is 32 bytes and the
    proof has exactly the length RFC 9162 gives for (index, size).
    """
    _check_size(size)
    _check_size(index)
    if index >= size:
        raise MalformedProof(f"leaf index {index} is not below tree size {size}")
    _check_hash(leaf, "leaf hash")
    inner, border = _path_shape(index, size - 1)
    if len(proof) != inner + border:
        raise MalformedProof(
            f"inclusion proof for leaf {index} of {size} has {inner + border} hashes, "
            f"not {len(proof)}"
        )
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    sha = _sha256
    h = bytes(leaf)
    for i in range(inner):
        if (index >> i) & 1:
            h = sha(_NODE + proof[i] + h).digest()
        else:
            h = sha(_NODE + h + proof[i]).digest()
    for i in range(inner, inner + border):
        h = sha(_NODE + proof[i] + h).digest()
    return h


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2, strict: MalformedProof for any ill-formed input,
    ProofMismatch if the proof does not lead to `root`."""
    _check_hash(root, "root")
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise ProofMismatch(f"inclusion proof for leaf {index} of {size} does not reach the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2, strict.

    MalformedProof: sizes out of order or out of range, a hash that is not 32
    bytes, or a proof whose length differs from what RFC 9162 gives for
    (old_size, new_size) -- which is 0 when old_size is 0 or equals new_size.
    ProofMismatch: equal sizes with different roots, an old_root other than
    EMPTY_ROOT for size 0, or a proof that does not lead to both roots.
    """
    _check_size(old_size)
    _check_size(new_size)
    if old_size > new_size:
        raise MalformedProof(f"old size {old_size} is above new size {new_size}")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise MalformedProof(
                f"consistency from size {old_size} to {new_size} takes an empty proof, "
                f"not {len(proof)} hashes"
            )
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofMismatch("the empty tree's root is SHA-256 of nothing")
        if old_size == new_size and old_root != new_root:
            raise ProofMismatch(f"two different roots for tree size {new_size}")
        return

    shift = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> shift
    inner, border = _path_shape(index, (new_size - 1) >> shift)
    # A power-of-two old tree is itself the starting node, so it is not sent.
    seeded = index == 0
    expected = inner + border + (0 if seeded else 1)
    if len(proof) != expected:
        raise MalformedProof(
            f"consistency proof from {old_size} to {new_size} has {expected} hashes, "
            f"not {len(proof)}"
        )
    if seeded:
        old_h = new_h = bytes(old_root)
        rest = 0
    else:
        old_h = new_h = bytes(proof[0])
        rest = 1
    sha = _sha256
    for i in range(inner):
        p = proof[rest + i]
        if (index >> i) & 1:
            old_h = sha(_NODE + p + old_h).digest()
            new_h = sha(_NODE + p + new_h).digest()
        else:
            # A right sibling holds only new leaves: it extends the new root alone.
            new_h = sha(_NODE + new_h + p).digest()
    for p in proof[rest + inner :]:
        old_h = sha(_NODE + p + old_h).digest()
        new_h = sha(_NODE + p + new_h).digest()
    if old_h != old_root:
        raise ProofMismatch(f"consistency proof does not reach the root of size {old_size}")
    if new_h != new_root:
        raise ProofMismatch(f"consistency proof does not reach the root of size {new_size}")


class MemoryNodes:
    """A NodeReader in memory, filled by appending leaf hashes through a Frontier.

    Used by tests, benchmarks and the auditor (which rebuilds a log from its
    entries and compares roots and proofs).
    """

    __slots__ = ("_frontier", "_levels")

    def __init__(self) -> None:
        self._frontier = Frontier.empty()
        # _levels[level][index]: appends only ever extend the end of each level.
        self._levels: list[list[bytes]] = []

    @property
    def size(self) -> int:
        return self._frontier.size

    @property
    def frontier(self) -> Frontier:
        """A copy of the right edge (mutating it does not touch the store)."""
        return self._frontier.copy()

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        levels = self._levels
        for level, _index, h in self._frontier.append(leaf):
            if level == len(levels):
                levels.append([h])
            else:
                levels[level].append(h)

    def get_node(self, level: int, index: int) -> bytes:
        try:
            if index < 0 or level < 0:
                raise IndexError
            return self._levels[level][index]
        except (IndexError, TypeError) as e:
            raise NotFound(f"no complete node at level {level}, index {index}") from e

    def root(self) -> bytes:
        return self._frontier.root()
