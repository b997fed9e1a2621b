"""COSE_Key (RFC 9052 section 7) for public keys, key ids and key sets.

A key's id (``kid``) is its COSE Key Thumbprint (RFC 9679): SHA-256 over the deterministic
CBOR of the key type's required parameters. Anyone holding the public key computes the
same id, so a receipt's ``kid`` can be checked against a key set without trusting it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from sealtrail.errors import InvalidInput
from sealtrail.keys import (
    ED25519,
    ES256,
    ES384,
    ML_DSA_65,
    ML_DSA_87,
    Verifier,
    verifier_from_bytes,
)

from . import _cbor
from ._cose import ALG_BY_NAME, NAME_BY_ALG

__all__ = ["cose_key", "decode_key_set", "encode_key_set", "key_id", "verifier_from_cose_key"]

KTY_OKP, KTY_EC2, KTY_AKP = 1, 2, 7
CRV_P256, CRV_P384, CRV_ED25519 = 1, 2, 6
_EC = {ES256: (CRV_P256, 32), ES384: (CRV_P384, 48)}
#: Most keys in a key set we read.
MAX_KEYS = 64


def _required(verifier: Verifier) -> dict[int, Any]:
    """The thumbprint parameters of a public key (RFC 9679 section 4)."""
    alg, raw = verifier.algorithm, verifier.public_key_bytes()
    if alg in _EC:
        crv, size = _EC[alg]
        if len(raw) != 1 + 2 * size or raw[0] != 4:
            raise InvalidInput(f"{alg} public key is not an uncompressed point")
        return {1: KTY_EC2, -1: crv, -2: raw[1 : 1 + size], -3: raw[1 + size :]}
    if alg == ED25519:
        return {1: KTY_OKP, -1: CRV_ED25519, -2: raw}
    if alg in (ML_DSA_65, ML_DSA_87):
        return {1: KTY_AKP, 3: ALG_BY_NAME[alg], -1: raw}
    raise InvalidInput(f"no COSE key type for {alg}")


def key_id(verifier: Verifier) -> bytes:
    """The key's COSE Key Thumbprint (SHA-256, 32 bytes)."""
    return hashlib.sha256(_cbor.dumps(_required(verifier))).digest()


def cose_key(verifier: Verifier) -> dict[int, Any]:
    """The public key as a COSE_Key map, with ``alg`` and ``kid``."""
    return {**_required(verifier), 3: ALG_BY_NAME[verifier.algorithm], 2: key_id(verifier)}


def encode_key_set(verifiers: Iterable[Verifier]) -> bytes:
    """A COSE_KeySet (a CBOR array of COSE_Key maps)."""
    return _cbor.dumps([cose_key(v) for v in verifiers])


def verifier_from_cose_key(key: Mapping[Any, Any]) -> Verifier:
    """Our verifier for a COSE_Key map; its ``kid``, if present, must be its thumbprint."""
    alg_id = key.get(3)
    alg = NAME_BY_ALG.get(alg_id) if isinstance(alg_id, int) else None
    kty = key.get(1)
    try:
        if kty == KTY_EC2 and alg in _EC:
            crv, size = _EC[alg]
            x, y = key.get(-2), key.get(-3)
            if key.get(-1) != crv or not isinstance(x, bytes) or not isinstance(y, bytes):
                raise InvalidInput("EC2 key with the wrong curve or coordinates")
            if len(x) != size or len(y) != size:
                raise InvalidInput("EC2 key coordinates of the wrong length")
            verifier = verifier_from_bytes(alg, b"\x04" + x + y)
        elif kty == KTY_OKP and alg == ED25519 and key.get(-1) == CRV_ED25519:
            verifier = verifier_from_bytes(ED25519, _bytes(key.get(-2)))
        elif kty == KTY_AKP and alg in (ML_DSA_65, ML_DSA_87):
            verifier = verifier_from_bytes(alg, _bytes(key.get(-1)))
        else:
            raise InvalidInput(f"unsupported COSE key (kty {kty!r}, alg {alg_id!r})")
    except InvalidInput as exc:
        raise InvalidInput(exc.message, code="cose-bad-key") from None
    kid = key.get(2)
    if kid is not None and kid != key_id(verifier):
        raise InvalidInput("a COSE key's kid is not its thumbprint", code="cose-bad-key")
    return verifier


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput("a COSE key parameter must be a byte string")
    return value


def decode_key_set(data: bytes) -> dict[bytes, Verifier]:
    """Read a COSE_KeySet into ``kid -> verifier`` (kids recomputed, never trusted)."""
    keys = _cbor.loads(data)
    if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS:
        raise InvalidInput(f"a key set is an array of 1..{MAX_KEYS} COSE keys", code="cose-bad-key")
    out: dict[bytes, Verifier] = {}
    for key in keys:
        if not isinstance(key, dict):
            raise InvalidInput("a key set holds COSE_Key maps", code="cose-bad-key")
        verifier = verifier_from_cose_key(key)
        out[key_id(verifier)] = verifier
    return out
