"""Administration — organizations and users — and sharing a statement with another
organization: each change a service-signed log entry.

``PUT /admin/organizations/{name}`` takes an organization record (docs/scitt.md). The user
routes (docs/auth.md) keep the user records: ``PUT /admin/users/{name}`` sets a user's
persona and organization (or disables it), ``POST /admin/users/{name}/tokens`` issues a
token — returned in that one answer, never again — and ``DELETE
/admin/users/{name}/tokens/{id}`` revokes one. Every route needs the administrator token or
an admin user; none of them can remove or change an entry already in the log.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from sealtrail.errors import Forbidden, InvalidInput, NotFound, TooLarge
from sealtrail.scitt import (
    MAX_TOKENS,
    PERSONAS,
    Grant,
    Registration,
    TransparencyService,
    User,
    new_token,
    parse_certificates,
)
from sealtrail.scitt._registry import load_json

from ._auth import Auth, Principal
from ._openapi import json_body
from ._scrapi import NO_STORE, read_body

__all__ = ["DEFAULT_TOKEN_DAYS", "MAX_TOKEN_DAYS", "add_admin_routes", "add_grant_route"]

#: A token's lifetime when the request names none, and the longest it may ask for.
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 366
#: Largest body of an administrative request (an organization record holds certificates).
MAX_ADMIN_BODY = 256 * 1024
_USER_FIELDS = frozenset({"persona", "org", "disabled", "certificates"})
#: Problem details name what was wrong, never what the client sent (it may be markup, or
#: another organization's name a caller is fishing for): fixed texts.
NO_SUCH_ORG = "no organization of this name"


_STRINGS = {"type": "array", "items": {"type": "string"}}
#: An organization record (docs/scitt.md; every field is checked by its parser).
_ORG_RECORD = json_body(
    {
        "org": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "roles": _STRINGS,
        "issuers": _STRINGS,
        "anchors": _STRINGS,
        "device_anchors": _STRINGS,
        "keys": {"type": "array", "items": {"type": "object"}},
        "retired_keys": _STRINGS,
        "revoked_certificates": _STRINGS,
        "policy": {"type": "object"},
    },
    required=("org", "version"),
)

#: Who a record says acted when the administrator token did (a user may not be named so).
ADMINISTRATOR = "admin"


def _user_or_new(service: TransparencyService, name: str) -> User | None:
    """User ``name``, or None for a new one, whose name may not be the administrator's:
    records name who acted (a grant's ``by``), and no user may pass for it."""
    current = service.users.get(name)
    if current is None and name == ADMINISTRATOR:
        raise InvalidInput(
            f"the user name {ADMINISTRATOR!r} is reserved for the administrator token",
            code="admin-request-invalid",
        )
    return current


def _json_object(data: bytes, fields: frozenset[str], what: str) -> dict[str, Any]:
    doc = load_json(data or b"{}", f"{what} is not JSON", code="admin-request-invalid")
    if not isinstance(doc, dict) or not set(doc) <= fields:
        raise InvalidInput(
            f"{what} is an object with at most: {', '.join(sorted(fields))}",
            code="admin-request-invalid",
        )
    return doc


def _request_invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code="admin-request-invalid")


def _registered(registration: Registration, **extra: object) -> dict[str, object]:
    return {"entry_id": registration.entry_id, "index": registration.index, **extra}


def _public(user: User) -> dict[str, object]:
    """A user as the administrator sees it: never a token hash."""
    return {
        "user": user.name,
        "version": user.version,
        "persona": user.persona,
        "org": user.org,
        "disabled": user.disabled,
        "tokens": [{"id": t.id, "expires": t.expires} for t in user.tokens],
        "certificates": [c.hex() for c in user.certificates],
    }


def add_admin_routes(app: FastAPI, service: TransparencyService, auth: Auth) -> None:
    @app.put(
        "/admin/organizations/{name}",
        tags=["admin"],
        status_code=201,
        responses={201: {"description": "Registered: the record is a new log entry"}},
        openapi_extra=_ORG_RECORD,
    )
    async def put_organization(name: str, request: Request) -> JSONResponse:
        """Onboard or change an organization (its record becomes a log entry)."""
        auth.check_admin(request)
        data = await read_body(request, MAX_ADMIN_BODY)
        registration = await service.put_organization(data, expected_name=name)
        return JSONResponse(_registered(registration), status_code=201)

    @app.get("/admin/users", tags=["admin"])
    async def list_users(request: Request) -> JSONResponse:
        """Every user: persona, organization, token ids and expiries (no secrets)."""
        await _admin_users(auth, service, request)
        return JSONResponse({"users": [_public(u) for u in service.users.all()]}, headers=NO_STORE)

    @app.put(
        "/admin/users/{name}",
        tags=["admin"],
        responses={
            201: {
                "description": "Created: the user's first record",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        openapi_extra=json_body(
            {
                "persona": {"enum": list(PERSONAS)},
                "org": {"type": ["string", "null"]},
                "disabled": {"type": "boolean"},
                "certificates": {"type": "array", "items": {"type": "string"}},
            }
        ),
    )
    async def put_user(name: str, request: Request) -> JSONResponse:
        """Create a user (``persona`` required), or change what the request names of an
        existing one: a field left out keeps its value, so ``{"disabled": true}`` alone
        shuts a user out without rewriting the rest. A new persona without ``org`` drops
        the organization (auditors and admins act for none). ``certificates`` (the SHA-256
        of each TLS client certificate's DER, hex) replaces the ones the user is known by."""
        await _admin_users(auth, service, request)
        doc = _json_object(await read_body(request, 4096), _USER_FIELDS, "a user")
        current = _user_or_new(service, name)
        persona = doc.get("persona", None if current is None else current.persona)
        keep_org = current is not None and not ({"org", "persona"} & doc.keys())
        org = current.org if keep_org and current is not None else doc.get("org")
        if persona not in PERSONAS:
            raise InvalidInput(
                f"persona must be one of {', '.join(PERSONAS)}", code="admin-request-invalid"
            )
        if org is not None and (not isinstance(org, str) or service.registry.get(org) is None):
            raise NotFound(NO_SUCH_ORG, code="org-unknown")
        disabled = doc.get("disabled", False if current is None else current.disabled)
        if not isinstance(disabled, bool):
            raise InvalidInput("disabled is true or false", code="admin-request-invalid")
        certificates = () if current is None else current.certificates
        if "certificates" in doc:
            certificates = parse_certificates(doc["certificates"], _request_invalid)
        user = User(
            name=name,
            version=1 if current is None else current.version + 1,
            persona=str(persona),
            org=org,
            tokens=() if current is None else current.tokens,
            disabled=disabled,
            certificates=certificates,
        )
        registration = await service.put_user(user)
        return JSONResponse(
            _registered(registration, **_public(user)),
            status_code=201 if current is None else 200,
        )

    @app.post(
        "/admin/users/{name}/tokens",
        tags=["admin"],
        status_code=201,
        responses={201: {"description": "The new token, in this answer only"}},
        openapi_extra=json_body(
            {"days": {"type": "integer", "minimum": 1, "maximum": MAX_TOKEN_DAYS}},
            body_required=False,
        ),
    )
    async def issue_token(name: str, request: Request) -> JSONResponse:
        """A new token for the user: SECRET, in this answer only."""
        await _admin_users(auth, service, request)
        doc = _json_object(await read_body(request, 4096), frozenset({"days"}), "a token request")
        days = doc.get("days", DEFAULT_TOKEN_DAYS)
        if not isinstance(days, int) or isinstance(days, bool) or not 0 < days <= MAX_TOKEN_DAYS:
            raise InvalidInput(f"days must be 1..{MAX_TOKEN_DAYS}", code="admin-request-invalid")
        current = _user(service, name)
        token, entry = new_token(int(time.time()) + days * 86400)
        if len(current.tokens) >= MAX_TOKENS:
            raise TooLarge(
                f"a user holds at most {MAX_TOKENS} tokens: revoke one", code="too-many-tokens"
            )
        user = dataclasses.replace(
            current, version=current.version + 1, tokens=(*current.tokens, entry)
        )
        registration = await service.put_user(user)
        return JSONResponse(
            _registered(registration, user=name, id=entry.id, expires=entry.expires, token=token),
            status_code=201,
            headers=NO_STORE,
        )

    @app.delete("/admin/users/{name}/tokens/{token_id}", tags=["admin"])
    async def revoke_token(name: str, token_id: str, request: Request) -> JSONResponse:
        """Revoke a token at once (its hash leaves the user's record)."""
        await _admin_users(auth, service, request)
        current = _user(service, name)
        kept = tuple(t for t in current.tokens if t.id != token_id)
        if len(kept) == len(current.tokens):
            raise NotFound("the user has no token of this id", code="token-unknown")
        user = dataclasses.replace(current, version=current.version + 1, tokens=kept)
        registration = await service.put_user(user)
        return JSONResponse(_registered(registration, **_public(user)))


def add_grant_route(app: FastAPI, service: TransparencyService) -> None:
    async def owned(entry_id: str, principal: Principal) -> tuple[bytes, str | None]:
        """The statement's entry and organization, if ``principal`` may share it."""
        record = await run_in_threadpool(service.statement_record, entry_id)
        owner = service.registry.name_of(record.issuer)
        if principal.persona != "admin" and (principal.org is None or principal.org != owner):
            raise Forbidden(
                "only the statement's organization, or an administrator, shares it",
                code="grant-forbidden",
            )
        return record.entry_id, owner

    @app.post(
        "/entries/{entry_id}/grants",
        tags=["scrapi"],
        status_code=201,
        openapi_extra=json_body({"org": {"type": "string"}}, required=("org",)),
    )
    async def grant(entry_id: str, request: Request) -> JSONResponse:
        """Share a statement's contents with another organization (a log entry)."""
        principal: Principal = request.state.principal
        entry, owner = await owned(entry_id, principal)
        doc = _json_object(await read_body(request, 4096), frozenset({"org"}), "a grant")
        org = doc.get("org")
        if not isinstance(org, str) or service.registry.get(org) is None:
            raise NotFound(NO_SUCH_ORG, code="org-unknown")
        if org == owner:
            raise InvalidInput("a statement's own organization reads it already", code="grant-self")
        registration = await service.put_grant(Grant(entry, org, principal.user or ADMINISTRATOR))
        return JSONResponse(
            _registered(registration, statement=entry.hex(), org=org), status_code=201
        )

    @app.delete("/entries/{entry_id}/grants/{org}", tags=["scrapi"])
    async def revoke_grant(entry_id: str, org: str, request: Request) -> JSONResponse:
        """Take a share back (a log entry; what was read meanwhile stays read)."""
        principal: Principal = request.state.principal
        entry, _ = await owned(entry_id, principal)
        if not service.grants.allows(entry, org):
            raise NotFound(
                "the statement is not shared with this organization", code="grant-unknown"
            )
        registration = await service.put_grant(
            Grant(entry, org, principal.user or ADMINISTRATOR, revoked=True)
        )
        return JSONResponse(_registered(registration, statement=entry.hex(), org=org))


async def _admin_users(auth: Auth, service: TransparencyService, request: Request) -> None:
    """An administrator's request about users. On a shared store, the user records other
    processes registered are read first: a change builds on the latest version."""
    auth.check_admin(request)
    if service.shared:
        await service.refresh_orgs()


def _user(service: TransparencyService, name: str) -> User:
    user = service.users.get(name)
    if user is None:
        raise NotFound("no user of this name", code="user-unknown")
    return user
