"""Reading JSON that someone else wrote: one place that turns every way it can be bad into
:class:`~sealtrail.errors.InvalidInput`."""

from __future__ import annotations

import json

from sealtrail.errors import InvalidInput

__all__ = ["load_json"]


def load_json(data: bytes, message: str, *, code: str) -> object:
    """``data`` parsed as JSON, or :class:`InvalidInput` (``message``, ``code``) for anything
    that is not: bytes that are no text, text that is no JSON, and JSON nested deeper than
    the interpreter's recursion limit (``'[' * 4000`` fits in a few kilobytes). The JSON
    reader of what a client, a file or a stored record hands us: the service's request
    bodies, organization, user, grant and key records, proof documents, and the answers
    the client reads."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidInput(message, code=code) from None
