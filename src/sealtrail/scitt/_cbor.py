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

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "check", "dumps", "loads", "thaw"]

#: Deepest nesting of arrays, maps and tags accepted (a COSE_Sign1 with CWT claims is 4).
MAX_DEPTH = 16
#: Most data items in one message (an x5chain of a few certificates is a dozen).
MAX_ITEMS = 4096


def _fail(code: str, message: str) -> InvalidInput:
    return InvalidInput(message, code=code, hint="Send a COSE_Sign1 in deterministic CBOR.")


def check(data: bytes) -> None:
    """Raise :class:`~sealtrail.errors.InvalidInput` unless ``data`` is one well-formed,
    deterministically encoded CBOR item within :data:`MAX_DEPTH` and :data:`MAX_ITEMS`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("cbor-malformed", "expected bytes")
    _scan(bytes(data))


def _scan(data: bytes) -> bool:  # noqa: PLR0912, PLR0915 (one branch per CBOR rule, inlined)
    """:func:`check` on bytes; True if the item holds a tag (cbor2 then decodes the tag's
    content into immutable containers, see :func:`_thaw`).

    This runs twice on every statement registered, so it is written for CPython: the head
    of an item is decoded inline, and the innermost container lives in local variables.
    """
    end = len(data)
    # Every item takes at least one byte: a short input cannot have too many.
    counting = end > MAX_ITEMS
    pos = items = depth = 0
    tagged = False
    # The innermost open container: items still to read in it (a map counts its keys and
    # values), and for a map the encoded keys seen so far (None otherwise). The top level
    # is a container of one item. Outer containers wait on the stack.
    remaining = 1
    seen: set[bytes] | None = None
    stack: list[tuple[int, set[bytes] | None]] = []
    while True:
        if pos >= end:
            raise _fail("cbor-malformed", "CBOR ends where a data item was expected")
        start = pos
        initial = data[pos]
        pos += 1
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            arg = info
        elif info < 28:
            size = 1 << (info - 24)
            after = pos + size
            if after > end:
                raise _fail("cbor-malformed", "CBOR ends inside an item's head")
            arg = int.from_bytes(data[pos:after], "big")
            if major != 7 and arg < (24 if size == 1 else 1 << (4 * size)):
                raise _fail(
                    "cbor-not-deterministic", "a CBOR integer or length is not in its shortest form"
                )
            pos = after
        elif info == 31:
            raise _fail("cbor-not-deterministic", "indefinite-length CBOR items are not accepted")
        else:
            raise _fail("cbor-malformed", f"reserved CBOR additional information {info}")
        if counting:
            items += 1
            if items > MAX_ITEMS:
                raise _fail("cbor-too-complex", f"more than {MAX_ITEMS} CBOR data items")
        if major == 2 or major == 3:  # noqa: PLR1714 (two compares beat a set lookup here)
            after = pos + arg
            if after > end:
                raise _fail("cbor-malformed", "CBOR ends inside a byte or text string")
            if major == 3:
                try:
                    data[pos:after].decode("utf-8")
                except UnicodeDecodeError:
                    raise _fail("cbor-malformed", "a CBOR text string is not UTF-8") from None
            pos = after
        elif major == 7 and info == 24 and arg < 32:
            raise _fail("cbor-malformed", "a CBOR simple value in the wrong form")
        container = 4 <= major <= 6
        if seen is not None and not remaining & 1:
            # This item is a map key (an even count remains): refuse duplicates.
            if container:
                raise _fail("cbor-malformed", "only integers and strings are accepted as map keys")
            key = data[start:pos]
            if key in seen:
                raise _fail("cbor-duplicate-key", "a CBOR map has the same key twice")
            seen.add(key)
        if container:
            if major == 6:
                count, tagged = 1, True
            else:
                count = arg if major == 4 else 2 * arg
            if count:
                if depth >= MAX_DEPTH:
                    raise _fail("cbor-too-complex", f"CBOR nested deeper than {MAX_DEPTH} levels")
                if count > end - pos:
                    raise _fail("cbor-malformed", "a CBOR container claims more items than bytes")
                stack.append((remaining, seen))
                depth += 1
                remaining, seen = count, (set() if major == 5 else None)
                continue
        # A complete item: count it off every container it completes.
        remaining -= 1
        while not remaining:
            if not depth:
                if pos != end:
                    raise _fail("cbor-malformed", f"{end - pos} bytes after the CBOR item")
                return tagged
            remaining, seen = stack.pop()
            depth -= 1
            remaining -= 1


def loads(data: bytes, *, thaw: bool = True) -> Any:  # noqa: ANN401 (decoded CBOR is dynamic)
    """:func:`check`, then decode with ``cbor2``.

    Inside a tag cbor2 returns immutable containers (tuples, ``frozendict``); they are made
    plain lists and dicts unless ``thaw`` is false (the caller then thaws what it keeps).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("cbor-malformed", "expected bytes")
    data = bytes(data)
    tagged = _scan(data)
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise _fail("cbor-malformed", f"CBOR does not decode: {type(exc).__name__}") from None
    return _thaw(value) if tagged and thaw else value


def thaw(value: object) -> Any:  # noqa: ANN401 (decoded CBOR is dynamic)
    """Plain lists and dicts for the immutable containers of a value decoded by
    :func:`loads` with ``thaw=False``."""
    return _thaw(value)


#: Types cbor2 decodes that hold nothing to thaw.
_SCALARS = frozenset({bytes, str, int, bool, float, type(None)})


def _thaw(value: object) -> object:
    """Plain lists and dicts for the immutable containers cbor2 returns inside a tag (bounded
    by :data:`MAX_DEPTH`, already checked). Without a tag, cbor2 returns plain ones: map keys
    are never containers here."""
    if type(value) in _SCALARS:
        return value
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
