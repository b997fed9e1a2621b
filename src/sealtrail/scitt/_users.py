"""Users, their persona and their API tokens — as log entries, like organizations.

A user record is a JSON document the service signs and registers (content type
:data:`USER_RECORD_TYPE`); the users the service authenticates are the fold of those
records in registration order, and every change (a user added, a token issued or revoked,
a user disabled) is in the log with a receipt. A record's ``version`` must be exactly one
more than the user's current one.

A token is ``stk_<id>_<secret>`` (the id names it in records and in the revocation route;
the secret is 32 random bytes, url-safe base64). Only its SHA-256 is in the record: the
token itself is shown once, to the administrator who issued it, and kept nowhere.

A user may also be known by TLS client certificates (mutual TLS, ``[server]
tls_client_ca``): the record lists the SHA-256 of each certificate's DER encoding, and a
certificate names at most one user.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sealtrail.errors import InvalidInput

__all__ = [
    "GRANT_RECORD_TYPE",
    "MAX_CERTIFICATES",
    "MAX_TOKENS",
    "PERSONAS",
    "USER_RECORD_TYPE",
    "Grant",
    "Grants",
    "Token",
    "User",
    "Users",
    "certificate_hash",
    "grant_record",
    "new_token",
    "parse_certificates",
    "parse_grant_record",
    "parse_user_record",
    "token_hash",
    "user_record",
    "with_article",
]

USER_RECORD_TYPE = "application/vnd.sealtrail.user+json"
#: The personas a user may have (docs/auth.md says what each may do). ``public`` is
#: nobody's: it is what a request without a token is.
PERSONAS = ("admin", "supplier", "carrier", "operator", "auditor")
#: Personas that act for one organization (their records name it).
ORG_PERSONAS = frozenset({"supplier", "carrier", "operator"})
#: Most tokens a user holds at once (issued, not revoked; expired ones count until revoked).
MAX_TOKENS = 16
#: Most TLS client certificates a user is known by at once.
MAX_CERTIFICATES = 8
RECORD_FIELDS = frozenset(
    {"user", "version", "org", "persona", "tokens", "disabled", "certificates"}
)
TOKEN_FIELDS = frozenset({"id", "sha256", "expires"})
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
TOKEN_PREFIX = "stk_"  # noqa: S105 (a prefix, not a secret)


@dataclass(frozen=True)
class Token:
    """One API token of a user: its id, the SHA-256 of the whole token, its expiry."""

    id: str
    sha256: bytes
    expires: int


@dataclass(frozen=True)
class User:
    name: str
    version: int
    persona: str
    org: str | None = None
    tokens: tuple[Token, ...] = field(default=())
    disabled: bool = False
    #: SHA-256 of the DER encoding of each TLS client certificate the user is known by.
    certificates: tuple[bytes, ...] = field(default=())


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def certificate_hash(der: bytes) -> bytes:
    """What a user record holds for a TLS client certificate: SHA-256 of its DER."""
    return hashlib.sha256(der).digest()


def new_token(expires: int) -> tuple[str, Token]:
    """A fresh token (SECRET: show it once) and its record entry."""
    token_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    return token, Token(token_id, token_hash(token), expires)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(f"user record: {message}", code="user-record-invalid")


def _known(doc: Mapping[str, Any], fields: frozenset[str], what: str) -> None:
    if not set(doc) <= fields:
        raise _invalid(f"{what} has a field this version does not know (docs/auth.md)")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_user_record(payload: bytes) -> User:
    """Read a user record (JSON); :class:`InvalidInput` (``user-record-invalid``) naming
    what is wrong."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("not JSON") from None
    if not isinstance(doc, dict):
        raise _invalid("must be an object")
    _known(doc, RECORD_FIELDS, "the record")
    name, version, persona = doc.get("user"), _int(doc.get("version")), doc.get("persona")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _invalid("user must be 1..64 of a-z 0-9 . _ - (starting with a letter or digit)")
    if version is None or version < 1:
        raise _invalid("version must be an integer >= 1")
    if persona not in PERSONAS:
        raise _invalid(f"persona must be one of {', '.join(PERSONAS)}")
    org = doc.get("org")
    if persona in ORG_PERSONAS:
        if not isinstance(org, str) or not 0 < len(org) <= 128:
            raise _invalid(f"{with_article(persona)} acts for an organization: org is required")
    elif org is not None:
        raise _invalid(f"{with_article(persona)} acts for no organization: leave org out")
    tokens = _tokens(doc.get("tokens", []))
    disabled = doc.get("disabled", False)
    if not isinstance(disabled, bool):
        raise _invalid("disabled must be true or false")
    certificates = parse_certificates(doc.get("certificates", []), _invalid)
    return User(name, version, persona, org, tokens, disabled, certificates)


def parse_certificates(
    raw: object, invalid: Callable[[str], Exception] = _invalid
) -> tuple[bytes, ...]:
    """A list of certificate SHA-256 values (64 hex digits each, no repeats)."""
    if not isinstance(raw, list) or len(raw) > MAX_CERTIFICATES:
        raise invalid(f"certificates must be a list of at most {MAX_CERTIFICATES}")
    if not all(isinstance(c, str) and re.fullmatch(r"[0-9a-f]{64}", c) for c in raw):
        raise invalid("a certificate is its SHA-256: 64 lowercase hex digits")
    if len(set(raw)) != len(raw):
        raise invalid("a certificate is listed twice")
    return tuple(bytes.fromhex(c) for c in raw)


def _tokens(raw_tokens: object) -> tuple[Token, ...]:
    if not isinstance(raw_tokens, list) or len(raw_tokens) > MAX_TOKENS:
        raise _invalid(f"tokens must be a list of at most {MAX_TOKENS}")
    tokens: list[Token] = []
    for raw in raw_tokens:
        if not isinstance(raw, dict):
            raise _invalid("tokens hold objects")
        _known(raw, TOKEN_FIELDS, "a token")
        token_id, digest, expires = raw.get("id"), raw.get("sha256"), _int(raw.get("expires"))
        if not isinstance(token_id, str) or not _TOKEN_ID.fullmatch(token_id):
            raise _invalid("a token id is 16 hex digits")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise _invalid("a token's sha256 is 64 hex digits")
        if expires is None or expires <= 0:
            raise _invalid("a token's expires is a positive integer (seconds since the epoch)")
        tokens.append(Token(token_id, bytes.fromhex(digest), expires))
    if len({t.id for t in tokens}) != len(tokens):
        raise _invalid("two tokens with one id")
    return tuple(tokens)


def user_record(user: User) -> bytes:
    """The record of ``user``, as :func:`parse_user_record` reads it (canonical JSON)."""
    doc: dict[str, Any] = {"user": user.name, "version": user.version, "persona": user.persona}
    if user.org is not None:
        doc["org"] = user.org
    doc["tokens"] = [
        {"id": t.id, "sha256": t.sha256.hex(), "expires": t.expires} for t in user.tokens
    ]
    if user.disabled:
        doc["disabled"] = True
    if user.certificates:
        doc["certificates"] = [c.hex() for c in user.certificates]
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Users:
    """The current users, folded from their records; token lookup by hash. Thread-safe."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._by_token: dict[bytes, tuple[str, Token]] = {}
        self._by_certificate: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def check(self, user: User) -> None:
        """Raise unless ``user`` may be applied as its next record."""
        with self._lock:
            current = self._users.get(user.name)
            taken = [self._by_certificate.get(c) for c in user.certificates]
        want = 1 if current is None else current.version + 1
        if user.version != want:
            raise InvalidInput(
                f"user {user.name} is at version {want - 1}; the next record is {want}",
                code="user-version",
            )
        other = next((name for name in taken if name not in (None, user.name)), None)
        if other is not None:
            raise InvalidInput(
                f"a certificate of user {user.name} is user {other}'s: a certificate names "
                "one user",
                code="certificate-taken",
            )

    def apply(self, user: User) -> None:
        self.check(user)
        with self._lock:
            old = self._users.get(user.name)
            if old is not None:
                for token in old.tokens:
                    self._by_token.pop(token.sha256, None)
                for certificate in old.certificates:
                    self._by_certificate.pop(certificate, None)
            self._users[user.name] = user
            for token in user.tokens:
                self._by_token[token.sha256] = (user.name, token)
            for certificate in user.certificates:
                self._by_certificate[certificate] = user.name

    def get(self, name: str) -> User | None:
        with self._lock:
            return self._users.get(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._users)

    def all(self) -> list[User]:
        with self._lock:
            return sorted(self._users.values(), key=lambda u: u.name)

    def by_token(self, digest: bytes) -> tuple[User, Token] | None:
        """The user and token whose SHA-256 is ``digest``, if any (expiry not checked)."""
        with self._lock:
            found = self._by_token.get(digest)
            return None if found is None else (self._users[found[0]], found[1])

    def by_certificate(self, digest: bytes) -> User | None:
        """The user known by the TLS client certificate whose SHA-256 is ``digest``."""
        with self._lock:
            name = self._by_certificate.get(digest)
            return None if name is None else self._users[name]


GRANT_RECORD_TYPE = "application/vnd.sealtrail.grant+json"
GRANT_FIELDS = frozenset({"entry", "to", "by", "revoked"})


@dataclass(frozen=True)
class Grant:
    """A statement's contents shared with another organization, by a user of its own."""

    entry: bytes
    to: str
    by: str
    #: A later record taking the share back.
    revoked: bool = False


def parse_grant_record(payload: bytes) -> Grant:
    """Read a grant record (JSON); ``grant-record-invalid`` naming what is wrong."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or not set(doc) <= GRANT_FIELDS:
        raise InvalidInput(
            "grant record: an object with entry, to and by", code="grant-record-invalid"
        )
    entry, to, by = doc.get("entry"), doc.get("to"), doc.get("by")
    if not isinstance(entry, str) or not re.fullmatch(r"[0-9a-f]{64}", entry):
        raise InvalidInput("grant record: entry is 64 hex digits", code="grant-record-invalid")
    if not isinstance(to, str) or not 0 < len(to) <= 128 or not isinstance(by, str) or not by:
        raise InvalidInput("grant record: to and by are names", code="grant-record-invalid")
    revoked = doc.get("revoked", False)
    if not isinstance(revoked, bool):
        raise InvalidInput("grant record: revoked is true or false", code="grant-record-invalid")
    return Grant(bytes.fromhex(entry), to, by, revoked)


def grant_record(grant: Grant) -> bytes:
    doc: dict[str, Any] = {"entry": grant.entry.hex(), "to": grant.to, "by": grant.by}
    if grant.revoked:
        doc["revoked"] = True
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Grants:
    """Which organizations may read which statements besides their own. Thread-safe."""

    def __init__(self) -> None:
        self._granted: set[tuple[bytes, str]] = set()
        self._lock = threading.Lock()

    def apply(self, grant: Grant) -> None:
        with self._lock:
            if grant.revoked:
                self._granted.discard((grant.entry, grant.to))
            else:
                self._granted.add((grant.entry, grant.to))

    def allows(self, entry: bytes, org: str) -> bool:
        with self._lock:
            return (entry, org) in self._granted


def with_article(persona: str) -> str:
    """A persona with its indefinite article, for messages: "an auditor", "a carrier"."""
    return f"{'an' if persona[:1] in 'aeiou' else 'a'} {persona}"
