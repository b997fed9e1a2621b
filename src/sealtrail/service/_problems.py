"""RFC 9457 problem details: one JSON shape for every error the service returns."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

from sealtrail.errors import Error

__all__ = [
    "PROBLEM_HEADERS",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "problem_body",
    "problem_response",
]

#: Problem ``type`` URIs are ``<base><code>``; the code is stable (sealtrail.errors).
PROBLEM_TYPE_BASE = "urn:sealtrail:error:"
PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Every problem answer's: a browser must not read one as anything but JSON (its detail may
#: one day quote something of the request's).
PROBLEM_HEADERS = {"X-Content-Type-Options": "nosniff"}


def problem_body(exc: Error, status: int) -> dict[str, object]:
    """The problem details of ``exc`` answered with ``status``."""
    return {
        "type": PROBLEM_TYPE_BASE + exc.code,
        "title": exc.code.replace("-", " "),
        "status": status,
        "detail": exc.message,
        "code": exc.code,
    }


def problem_response(
    exc: Error, status: int, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        problem_body(exc, status),
        status_code=status,
        headers={**PROBLEM_HEADERS, **(headers or {})},
        media_type=PROBLEM_MEDIA_TYPE,
    )
