"""The signing seam: every key Sealtrail signs or verifies with sits behind these protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

__all__ = [
    "ALGORITHMS",
    "ED25519",
    "ES256",
    "ES384",
    "ML_DSA_65",
    "ML_DSA_87",
    "Signer",
    "Verifier",
]

ED25519 = "Ed25519"
"""Algorithm name of RFC 8032 Ed25519 (pure, not pre-hashed)."""

ES256 = "ES256"
"""ECDSA on P-256 with SHA-256 (RFC 9053); signatures are raw ``r || s``, 64 bytes."""

ES384 = "ES384"
"""ECDSA on P-384 with SHA-384 (RFC 9053); signatures are raw ``r || s``, 96 bytes."""

ML_DSA_65 = "ML-DSA-65"
"""FIPS 204 ML-DSA-65 (pure, empty context). Needs :func:`sealtrail.keys.mldsa_supported`."""

ML_DSA_87 = "ML-DSA-87"
"""FIPS 204 ML-DSA-87 (pure, empty context). Needs :func:`sealtrail.keys.mldsa_supported`."""

ALGORITHMS: tuple[str, ...] = (ED25519, ES256, ES384, ML_DSA_65, ML_DSA_87)
"""Every algorithm name Sealtrail signs and verifies with. ML-DSA also needs a
``cryptography`` that provides it (:func:`sealtrail.keys.mldsa_supported`)."""


@runtime_checkable
class Signer(Protocol):
    """Something that signs with one private key it never hands out.

    Implementations (software keys, PKCS#11 HSM keys) MUST:

    * report a stable :attr:`algorithm` name, one of :data:`ALGORITHMS`;
    * return the *raw* public key from :meth:`public_key_bytes` (32 bytes for Ed25519, the
      uncompressed SEC1 point for ES256/ES384, the FIPS 204 encoding for ML-DSA), never a
      DER or PEM wrapping, so key IDs computed from it are portable;
    * sign exactly the bytes given, with no pre-hashing the caller did not ask for (ES256 and
      ES384 hash as part of the algorithm; that is not a pre-hash);
    * return signatures in the COSE / JOSE form: raw ``r || s`` for ECDSA, never DER.

    They MUST NOT expose private key material through ``repr``, ``str`` or exception
    messages. Raw key export, where it exists at all, is an explicit method of the
    concrete class (``private_key()`` on software keys), never part of this protocol.
    """

    @property
    def algorithm(self) -> str:
        """The signature algorithm name, e.g. ``"Ed25519"`` or ``"ES256"``."""
        ...

    def public_key_bytes(self) -> bytes:
        """The raw public key (32 bytes for Ed25519, 65 for ES256, 97 for ES384)."""
        ...

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        """The public key as a ``cryptography`` object, e.g. to put it in an X.509 certificate."""
        ...

    def verifier(self) -> Verifier:
        """The matching public key, as a :class:`Verifier`."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` and return the raw signature (64 bytes for Ed25519 and ES256)."""
        ...


@runtime_checkable
class Verifier(Protocol):
    """A public key that checks signatures.

    :meth:`verify` MUST raise :class:`sealtrail.errors.InvalidSignature` for any signature
    that does not verify, including one of the wrong length. It MUST NOT return a flag.
    """

    @property
    def algorithm(self) -> str:
        """The signature algorithm name, e.g. ``"Ed25519"``."""
        ...

    def public_key_bytes(self) -> bytes:
        """The raw public key (32 bytes for Ed25519)."""
        ...

    def verify(self, *, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is valid for ``message``; raise ``InvalidSignature`` if not."""
        ...
