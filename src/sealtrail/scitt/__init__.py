"""SCITT: COSE signed statements in, COSE receipts out.

Safe recipes first: :class:`TransparencyService` registers statements and issues receipts;
:func:`verify_transparent_statement` checks a transparent statement offline;
:func:`sign_statement` makes a signed statement in the profile Sealtrail registers.
The raw COSE codec (``sign1``, ``decode_sign1``), receipts and COSE keys are hazmat, for
tools that need them.

Wire formats: docs/scitt.md (CDDL).
"""

from __future__ import annotations

from ._chain import ChainValidator, fingerprint, load_certificates
from ._cose import ALG_BY_NAME, COSE_SIGN1_TAG, NAME_BY_ALG, CoseSign1, Header, decode_sign1, sign1
from ._cosekey import cose_key, decode_key_set, encode_key_set, key_id, verifier_from_cose_key
from ._keyrecords import (
    KEYS_RECORD_TYPE,
    MAX_RETIRED_KEYS,
    ServiceKeys,
    keys_record,
    parse_keys_record,
)
from ._receipt import ReceiptInfo, ReceiptSigner, add_receipts, split_transparent, verify_receipt
from ._registry import ORG_RECORD_TYPE, Organization, Policy, Registry, parse_org_record
from ._rows import StatementBacklog, StatementRows, adopt_row_key
from ._service import (
    MAX_CLOCK_SKEW,
    History,
    PayloadRule,
    Registration,
    RuleContext,
    Submission,
    TransparencyService,
    edited_columns,
    issuer_key,
)
from ._sign import sign_statement
from ._statement import (
    MAX_IAT,
    MAX_STATEMENT_SIZE,
    MAX_STATEMENT_SIZE_LIMIT,
    SignedStatement,
    entry_id,
    parse_statement,
)
from ._users import (
    GRANT_RECORD_TYPE,
    MAX_CERTIFICATES,
    MAX_TOKENS,
    PERSONAS,
    USER_RECORD_TYPE,
    Grant,
    Grants,
    Token,
    User,
    Users,
    certificate_hash,
    grant_record,
    new_token,
    parse_certificates,
    parse_grant_record,
    parse_user_record,
    token_hash,
    user_record,
    with_article,
)
from ._verify import VerifiedStatement, verify_transparent_statement

__all__ = [
    "ALG_BY_NAME",
    "COSE_SIGN1_TAG",
    "GRANT_RECORD_TYPE",
    "KEYS_RECORD_TYPE",
    "MAX_CERTIFICATES",
    "MAX_CLOCK_SKEW",
    "MAX_IAT",
    "MAX_RETIRED_KEYS",
    "MAX_STATEMENT_SIZE",
    "MAX_STATEMENT_SIZE_LIMIT",
    "MAX_TOKENS",
    "NAME_BY_ALG",
    "ORG_RECORD_TYPE",
    "PERSONAS",
    "USER_RECORD_TYPE",
    "ChainValidator",
    "CoseSign1",
    "Grant",
    "Grants",
    "Header",
    "History",
    "Organization",
    "PayloadRule",
    "Policy",
    "ReceiptInfo",
    "ReceiptSigner",
    "Registration",
    "Registry",
    "RuleContext",
    "ServiceKeys",
    "SignedStatement",
    "StatementBacklog",
    "StatementRows",
    "Submission",
    "Token",
    "TransparencyService",
    "User",
    "Users",
    "VerifiedStatement",
    "add_receipts",
    "adopt_row_key",
    "certificate_hash",
    "cose_key",
    "decode_key_set",
    "decode_sign1",
    "edited_columns",
    "encode_key_set",
    "entry_id",
    "fingerprint",
    "grant_record",
    "issuer_key",
    "key_id",
    "keys_record",
    "load_certificates",
    "new_token",
    "parse_certificates",
    "parse_grant_record",
    "parse_keys_record",
    "parse_org_record",
    "parse_statement",
    "parse_user_record",
    "sign1",
    "sign_statement",
    "split_transparent",
    "token_hash",
    "user_record",
    "verifier_from_cose_key",
    "verify_receipt",
    "verify_transparent_statement",
    "with_article",
]
