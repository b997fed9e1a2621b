"""Problem details: one shape for every error the service returns, in two encodings.

RFC 9457 JSON (``application/problem+json``) is what every client gets by default; RFC 9290
Concise Problem Details (``application/concise-problem-details+cbor``), which SCRAPI makes
the body of its errors, is what a request negotiates with its ``Accept`` header
(:func:`wants_concise`, docs/scitt.md "Errors"). Both carry the same members: the CBOR one is
the JSON one converted as RFC 9290 appendix B says (title and detail as standard entries,
``type``, ``status`` and ``code`` in the registered custom entry 7807, "tunnel-7807").
"""

from __future__ import annotations

from collections.abc import Mapping

import cbor2
from fastapi.responses import JSONResponse, Response
from starlette.types import Scope

from sealtrail.errors import Error

from ._accept import accept_header, parse_accept, quality

__all__ = [
    "CONCISE_PROBLEM_MEDIA_TYPE",
    "PROBLEM_HEADERS",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "SCRAPI_PATHS",
    "concise_problem_body",
    "problem_body",
    "problem_response",
    "wants_concise",
]

#: Problem ``type`` URIs are ``<base><code>``; the code is stable (sealtrail.errors).
PROBLEM_TYPE_BASE = "urn:sealtrail:error:"
PROBLEM_MEDIA_TYPE = "application/problem+json"
CONCISE_PROBLEM_MEDIA_TYPE = "application/concise-problem-details+cbor"
#: Every problem answer's: a browser must not read one as anything but what it says it is
#: (its detail may one day quote something of the request's).
PROBLEM_HEADERS = {"X-Content-Type-Options": "nosniff"}
#: RFC 9290 keys: the standard entries title and detail, and the custom entry that tunnels
#: RFC 7807 (now 9457) members (appendix B: ``type`` 0, ``status`` 1, others by name).
#: Not response-code (-4): it holds a CoAP code (``uint .size 1``), not an HTTP status.
_TITLE, _DETAIL, _TUNNEL_7807, _TYPE, _STATUS = -1, -2, 7807, 0, 1
#: The SCRAPI resources (exact paths, or prefixes ending in ``/``): there, a request whose
#: Accept admits no JSON is answered concise problem details (SCRAPI, section 2).
SCRAPI_PATHS = (
    "/entries",
    "/entries/",
    "/.well-known/scitt-keys",
    "/.well-known/scitt-keys/",
    "/.well-known/transparency-configuration",
)
_JSON_TYPES = (PROBLEM_MEDIA_TYPE, "application/json")


def problem_body(exc: Error, status: int) -> dict[str, object]:
    """The problem details of ``exc`` answered with ``status``."""
    return {
        "type": PROBLEM_TYPE_BASE + exc.code,
        "title": exc.code.replace("-", " "),
        "status": status,
        "detail": exc.message,
        "code": exc.code,
    }


def concise_problem_body(exc: Error, status: int) -> bytes:
    """The same problem details as RFC 9290 Concise Problem Details, encoded as all the CBOR
    the service writes (cbor2's canonical form: shortest forms, definite lengths, map keys
    sorted length-first, RFC 8949 section 4.2.3)."""
    body = problem_body(exc, status)
    tunnel = {_TYPE: body["type"], _STATUS: status, "code": exc.code}
    return cbor2.dumps(
        {_TITLE: body["title"], _DETAIL: body["detail"], _TUNNEL_7807: tunnel}, canonical=True
    )


def wants_concise(scope: Scope) -> bool:
    """Whether a request is answered Concise Problem Details rather than JSON: when its
    Accept prefers ``application/concise-problem-details+cbor`` to JSON (a higher weight,
    or the same weight from a more specific range), on any route; on the SCRAPI resources,
    also when its Accept admits no JSON at all (``application/problem+json``, ``application/
    json`` or a range covering them). No Accept, an empty or malformed one: JSON."""
    accept = accept_header(scope)
    ranges = None if accept is None else parse_accept(accept)
    if not ranges:
        return False
    concise = quality(ranges, CONCISE_PROBLEM_MEDIA_TYPE)
    json = max(quality(ranges, media) for media in _JSON_TYPES)
    if concise[0] > 0 and concise > json:
        return True
    return json[0] == 0 and _scrapi(scope)


def _scrapi(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]  # behind a proxy that strips a prefix, as the router reads it
    return path in SCRAPI_PATHS or path.startswith(tuple(p for p in SCRAPI_PATHS if p[-1] == "/"))


def problem_response(
    exc: Error,
    status: int,
    *,
    headers: Mapping[str, str] | None = None,
    scope: Scope | None = None,
) -> Response:
    """The answer refusing a request with ``exc``. With the request's ``scope`` the
    encoding is negotiated (:func:`wants_concise`) and the answer says it varies by
    ``Accept``; without one, JSON."""
    merged = {**PROBLEM_HEADERS, **(headers or {})}
    if scope is None:
        return JSONResponse(
            problem_body(exc, status),
            status_code=status,
            headers=merged,
            media_type=PROBLEM_MEDIA_TYPE,
        )
    vary = merged.pop("Vary", "")
    merged["Vary"] = f"{vary}, Accept" if vary else "Accept"
    if wants_concise(scope):
        return Response(
            concise_problem_body(exc, status),
            status_code=status,
            headers=merged,
            media_type=CONCISE_PROBLEM_MEDIA_TYPE,
        )
    return JSONResponse(
        problem_body(exc, status), status_code=status, headers=merged, media_type=PROBLEM_MEDIA_TYPE
    )
