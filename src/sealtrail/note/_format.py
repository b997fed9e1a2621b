"""Wire-format pieces shared by the note modules: names, key IDs, base64, limits.

Sources: C2SP signed-note (https://c2sp.org/signed-note), C2SP tlog-cosignature
(https://c2sp.org/tlog-cosignature), and the key string formats of Go's
golang.org/x/mod/sumdb/note.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from sealtrail.errors import InvalidInput

__all__ = [
    "COSIGNATURE_V1_SIZE",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TIMESTAMP",
    "SIGNATURE_TYPE_COSIGNATURE_V1",
    "SIGNATURE_TYPE_ED25519",
]

SIGNATURE_TYPE_ED25519 = 0x01
"""Signed-note signature type: plain Ed25519 over the note text."""

SIGNATURE_TYPE_COSIGNATURE_V1 = 0x04
"""Signed-note signature type: timestamped Ed25519 witness cosignature (tlog-cosignature)."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry. C2SP signed-note: verifiers SHOULD limit the number
and MUST accept at least 16; Go's x/mod/sumdb/note rejects more than 100. Counted before any
signature is verified, duplicates included, so a hostile note costs at most this many checks."""

MAX_NOTE_SIZE = 1 << 20
"""Largest note accepted, in bytes (1 MiB). C2SP signed-note allows the limit to be on size
instead and warns that post-quantum signatures approach 5 kB: 100 such lines (~6.5 kB each
in base64) plus a checkpoint body fit well inside."""

MAX_TIMESTAMP = (1 << 63) - 1
"""tlog-cosignature: the u64 timestamp MUST NOT exceed 2^63 - 1."""

COSIGNATURE_V1_SIZE = 8 + 64
"""A cosignature/v1 signature after the key ID: u64 big-endian timestamp || Ed25519 signature."""

KEY_ID_SIZE = 4
ED25519_KEY_SIZE = 32
EM_DASH_PREFIX = "\u2014 "
COSIGNATURE_V1_HEADER = "cosignature/v1\n"

_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def is_note_name(name: str) -> bool:
    """C2SP signed-note rule: non-empty, no Unicode spaces, no ``+``.

    Used when *reading* signature lines, so a note with an oddly named unknown signer is
    still accepted (and its signature ignored) as the spec requires.
    """
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def check_key_name(name: str, *, what: str = "a key name") -> str:
    """Validate a name we are asked to *trust or sign with*; stricter than :func:`is_note_name`.

    On top of the spec rule, every character must be printable (no control, format,
    private-use or unassigned code points), so a name cannot hide characters a human
    reviewing a configuration would not see. The messages say what is wrong and never
    contain the name: it may be the head of something pasted by mistake (a private key).
    ``what`` names the field in the message (a constant of the caller's, never input).
    """
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} must be a non-empty string")
    if "+" in name:
        raise InvalidInput(f"{what} must not contain '+'")
    if any(ch.isspace() for ch in name):
        raise InvalidInput(f"{what} must not contain whitespace")
    if not name.isprintable():
        raise InvalidInput(f"{what} must contain only printable characters")
    return name


def compute_key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || signature type || public key)[:4]`` (C2SP signed-note)."""
    material = name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes | None:
    """Standard padded base64 (RFC 4648 §4) in its one canonical spelling, else ``None``.

    Canonical means re-encoding gives the same text, so no two spellings (e.g. different
    unused low bits before ``=``) decode to the same bytes.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if b64encode(raw) != text:
        return None
    return raw


def parse_key_hash(text: str) -> bytes | None:
    """Eight hex digits (the key ID in a vkey) as 4 bytes, else ``None``."""
    if _HEX8.fullmatch(text) is None:
        return None
    return bytes.fromhex(text)


def cosignature_message(text: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature/v1 signs (tlog-cosignature, "Ed25519 signed message").

    Two newline-terminated lines, ``cosignature/v1`` and ``time <decimal timestamp>``,
    followed by the whole note text (including its final newline).
    """
    return f"{COSIGNATURE_V1_HEADER}time {timestamp}\n{text}".encode()


_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def has_forbidden_control(text: str) -> bool:
    """True if ``text`` has an ASCII control character (below U+0020) other than newline."""
    return _FORBIDDEN_CONTROL.search(text) is not None


def encode_text(text: str) -> bytes:
    """Check that ``text`` can be the text of a signed note and return its UTF-8 bytes."""
    if not isinstance(text, str):
        raise InvalidInput("note text must be a str")
    if not text.endswith("\n"):
        raise InvalidInput("note text must end with a newline")
    if has_forbidden_control(text):
        raise InvalidInput("note text must not contain control characters other than newline")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("note text is not valid Unicode (it has a lone surrogate)") from None
