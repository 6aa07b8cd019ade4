"""RFC 6962 Merkle trees against the Certificate Transparency reference vectors and hypothesis.

The vectors are transparency-dev/merkle's (``testonly/constants.go``, ``proof/verify_test.go``):
eight leaf inputs, the root of every prefix, and known inclusion and consistency proofs.
Their leaf numbers are 1-based; ours are 0-based indexes.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.store import merkle

LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
LEAF_HASHES = [merkle.leaf_hash(d) for d in LEAF_INPUTS]

# (1-based leaf, tree size, proof)
INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (1, 1, []),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def test_hashes_are_domain_separated_sha256() -> None:
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        merkle.node_hash(b"L" * 32, b"R" * 32)
        == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    )
    assert ROOTS[0] == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_root_of_every_prefix_matches_the_reference(size: int) -> None:
    assert merkle.root(LEAF_HASHES[:size]) == ROOTS[size]


def test_frontier_gives_the_reference_root_after_every_append() -> None:
    frontier = merkle.Frontier()
    assert frontier.root() == ROOTS[0]
    for size, leaf in enumerate(LEAF_HASHES, start=1):
        frontier.append(leaf)
        assert (frontier.size, frontier.root()) == (size, ROOTS[size])


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_reference_and_verify(
    leaf: int, size: int, proof: list[str]
) -> None:
    expected = [bytes.fromhex(p) for p in proof]
    assert merkle.inclusion_proof(LEAF_HASHES[:size], leaf - 1) == expected
    assert merkle.verify_inclusion(leaf - 1, size, LEAF_HASHES[leaf - 1], expected, ROOTS[size])


@pytest.mark.parametrize(("leaf", "size", "proof"), [v for v in INCLUSION if v[2]])
def test_corrupted_inclusion_proofs_are_rejected(leaf: int, size: int, proof: list[str]) -> None:
    good = [bytes.fromhex(p) for p in proof]
    index, root, hashed = leaf - 1, ROOTS[size], LEAF_HASHES[leaf - 1]
    flipped = [bytes([good[0][0] ^ 8]) + good[0][1:], *good[1:]]
    probes = [
        (index - 1, size, hashed, good, root),
        (index + 1, size, hashed, good, root),
        (index ^ 2, size, hashed, good, root),
        (index, size * 2, hashed, good, root),
        (index, size // 2, hashed, good, root),
        (index, size, merkle.leaf_hash(b"WrongLeaf"), good, root),
        (index, size, hashed, good, ROOTS[0]),
        (index, size, hashed, [*good, b""], root),
        (index, size, hashed, [*good, root], root),
        (index, size, hashed, [root, *good], root),
        (index, size, hashed, good[:-1], root),
        (index, size, hashed, flipped, root),
    ]
    for probe in probes:
        assert not merkle.verify_inclusion(*probe), probe


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_reference_and_verify(
    old: int, new: int, proof: list[str]
) -> None:
    expected = [bytes.fromhex(p) for p in proof]
    assert merkle.consistency_proof(LEAF_HASHES[:new], old) == expected
    assert merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)


@pytest.mark.parametrize(("old", "new", "proof"), [v for v in CONSISTENCY if v[2]])
def test_corrupted_consistency_proofs_are_rejected(old: int, new: int, proof: list[str]) -> None:
    good = [bytes.fromhex(p) for p in proof]
    r1, r2 = ROOTS[old], ROOTS[new]
    probes = [
        (old - 1, new, r1, r2, good),
        (old + 1, new, r1, r2, good),
        (old ^ 2, new, r1, r2, good),
        (old, new * 2, r1, r2, good),
        (old, new // 2, r1, r2, good),
        (old, new, merkle.leaf_hash(b"WrongRoot"), r2, good),
        (old, new, r1, merkle.leaf_hash(b"WrongRoot"), good),
        (old, new, r2, r1, good),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*good, r1]),
        (old, new, r1, r2, [r2, *good]),
        (old, new, r1, r2, good[:-1]),
        (old, new, r1, r2, [bytes([good[0][0] ^ 16]) + good[0][1:], *good[1:]]),
    ]
    for probe in probes:
        assert not merkle.verify_consistency(*probe), probe


def test_trivial_consistency_cases() -> None:
    assert merkle.verify_consistency(0, 0, ROOTS[0], ROOTS[0], [])
    assert merkle.verify_consistency(0, 3, ROOTS[0], ROOTS[3], [])
    assert not merkle.verify_consistency(1, 1, ROOTS[1], ROOTS[2], [])
    assert not merkle.verify_consistency(2, 1, ROOTS[2], ROOTS[1], [])
    assert not merkle.verify_consistency(1, 1, ROOTS[1], ROOTS[1], [ROOTS[0]])


def test_proofs_for_positions_outside_the_tree_are_refused() -> None:
    with pytest.raises(merkle.MerkleError, match="outside"):
        merkle.inclusion_proof(LEAF_HASHES[:3], 3)
    with pytest.raises(merkle.MerkleError, match="outside"):
        merkle.consistency_proof(LEAF_HASHES[:3], 4)
    assert not merkle.verify_inclusion(0, 0, LEAF_HASHES[0], [], ROOTS[0])


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70).map(
    lambda data: [merkle.leaf_hash(d) for d in data]
)


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_every_inclusion_proof_verifies_and_only_for_its_own_leaf(
    leaves: list[bytes], data: st.DataObject
) -> None:
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(leaves, index)
    top = merkle.root(leaves)
    assert len(proof) <= size.bit_length()
    assert merkle.verify_inclusion(index, size, leaves[index], proof, top)
    other = data.draw(st.integers(0, size - 1))
    if leaves[other] != leaves[index]:
        assert not merkle.verify_inclusion(index, size, leaves[other], proof, top)


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_every_consistency_proof_verifies_and_an_edited_prefix_does_not(
    leaves: list[bytes], data: st.DataObject
) -> None:
    new = len(leaves)
    old = data.draw(st.integers(1, new))
    proof = merkle.consistency_proof(leaves, old)
    assert merkle.verify_consistency(
        old, new, merkle.root(leaves[:old]), merkle.root(leaves), proof
    )
    edited = list(leaves)
    at = data.draw(st.integers(0, old - 1))
    edited[at] = merkle.leaf_hash(b"tampered" + leaves[at])
    if old < new:
        assert not merkle.verify_consistency(
            old, new, merkle.root(edited[:old]), merkle.root(leaves), proof
        )


@settings(max_examples=100, deadline=None)
@given(leaves=leaf_lists)
def test_frontier_root_equals_the_recursive_definition(leaves: list[bytes]) -> None:
    def mth(hashes: list[bytes]) -> bytes:
        if len(hashes) == 1:
            return hashes[0]
        k = 1 << ((len(hashes) - 1).bit_length() - 1)
        return merkle.node_hash(mth(hashes[:k]), mth(hashes[k:]))

    frontier = merkle.Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    assert frontier.root() == mth(leaves) == merkle.root(leaves)
