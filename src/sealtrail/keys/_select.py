"""From an algorithm name or a ``cryptography`` key object to our Signer / Verifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sealtrail.errors import ConfigError, InvalidInput
from sealtrail.keys._ecdsa import EcdsaSigner, EcdsaVerifier, curve_algorithm
from sealtrail.keys._ed25519 import Ed25519Signer, Ed25519Verifier
from sealtrail.keys._mldsa import (
    MlDsaSigner,
    MlDsaVerifier,
    mldsa_private_algorithm,
    mldsa_public_algorithm,
)
from sealtrail.keys._protocols import ALGORITHMS, ED25519, ES256, ES384, ML_DSA_65, ML_DSA_87

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificateIssuerPublicKeyTypes,
        PrivateKeyTypes,
        PublicKeyTypes,
    )

    from sealtrail.keys._mldsa import MlDsaPrivateKey
    from sealtrail.keys._protocols import Signer, Verifier

__all__ = [
    "SUPPORTED_KEYS",
    "SoftwareSigner",
    "describe_key",
    "generate_signer",
    "public_key_object",
    "software_signer",
    "verifier_for",
    "verifier_from_bytes",
]

SoftwareSigner = Ed25519Signer | EcdsaSigner | MlDsaSigner
"""A private key held in this process; the only kind :func:`write_private_key` writes."""

SUPPORTED_KEYS = "Ed25519, ECDSA P-256 (ES256), ECDSA P-384 (ES384), ML-DSA-65, ML-DSA-87"
"""The key types Sealtrail accepts, as a phrase for error messages."""


def _unknown_algorithm(algorithm: object) -> InvalidInput:
    return InvalidInput(
        f"unknown signature algorithm {algorithm!r}; supported: {', '.join(ALGORITHMS)}"
    )


def generate_signer(algorithm: str) -> Signer:
    """A fresh software key for ``algorithm`` (one of :data:`~sealtrail.keys.ALGORITHMS`).

    Raises :class:`~sealtrail.errors.InvalidInput` for an unknown name and
    :class:`~sealtrail.errors.ConfigError` for ML-DSA when this ``cryptography`` lacks it.
    """
    if algorithm == ED25519:
        return Ed25519Signer.generate()
    if algorithm in (ES256, ES384):
        return EcdsaSigner.generate(algorithm)
    if algorithm in (ML_DSA_65, ML_DSA_87):
        return MlDsaSigner.generate(algorithm)
    raise _unknown_algorithm(algorithm)


def verifier_from_bytes(algorithm: str, public_key_bytes: bytes) -> Verifier:
    """Our verifier for a raw public key (the form :meth:`Signer.public_key_bytes` returns).

    A malformed key, an unknown algorithm, or ML-DSA without support in this
    ``cryptography`` is :class:`~sealtrail.errors.InvalidInput`.
    """
    if algorithm == ED25519:
        return Ed25519Verifier(public_key_bytes)
    if algorithm in (ES256, ES384):
        return EcdsaVerifier(public_key_bytes, algorithm=algorithm)
    if algorithm in (ML_DSA_65, ML_DSA_87):
        return MlDsaVerifier(public_key_bytes, algorithm=algorithm)
    raise _unknown_algorithm(algorithm)


def _public_algorithm(public_key: object) -> str:
    if isinstance(public_key, Ed25519PublicKey):
        return ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        algorithm = curve_algorithm(public_key.curve)
        if algorithm is None:
            raise InvalidInput(
                f"ECDSA keys on {public_key.curve.name} are not supported; "
                f"supported keys: {SUPPORTED_KEYS}"
            )
        return algorithm
    mldsa = mldsa_public_algorithm(public_key)
    if mldsa is not None:
        return mldsa
    raise InvalidInput(
        f"{describe_key(public_key)} keys are not supported; supported keys: {SUPPORTED_KEYS}"
    )


def verifier_for(public_key: PublicKeyTypes, algorithm: str | None = None) -> Verifier:
    """Our verifier for a ``cryptography`` public key, e.g. ``certificate.public_key()``.

    P-256 keys verify ES256, P-384 keys ES384; Ed25519 and ML-DSA-65/87 keys their own
    algorithm. If ``algorithm`` is given (say, from a COSE header), the key MUST be of that
    algorithm. Raises :class:`~sealtrail.errors.InvalidInput` for any other key (RSA, DSA,
    Ed448, other curves, ML-DSA-44, ...) or a mismatch.
    """
    derived = _public_algorithm(public_key)
    if algorithm is not None and algorithm != derived:
        if algorithm not in ALGORITHMS:
            raise _unknown_algorithm(algorithm)
        raise InvalidInput(f"the key is for {derived}, not {algorithm}")
    if derived == ED25519:
        assert isinstance(public_key, Ed25519PublicKey)
        return Ed25519Verifier(public_key.public_bytes_raw())
    if derived in (ES256, ES384):
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        raw = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return EcdsaVerifier(raw, algorithm=derived)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return MlDsaVerifier(raw, algorithm=derived)


def public_key_object(verifier: Verifier) -> CertificateIssuerPublicKeyTypes:
    """The ``cryptography`` public key behind one of our verifiers."""
    if isinstance(verifier, Ed25519Verifier | EcdsaVerifier | MlDsaVerifier):
        return verifier.public_key()
    raise InvalidInput(f"not one of Sealtrail's verifiers: {type(verifier).__name__}")


def software_signer(private_key: PrivateKeyTypes) -> SoftwareSigner:
    """Our signer for a ``cryptography`` private key; ``ConfigError`` for unsupported ones."""
    if isinstance(private_key, Ed25519PrivateKey):
        return Ed25519Signer(private_key)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if curve_algorithm(private_key.curve) is None:
            raise ConfigError(
                f"ECDSA keys on {private_key.curve.name} are not supported; "
                f"supported keys: {SUPPORTED_KEYS}"
            )
        return EcdsaSigner(private_key)
    if mldsa_private_algorithm(private_key) is not None:
        return MlDsaSigner(cast("MlDsaPrivateKey", private_key))
    raise ConfigError(
        f"{describe_key(private_key)} keys are not supported; supported keys: {SUPPORTED_KEYS}"
    )


def describe_key(key: object) -> str:
    """A short name for a ``cryptography`` key object's type: "RSA-2048", "ECDSA secp521r1"."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return "Ed448"
    name = type(key).__name__.removeprefix("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    if name == "DSA":
        # Named by its type, not with isinstance: touching cryptography's dsa classes warns
        # that DSA is deprecated.
        return f"DSA-{getattr(key, 'key_size', '?')}"
    return name or "unknown"
