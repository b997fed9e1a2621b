"""Clients for a Sealtrail transparency service's HTTP API (SCRAPI, administration and the
provenance queries).

The protocol lives once, in plain generator functions ("flows") that yield what to do next —
send this request, or wait this long — and receive the answer. :class:`Client` drives a
flow with blocking I/O and :class:`AsyncClient` with ``await``; neither holds any protocol
logic of its own, so the two cannot drift apart.

Everything that can go wrong is a :class:`sealtrail.errors.Error`: problem details from the
service map back to the error classes it raised (the service's stable ``code`` is kept), a
connection failure is :class:`ServiceUnreachable`, an unexpected answer is
:class:`ServiceError`. Messages name URLs and entry ids, never tokens or statement contents.

A client may hold a bearer token (a user's ``stk_…`` or the administrator token,
docs/auth.md) sent with every request; an administrative method's own ``token=`` takes
priority over it. Tokens are SECRET: checked for shape without being echoed, never logged,
kept out of every ``repr``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import math
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, urlencode

import cbor2
import httpx

import sealtrail
from sealtrail.errors import (
    ConfigError,
    Conflict,
    Error,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    RetryLater,
    TooLarge,
    Unauthorized,
    VerificationError,
)
from sealtrail.scitt import (
    Header,
    Registration,
    _cbor,
    add_receipts,
    decode_key_set,
    decode_sign1,
    entry_id,
    split_transparent,
)
from sealtrail.scitt._registry import load_json

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN_DAYS",
    "MAX_RESPONSE_SIZE",
    "AsyncClient",
    "Client",
    "Forbidden",
    "IssuedToken",
    "RegisteredStatement",
    "RegistrationTimeout",
    "ServiceError",
    "ServiceUnreachable",
    "TokenInfo",
    "Unauthorized",
    "UserChange",
    "UserInfo",
]

#: Seconds for one HTTP exchange, and the default for a whole registration.
DEFAULT_TIMEOUT: Final = 30.0
#: Largest response body read, in bytes: a statement is at most 1 MiB (scitt
#: ``MAX_STATEMENT_SIZE``) and a transparent statement adds at most 16 small receipts.
MAX_RESPONSE_SIZE: Final = 4 * 1024 * 1024
#: Bounds on a server's ``Retry-After`` while polling, in seconds: never a busy loop, never
#: a wait the caller's timeout would not allow anyway.
MIN_POLL_DELAY: Final = 0.05
MAX_POLL_DELAY: Final = 60.0
#: Used when a 302/303 carries no usable ``Retry-After``.
DEFAULT_POLL_DELAY: Final = 1.0

COSE = "application/cose"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
#: RFC 9290 Concise Problem Details: what a SCRAPI service answers a client that admits no
#: JSON (this client names JSON problems in every Accept, and reads either).
PROBLEM_CBOR = "application/concise-problem-details+cbor"
#: RFC 9290's keys: title, detail, and the RFC 9457 members tunnelled (type, status, ...).
_CBOR_TITLE, _CBOR_DETAIL, _CBOR_TUNNEL_7807 = -1, -2, 7807
_USER_AGENT = f"sealtrail/{sealtrail.__version__}"
_ENTRY_ID = re.compile(r"[0-9a-f]{64}")
_DEVICE_ID = _ENTRY_ID
#: The provenance query routes (docs/queries.md).
_PROVENANCE = "/provenance/v1"
#: Longest serial, shipment id or organization name (``sealtrail.provenance.MAX_ID_LENGTH``).
MAX_NAME_LENGTH: Final = 128
#: What a bearer token may look like (printable ASCII, no spaces): anything else could
#: never match, and would end up in an HTTP library's error message.
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")
#: The largest TCP port.
MAX_PORT: Final = 65535
_URL_HINT = "For example http://127.0.0.1:8080 or https://ts.example"
#: A token's lifetime when :meth:`Client.issue_token` names none (the service's default).
DEFAULT_TOKEN_DAYS: Final = 90

# Codes the service sends with HTTP 400 for a statement that failed a signature, chain,
# issuer or policy check (a VerificationError there). Every other 400 is InvalidInput.
_VERIFICATION_CODES = frozenset(
    {
        "verification-failed",
        "invalid-proof",
        "invalid-signature",
        "malformed-note",
        "cose-bad-signature",
        "cose-wrong-key-type",
        "statement-bad-kid",
        "org-record-untrusted",
    }
)
_VERIFICATION_PREFIXES = ("chain-", "issuer-", "policy-", "receipt-")
#: Hints for the service's 401 codes about a user's token (docs/auth.md); problem details
#: carry no hint, and the class's own is about the administrator token.
TOKEN_HINTS = {
    "token-required": "This service requires a token (docs/auth.md): a user's, sent as "
    "'Authorization: Bearer <token>' (the command line: --token-file or $SEALTRAIL_TOKEN).",
    "token-unknown": "The token is unknown or was revoked: ask an administrator for a new "
    "one (sealtrail users token).",
    "token-expired": "The token has expired: ask an administrator for a new one "
    "(sealtrail users token).",
    "user-disabled": "This user is disabled: ask an administrator.",
    "certificate-unknown": "This TLS client certificate is no user's: ask an administrator "
    "to add it to yours (sealtrail users cert).",
}
#: Hints for the service's 404 codes: what was not found, instead of the class's own hint
#: (about log indexes and tree sizes). A 404 without one of these codes (another server's,
#: or a proxy's) gets the hint of what was asked for (a user, a token, a node, ...).
NOT_FOUND_HINTS = {
    "user-unknown": "No user of that name: see the users with 'sealtrail users list'.",
    "token-unknown": "The user holds no token of that id: see each user's token ids with "
    "'sealtrail users list'.",
    "certificate-unknown": "The user is known by no certificate of that SHA-256: see theirs "
    "with 'sealtrail users cert NAME'.",
    "entry-unknown": "The service holds no statement under that entry id (the SHA-256 of the "
    "signed statement): check the id, or register the statement.",
    "entry-pending": "The statement is accepted but not registered yet: ask again in a moment.",
    "org-unknown": "No organization of that name is onboarded here (sealtrail org put).",
    "grant-unknown": "The statement is not shared with that organization.",
    "node-unknown": "No registered statement built a node of that serial (as of the size "
    "asked for, if any): check the serial.",
    "device-unknown": "No registered manifest holds that device (as of the size asked for, "
    "if any): check its id, or its maker and serial.",
    "shipment-unknown": "No custody record names that shipment (as of the size asked for, "
    "if any): check its id.",
}
#: Hints for a statement the service refused (HTTP 400), by the code's prefix: the class's
#: own hint is about data that fails to verify after it was received.
_REFUSAL_HINTS = (
    (
        "policy-",
        "The organization's registration policy does not allow this statement: its content "
        "types, subjects, algorithms or max_size (docs/scitt.md).",
    ),
    (
        "chain-",
        "The statement's certificate chain must lead to one of its organization's anchors, "
        "unexpired and not revoked (docs/scitt.md).",
    ),
    (
        "issuer-",
        "The statement's issuer (iss) must be one its organization's record lists, and its "
        "key one the record has not retired (docs/scitt.md).",
    ),
    (
        "cose-",
        "The service refused the statement: its signature does not verify with the key it "
        "names (docs/scitt.md).",
    ),
)
#: The code prefixes of a provenance record the service refused at registration, by its
#: format or by the log's history (docs/provenance.md lists every code with its rule).
_PROVENANCE_PREFIXES = (
    "provenance-",
    "manifest-",
    "device-",
    "firmware-",
    "assembly-",
    "custody-",
    "arrival-",
    "attestation-",
    "evidence-",
    "compliance-",
)
_NONCE_HINT = (
    "A challenge nonce is answered once, for the server it was issued for, within the "
    "service's challenge_ttl: ask for fresh ones (sealtrail challenge SERIAL) and sign the "
    "record again (docs/provenance.md)."
)
_PROVENANCE_HINT = (
    "The ledger refused this provenance record and registered nothing: docs/provenance.md "
    "gives the rule behind each code. Correct the record, or first register what the rule "
    "asks for, then send it again."
)


def client_tls(
    certificate: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    *,
    ca: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A TLS context for :class:`Client`: it trusts the CAs in ``ca`` (a PEM bundle) or,
    without one, ``$SSL_CERT_FILE``'s or the system's; with ``certificate`` (PEM, with any
    intermediates after it) and its ``key`` (PEM, not encrypted), it presents them, for a
    service that knows its users by client certificates. ``InvalidInput``
    (``tls-files-invalid``) names a file given that cannot be used, ``ConfigError`` a
    ``$SSL_CERT_FILE`` that cannot; never their contents."""
    from_environment = ca is None and bool(os.environ.get("SSL_CERT_FILE"))
    try:
        context = ssl.create_default_context(cafile=ca or os.environ.get("SSL_CERT_FILE") or None)
    except (OSError, ssl.SSLError) as exc:
        if from_environment:
            raise _bad_ca_bundle(exc) from None
        raise InvalidInput(
            f"the CA file {ca} cannot be used: {_tls_reason(exc)}", code="tls-files-invalid"
        ) from None
    if certificate is not None:
        try:
            context.load_cert_chain(certificate, key)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(
                f"the client certificate {certificate} or its key {key} cannot be used: "
                f"{_tls_reason(exc)}",
                code="tls-files-invalid",
            ) from None
    return context


class ServiceUnreachable(Error):
    """No HTTP answer: connection refused or broken, name not resolved, or timed out."""

    code = "service-unreachable"
    hint = "Check the URL and that the service is running and reachable from here."


class ServiceError(Error):
    """The service answered, but not as the protocol says (5xx, a malformed body, ...)."""

    code = "service-error"
    hint = "The service misbehaved; retry later or tell its operator."


class RegistrationTimeout(Error):
    """The statement was accepted but not registered before the caller's timeout.

    The service carries on registering it. Fetch its receipt later by ``entry_id``, or
    submit the same statement again: registration is idempotent (the same bytes get the
    same entry).
    """

    code = "registration-timeout"
    hint = (
        "The service is still registering the statement: fetch its receipt later by entry id "
        "(GET /entries/<id>), or submit the same statement again (it keeps its entry)."
    )

    def __init__(self, message: str, *, entry_id: str) -> None:
        super().__init__(message)
        self.entry_id = entry_id


@dataclass(frozen=True)
class RegisteredStatement:
    """A registered statement and the receipt the service issued for it.

    ``leaf_index`` and ``tree_size`` are read from the receipt *without verifying it*; use
    :func:`sealtrail.scitt.verify_transparent_statement` on :meth:`transparent_statement`
    with the service's keys before trusting anything here.
    """

    entry_id: str
    statement: bytes = field(repr=False)
    receipt: bytes = field(repr=False)

    @property
    def leaf_index(self) -> int | None:
        """The entry's index in the log, as the receipt claims (unverified)."""
        position = _receipt_position(self.receipt)
        return None if position is None else position[1]

    @property
    def tree_size(self) -> int | None:
        """The tree size the receipt was issued against, as it claims (unverified)."""
        position = _receipt_position(self.receipt)
        return None if position is None else position[0]

    def transparent_statement(self) -> bytes:
        """The statement with the receipt in its unprotected header (label 394)."""
        return add_receipts(self.statement, [self.receipt])


def _receipt_position(receipt: bytes) -> tuple[int, int] | None:
    """``(tree_size, leaf_index)`` from a receipt's inclusion proof, unverified."""
    try:
        vdp = decode_sign1(receipt).unprotected.get(Header.VDP)
        proofs = vdp.get(-1) if isinstance(vdp, dict) else None
        if not isinstance(proofs, list) or not proofs or not isinstance(proofs[0], bytes):
            return None
        proof = _cbor.loads(proofs[0])  # bounded nesting and size, never cbor2's errors
    except Error:
        return None
    if isinstance(proof, list) and len(proof) == 3 and all(isinstance(v, int) for v in proof[:2]):
        return proof[0], proof[1]
    return None


@dataclass(frozen=True)
class TokenInfo:
    """A user's token as the administrator sees it: its id and expiry, never its secret."""

    id: str
    #: Unix time after which the service refuses it.
    expires: int


@dataclass(frozen=True)
class UserInfo:
    """A user record (docs/auth.md), without token hashes."""

    name: str
    version: int
    persona: str
    org: str | None
    disabled: bool
    tokens: tuple[TokenInfo, ...]
    #: The SHA-256 (hex) of each TLS client certificate the user is known by.
    certificates: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserChange:
    """A user's new record and the log entry that holds it."""

    user: UserInfo
    registration: Registration


@dataclass(frozen=True)
class IssuedToken:
    """A newly issued token. ``token`` is SECRET: the service returns it once and keeps only
    its hash; it is left out of ``repr``."""

    user: str
    id: str
    expires: int
    token: str = field(repr=False)
    registration: Registration


# -- the protocol, once: flows yield steps and receive replies ------------------------------


@dataclass(frozen=True)
class _Call:
    """Send this request (``url`` relative to the base URL, or absolute)."""

    method: str
    url: str | httpx.URL
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None


@dataclass(frozen=True)
class _Wait:
    """Sleep this many seconds, then resume the flow with ``None``."""

    seconds: float


@dataclass(frozen=True)
class _Reply:
    """A whole HTTP answer (the body read up to :data:`MAX_RESPONSE_SIZE`)."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: httpx.URL


_T = TypeVar("_T")
_Step = _Call | _Wait
_Flow = Generator[_Step, _Reply | None, _T]


def _exchange(call: _Call) -> _Flow[_Reply]:
    reply = yield call
    assert reply is not None, "a driver answers every _Call with a _Reply"
    return reply


def _accept(media: str) -> str:
    """An Accept header for ``media`` that names JSON problem details too."""
    return media if media == JSON else f"{media}, {PROBLEM_JSON};q=0.5"


def _fetch(path: str, *, accept: str, what: str, missing: str | None = None) -> _Flow[bytes]:
    """The body of a GET answered 200; ``missing``: the :data:`NOT_FOUND_HINTS` code of
    what a 404 without a code of ours would mean (see :func:`_error_for`)."""
    reply = yield from _exchange(_Call("GET", path, {"Accept": _accept(accept)}))
    if reply.status != 200:
        raise _error_for(reply, what, missing=missing)
    return reply.content


def _register(statement: bytes, *, timeout: float) -> _Flow[RegisteredStatement]:
    entry = entry_id(statement)
    deadline = time.monotonic() + timeout
    post = _Call("POST", "/entries", {"Content-Type": COSE, "Accept": _accept(COSE)}, statement)
    reply = yield from _exchange(post)
    resent = False
    while True:
        if reply.status == 201:
            return RegisteredStatement(entry, statement, _checked_cose(reply, "receipt"))
        if reply.status != 303:
            raise _error_for(reply, "registration", registering=True)
        # Accepted, not yet registered: follow Location until the receipt is there.
        url = _location(reply)
        delay = _retry_after(reply, default=DEFAULT_POLL_DELAY)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RegistrationTimeout(
                    f"entry {entry} was accepted but not registered within {timeout:g} s",
                    entry_id=entry,
                )
            yield _Wait(min(max(delay, MIN_POLL_DELAY), remaining))
            reply = yield from _exchange(_Call("GET", url, {"Accept": _accept(COSE)}))
            if reply.status == 200:
                return RegisteredStatement(entry, statement, _checked_cose(reply, "receipt"))
            if reply.status == 404 and not resent and _problem(reply)[0] == "entry-unknown":
                # The service says it holds no statement under the entry (on Sealtrail, a
                # row lost or edited behind the service): send it again, once, which
                # registers it once whatever happened.
                break
            if reply.status == 404:
                # Another 404 (a service that answers 303 before it stores, a proxy): as
                # pending, until the deadline.
                delay = _retry_after(reply, default=DEFAULT_POLL_DELAY)
                continue
            if reply.status != 302:
                raise _error_for(reply, f"receipt of entry {entry}", registering=True)
            delay = _retry_after(reply, default=DEFAULT_POLL_DELAY)
        resent = True
        reply = yield from _exchange(post)


def _receipt(entry: str) -> _Flow[bytes]:
    reply = yield from _exchange(_Call("GET", f"/entries/{entry}", {"Accept": _accept(COSE)}))
    if reply.status == 302:
        raise NotFound(
            f"entry {entry} is not in the log yet",
            code="entry-pending",
            hint=NOT_FOUND_HINTS["entry-pending"],
        )
    if reply.status != 200:  # a refusal here is of a statement sent for registration
        raise _error_for(
            reply, f"receipt of entry {entry}", registering=True, missing="entry-unknown"
        )
    return _checked_cose(reply, "receipt")


def _statement(entry: str) -> _Flow[bytes]:
    data = yield from _fetch(
        f"/entries/{entry}/statement", accept=COSE, what="statement", missing="entry-unknown"
    )
    if entry_id(data) != entry:
        raise _mismatch(entry, "statement")
    return data


def _transparent_statement(entry: str) -> _Flow[bytes]:
    data = yield from _fetch(
        f"/entries/{entry}/transparent-statement",
        accept=COSE,
        what="transparent statement",
        missing="entry-unknown",
    )
    try:
        statement, _ = split_transparent(data)
    except Error as exc:
        raise ServiceError(f"the transparent statement is malformed: {exc.message}") from None
    if entry_id(statement) != entry:
        raise _mismatch(entry, "transparent statement")
    return data


def _service_keys() -> _Flow[bytes]:
    data = yield from _fetch(
        "/.well-known/scitt-keys", accept="application/cose-key-set", what="service keys"
    )
    try:
        decode_key_set(data)
    except Error as exc:
        raise ServiceError(f"the service keys are not a COSE_KeySet: {exc.message}") from None
    return data


def _configuration() -> _Flow[dict[str, Any]]:
    data = yield from _fetch(
        "/.well-known/transparency-configuration", accept=JSON, what="configuration"
    )
    return _json_object(data, "the transparency configuration")


def _checkpoint() -> _Flow[bytes]:
    return (yield from _fetch("/checkpoint", accept="text/plain", what="checkpoint"))


def _check_token(token: str, what: str = "a token") -> str:
    """``token`` if it has a bearer token's shape. SECRET: never echoed, not even in part."""
    if not _TOKEN.fullmatch(token):
        raise InvalidInput(
            f"{what} must be 1..4096 printable ASCII characters, no spaces",
            code="token-malformed",
            hint="Check the token file or variable for stray characters.",
        )
    return token


def _admin(
    method: str, path: str, token: str | None, body: dict[str, Any] | bytes | None = None
) -> _Call:
    """An administrative request; ``token`` (when given) overrides the client's own."""
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = JSON
    if token is not None:
        headers["Authorization"] = f"Bearer {_check_token(token, 'the administrator token')}"
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return _Call(method, path, headers, content)


def _registration(doc: dict[str, Any], what: str) -> Registration:
    entry, index = doc.get("entry_id"), doc.get("index")
    if not isinstance(entry, str) or not isinstance(index, int) or isinstance(index, bool):
        raise ServiceError(f"{what} lacks entry_id or index")
    return Registration(entry, index)


def _put_organization(name: str, record_json: bytes, token: str | None) -> _Flow[Registration]:
    if not name:
        raise InvalidInput("an organization needs a name", code="org-record-invalid")
    path = f"/admin/organizations/{quote(name, safe='')}"
    reply = yield from _exchange(_admin("PUT", path, token, record_json))
    if reply.status not in (200, 201):
        raise _error_for(reply, f"organization {name!r}", missing="org-unknown")
    doc = _json_object(reply.content, "the organization registration")
    return _registration(doc, "the organization registration")


def _user_name(name: str) -> str:
    return _segment(name, "a user name", "user-name-invalid")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _user_info(doc: object) -> UserInfo:
    """A user as the service lists it (``tokens`` with ids and expiries only)."""
    if not isinstance(doc, dict):
        raise ServiceError("a user in the answer is not a JSON object")
    name, version, persona = doc.get("user"), doc.get("version"), doc.get("persona")
    org, disabled, tokens = doc.get("org"), doc.get("disabled", False), doc.get("tokens")
    if (
        not isinstance(name, str)
        or not _int(version)
        or not isinstance(persona, str)
        or not (org is None or isinstance(org, str))
        or not isinstance(disabled, bool)
        or not isinstance(tokens, list)
    ):
        raise ServiceError("a user in the answer lacks user, version, persona or tokens")
    infos = []
    for t in tokens:
        if not isinstance(t, dict) or not isinstance(t.get("id"), str):
            raise ServiceError(f"user {name!r} has a token without an id")
        if not _int(t.get("expires")):
            raise ServiceError(f"user {name!r} has a token without an expiry")
        infos.append(TokenInfo(t["id"], t["expires"]))
    certificates = doc.get("certificates", [])
    if not isinstance(certificates, list) or not all(isinstance(c, str) for c in certificates):
        raise ServiceError(f"user {name!r} has certificates that are not a list of hashes")
    assert isinstance(version, int)
    return UserInfo(name, version, persona, org, disabled, tuple(infos), tuple(certificates))


def _users(token: str | None) -> _Flow[list[UserInfo]]:
    reply = yield from _exchange(_admin("GET", "/admin/users", token))
    if reply.status != 200:
        raise _error_for(reply, "users")
    users = _json_object(reply.content, "the user list").get("users")
    if not isinstance(users, list):
        raise ServiceError("the user list lacks users")
    return [_user_info(u) for u in users]


def _user_change(
    reply: _Reply, name: str, ok: tuple[int, ...], missing: str = "user-unknown"
) -> UserChange:
    if reply.status not in ok:
        raise _error_for(reply, f"user {name!r}", missing=missing)
    doc = _json_object(reply.content, "the user registration")
    return UserChange(_user_info(doc), _registration(doc, "the user registration"))


def _put_user(
    name: str, persona: str | None, org: str | None, disabled: bool, token: str | None
) -> _Flow[UserChange]:
    body: dict[str, Any] = {"disabled": disabled}
    if persona is not None:  # None: only ``disabled`` changes (the service keeps the rest)
        body["persona"] = persona
        if org is not None:
            body["org"] = org
    reply = yield from _exchange(_admin("PUT", f"/admin/users/{_user_name(name)}", token, body))
    return _user_change(reply, name, (200, 201))


def _put_certificates(
    name: str, certificates: Sequence[str], token: str | None
) -> _Flow[UserChange]:
    body = {"certificates": list(certificates)}
    reply = yield from _exchange(_admin("PUT", f"/admin/users/{_user_name(name)}", token, body))
    return _user_change(reply, name, (200,))


def _issue_token(name: str, days: int, token: str | None) -> _Flow[IssuedToken]:
    if not _int(days):
        raise InvalidInput("days is a whole number of days", code="admin-request-invalid")
    path = f"/admin/users/{_user_name(name)}/tokens"
    reply = yield from _exchange(_admin("POST", path, token, {"days": days}))
    if reply.status != 201:
        raise _error_for(reply, f"a token for user {name!r}", missing="user-unknown")
    doc = _json_object(reply.content, "the issued token")
    token_id, expires, secret = doc.get("id"), doc.get("expires"), doc.get("token")
    if not isinstance(token_id, str) or not _int(expires) or not isinstance(secret, str):
        raise ServiceError("the issued token lacks id, expires or token")
    assert isinstance(expires, int)
    return IssuedToken(name, token_id, expires, secret, _registration(doc, "the issued token"))


def _revoke_token(name: str, token_id: str, token: str | None) -> _Flow[UserChange]:
    segment = _segment(token_id, "a token id", "token-id-invalid")
    path = f"/admin/users/{_user_name(name)}/tokens/{segment}"
    reply = yield from _exchange(_admin("DELETE", path, token))
    return _user_change(reply, name, (200,), missing="token-unknown")


def _challenge(serial: str, count: int) -> _Flow[dict[str, Any]]:
    body = json.dumps({"server_serial": serial, "count": count}).encode()
    reply = yield from _exchange(
        _Call("POST", _PROVENANCE + "/challenges", {"Content-Type": JSON, "Accept": JSON}, body)
    )
    if reply.status != 201:
        raise _error_for(reply, f"challenges for {serial!r}", missing="node-unknown")
    return _json_object(reply.content, "the challenge")


def _nonces(doc: dict[str, Any], count: int) -> list[bytes]:
    nonces = doc.get("nonces")
    if not isinstance(nonces, list) or len(nonces) != count:
        raise ServiceError(f"the service answered {count} challenge(s) without their nonces")
    try:
        return [bytes.fromhex(n) for n in nonces]
    except (TypeError, ValueError):
        raise ServiceError("the service answered a nonce that is not hex") from None


#: The fields each provenance view always carries (docs/queries.md) and their JSON types:
#: an answer without them is not the view asked for, whatever its status.
_VIEW_FIELDS: dict[str, dict[str, type]] = {
    "device": {"device_id": str, "size": int},
    "node": {"serial": str, "type": str, "children": list, "size": int},
    "tree": {"serial": str, "type": str, "children": list, "size": int},
    "timeline": {"serial": str, "size": int, "checkpoint": int, "entries": list},
    "device timeline": {"device_id": str, "size": int, "checkpoint": int, "entries": list},
    "shipment": {"shipment_id": str, "size": int},
    "compliance": {"servers": list, "size": int},
    "policy": {
        "version": int,
        "max_attestation_age": int,
        "min_security_version": dict,
        "size": int,
    },
}


#: What a view's 404 without a code of ours is about (:data:`NOT_FOUND_HINTS`).
_VIEW_MISSING = {
    "device": "device-unknown",
    "device timeline": "device-unknown",
    "node": "node-unknown",
    "tree": "node-unknown",
    "timeline": "node-unknown",
    "shipment": "shipment-unknown",
}


def _query(path: str, what: str, **params: str | int | None) -> _Flow[dict[str, Any]]:
    """A provenance view (JSON) at ``path`` under :data:`_PROVENANCE`, the ``what`` of
    :data:`_VIEW_FIELDS`; :class:`ServiceError` if it lacks a field every such view has."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    url = _PROVENANCE + path + (f"?{query}" if query else "")
    data = yield from _fetch(url, accept=JSON, what=what, missing=_VIEW_MISSING.get(what))
    doc = _json_object(data, f"the {what} in the answer")
    missing = [name for name, kind in _VIEW_FIELDS[what].items() if not _holds(doc, name, kind)]
    if missing:
        raise ServiceError(f"the {what} in the answer lacks {', '.join(missing)}")
    return doc


def _holds(doc: dict[str, Any], name: str, kind: type) -> bool:
    """Whether ``doc[name]`` is a ``kind`` (an ``int``: a whole number, not negative)."""
    value = doc.get(name)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, kind)


# -- decoding answers -------------------------------------------------------------------------


def _checked_cose(reply: _Reply, what: str) -> bytes:
    try:
        decode_sign1(reply.content)
    except Error as exc:
        raise ServiceError(f"the service's {what} is not a COSE_Sign1: {exc.message}") from None
    return reply.content


#: Why a service's JSON may not be read: Python's own limits, which a service's answer
#: must not turn into a RecursionError or ValueError of the caller's.
_UNREADABLE = "malformed, nested too deep, or a number of too many digits"


def _load_json(data: bytes, what: str) -> object:
    """A service's answer parsed as JSON; :class:`ServiceError` for one that is not JSON,
    or JSON nested deeper than the interpreter's recursion limit or with an integer of more
    digits than Python converts (``sys.get_int_max_str_digits``)."""
    try:
        return load_json(data, f"{what} is not JSON ({_UNREADABLE})", code=ServiceError.code)
    except InvalidInput as exc:
        raise ServiceError(exc.message) from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    doc = _load_json(data, what)
    if not isinstance(doc, dict):
        raise ServiceError(f"{what} is not a JSON object")
    return doc


def _mismatch(entry: str, what: str) -> VerificationError:
    return VerificationError(
        f"the service's {what} for entry {entry} does not hash to that entry id",
        code="entry-mismatch",
    )


def _location(reply: _Reply) -> httpx.URL:
    """The 303's Location, resolved; it must stay on the service's origin."""
    location = reply.headers.get("location")
    if not location:
        raise ServiceError("the service answered 303 without a Location")
    try:
        url = reply.url.join(location)
    except httpx.InvalidURL:
        raise ServiceError("the service answered 303 with an unusable Location") from None
    if (url.scheme, url.host, url.port) != (reply.url.scheme, reply.url.host, reply.url.port):
        raise ServiceError(f"the service redirected to another origin: {_display(url)}")
    return url


def _retry_after(reply: _Reply, *, default: float) -> float:
    """``Retry-After`` in seconds (delay-seconds or an HTTP date), clamped to a sane range."""
    value = reply.headers.get("retry-after", "").strip()
    seconds = default
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=dt.UTC)
                seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if not math.isfinite(seconds):
        seconds = default
    return min(max(seconds, 0.0), MAX_POLL_DELAY)


def _problem(reply: _Reply) -> tuple[str | None, str | None]:
    """The ``code`` and ``detail`` of RFC 9457 problem details, or of RFC 9290 Concise
    Problem Details (another SCITT service's), if the body is one; ``(None, None)`` if not,
    or if it cannot be read (:func:`_read_problem` tells these apart)."""
    return _read_problem(reply) or (None, None)


def _read_problem(reply: _Reply) -> tuple[str | None, str | None] | None:
    """As :func:`_problem`, but ``None`` for a body of a JSON or CBOR media type that does
    not parse: malformed, or beyond what the parser takes (nesting, an integer's digits)."""
    media = reply.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == PROBLEM_CBOR:
        return _concise_problem(reply.content)
    if media not in (PROBLEM_JSON, JSON):
        return None, None
    try:
        doc = load_json(reply.content, "problem details", code=ServiceError.code)
    except InvalidInput:
        return None
    if not isinstance(doc, dict):
        return None, None
    return _texts(doc.get("code"), doc.get("detail") or doc.get("title"))


def _concise_problem(content: bytes) -> tuple[str | None, str | None] | None:
    """The ``code`` and ``detail`` of RFC 9290 Concise Problem Details (``(None, None)`` if
    the CBOR is something else), or ``None`` if ``content`` is not CBOR that decodes.
    Not :mod:`sealtrail.scitt._cbor`: another service's problem need not be deterministic
    CBOR. cbor2 bounds the nesting itself; anything it raises is a malformed body."""
    try:
        doc = cbor2.loads(content)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None, None
    tunnel = doc.get(_CBOR_TUNNEL_7807)
    code = tunnel.get("code") if isinstance(tunnel, dict) else None
    return _texts(code, doc.get(_CBOR_DETAIL) or doc.get(_CBOR_TITLE))


#: A code a service may send: what :data:`TOKEN_HINTS` and its like are keyed by, and
#: nothing that would break the command line's one line (``error (<code>): …``).
_PROBLEM_CODE = re.compile(r"[\x21-\x7e]{1,128}")
#: Longest detail kept from a service's problem: a message, not a document.
MAX_DETAIL_LENGTH: Final = 1000


def _texts(code: object, detail: object) -> tuple[str | None, str | None]:
    """``code`` where it is a code's printable word, and ``detail`` where it is non-empty
    text, made one line of printable characters (a service's newlines and terminal escapes
    never reach the caller's messages) and cut to :data:`MAX_DETAIL_LENGTH`."""
    if isinstance(detail, str):
        detail = " ".join("".join(c if c.isprintable() else " " for c in detail).split())
        if len(detail) > MAX_DETAIL_LENGTH:
            detail = detail[: MAX_DETAIL_LENGTH - 1] + "…"
    return (
        code if isinstance(code, str) and _PROBLEM_CODE.fullmatch(code) else None,
        detail if isinstance(detail, str) and detail else None,
    )


def _is_verification(code: str | None) -> bool:
    return code is not None and (
        code in _VERIFICATION_CODES or code.startswith(_VERIFICATION_PREFIXES)
    )


def _refusal_hint(code: str | None) -> str | None:
    """The hint for a statement refused with ``code`` (None: the class's own)."""
    if code is None:
        return None
    for prefix, hint in _REFUSAL_HINTS:
        if code.startswith(prefix):
            return hint
    if code.startswith("nonce-") or code.endswith("-nonce-replayed"):
        return _NONCE_HINT
    if code.startswith(_PROVENANCE_PREFIXES):
        return _PROVENANCE_HINT
    return None


#: The problem of a busy answer whose body cannot be read: none, the status says it all.
_NO_PROBLEM: tuple[str | None, str | None] = (None, None)


def _error_for(  # noqa: PLR0911 (one return per status)
    reply: _Reply, what: str, *, registering: bool = False, missing: str | None = None
) -> Error:
    """The sealtrail error a non-success answer stands for; the service's code is kept.
    ``registering``: the answer refuses a statement sent for registration. ``missing``: the
    :data:`NOT_FOUND_HINTS` code of what a 404 means when it carries no code of its own
    (a proxy's, another server's, or the generic ``not-found``): its hint is about what
    was asked for, not the class's (about log indexes). A body of problem details that
    does not parse is the service's fault: :class:`ServiceError`, whatever the status but
    429 and 503, which ask to be retried whatever their body says (a proxy's page)."""
    status = reply.status
    problem = _read_problem(reply) or (_NO_PROBLEM if status in (429, 503) else None)
    if problem is None:
        return ServiceError(
            f"{what}: HTTP {status} from {_display(reply.url)} with a body that cannot be "
            f"read ({_UNREADABLE})"
        )
    code, detail = problem
    message = detail or f"{what}: HTTP {status} from {_display(reply.url)}"
    if status == 400:
        if _is_verification(code):
            return VerificationError(message, code=code, hint=_refusal_hint(code))
        return InvalidInput(message, code=code, hint=_refusal_hint(code) if registering else None)
    if status == 401:
        return Unauthorized(message, code=code, hint=TOKEN_HINTS.get(code or ""))
    if status == 403:
        return Forbidden(message, code=code)
    if status == 404:
        return NotFound(message, code=code, hint=_not_found_hint(code, missing))
    if status == 409:
        return Conflict(message, code=code)
    if status == 413:
        return TooLarge(message, code=code)
    if status == 422:
        return VerificationError(message, code=code)
    if status == 429:
        return RateLimited(
            message, retry_after=_retry_after(reply, default=DEFAULT_POLL_DELAY), code=code
        )
    if status == 503:
        return RetryLater(
            message, retry_after=_retry_after(reply, default=DEFAULT_POLL_DELAY), code=code
        )
    if 400 <= status < 500:
        return InvalidInput(message, code=code)
    return ServiceError(
        f"{what}: unexpected HTTP {status} from {_display(reply.url)}"
        + (f": {detail}" if detail else ""),
        code=code,
    )


def _not_found_hint(code: str | None, missing: str | None) -> str | None:
    """The hint for a 404 with ``code``: the code's own, else, for no code or the generic
    ``not-found``, that of what was asked for (``missing``); None: the class's."""
    hint = NOT_FOUND_HINTS.get(code or "")
    if hint is None and code in (None, NotFound.code):
        hint = NOT_FOUND_HINTS.get(missing or "")
    return hint


def _display(url: httpx.URL) -> str:
    """A URL for messages: no user name or password, no query."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


# -- driving flows over httpx -----------------------------------------------------------------


class _Body:
    """Collects a response body, refusing more than :data:`MAX_RESPONSE_SIZE` bytes."""

    def __init__(self, response: httpx.Response) -> None:
        declared = response.headers.get("content-length", "")
        # ASCII digits only (str.isdigit takes "²"), and never int() of thousands of them.
        if (
            declared.isascii()
            and declared.isdigit()
            and (
                len(declared.lstrip("0")) > len(str(MAX_RESPONSE_SIZE))
                or int(declared) > MAX_RESPONSE_SIZE
            )
        ):
            raise self._too_large(response)
        self._response = response
        self._chunks: list[bytes] = []
        self._size = 0

    @staticmethod
    def _too_large(response: httpx.Response) -> ServiceError:
        return ServiceError(
            f"the answer from {_display(response.request.url)} is over "
            f"{MAX_RESPONSE_SIZE} bytes; refusing to read it"
        )

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_RESPONSE_SIZE:
            raise self._too_large(self._response)
        self._chunks.append(chunk)

    def reply(self) -> _Reply:
        r = self._response
        return _Reply(r.status_code, r.headers, b"".join(self._chunks), r.request.url)


def _transport_error(url: httpx.URL, exc: httpx.HTTPError, timeout: float) -> Error:
    where = _display(url)
    if isinstance(exc, httpx.TimeoutException):
        return ServiceUnreachable(f"no answer from {where} within {timeout:g} s")
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc).strip() or type(exc).__name__
        return ServiceUnreachable(f"cannot connect to {where}: {reason}")
    if isinstance(exc, httpx.TransportError):
        return ServiceUnreachable(f"the connection to {where} failed: {type(exc).__name__}")
    return ServiceError(f"a broken answer from {where}: {type(exc).__name__}")


def _headers(call: _Call, token: str | None) -> dict[str, str]:
    """The call's headers, with the client's token unless the call brings its own."""
    headers = dict(call.headers)
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    return headers


def _base_url(base_url: str | httpx.URL) -> httpx.URL:
    """The service's URL, checked before anything is sent: ``http`` or ``https``, a host,
    and a port (when given) that a connection can name, so that a typo is not reported as
    a refused connection."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InvalidInput(
            "the service URL must be an http:// or https:// URL with a host",
            code="url-invalid",
            hint=_URL_HINT,
        )
    if url.port is not None and not 1 <= url.port <= MAX_PORT:
        raise InvalidInput(
            f"the service URL's port must be 1..{MAX_PORT}, not {url.port}",
            code="url-invalid",
            hint=_URL_HINT,
        )
    return url


def _tls_for(url: httpx.URL, tls: ssl.SSLContext | None) -> ssl.SSLContext:
    """The TLS context for a client of ``url``: ``tls`` when given; else, for ``https``,
    httpx's default (``$SSL_CERT_FILE``, ``$SSL_CERT_DIR`` or certifi's CAs), a bundle that
    cannot be loaded being :class:`ConfigError` naming it; for ``http``, which never speaks
    TLS to the service, a context that reads no file and trusts no CA (so a bad
    ``$SSL_CERT_FILE`` cannot stop a plain-HTTP client, and nothing is ever trusted by
    mistake through it)."""
    if tls is not None:
        return tls
    if url.scheme != "https":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, against no CA at all
    try:
        return httpx.create_ssl_context()
    except (OSError, ssl.SSLError) as exc:
        raise _bad_ca_bundle(exc) from None


def tls_for(url: str | httpx.URL, tls: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """The TLS context a client of ``url`` uses (see :class:`Client`): ``tls`` when given,
    else the default CAs for ``https`` (:class:`ConfigError` naming a bundle from the
    environment that cannot be loaded) and none for ``http``. For other HTTP clients of a
    service, so that they trust what :class:`Client` trusts."""
    return _tls_for(httpx.URL(url), tls)


def _bad_ca_bundle(exc: OSError) -> ConfigError:
    """The one-line error for a CA bundle from the environment that cannot be loaded."""
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        path = os.environ.get(variable)
        if path:
            return ConfigError(
                f"${variable} ({path}) cannot be used as the CAs to trust: {_tls_reason(exc)}",
                hint=f"Point ${variable} at the CA certificates (PEM) to trust for the "
                "service, or unset it to trust the default ones.",
            )
    return ConfigError(
        f"the default CA bundle cannot be used: {_tls_reason(exc)}",
        hint="Set $SSL_CERT_FILE to a file of the CA certificates (PEM) to trust.",
    )


def _tls_reason(exc: OSError) -> str:
    """Why a TLS file was refused, in a few words (no OpenSSL source locations)."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "not PEM certificates").replace("_", " ").lower()
    return (exc.strerror or type(exc).__name__).lower()


def _run_sync(flow: _Flow[_T], send: Callable[[_Call], _Reply]) -> _T:
    try:
        step = next(flow)
        while True:
            if isinstance(step, _Wait):
                time.sleep(step.seconds)
                step = flow.send(None)
            else:
                step = flow.send(send(step))
    except StopIteration as done:
        result: _T = done.value
        return result
    finally:
        flow.close()


async def _run_async(flow: _Flow[_T], send: Callable[[_Call], Awaitable[_Reply]]) -> _T:
    try:
        step = next(flow)
        while True:
            if isinstance(step, _Wait):
                await asyncio.sleep(step.seconds)
                step = flow.send(None)
            else:
                step = flow.send(await send(step))
    except StopIteration as done:
        result: _T = done.value
        return result
    finally:
        flow.close()


def _check_entry(entry: str) -> str:
    normal = entry.strip().lower()
    if not _ENTRY_ID.fullmatch(normal):
        raise InvalidInput(
            "an entry id is 64 hex digits (SHA-256 of the statement)", code="entry-id-invalid"
        )
    return normal


def _check_device(device_id: str) -> str:
    normal = device_id.strip().lower()
    if not _DEVICE_ID.fullmatch(normal):
        raise InvalidInput(
            "a device id is 64 hex digits (SHA-256 of its identity key)",
            code="device-id-invalid",
        )
    return normal


def _segment(value: str, what: str, code: str) -> str:
    """An identifier as one URL path segment (percent-encoded, never a dot segment)."""
    if not 1 <= len(value) <= MAX_NAME_LENGTH or not value.isprintable():
        raise InvalidInput(f"{what} is 1..{MAX_NAME_LENGTH} printable characters", code=code)
    if "/" in value:
        raise InvalidInput(
            f"{what} with a '/' cannot be looked up over HTTP (docs/queries.md)", code=code
        )
    quoted = quote(value, safe="")
    # "." and ".." would be resolved away by URL normalization: escape them.
    return "%2E" * len(quoted) if quoted in (".", "..") else quoted


def _serial(serial: str) -> str:
    return _segment(serial, "a serial", "serial-invalid")


class Client:
    """A blocking client for a Sealtrail transparency service.

    Use as a context manager (``with Client("http://127.0.0.1:8080") as c: ...``), or call
    :meth:`close`. ``token`` (SECRET) is sent with every request as ``Authorization: Bearer
    …``: a user's token on a service with ``[auth] required`` (docs/auth.md), or the
    administrator token. ``timeout`` bounds each HTTP exchange and is the default wait for
    :meth:`register`; ``transport`` replaces httpx's (for tests and proxies); ``tls`` is the
    TLS context for an ``https`` service (:func:`client_tls`: the CAs to trust and a client
    certificate, for a user known by one; docs/auth.md). Without ``tls``, an ``https``
    service is verified against ``$SSL_CERT_FILE``'s CAs (or ``$SSL_CERT_DIR``'s, or
    certifi's); an ``http`` one reads neither. ``InvalidInput`` (``url-invalid``) for a
    URL that is not ``http(s)://host[:port]`` with a port in 1..65535, ``ConfigError`` for
    a CA bundle that cannot be used.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        self._token = None if token is None else _check_token(token)
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            verify=_tls_for(self.base_url, tls),
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT},
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> _Reply:
        request = self._http.build_request(
            call.method, call.url, headers=_headers(call, self._token), content=call.content
        )
        try:
            response = self._http.send(request, stream=True)
            try:
                body = _Body(response)
                for chunk in response.iter_bytes():
                    body.add(chunk)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise _transport_error(request.url, exc, self.timeout) from None
        return body.reply()

    def _run(self, flow: _Flow[_T]) -> _T:
        return _run_sync(flow, self._send)

    def register(self, statement: bytes, *, timeout: float | None = None) -> RegisteredStatement:
        """Register a signed statement and wait for its receipt.

        Waits at most ``timeout`` seconds (default: the client's), polling the entry while
        the service answers "pending" and honouring its ``Retry-After``; sends the statement
        again, once, if the service answers that it holds nothing under the entry (404
        ``entry-unknown``); any other 404 counts as pending. Raises
        :class:`RegistrationTimeout` (naming the entry id) when the time is up, and the
        service's own error (``InvalidInput``, ``VerificationError``, ``TooLarge``,
        ``RetryLater``) when it refuses the statement.
        """
        wait = self.timeout if timeout is None else timeout
        return self._run(_register(statement, timeout=wait))

    def receipt(self, entry_id: str) -> bytes:
        """A fresh receipt for the entry (``NotFound`` with code ``entry-pending`` if not yet)."""
        return self._run(_receipt(_check_entry(entry_id)))

    def statement(self, entry_id: str) -> bytes:
        """The signed statement as registered (checked to hash to ``entry_id``)."""
        return self._run(_statement(_check_entry(entry_id)))

    def transparent_statement(self, entry_id: str) -> bytes:
        """The statement with a fresh receipt (its statement checked against ``entry_id``)."""
        return self._run(_transparent_statement(_check_entry(entry_id)))

    def service_keys(self) -> bytes:
        """The service's receipt keys as COSE_KeySet bytes (checked to decode)."""
        return self._run(_service_keys())

    def configuration(self) -> dict[str, Any]:
        """``/.well-known/transparency-configuration`` as a dict."""
        return self._run(_configuration())

    def put_organization(
        self, name: str, record_json: bytes, *, token: str | None = None
    ) -> Registration:
        """Onboard or change organization ``name`` with the administrator ``token`` (default:
        the client's).

        ``token`` is sent as a Bearer token and never appears in an error message.
        """
        return self._run(_put_organization(name, record_json, token))

    # -- users and tokens (docs/auth.md): the administrator token or an admin user's --------
    #
    # ``token`` (SECRET) overrides the client's own for this call. Each change is a new
    # version of the user's record, registered in the log; the answer names its entry.

    def users(self, *, token: str | None = None) -> list[UserInfo]:
        """Every user: persona, organization, token ids and expiries (never a secret)."""
        return self._run(_users(token))

    def put_user(
        self,
        name: str,
        persona: str | None,
        org: str | None = None,
        disabled: bool = False,
        *,
        token: str | None = None,
    ) -> UserChange:
        """Create user ``name``, or change its persona, organization or ``disabled``.

        With a ``persona``, every field is set as given (keep a user's ``org`` by passing it
        again); with ``persona=None``, only ``disabled`` changes on an existing user. Raises
        ``NotFound`` (``org-unknown``) for an organization not onboarded, ``InvalidInput``
        (``admin-request-invalid``) for an unknown persona.
        """
        return self._run(_put_user(name, persona, org, disabled, token))

    def put_certificates(
        self, name: str, certificates: Sequence[str], *, token: str | None = None
    ) -> UserChange:
        """Set the TLS client certificates user ``name`` is known by: the SHA-256 (hex) of
        each one's DER, replacing the ones it had (``[]`` removes them all). ``InvalidInput``
        (``certificate-taken``) for one another user is known by."""
        return self._run(_put_certificates(name, certificates, token))

    def issue_token(
        self, name: str, days: int = DEFAULT_TOKEN_DAYS, *, token: str | None = None
    ) -> IssuedToken:
        """A new token for user ``name``, valid ``days`` (1 to 366).

        SECRET: ``IssuedToken.token`` is in this answer only; the service keeps its hash.
        ``NotFound`` (``user-unknown``) for no such user, ``TooLarge`` (``too-many-tokens``)
        when the user already holds 16.
        """
        return self._run(_issue_token(name, days, token))

    def revoke_token(self, name: str, token_id: str, *, token: str | None = None) -> UserChange:
        """Revoke user ``name``'s token ``token_id`` at once (``NotFound``, ``token-unknown``,
        when it holds no such token)."""
        return self._run(_revoke_token(name, token_id, token))

    def checkpoint(self) -> bytes:
        """The log's latest signed checkpoint (verify it with ``sealtrail.log``)."""
        return self._run(_checkpoint())

    # -- provenance queries (docs/queries.md): parsed JSON, each with the index "size" ------
    #
    # ``size`` gives the view as of the first ``size`` log entries. Unknown names raise
    # NotFound with the service's code (device-unknown, node-unknown, shipment-unknown,
    # index-size-unknown); bad input InvalidInput (device-id-invalid, serial-invalid, ...).

    def device(self, device_id: str, *, size: int | None = None) -> dict[str, Any]:
        """A device: its manifest, maker and the nodes it is installed in."""
        path = f"/devices/{_check_device(device_id)}"
        return self._run(_query(path, "device", size=size))

    def device_by_serial(
        self, maker: str, serial: str, *, size: int | None = None
    ) -> dict[str, Any]:
        """A device by its maker (organization name) and serial."""
        return self._run(_query("/devices", "device", maker=maker, serial=serial, size=size))

    def node(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        """A node; a server with its compliance, arrival and attestation."""
        return self._run(_query(f"/nodes/{_serial(serial)}", "node", size=size))

    def tree(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        """A node's assembly tree, nested."""
        return self._run(_query(f"/nodes/{_serial(serial)}/tree", "tree", size=size))

    def timeline(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        """The log entries about a node, all in it and its shipment, each with a receipt
        (base64) against the checkpoint of size ``checkpoint``."""
        return self._run(_query(f"/nodes/{_serial(serial)}/timeline", "timeline", size=size))

    def device_timeline(self, device_id: str, *, size: int | None = None) -> dict[str, Any]:
        """The log entries about a device, each with a receipt."""
        path = f"/devices/{_check_device(device_id)}/timeline"
        return self._run(_query(path, "device timeline", size=size))

    def shipment(self, shipment_id: str, *, size: int | None = None) -> dict[str, Any]:
        """A shipment and its custody records."""
        segment = _segment(shipment_id, "a shipment id", "shipment-id-invalid")
        return self._run(_query(f"/shipments/{segment}", "shipment", size=size))

    def compliance(self, state: str | None = None, *, size: int | None = None) -> dict[str, Any]:
        """Servers with a compliance record, optionally only those in ``state``."""
        return self._run(_query("/compliance", "compliance", state=state, size=size))

    def policy(self, *, size: int | None = None) -> dict[str, Any]:
        """The service's provenance policy in force (its maximum attestation age, minimum
        security versions, and the policy record that set them)."""
        return self._run(_query("/policy", "policy", size=size))

    def challenge(self, server_serial: str, count: int = 1) -> list[bytes]:
        """Fresh nonces for a server's attestation or arrival, one per device to challenge."""
        doc = self._run(_challenge(server_serial, count))
        return _nonces(doc, count)


class AsyncClient:
    """The same as :class:`Client`, for asyncio: every method is a coroutine.

    Use ``async with AsyncClient(url) as c: ...`` or ``await c.aclose()``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        self._token = None if token is None else _check_token(token)
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            verify=_tls_for(self.base_url, tls),
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> _Reply:
        request = self._http.build_request(
            call.method, call.url, headers=_headers(call, self._token), content=call.content
        )
        try:
            response = await self._http.send(request, stream=True)
            try:
                body = _Body(response)
                async for chunk in response.aiter_bytes():
                    body.add(chunk)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise _transport_error(request.url, exc, self.timeout) from None
        return body.reply()

    async def _run(self, flow: _Flow[_T]) -> _T:
        return await _run_async(flow, self._send)

    async def register(
        self, statement: bytes, *, timeout: float | None = None
    ) -> RegisteredStatement:
        """See :meth:`Client.register`."""
        wait = self.timeout if timeout is None else timeout
        return await self._run(_register(statement, timeout=wait))

    async def receipt(self, entry_id: str) -> bytes:
        """See :meth:`Client.receipt`."""
        return await self._run(_receipt(_check_entry(entry_id)))

    async def statement(self, entry_id: str) -> bytes:
        """See :meth:`Client.statement`."""
        return await self._run(_statement(_check_entry(entry_id)))

    async def transparent_statement(self, entry_id: str) -> bytes:
        """See :meth:`Client.transparent_statement`."""
        return await self._run(_transparent_statement(_check_entry(entry_id)))

    async def service_keys(self) -> bytes:
        """See :meth:`Client.service_keys`."""
        return await self._run(_service_keys())

    async def configuration(self) -> dict[str, Any]:
        """See :meth:`Client.configuration`."""
        return await self._run(_configuration())

    async def put_organization(
        self, name: str, record_json: bytes, *, token: str | None = None
    ) -> Registration:
        """See :meth:`Client.put_organization`."""
        return await self._run(_put_organization(name, record_json, token))

    async def users(self, *, token: str | None = None) -> list[UserInfo]:
        """See :meth:`Client.users`."""
        return await self._run(_users(token))

    async def put_user(
        self,
        name: str,
        persona: str | None,
        org: str | None = None,
        disabled: bool = False,
        *,
        token: str | None = None,
    ) -> UserChange:
        """See :meth:`Client.put_user`."""
        return await self._run(_put_user(name, persona, org, disabled, token))

    async def put_certificates(
        self, name: str, certificates: Sequence[str], *, token: str | None = None
    ) -> UserChange:
        """See :meth:`Client.put_certificates`."""
        return await self._run(_put_certificates(name, certificates, token))

    async def issue_token(
        self, name: str, days: int = DEFAULT_TOKEN_DAYS, *, token: str | None = None
    ) -> IssuedToken:
        """See :meth:`Client.issue_token`."""
        return await self._run(_issue_token(name, days, token))

    async def revoke_token(
        self, name: str, token_id: str, *, token: str | None = None
    ) -> UserChange:
        """See :meth:`Client.revoke_token`."""
        return await self._run(_revoke_token(name, token_id, token))

    async def checkpoint(self) -> bytes:
        """See :meth:`Client.checkpoint`."""
        return await self._run(_checkpoint())

    async def device(self, device_id: str, *, size: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.device`."""
        path = f"/devices/{_check_device(device_id)}"
        return await self._run(_query(path, "device", size=size))

    async def device_by_serial(
        self, maker: str, serial: str, *, size: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`Client.device_by_serial`."""
        return await self._run(_query("/devices", "device", maker=maker, serial=serial, size=size))

    async def node(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.node`."""
        return await self._run(_query(f"/nodes/{_serial(serial)}", "node", size=size))

    async def tree(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.tree`."""
        return await self._run(_query(f"/nodes/{_serial(serial)}/tree", "tree", size=size))

    async def timeline(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.timeline`."""
        path = f"/nodes/{_serial(serial)}/timeline"
        return await self._run(_query(path, "timeline", size=size))

    async def device_timeline(self, device_id: str, *, size: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.device_timeline`."""
        path = f"/devices/{_check_device(device_id)}/timeline"
        return await self._run(_query(path, "device timeline", size=size))

    async def shipment(self, shipment_id: str, *, size: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.shipment`."""
        segment = _segment(shipment_id, "a shipment id", "shipment-id-invalid")
        return await self._run(_query(f"/shipments/{segment}", "shipment", size=size))

    async def compliance(
        self, state: str | None = None, *, size: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`Client.compliance`."""
        return await self._run(_query("/compliance", "compliance", state=state, size=size))

    async def policy(self, *, size: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.policy`."""
        return await self._run(_query("/policy", "policy", size=size))

    async def challenge(self, server_serial: str, count: int = 1) -> list[bytes]:
        """See :meth:`Client.challenge`."""
        doc = await self._run(_challenge(server_serial, count))
        return _nonces(doc, count)
