"""Strict CBOR at the trust boundary: checked before anything is decoded.

Every COSE message that reaches Sealtrail from outside goes through :func:`check` first, a
single iterative pass over the bytes (no recursion, so no nesting can exhaust the stack)
that refuses, with a stable error code each:

* malformed or truncated items, reserved additional-information values, trailing bytes
  (``cbor-malformed``);
* indefinite lengths and integers or lengths not in their shortest form — the encoding
  must be the only one of its value, so that a registered statement's bytes can be
  rebuilt from a transparent statement (``cbor-not-deterministic``);
* duplicate map keys (``cbor-duplicate-key``);
* nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_ITEMS` items
  (``cbor-too-complex``).

Only then is the message handed to ``cbor2``, whose own limits are therefore never the
last line of defence. Map key *order* is not checked: protected headers are signed bytes
that are never re-encoded, and real signers (the IETF SCITT example vectors among them)
do not sort them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from sealtrail.errors import InvalidInput

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "check", "dumps", "loads"]

#: Deepest nesting of arrays, maps and tags accepted (a COSE_Sign1 with CWT claims is 4).
MAX_DEPTH = 16
#: Most data items in one message (an x5chain of a few certificates is a dozen).
MAX_ITEMS = 4096


def _fail(code: str, message: str) -> InvalidInput:
    return InvalidInput(message, code=code, hint="Send a COSE_Sign1 in deterministic CBOR.")


def _head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Major type, additional info, argument and the position after the head."""
    end = len(data)
    if pos >= end:
        raise _fail("cbor-malformed", "CBOR ends where a data item was expected")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info > 27:
        if info == 31:
            raise _fail("cbor-not-deterministic", "indefinite-length CBOR items are not accepted")
        raise _fail("cbor-malformed", f"reserved CBOR additional information {info}")
    size = 1 << (info - 24)
    if pos + size > end:
        raise _fail("cbor-malformed", "CBOR ends inside an item's head")
    arg = int.from_bytes(data[pos : pos + size], "big")
    if major != 7 and arg < (24 if size == 1 else 1 << (8 * size // 2)):
        raise _fail(
            "cbor-not-deterministic", "a CBOR integer or length is not in its shortest form"
        )
    return major, info, arg, pos + size


def check(data: bytes) -> None:  # noqa: PLR0912 (one branch per CBOR rule)
    """Raise :class:`~sealtrail.errors.InvalidInput` unless ``data`` is one well-formed,
    deterministically encoded CBOR item within :data:`MAX_DEPTH` and :data:`MAX_ITEMS`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("cbor-malformed", "expected bytes")
    data = bytes(data)
    pos, items, end = 0, 0, len(data)
    # Each open container: [items still to read, encoded keys seen, is a map].
    stack: list[list[Any]] = []
    expecting_key = False
    while True:
        start = pos
        major, info, arg, pos = _head(data, pos)
        items += 1
        if items > MAX_ITEMS:
            raise _fail("cbor-too-complex", f"more than {MAX_ITEMS} CBOR data items")
        if major in (2, 3):
            if pos + arg > end:
                raise _fail("cbor-malformed", "CBOR ends inside a byte or text string")
            if major == 3:
                try:
                    data[pos : pos + arg].decode("utf-8")
                except UnicodeDecodeError:
                    raise _fail("cbor-malformed", "a CBOR text string is not UTF-8") from None
            pos += arg
        elif major == 7 and info == 24 and arg < 32:
            raise _fail("cbor-malformed", "a CBOR simple value in the wrong form")
        if expecting_key:
            # This item was a map key: remember its encoding to refuse duplicates.
            if major in (4, 5, 6):
                raise _fail("cbor-malformed", "only integers and strings are accepted as map keys")
            key = data[start:pos]
            seen = stack[-1][1]
            if key in seen:
                raise _fail("cbor-duplicate-key", "a CBOR map has the same key twice")
            seen.add(key)
        count = (1 if major == 6 else arg * (2 if major == 5 else 1)) if major in (4, 5, 6) else 0
        if count:
            if len(stack) >= MAX_DEPTH:
                raise _fail("cbor-too-complex", f"CBOR nested deeper than {MAX_DEPTH} levels")
            if count > end - pos:  # every item takes at least one byte
                raise _fail("cbor-malformed", "a CBOR container claims more items than bytes")
            stack.append([count, set(), major == 5])
        else:
            # A complete item: count it off every container it completes.
            while stack:
                stack[-1][0] -= 1
                if stack[-1][0]:
                    break
                stack.pop()
            if not stack:
                break
        # In a map, items alternate key, value: a key is due when an even count remains.
        expecting_key = stack[-1][2] and stack[-1][0] % 2 == 0
    if pos != end:
        raise _fail("cbor-malformed", f"{end - pos} bytes after the CBOR item")


def loads(data: bytes) -> Any:  # noqa: ANN401 (decoded CBOR is dynamic)
    """:func:`check`, then decode with ``cbor2``."""
    check(data)
    try:
        return _thaw(cbor2.loads(data))
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise _fail("cbor-malformed", f"CBOR does not decode: {type(exc).__name__}") from None


def _thaw(value: object) -> object:
    """Plain lists and dicts for the immutable containers cbor2 may return (bounded by
    :data:`MAX_DEPTH`, already checked)."""
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _thaw(value.value))
    return value


def dumps(value: object) -> bytes:
    """Encode deterministically (shortest forms, definite lengths, sorted map keys)."""
    return cbor2.dumps(value, canonical=True)
