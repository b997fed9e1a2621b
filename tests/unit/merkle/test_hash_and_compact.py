"""Hashing and compact ranges against the RFC 6962 reference tree and the naive oracle."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeRun,
    RequestError,
    leaf_hash,
    node_hash,
)
from tests._vectors import load_json

from ._oracle import full_nodes, h_leaf, mth

REF = load_json("tlog", "rfc6962-reference-tree.json")
REF_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in REF["leaf_inputs_hex"]]


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [h_leaf(tag + i.to_bytes(8, "big")) for i in range(n)]


def build(
    hashes: list[bytes], batches: list[int] | None = None
) -> tuple[CompactRange, list[NodeRun]]:
    cr = CompactRange(0, [])
    runs: list[NodeRun] = []
    pos = 0
    for b in batches or [len(hashes)]:
        cr, new = cr.append(hashes[pos : pos + b])
        runs.extend(new)
        pos += b
    assert pos == len(hashes)
    return cr, runs


def test_constants() -> None:
    assert HASH_SIZE == 32
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == REF["root_hashes_hex_by_size"][0]


def test_leaf_and_node_hash_domain_separation() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert node_hash(a, b) != node_hash(b, a)


def test_reference_tree_nodes() -> None:
    ours = full_nodes(REF_LEAVES)
    for level, row in enumerate(REF["node_hashes_hex_by_level"]):
        for index, hx in enumerate(row):
            assert ours[(level, index)].hex() == hx


@pytest.mark.parametrize("size", range(9))
def test_reference_tree_roots(size: int) -> None:
    want = REF["root_hashes_hex_by_size"][size]
    cr, runs = build(REF_LEAVES[:size])
    assert cr.root().hex() == want
    # One leaf at a time reaches the same range.
    cr1, runs1 = build(REF_LEAVES[:size], [1] * size)
    assert cr1 == cr
    for run in runs + runs1:
        for i, h in enumerate(run.hashes):
            assert h.hex() == REF["node_hashes_hex_by_level"][run.level][run.start + i]


def test_border_nodes() -> None:
    assert CompactRange.border_nodes(0) == []
    assert CompactRange.border_nodes(1) == [(0, 0)]
    assert CompactRange.border_nodes(6) == [(2, 0), (1, 2)]
    assert CompactRange.border_nodes(7) == [(2, 0), (1, 2), (0, 6)]
    assert CompactRange.border_nodes(2**40) == [(40, 0)]
    with pytest.raises(RequestError):
        CompactRange.border_nodes(-1)
    with pytest.raises(RequestError):
        CompactRange.border_nodes(2**64)


def test_constructor_validates() -> None:
    h = leaf_hash(b"")
    CompactRange(3, [h, h])
    with pytest.raises(RequestError, match="has 2 hashes, got 1"):
        CompactRange(3, [h])
    with pytest.raises(RequestError):
        CompactRange(1, [h[:31]])
    with pytest.raises(RequestError):
        CompactRange(-1, [])
    assert CompactRange(0, []).root() == EMPTY_ROOT


def test_append_rejects_bad_leaf_hashes() -> None:
    cr = CompactRange(0, [])
    with pytest.raises(RequestError, match="32 bytes"):
        cr.append([leaf_hash(b"x"), b"short"])
    with pytest.raises(RequestError):
        cr.append([b"\x00" * 33])


def test_append_nothing_is_identity() -> None:
    cr, _ = build(leaves(5))
    same, runs = cr.append([])
    assert same == cr
    assert runs == []


def test_range_is_immutable_value() -> None:
    cr, _ = build(leaves(5))
    cr2, _ = cr.append(leaves(1, b"more"))
    assert cr.size == 5
    assert cr2.size == 6
    assert cr == CompactRange(cr.size, cr.hashes)
    assert hash(cr) == hash(CompactRange(cr.size, cr.hashes))
    assert "size=5" in repr(cr)


@st.composite
def batched(draw: st.DrawFn) -> tuple[int, list[int]]:
    first = draw(st.integers(0, 1500))
    batches = draw(st.lists(st.integers(1, 600), max_size=6))
    return first, batches


@settings(max_examples=60, deadline=None)
@given(batched())
def test_append_matches_oracle(case: tuple[int, list[int]]) -> None:
    first, batches = case
    hashes = leaves(first + sum(batches))
    before = full_nodes(hashes[:first])
    cr, _ = build(hashes[:first])
    assert cr.root() == mth(hashes[:first])
    size = first
    for b in batches:
        cr, runs = cr.append(hashes[size : size + b])
        size += b
        assert cr.size == size
        assert cr.root() == mth(hashes[:size])
        after = full_nodes(hashes[:size])
        emitted = {(run.level, run.start + i): h for run in runs for i, h in enumerate(run.hashes)}
        # Exactly the full nodes that exist now and did not before, with the right hashes.
        assert emitted == {k: v for k, v in after.items() if k not in before}
        assert [run.level for run in runs] == list(range(len(runs)))
        assert runs[0] == NodeRun(0, size - b, tuple(hashes[size - b : size]))
        assert list(cr.hashes) == [after[n] for n in CompactRange.border_nodes(size)]
        before = after


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=8))
def test_batch_split_does_not_matter(batches: list[int]) -> None:
    hashes = leaves(sum(batches))
    one, _ = build(hashes)
    many, _ = build(hashes, batches)
    assert one == many
