"""C2SP tlog-tiles coordinates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.merkle import (
    TILE_HEIGHT,
    TILE_WIDTH,
    CompactRange,
    RequestError,
    TileRead,
    border_tile_reads,
    compact_range_from_tiles,
    entries_path,
    node_from_tile_hashes,
    parse_tile_path,
    tile_for_node,
    tile_path,
    tiles_for_size,
)

from ._oracle import full_nodes, h_leaf, mth


def test_constants() -> None:
    assert TILE_HEIGHT == 8
    assert TILE_WIDTH == 256 == 2**TILE_HEIGHT


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ((0, 0), "tile/0/000"),
        ((0, 1234067), "tile/0/x001/x234/067"),
        ((1, 1000), "tile/1/x001/000"),
        ((2, 999), "tile/2/999"),
        ((0, 5, 256), "tile/0/005"),
        ((0, 5, None), "tile/0/005"),
        ((3, 1234067, 17), "tile/3/x001/x234/067.p/17"),
        ((63, 0, 1), "tile/63/000.p/1"),
    ],
)
def test_tile_path(args: tuple[int, ...], want: str) -> None:
    assert tile_path(*args) == want


def test_entries_path() -> None:
    assert entries_path(1234067) == "tile/entries/x001/x234/067"
    assert entries_path(0, 255) == "tile/entries/000.p/255"
    assert parse_tile_path("tile/entries/x001/x234/067.p/3") == ("entries", 1234067, 3)


@pytest.mark.parametrize("args", [(-1, 0), (64, 0), (0, -1), (0, 0, 0), (0, 0, 257), (0, 10**21)])
def test_tile_path_rejects(args: tuple[int, ...]) -> None:
    with pytest.raises(RequestError):
        tile_path(*args)


@settings(max_examples=300)
@given(
    st.integers(0, 63) | st.just(-1),
    st.integers(0, 2**64) | st.integers(0, 2000),
    st.none() | st.integers(1, 256),
)
def test_round_trip(level: int, index: int, width: int | None) -> None:
    path = entries_path(index, width) if level < 0 else tile_path(level, index, width)
    got = parse_tile_path(path)
    assert got == ("entries" if level < 0 else level, index, width or TILE_WIDTH)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/0",
        "tiles/0/000",
        "/tile/0/000",
        "tile/0/000/",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/+1/000",
        "tile/a/000",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/x000/001",
        "tile/0/x001/x002",
        "tile/0/001/002",
        "tile/0/X001/002",
        "tile/0/x1/002",
        "tile/0/x001/00a",
        "tile/0/\u0661\u0662\u0663",
        "tile/0/x001/x001/x001/x001/x001/x001/x001/001",
        "tile/0/001.p/0",
        "tile/0/001.p/00",
        "tile/0/001.p/01",
        "tile/0/001.p/256",
        "tile/0/001.p/1000",
        "tile/0/001.p/",
        "tile/0/001.p",
        "tile/0/001.p/5/6",
        "tile/0/001.q/5",
        "tile/0/.p/5",
        "tile/0/x001.p/5",
        "tile/entries/000.p/x5",
        "tile/entry/000",
        "tile/0/000 ",
        "tile/0/000\n",
    ],
)
def test_parse_rejects(path: str) -> None:
    with pytest.raises(RequestError):
        parse_tile_path(path)


@settings(max_examples=300)
@given(st.integers(0, 40), st.integers(0, 2**40))
def test_tile_for_node(level: int, index: int) -> None:
    tl, ti, first, count = tile_for_node(level, index)
    assert tl == level // 8
    assert count == 2 ** (level % 8)
    assert first >= 0
    assert first + count <= TILE_WIDTH
    # The covered level-8T positions are exactly the node's descendants at that level.
    base = level - level % 8
    assert ti * TILE_WIDTH + first == index << (level - base)


def test_node_from_tile_hashes_matches_oracle() -> None:
    hashes = [h_leaf(bytes([i])) for i in range(256)]
    for k in range(9):
        assert node_from_tile_hashes(hashes[: 2**k]) == mth(hashes[: 2**k])
    for bad in ([], hashes[:3], hashes[:6], hashes + hashes, [b"x" * 31]):
        with pytest.raises(RequestError):
            node_from_tile_hashes(bad)


def test_tiles_for_size_spec_examples() -> None:
    # tlog-tiles: a tree of 70,000 has a partial level-0 tile of width 112 (index 273), a
    # partial level-1 tile of width 17 and a partial level-2 tile of width 1.
    assert tiles_for_size(70_000) == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    # A tree of 256: full level-0 tile, partial level-1 tile of width 1.
    assert tiles_for_size(256) == [(1, 0, 1)]
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [(0, 0, 1)]


def tiles_of(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Serve every tile (full and partial) of a tree, from the oracle's full nodes."""
    nodes = full_nodes(leaves)
    tiles: dict[tuple[int, int], bytes] = {}
    for (level, index), h in sorted(nodes.items()):
        if level % TILE_HEIGHT == 0:
            key = (level // TILE_HEIGHT, index // TILE_WIDTH)
            tiles[key] = tiles.get(key, b"") + h
    return tiles


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3000))
def test_compact_range_from_tiles(size: int) -> None:
    leaves = [h_leaf(i.to_bytes(4, "big")) for i in range(size)]
    tiles = tiles_of(leaves)
    cr = compact_range_from_tiles(size, tiles)
    assert cr.root() == mth(leaves)
    want, _ = CompactRange(0, []).append(leaves)
    assert cr == want
    reads = border_tile_reads(size)
    assert [r.node for r in reads] == CompactRange.border_nodes(size)
    partial = {(t, i): w for t, i, w in tiles_for_size(size)}
    for r in reads:
        assert partial[(r.tile_level, r.tile_index)] == r.tile_width


def test_compact_range_from_tiles_three_levels() -> None:
    size = 70_000
    leaves = [h_leaf(i.to_bytes(4, "big")) for i in range(size)]
    cr, runs = CompactRange(0, []).append(leaves)
    tiles: dict[tuple[int, int], bytes] = {}
    for run in runs:
        if run.level % TILE_HEIGHT == 0:
            for i, h in enumerate(run.hashes):
                key = (run.level // TILE_HEIGHT, (run.start + i) // TILE_WIDTH)
                tiles[key] = tiles.get(key, b"") + h
    assert compact_range_from_tiles(size, tiles) == cr
    assert border_tile_reads(size)[0] == TileRead((16, 0), 2, 0, 1, 0, 1)
    del tiles[(1, 1)]
    with pytest.raises(RequestError, match="missing tile"):
        compact_range_from_tiles(size, tiles)
    with pytest.raises(RequestError, match="need 17 hashes"):
        compact_range_from_tiles(size, tiles | {(1, 1): b"\x00" * 32})
