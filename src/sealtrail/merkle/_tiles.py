"""C2SP tlog-tiles coordinates (https://c2sp.org/tlog-tiles).

Tile ``(T, N)`` holds up to 256 consecutive hashes of tree level ``8*T``: position ``i`` is
node ``(8*T, N*256 + i)``. A tile of width ``W < 256`` is partial. Nodes of levels
``8*T .. 8*T+7`` are computed from the hashes of one tile of level ``T``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ._compact import CompactRange, NodeID, check_size
from ._errors import RequestError
from ._hash import HASH_SIZE

__all__ = [
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileRead",
    "border_tile_reads",
    "compact_range_from_tiles",
    "entries_path",
    "node_from_tile_hashes",
    "parse_tile_path",
    "tile_for_node",
    "tile_path",
    "tiles_for_size",
]

TILE_HEIGHT = 8
"""Tree levels per tile level."""

TILE_WIDTH = 256
"""Hashes in a full tile (2**TILE_HEIGHT)."""

MAX_TILE_LEVEL = 63
"""tlog-tiles: ``<L>`` is a decimal integer between 0 and 63."""

# An index of a uint64-sized tree has at most 20 decimal digits: 7 groups of 3.
_MAX_INDEX_GROUPS = 7

_LEVEL_RE = re.compile(r"0|[1-9][0-9]?")
_WIDTH_RE = re.compile(r"[1-9][0-9]{0,2}")
_GROUP_RE = re.compile(r"x[0-9]{3}")
_LAST_RE = re.compile(r"[0-9]{3}")

_sha256 = hashlib.sha256
_node_preimage = b"\x01%b%b".__mod__


def _check_width(width: int | None) -> int:
    if width is None:
        return TILE_WIDTH
    if not 1 <= width <= TILE_WIDTH:
        raise RequestError(f"tile width must be in 1..{TILE_WIDTH}, got {width}")
    return width


def _encode_index(index: int) -> str:
    if index < 0:
        raise RequestError(f"tile index must be >= 0, got {index}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    if len(groups) > _MAX_INDEX_GROUPS:
        raise RequestError("tile index is too large")
    return "/".join(reversed(groups))


def _suffix(width: int | None) -> str:
    w = _check_width(width)
    return "" if w == TILE_WIDTH else f".p/{w}"


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """Return ``tile/<L>/<N>[.p/<W>]``; ``width`` None or 256 means a full tile."""
    if not 0 <= level <= MAX_TILE_LEVEL:
        raise RequestError(f"tile level must be in 0..{MAX_TILE_LEVEL}, got {level}")
    return f"tile/{level}/{_encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int | None = None) -> str:
    """Return ``tile/entries/<N>[.p/<W>]``; ``width`` None or 256 means a full bundle."""
    return f"tile/entries/{_encode_index(index)}{_suffix(width)}"


def parse_tile_path(path: str) -> tuple[int | Literal["entries"], int, int]:
    """Parse a tile or entry-bundle path (no prefix) into ``(level | "entries", index, width)``.

    ``width`` is 256 for a full tile. Only the canonical encoding is accepted.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise RequestError(f"not a tile path: {path!r}")
    level: int | Literal["entries"]
    if parts[1] == "entries":
        level = "entries"
    elif _LEVEL_RE.fullmatch(parts[1]) and int(parts[1]) <= MAX_TILE_LEVEL:
        level = int(parts[1])
    else:
        raise RequestError(f"bad tile level in {path!r}")
    rest = parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _WIDTH_RE.fullmatch(rest[-1]) or int(rest[-1]) >= TILE_WIDTH:
            raise RequestError(f"partial tile width must be 1..255 without leading zeros: {path!r}")
        width = int(rest[-1])
        rest = [*rest[:-2], rest[-2].removesuffix(".p")]
    if len(rest) > _MAX_INDEX_GROUPS:
        raise RequestError(f"tile index has too many groups in {path!r}")
    *high, last = rest
    if not _LAST_RE.fullmatch(last) or not all(_GROUP_RE.fullmatch(g) for g in high):
        raise RequestError(f"bad tile index in {path!r}")
    if high and high[0] == "x000":
        raise RequestError(f"tile index has a leading zero group in {path!r}")
    index = 0
    for g in high:
        index = index * 1000 + int(g[1:])
    index = index * 1000 + int(last)
    return level, index, width


def tile_for_node(level: int, index: int) -> tuple[int, int, int, int]:
    """Locate the tile hashes that node ``(level, index)`` is computed from.

    Returns ``(tile_level, tile_index, first_position, count)``: the node is the hash of
    positions ``first_position .. first_position+count-1`` of tile ``(tile_level, tile_index)``
    (``count`` is a power of two, 1 when the node is itself stored in the tile).
    """
    if level < 0 or index < 0:
        raise RequestError(f"no node ({level}, {index})")
    tile_level, rel = divmod(level, TILE_HEIGHT)
    if tile_level > MAX_TILE_LEVEL:
        raise RequestError(f"node level {level} is above the highest tile level")
    first = index << rel  # first covered node of level 8*tile_level
    return tile_level, first >> TILE_HEIGHT, first & (TILE_WIDTH - 1), 1 << rel


def node_from_tile_hashes(hashes: Sequence[bytes]) -> bytes:
    """Hash a perfect run of 2**k adjacent same-level hashes (k <= 8) up to one node."""
    n = len(hashes)
    if n == 0 or n & (n - 1) or n > TILE_WIDTH:
        raise RequestError(f"need a power of two up to {TILE_WIDTH} hashes, got {n}")
    if any(len(h) != HASH_SIZE for h in hashes):
        raise RequestError(f"tile hashes must be {HASH_SIZE} bytes")
    row = list(hashes)
    sha = _sha256
    fmt = _node_preimage
    while len(row) > 1:
        pairs = iter(row)
        row = [sha(fmt(lr)).digest() for lr in zip(pairs, pairs, strict=False)]
    return row[0]


def tiles_for_size(size: int) -> list[tuple[int, int, int]]:
    """Partial tiles ``(tile_level, tile_index, width)`` of a tree of ``size``, lowest first.

    Together they hold every node of the tree's compact range. All other tiles of the tree
    are full: ``(T, i)`` for ``i < size >> (8 * (T + 1))``.
    """
    check_size("size", size)
    out = []
    t = 0
    while size >> (TILE_HEIGHT * t):
        width = (size >> (TILE_HEIGHT * t)) & (TILE_WIDTH - 1)
        if width:
            out.append((t, size >> (TILE_HEIGHT * (t + 1)), width))
        t += 1
    return out


@dataclass(frozen=True, slots=True)
class TileRead:
    """Where compact-range node :attr:`node` lives: positions of one partial tile."""

    node: NodeID
    tile_level: int
    tile_index: int
    tile_width: int
    first: int
    count: int


def border_tile_reads(size: int) -> list[TileRead]:
    """Map each node of ``CompactRange.border_nodes(size)`` (same order) to its tile read."""
    reads = []
    for node in CompactRange.border_nodes(size):
        tl, ti, first, count = tile_for_node(*node)
        width = (size >> (TILE_HEIGHT * tl)) & (TILE_WIDTH - 1)
        # Invariant: a border node lies in the partial tile of its tile level.
        assert ti == size >> (TILE_HEIGHT * (tl + 1))
        assert first + count <= width
        reads.append(TileRead(node, tl, ti, width, first, count))
    return reads


def compact_range_from_tiles(size: int, tiles: Mapping[tuple[int, int], bytes]) -> CompactRange:
    """Rebuild the compact range of ``size`` from its partial tiles' bytes.

    ``tiles[(tile_level, tile_index)]`` holds at least the first ``width`` hashes of each
    tile named by :func:`tiles_for_size` (concatenated, as served).
    """
    hashes = []
    for r in border_tile_reads(size):
        data = tiles.get((r.tile_level, r.tile_index))
        if data is None:
            raise RequestError(f"missing tile ({r.tile_level}, {r.tile_index})")
        if len(data) % HASH_SIZE or len(data) < r.tile_width * HASH_SIZE:
            raise RequestError(
                f"tile ({r.tile_level}, {r.tile_index}) has {len(data)} bytes, "
                f"need {r.tile_width} hashes"
            )
        run = [data[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(r.first, r.first + r.count)]
        hashes.append(node_from_tile_hashes(run))
    return CompactRange(size, hashes)
