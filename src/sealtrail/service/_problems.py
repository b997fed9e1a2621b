"""RFC 9457 problem details: one JSON shape for every error the service returns."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

from sealtrail.errors import Error

__all__ = ["PROBLEM_TYPE_BASE", "problem_response"]

#: Problem ``type`` URIs are ``<base><code>``; the code is stable (sealtrail.errors).
PROBLEM_TYPE_BASE = "urn:sealtrail:error:"


def problem_response(
    exc: Error, status: int, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + exc.code,
        "title": exc.code.replace("-", " "),
        "status": status,
        "detail": exc.message,
        "code": exc.code,
    }
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type="application/problem+json"
    )
