"""Our COSE and receipts checked with code we did not write, in both directions:
pycose and scitt-cose verify what we sign; we verify what they sign; and the IETF SCITT
example vectors (a copy in tests/vectors/scitt-receipts, origin in its README) are accepted and
rejected as they say."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sealtrail.errors import VerificationError
from sealtrail.keys import ED25519, ES256, Signer, generate_signer, verifier_for
from sealtrail.scitt import Header, ReceiptSigner, decode_sign1, key_id, sign1, verify_receipt

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "scitt-receipts" / "v1"
pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="shared SCITT vectors not present")

scitt_receipt = pytest.importorskip("scitt_cose.receipt")
scitt_sign1 = pytest.importorskip("scitt_cose.cose_sign1")


def _pem(signer: Signer) -> bytes:
    return signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- receipts ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [ES256, ED25519])
def test_our_receipts_verify_with_scitt_cose(alg: str) -> None:
    from sealtrail.merkle import CompactRange, inclusion_proof, leaf_hash

    entries = [hashlib.sha256(bytes([i])).digest() for i in range(13)]
    leaves = [leaf_hash(e) for e in entries]
    tree, runs = CompactRange(0, []).append(leaves)
    nodes = {(r.level, r.start + i): h for r in runs for i, h in enumerate(r.hashes)}
    signer = generate_signer(alg)
    rs = ReceiptSigner(signer, issuer="https://ts.example", subject="log.example/1")
    for index in (0, 5, 12):
        path = inclusion_proof(index, tree.size, lambda ids: [nodes[i] for i in ids])
        receipt = rs.receipt(tree_size=tree.size, leaf_index=index, path=path, root=tree.root())
        result = scitt_receipt.verify_receipt(
            receipt, leaf_entry_hex=entries[index].hex(), log_public_key_pem=_pem(signer)
        )
        assert result.ok, result.errors
        ours = verify_receipt(
            receipt, leaf_entry=entries[index], keys={key_id(signer.verifier()): signer.verifier()}
        )
        assert ours.leaf_index == index
        other = scitt_receipt.verify_receipt(
            receipt,
            leaf_entry_hex=entries[index + 1 if index < 12 else 0].hex(),
            log_public_key_pem=_pem(signer),
        )
        assert not other.ok


def _vector(name: str) -> tuple[dict[str, Any], bytes, bytes, Any, Any]:
    folder = VECTORS / name
    expected = json.loads((folder / "expected.json").read_text())
    log_key = serialization.load_pem_public_key((folder / "log-key.pub").read_bytes())
    issuer_key = serialization.load_pem_public_key((folder / "issuer-key.pub").read_bytes())
    return (
        expected,
        (folder / "statement.cose").read_bytes(),
        (folder / "receipt.cose").read_bytes(),
        log_key,
        issuer_key,
    )


@pytest.mark.parametrize(
    "name",
    [
        "valid-es256",
        "valid-eddsa",
        "fail-tampered-path",
        "fail-unsupported-vds",
        "fail-bad-statement-sig",
    ],
)
def test_ietf_example_vectors(name: str) -> None:
    expected, statement, receipt, log_key, issuer_key = _vector(name)
    verifier = verifier_for(log_key)
    leaf = bytes.fromhex(expected["leaf_entry"])
    assert leaf == hashlib.sha256(statement).digest()
    keys = {key_id(verifier): verifier}
    if expected["receipt_valid"]:
        info = verify_receipt(receipt, leaf_entry=leaf, keys=keys)
        assert info.leaf_index == expected["leaf_index"]
        assert info.tree_size == expected["tree_size"]
        assert info.root.hex() == expected["reconstructed_root"]
    else:
        with pytest.raises(VerificationError) as caught:
            verify_receipt(receipt, leaf_entry=leaf, keys=keys)
        want = "receipt-unsupported-vds" if "vds" in name else "receipt-bad-signature"
        assert caught.value.code == want
    message = decode_sign1(statement)
    issuer = verifier_for(issuer_key)
    if expected["statement_signature_valid"]:
        message.verify(issuer)
    else:
        with pytest.raises(VerificationError):
            message.verify(issuer)


# -- COSE_Sign1 both ways ------------------------------------------------------------------


@pytest.mark.parametrize("alg", [ES256, ED25519])
def test_scitt_cose_verifies_what_we_sign(alg: str) -> None:
    signer = generate_signer(alg)
    data = sign1(signer, protected={Header.CONTENT_TYPE: "application/json"}, payload=b"{}")
    scitt_sign1.verify_sign1(data, public_key_pem=_pem(signer))


@pytest.mark.parametrize("alg", [ES256, ED25519])
def test_pycose_and_us_agree_both_ways(alg: str) -> None:
    from pycose.algorithms import EdDSA, Es256
    from pycose.headers import Algorithm, ContentType
    from pycose.keys import CoseKey  # type: ignore[attr-defined]
    from pycose.messages import Sign1Message  # type: ignore[attr-defined]

    from sealtrail.scitt import cose_key

    signer = generate_signer(alg)
    private = signer.private_key()  # type: ignore[attr-defined]
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pkey = CoseKey.from_pem_private_key(pem.decode())
    # pycose signs, we verify.
    msg = Sign1Message(
        phdr={Algorithm: Es256 if alg == ES256 else EdDSA, ContentType: "application/json"},
        payload=b'{"a": 1}',
    )
    msg.key = pkey
    theirs = msg.encode(tag=True)
    decode_sign1(theirs).verify(signer.verifier())
    # We sign, pycose verifies (with the public key from our COSE_Key encoding).
    ours = sign1(signer, protected={Header.CONTENT_TYPE: "application/json"}, payload=b"{}")
    # pycose's own decoder expects cbor2 < 6 (lists inside tags); hand it the parts.
    import cbor2

    parts = cbor2.loads(ours).value
    decoded = Sign1Message.from_cose_obj([parts[0], dict(parts[1]), parts[2], parts[3]], True)
    public = dict(cose_key(signer.verifier()))
    public.pop(2)  # kid as bytes is fine, but pycose wants no extras for verification
    decoded.key = CoseKey.from_dict(public)
    assert decoded.verify_signature()
