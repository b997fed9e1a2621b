"""Software ECDSA keys: ES256 (P-256 + SHA-256) and ES384 (P-384 + SHA-384), built on
``cryptography``.

Signatures are the fixed-length ``r || s`` form COSE (RFC 9053 section 2.1) and JOSE use,
not the DER ``ECDSA-Sig-Value`` that OpenSSL and ``cryptography`` produce; the conversion
happens here and nowhere else. Public keys are uncompressed SEC1 points (``04 || x || y``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from sealtrail.errors import InvalidInput, InvalidSignature
from sealtrail.keys._protocols import ES256, ES384

__all__ = ["EcdsaSigner", "EcdsaVerifier"]


@dataclass(frozen=True, slots=True)
class _Curve:
    algorithm: str
    name: str  # as people say it, for messages
    curve: ec.EllipticCurve  # stateless: one instance is shared
    hash: hashes.HashAlgorithm  # stateless too
    size: int  # bytes per coordinate and per signature half


_CURVES: dict[str, _Curve] = {
    ES256: _Curve(ES256, "P-256", ec.SECP256R1(), hashes.SHA256(), 32),
    ES384: _Curve(ES384, "P-384", ec.SECP384R1(), hashes.SHA384(), 48),
}
_BY_CURVE_NAME = {c.curve.name: c for c in _CURVES.values()}


def _curve_for_algorithm(algorithm: str) -> _Curve:
    try:
        return _CURVES[algorithm]
    except KeyError:
        raise InvalidInput(
            f"not an ECDSA algorithm: {algorithm!r} (supported: {', '.join(_CURVES)})"
        ) from None


def curve_algorithm(curve: ec.EllipticCurve) -> str | None:
    """ES256 / ES384 for a P-256 / P-384 curve object, else ``None``."""
    found = _BY_CURVE_NAME.get(curve.name)
    return found.algorithm if found is not None else None


class EcdsaSigner:
    """An ECDSA private key held in this process (a :class:`~sealtrail.keys.Signer`).

    P-256 keys sign as ES256, P-384 keys as ES384; other curves are refused. :meth:`sign`
    returns raw ``r || s`` (64 or 96 bytes), a fresh random nonce each time. Its ``repr``
    shows only the algorithm and public key.
    """

    __slots__ = ("_curve", "_private_key", "_public_key")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise InvalidInput("EcdsaSigner needs an ECDSA private key")
        found = _BY_CURVE_NAME.get(private_key.curve.name)
        if found is None:
            raise InvalidInput(
                f"ECDSA keys on {private_key.curve.name} are not supported "
                "(supported: P-256 for ES256, P-384 for ES384)"
            )
        self._curve = found
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    @classmethod
    def generate(cls, algorithm: str = ES256) -> EcdsaSigner:
        """A fresh key for ``algorithm`` (ES256 or ES384) from the operating system's CSPRNG."""
        return cls(ec.generate_private_key(_curve_for_algorithm(algorithm).curve))

    @property
    def algorithm(self) -> str:
        return self._curve.algorithm

    def public_key_bytes(self) -> bytes:
        return self._public_key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        der = self._private_key.sign(message, ec.ECDSA(self._curve.hash))
        r, s = decode_dss_signature(der)
        size = self._curve.size
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def verifier(self) -> EcdsaVerifier:
        """The matching public key."""
        return EcdsaVerifier(self._public_key, algorithm=self._curve.algorithm)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """SECRET: the ``cryptography`` private key object.

        An escape hatch for issuing (test) certificates with this key. Never log or print it,
        and prefer :meth:`sign` for everything else.
        """
        return self._private_key

    def __repr__(self) -> str:
        return (
            f"EcdsaSigner(algorithm={self._curve.algorithm}, public_key={self._public_key.hex()})"
        )

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would copy the secret into whatever stores the pickle.
        raise TypeError("EcdsaSigner cannot be pickled; use write_private_key()")


class EcdsaVerifier:
    """An ES256 or ES384 public key (a :class:`~sealtrail.keys.Verifier`).

    ``public_key`` is the uncompressed SEC1 point (65 bytes for P-256, 97 for P-384).
    A compressed point, a point of the wrong size or one not on the curve is the caller's
    mistake: :class:`~sealtrail.errors.InvalidInput`.
    """

    __slots__ = ("_curve", "_key", "_raw")

    def __init__(self, public_key: bytes, *, algorithm: str) -> None:
        curve = _curve_for_algorithm(algorithm)
        expected = 1 + 2 * curve.size
        if not isinstance(public_key, bytes) or len(public_key) != expected or public_key[0] != 4:
            raise InvalidInput(
                f"an {algorithm} public key is an uncompressed {curve.name} point "
                f"of {expected} bytes starting with 04"
            )
        try:
            self._key = ec.EllipticCurvePublicKey.from_encoded_point(curve.curve, public_key)
        except ValueError:
            raise InvalidInput(
                f"the {algorithm} public key is not a point on {curve.name}"
            ) from None
        self._curve = curve
        self._raw = public_key

    @property
    def algorithm(self) -> str:
        return self._curve.algorithm

    def public_key_bytes(self) -> bytes:
        return self._raw

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public key as a ``cryptography`` object."""
        return self._key

    def verify(self, *, signature: bytes, message: bytes) -> None:
        self._verify(signature, message, ec.ECDSA(self._curve.hash))

    @property
    def hash_name(self) -> str:
        """The hashlib name of the hash the signature is over (``sha256``, ``sha384``)."""
        return self._curve.hash.name

    def verify_digest(self, *, signature: bytes, digest: bytes) -> None:
        """:meth:`verify` given the message's hash (:attr:`hash_name`) rather than the
        message: what a worker process is sent instead of the whole message."""
        if len(digest) != self._curve.hash.digest_size:
            raise InvalidSignature(f"{self._curve.algorithm} digest of the wrong length")
        self._verify(signature, digest, ec.ECDSA(Prehashed(self._curve.hash)))

    def _verify(self, signature: bytes, data: bytes, algorithm: ec.ECDSA) -> None:
        size = self._curve.size
        if len(signature) != 2 * size:
            raise InvalidSignature(
                f"{self._curve.algorithm} signature has {len(signature)} bytes, expected {2 * size}"
            )
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        # r or s of zero or beyond the group order is rejected by the verification itself.
        try:
            self._key.verify(encode_dss_signature(r, s), data, algorithm)
        except _CryptoInvalidSignature:
            raise InvalidSignature(f"{self._curve.algorithm} signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EcdsaVerifier):
            return NotImplemented
        return self._curve.algorithm == other._curve.algorithm and self._raw == other._raw

    def __hash__(self) -> int:
        return hash((self._curve.algorithm, self._raw))

    def __repr__(self) -> str:
        return f"EcdsaVerifier(algorithm={self._curve.algorithm}, public_key={self._raw.hex()})"
