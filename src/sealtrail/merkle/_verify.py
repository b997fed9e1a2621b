"""Inclusion and consistency proof verification (RFC 9162 §2.1.3.2, §2.1.4.2).

Verification raises and never returns ``False``. Checks beyond the RFC text, matching the
transparency-dev/merkle test vectors: every hash must be exactly 32 bytes, the proof must
have exactly the length the sizes imply, ``index < size``, and ``size1 > 0``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ._errors import ConsistencyProofError, InclusionProofError, ProofError
from ._hash import HASH_SIZE, MAX_TREE_SIZE

__all__ = [
    "consistency_proof_length",
    "inclusion_proof_length",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256
_HASH_SIZE_ONLY = {HASH_SIZE}


def _h(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _path_length(index: int, last: int) -> int:
    """Audit-path length of node ``index`` in a row whose rightmost node is ``last``."""
    inner = (index ^ last).bit_length()
    return inner + (index >> inner).bit_count()


def inclusion_proof_length(index: int, size: int) -> int:
    """Number of hashes in the inclusion proof of leaf ``index`` (``0 <= index < size``)."""
    return _path_length(index, size - 1)


def _check_hash(err: type[ProofError], what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise err(f"{what} has {len(value)} bytes, expected {HASH_SIZE}")


def _check_proof(err: type[ProofError], proof: Sequence[bytes], want: int) -> None:
    if len(proof) != want:
        raise err(f"proof has {len(proof)} hashes, expected {want}")
    # One pass in C over the lengths; the slow loop only to name the hash at fault.
    if proof and set(map(len, proof)) != _HASH_SIZE_ONLY:
        for i, p in enumerate(proof):
            _check_hash(err, f"proof[{i}]", p)


def root_from_inclusion_proof(
    *, leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root that ``proof`` implies for ``leaf_hash`` at ``index`` of ``size`` leaves.

    Raises :class:`InclusionProofError` if the arguments cannot form a valid proof.
    """
    if not 0 <= size <= MAX_TREE_SIZE:
        raise InclusionProofError(f"tree size {size} is out of range")
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is not in a tree of size {size}")
    _check_hash(InclusionProofError, "leaf hash", leaf_hash)
    _check_proof(InclusionProofError, proof, inclusion_proof_length(index, size))
    # RFC 9162 §2.1.3.2: fn tracks our node, sn the rightmost node, level by level.
    fn, sn, r = index, size - 1, leaf_hash
    sha = _sha256  # hashing is the whole cost: no function call per level
    for p in proof:
        if sn == 0:
            raise InclusionProofError("proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            if not fn & 1:
                # We are the rightmost node and a left child: skip levels with no sibling.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError("proof is shorter than the path to the root")
    return r


def verify_inclusion(
    *, leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Raises :class:`InclusionProofError` saying why, if not.
    """
    _check_hash(InclusionProofError, "root", root)
    computed = root_from_inclusion_proof(leaf_hash=leaf_hash, index=index, size=size, proof=proof)
    if computed != root:
        raise InclusionProofError(
            f"proof for leaf {index} of tree size {size} gives root {computed.hex()}, "
            f"expected {root.hex()}"
        )


def consistency_proof_length(size1: int, size2: int) -> int:
    """Number of hashes in the consistency proof from ``size1`` to ``size2``, 0 < size1 <= size2."""
    if size1 == size2:
        return 0
    level = (size1 & -size1).bit_length() - 1
    index = (size1 >> level) - 1
    return _path_length(index, (size2 - 1) >> level) + (1 if index else 0)


def _consistency_roots(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, bytes]:
    """RFC 9162 §2.1.4.2 for 0 < size1 < size2: the old and new roots the proof implies."""
    err = ConsistencyProofError
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        # The old tree is itself a perfect subtree: its root seeds both computations.
        path.insert(0, root1)
    if not path:
        raise err("proof is empty")
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise err("proof is longer than the path to the new root")
        if fn & 1 or fn == sn:
            fr = _h(c, fr)
            sr = _h(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _h(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise err("proof is shorter than the path to the new root")
    return fr, sr


def verify_consistency(
    *, size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size1`` leaves with ``root1`` is a prefix of ``size2``/``root2``.

    ``size1 == 0`` is rejected: a consistency proof from the empty tree proves nothing, and
    the caller must decide that case on its own. Raises :class:`ConsistencyProofError`.
    """
    err = ConsistencyProofError
    if not 0 <= size2 <= MAX_TREE_SIZE:
        raise err(f"tree size {size2} is out of range")
    if size1 == 0:
        raise err("cannot prove consistency from the empty tree (size1 == 0)")
    if not 0 < size1 <= size2:
        raise err(f"size1 {size1} must be in 1..size2 ({size2})")
    _check_hash(err, "root1", root1)
    _check_hash(err, "root2", root2)
    _check_proof(err, proof, consistency_proof_length(size1, size2))
    if size1 == size2:
        if root1 != root2:
            raise err(f"trees of equal size {size1} have different roots")
        return
    fr, sr = _consistency_roots(size1, size2, proof, root1)
    if fr != root1:
        raise err(f"proof gives old root {fr.hex()} for size {size1}, expected {root1.hex()}")
    if sr != root2:
        raise err(f"proof gives new root {sr.hex()} for size {size2}, expected {root2.hex()}")
