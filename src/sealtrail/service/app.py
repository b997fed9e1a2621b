"""The HTTP app: parse -> call the library -> map errors. Nothing else lives here.

Serves the C2SP tlog-tiles read API (``/checkpoint``, ``/tile/<L>/<N>[.p/<W>]``,
``/tile/entries/<N>[.p/<W>]``), JSON proof routes under ``/log/v1``, and — when given a
transparency service — the SCRAPI routes (``/entries``, ``/.well-known/...``), and with a
provenance ledger as well, the read-only provenance queries under ``/provenance/v1``.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

import sealtrail
from sealtrail.errors import (
    Conflict,
    Corruption,
    Error,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    RetryLater,
    StorageError,
    TooLarge,
    Unauthorized,
    VerificationError,
)
from sealtrail.log import LogReader
from sealtrail.merkle import HASH_SIZE, MerkleError, parse_tile_path
from sealtrail.provenance import ProvenanceLedger
from sealtrail.scitt import TransparencyService

from ._admin import add_admin_routes, add_grant_route
from ._auth import Auth
from ._limits import RateLimiter, RateLimitMiddleware, RateLimits
from ._openapi import BEARER, BINARY, answer
from ._problems import CONCISE_PROBLEM_MEDIA_TYPE, PROBLEM_MEDIA_TYPE, problem_response
from ._provenance import add_provenance_routes
from ._scrapi import add_scrapi_routes

__all__ = ["DirectRoute", "RateLimits", "create_app"]

#: Full and partial tiles never change once served (a partial tile of width W is a fixed
#: prefix), so they are cached for a year; the checkpoint only for a moment.
IMMUTABLE = "public, max-age=31536000, immutable"
CHECKPOINT_CACHE = "public, max-age=2"
OCTETS = "application/octet-stream"

#: HTTP status of each error class, most specific first (the table in ARCHITECTURE.md,
#: "Errors and what they do"); any other error is a 500.
_log = logging.getLogger(__name__)

_STATUS: list[tuple[type[Error], int]] = [
    (TooLarge, 413),
    (InvalidInput, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    # A statement whose signature, chain or policy check fails is a bad request.
    (VerificationError, 400),
    (RateLimited, 429),
    (RetryLater, 503),
    (Conflict, 409),
    # Stored data contradicting the checkpoint is the server's fault, not a passing outage.
    (Corruption, 500),
    (StorageError, 503),
]
#: Codes answered with a more precise status than their class's.
_CODE_STATUS = {"unsupported-media-type": 415}
#: Codes of the errors the routing layer raises itself, by status.
_HTTP_CODES = {404: "not-found", 405: "method-not-allowed"}
#: What a server without the transparency service (``sealtrail serve --read-only``) answers,
#: with status 501, to a request for the service's paths.
SERVICE_PATHS = (
    "/entries",
    "/.well-known/scitt-keys",
    "/.well-known/transparency-configuration",
    "/admin/",
    "/provenance/",
)
READ_ONLY_DETAIL = (
    "this server is read-only: it serves the log (checkpoints, tiles, proofs); registrations, "
    "receipts, keys and provenance are served by the service's other servers"
)
#: The detail of a ``storage-error`` answer, and when to retry (seconds): a store's outage
#: (PostgreSQL restarting, say) usually passes within seconds; its cause is logged.
STORE_UNAVAILABLE = "the service's store is unavailable; retry later"
STORE_RETRY_AFTER = 2
#: Problem details are answers about one request: never cached.
_PROBLEM_HEADERS = {"Cache-Control": "no-store"}
#: How the OpenAPI document describes every error answer (``_document_problems``).
_PROBLEM_ANSWER = {
    "description": "Problem details with a stable code: RFC 9457 JSON, or RFC 9290 CBOR when "
    "the Accept header asks for it (on the SCRAPI routes, also when it admits no JSON)",
    "content": {
        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}},
        CONCISE_PROBLEM_MEDIA_TYPE: {"schema": dict(BINARY)},
    },
}


class ProblemDetails(BaseModel):
    """The body of every JSON error answer (``_problems.problem_response``)."""

    type: str
    title: str
    status: int
    detail: str
    code: str


class LogInfo(BaseModel):
    origin: str
    verifier_key: str
    size: int
    version: str


class InclusionProofModel(BaseModel):
    index: int
    size: int
    leaf_hash: str
    hashes: list[str]


class ConsistencyProofModel(BaseModel):
    size1: int
    size2: int
    hashes: list[str]


def create_app(
    reader: LogReader,
    *,
    verifier_key: str,
    service: TransparencyService | None = None,
    admin_token_hash: bytes | None = None,
    ledger: ProvenanceLedger | None = None,
    lifespan: Any = None,  # noqa: ANN401 (FastAPI's own lifespan type)
    limits: RateLimits | None = None,
    auth_required: bool = False,
) -> FastAPI:
    """Build the app over a reader; with ``service``, also the SCRAPI registration routes;
    with ``ledger`` (and ``service``, which issues the timelines' receipts), also the
    provenance query routes (docs/queries.md); with ``limits``, per-client request budgets
    (429 over them; docs/limits.md). Without ``limits`` nothing is rate limited. With
    ``auth_required`` every route needs a principal its persona allows (docs/auth.md).

    Without a service the app is read-only and stateless (any number may serve one store).
    """
    if ledger is not None and service is None:
        raise TypeError("the provenance routes need the transparency service (receipts)")
    auth = Auth(service, admin_token_hash, required=auth_required)
    app = FastAPI(
        title="Sealtrail",
        version=sealtrail.__version__,
        summary="A tamper-evident provenance ledger built on a verifiable log.",
        lifespan=lifespan,
        # Every route, those added later included, resolves its principal first: the API's
        # description too, served by routes of ours (_add_description_routes) rather than
        # FastAPI's, which no dependency reaches.
        dependencies=[Depends(auth.authorize)],
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.auth = auth
    app.state.read_only = service is None
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    if service is not None:
        # Under the rate limits, as every route is; outside compression: a receipt is
        # hashes and signatures, smaller than the compression threshold until a log of
        # about 2^30 entries, and passing through the compression costs ~19 µs a request.
        app.add_middleware(
            DirectRoute, routes=app.router, auth=auth, method="POST", path="/entries"
        )
    if limits is not None:
        # Added last, so it runs first: a refused request costs no more than this check.
        app.add_middleware(
            RateLimitMiddleware,
            limiter=RateLimiter(limits),
            refuse=_problem,
            token_known=auth.token_known,
            certificate_known=auth.certificate_known,
        )
    _add_problem_handlers(app)
    _document_problems(app)
    _add_description_routes(app)
    _add_tlog_tiles_routes(app, reader)
    _add_log_routes(app, reader, verifier_key)
    if service is not None:
        add_scrapi_routes(app, service, auth)
        add_admin_routes(app, service, auth)
        add_grant_route(app, service)
        if ledger is not None:
            add_provenance_routes(app, ledger, service, auth)
    return app


class DirectRoute:
    """Serves one route's requests straight from its handler, past the framework's router,
    dependency injection and exception middleware: ``POST /entries``, every registration.

    Measured over HTTP in one process on SQLite: those layers cost more per registration
    than the handler itself (1,300 registrations/s through them, 1,800 to 2,300/s past them).
    What they do for this route is done here, the same way: the route is matched by its
    own ``matches`` (root path and method included), the request's principal is resolved
    and checked by :meth:`Auth.authorize` as the app-wide dependency does, and our errors
    become the same problem details; any other exception goes on to the server-error
    handler, as from any route. The route stays declared in the app (OpenAPI, and any
    request this does not take). Its handler must take the request as its only argument.
    """

    def __init__(
        self, app: ASGIApp, *, routes: APIRouter, auth: Auth, method: str, path: str
    ) -> None:
        # Built with the middleware stack, at the app's first request: every route exists.
        self.app = app
        self._auth = auth
        self._method = method
        self._route = _route(routes, method, path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != self._method:
            await self.app(scope, receive, send)
            return
        route = self._route
        match, child = route.matches(scope)
        if match is not Match.FULL:
            await self.app(scope, receive, send)
            return
        scope.update(child)
        request = Request(scope, receive)
        try:
            await self._auth.authorize(request)
            response = await route.endpoint(request)
        except Error as exc:
            response = _problem(exc, scope)
        await response(scope, receive, send)


def _route(routes: APIRouter, method: str, path: str) -> APIRoute:
    for route in routes.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")


def _add_problem_handlers(app: FastAPI) -> None:
    """Every error becomes problem details with a stable code, never cached: RFC 9457 JSON,
    or RFC 9290 CBOR when the request negotiates it (``_problems.wants_concise``)."""

    @app.exception_handler(Error)
    async def _error(request: Request, exc: Error) -> Response:
        return _problem(exc, request.scope)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        # The message names the field and the rule, never the value sent.
        return problem_response(
            InvalidInput(f"{where}: {first.get('msg', 'invalid request')}"),
            400,
            headers=_PROBLEM_HEADERS,
            scope=request.scope,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        if status in {404, 405} and _read_only(request):
            return problem_response(
                Error(READ_ONLY_DETAIL, code="read-only-server"),
                501,
                headers=_PROBLEM_HEADERS,
                scope=request.scope,
            )
        if status == 404:
            error: Error = NotFound("no such resource")
        else:
            error = Error(str(exc.detail), code=_HTTP_CODES.get(status, "http-error"))
        # Starlette's own headers (Allow on a 405) are part of the answer.
        headers = {**(exc.headers or {}), **_PROBLEM_HEADERS}
        return problem_response(error, status, headers=headers, scope=request.scope)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> Response:
        # A bug, not a refusal: answered in the same shape, with nothing of the exception
        # (it may hold request data); the server still logs it with its traceback.
        return problem_response(
            Error("the server failed to handle the request", code="internal-error"),
            500,
            headers=_PROBLEM_HEADERS,
            scope=request.scope,
        )


def _read_only(request: Request) -> bool:
    """A request for the transparency service to a server that only serves the log."""
    return getattr(request.app.state, "read_only", False) and request.url.path.startswith(
        SERVICE_PATHS
    )


def _document_problems(app: FastAPI) -> None:
    """Declare in the OpenAPI document what every route may answer besides success: problem
    details, for any 4xx or 5xx status. FastAPI's own 422 goes: a request that fails
    validation is answered 400 (``_add_problem_handlers``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()  # kept by FastAPI as app.openapi_schema: this runs once
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["ProblemDetails"] = ProblemDetails.model_json_schema()
        # A token is optional in the document: the public reads without one, and without
        # [auth] required only administration asks for one (docs/auth.md).
        doc["components"]["securitySchemes"] = {"bearer": dict(BEARER)}
        doc["security"] = [{}, {"bearer": []}]
        for operations in doc["paths"].values():
            for operation in operations.values():
                responses = operation["responses"]
                responses.pop("422", None)
                responses["4XX"] = responses["5XX"] = _PROBLEM_ANSWER
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


#: Where the API describes itself (OpenAPI), and its two renderings.
OPENAPI_PATH = "/openapi.json"


def _add_description_routes(app: FastAPI) -> None:
    """The API's description: ``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, as
    routes of the app, so that the app-wide access check runs on them as on every route (a
    bad credential is refused here too); the route table opens them to everyone."""

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=root + OPENAPI_PATH, title=f"{app.title} API")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(openapi_url=root + OPENAPI_PATH, title=f"{app.title} API")


def _problem(exc: Error, scope: Scope) -> Response:
    """The answer to the request of ``scope`` refused with ``exc``: by a route, by the
    registration route past the router (:class:`DirectRoute`), or by the rate limits before
    any route. Its encoding is negotiated here, so a request that succeeds pays nothing."""
    if type(exc) is StorageError:
        # An outage of the store: the client learns to retry, not where the store is or what
        # it said; the operator finds that in the server's log.
        _log.warning("store unavailable: %s", exc.message)
        exc = StorageError(STORE_UNAVAILABLE)
    return problem_response(exc, _status_of(exc), headers=_headers_for(exc), scope=scope)


def _status_of(exc: Error) -> int:
    """The HTTP status an error is answered with."""
    status = _CODE_STATUS.get(exc.code)
    if status is not None:
        return status
    return next((s for cls, s in _STATUS if isinstance(exc, cls)), 500)


def _headers_for(exc: Error) -> dict[str, str]:
    headers = dict(_PROBLEM_HEADERS)
    if isinstance(exc, RetryLater):
        # Whole seconds, rounded up: retrying at the stated time must not come too early.
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif type(exc) is StorageError:
        headers["Retry-After"] = str(STORE_RETRY_AFTER)
    if isinstance(exc, Unauthorized):
        # RFC 9110 section 11.6.1: a 401 names the scheme to authenticate with.
        headers["WWW-Authenticate"] = 'Bearer realm="sealtrail-admin"'
    return headers


def _add_tlog_tiles_routes(app: FastAPI, reader: LogReader) -> None:
    """The C2SP tlog-tiles read API: checkpoint, hash tiles and entry bundles."""

    # GET and HEAD: tlog-tiles clients and caches ask whether a tile or a newer checkpoint
    # is there with HEAD. The same handlers: the server sends the headers without the body.
    @app.head("/checkpoint", response_class=PlainTextResponse, tags=["tlog-tiles"])
    @app.get("/checkpoint", response_class=PlainTextResponse, tags=["tlog-tiles"])
    async def checkpoint() -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note)."""
        latest = await run_in_threadpool(reader.checkpoint)
        if latest is None:
            raise NotFound("the log is empty: no checkpoint yet")
        return Response(
            latest.note,
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": CHECKPOINT_CACHE},
        )

    tile_answer = answer(200, "A hash tile or an entry bundle", OCTETS)

    @app.head(
        "/tile/{path:path}", tags=["tlog-tiles"], response_class=Response, responses=tile_answer
    )
    @app.get(
        "/tile/{path:path}", tags=["tlog-tiles"], response_class=Response, responses=tile_answer
    )
    async def tile(path: str) -> Response:
        """A Merkle tile or an entry bundle, per C2SP tlog-tiles."""
        try:
            level, index, width = parse_tile_path("tile/" + path)
        except MerkleError:
            # A fixed text: the path is the client's, and may be markup.
            raise NotFound("not a tile path (C2SP tlog-tiles)") from None
        if level == "entries":
            data = await run_in_threadpool(reader.entry_bundle, index, width)
        else:
            data = await run_in_threadpool(reader.tile, level, index, width)
        return Response(data, media_type=OCTETS, headers={"Cache-Control": IMMUTABLE})


def _add_log_routes(app: FastAPI, reader: LogReader, verifier_key: str) -> None:
    """Conveniences over the tiles: info, entries by index and proofs as JSON."""

    @app.get("/log/v1/info", tags=["log"])
    async def info(response: Response) -> LogInfo:
        """The log's origin, public verifier key and current size."""
        response.headers["Cache-Control"] = "no-store"  # the size changes with every batch
        size = await run_in_threadpool(reader.size)
        return LogInfo(
            origin=reader.origin,
            verifier_key=verifier_key,
            size=size,
            version=sealtrail.__version__,
        )

    @app.get(
        "/log/v1/entries/{index}",
        tags=["log"],
        response_class=Response,
        responses=answer(200, "The entry's bytes", OCTETS),
    )
    async def entry(index: int) -> Response:
        """One entry's bytes."""
        data = await run_in_threadpool(reader.entry, index)
        return Response(data, media_type=OCTETS, headers={"Cache-Control": IMMUTABLE})

    @app.get("/log/v1/proof/inclusion", tags=["log"])
    async def inclusion(
        index: Annotated[int | None, Query(ge=0)] = None,
        leaf_hash: Annotated[str | None, Query(description="hex SHA-256 leaf hash")] = None,
        size: Annotated[int | None, Query(ge=1)] = None,
    ) -> InclusionProofModel:
        """An RFC 9162 inclusion proof, by index or by leaf hash, for the tree of ``size``."""
        if (index is None) == (leaf_hash is None):
            raise InvalidInput("give exactly one of index or leaf_hash")
        if leaf_hash is not None:
            try:
                leaf = bytes.fromhex(leaf_hash)
            except ValueError as exc:
                raise InvalidInput("leaf_hash must be hex") from exc
            if len(leaf) != HASH_SIZE:
                raise InvalidInput("leaf_hash must be 32 bytes")
            proof = await run_in_threadpool(lambda: reader.inclusion_proof_by_hash(leaf, size=size))
        else:
            assert index is not None
            proof = await run_in_threadpool(lambda: reader.inclusion_proof(index, size=size))
        return InclusionProofModel.model_validate(proof.to_dict())

    @app.get("/log/v1/proof/consistency", tags=["log"])
    async def consistency(
        size1: Annotated[int, Query(ge=0)],
        size2: Annotated[int | None, Query(ge=1)] = None,
    ) -> ConsistencyProofModel:
        """An RFC 9162 consistency proof from tree ``size1`` to ``size2`` (default: latest)."""
        proof = await run_in_threadpool(lambda: reader.consistency_proof(size1, size2))
        return ConsistencyProofModel.model_validate(proof.to_dict())
