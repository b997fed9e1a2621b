"""Software Ed25519 keys (RFC 8032), built on ``cryptography``."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sealtrail.errors import InvalidInput, InvalidSignature
from sealtrail.keys._protocols import ED25519

__all__ = ["Ed25519Signer", "Ed25519Verifier", "verify_ed25519"]

ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SEED_SIZE = 32
ED25519_SIGNATURE_SIZE = 64


class Ed25519Signer:
    """An Ed25519 private key held in this process (a :class:`~sealtrail.keys.Signer`).

    Its ``repr`` shows only the public key. To persist it, use
    :func:`sealtrail.keys.write_private_key`; to read it back, :func:`sealtrail.keys.load_signer`.
    """

    __slots__ = ("_private_key", "_public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise InvalidInput("Ed25519Signer needs an Ed25519 private key")
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> Ed25519Signer:
        """A fresh key from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Ed25519Signer:
        """The key whose RFC 8032 32-byte private seed is ``seed``."""
        if not isinstance(seed, bytes) or len(seed) != ED25519_SEED_SIZE:
            raise InvalidInput(f"an Ed25519 private key seed is {ED25519_SEED_SIZE} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def algorithm(self) -> str:
        return ED25519

    def public_key_bytes(self) -> bytes:
        return self._public_key

    def public_key(self) -> Ed25519PublicKey:
        return self._private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def verifier(self) -> Ed25519Verifier:
        """The matching public key."""
        return Ed25519Verifier(self._public_key)

    def private_bytes_raw(self) -> bytes:
        """SECRET: the 32-byte RFC 8032 private seed.

        Only for writing the key in another format (e.g. a signed-note private key string).
        Never log, print or put the result in an exception.
        """
        return self._private_key.private_bytes_raw()

    def private_key(self) -> Ed25519PrivateKey:
        """SECRET: the ``cryptography`` private key object.

        An escape hatch for issuing (test) certificates with this key. Never log or print it,
        and prefer :meth:`sign` for everything else.
        """
        return self._private_key

    def __repr__(self) -> str:
        return f"Ed25519Signer(public_key={self._public_key.hex()})"

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would copy the secret into whatever stores the pickle.
        raise TypeError("Ed25519Signer cannot be pickled; use write_private_key()")


class Ed25519Verifier:
    """An Ed25519 public key (a :class:`~sealtrail.keys.Verifier`)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, public_key: bytes) -> None:
        if not isinstance(public_key, bytes) or len(public_key) != ED25519_PUBLIC_KEY_SIZE:
            raise InvalidInput(f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes")
        self._raw = public_key
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @property
    def algorithm(self) -> str:
        return ED25519

    def public_key_bytes(self) -> bytes:
        return self._raw

    def public_key(self) -> Ed25519PublicKey:
        """The public key as a ``cryptography`` object."""
        return self._key

    def verify(self, *, signature: bytes, message: bytes) -> None:
        if len(signature) != ED25519_SIGNATURE_SIZE:
            raise InvalidSignature(
                f"Ed25519 signature has {len(signature)} bytes, expected {ED25519_SIGNATURE_SIZE}"
            )
        try:
            self._key.verify(signature, message)
        except _CryptoInvalidSignature:
            raise InvalidSignature("Ed25519 signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ed25519Verifier):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash((ED25519, self._raw))

    def __repr__(self) -> str:
        return f"Ed25519Verifier(public_key={self._raw.hex()})"


def verify_ed25519(*, public_key: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 signature; raise :class:`~sealtrail.errors.InvalidSignature` if bad.

    A malformed public key (not 32 bytes) is the caller's mistake: ``InvalidInput``.
    """
    Ed25519Verifier(public_key).verify(signature=signature, message=message)
