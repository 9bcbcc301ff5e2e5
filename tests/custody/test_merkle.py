"""The RFC 9162 tree: every shared vector, and proofs we generate against roots we build."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from chain_of_custody import merkle
from chain_of_custody.errors import ProofError

# A verbatim copy of the project's shared RFC 9162 vectors (see their README).
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc9162"


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(items: list[str] | None) -> list[bytes]:
    return [_b64(item) for item in items or []]


def _cases(kind: str) -> list[Path]:
    found = sorted((VECTORS / kind).glob("*/*.json"))
    assert found, f"no {kind} vectors under {VECTORS}"
    return found


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


TREE = json.loads((VECTORS / "tree.json").read_text())
LEAVES = [bytes.fromhex(h) for h in TREE["leaf_inputs_hex"]]
ROOTS = [bytes.fromhex(h) for h in TREE["root_hash_hex_by_size"]]


def _reader(size: int) -> merkle.NodeReader:
    builder = merkle.TreeBuilder()
    nodes: dict[tuple[int, int], bytes] = {}
    for leaf in LEAVES[:size]:
        for level, index, value in builder.add(merkle.leaf_hash(leaf)):
            nodes[level, index] = value
    return lambda level, index: nodes[level, index]


@pytest.mark.parametrize("path", _cases("inclusion"), ids=_id)
def test_inclusion_vectors(path: Path) -> None:
    """Happy paths verify; every corrupted variant raises ProofError."""
    case = json.loads(path.read_text())
    args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], _proof(case["proof"]),
            _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=_id)
def test_consistency_vectors(path: Path) -> None:
    """Happy paths verify; every corrupted variant raises ProofError."""
    case = json.loads(path.read_text())
    args = (case["size1"], case["size2"], _proof(case["proof"]), _b64(case["root1"]),
            _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_vector_counts_cover_both_outcomes() -> None:
    """The vector set has happy paths and corrupted variants in both proof kinds."""
    for kind in ("inclusion", "consistency"):
        wants = [json.loads(p.read_text())["wantErr"] for p in _cases(kind)]
        assert wants.count(False) >= 5
        assert wants.count(True) >= 40


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_builder_and_stored_nodes_give_the_vector_roots(size: int) -> None:
    """The incremental builder and the node-reading root agree with tree.json."""
    builder = merkle.TreeBuilder()
    for leaf in LEAVES[:size]:
        builder.add(merkle.leaf_hash(leaf))
    assert builder.root() == ROOTS[size]
    assert merkle.root_hash(size, _reader(size)) == ROOTS[size]


def test_generated_proofs_verify_for_every_leaf_and_size_pair() -> None:
    """Our inclusion and consistency proofs verify against the vector roots."""
    for size in range(1, len(LEAVES) + 1):
        reader = _reader(size)
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, reader)
            merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, proof,
                                    ROOTS[size])
        for size1 in range(1, size + 1):
            proof = merkle.consistency_proof(size1, size, reader)
            merkle.verify_consistency(size1, size, proof, ROOTS[size1], ROOTS[size])


def test_generated_proofs_match_the_vector_proofs() -> None:
    """For the vectors' trees our proofs are byte-identical to the published ones."""
    for path in _cases("inclusion"):
        case = json.loads(path.read_text())
        if case["wantErr"] or case["treeSize"] > len(LEAVES) or path.parent.name == "single-entry":
            continue
        proof = merkle.inclusion_proof(case["leafIdx"], case["treeSize"],
                                       _reader(case["treeSize"]))
        assert proof == _proof(case["proof"]), path
    for path in _cases("consistency"):
        case = json.loads(path.read_text())
        if case["wantErr"] or path.parent.name == "additional":
            continue
        proof = merkle.consistency_proof(case["size1"], case["size2"], _reader(case["size2"]))
        assert proof == _proof(case["proof"]), path


def test_a_large_tree_proves_in_logarithmic_node_reads() -> None:
    """A proof in a tree of 100,000 leaves reads O(log n) stored nodes."""
    size = 100_000
    wanted = merkle.nodes_needed(lambda r: merkle.inclusion_proof(12_345, size, r))
    assert len(wanted) <= 2 * size.bit_length()
    wanted = merkle.nodes_needed(lambda r: merkle.consistency_proof(54_321, size, r))
    assert len(wanted) <= 3 * size.bit_length()


def test_wrong_sized_hashes_and_out_of_range_indices_are_refused() -> None:
    """Malformed inputs give ProofError with the reason, never an IndexError."""
    leaf = merkle.leaf_hash(b"x")
    with pytest.raises(ProofError, match="outside a tree of size 1"):
        merkle.verify_inclusion(leaf, 1, 1, [], leaf)
    with pytest.raises(ProofError, match="not a 32-byte"):
        merkle.verify_inclusion(leaf[:31], 0, 1, [], leaf)
    with pytest.raises(ProofError, match="too short"):
        merkle.verify_inclusion(leaf, 0, 2, [], leaf)
    with pytest.raises(ProofError, match="size 0"):
        merkle.verify_consistency(0, 1, [], merkle.EMPTY_ROOT, leaf)
