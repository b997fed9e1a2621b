"""Signed statements: the profile Sealtrail registers (see docs/scitt.md for the CDDL).

A signed statement is a tagged COSE_Sign1 whose **protected** header carries:

* ``alg`` (1) — one of ES256, ES384, EdDSA (Ed25519), ML-DSA-65, ML-DSA-87;
* ``content type`` (3) — of the payload; with a hash envelope, ``preimage content type``
  (259) instead, the type of the hashed content;
* ``CWT claims`` (15) with ``iss`` (1, text) and ``sub`` (2, text), and optionally ``iat`` (6);
* the signing key: ``x5chain`` (33, leaf certificate first) or ``kid`` (4) of a key
  registered for the issuer's organization;
* optionally a COSE hash envelope: ``payload_hash_alg`` (258), ``preimage content type``
  (259) and ``payload location`` (260); the payload is then the content's digest.

The payload is attached (for large content, use the hash envelope). The unprotected
header is empty, so the registered bytes are exactly what a transparent statement
becomes again once its receipts are taken out.

The statement's **leaf entry** in the log is ``SHA-256(statement bytes)``; its entry id is
that digest in lowercase hex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sealtrail.errors import InvalidInput, TooLarge
from sealtrail.keys.parallel import hash_holding_gil

from ._cose import CoseSign1, Header, decode_sign1

__all__ = [
    "HASH_ENVELOPE_ALGS",
    "MAX_IAT",
    "MAX_STATEMENT_SIZE",
    "MAX_STATEMENT_SIZE_LIMIT",
    "SignedStatement",
    "entry_id",
    "parse_statement",
]

#: Largest signed statement a service accepts by default, in bytes (a service may be
#: configured up to :data:`MAX_STATEMENT_SIZE_LIMIT`; registration policies may set less).
MAX_STATEMENT_SIZE = 1 << 20
#: The most any service or policy may accept: a device manifest of 10,000 identities with
#: their chains is about 6 to 15 MB.
MAX_STATEMENT_SIZE_LIMIT = 64 << 20
#: Hash envelope ``payload_hash_alg`` values (COSE algorithm ids) -> digest length.
HASH_ENVELOPE_ALGS: dict[int, int] = {-16: 32, -43: 48, -44: 64}  # SHA-256, -384, -512
#: Longest issuer / subject / content type accepted, in characters.
MAX_NAME_LENGTH = 1024
#: Most certificates in an x5chain.
MAX_CHAIN_LENGTH = 8
#: Latest ``iat`` a statement may carry: 9999-12-31T23:59:59Z, the last second a date can
#: name (registration holds ``iat`` much closer: :data:`MAX_CLOCK_SKEW`).
MAX_IAT = 253_402_300_799


def _bad(code: str, message: str) -> InvalidInput:
    return InvalidInput(message, code=code, hint="See docs/scitt.md for the statement profile.")


def entry_id(statement: bytes) -> str:
    """The entry id of a registered statement: hex SHA-256 of its bytes."""
    return hashlib.sha256(statement).hexdigest()


@dataclass(frozen=True)
class SignedStatement:
    """A signed statement that passed the profile's structural checks (not yet its signature)."""

    message: CoseSign1
    issuer: str
    subject: str
    issued_at: int | None
    content_type: str | int
    kid: bytes | None
    x5chain: tuple[bytes, ...]
    payload_hash_alg: int | None

    @property
    def encoded(self) -> bytes:
        return self.message.encoded

    @cached_property
    def entry_id(self) -> str:
        return self.leaf_entry.hex()

    @cached_property
    def leaf_entry(self) -> bytes:
        """What the log holds for this statement: SHA-256 of its bytes (hashed once)."""
        return hash_holding_gil("sha256", self.message.encoded)

    @property
    def alg(self) -> str:
        return self.message.alg

    @property
    def payload(self) -> bytes:
        assert self.message.payload is not None  # parse_statement refuses nil
        return self.message.payload


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise _bad(
            "statement-bad-claims", f"{what} must be text of 1..{MAX_NAME_LENGTH} characters"
        )
    return value


def _chain(value: object) -> tuple[bytes, ...]:
    chain = [value] if isinstance(value, bytes) else value
    if (
        not isinstance(chain, list)
        or not chain
        or len(chain) > MAX_CHAIN_LENGTH
        or not all(isinstance(c, bytes) for c in chain)
    ):
        raise _bad(
            "statement-bad-x5chain",
            f"x5chain must be a certificate or an array of 1..{MAX_CHAIN_LENGTH} certificates",
        )
    return tuple(chain)


def parse_statement(data: bytes, *, max_size: int = MAX_STATEMENT_SIZE) -> SignedStatement:
    """Check ``data`` against the signed-statement profile (signature not checked here)."""
    if len(data) > max_size:
        raise TooLarge(
            f"statement of {len(data)} bytes exceeds the {max_size}-byte limit",
            code="statement-too-large",
        )
    message = decode_sign1(data)
    if message.unprotected:
        raise _bad(
            "statement-unprotected-header",
            "a statement to register must have an empty unprotected header "
            "(put headers in the protected header; take receipts out)",
        )
    # No need to re-encode and compare: the CBOR gate admits only shortest-form, definite
    # encodings, and an empty map has one, so these bytes are what a transparent statement
    # minus its receipts re-encodes to.
    if message.payload is None:
        raise _bad(
            "statement-detached-payload",
            "detached payloads cannot be checked at registration; sign a hash envelope instead",
        )
    return _profile(message)


def _no_foreign_headers(protected: Mapping[int | str, Any]) -> None:
    """No receipt headers in a statement, and no header present with a null value."""
    for label in (Header.RECEIPTS, Header.VDS, Header.VDP):
        if label in protected:
            raise _bad(
                "statement-bad-header",
                f"header {int(label)} belongs to receipts, not to a signed statement",
            )
    if any(value is None for value in protected.values()):
        raise _bad("statement-bad-header", "a header value may not be null")


def _profile(message: CoseSign1) -> SignedStatement:
    protected: Mapping[int | str, Any] = message.protected
    claims = protected.get(Header.CWT_CLAIMS)
    if not isinstance(claims, dict):
        raise _bad("statement-bad-claims", "the protected header has no CWT claims (label 15)")
    issuer = _text(claims.get(1), "the iss claim")
    subject = _text(claims.get(2), "the sub claim")
    iat = claims.get(6)
    if iat is not None and (type(iat) is not int or not 0 <= iat <= MAX_IAT):
        raise _bad(
            "statement-bad-claims",
            f"the iat claim must be an integer from 0 to {MAX_IAT} (seconds since 1970)",
        )
    _no_foreign_headers(protected)
    hash_alg = protected.get(Header.PAYLOAD_HASH_ALG)
    # With a hash envelope the content type is the preimage's (259), and 3 must be absent.
    if hash_alg is not None and Header.CONTENT_TYPE in protected:
        raise _bad("statement-bad-hash-envelope", "a hash envelope carries 259, not content type 3")
    content_type = protected.get(
        Header.PREIMAGE_CONTENT_TYPE if hash_alg is not None else Header.CONTENT_TYPE
    )
    if isinstance(content_type, str):
        _text(content_type, "the content type")
    elif not (isinstance(content_type, int) and 0 <= content_type <= 0xFFFF):
        raise _bad("statement-bad-content-type", "the protected header has no content type")
    kid = protected.get(Header.KID)
    if kid is not None and (not isinstance(kid, bytes) or not 0 < len(kid) <= 64):
        raise _bad("statement-bad-kid", "kid must be a byte string of 1..64 bytes")
    x5chain = _chain(protected[Header.X5CHAIN]) if Header.X5CHAIN in protected else ()
    if not x5chain and kid is None:
        raise _bad("statement-no-key", "the protected header names no key (x5chain or kid)")
    if hash_alg is not None:
        size = HASH_ENVELOPE_ALGS.get(hash_alg) if isinstance(hash_alg, int) else None
        if size is None:
            raise _bad(
                "statement-bad-hash-envelope",
                "unsupported payload hash alg (use -16 SHA-256, -43 SHA-384 or -44 SHA-512)",
            )
        if message.payload is None or len(message.payload) != size:
            raise _bad("statement-bad-hash-envelope", f"the payload must be a {size}-byte digest")
    return SignedStatement(
        message=message,
        issuer=issuer,
        subject=subject,
        issued_at=iat,
        content_type=content_type,
        kid=kid,
        x5chain=x5chain,
        payload_hash_alg=hash_alg,
    )
