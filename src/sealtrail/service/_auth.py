"""Who is asking, and may they: tokens to principals, one table of routes to personas.

Every request resolves to a :class:`Principal` before its route runs: no ``Authorization``
header is the public; ``Bearer <administrator token>`` (the data directory's, issued by
``sealtrail init``) is the bootstrap administrator; ``Bearer stk_…`` is a user of the log's
user records (:mod:`sealtrail.scitt` ``Users``), refused when unknown or revoked
(``token-unknown``), expired (``token-expired``) or disabled (``user-disabled``). Without a
header, a TLS client certificate (mutual TLS) is the user whose record lists it, refused
when no user does (``certificate-unknown``).

With ``[auth] required`` (docs/auth.md), :data:`ROUTES` says which personas may call each
route, and a route it does not name is refused to everyone (fail closed; a test checks that
every route is named). Routes then check what the table cannot see: a statement is
registered only by a user of the issuer's organization whose persona issues its kind, and a
statement's contents are returned only to its organization, auditors and administrators; a
passport, which holds the signed statements of its subject's whole journey, only to
auditors, administrators and the organizations that hold or held its server; and a
shipment's view to a carrier of another organization only as if it did not exist.
Without ``required`` the service is open as SCRAPI allows (statements authenticate
themselves by their signatures) and only administration needs a token.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from fastapi import Request

from sealtrail.errors import Forbidden, Unauthorized
from sealtrail.provenance import KINDS, shipment_unknown
from sealtrail.scitt import (
    Organization,
    SignedStatement,
    TransparencyService,
    User,
    certificate_hash,
    token_hash,
    with_article,
)

from ._peer import client_certificate

__all__ = ["PUBLIC", "ROUTES", "Auth", "Principal", "bearer_token"]


@dataclass(frozen=True)
class Principal:
    """The requester: a user (``None`` for the public), their persona and organization."""

    user: str | None
    persona: str
    org: str | None = None
    #: The user's credential as presented: ``("token", SHA-256 of the token)`` or
    #: ``("certificate", SHA-256 of the DER)``, so that a check that reads the records
    #: anew can ask whether it still stands (:meth:`Auth.registers_for`).
    credential: tuple[str, bytes] | None = field(default=None, repr=False, compare=False)


PUBLIC = Principal(None, "public")
ADMIN = Principal("admin", "admin")

_ANY = frozenset({"public", "admin", "supplier", "carrier", "operator", "auditor"})
_WRITERS = frozenset({"supplier", "carrier", "operator"})
_READERS = frozenset({"admin", "supplier", "carrier", "operator", "auditor"})
_VIEWERS = frozenset({"admin", "operator", "auditor"})
_ADMIN = frozenset({"admin"})

#: (method, route path) -> the personas that may call it. HEAD is a method of its own here:
#: the routes that serve it (the tlog-tiles ones) name it; on any other route it is 405.
ROUTES: Mapping[tuple[str, str], frozenset[str]] = {
    # The API's description: public, and a bad credential is refused here as anywhere.
    ("GET", "/openapi.json"): _ANY,
    ("GET", "/docs"): _ANY,
    ("GET", "/redoc"): _ANY,
    # The verifiable log: public, as a transparency log must be (hashes only).
    ("GET", "/checkpoint"): _ANY,
    ("HEAD", "/checkpoint"): _ANY,
    ("GET", "/tile/{path:path}"): _ANY,
    ("HEAD", "/tile/{path:path}"): _ANY,
    ("GET", "/log/v1/info"): _ANY,
    ("GET", "/log/v1/entries/{index}"): _ANY,
    ("GET", "/log/v1/proof/inclusion"): _ANY,
    ("GET", "/log/v1/proof/consistency"): _ANY,
    ("GET", "/.well-known/transparency-configuration"): _ANY,
    ("GET", "/.well-known/scitt-keys"): _ANY,
    ("GET", "/.well-known/scitt-keys/{kid}"): _ANY,
    # A receipt proves inclusion of a hash and reveals nothing else: public.
    ("GET", "/entries/{entry_id}"): _ANY,
    # Writes: the personas that issue statements (route checks org and kind).
    ("POST", "/entries"): _WRITERS,
    # Contents: the statement's organization, auditors and administrators (route checks).
    ("GET", "/entries/{entry_id}/statement"): _READERS,
    ("GET", "/entries/{entry_id}/transparent-statement"): _READERS,
    # Sharing a statement's contents with another organization (route checks the owner).
    ("POST", "/entries/{entry_id}/grants"): _WRITERS | _ADMIN,
    ("DELETE", "/entries/{entry_id}/grants/{org}"): _WRITERS | _ADMIN,
    # Administration.
    ("PUT", "/admin/organizations/{name}"): _ADMIN,
    ("GET", "/admin/users"): _ADMIN,
    ("PUT", "/admin/users/{name}"): _ADMIN,
    ("POST", "/admin/users/{name}/tokens"): _ADMIN,
    ("DELETE", "/admin/users/{name}/tokens/{token_id}"): _ADMIN,
    # Provenance: operators run the fleet, auditors check it.
    ("POST", "/provenance/v1/challenges"): frozenset({"operator"}),
    ("GET", "/provenance/v1/devices"): _VIEWERS,
    ("GET", "/provenance/v1/devices/{device_id}"): _VIEWERS,
    ("GET", "/provenance/v1/devices/{device_id}/timeline"): _VIEWERS,
    ("GET", "/provenance/v1/nodes/{serial}"): _VIEWERS,
    ("GET", "/provenance/v1/nodes/{serial}/tree"): _VIEWERS,
    ("GET", "/provenance/v1/nodes/{serial}/timeline"): _VIEWERS,
    ("GET", "/provenance/v1/shipments/{shipment_id}"): _VIEWERS | {"carrier"},
    ("GET", "/provenance/v1/compliance"): _VIEWERS,
    ("GET", "/provenance/v1/policy"): _VIEWERS,
    ("GET", "/provenance/v1/passports/{serial}"): _VIEWERS,
    ("GET", "/provenance/v1/device-passports/{device_id}"): _VIEWERS,
    ("GET", "/provenance/v1/device-passports"): _VIEWERS,
}


#: What may surround a token in an ``Authorization`` header: HTTP's optional whitespace
#: (RFC 9110 section 5.6.3), nothing else (not Unicode's spaces, such as U+00A0).
_OWS = " \t"
#: The characters of a token: visible ASCII. Every token the service issues is base64url
#: with ``_``; a token holding anything else is no token of ours.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def bearer_token(header: str) -> str:
    """The token of an ``Authorization`` header's value ``Bearer <token>``, read the one way
    both the access check and the rate limiter (``_limits.client_key``) read it: spaces and
    tabs around it dropped, nothing else. Raises :class:`Unauthorized`: ``auth-malformed``
    for another scheme or no token, ``token-unknown`` for a token with a character outside
    visible ASCII (no token of ours has one, so it is not looked up)."""
    scheme, _, token = header.partition(" ")
    token = token.strip(_OWS)
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send a token as 'Authorization: Bearer <token>'", code="auth-malformed")
    if not _TOKEN_CHARS.fullmatch(token):
        raise _unknown_token()
    return token


def _unknown_token() -> Unauthorized:
    return Unauthorized(
        "an unknown or revoked token",
        code="token-unknown",
        hint="Ask an administrator for a token (sealtrail users token).",
    )


def _principal_of(user: User) -> Principal:
    """The principal a user's credential stands for; a disabled user is refused whatever
    the credential."""
    if user.disabled:
        raise Unauthorized("this user is disabled", code="user-disabled")
    return Principal(user.name, user.persona, user.org)


#: Refusals that a user record another process registered a moment ago may lift.
_NEW_USER_CODES = frozenset({"token-unknown", "certificate-unknown"})

#: Persona -> the organization roles (of docs/provenance.md's kinds) whose statements it may
#: register; statements of other content types (not provenance kinds) only suppliers.
_ISSUES: Mapping[str, frozenset[str]] = {
    "supplier": frozenset({"device-maker", "assembler"}),
    "carrier": frozenset({"carrier"}),
    "operator": frozenset({"operator"}),
}


class Auth:
    """Resolves principals and applies :data:`ROUTES` (see the module docstring)."""

    def __init__(
        self,
        service: TransparencyService | None,
        admin_token_hash: bytes | None,
        *,
        required: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.admin_token_hash = admin_token_hash
        self.required = required
        self.clock = clock

    def token_known(self, digest: bytes) -> bool:
        """For the rate limiter: a token worth a budget of its own."""
        if self.admin_token_hash is not None and hmac.compare_digest(digest, self.admin_token_hash):
            return True
        return self.service is not None and self.service.users.by_token(digest) is not None

    def certificate_known(self, digest: bytes) -> bool:
        """For the rate limiter: a TLS client certificate that names a user."""
        return self.service is not None and self.service.users.by_certificate(digest) is not None

    def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if header is None:
            certificate = client_certificate(request.scope)
            return PUBLIC if certificate is None else self._by_certificate(certificate)
        digest = token_hash(bearer_token(header))
        if self.admin_token_hash is not None and hmac.compare_digest(digest, self.admin_token_hash):
            return ADMIN
        found = None if self.service is None else self.service.users.by_token(digest)
        if found is None:
            raise _unknown_token()
        user, issued = found
        if not user.disabled and issued.expires <= self.clock():
            raise Unauthorized("this token has expired", code="token-expired")
        return replace(_principal_of(user), credential=("token", digest))

    def _by_certificate(self, der: bytes) -> Principal:
        """The user a TLS client certificate names (the handshake verified it against
        ``[server] tls_client_ca``); a certificate no user holds is refused, not public."""
        digest = certificate_hash(der)
        return replace(self._certificate_user(digest), credential=("certificate", digest))

    def _certificate_user(self, digest: bytes) -> Principal:
        user = None if self.service is None else self.service.users.by_certificate(digest)
        if user is None:
            raise Unauthorized(
                "this TLS client certificate is no user's",
                code="certificate-unknown",
                hint="Ask an administrator to add its SHA-256 to your user (sealtrail users cert).",
            )
        return _principal_of(user)

    def _standing(self, principal: Principal) -> None:
        """Whether ``principal``'s credential still stands in the records as this process
        holds them now (a check may have read them anew since the request was resolved: a
        user disabled, a token revoked, a certificate removed meanwhile is refused)."""
        if principal.credential is None or self.service is None:
            return
        kind, digest = principal.credential
        if kind == "certificate":
            self._certificate_user(digest)
            return
        found = self.service.users.by_token(digest)
        if found is None:
            raise _unknown_token()
        user, issued = found
        if not user.disabled and issued.expires <= self.clock():
            raise Unauthorized("this token has expired", code="token-expired")
        _principal_of(user)

    async def authorize(self, request: Request) -> None:
        """The dependency every route runs first: resolve, then check :data:`ROUTES`."""
        try:
            principal = self.principal(request)
        except Unauthorized as exc:
            service = self.service
            if service is None or not service.shared or exc.code not in _NEW_USER_CODES:
                raise
            # A shared store: the user or token may be a moment old, recorded through
            # another process; read the records stored before this lookup failed (in one
            # fold shared with every request waiting for one), then look again.
            await service.refresh_orgs(asyncio.get_running_loop().time())
            principal = self.principal(request)
        request.state.principal = principal
        if not self.required:
            return
        route = request.scope.get("route")
        allowed = ROUTES.get((request.method, getattr(route, "path", "")))
        if allowed is None:
            raise Forbidden("this route is not open to anyone here", code="route-forbidden")
        if principal.persona not in allowed:
            if principal is PUBLIC:
                raise Unauthorized("this route needs a token", code="token-required")
            raise Forbidden(
                f"{with_article(principal.persona)} may not call this route",
                code="persona-forbidden",
            )

    def may_register(self, principal: Principal, statement: SignedStatement, org: str) -> None:
        """A write by ``principal`` of ``statement`` issued for organization ``org``."""
        if not self.required:
            return
        if principal.org != org:
            raise Forbidden(
                "a user registers statements of their own organization only",
                code="org-forbidden",
            )
        kind = KINDS.get(str(statement.content_type))
        issues = _ISSUES.get(principal.persona, frozenset())
        allowed = (
            (kind.role.value in issues) if kind is not None else principal.persona == "supplier"
        )
        if not allowed:
            raise Forbidden(
                f"{with_article(principal.persona)} does not issue "
                f"{statement.content_type} statements",
                code="persona-forbidden",
            )

    def registers_for(
        self, principal: Principal
    ) -> Callable[[SignedStatement, Organization], None]:
        """:meth:`may_register` for ``principal``, against the organization the
        registration checks found for the statement's issuer (``TransparencyService``'s
        ``authorize``): asked again whenever they look the issuer up anew, with the
        credential checked against the records as they are then."""

        def authorize(statement: SignedStatement, org: Organization) -> None:
            self._standing(principal)
            self.may_register(principal, statement, org.name)

        return authorize

    def _readable(self, principal: Principal, org: str | None, entry: bytes) -> bool:
        """Whether a user reads statement ``entry`` of organization ``org``: its own
        organization's, or shared with its organization."""
        service, mine = self.service, principal.org
        if mine is None:
            return False
        if service is not None and service.grants.allows(entry, mine):
            return True
        return org is not None and org == mine

    def may_read(self, principal: Principal, org: str | None, entry: bytes) -> None:
        """The contents of statement ``entry``, issued for organization ``org``: its own
        organization's users, those of an organization it was shared with, auditors and
        administrators."""
        if not self.required or principal.persona in ("admin", "auditor"):
            return
        if not self._readable(principal, org, entry):
            raise Forbidden(
                "a statement's contents are for its organization, auditors and administrators",
                code="contents-forbidden",
            )

    def may_export(
        self,
        principal: Principal,
        *,
        holders: Callable[[], Collection[str]],
        contents: Callable[[], Iterable[tuple[str | None, bytes]]],
    ) -> None:
        """A passport, which holds the signed statements of its subject's whole scope,
        whoever issued them: auditors and administrators export any; a user (an operator,
        the only other persona the route table lets in) one whose organization is among
        ``holders`` (those that have had in their hands every server the subject is, or
        sits or sat in: they recorded an affirming attestation of it), or one whose
        ``contents`` (issuing organization and entry id of each statement) it may all read
        (:meth:`may_read`)."""
        if not self.required or principal.persona in ("admin", "auditor"):
            return
        if principal.org is not None and principal.org in holders():
            return
        if all(self._readable(principal, org, entry) for org, entry in contents()):
            return
        raise Forbidden(
            "a passport holds other organizations' statements: it is for the organizations "
            "that attested its servers, auditors and administrators",
            code="contents-forbidden",
        )

    def may_see_shipment(self, principal: Principal, parties: Iterable[object]) -> None:
        """A shipment's view (its parties, contents and seals), whose ``parties`` are its
        carrier and its ``from`` and ``to`` organizations: a carrier sees the shipments its
        own organization is a party to, and any other is answered as a shipment no record
        names (404 ``shipment-unknown``, word for word, as of every size), so that the
        answer tells it neither that the shipment exists nor where in the log it was
        recorded; operators, auditors and administrators, the only other personas the
        route table lets in, see every one."""
        if not self.required or principal.persona != "carrier":
            return
        if principal.org is None or principal.org not in parties:
            raise shipment_unknown()

    def check_admin(self, request: Request) -> None:
        """Administration, with or without ``required``: the administrator token or a user
        with the admin persona."""
        principal: Principal = getattr(request.state, "principal", None) or self.principal(request)
        if principal.persona == "admin":
            return
        if self.admin_token_hash is None and not (self.service and len(self.service.users)):
            raise Unauthorized("administration is disabled on this server")
        raise Unauthorized("a valid administrator token is required")
