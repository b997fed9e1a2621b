"""COSE key sets read from other services (SCRAPI ``/.well-known/scitt-keys``): a kid that is
not the RFC 9679 thumbprint (SCRAPI only recommends it), and no ``alg`` (optional in RFC 9052
section 7.1). The key sets Sealtrail publishes keep thumbprint kids and ``alg``."""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
import pytest

from sealtrail.errors import InvalidInput
from sealtrail.keys import ED25519, ES256, ES384, ML_DSA_65, Signer, Verifier, generate_signer
from sealtrail.merkle import leaf_hash
from sealtrail.scitt import (
    Header,
    cose_key,
    decode_key_set,
    encode_key_set,
    key_id,
    sign1,
    verifier_from_cose_key,
    verify_receipt,
)

P256, P384, ED = generate_signer(ES256), generate_signer(ES384), generate_signer(ED25519)


def _foreign_key(signer: Signer, *, kid: object = None, alg: object = None) -> dict[int, Any]:
    """``signer``'s public key as SCRAPI's example key set shows one: no ``alg``, and a kid
    of the service's choosing (or none)."""
    key = {k: v for k, v in cose_key(signer.verifier()).items() if k not in (2, 3)}
    if kid is not None:
        key[2] = kid
    if alg is not None:
        key[3] = alg
    return key


def _set(*keys: dict[int, Any]) -> bytes:
    return cbor2.dumps(list(keys))


def _refused(data: bytes, **kwargs: bool) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        decode_key_set(data, **kwargs)
    assert refused.value.code == "cose-bad-key"
    return refused.value


@pytest.mark.parametrize(("signer", "algorithm"), [(P256, ES256), (P384, ES384), (ED, ED25519)])
def test_a_key_without_alg_takes_the_algorithm_of_its_curve(signer: Signer, algorithm: str) -> None:
    keys = decode_key_set(_set(_foreign_key(signer)))
    assert list(keys) == [key_id(signer.verifier())]
    assert keys[key_id(signer.verifier())].algorithm == algorithm
    assert keys[key_id(signer.verifier())] == signer.verifier()


def test_a_key_is_found_by_its_stated_kid_and_by_its_thumbprint() -> None:
    """SCRAPI's example: kids ``'kid1'`` and ``'kid2'`` (byte strings in EDN), no alg."""
    other = generate_signer(ES256)
    keys = decode_key_set(_set(_foreign_key(P256, kid=b"kid1"), _foreign_key(other, kid=b"kid2")))
    assert keys[b"kid1"] == keys[key_id(P256.verifier())] == P256.verifier()
    assert keys[b"kid2"] == keys[key_id(other.verifier())] == other.verifier()
    assert len(keys) == 4


def test_a_receipt_naming_its_key_by_a_non_thumbprint_kid_verifies() -> None:
    entries = [hashlib.sha256(bytes([i])).digest() for i in range(2)]
    leaves = [leaf_hash(e) for e in entries]
    root = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    receipt = sign1(
        P256,
        protected={Header.KID: b"kid1", Header.VDS: 1},
        unprotected={Header.VDP: {-1: [cbor2.dumps([2, 1, [leaves[0]]])]}},
        payload=root,
        detached=True,
    )
    keys = decode_key_set(_set(_foreign_key(P256, kid=b"kid1")))
    info = verify_receipt(receipt, leaf_entry=entries[1], keys=keys)
    assert (info.kid, info.tree_size, info.leaf_index) == (b"kid1", 2, 1)


@pytest.mark.parametrize(
    ("signer", "alg"),
    [
        (P256, -35),  # ES384 on a P-256 key
        (P384, -7),  # ES256 on a P-384 key
        (P256, -8),  # EdDSA on an EC2 key
        (ED, -7),  # ES256 on an OKP key
        (ED, -49),  # ML-DSA-65 on an OKP key
        (P256, -999),  # an algorithm we do not know
        (P256, "ES256"),  # a text alg
    ],
)
def test_an_alg_that_contradicts_the_key_is_refused(signer: Signer, alg: object) -> None:
    _refused(_set(_foreign_key(signer, alg=alg)))


def test_a_key_whose_type_implies_no_algorithm_needs_alg() -> None:
    mldsa = generate_signer(ML_DSA_65)
    key = cose_key(mldsa.verifier())
    assert decode_key_set(_set(key))[key_id(mldsa.verifier())] == mldsa.verifier()
    _refused(_set({k: v for k, v in key.items() if k != 3}))
    unknown = _foreign_key(P256)
    unknown[-1] = 7  # a curve without an implied algorithm
    _refused(_set(unknown))


def test_a_kid_is_a_byte_string() -> None:
    refused = _refused(_set(_foreign_key(P256, kid="kid1")))
    assert "byte string" in refused.message


def test_two_different_keys_under_one_kid_are_refused() -> None:
    other = generate_signer(ES256)
    _refused(_set(_foreign_key(P256, kid=b"k"), _foreign_key(other, kid=b"k")))
    # A kid that is another key's thumbprint would hand that key's receipts to this one.
    _refused(_set(cose_key(P256.verifier()), _foreign_key(other, kid=key_id(P256.verifier()))))
    # The same key twice, under its thumbprint and under another kid, is the same key.
    keys = decode_key_set(_set(cose_key(P256.verifier()), _foreign_key(P256, kid=b"k")))
    assert keys[b"k"] == keys[key_id(P256.verifier())]


def test_the_key_sets_sealtrail_publishes_keep_thumbprint_kids() -> None:
    verifiers: list[Verifier] = [P256.verifier(), P384.verifier(), ED.verifier()]
    published = encode_key_set(verifiers)
    for key in cbor2.loads(published):
        assert key[2] == key_id(verifier_from_cose_key(key, thumbprint_kid=True))
        assert 3 in key
    keys = decode_key_set(published, thumbprint_kids=True)
    assert keys == {key_id(v): v for v in verifiers}
    _refused(_set(_foreign_key(P256, kid=b"kid1")), thumbprint_kids=True)
