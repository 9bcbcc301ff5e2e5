"""The RFC 9162 Merkle tree (the Certificate Transparency tree) over ledger entries.

Hashing (RFC 9162 §2.1.1)::

    leaf hash  = SHA-256(0x00 || leaf bytes)
    node hash  = SHA-256(0x01 || left || right)
    empty tree = SHA-256("")

Storage model: a ledger keeps the hash of every *perfect* subtree, addressed by
``(level, index)``: level 0 holds the leaf hashes, and ``(level, index)`` covers leaves
``[index * 2**level, (index + 1) * 2**level)``. A perfect subtree never changes once its
last leaf is appended, so those hashes are write-once. Every subtree RFC 9162 needs for
a root or a proof of a tree of any size is either perfect or splits at its largest
power of two into a perfect left part and a smaller right part, so any root or proof
needs O(log n) stored hashes. Functions here take a :class:`NodeReader` and stay pure:
the ledger decides how nodes are fetched (in one query, see :func:`nodes_needed`).

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), and is
pinned by the transparency-dev test vectors in ``shared/vectors/rfc9162``. The ledger is
the core of this project, which is why the tree is written here rather than taken from a
library: no maintained Python package implements both proof directions with these exact
edge-case rules (empty proofs, size1 = size2, size1 = 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from chain_of_custody.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeReader = Callable[[int, int], bytes]
"""``reader(level, index)``: the stored hash of a perfect subtree."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_perfect(start: int, end: int) -> tuple[bool, int]:
    """Whether ``[start, end)`` is one stored perfect subtree, and its level."""
    width = end - start
    if width & (width - 1) or start % width:
        return False, 0
    return True, width.bit_length() - 1


def subtree_hash(start: int, end: int, reader: NodeReader) -> bytes:
    """MTH(D[start:end]) for a subtree of the RFC 9162 tree (``start < end``)."""
    perfect, level = _is_perfect(start, end)
    if perfect:
        return reader(level, start >> level)
    split = start + _largest_power_of_two_below(end - start)
    return node_hash(subtree_hash(start, split, reader), subtree_hash(split, end, reader))


def root_hash(size: int, reader: NodeReader) -> bytes:
    """The root of the tree of the first ``size`` leaves."""
    if size < 0:
        raise ValueError("tree size must be >= 0")
    return EMPTY_ROOT if size == 0 else subtree_hash(0, size, reader)


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf end first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        split = start + _largest_power_of_two_below(end - start)
        if index < split:
            proof.append(subtree_hash(split, end, reader))
            end = split
        else:
            proof.append(subtree_hash(start, split, reader))
            start = split
    proof.reverse()
    return proof


def consistency_proof(size1: int, size2: int, reader: NodeReader) -> list[bytes]:
    """PROOF(size1, D[0:size2]) of RFC 9162 §2.1.4.1 (``0 < size1 <= size2``)."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    proof: list[bytes] = []
    start, end, complete = 0, size2, True
    # SUBPROOF(m, D[start:end], b), unrolled; m counts from ``start``.
    m = size1
    while True:
        if m == end - start:
            if not complete:
                proof.append(subtree_hash(start, end, reader))
            break
        split = start + _largest_power_of_two_below(end - start)
        k = split - start
        if m <= k:
            proof.append(subtree_hash(split, end, reader))
            end = split
        else:
            proof.append(subtree_hash(start, split, reader))
            start, m, complete = split, m - k, False
    proof.reverse()
    return proof


def nodes_needed(compute: Callable[[NodeReader], object]) -> set[tuple[int, int]]:
    """The ``(level, index)`` pairs that ``compute`` reads, found by a dry run.

    Lets a database-backed ledger fetch every node a root or proof needs in one query
    and then run the computation again on what it fetched.
    """
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return EMPTY_ROOT

    compute(record)
    return wanted


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -----------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not a {HASH_SIZE}-byte SHA-256 hash")


def root_from_inclusion_proof(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` leads to from leaf hash ``leaf`` at ``index``
    (RFC 9162 §2.1.3.2, steps 1 to 4).

    Raises :class:`ProofError` when the index is outside the tree, the proof is too
    long or too short for this index and size, or a hash is not 32 bytes.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn = index, size - 1
    result = leaf
    for position, sibling in enumerate(proof):
        _check_hash(sibling, f"inclusion proof hash {position}")
        if sn == 0:
            raise ProofError(
                f"inclusion proof of leaf {index} in a tree of size {size} is too long"
            )
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(
            f"inclusion proof of leaf {index} in a tree of size {size} is too short"
        )
    return result


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf ``index`` is in ``root``."""
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if computed != root:
        raise ProofError(
            f"inclusion proof of leaf {index} leads to root {computed.hex()}, "
            f"not {root.hex()}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise :class:`ProofError` unless the tree of ``size2`` with ``root2`` extends the
    tree of ``size1`` with ``root1`` (RFC 9162 §2.1.4.2).

    Refused besides a wrong proof: a proof from the empty tree (it proves nothing, and
    every tree "extends" it), an empty proof between different sizes, and a non-empty
    one between equal sizes.
    """
    if size1 < 1:
        raise ProofError(f"no consistency proof starts from a tree of size {size1}")
    if size2 < size1:
        raise ProofError(f"tree size {size2} is smaller than the earlier size {size1}")
    if size1 == size2:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if root1 != root2:
            raise ProofError(f"two trees of size {size1} have different roots")
        return
    if not proof:
        raise ProofError(f"empty consistency proof from size {size1} to {size2}")
    _check_hash(root1, "first root")
    _check_hash(root2, "second root")
    for position, item in enumerate(proof):
        _check_hash(item, f"consistency proof hash {position}")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)  # the old tree is one perfect subtree of the new one
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old = new = path[0]
    for sibling in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from size {size1} to {size2} is too long")
        if fn & 1 or fn == sn:
            old, new = node_hash(sibling, old), node_hash(sibling, new)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            new = node_hash(new, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"consistency proof from size {size1} to {size2} is too short")
    if old != root1:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}")
    if new != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}")


class TreeBuilder:
    """Build the tree leaf by leaf in O(log n) memory (the right edge only).

    ``add`` returns the perfect subtrees completed by that leaf, lowest level first,
    as ``(level, index, hash)``: exactly what a ledger stores, and what a verifier
    compares with the stored nodes.
    """

    def __init__(self) -> None:
        self._edge: list[bytes] = []  # hashes of the perfect subtrees on the right edge
        self.size = 0

    @classmethod
    def resume(cls, size: int, reader: NodeReader) -> TreeBuilder:
        """A builder that continues the tree of ``size`` leaves: only the perfect subtrees
        on its right edge (one per 1-bit of ``size``) are read through ``reader``."""
        builder = cls()
        start = 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                builder._edge.append(reader(level, start >> level))
                start += 1 << level
        builder.size = size
        return builder

    def add(self, leaf_hash_value: bytes) -> list[tuple[int, int, bytes]]:
        index = self.size
        completed = [(0, index, leaf_hash_value)]
        current = leaf_hash_value
        level = 0
        while (index >> level) & 1:
            current = node_hash(self._edge.pop(), current)
            level += 1
            completed.append((level, index >> level, current))
        self._edge.append(current)
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self._edge:
            return EMPTY_ROOT
        result = self._edge[-1]
        for left in reversed(self._edge[:-1]):
            result = node_hash(left, result)
        return result
