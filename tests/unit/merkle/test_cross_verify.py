"""Second opinions from verifiers we did not write.

* sigstore-python's Rekor inclusion verifier (``sigstore._internal.merkle``), which hashes
  the entry body itself and chains the proof the Trillian way.
* scitt-cose's RFC 9162 inclusion and consistency verifiers (``scitt_cose.merkle``).

Both are imported unconditionally: if either is missing the module fails to import and
the run fails; nothing here is ever skipped.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest
import scitt_cose.merkle as scitt
from hypothesis import given, settings
from hypothesis import strategies as st
from sigstore._internal.merkle import verify_merkle_inclusion
from sigstore.errors import VerificationError

from sealtrail.merkle import CompactRange, consistency_proof, inclusion_proof, leaf_hash
from tests._vectors import json_cases

from ._oracle import RecordingReader

MAX_LEAVES = 1500


def entries(n: int) -> list[bytes]:
    return [b"entry-%d" % i for i in range(n)]


_ENTRIES = entries(MAX_LEAVES)
_LEAF_HASHES = [leaf_hash(e) for e in _ENTRIES]
# All full nodes of the largest tree, from our own batch append (the node store a log keeps).
_NODES: dict[tuple[int, int], bytes] = {}
for _run in CompactRange(0, []).append(_LEAF_HASHES)[1]:
    for _i, _h in enumerate(_run.hashes):
        _NODES[(_run.level, _run.start + _i)] = _h


def root_of(size: int) -> bytes:
    return CompactRange(0, []).append(_LEAF_HASHES[:size])[0].root()


def reader(size: int) -> RecordingReader:
    return RecordingReader(lambda level, index: _NODES[(level, index)], size)


def rekor_entry(body: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> Any:
    """The minimal object ``verify_merkle_inclusion`` reads: ``entry._inner`` with the body
    and an ``inclusion_proof`` carrying log_index, tree_size, hashes and root_hash."""
    inclusion = SimpleNamespace(log_index=index, tree_size=size, hashes=proof, root_hash=root)
    return SimpleNamespace(
        _inner=SimpleNamespace(canonicalized_body=body, inclusion_proof=inclusion)
    )


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_LEAVES))
    return size, draw(st.integers(0, size - 1))


@settings(max_examples=200, deadline=None)
@given(tree_and_index())
def test_sigstore_accepts_our_inclusion_proofs(case: tuple[int, int]) -> None:
    size, index = case
    proof = inclusion_proof(index, size, reader(size))
    root = root_of(size)
    verify_merkle_inclusion(rekor_entry(_ENTRIES[index], index, size, proof, root))
    # And it is really checking: a different entry is refused.
    with pytest.raises(VerificationError):
        verify_merkle_inclusion(rekor_entry(b"forged", index, size, proof, root))


@settings(max_examples=200, deadline=None)
@given(tree_and_index())
def test_scitt_cose_accepts_our_inclusion_proofs(case: tuple[int, int]) -> None:
    size, index = case
    proof = [p.hex() for p in inclusion_proof(index, size, reader(size))]
    root = root_of(size).hex()
    assert scitt.verify_inclusion(_ENTRIES[index].hex(), index, size, proof, root)
    assert not scitt.verify_inclusion(b"forged".hex(), index, size, proof, root)


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(1, MAX_LEAVES))
    return draw(st.integers(1, size2)), size2


@settings(max_examples=200, deadline=None)
@given(two_sizes())
def test_scitt_cose_accepts_our_consistency_proofs(case: tuple[int, int]) -> None:
    size1, size2 = case
    proof = [p.hex() for p in consistency_proof(size1, size2, reader(size2))]
    root1, root2 = root_of(size1).hex(), root_of(size2).hex()
    assert scitt.verify_consistency(root1, root2, size1, size2, proof)
    if size1 < size2:
        assert not scitt.verify_consistency(root2, root2, size1, size2, proof)


def test_scitt_cose_consistency_is_a_real_verifier() -> None:
    # Sanity check of the second opinion itself on the upstream vectors with size1 > 0
    # (scitt-cose, unlike us, accepts an empty proof from the empty tree).
    checked = 0
    for name, case in json_cases("tlog", "transparency-dev-merkle", "consistency"):
        if case["size1"] == 0 or name.startswith("additional/sizes-are-equal"):
            continue
        got = scitt.verify_consistency(
            base64.b64decode(case["root1"]).hex(),
            base64.b64decode(case["root2"]).hex(),
            case["size1"],
            case["size2"],
            [base64.b64decode(p).hex() for p in case["proof"] or []],
        )
        assert got is not case["wantErr"], name
        checked += 1
    assert checked > 50
