"""Strict JSON reading for provenance payloads: one place for every structural rule.

A payload is refused, with a stable code, if it is not UTF-8 JSON, repeats a key, uses
NaN/Infinity, holds a field its schema does not name, lacks a required field, or has a
value of the wrong type, length or range. Messages name the field (its path, such as
``devices[3].serial``) but never echo a value or an unknown key from the input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

from sealtrail.errors import InvalidInput, TooLarge

#: Largest payload accepted, in bytes: a manifest of :data:`MAX_DEVICES` identities with
#: their chains (the service's statement size limit and the organization's policy must
#: allow the statement too; docs/provenance.md, "Limits").
MAX_PAYLOAD_SIZE = 64 * 1024 * 1024
#: Longest identifier (serial, batch, shipment, organization, seal id), in characters.
MAX_ID_LENGTH = 128
#: Longest free text (a reason, a place), in characters.
MAX_TEXT_LENGTH = 1024

#: The generic code of a malformed provenance payload.
INVALID = "provenance-invalid"

_HEX = re.compile(r"[0-9a-f]*")
_E = TypeVar("_E", bound=StrEnum)


def fail(where: str, message: str, *, code: str = INVALID) -> NoReturn:
    """Raise :class:`InvalidInput` about the field ``where``."""
    raise InvalidInput(f"{where}: {message}", code=code)


def too_large(where: str, message: str, *, code: str = "provenance-too-large") -> NoReturn:
    """Raise :class:`TooLarge` about the field ``where``."""
    raise TooLarge(f"{where}: {message}", code=code)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise InvalidInput(
                "the payload repeats a key in one object", code="provenance-duplicate-key"
            )
        doc[key] = value
    return doc


def _no_constant(_: str) -> NoReturn:
    raise InvalidInput("NaN and Infinity are not JSON", code="provenance-not-json")


def load(payload: bytes, kind: str) -> object:
    """Parse ``payload`` as strict JSON (duplicate keys, NaN and Infinity refused)."""
    if len(payload) > MAX_PAYLOAD_SIZE:
        too_large(kind, f"the payload exceeds {MAX_PAYLOAD_SIZE} bytes")
    try:
        text = payload.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are both
        raise InvalidInput(f"{kind}: the payload is not JSON", code="provenance-not-json") from None


def canonical(doc: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def obj(
    value: object,
    where: str,
    *,
    required: frozenset[str],
    optional: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``value`` as an object holding every ``required`` field and nothing unnamed."""
    if not isinstance(value, dict):
        fail(where, "must be an object")
    if not value.keys() <= required | optional:
        fail(where, "has a field its schema does not name", code="provenance-unknown-field")
    for name in sorted(required):
        if name not in value:
            fail(where, f"{name} is missing", code="provenance-missing-field")
    return value


def text(value: object, where: str, *, max_length: int = MAX_TEXT_LENGTH) -> str:
    """A printable, non-empty string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value:
        fail(where, "must be a non-empty string")
    if len(value) > max_length:
        too_large(where, f"is longer than {max_length} characters")
    if not value.isprintable():
        fail(where, "must hold printable characters only")
    return value


def ident(value: object, where: str) -> str:
    """An identifier: :func:`text` of at most :data:`MAX_ID_LENGTH`, no outer spaces."""
    result = text(value, where, max_length=MAX_ID_LENGTH)
    if result != result.strip():
        fail(where, "must not begin or end with a space")
    return result


def integer(value: object, where: str, *, low: int, high: int) -> int:
    """An integer (not a boolean) in ``low..high``."""
    if not isinstance(value, int) or isinstance(value, bool):
        fail(where, "must be an integer")
    if not low <= value <= high:
        fail(where, f"must be in {low}..{high}")
    return value


def boolean(value: object, where: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        fail(where, "must be true or false")
    return value


def array(value: object, where: str, *, max_items: int, min_items: int = 0) -> list[Any]:
    """A list of ``min_items..max_items`` values."""
    if not isinstance(value, list):
        fail(where, "must be a list")
    if len(value) > max_items:
        too_large(where, f"holds more than {max_items} items")
    if len(value) < min_items:
        fail(where, f"must hold at least {min_items} item(s)")
    return value


def hexa(value: object, where: str, *, min_bytes: int, max_bytes: int) -> str:
    """Lowercase hex of ``min_bytes..max_bytes`` bytes."""
    if not isinstance(value, str) or _HEX.fullmatch(value) is None or len(value) % 2:
        fail(where, "must be lowercase hex")
    if not min_bytes <= len(value) // 2 <= max_bytes:
        fail(where, f"must encode {min_bytes}..{max_bytes} bytes")
    return value


def choice(value: object, where: str, enum: type[_E]) -> _E:
    """One of the values of ``enum``."""
    if isinstance(value, str):
        for member in enum:
            if member.value == value:
                return member
    fail(where, "must be one of " + ", ".join(m.value for m in enum))


def unique(values: list[Any], where: str, *, code: str = INVALID) -> None:
    """Refuse a list holding the same value twice."""
    if len(set(values)) != len(values):
        fail(where, "holds the same item twice", code=code)
