"""A Python client for a Sealtrail transparency service (SCRAPI over HTTP).

The safe recipe: register a signed statement, keep the transparent statement, verify it
offline with the service's keys (fetched once and kept)::

    from sealtrail.client import Client
    from sealtrail.scitt import verify_transparent_statement

    with Client("http://127.0.0.1:8080") as service:
        keys = service.service_keys()
        registered = service.register(statement)  # waits for the receipt
    verified = verify_transparent_statement(
        registered.transparent_statement(), service_keys=keys, trust_anchors=anchors
    )

The provenance views (docs/queries.md) come back as parsed JSON: ``device``,
``device_by_serial``, ``node``, ``tree``, ``timeline`` (each entry with its receipt),
``device_timeline``, ``shipment`` and ``compliance``, each optionally ``size=N`` (the view
as of the first N log entries).

Users and tokens (docs/auth.md): ``Client(url, token=...)`` sends a bearer token with every
request — a user's, on a service with ``[auth] required``. With the administrator token,
``users``, ``put_user``, ``issue_token`` (the secret comes back once, in
:class:`IssuedToken`) and ``revoke_token`` keep the service's user records.

:class:`Client` blocks; :class:`AsyncClient` has the same methods as coroutines. Both
raise :class:`sealtrail.errors.Error` subclasses only: the service's problem details come
back as the error class it raised, with its stable ``code``; :class:`ServiceUnreachable`
when there is no answer at all; :class:`RegistrationTimeout` (with the entry id) when a
registration takes longer than the caller waits.

:class:`TileSource` reads a log from its tiles alone (a directory ``sealtrail log
export-tiles`` wrote, or the log's URL), for a :class:`sealtrail.log.LogReader` to audit or
prove from, trusting nothing but the log's key.

Nothing the client receives is trusted: receipts are checked to be COSE_Sign1, statements
to hash to their entry id; everything else is for
:func:`sealtrail.scitt.verify_transparent_statement`.
"""

from __future__ import annotations

from ._client import (
    DEFAULT_TIMEOUT,
    DEFAULT_TOKEN_DAYS,
    MAX_RESPONSE_SIZE,
    NOT_FOUND_HINTS,
    TOKEN_HINTS,
    AsyncClient,
    Client,
    Forbidden,
    IssuedToken,
    RegisteredStatement,
    RegistrationTimeout,
    ServiceError,
    ServiceUnreachable,
    TokenInfo,
    Unauthorized,
    UserChange,
    UserInfo,
    client_tls,
    tls_for,
)
from ._tiles import MAX_BUNDLE_SIZE, TileSource

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN_DAYS",
    "MAX_BUNDLE_SIZE",
    "MAX_RESPONSE_SIZE",
    "NOT_FOUND_HINTS",
    "TOKEN_HINTS",
    "AsyncClient",
    "Client",
    "Forbidden",
    "IssuedToken",
    "RegisteredStatement",
    "RegistrationTimeout",
    "ServiceError",
    "ServiceUnreachable",
    "TileSource",
    "TokenInfo",
    "Unauthorized",
    "UserChange",
    "UserInfo",
    "client_tls",
    "tls_for",
]
