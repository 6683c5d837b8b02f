"""ledger.merkle: RFC 6962/9162 known answers, mutated proofs, brute-force properties."""

from __future__ import annotations

import ast
import hashlib
import math
import random
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import BadInput, MalformedProof, NotFound, ProofMismatch
from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    MemoryNodes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_from_inclusion,
    root_from_leaf_hashes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# --- Known answers: the certificate-transparency / transparency-dev test tree ---------------

LEAVES = [
    h(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

# Every complete subtree of the 8-leaf tree, by [level][index].
NODES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [
        h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
    ],
]

EMPTY = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

# ROOTS[size] for the first `size` leaves.
ROOTS = [
    EMPTY,
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# (0-based leaf index, tree size, PATH). The published vectors count leaves from 1.
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# (old size, new size, PROOF)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def vector_tree() -> MemoryNodes:
    nodes = MemoryNodes()
    for data in LEAVES:
        nodes.append(leaf_hash(data))
    return nodes


def flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


# --- Hashing and roots ----------------------------------------------------------------------


def test_empty_tree_root_is_sha256_of_nothing():
    assert EMPTY_ROOT == EMPTY == hashlib.sha256(b"").digest()
    assert Frontier.empty().root() == EMPTY
    assert MemoryNodes().root() == EMPTY
    assert root_from_leaf_hashes([]) == EMPTY
    assert root_at(MemoryNodes(), 0) == EMPTY
    assert HASH_SIZE == 32


def test_leaf_and_node_hashes_match_vectors():
    assert [leaf_hash(d) for d in LEAVES] == NODES[0]
    for level in range(1, 4):
        for i, want in enumerate(NODES[level]):
            assert node_hash(NODES[level - 1][2 * i], NODES[level - 1][2 * i + 1]) == want


def test_roots_for_sizes_0_to_8():
    frontier = Frontier.empty()
    nodes = MemoryNodes()
    hashes = [leaf_hash(d) for d in LEAVES]
    assert frontier.root() == ROOTS[0]
    for size in range(1, 9):
        frontier.append(hashes[size - 1])
        nodes.append(hashes[size - 1])
        assert frontier.size == nodes.size == size
        assert frontier.root() == nodes.root() == ROOTS[size]
        assert root_from_leaf_hashes(hashes[:size]) == ROOTS[size]
    for size in range(9):
        assert root_at(nodes, size) == ROOTS[size]


def test_append_returns_every_new_complete_node():
    frontier = Frontier.empty()
    seen = {}
    for i, data in enumerate(LEAVES):
        new = frontier.append(leaf_hash(data))
        assert new[0] == (0, i, NODES[0][i])
        for level, index, value in new:
            assert (level, index) not in seen
            seen[(level, index)] = value
    assert seen == {(lv, i): v for lv, row in enumerate(NODES) for i, v in enumerate(row)}


def test_frontier_holds_the_binary_decomposition():
    # The compact-range hashes of each prefix of the vector tree.
    n = NODES
    want = [
        [],
        [n[0][0]],
        [n[1][0]],
        [n[1][0], n[0][2]],
        [n[2][0]],
        [n[2][0], n[0][4]],
        [n[2][0], n[1][2]],
        [n[2][0], n[1][2], n[0][6]],
        [n[3][0]],
    ]
    frontier = Frontier.empty()
    nodes = vector_tree()
    assert frontier.hashes == ()
    for size in range(1, 9):
        frontier.append(NODES[0][size - 1])
        assert list(frontier.hashes) == want[size]
        assert Frontier.from_reader(nodes, size) == frontier
        assert Frontier.from_hashes(size, want[size]) == frontier


def _by_append(frontier: Frontier, leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    return {(lv, i): h for leaf in leaves for lv, i, h in frontier.append(leaf)}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300), st.lists(st.integers(0, 70), max_size=6))
def test_extend_is_append_leaf_by_leaf(start, batches):
    """Any starting size, any batch sizes: the same frontier and the same
    nodes, each level's as one run of consecutive indices."""
    a, b = Frontier.empty(), Frontier.empty()
    first = [hashlib.sha256(b"%d" % i).digest() for i in range(start)]
    _by_append(a, first)
    assert sum(len(h) for _, _, h in b.extend(first)) >= start
    n = start
    for size in batches:
        leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(n, n + size)]
        want = _by_append(a, leaves)
        runs = b.extend(leaves)
        got = {(lv, first + k): h for lv, first, hs in runs for k, h in enumerate(hs)}
        assert got == want
        assert [lv for lv, _, _ in runs] == list(range(len(runs)))
        assert sum(len(hs) for _, _, hs in runs) == len(want)
        assert b == a and b.root() == a.root()
        n += size


def test_extend_refuses_a_leaf_that_is_not_a_hash():
    frontier = Frontier.empty()
    frontier.extend([SOME_HASH])
    with pytest.raises(BadInput):
        frontier.extend([SOME_HASH, b"x" * 31])
    assert frontier.size == 1 and frontier.extend([]) == []


def test_frontier_copy_is_independent():
    a = Frontier.empty()
    a.append(NODES[0][0])
    b = a.copy()
    b.append(NODES[0][1])
    assert (a.size, a.root()) == (1, ROOTS[1])
    assert (b.size, b.root()) == (2, ROOTS[2])


def test_frontier_refuses_a_leaf_that_is_not_a_hash():
    frontier = Frontier.empty()
    for bad in (b"", b"x" * 31, b"x" * 33):
        with pytest.raises(BadInput):
            frontier.append(bad)
    assert frontier.size == 0
    with pytest.raises(BadInput):
        Frontier.from_hashes(3, [SOME_HASH])


def test_memory_nodes_not_found():
    nodes = vector_tree()
    assert nodes.get_node(3, 0) == NODES[3][0]
    for level, index in [(0, 8), (1, 4), (3, 1), (4, 0), (0, -1), (-1, 0)]:
        with pytest.raises(NotFound):
            nodes.get_node(level, index)
    with pytest.raises(NotFound):
        root_at(nodes, 9)


# --- Published proofs -----------------------------------------------------------------------


@pytest.mark.parametrize("index,size,proof", INCLUSION)
def test_inclusion_vectors(index, size, proof):
    nodes = vector_tree()
    assert inclusion_proof(nodes, index, size) == proof
    leaf = NODES[0][index]
    assert root_from_inclusion(leaf, index, size, proof) == ROOTS[size]
    verify_inclusion(leaf, index, size, proof, ROOTS[size])


@pytest.mark.parametrize("old,new,proof", CONSISTENCY)
def test_consistency_vectors(old, new, proof):
    nodes = vector_tree()
    assert consistency_proof(nodes, old, new) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


# --- Mutated proofs -------------------------------------------------------------------------

NONTRIVIAL_INCLUSION = [v for v in INCLUSION if v[2]]
NONTRIVIAL_CONSISTENCY = [v for v in CONSISTENCY if v[2]]


@pytest.mark.parametrize("index,size,proof", NONTRIVIAL_INCLUSION)
def test_inclusion_every_bit_flip_fails(index, size, proof):
    leaf, root = NODES[0][index], ROOTS[size]
    for i in range(len(proof)):
        for bit in range(8 * HASH_SIZE):
            bad = list(proof)
            bad[i] = flip(bad[i], bit)
            with pytest.raises(ProofMismatch):
                verify_inclusion(leaf, index, size, bad, root)
    for bit in range(0, 8 * HASH_SIZE, 7):
        with pytest.raises(ProofMismatch):
            verify_inclusion(flip(leaf, bit), index, size, proof, root)
        with pytest.raises(ProofMismatch):
            verify_inclusion(leaf, index, size, proof, flip(root, bit))


@pytest.mark.parametrize("index,size,proof", NONTRIVIAL_INCLUSION)
def test_inclusion_malformed_proofs(index, size, proof):
    leaf, root = NODES[0][index], ROOTS[size]
    malformed = {
        "trailing hash": proof + [SOME_HASH],
        "trailing root": proof + [root],
        "trailing empty": proof + [b""],
        "preceding hash": [SOME_HASH] + proof,
        "missing last": proof[:-1],
        "missing first": proof[1:],
        "empty": [],
        "31-byte hash": [proof[0][:31]] + proof[1:],
        "33-byte hash": [proof[0] + b"\x00"] + proof[1:],
        "33-byte last": proof[:-1] + [proof[-1] + b"\x00"],
        "str not bytes": [proof[0].hex()] + proof[1:],
    }
    for what, bad in malformed.items():
        with pytest.raises(MalformedProof):
            verify_inclusion(leaf, index, size, bad, root)
            pytest.fail(what)
    for bad_leaf in (leaf[:31], leaf + b"\x00", b"", b"WrongLeaf"):
        with pytest.raises(MalformedProof):
            verify_inclusion(bad_leaf, index, size, proof, root)
    for bad_root in (root[:31], root + b"\x00", b""):
        with pytest.raises(MalformedProof):
            verify_inclusion(leaf, index, size, proof, bad_root)
    for bad_index, bad_size in [(size, size), (size + 3, size), (-1, size), (0, 0), (index, -1)]:
        with pytest.raises(MalformedProof):
            verify_inclusion(leaf, bad_index, bad_size, proof, root)


# Wrong index or size, each claimed with the true root of the claimed size (as a signed
# checkpoint would pair them): ProofMismatch when the RFC proof length is unchanged, else
# MalformedProof. Sizes above 8 have no published root; their proofs have the wrong length.
# (With the root of the *true* size, a same-shape size change is undetectable by any RFC
# verifier, since the size only fixes the proof's shape: the root must come with its size.)
WRONG_INCLUSION_CLAIMS = [
    # (vector index, vector size, claimed index, claimed size, error)
    (5, 8, 4, 8, ProofMismatch),
    (5, 8, 7, 8, ProofMismatch),
    (5, 8, 1, 8, ProofMismatch),
    (5, 8, 5, 7, ProofMismatch),
    (5, 8, 5, 6, MalformedProof),
    (5, 8, 5, 16, MalformedProof),
    (5, 8, 5, 4, MalformedProof),
    (0, 8, 1, 8, ProofMismatch),
    (0, 8, 0, 5, ProofMismatch),
    (0, 8, 0, 4, MalformedProof),
    (1, 5, 0, 5, ProofMismatch),
    (1, 5, 2, 5, ProofMismatch),
    (1, 5, 1, 10, MalformedProof),
    (2, 3, 1, 3, MalformedProof),
    (2, 3, 2, 4, MalformedProof),
    (2, 3, 1, 2, ProofMismatch),
]


@pytest.mark.parametrize("index,size,claimed_index,claimed_size,error", WRONG_INCLUSION_CLAIMS)
def test_inclusion_wrong_index_or_size(index, size, claimed_index, claimed_size, error):
    proof = dict(((i, s), p) for i, s, p in INCLUSION)[(index, size)]
    root = ROOTS[claimed_size] if claimed_size <= 8 else ROOTS[size]
    with pytest.raises(error):
        verify_inclusion(NODES[0][index], claimed_index, claimed_size, proof, root)


@pytest.mark.parametrize("index,size,proof", NONTRIVIAL_INCLUSION)
def test_inclusion_reordered_proof_fails(index, size, proof):
    leaf, root = NODES[0][index], ROOTS[size]
    if len(proof) > 1:
        with pytest.raises(ProofMismatch):
            verify_inclusion(leaf, index, size, proof[::-1], root)
        swapped = [proof[1], proof[0]] + proof[2:]
        with pytest.raises(ProofMismatch):
            verify_inclusion(leaf, index, size, swapped, root)
        with pytest.raises(ProofMismatch):
            verify_inclusion(leaf, index, size, [proof[0], SOME_HASH] + proof[2:], root)


@pytest.mark.parametrize("old,new,proof", NONTRIVIAL_CONSISTENCY)
def test_consistency_every_bit_flip_fails(old, new, proof):
    r1, r2 = ROOTS[old], ROOTS[new]
    for i in range(len(proof)):
        for bit in range(8 * HASH_SIZE):
            bad = list(proof)
            bad[i] = flip(bad[i], bit)
            with pytest.raises(ProofMismatch):
                verify_consistency(old, new, r1, r2, bad)
    for bit in range(0, 8 * HASH_SIZE, 7):
        with pytest.raises(ProofMismatch):
            verify_consistency(old, new, flip(r1, bit), r2, proof)
        with pytest.raises(ProofMismatch):
            verify_consistency(old, new, r1, flip(r2, bit), proof)


@pytest.mark.parametrize("old,new,proof", NONTRIVIAL_CONSISTENCY)
def test_consistency_malformed_proofs(old, new, proof):
    r1, r2 = ROOTS[old], ROOTS[new]
    malformed = {
        "trailing hash": proof + [SOME_HASH],
        "trailing root1": proof + [r1],
        "trailing root2": proof + [r2],
        "trailing empty": proof + [b""],
        "preceding root1": [r1] + proof,
        "preceding proof[0]": [proof[0]] + proof,
        "missing last": proof[:-1],
        "missing first": proof[1:],
        "empty": [],
        "31-byte hash": [proof[0][:31]] + proof[1:],
        "33-byte hash": [proof[0] + b"\x00"] + proof[1:],
        "33-byte last": proof[:-1] + [proof[-1] + b"\x00"],
    }
    for what, bad in malformed.items():
        with pytest.raises(MalformedProof):
            verify_consistency(old, new, r1, r2, bad)
            pytest.fail(what)
    for bad1, bad2 in [(r1[:31], r2), (r1, r2 + b"\x00"), (b"WrongRoot", r2), (r1, b"")]:
        with pytest.raises(MalformedProof):
            verify_consistency(old, new, bad1, bad2, proof)
    for bad_old, bad_new in [(new + 1, new), (old, old - 1), (-1, new), (old, 1 << 64)]:
        with pytest.raises(MalformedProof):
            verify_consistency(bad_old, bad_new, r1, r2, proof)


WRONG_CONSISTENCY_CLAIMS = [
    # (vector old, vector new, claimed old, claimed new, error)
    (6, 8, 5, 8, MalformedProof),
    (6, 8, 7, 8, MalformedProof),
    (6, 8, 6, 7, ProofMismatch),
    (6, 8, 6, 16, MalformedProof),
    (6, 8, 6, 4, MalformedProof),
    (6, 8, 4, 8, MalformedProof),
    (6, 8, 2, 8, MalformedProof),
    (1, 8, 1, 5, ProofMismatch),
    (1, 8, 1, 7, ProofMismatch),
    (1, 8, 2, 8, MalformedProof),
    (1, 8, 1, 16, MalformedProof),
    (2, 5, 2, 6, ProofMismatch),
    (2, 5, 3, 5, MalformedProof),
    (6, 7, 6, 8, ProofMismatch),
    (6, 7, 2, 7, MalformedProof),
]


@pytest.mark.parametrize("old,new,claimed_old,claimed_new,error", WRONG_CONSISTENCY_CLAIMS)
def test_consistency_wrong_sizes(old, new, claimed_old, claimed_new, error):
    proof = dict(((o, n), p) for o, n, p in CONSISTENCY)[(old, new)]
    r1 = ROOTS[claimed_old] if claimed_old <= 8 else ROOTS[old]
    r2 = ROOTS[claimed_new] if claimed_new <= 8 else ROOTS[new]
    with pytest.raises(error):
        verify_consistency(claimed_old, claimed_new, r1, r2, proof)


@pytest.mark.parametrize("old,new,proof", NONTRIVIAL_CONSISTENCY)
def test_consistency_reordered_or_swapped_fails(old, new, proof):
    r1, r2 = ROOTS[old], ROOTS[new]
    with pytest.raises(ProofMismatch):
        verify_consistency(old, new, r2, r1, proof)
    if len(proof) > 1:
        with pytest.raises(ProofMismatch):
            verify_consistency(old, new, r1, r2, [proof[1], proof[0]] + proof[2:])
        with pytest.raises(ProofMismatch):
            verify_consistency(old, new, r1, r2, proof[::-1])


def test_consistency_trivial_cases():
    r = ROOTS
    verify_consistency(0, 0, EMPTY, EMPTY, [])
    verify_consistency(0, 5, EMPTY, r[5], [])
    verify_consistency(1, 1, r[1], r[1], [])
    verify_consistency(8, 8, r[8], r[8], [])
    with pytest.raises(ProofMismatch):
        verify_consistency(1, 1, r[1], r[2], [])
    with pytest.raises(ProofMismatch):
        verify_consistency(0, 0, EMPTY, r[1], [])
    with pytest.raises(ProofMismatch):  # an empty tree has exactly one root
        verify_consistency(0, 3, r[1], r[3], [])
    for old, new, r1, r2 in [(0, 0, EMPTY, EMPTY), (0, 1, EMPTY, r[1]), (1, 1, r[1], r[1])]:
        with pytest.raises(MalformedProof):
            verify_consistency(old, new, r1, r2, [EMPTY])
    for old, new in [(1, 0), (2, 1), (8, 3)]:
        with pytest.raises(MalformedProof):
            verify_consistency(old, new, r[1], r[1], [])
    with pytest.raises(MalformedProof):  # old < new needs a proof
        verify_consistency(1, 2, r[1], r[2], [])


def test_proof_generation_refuses_bad_ranges():
    nodes = vector_tree()
    for index, size in [(0, 0), (8, 8), (9, 8), (-1, 8), (0, -1)]:
        with pytest.raises(MalformedProof):
            inclusion_proof(nodes, index, size)
    for old, new in [(0, 0), (0, 5), (6, 5), (-1, 3)]:
        with pytest.raises(MalformedProof):
            consistency_proof(nodes, old, new)
    assert consistency_proof(nodes, 8, 8) == []
    with pytest.raises(NotFound):  # beyond what is stored
        inclusion_proof(nodes, 0, 9)


# --- Brute force: the RFC's recursive definitions over a fixed leaf list ------------------

N_MAX = 300
BRUTE_LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(N_MAX)]


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


@cache
def ref_mth(start: int, end: int) -> bytes:
    n = end - start
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return BRUTE_LEAVES[start]
    k = _split(n)
    return node_hash(ref_mth(start, start + k), ref_mth(start + k, end))


def ref_path(m: int, start: int, end: int) -> list[bytes]:
    n = end - start
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return ref_path(m, start, start + k) + [ref_mth(start + k, end)]
    return ref_path(m - k, start + k, end) + [ref_mth(start, start + k)]


def ref_subproof(m: int, start: int, end: int, b: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if b else [ref_mth(start, end)]
    k = _split(n)
    if m <= k:
        return ref_subproof(m, start, start + k, b) + [ref_mth(start + k, end)]
    return ref_subproof(m - k, start + k, end, False) + [ref_mth(start, start + k)]


def rfc_verify_inclusion(index: int, size: int, leaf: bytes, path, root: bytes) -> bool:
    """RFC 9162 2.1.3.2 step by step, as an independent check of our verifier."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def rfc_verify_consistency(m: int, n: int, first: bytes, second: bytes, path) -> bool:
    """RFC 9162 2.1.4.2 step by step, for 0 < m < n."""
    if not path:
        return False
    if m & (m - 1) == 0:
        path = [first] + list(path)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first and sr == second and sn == 0


@pytest.fixture(scope="module")
def brute_nodes() -> MemoryNodes:
    nodes = MemoryNodes()
    for lh in BRUTE_LEAVES:
        nodes.append(lh)
    return nodes


def test_roots_and_frontiers_for_every_size(brute_nodes):
    frontier = Frontier.empty()
    for size in range(N_MAX + 1):
        want = ref_mth(0, size)
        assert frontier.root() == want
        assert root_at(brute_nodes, size) == want
        assert Frontier.from_reader(brute_nodes, size) == frontier
        if size < N_MAX:
            frontier.append(BRUTE_LEAVES[size])
    assert root_from_leaf_hashes(BRUTE_LEAVES) == ref_mth(0, N_MAX)
    assert brute_nodes.root() == ref_mth(0, N_MAX)


def test_subtree_hash_every_valid_range(brute_nodes):
    for start in range(130):
        for end in range(start, 260):
            width = end - start
            aligned = width == 0 or start % (1 << (width - 1).bit_length()) == 0
            if aligned:
                assert subtree_hash(brute_nodes, start, end) == ref_mth(start, end), (start, end)
            else:
                with pytest.raises(MalformedProof):
                    subtree_hash(brute_nodes, start, end)
    with pytest.raises(MalformedProof):
        subtree_hash(brute_nodes, 5, 4)


def test_inclusion_every_index_every_size(brute_nodes):
    for size in range(1, N_MAX + 1):
        root = ref_mth(0, size)
        for index in range(size):
            proof = inclusion_proof(brute_nodes, index, size)
            assert proof == ref_path(index, 0, size), (index, size)
            leaf = BRUTE_LEAVES[index]
            verify_inclusion(leaf, index, size, proof, root)
            assert rfc_verify_inclusion(index, size, leaf, proof, root)


def test_consistency_every_old_size_every_size(brute_nodes):
    for new in range(1, N_MAX + 1):
        new_root = ref_mth(0, new)
        for old in range(1, new + 1):
            proof = consistency_proof(brute_nodes, old, new)
            assert proof == ref_subproof(old, 0, new, True), (old, new)
            old_root = ref_mth(0, old)
            verify_consistency(old, new, old_root, new_root, proof)
            if old < new:
                assert rfc_verify_consistency(old, new, old_root, new_root, proof)


# Random mutations over every shape of tree up to N_MAX: none may verify. A claimed size
# always comes with the true root of that size, as a signed checkpoint pairs them.
MUTATIONS = ["flip", "append", "drop", "swap", "short", "long", "index", "size", "prepend"]


def other_size(size: int, delta: int) -> int:
    """A size in 1..N_MAX different from `size` (delta < N_MAX)."""
    return (size + delta - 1) % N_MAX + 1


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, N_MAX),
    pick=st.integers(0, N_MAX - 1),
    kind=st.sampled_from(MUTATIONS),
    where=st.integers(0, 63),
    bit=st.integers(0, 255),
    delta=st.integers(1, 40),
)
def test_mutated_inclusion_never_verifies(brute_nodes, size, pick, kind, where, bit, delta):
    index = pick % size
    proof = inclusion_proof(brute_nodes, index, size)
    leaf = BRUTE_LEAVES[index]
    i = where % len(proof) if proof else 0
    claimed_index, claimed_size = index, size
    if kind == "flip" and proof:
        proof[i] = flip(proof[i], bit)
    elif kind == "flip":
        leaf = flip(leaf, bit)
    elif kind == "append":
        proof.append(proof[i] if proof else ref_mth(0, size))
    elif kind == "prepend":
        proof.insert(0, ref_mth(0, size))
    elif kind == "drop" and proof:
        del proof[i]
    elif kind == "swap" and len(proof) > 1 and proof[i] != proof[(i + 1) % len(proof)]:
        j = (i + 1) % len(proof)
        proof[i], proof[j] = proof[j], proof[i]
    elif kind == "short" and proof:
        proof[i] = proof[i][:31]
    elif kind == "long" and proof:
        proof[i] = proof[i] + b"\x00"
    elif kind in ("size", "drop"):
        claimed_size = other_size(size, delta)
    else:
        claimed_index = (index + delta) % (size + 1)
        if claimed_index == index:
            claimed_index = size
    with pytest.raises((MalformedProof, ProofMismatch)):
        verify_inclusion(leaf, claimed_index, claimed_size, proof, ref_mth(0, claimed_size))


@settings(max_examples=300, deadline=None)
@given(
    new=st.integers(2, N_MAX),
    pick=st.integers(1, N_MAX),
    kind=st.sampled_from(MUTATIONS),
    where=st.integers(0, 63),
    bit=st.integers(0, 255),
    delta=st.integers(1, 40),
)
def test_mutated_consistency_never_verifies(brute_nodes, new, pick, kind, where, bit, delta):
    old = 1 + pick % (new - 1)
    proof = consistency_proof(brute_nodes, old, new)
    i = where % len(proof)
    claimed_old, claimed_new = old, new
    old_root = ref_mth(0, old)
    if kind == "flip":
        proof[i] = flip(proof[i], bit)
    elif kind == "append":
        proof.append(proof[i])
    elif kind == "prepend":
        proof.insert(0, old_root)
    elif kind == "drop":
        del proof[i]
    elif kind == "swap" and len(proof) > 1 and proof[i] != proof[(i + 1) % len(proof)]:
        j = (i + 1) % len(proof)
        proof[i], proof[j] = proof[j], proof[i]
    elif kind == "short":
        proof[i] = proof[i][:31]
    elif kind == "long":
        proof[i] = proof[i] + b"\x00"
    elif kind == "size":
        claimed_new = other_size(new, delta)
    else:
        claimed_old = other_size(old, delta)
    with pytest.raises((MalformedProof, ProofMismatch)):
        verify_consistency(
            claimed_old, claimed_new, ref_mth(0, claimed_old), ref_mth(0, claimed_new), proof
        )


# --- O(log n) reads -------------------------------------------------------------------------


class CountingReader:
    def __init__(self, inner: MemoryNodes) -> None:
        self.inner = inner
        self.reads = 0

    def get_node(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.inner.get_node(level, index)


@pytest.fixture(scope="module")
def big_nodes() -> MemoryNodes:
    nodes = MemoryNodes()
    for i in range(100_000):
        nodes.append(leaf_hash(i.to_bytes(4, "big")))
    return nodes


def test_proofs_read_o_log_n_nodes(big_nodes):
    n = big_nodes.size
    limit = 4 * math.log2(n)
    rng = random.Random(9162)
    reader = CountingReader(big_nodes)
    root = big_nodes.root()

    assert root_at(reader, n) == root
    assert reader.reads <= n.bit_length()

    sizes = [n, n - 1, 65_536, 65_537, 99_999, 77_777]
    for size in sizes:
        size_root = root_at(big_nodes, size)
        indexes = [0, 1, size // 2, size - 2, size - 1] + [rng.randrange(size) for _ in range(50)]
        for index in indexes:
            reader.reads = 0
            proof = inclusion_proof(reader, index, size)
            assert reader.reads <= limit, (index, size, reader.reads)
            verify_inclusion(big_nodes.get_node(0, index), index, size, proof, size_root)

        olds = [1, 2, 3, size // 2, size - 1, size] + [rng.randrange(1, size) for _ in range(50)]
        for old in olds:
            reader.reads = 0
            proof = consistency_proof(reader, old, size)
            assert reader.reads <= limit, (old, size, reader.reads)
            verify_consistency(old, size, root_at(big_nodes, old), size_root, proof)

        reader.reads = 0
        assert Frontier.from_reader(reader, size).root() == size_root
        assert reader.reads == size.bit_count()


# --- Cross-check with an independent library ------------------------------------------------


def test_pymerkle_agrees():
    """pymerkle 7: InmemoryTree(algorithm='sha256') with its defaults is RFC 9162.

    Its defaults keep the 0x00/0x01 prefixes (disable_security=False), hash the
    entry bytes as given, return SHA-256("") for the empty tree and split at the
    largest power of two below n; its inclusion proof path is [leaf hash] + PATH
    with 1-based indexes.
    """
    pymerkle = pytest.importorskip("pymerkle")
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    nodes = MemoryNodes()
    assert tree.get_root() == EMPTY
    for i in range(300):
        data = LEAVES[i] if i < len(LEAVES) else i.to_bytes(4, "big") * 3
        tree.append_entry(data)
        nodes.append(leaf_hash(data))
        assert tree.get_root() == nodes.root(), i + 1
    for size in [1, 2, 3, 7, 8, 9, 100, 255, 256, 257, 300]:
        assert tree.get_root(size) == root_at(nodes, size)
        for index in {0, 1 % size, size // 2, size - 1}:
            theirs = tree.prove_inclusion(index + 1, size)
            assert theirs.path == [nodes.get_node(0, index)] + inclusion_proof(nodes, index, size)


# --- Module hygiene -------------------------------------------------------------------------


def test_merkle_imports_only_stdlib_and_ledger_errors():
    import ledger.merkle as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"__future__", "hashlib", "collections.abc", "typing", "ledger.errors"}
