"""A receipt's tree size and leaf index: RFC 9942 leaves them unsigned, and a proof
rewritten for another tree shape reaches the same signed root. Sealtrail's receipts sign
the size, so such a rewrite is refused; a receipt that does not sign it still verifies,
and says so."""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from sealtrail.errors import VerificationError
from sealtrail.keys import ES256, generate_signer
from sealtrail.merkle import leaf_hash
from sealtrail.scitt import Header, ReceiptSigner, decode_sign1, key_id, sign1, verify_receipt

SERVICE = generate_signer(ES256)
KEYS = {key_id(SERVICE.verifier()): SERVICE.verifier()}
ENTRIES = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


#: The trees of 1 and 3 leaves: their roots, and each leaf's inclusion path (RFC 9162).
ROOTS = {1: LEAVES[0], 3: _node(_node(LEAVES[0], LEAVES[1]), LEAVES[2])}
PATHS = {
    (0, 1): [],
    (0, 3): [LEAVES[1], LEAVES[2]],
    (2, 3): [_node(LEAVES[0], LEAVES[1])],
}


def _receipt(index: int, size: int = 3) -> bytes:
    signer = ReceiptSigner(SERVICE, issuer="https://ledger.example", subject="log.example/1")
    return signer.receipt(
        tree_size=size, leaf_index=index, path=PATHS[index, size], root=ROOTS[size]
    )


def _with_proof(receipt: bytes, proof: list[object]) -> bytes:
    """``receipt`` with its unprotected inclusion proof replaced, its signature kept."""
    tag = cbor2.loads(receipt)
    protected, _, payload, signature = tag.value
    vdp = {Header.VDP: {-1: [cbor2.dumps(proof)]}}
    return cbor2.dumps(cbor2.CBORTag(18, [protected, vdp, payload, signature]))


def test_a_receipt_signs_the_size_of_its_tree() -> None:
    info = verify_receipt(_receipt(2), leaf_entry=ENTRIES[2], keys=KEYS)
    assert (info.tree_size, info.leaf_index, info.size_signed) == (3, 2, True)
    assert decode_sign1(_receipt(2)).protected[Header.TREE_SIZE] == 3


def test_a_proof_rewritten_for_another_tree_shape_is_refused() -> None:
    """Leaf 2 of 3 has the path [H(l0, l1)]: read as leaf 1 of 2, that path reaches the same
    root, so only the signed size tells the two apart."""
    forged = _with_proof(_receipt(2), [2, 1, PATHS[2, 3]])
    with pytest.raises(VerificationError) as refused:
        verify_receipt(forged, leaf_entry=ENTRIES[2], keys=KEYS)
    assert refused.value.code == "receipt-bad-proof"
    bigger = _with_proof(_receipt(0), [4, 0, [LEAVES[1], LEAVES[2]]])  # a size never reached
    with pytest.raises(VerificationError):
        verify_receipt(bigger, leaf_entry=ENTRIES[0], keys=KEYS)


def test_a_receipt_that_does_not_sign_its_size_says_so() -> None:
    """As RFC 9942 allows (and other services issue): the proof's size, not vouched for."""
    protected: dict[int | str, object] = {
        Header.ALG: -7,
        Header.KID: key_id(SERVICE.verifier()),
        Header.VDS: 1,
    }
    proof = cbor2.dumps([3, 2, PATHS[2, 3]])
    receipt = sign1(
        SERVICE,
        protected=protected,
        unprotected={Header.VDP: {-1: [proof]}},
        payload=ROOTS[3],
        detached=True,
    )
    info = verify_receipt(receipt, leaf_entry=ENTRIES[2], keys=KEYS)
    assert (info.tree_size, info.leaf_index, info.size_signed) == (3, 2, False)


@pytest.mark.parametrize("proof", [[True, False, []], [3, True, []], [3.0, 2, []]])
def test_a_proof_s_size_and_index_are_integers(proof: list[object]) -> None:
    with pytest.raises(VerificationError) as refused:
        verify_receipt(_with_proof(_receipt(0, 1), proof), leaf_entry=ENTRIES[0], keys=KEYS)
    assert refused.value.code == "receipt-malformed"
