"""What the OpenAPI document (``/openapi.json``) says beyond what FastAPI infers: the
bodies the routes read themselves, the media types of their binary answers, and the
bearer token they take.

The routes read their bodies with their own limits (``_scrapi.read_body``), so FastAPI
sees no body parameter; ``openapi_extra=request_body(...)`` declares it. A binary answer
is a ``Response`` whose media type FastAPI cannot see; ``responses=answer(...)`` names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BEARER", "BINARY", "answer", "json_body", "request_body"]

#: Any bytes, in the media type's own format.
BINARY: Mapping[str, Any] = {"type": "string", "format": "binary"}
#: The security scheme every route takes: ``Authorization: Bearer <token>`` (docs/auth.md).
#: Optional in the document: the public reads without one, and a service with
#: ``[auth] required = false`` asks for one only on administration.
BEARER: Mapping[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": "A user's token (stk_…) or the administrator token; docs/auth.md",
}


def request_body(
    media_type: str, schema: Mapping[str, Any], *, required: bool = True
) -> dict[str, Any]:
    """``openapi_extra`` declaring a request body of ``media_type``."""
    return {
        "requestBody": {"required": required, "content": {media_type: {"schema": dict(schema)}}}
    }


def json_body(
    properties: Mapping[str, Any], *, required: tuple[str, ...] = (), body_required: bool = True
) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON object with exactly ``properties`` (others are
    refused)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return request_body("application/json", schema, required=body_required)


def answer(
    status: int, description: str, *media_types: str, schema: Mapping[str, Any] = BINARY
) -> dict[int | str, dict[str, Any]]:
    """``responses`` entry: an answer ``status`` in each of ``media_types``."""
    return {
        status: {
            "description": description,
            "content": {media: {"schema": dict(schema)} for media in media_types},
        }
    }
