"""The signing seam: every key Sealtrail signs or verifies with sits behind these protocols."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["ED25519", "Signer", "Verifier"]

ED25519 = "Ed25519"
"""Algorithm name of RFC 8032 Ed25519 (pure, not pre-hashed)."""


@runtime_checkable
class Signer(Protocol):
    """Something that signs with one private key it never hands out.

    Implementations (software keys today; PKCS#11 HSM keys later) MUST:

    * report a stable :attr:`algorithm` name (``"Ed25519"``, later ``"ES256"``, ...);
    * return the *raw* public key from :meth:`public_key_bytes` (32 bytes for Ed25519),
      never a DER or PEM wrapping, so key IDs computed from it are portable;
    * sign exactly the bytes given, with no pre-hashing the caller did not ask for.

    They MUST NOT expose private key material through ``repr``, ``str`` or exception
    messages. Raw key export, where it exists at all, is an explicit method of the
    concrete class, never part of this protocol.
    """

    @property
    def algorithm(self) -> str:
        """The signature algorithm name, e.g. ``"Ed25519"``."""
        ...

    def public_key_bytes(self) -> bytes:
        """The raw public key (32 bytes for Ed25519)."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` and return the raw signature (64 bytes for Ed25519)."""
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
