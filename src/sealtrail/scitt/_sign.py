"""Making signed statements in the profile Sealtrail registers."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, BinaryIO

from sealtrail.keys import Signer

from ._cose import Claim, Header, sign1
from ._cosekey import key_id

__all__ = ["sign_statement"]

#: Bytes of a payload file hashed at a time.
_CHUNK = 1 << 20
_HASH_ALGS = {"sha-256": (-16, hashlib.sha256), "sha-384": (-43, hashlib.sha384)}


def sign_statement(
    signer: Signer,
    *,
    issuer: str,
    subject: str,
    content_type: str,
    payload: bytes | BinaryIO,
    x5chain: Sequence[bytes] = (),
    hash_envelope: str | None = None,
    location: str | None = None,
    issued_at: int | None = None,
) -> bytes:
    """A signed statement (COSE_Sign1) with everything in the protected header.

    With ``x5chain`` (DER, leaf first) the key is identified by its certificate chain,
    else by ``kid`` (the key's COSE thumbprint, registered with the organization). With
    ``hash_envelope`` (``"sha-256"`` or ``"sha-384"``) the payload is replaced by its
    digest and ``content_type`` becomes the preimage content type; ``payload`` may then be
    a binary file, read to its end in chunks (never held whole: a firmware image, say).
    """
    protected: dict[int | str, Any] = {
        Header.CWT_CLAIMS: {
            Claim.ISS: issuer,
            Claim.SUB: subject,
            Claim.IAT: int(time.time()) if issued_at is None else issued_at,
        },
    }
    if x5chain:
        protected[Header.X5CHAIN] = list(x5chain) if len(x5chain) > 1 else x5chain[0]
    else:
        protected[Header.KID] = key_id(signer.verifier())
    if hash_envelope is None:
        protected[Header.CONTENT_TYPE] = content_type
        body = payload if isinstance(payload, bytes) else payload.read()
    else:
        alg, fn = _HASH_ALGS[hash_envelope]
        if isinstance(payload, bytes):
            body = fn(payload).digest()
        else:
            digest = fn()
            while chunk := payload.read(_CHUNK):
                digest.update(chunk)
            body = digest.digest()
        protected[Header.PAYLOAD_HASH_ALG] = alg
        protected[Header.PREIMAGE_CONTENT_TYPE] = content_type
        if location is not None:
            protected[Header.PAYLOAD_LOCATION] = location
    return sign1(signer, protected=protected, payload=body)
