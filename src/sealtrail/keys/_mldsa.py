"""Software ML-DSA keys (FIPS 204): ML-DSA-65 and ML-DSA-87, built on ``cryptography``.

Pure ML-DSA with an empty context string, the profile COSE uses; public keys and signatures
are the raw FIPS 204 encodings. ``cryptography`` gained ML-DSA in a recent release and only
when built against an OpenSSL that has it, so everything here first checks
:func:`mldsa_supported`: without it ``sealtrail.keys`` still imports, and only ML-DSA keys
are refused, with a message that says why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm

from sealtrail.errors import ConfigError, InvalidInput, InvalidSignature
from sealtrail.keys._protocols import ML_DSA_65, ML_DSA_87

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.mldsa import (
        MLDSA65PrivateKey,
        MLDSA65PublicKey,
        MLDSA87PrivateKey,
        MLDSA87PublicKey,
    )

    MlDsaPrivateKey = MLDSA65PrivateKey | MLDSA87PrivateKey
    MlDsaPublicKey = MLDSA65PublicKey | MLDSA87PublicKey

_mldsa: ModuleType | None
try:
    from cryptography.hazmat.primitives.asymmetric import mldsa as _mldsa_module
except ImportError:  # pragma: no cover - a cryptography without ML-DSA
    _mldsa = None
else:
    _mldsa = _mldsa_module

__all__ = ["MlDsaSigner", "MlDsaVerifier", "mldsa_supported"]

_UNSUPPORTED_HINT = (
    "ML-DSA needs a cryptography release that has ML-DSA-65 and ML-DSA-87 (50 does) and an "
    "OpenSSL with ML-DSA (3.5 or newer; the PyPI wheels bundle one). Use Ed25519, ES256 or "
    "ES384 otherwise."
)


@dataclass(frozen=True, slots=True)
class _Params:
    algorithm: str
    level: str  # "65" or "87", as in cryptography's class names
    public_key_size: int  # FIPS 204 table 2
    signature_size: int


_PARAMS: dict[str, _Params] = {
    ML_DSA_65: _Params(ML_DSA_65, "65", 1952, 3309),
    ML_DSA_87: _Params(ML_DSA_87, "87", 2592, 4627),
}


def _key_class(params: _Params, kind: str) -> type[Any] | None:
    """cryptography's ``MLDSA<level><kind>`` class (``MlDsa...`` in early releases), or None."""
    if _mldsa is None:
        return None
    for name in (f"MLDSA{params.level}{kind}", f"MlDsa{params.level}{kind}"):
        found = getattr(_mldsa, name, None)
        if isinstance(found, type):
            return found
    return None


def _algorithm_of(key: object, kind: str) -> str | None:
    for params in _PARAMS.values():
        key_class = _key_class(params, kind)
        if key_class is not None and isinstance(key, key_class):
            return params.algorithm
    return None


def mldsa_private_algorithm(key: object) -> str | None:
    """ML-DSA-65 / ML-DSA-87 for a ``cryptography`` ML-DSA private key, else ``None``."""
    return _algorithm_of(key, "PrivateKey")


def mldsa_public_algorithm(key: object) -> str | None:
    """ML-DSA-65 / ML-DSA-87 for a ``cryptography`` ML-DSA public key, else ``None``."""
    return _algorithm_of(key, "PublicKey")


@functools.cache
def mldsa_supported() -> bool:
    """Whether this ``cryptography`` can sign and verify both ML-DSA-65 and ML-DSA-87."""
    for params in _PARAMS.values():
        key_class = _key_class(params, "PrivateKey")
        if key_class is None:
            return False
        try:
            key_class.generate()
        except UnsupportedAlgorithm:
            return False
    return True


def _params(algorithm: str) -> _Params:
    try:
        return _PARAMS[algorithm]
    except KeyError:
        raise InvalidInput(
            f"not an ML-DSA algorithm: {algorithm!r} (supported: {', '.join(_PARAMS)})"
        ) from None


def _supported_class(
    params: _Params, kind: str, error: type[ConfigError | InvalidInput]
) -> type[Any]:
    key_class = _key_class(params, kind)
    if key_class is None or not mldsa_supported():
        raise error(
            f"{params.algorithm} is not available: this build of cryptography has no ML-DSA",
            hint=_UNSUPPORTED_HINT,
        )
    return key_class


class MlDsaSigner:
    """An ML-DSA-65 or ML-DSA-87 private key held in this process (a
    :class:`~sealtrail.keys.Signer`).

    Signatures are hedged (fresh randomness each time), pure ML-DSA over the message with an
    empty context. Its ``repr`` shows the algorithm and a prefix of the public key only.
    """

    __slots__ = ("_params", "_private_key", "_public_key")

    def __init__(self, private_key: MlDsaPrivateKey) -> None:
        algorithm = mldsa_private_algorithm(private_key)
        if algorithm is None:
            raise InvalidInput("MlDsaSigner needs an ML-DSA-65 or ML-DSA-87 private key")
        self._params = _PARAMS[algorithm]
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, algorithm: str = ML_DSA_65) -> MlDsaSigner:
        """A fresh key for ``algorithm`` (ML-DSA-65 or ML-DSA-87).

        Raises :class:`~sealtrail.errors.ConfigError` if this ``cryptography`` lacks ML-DSA.
        """
        key_class = _supported_class(_params(algorithm), "PrivateKey", ConfigError)
        private_key: MlDsaPrivateKey = key_class.generate()
        return cls(private_key)

    @property
    def algorithm(self) -> str:
        return self._params.algorithm

    def public_key_bytes(self) -> bytes:
        return self._public_key

    def public_key(self) -> MlDsaPublicKey:
        return self._private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def verifier(self) -> MlDsaVerifier:
        """The matching public key."""
        return MlDsaVerifier(self._public_key, algorithm=self._params.algorithm)

    def private_key(self) -> MlDsaPrivateKey:
        """SECRET: the ``cryptography`` private key object.

        An escape hatch for issuing (test) certificates with this key. Never log or print it,
        and prefer :meth:`sign` for everything else.
        """
        return self._private_key

    def __repr__(self) -> str:
        return (
            f"MlDsaSigner(algorithm={self._params.algorithm}, "
            f"public_key={self._public_key[:16].hex()}...)"
        )

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would copy the secret into whatever stores the pickle.
        raise TypeError("MlDsaSigner cannot be pickled; use write_private_key()")


class MlDsaVerifier:
    """An ML-DSA-65 or ML-DSA-87 public key (a :class:`~sealtrail.keys.Verifier`).

    ``public_key`` is the raw FIPS 204 encoding (1,952 bytes for ML-DSA-65, 2,592 for
    ML-DSA-87). A key of the wrong size, or an ML-DSA key when this ``cryptography`` has no
    ML-DSA, is :class:`~sealtrail.errors.InvalidInput`.
    """

    __slots__ = ("_key", "_params", "_raw")

    def __init__(self, public_key: bytes, *, algorithm: str) -> None:
        params = _params(algorithm)
        if not isinstance(public_key, bytes) or len(public_key) != params.public_key_size:
            raise InvalidInput(f"an {algorithm} public key is {params.public_key_size} bytes")
        key_class = _supported_class(params, "PublicKey", InvalidInput)
        try:
            self._key: MlDsaPublicKey = key_class.from_public_bytes(public_key)
        except ValueError:
            raise InvalidInput(f"not a valid {algorithm} public key") from None
        self._params = params
        self._raw = public_key

    @property
    def algorithm(self) -> str:
        return self._params.algorithm

    def public_key_bytes(self) -> bytes:
        return self._raw

    def public_key(self) -> MlDsaPublicKey:
        """The public key as a ``cryptography`` object."""
        return self._key

    def verify(self, *, signature: bytes, message: bytes) -> None:
        expected = self._params.signature_size
        if len(signature) != expected:
            raise InvalidSignature(
                f"{self._params.algorithm} signature has {len(signature)} bytes, "
                f"expected {expected}"
            )
        try:
            self._key.verify(signature, message)
        except _CryptoInvalidSignature:
            raise InvalidSignature(f"{self._params.algorithm} signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MlDsaVerifier):
            return NotImplemented
        return self._params.algorithm == other._params.algorithm and self._raw == other._raw

    def __hash__(self) -> int:
        return hash((self._params.algorithm, self._raw))

    def __repr__(self) -> str:
        return (
            f"MlDsaVerifier(algorithm={self._params.algorithm}, "
            f"public_key={self._raw[:16].hex()}...)"
        )
