"""Just enough DER (ITU-T X.690) for the TCG DICE certificate extensions: encode and read
back SEQUENCE, INTEGER, OCTET STRING, UTF8String and OBJECT IDENTIFIER, with implicit
context tags. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "OCTET_STRING",
    "OID",
    "SEQUENCE",
    "context",
    "decode_oid",
    "elements",
    "encode_integer",
    "encode_oid",
    "read_integer",
    "tlv",
]

INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
UTF8_STRING = 0x0C
SEQUENCE = 0x30
#: Most bytes a length may take (a DICE extension is a few hundred bytes).
_MAX_LENGTH_BYTES = 4


def context(number: int, *, constructed: bool = False) -> int:
    """The tag byte of ``[number] IMPLICIT`` (context class, number below 31)."""
    if not 0 <= number < 31:
        raise ValueError("context tag numbers are 0..30 here")
    return 0x80 | (0x20 if constructed else 0) | number


def tlv(tag: int, content: bytes) -> bytes:
    """One element: tag, definite length (short or long form), content."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def encode_integer(value: int) -> bytes:
    """The content octets of an INTEGER: minimal two's complement."""
    size = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return value.to_bytes(size, "big", signed=True)


def read_integer(content: bytes) -> int:
    if not content:
        raise ValueError("an INTEGER has at least one content octet")
    return int.from_bytes(content, "big", signed=True)


def encode_oid(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER given as ``"2.23.133.5.4.1"``."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError("not an object identifier")
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def decode_oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise ValueError("a truncated object identifier")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def elements(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The ``(tag, content)`` of each element in ``data``, one after the other.

    Raises ``ValueError`` for anything that is not well-formed definite-length DER.
    """
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("a truncated element")
        tag, first = data[pos], data[pos + 1]
        if tag & 0x1F == 0x1F:
            raise ValueError("high tag numbers are not used here")
        pos += 2
        if first < 0x80:
            size = first
        else:
            count = first & 0x7F
            if not 1 <= count <= _MAX_LENGTH_BYTES or pos + count > len(data):
                raise ValueError("a bad length")
            size = int.from_bytes(data[pos : pos + count], "big")
            if size < 0x80:
                raise ValueError("a length not in its shortest form")
            pos += count
        if pos + size > len(data):
            raise ValueError("a truncated element")
        yield tag, data[pos : pos + size]
        pos += size
