"""Tiles as stored (parts written batch by batch) and as served (C2SP tlog-tiles bytes)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

from sealtrail.errors import Corruption, TooLarge
from sealtrail.merkle import HASH_SIZE, TILE_HEIGHT, TILE_WIDTH
from sealtrail.storage import ENTRY_BUNDLES, TilePart

__all__ = [
    "INTERIOR_SIZE",
    "MAX_ENTRY_SIZE",
    "assemble",
    "bundle_entries",
    "encode_bundle",
    "inner_levels",
    "split_run",
    "tile_interior",
    "tile_width",
]

#: Entry bundles prefix each entry with a big-endian uint16 length (C2SP tlog-tiles), so no
#: entry can be longer than this. Larger payloads are stored by reference (hash envelope).
MAX_ENTRY_SIZE = 0xFFFF


def tile_width(level: int, index: int, size: int) -> int:
    """Positions tile ``(level, index)`` has in a tree of ``size`` leaves (0: absent).

    Hash tile level ``T`` holds the hashes of the full level-``8T`` subtrees; entry bundles
    (:data:`ENTRY_BUNDLES`) hold the entries, so they follow level 0.
    """
    units = size >> (TILE_HEIGHT * max(level, 0))
    return max(0, min(TILE_WIDTH, units - index * TILE_WIDTH))


def inner_levels(hashes: bytes, known: Sequence[bytes] = ()) -> list[bytes]:
    """Levels 1..7 above a tile's hashes, each the concatenation of its complete nodes.

    A partial tile has fewer (or no) complete nodes at each level; an unpaired last hash
    has no parent yet. ``known``: these levels of a tile whose hashes begin ``hashes``
    (the same tile before it grew). Its complete nodes stay as they are, so only the nodes
    after them are hashed: a growing tile costs the hashes of what it gained, not of all
    it holds.
    """
    levels: list[bytes] = []
    sha = hashlib.sha256
    width = 2 * HASH_SIZE
    row = hashes
    for k in range(TILE_HEIGHT - 1):
        # Each pair of adjacent hashes is one 64-byte slice: SHA-256(0x01 || left || right).
        pairs = len(row) // width
        kept = known[k] if k < len(known) else b""
        done = min(len(kept) // HASH_SIZE, pairs)
        row = kept[: done * HASH_SIZE] + b"".join(
            [
                sha(b"\x01" + row[i : i + width]).digest()
                for i in range(done * width, pairs * width, width)
            ]
        )
        levels.append(row)
    return levels


def tile_interior(hashes: bytes) -> bytes:
    """The inner nodes of a full hash tile: levels 1..7 inside it, each left to right.

    254 hashes (128 + 64 + ... + 2); see :class:`sealtrail.storage.TilePart`.
    """
    if len(hashes) != TILE_WIDTH * HASH_SIZE:
        raise Corruption("only a full hash tile has an interior")
    return b"".join(inner_levels(hashes))


#: Length in bytes of a full tile's interior.
INTERIOR_SIZE = (TILE_WIDTH - 2) * HASH_SIZE


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    entries = list(entries)
    longest = max(map(len, entries), default=0)
    if longest > MAX_ENTRY_SIZE:
        raise TooLarge(f"entry of {longest} bytes exceeds the {MAX_ENTRY_SIZE}-byte limit")
    if entries and longest == min(map(len, entries)):
        # Every entry of one length (a service's 32-byte leaf entries): one prefix, in C.
        prefix = longest.to_bytes(2, "big")
        return prefix + prefix.join(entries)
    lengths = struct.pack(f">{len(entries)}H", *map(len, entries))
    return b"".join(
        [piece for pair in zip(_pairs(lengths), entries, strict=True) for piece in pair]
    )


def _pairs(data: bytes) -> list[bytes]:
    return [data[i : i + 2] for i in range(0, len(data), 2)]


def bundle_entries(data: bytes) -> list[bytes]:
    """Split an entry bundle into its entries; :class:`Corruption` on a truncated bundle."""
    if len(data) >= 2:
        # Fast path: every entry as long as the first (a service's 32-byte leaf entries).
        # The length prefixes sit every `step` bytes; compare them all at once.
        size = int.from_bytes(data[:2], "big")
        step = size + 2
        count, rest = divmod(len(data), step)
        if not rest and data[0::step] == data[0:1] * count and data[1::step] == data[1:2] * count:
            return [data[i + 2 : i + step] for i in range(0, len(data), step)]
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end:
            raise Corruption("entry bundle ends inside a length prefix")
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + n > end:
            raise Corruption("entry bundle ends inside an entry")
        entries.append(data[pos : pos + n])
        pos += n
    return entries


def split_run(
    level: int, first: int, items: Sequence[bytes], *, bundle: bool = False
) -> list[TilePart]:
    """Cut a run of consecutive positions (hashes, or entries if ``bundle``) into tile parts."""
    parts: list[TilePart] = []
    pos, end = 0, len(items)
    store_level = ENTRY_BUNDLES if bundle else level
    while pos < end:
        index, start = divmod(first + pos, TILE_WIDTH)
        count = min(TILE_WIDTH - start, end - pos)
        chunk = items[pos : pos + count]
        data = encode_bundle(chunk) if bundle else b"".join(chunk)
        parts.append(TilePart(store_level, index, start, count, data))
        pos += count
    return parts


def tile_name(level: int, index: int) -> str:
    """How messages name a tile: ``tile 0/3``, or ``entry bundle 3``."""
    return f"entry bundle {index}" if level == ENTRY_BUNDLES else f"tile {level}/{index}"


def assemble(parts: Sequence[TilePart], width: int, level: int, index: int) -> bytes:
    """Concatenate the parts of tile ``level``/``index`` into its first ``width`` positions.

    Positions beyond ``width`` (left by a failed step-wise write, or newer than the
    checkpoint being served) are cut off. A gap or overlap below ``width`` means the store
    lost or mangled data the checkpoint commits to: :class:`Corruption`.
    """
    out: list[bytes] = []
    have = 0
    for part in parts:
        if have >= width:
            break
        if part.start != have:
            name = tile_name(level, index)
            raise Corruption(f"{name}: part at position {part.start}, expected {have}")
        take = min(part.count, width - have)
        if part.level == ENTRY_BUNDLES:
            if take == part.count:
                out.append(part.data)
            else:
                out.append(encode_bundle(bundle_entries(part.data)[:take]))
        else:
            if len(part.data) != part.count * HASH_SIZE:
                raise Corruption(f"{tile_name(level, index)}: part of the wrong length")
            out.append(part.data[: take * HASH_SIZE])
        have += take
    if have < width:
        name = tile_name(level, index)
        raise Corruption(f"{name} is missing positions {have}..{width - 1} the checkpoint covers")
    return b"".join(out)
