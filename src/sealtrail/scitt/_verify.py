"""Offline verification of a transparent statement: the safe recipe.

Needs only the transparent statement and the service's public keys (its COSE key set from
``/.well-known/scitt-keys``). Every failure raises a
:class:`~sealtrail.errors.VerificationError` whose ``code`` and message say what failed:
the statement's encoding, its signature, a receipt's encoding, its key, or its proof and
signature.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from sealtrail.errors import InvalidInput, InvalidSignature, VerificationError
from sealtrail.keys import Verifier, verifier_for

from ._chain import ChainValidator, load_der
from ._cosekey import decode_key_set, key_id
from ._receipt import ReceiptInfo, split_transparent, verify_receipt
from ._statement import SignedStatement, parse_statement

__all__ = ["VerifiedStatement", "verify_transparent_statement"]


@dataclass(frozen=True)
class VerifiedStatement:
    """A transparent statement that verified, and what it says."""

    statement: SignedStatement
    receipts: tuple[ReceiptInfo, ...]
    #: How the statement's own signature was checked: "x5chain", "x5chain+anchors",
    #: "issuer-key", or "not checked" (kid only and no issuer key given).
    signature_check: str

    @property
    def entry_id(self) -> str:
        return self.statement.entry_id


def _fail(code: str, message: str) -> VerificationError:
    return VerificationError(message, code=code)


def verify_transparent_statement(  # noqa: PLR0912 (each failure named)
    data: bytes,
    *,
    service_keys: Mapping[bytes, Verifier] | bytes,
    issuer_key: Verifier | None = None,
    trust_anchors: Sequence[x509.Certificate] = (),
    now: dt.datetime | None = None,
) -> VerifiedStatement:
    """Verify a transparent statement offline; raise naming what failed.

    The statement's signature is checked with its x5chain's leaf (validated up to
    ``trust_anchors`` when given) or, for a statement naming its key by kid, with
    ``issuer_key``. An ``issuer_key`` given binds either way: a statement whose signing
    certificate is for another key is refused (``statement-wrong-key``).
    """
    keys = decode_key_set(service_keys) if isinstance(service_keys, bytes) else service_keys
    try:
        statement_bytes, receipts = split_transparent(data)
        statement = parse_statement(statement_bytes, max_size=len(statement_bytes))
    except InvalidInput as exc:
        raise _fail("statement-malformed", f"the statement is malformed: {exc.message}") from None
    except InvalidSignature as exc:
        raise _fail("statement-bad-signature", f"statement signature: {exc.message}") from None
    how = "not checked"
    verifier: Verifier | None = None
    try:
        if statement.x5chain:
            if trust_anchors:
                leaf = ChainValidator().validate(statement.x5chain, trust_anchors, now=now)
                how = "x5chain+anchors"
            else:
                leaf = load_der(statement.x5chain[0])
                how = "x5chain"
            verifier = verifier_for(leaf.public_key(), statement.alg)
            if issuer_key is not None and key_id(verifier) != key_id(issuer_key):
                raise _fail(
                    "statement-wrong-key",
                    "the statement's signing certificate is not for the given issuer key",
                )
        elif issuer_key is not None:
            if statement.kid is not None and statement.kid != key_id(issuer_key):
                raise _fail(
                    "statement-wrong-key", "the statement's kid is not the given issuer key"
                )
            verifier, how = issuer_key, "issuer-key"
        if verifier is not None:
            statement.message.verify(verifier)
    except InvalidSignature:
        raise _fail(
            "statement-bad-signature",
            "the statement's signature does not verify "
            "(its protected header, payload or signature was altered)",
        ) from None
    except (InvalidInput, ValueError, UnsupportedAlgorithm) as exc:
        raise _fail("statement-bad-certificate", f"the statement's certificate: {exc}") from None
    if not receipts:
        raise _fail("receipt-missing", "the statement carries no receipt (label 394)")
    infos = []
    for n, receipt in enumerate(receipts, start=1):
        try:
            infos.append(verify_receipt(receipt, leaf_entry=statement.leaf_entry, keys=keys))
        except VerificationError as exc:
            raise VerificationError(
                f"receipt {n}: {exc.message}", code=exc.code, hint=exc.hint
            ) from None
    return VerifiedStatement(statement, tuple(infos), how)
