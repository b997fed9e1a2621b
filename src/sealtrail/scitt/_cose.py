"""COSE_Sign1 (RFC 9052), hazmat: decode, check and sign single-signer COSE messages.

Why our own codec rather than a COSE library: registration's hot path is "decode, find
the key, check one signature", and measured on the 2-core development machine for ES256
over a 2 KB statement pycose managed ~390 checks per second, python-cwt ~6,600, and a
direct cbor2 + cryptography ``Sig_structure`` check ~10,900. The codec is small (one
structure, one to-be-signed form) and is cross-tested in both directions against pycose
and against scitt-cose's independent COSE_Sign1 (tests/unit/scitt/test_interop.py).

Rules enforced here for every message:

* tagged COSE_Sign1 (tag 18), an array of exactly four items, in strict CBOR
  (:mod:`._cbor`);
* the protected header is a byte string holding a map (or empty), and ``alg`` is in it —
  an algorithm in the unprotected header could be swapped without breaking the signature;
* no label in both headers; ``crit`` lists only labels this code understands;
* the signature's length fits the algorithm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from sealtrail.errors import InvalidInput, InvalidSignature
from sealtrail.keys import ED25519, ES256, ES384, ML_DSA_65, ML_DSA_87, Signer, Verifier

from . import _cbor

__all__ = [
    "ALG_BY_NAME",
    "COSE_SIGN1_TAG",
    "NAME_BY_ALG",
    "CoseSign1",
    "Header",
    "bad_signature",
    "decode_sign1",
    "sig_structure",
    "sign1",
]

COSE_SIGN1_TAG = 18


class Header:
    """COSE header labels used by Sealtrail (IANA COSE Header Parameters)."""

    ALG = 1
    CRIT = 2
    CONTENT_TYPE = 3
    KID = 4
    CWT_CLAIMS = 15  # RFC 9597
    X5CHAIN = 33  # RFC 9360
    X5T = 34
    PAYLOAD_HASH_ALG = 258  # COSE hash envelope
    PREIMAGE_CONTENT_TYPE = 259
    PAYLOAD_LOCATION = 260
    RECEIPTS = 394  # RFC 9942
    VDS = 395
    VDP = 396
    #: Sealtrail's own, in the private-use range (RFC 9052, section 11.1): in a receipt's
    #: protected header, the size of the tree whose root it signs (docs/scitt.md).
    TREE_SIZE = -65537


class Claim:
    """CWT claim keys (RFC 8392)."""

    ISS = 1
    SUB = 2
    IAT = 6


#: COSE algorithm identifiers (IANA COSE Algorithms) for the algorithms ``sealtrail.keys``
#: implements. -8 is EdDSA as registered by RFC 9053 (used with Ed25519 only here); -19 is
#: the fully specified Ed25519 of RFC 9864, accepted on input.
ALG_BY_NAME: dict[str, int] = {
    ES256: -7,
    ES384: -35,
    ED25519: -8,
    ML_DSA_65: -49,
    ML_DSA_87: -50,
}
NAME_BY_ALG: dict[int, str] = {v: k for k, v in ALG_BY_NAME.items()} | {-19: ED25519}

#: Signature length in bytes per algorithm.
SIGNATURE_SIZE: dict[str, int] = {
    ES256: 64,
    ES384: 96,
    ED25519: 64,
    ML_DSA_65: 3309,
    ML_DSA_87: 4627,
}

#: Header labels whose meaning this code implements (the only ones ``crit`` may name).
UNDERSTOOD = frozenset(
    {
        Header.ALG,
        Header.CRIT,
        Header.CONTENT_TYPE,
        Header.KID,
        Header.CWT_CLAIMS,
        Header.X5CHAIN,
        Header.PAYLOAD_HASH_ALG,
        Header.PREIMAGE_CONTENT_TYPE,
        Header.PAYLOAD_LOCATION,
        Header.RECEIPTS,
        Header.VDS,
        Header.VDP,
    }
)


def _bad(code: str, message: str) -> InvalidInput:
    return InvalidInput(message, code=code, hint="Check the COSE_Sign1 against RFC 9052.")


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The bytes a COSE_Sign1 signature covers (RFC 9052 section 4.4)."""
    return cbor2.dumps(["Signature1", protected, external_aad, payload])


@dataclass(frozen=True)
class CoseSign1:
    """A decoded COSE_Sign1. ``encoded`` is exactly the bytes it was decoded from."""

    protected_bytes: bytes
    protected: Mapping[int | str, Any]
    unprotected: Mapping[int | str, Any]
    payload: bytes | None
    signature: bytes
    encoded: bytes = field(repr=False)

    @property
    def alg(self) -> str:
        """The signature algorithm's name (``"ES256"``, ...)."""
        return NAME_BY_ALG[self.protected[Header.ALG]]

    @property
    def signing_mark(self) -> bytes:
        """The same for a message and any copy of it re-encoded without the key, and
        different for the same content signed afresh: its signed content and the first
        half of its signature. With ECDSA, ``(r, s)`` and ``(r, n - s)`` both verify, so
        anyone can make a second copy (a new entry id) of a signed message; a signer
        signing the same content again picks another ``r``."""
        half = len(self.signature) // 2
        return hashlib.sha256(
            self.protected_bytes + (self.payload or b"") + self.signature[:half]
        ).digest()

    def verify(self, verifier: Verifier, *, payload: bytes | None = None) -> None:
        """Check the signature with ``verifier``; ``payload`` if it is detached.

        Raises :class:`~sealtrail.errors.InvalidSignature` (code ``cose-bad-signature``).
        """
        message = self.to_be_signed(verifier, payload=payload)
        try:
            verifier.verify(signature=self.signature, message=message)
        except InvalidSignature as exc:
            raise bad_signature(exc.message) from None

    def to_be_signed(self, verifier: Verifier, *, payload: bytes | None = None) -> bytes:
        """The ``Sig_structure`` the signature must verify over, once ``verifier`` is known
        to be of the message's algorithm (for a check made elsewhere: :meth:`verify` is the
        whole of it, with :func:`bad_signature` for a signature that does not verify)."""
        content = self.payload if self.payload is not None else payload
        if content is None:
            raise _bad("cose-detached-payload", "the payload is detached and was not supplied")
        if verifier.algorithm != self.alg:
            raise InvalidSignature(
                f"the message is signed with {self.alg}, the key is {verifier.algorithm}",
                code="cose-wrong-key-type",
            )
        return sig_structure(self.protected_bytes, content)


def bad_signature(reason: str) -> InvalidSignature:
    """The error of a COSE signature that does not verify, ``reason`` saying why."""
    return InvalidSignature(
        f"the COSE signature does not verify: {reason}", code="cose-bad-signature"
    )


def encode_sign1(
    protected: bytes, unprotected: Mapping[int | str, Any], payload: bytes | None, signature: bytes
) -> bytes:
    """Tagged COSE_Sign1 bytes from its four parts (unprotected map encoded canonically)."""
    return _cbor.dumps(
        cbor2.CBORTag(COSE_SIGN1_TAG, [protected, dict(unprotected), payload, signature])
    )


def _is_label(value: object) -> bool:
    """RFC 9052 ``label = int / tstr`` (a CBOR boolean is neither)."""
    return isinstance(value, int | str) and not isinstance(value, bool)


def _shown(label: int | str) -> str:
    """A header value fit for an error message: integers as they are, text never echoed."""
    if isinstance(label, int) and -(2**31) <= label < 2**31:
        return str(label)
    return "(a text or out-of-range label)"


def decode_sign1(data: bytes) -> CoseSign1:  # noqa: PLR0912 (one branch per RFC 9052 rule)
    """Decode and structurally check a tagged COSE_Sign1 (no signature check yet)."""
    # The tag's content stays as cbor2 decodes it (a tuple, a frozendict): of its four
    # parts only the unprotected header is a container, and only it is thawed.
    value = _cbor.loads(data, thaw=False)
    if not isinstance(value, cbor2.CBORTag) or value.tag != COSE_SIGN1_TAG:
        raise _bad("cose-not-sign1", "not a tagged COSE_Sign1 (CBOR tag 18)")
    parts = value.value
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise _bad("cose-not-sign1", "a COSE_Sign1 is an array of four items")
    protected_bytes, unprotected, payload, signature = parts
    if not isinstance(protected_bytes, bytes):
        raise _bad("cose-bad-header", "the protected header must be a byte string")
    protected = _cbor.loads(protected_bytes) if protected_bytes else {}
    if not isinstance(protected, dict):
        raise _bad("cose-bad-header", "the protected header must hold a map")
    if not isinstance(unprotected, Mapping):
        raise _bad("cose-bad-header", "the unprotected header must be a map")
    unprotected = _cbor.thaw(unprotected) if unprotected else {}
    if payload is not None and not isinstance(payload, bytes):
        raise _bad("cose-bad-payload", "the payload must be a byte string or nil")
    if not isinstance(signature, bytes):
        raise _bad("cose-bad-signature-field", "the signature must be a byte string")
    if unprotected:
        if Header.ALG in unprotected:
            raise _bad(
                "cose-unprotected-alg", "alg must be in the protected header, not unprotected"
            )
        if not protected.keys().isdisjoint(unprotected):
            raise _bad("cose-bad-header", "a header label appears both protected and unprotected")
    if Header.ALG not in protected:
        raise _bad("cose-missing-alg", "the protected header has no alg")
    alg = protected[Header.ALG]
    if not _is_label(alg):
        raise _bad("cose-bad-header", "alg must be an integer or a text string")
    if alg not in NAME_BY_ALG:
        raise _bad("cose-unknown-alg", f"unsupported COSE algorithm {_shown(alg)}")
    if Header.CRIT in protected:
        crit = protected[Header.CRIT]
        if not isinstance(crit, list) or not crit or not all(_is_label(c) for c in crit):
            raise _bad("cose-bad-header", "crit must be a non-empty array of header labels")
        unknown = [_shown(label) for label in crit if label not in UNDERSTOOD]
        if unknown:
            raise _bad(
                "cose-unknown-critical",
                f"critical header labels not understood: {', '.join(unknown)}",
            )
    expected = SIGNATURE_SIZE[NAME_BY_ALG[alg]]
    if len(signature) != expected:
        raise InvalidSignature(
            f"a {NAME_BY_ALG[alg]} signature is {expected} bytes, this one {len(signature)}",
            code="cose-bad-signature",
        )
    return CoseSign1(protected_bytes, protected, unprotected, payload, signature, bytes(data))


def sign1(
    signer: Signer,
    *,
    protected: Mapping[int | str, Any],
    payload: bytes,
    unprotected: Mapping[int | str, Any] | None = None,
    detached: bool = False,
) -> bytes:
    """Sign ``payload`` into a tagged COSE_Sign1. ``alg`` is set from ``signer``.

    The protected header is encoded canonically. With ``detached`` the payload is signed
    but carried as nil.
    """
    header = {Header.ALG: ALG_BY_NAME[signer.algorithm], **protected}
    protected_bytes = _cbor.dumps(header)
    signature = signer.sign(sig_structure(protected_bytes, payload))
    return encode_sign1(
        protected_bytes, unprotected or {}, None if detached else payload, signature
    )
