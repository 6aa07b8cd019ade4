"""RFC 6962 (Certificate Transparency) Merkle tree hashing, proofs and their verification.

Pure functions over 32-byte SHA-256 hashes, no I/O: the audit log (:mod:`lwm2m.store.audit`)
feeds them the leaf hashes it stores, and an auditor's tool feeds them a proof file. Using the
RFC's exact construction (rather than a home-made chain) means any CT tool can check our proofs,
and the domain separation (``0x00`` for leaves, ``0x01`` for nodes) rules out second-preimage
tricks where an interior node is passed off as a leaf.

* ``MTH({}) = SHA-256()``, ``MTH({d}) = SHA-256(0x00 || d)``,
  ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` with ``k`` the largest power of
  two smaller than ``n``.
* Inclusion proofs (``PATH``) and consistency proofs (``PROOF``) as in RFC 6962 section 2.1;
  verification follows the iterative algorithms of RFC 9162 section 2.1.3.2 and 2.1.4.2.

Functions taking ``leaves`` take the leaf *hashes* (what the log stores), not the leaf data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class MerkleError(ValueError):
    """A proof was requested for an index or size outside the tree."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one log entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a list of leaf hashes (:data:`EMPTY_ROOT` for none)."""
    if not leaves:
        return EMPTY_ROOT
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def _subtree(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    n = end - start
    if n == 1:
        return leaves[start]
    k = _split(n)
    return node_hash(_subtree(leaves, start, start + k), _subtree(leaves, start + k, end))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 ``PATH(index, D[n])``: the audit path of leaf ``index`` (0-based)."""
    if not 0 <= index < len(leaves):
        raise MerkleError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    path: list[bytes] = []
    start, end = 0, len(leaves)
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(_subtree(leaves, start + k, end))
            end = start + k
        else:
            path.append(_subtree(leaves, start, start + k))
            start = start + k
    path.reverse()  # the recursion appends the innermost sibling last; the RFC lists it first
    return path


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2); raise if it is malformed."""
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise MerkleError("a proof element is not a SHA-256 hash")
        if sn == 0:
            raise MerkleError("the proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("the proof is shorter than the tree is high")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``expected_root``."""
    if len(leaf) != HASH_SIZE:
        return False
    try:
        return root_from_inclusion(index, size, leaf, proof) == expected_root
    except MerkleError:
        return False


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 6962 ``PROOF(old_size, D[n])``: the tree of ``old_size`` is a prefix of this one."""
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise MerkleError(f"old size {old_size} is outside a tree of {n} leaves")
    if old_size in (0, n):
        return []
    return _subproof(leaves, old_size, 0, n, complete=True)


def _subproof(
    leaves: Sequence[bytes], m: int, start: int, end: int, *, complete: bool
) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if complete else [_subtree(leaves, start, end)]
    k = _split(n)
    if m <= k:
        return [
            *_subproof(leaves, m, start, start + k, complete=complete),
            _subtree(leaves, start + k, end),
        ]
    return [
        *_subproof(leaves, m - k, start + k, end, complete=False),
        _subtree(leaves, start, start + k),
    ]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows tree ``old_root`` is a prefix of ``new_root`` (RFC 9162 2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
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
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """The right edge of a growing tree: O(log n) memory, the root of any prefix on the way.

    Holds the roots of the perfect subtrees the leaves so far decompose into (one per set bit
    of the size, largest first). The RFC's tree hash of ``n`` leaves is those roots folded
    from the right -- which is how :meth:`root` computes it -- so a verifier streaming the
    whole log can check the root at every checkpoint size without holding the log in memory.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, hash) of perfect subtrees
        self.size = 0

    def append(self, leaf: bytes) -> None:
        height, node = 0, leaf
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            node = node_hash(left, node)
            height += 1
        self._stack.append((height, node))
        self.size += 1

    def copy(self) -> Frontier:
        clone = Frontier()
        clone._stack = list(self._stack)
        clone.size = self.size
        return clone

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            result = node_hash(left, result)
        return result


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "MerkleError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]
