"""A receipt's tree size and leaf index: RFC 9942 leaves them unsigned, and a proof
rewritten for another tree shape reaches the same signed root. Sealtrail's receipts sign
the size, so such a rewrite is refused; a receipt that does not sign it still verifies,
and says so. And what RFC 9942 lets another service send: an attached root, several
inclusion proofs, an empty path (a tree of one, which Sealtrail itself never signs)."""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from sealtrail.errors import InvalidInput, VerificationError
from sealtrail.keys import ES256, generate_signer
from sealtrail.merkle import leaf_hash
from sealtrail.scitt import Header, ReceiptSigner, decode_sign1, key_id, sign1, verify_receipt
from sealtrail.scitt._receipt import MAX_PROOFS

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
        verify_receipt(_with_proof(_receipt(0), proof), leaf_entry=ENTRIES[0], keys=KEYS)
    assert refused.value.code == "receipt-malformed"


# -- what RFC 9942 allows other services to send ---------------------------------------------


def _foreign(
    proofs: list[list[object]],
    *,
    root: bytes = ROOTS[3],
    attached: bool = False,
    kid: object = None,
) -> bytes:
    """A receipt as another RFC 9942 service may issue it: no signed size, and the root
    attached or not, with the given inclusion proofs."""
    protected: dict[int | str, object] = {Header.VDS: 1}
    if kid is not None:
        protected[Header.KID] = kid
    return sign1(
        SERVICE,
        protected=protected,
        unprotected={Header.VDP: {-1: [cbor2.dumps(p) for p in proofs]}},
        payload=root,
        detached=not attached,
    )


def test_no_receipt_is_issued_against_a_tree_of_one_entry() -> None:
    """RFC 9942 section 5.2: ``inclusion-path: [ + bstr ]``, and a one-entry tree's path
    is empty."""
    signer = ReceiptSigner(SERVICE, issuer="https://ledger.example", subject="log.example/1")
    with pytest.raises(InvalidInput) as refused:
        signer.receipt(tree_size=1, leaf_index=0, path=[], root=ROOTS[1])
    assert refused.value.code == "receipt-tree-too-small"


def test_an_empty_path_from_another_service_still_verifies() -> None:
    receipt = _foreign([[1, 0, []]], root=ROOTS[1])
    info = verify_receipt(receipt, leaf_entry=ENTRIES[0], keys=KEYS)
    assert (info.tree_size, info.leaf_index, info.root) == (1, 0, ROOTS[1])


def test_an_attached_root_is_accepted_when_it_is_the_proof_s_root() -> None:
    receipt = _foreign([[3, 2, PATHS[2, 3]]], attached=True)
    assert decode_sign1(receipt).payload == ROOTS[3]
    info = verify_receipt(receipt, leaf_entry=ENTRIES[2], keys=KEYS)
    assert (info.tree_size, info.leaf_index, info.size_signed) == (3, 2, False)


def test_an_attached_root_the_proof_does_not_lead_to_is_refused() -> None:
    """Signed, but over a root the leaf's proof does not reach: another entry's receipt."""
    receipt = _foreign([[3, 0, PATHS[0, 3]]], attached=True)
    with pytest.raises(VerificationError) as refused:
        verify_receipt(receipt, leaf_entry=ENTRIES[2], keys=KEYS)
    assert refused.value.code == "receipt-bad-proof"
    # The signature over the attached root is checked too.
    tag = cbor2.loads(receipt)
    protected, unprotected, _, signature = tag.value
    swapped = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, ROOTS[1], signature]))
    with pytest.raises(VerificationError) as refused:
        verify_receipt(_with_proof(swapped, [1, 0, []]), leaf_entry=ENTRIES[0], keys=KEYS)
    assert refused.value.code == "receipt-bad-signature"


def test_several_inclusion_proofs_must_all_lead_to_the_signed_root() -> None:
    """The same leaf twice in a log (Sealtrail deduplicates; another log may not): leaf 0
    and leaf 2 of a tree whose leaves 0 and 2 are equal."""
    leaves = [LEAVES[0], LEAVES[1], LEAVES[0]]
    root = _node(_node(leaves[0], leaves[1]), leaves[2])
    first, second = [3, 0, [leaves[1], leaves[2]]], [3, 2, [_node(leaves[0], leaves[1])]]
    info = verify_receipt(_foreign([first, second], root=root), leaf_entry=ENTRIES[0], keys=KEYS)
    assert (info.leaf_index, info.leaf_indexes, info.root) == (0, (0, 2), root)
    # One proof that leads elsewhere spoils the receipt, wherever it is.
    stray = [3, 1, [leaves[0], leaves[2]]]
    for proofs in ([first, stray], [stray, first]):
        with pytest.raises(VerificationError) as refused:
            verify_receipt(_foreign(proofs, root=root), leaf_entry=ENTRIES[0], keys=KEYS)
        assert refused.value.code == "receipt-bad-signature"
    # And with a signed size, every proof is for it.
    ours = _receipt(2)
    tag = cbor2.loads(ours)
    protected, _, payload, signature = tag.value
    encoded = [cbor2.dumps([3, 2, PATHS[2, 3]]), cbor2.dumps([2, 1, PATHS[2, 3]])]
    both = cbor2.dumps(
        cbor2.CBORTag(18, [protected, {Header.VDP: {-1: encoded}}, payload, signature])
    )
    with pytest.raises(VerificationError) as refused:
        verify_receipt(both, leaf_entry=ENTRIES[2], keys=KEYS)
    assert refused.value.code == "receipt-bad-proof"


def test_the_number_of_inclusion_proofs_is_bounded() -> None:
    proof = [3, 2, PATHS[2, 3]]
    verify_receipt(_foreign([proof] * MAX_PROOFS), leaf_entry=ENTRIES[2], keys=KEYS)
    for proofs in ([], [proof] * (MAX_PROOFS + 1)):
        with pytest.raises(VerificationError) as refused:
            verify_receipt(_foreign(proofs), leaf_entry=ENTRIES[2], keys=KEYS)
        assert refused.value.code == "receipt-malformed"


def test_a_text_kid_is_not_taken_for_the_byte_string_kid() -> None:
    """RFC 9052 section 3.1 makes kid a bstr; RFC 9942's examples show text. The text of
    the same bytes is not looked up as the bstr: the error says why nothing matched."""
    kid = key_id(SERVICE.verifier())
    proof = [3, 2, PATHS[2, 3]]
    assert verify_receipt(_foreign([proof], kid=kid), leaf_entry=ENTRIES[2], keys=KEYS)
    text = kid.hex()
    keys = {**KEYS, text.encode(): SERVICE.verifier()}
    with pytest.raises(VerificationError) as refused:
        verify_receipt(_foreign([proof], kid=text), leaf_entry=ENTRIES[2], keys=keys)
    assert refused.value.code == "receipt-unknown-key"
    assert "text string" in refused.value.message
