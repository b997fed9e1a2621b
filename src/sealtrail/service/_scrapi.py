"""SCRAPI routes (the SCITT reference API): register statements, fetch receipts and keys.

``POST /entries`` answers 201 with the receipt when registration completes within
:data:`REGISTER_WAIT` seconds, else 303 to ``/entries/{id}`` with ``Retry-After``;
registration carries on in the background either way. ``GET /entries/{id}`` answers 302
(to itself, with ``Retry-After``) while the statement is stored but not yet covered by a
checkpoint, then 200 with a receipt against the latest checkpoint; 404 ``entry-unknown`` for
an entry no server stored, and for a stored row no server of the deployment stored (its
authentication tag does not verify) whose entry is not in the log: it is never appended,
and a client that registers its statement again has the server's row put in its place (a
row with a good tag and a swapped body is appended under its entry id, and answers 200
once it is). The statement routes answer the same 404 for such a row, and for one whose
body is not its entry's while the log does not hold it.
``/.well-known/scitt-keys`` serves the receipt keys as a COSE_KeySet, and
``/.well-known/scitt-keys/{kid}`` one of them, in the media type SCRAPI names
(``application/cbor``) unless RFC 9052's is asked for by name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from typing import Any

import cbor2
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from sealtrail.errors import InvalidInput, NotFound, TooLarge
from sealtrail.keys import Verifier
from sealtrail.scitt import (
    Registration,
    TransparencyService,
    cose_key,
)

from ._accept import accept_header, preferred
from ._auth import Auth
from ._openapi import BINARY, answer, request_body

__all__ = ["REGISTER_WAIT", "add_scrapi_routes", "read_body"]

_log = logging.getLogger(__name__)

COSE = "application/cose"
#: Seconds POST /entries waits for the registration before answering 303.
REGISTER_WAIT = 2.0
NO_STORE = {"Cache-Control": "no-store"}
#: The configuration changes when an organization brings a new signature algorithm and when
#: the receipt key is rotated (at a restart): as long as the key set is cached.
CONFIGURATION_CACHE = "public, max-age=300"
#: The service keys change when the receipt key is rotated (at a restart).
KEYS_CACHE = "public, max-age=300"
#: The keys' media types, the default first: SCRAPI's ("serialized as application/cbor",
#: sections 2.1 and 2.2), then RFC 9052's registered ones (section 11), for a client that
#: asks for them by name.
KEY_SET_TYPES = ("application/cbor", "application/cose-key-set")
KEY_TYPES = ("application/cbor", "application/cose-key")
#: The configuration: JSON by default, CBOR when preferred.
_CONFIGURATION_TYPES = ("application/json", "application/cbor")
_HEX_KID = re.compile(r"(?:[0-9a-f]{2})+")
_BASE64URL_KID = re.compile(r"[A-Za-z0-9_-]+")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    # Digits counted first: int() of thousands of digits is refused by Python itself.
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise TooLarge(f"request body over the {limit}-byte limit", code="body-too-large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"request body over the {limit}-byte limit", code="body-too-large")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client went away mid-body: nothing was taken, and nobody reads the answer.
        # Not a failure of the server's: no traceback, a line at DEBUG.
        _log.debug("client disconnected after %d bytes of a request body", size)
        raise InvalidInput(
            "the client disconnected before the end of its request body", code="body-incomplete"
        ) from None
    return b"".join(chunks)


async def _settled(future: asyncio.Future[Any], timeout: float) -> bool:
    """Wait until ``future`` is done or ``timeout`` seconds pass; never cancel it.

    One timer and one callback: lighter than ``asyncio.wait`` on the registration path.
    """
    if not future.done():
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(timeout, wake)
        future.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            future.remove_done_callback(wake)
    return future.done()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failure nobody waits for any more as seen (it is logged by the service)."""
    if not future.cancelled():
        future.exception()


def add_scrapi_routes(app: FastAPI, service: TransparencyService, auth: Auth) -> None:
    @app.post(
        "/entries",
        tags=["scrapi"],
        status_code=201,
        response_class=Response,
        responses={
            **answer(201, "Registered: the receipt (COSE_Sign1)", COSE),
            303: {"description": "Stored, not yet in the log: poll the Location"},
        },
        openapi_extra=request_body(COSE, BINARY),
    )
    async def register(request: Request) -> Response:
        """Register a signed statement (``application/cose``)."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != COSE:
            raise InvalidInput(f"send the statement as {COSE}", code="unsupported-media-type")
        data = await read_body(request, service.max_statement_size)
        # May the sender register it? Asked of the organization every check finds for the
        # issuer (on a shared store, one this process may learn of only as a refused check
        # reads the records: check_current), before that check goes further (policy, key,
        # signature, a payload rule that remembers what it accepts): no statement is
        # stored, nor remembered, unless its sender may register it for the organization
        # it was checked against.
        authorize = auth.registers_for(request.state.principal) if auth.required else None
        statement, org = await service.check_current(data, authorize=authorize)
        submission = await service.submit_current(statement, org, authorize=authorize)
        location = f"/entries/{statement.entry_id}"
        # Announce the entry (303) only once it is stored: from then on GET of its Location
        # answers 302 until it is in the log, never 404, even across a crash.
        pending = submission.index
        submission.index.add_done_callback(_retrieve)
        await submission.stored
        if not await _settled(pending, REGISTER_WAIT):
            # Registration goes on; the client polls the entry.
            return Response(
                status_code=303, headers={"Location": location, "Retry-After": "1", **NO_STORE}
            )
        # The index is known: the receipt needs no lookup, and the tiles its proof reads
        # are already cached (absorbed by the sequencer, or read ahead by the follower),
        # so it is built right here.
        receipt = service.receipt_for(Registration(statement.entry_id, pending.result()))
        return Response(
            receipt, status_code=201, media_type=COSE, headers={"Location": location, **NO_STORE}
        )

    @app.get(
        "/entries/{entry_id}",
        tags=["scrapi"],
        response_class=Response,
        responses={
            **answer(200, "The receipt (COSE_Sign1)", COSE),
            302: {"description": "Pending: not yet in the log, poll again"},
        },
    )
    async def receipt(entry_id: str) -> Response:
        """The entry's receipt against the latest checkpoint (302 while pending). 404
        ``entry-unknown`` for an entry id nothing is stored under, and for a stored row
        no server stored (written behind the service) that is not in the log: it never
        will be, so register the statement again."""
        try:
            data = await run_in_threadpool(service.receipt, entry_id)
        except NotFound as exc:
            if exc.code != "entry-pending":
                raise
            return Response(
                status_code=302,
                headers={"Location": f"/entries/{entry_id}", "Retry-After": "1", **NO_STORE},
            )
        return Response(data, media_type=COSE, headers=NO_STORE)

    @app.get(
        "/entries/{entry_id}/statement",
        tags=["scrapi"],
        response_class=Response,
        responses=answer(200, "The signed statement (COSE_Sign1)", COSE),
    )
    async def statement(entry_id: str, request: Request) -> Response:
        """The signed statement as registered (its organization, auditors, administrators).
        404 ``entry-unknown`` as for the receipt: a row no server stored is never served."""
        record = await run_in_threadpool(service.statement_record, entry_id)
        auth.may_read(
            request.state.principal, service.registry.name_of(record.issuer), record.entry_id
        )
        cache = "private" if auth.required else "public"
        return Response(
            record.body,
            media_type=COSE,
            headers={"Cache-Control": f"{cache}, max-age=31536000, immutable"},
        )

    @app.get(
        "/entries/{entry_id}/transparent-statement",
        tags=["scrapi"],
        response_class=Response,
        responses=answer(200, "The transparent statement (COSE_Sign1)", COSE),
    )
    async def transparent(entry_id: str, request: Request) -> Response:
        """The statement with a fresh receipt in its unprotected header (label 394)."""
        record = await run_in_threadpool(service.statement_record, entry_id)
        auth.may_read(
            request.state.principal, service.registry.name_of(record.issuer), record.entry_id
        )
        data = await run_in_threadpool(service.transparent_statement, entry_id, record)
        return Response(data, media_type=COSE, headers=NO_STORE)

    @app.get(
        "/.well-known/transparency-configuration",
        tags=["scrapi"],
        response_class=Response,
        responses={
            200: {
                "description": "The configuration, as JSON or (Accept: application/cbor) CBOR",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/cbor": {"schema": dict(BINARY)},
                },
            }
        },
    )
    async def configuration(request: Request) -> Response:
        """The service's configuration (JSON, or CBOR when asked for ``application/cbor``)."""
        config = service.configuration()
        # One URL, two representations: a cache must key them by Accept.
        headers = {"Vary": "Accept", "Cache-Control": CONFIGURATION_CACHE}
        if preferred(accept_header(request.scope), _CONFIGURATION_TYPES) == "application/cbor":
            return Response(cbor2.dumps(config), media_type="application/cbor", headers=headers)
        return JSONResponse(config, headers=headers)

    @app.get(
        "/.well-known/scitt-keys",
        tags=["scrapi"],
        response_class=Response,
        responses=answer(200, "The receipt keys (COSE_KeySet)", *KEY_SET_TYPES),
    )
    async def keys(request: Request) -> Response:
        """The service's receipt keys as a COSE_KeySet, retired keys included
        (``application/cbor``, or ``application/cose-key-set`` when asked for by name)."""
        return Response(
            service.key_set(),
            media_type=preferred(accept_header(request.scope), KEY_SET_TYPES),
            headers={"Cache-Control": KEYS_CACHE, "Vary": "Accept"},
        )

    @app.get(
        "/.well-known/scitt-keys/{kid}",
        tags=["scrapi"],
        response_class=Response,
        responses=answer(200, "One receipt key (COSE_Key)", *KEY_TYPES),
    )
    async def key(kid: str, request: Request) -> Response:
        """One of the service's receipt keys, current or retired, as a COSE_Key: its ``kid``
        in lowercase hex or base64url without padding (``application/cbor``, or
        ``application/cose-key`` when asked for by name); 404 ``key-unknown`` otherwise."""
        verifier = _key_named(service, kid)
        if verifier is None:
            # A fixed text: the kid is the client's, and may be anything.
            raise NotFound(
                "this service has no key of that kid (lowercase hex or base64url without padding)",
                code="key-unknown",
            )
        return Response(
            cbor2.dumps(cose_key(verifier), canonical=True),
            media_type=preferred(accept_header(request.scope), KEY_TYPES),
            headers={"Cache-Control": KEYS_CACHE, "Vary": "Accept"},
        )


def _key_named(service: TransparencyService, text: str) -> Verifier | None:
    """The service key (current or retired) whose kid ``text`` spells: in lowercase hex (as
    Sealtrail writes kids everywhere else), or in base64url without padding (SCRAPI section
    2.2: the kid bytes are not URL-safe). A text that is both (hex digits only) is tried as
    hex first; the two readings have different lengths for the service's 32-byte kids."""
    keys = service.keys
    if _HEX_KID.fullmatch(text):
        found = keys.get(bytes.fromhex(text))
        if found is not None:
            return found
    if not _BASE64URL_KID.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # One spelling per kid: trailing bits that decoding drops make another text, refused.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        return None
    return keys.get(raw)
