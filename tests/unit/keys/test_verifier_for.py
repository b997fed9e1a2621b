"""verifier_for: from the public key in an X.509 certificate to our Verifier."""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from sealtrail.errors import InvalidInput
from sealtrail.keys import (
    ALGORITHMS,
    ED25519,
    ES256,
    ES384,
    ML_DSA_65,
    ML_DSA_87,
    EcdsaVerifier,
    Ed25519Verifier,
    MlDsaVerifier,
    generate_signer,
    mldsa_supported,
    verifier_for,
)

needs_mldsa = pytest.mark.skipif(not mldsa_supported(), reason="this cryptography has no ML-DSA")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def certificate(
    public_key: CertificatePublicKeyTypes, issuer_key: CertificateIssuerPrivateKeyTypes
) -> x509.Certificate:
    """A minimal certificate for ``public_key``, signed by ``issuer_key``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "key test")])
    # EdDSA and ML-DSA sign the certificate without a separate hash.
    prehashed = isinstance(issuer_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(issuer_key, hashes.SHA256() if prehashed else None)
    )


@functools.cache
def ed25519_issuer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    ("algorithm", "verifier_class"),
    [
        (ED25519, Ed25519Verifier),
        (ES256, EcdsaVerifier),
        (ES384, EcdsaVerifier),
        pytest.param(ML_DSA_65, MlDsaVerifier, marks=needs_mldsa),
        pytest.param(ML_DSA_87, MlDsaVerifier, marks=needs_mldsa),
    ],
)
def test_certificate_keys_map_to_their_algorithm(algorithm: str, verifier_class: type) -> None:
    signer = generate_signer(algorithm)
    private = signer.private_key()  # type: ignore[attr-defined]
    # Self-signed with the key itself, as a CA certificate would be.
    cert = certificate(signer.public_key(), private)
    verifier = verifier_for(cert.public_key())
    assert isinstance(verifier, verifier_class)
    assert verifier.algorithm == algorithm
    assert verifier == signer.verifier()
    assert verifier.public_key_bytes() == signer.public_key_bytes()
    verifier.verify(signature=signer.sign(b"statement"), message=b"statement")
    # Pinning the expected algorithm (say, from a COSE header) works when it matches...
    assert verifier_for(cert.public_key(), algorithm) == verifier
    # ...and is refused for any other algorithm.
    for other in ALGORITHMS:
        if other != algorithm:
            with pytest.raises(InvalidInput, match=f"the key is for {algorithm}, not {other}"):
                verifier_for(cert.public_key(), other)


def test_an_unknown_pinned_algorithm_is_invalid_input() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(InvalidInput, match="unknown signature algorithm 'RS256'"):
        verifier_for(key, "RS256")
    with pytest.raises(InvalidInput, match="unknown signature algorithm 'es256'"):
        verifier_for(key, "es256")


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _refused_keys() -> dict[str, tuple[CertificatePublicKeyTypes, str]]:
    keys: dict[str, tuple[CertificatePublicKeyTypes, str]] = {
        "rsa-2048": (rsa_key().public_key(), "RSA-2048 keys are not supported"),
        "p-521": (
            ec.generate_private_key(ec.SECP521R1()).public_key(),
            "ECDSA keys on secp521r1 are not supported",
        ),
        "p-224": (
            ec.generate_private_key(ec.SECP224R1()).public_key(),
            "ECDSA keys on secp224r1 are not supported",
        ),
        "secp256k1": (
            ec.generate_private_key(ec.SECP256K1()).public_key(),
            "ECDSA keys on secp256k1 are not supported",
        ),
        "brainpool-p256": (
            ec.generate_private_key(ec.BrainpoolP256R1()).public_key(),
            "ECDSA keys on brainpoolP256r1 are not supported",
        ),
        "ed448": (ed448.Ed448PrivateKey.generate().public_key(), "Ed448 keys are not supported"),
        "x25519": (
            x25519.X25519PrivateKey.generate().public_key(),
            "X25519 keys are not supported",
        ),
    }
    if mldsa_supported():
        from cryptography.hazmat.primitives.asymmetric import mldsa

        keys["ml-dsa-44"] = (
            mldsa.MLDSA44PrivateKey.generate().public_key(),
            "MLDSA44 keys are not supported",
        )
    return keys


REFUSED = _refused_keys()


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_certificate_keys_are_refused(case: str) -> None:
    public_key, reason = REFUSED[case]
    cert = certificate(public_key, ed25519_issuer())
    with pytest.raises(InvalidInput, match=reason) as info:
        verifier_for(cert.public_key())
    assert "supported keys: Ed25519, ECDSA P-256 (ES256), ECDSA P-384 (ES384)" in info.value.message
    # Pinning an algorithm does not make an unsupported key acceptable.
    with pytest.raises(InvalidInput, match=reason):
        verifier_for(cert.public_key(), ES256)


@pytest.mark.filterwarnings("ignore:DSA is deprecated")  # the key is made to be refused
def test_dsa_keys_are_refused() -> None:
    key = dsa.generate_private_key(key_size=1024).public_key()
    with pytest.raises(InvalidInput, match="DSA-1024 keys are not supported"):
        verifier_for(key)
