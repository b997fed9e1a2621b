"""COSE_Key (RFC 9052 section 7) for public keys, key ids and key sets.

A key's id (``kid``) is its COSE Key Thumbprint (RFC 9679): SHA-256 over the deterministic
CBOR of the key type's required parameters. Anyone holding the public key computes the
same id, so a receipt's ``kid`` can be checked against a key set without trusting it. The
keys Sealtrail publishes always carry that kid and their ``alg``; SCRAPI only recommends
thumbprint kids, so a key set read from elsewhere may name its keys otherwise, or leave
``alg`` out (it is optional in RFC 9052): :func:`decode_key_set` reads those too.
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
#: The algorithm of a key without ``alg``, by key type and curve.
_ALG_BY_CURVE = {
    (KTY_EC2, CRV_P256): ES256,
    (KTY_EC2, CRV_P384): ES384,
    (KTY_OKP, CRV_ED25519): ED25519,
}
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


def verifier_from_cose_key(key: Mapping[Any, Any], *, thumbprint_kid: bool = False) -> Verifier:
    """Our verifier for a COSE_Key map.

    ``alg`` (label 3) is optional (RFC 9052 section 7.1): without it, an EC2 key on P-256
    is taken for ES256, on P-384 for ES384, and an OKP key on Ed25519 for EdDSA; an ``alg``
    that contradicts the key's type or curve is refused. An ML-DSA (AKP) key must say its
    ``alg``, which is one of its thumbprint parameters. ``kid``, when present, must be a
    byte string; with ``thumbprint_kid`` it must also be the key's thumbprint (RFC 9679),
    as it is in every key this service publishes. Raises ``cose-bad-key``.
    """
    alg_id = key.get(3)
    kty = key.get(1)
    try:
        alg = _algorithm(kty, key.get(-1), alg_id)
        if kty == KTY_EC2:
            _, size = _EC[alg]
            x, y = key.get(-2), key.get(-3)
            if not isinstance(x, bytes) or not isinstance(y, bytes):
                raise InvalidInput("EC2 key coordinates must be byte strings")
            if len(x) != size or len(y) != size:
                raise InvalidInput("EC2 key coordinates of the wrong length")
            verifier = verifier_from_bytes(alg, b"\x04" + x + y)
        elif kty == KTY_OKP:
            verifier = verifier_from_bytes(ED25519, _bytes(key.get(-2)))
        else:
            verifier = verifier_from_bytes(alg, _bytes(key.get(-1)))
    except InvalidInput as exc:
        raise InvalidInput(exc.message, code="cose-bad-key") from None
    kid = key.get(2)
    if kid is not None and not isinstance(kid, bytes):
        raise InvalidInput(
            "a COSE key's kid is not a byte string (RFC 9052 section 7.1 makes it a bstr)",
            code="cose-bad-key",
        )
    if thumbprint_kid and kid is not None and kid != key_id(verifier):
        raise InvalidInput("a COSE key's kid is not its thumbprint", code="cose-bad-key")
    return verifier


def _algorithm(kty: object, crv: object, alg_id: object) -> str:
    """The key's algorithm: its ``alg`` if it has one (which must fit its type and curve),
    else the one its type and curve imply."""
    implied = _ALG_BY_CURVE.get((kty, crv)) if type(kty) is int and type(crv) is int else None
    if alg_id is None:
        if implied is None:
            raise InvalidInput(
                f"a COSE key without alg must be EC2 on P-256 or P-384, or OKP on Ed25519 "
                f"(this one: kty {_shown(kty)}, crv {_shown(crv)})"
            )
        return implied
    alg = NAME_BY_ALG.get(alg_id) if type(alg_id) is int else None
    if alg is None:
        raise InvalidInput(f"unsupported COSE key algorithm {_shown(alg_id)}")
    if type(kty) is int and kty == KTY_AKP and alg in (ML_DSA_65, ML_DSA_87):
        return alg
    if implied != alg:
        raise InvalidInput(
            f"a COSE key's alg ({alg}) does not fit its type and curve "
            f"(kty {_shown(kty)}, crv {_shown(crv)})"
        )
    return alg


def _shown(value: object) -> str:
    """A key parameter fit for an error message: small integers only, nothing echoed."""
    if type(value) is int and -(2**31) <= value < 2**31:
        return str(value)
    return "absent" if value is None else "(not a small integer)"


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput("a COSE key parameter must be a byte string")
    return value


def decode_key_set(data: bytes, *, thumbprint_kids: bool = False) -> dict[bytes, Verifier]:
    """Read a COSE_KeySet into ``kid -> verifier``.

    Each key is found by its thumbprint (RFC 9679), computed here, and by the ``kid`` it
    states, if any: SCRAPI only recommends thumbprints, and another service's receipts name
    their key by the kid it gave it. Two different keys under one kid are refused. With
    ``thumbprint_kids`` a stated kid must be the thumbprint (as in the key sets Sealtrail
    publishes). Raises ``cose-bad-key``.
    """
    keys = _cbor.loads(data)
    if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS:
        raise InvalidInput(f"a key set is an array of 1..{MAX_KEYS} COSE keys", code="cose-bad-key")
    out: dict[bytes, Verifier] = {}
    for key in keys:
        if not isinstance(key, dict):
            raise InvalidInput("a key set holds COSE_Key maps", code="cose-bad-key")
        verifier = verifier_from_cose_key(key, thumbprint_kid=thumbprint_kids)
        stated = key.get(2)
        for kid in (key_id(verifier), *([stated] if isinstance(stated, bytes) else [])):
            if out.setdefault(kid, verifier) != verifier:
                raise InvalidInput(
                    f"two different keys in the key set answer to kid {kid.hex()[:16]}",
                    code="cose-bad-key",
                )
    return out
