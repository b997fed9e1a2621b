"""Full hash tiles carry their inner nodes; proofs use them, audit checks them.

The inner nodes are derived data stored to spare a cold reader from rehashing a tile. A
store that lies about them must not get a proof past a verifier, and ``audit`` must say so.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.errors import Corruption, InvalidProof
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.log._tiles import inner_levels
from sealtrail.merkle import TILE_WIDTH, leaf_hash, node_hash
from sealtrail.storage import ENTRY_BUNDLES, MemoryStore, TilePart
from tests.conftest import reader_for

SIZE = 3 * TILE_WIDTH + 17


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 root computed from scratch (the reference definition)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _build(store: MemoryStore, signer: CheckpointSigner, batch: int) -> list[bytes]:
    items = [f"entry {i}".encode() for i in range(SIZE)]

    async def go() -> None:
        config = SequencerConfig(max_batch=batch, max_delay=0)
        async with Sequencer(store, signer=signer, config=config) as seq:
            for pos in range(0, SIZE, batch):
                await seq.add_many(items[pos : pos + batch])

    asyncio.run(go())
    return items


@pytest.mark.parametrize("batch", [1, 7, 100, 256, 1000])
def test_full_tiles_have_interiors_whatever_the_batch_size(
    signer: CheckpointSigner, batch: int
) -> None:
    store = MemoryStore()
    _build(store, signer, batch)
    for index in range(3):
        (part,) = store.read_parts(0, index)
        assert (part.start, part.count, len(part.interior)) == (0, TILE_WIDTH, 254 * 32)
    assert all(not p.interior for p in store.read_parts(0, 3))  # the partial right edge
    assert all(not p.interior for p in store.read_parts(ENTRY_BUNDLES, 0))


def test_cold_proofs_from_interiors_verify_against_the_reference_root(
    signer: CheckpointSigner,
) -> None:
    store = MemoryStore()
    items = _build(store, signer, 100)
    root = _mth([leaf_hash(e) for e in items])
    reader = reader_for(store, signer)
    assert reader.root(SIZE) == root
    for index in range(0, SIZE, 13):
        reader_for(store, signer).inclusion_proof(index).verify(root)  # a cold reader each


def test_edited_interior_is_caught_by_audit_and_by_the_verifier(
    signer: CheckpointSigner,
) -> None:
    store = MemoryStore()
    items = _build(store, signer, 100)
    root = _mth([leaf_hash(e) for e in items])
    (part,) = store.read_parts(0, 1)
    forged = bytes([part.interior[0] ^ 1]) + part.interior[1:]
    store.tamper_replace(TilePart(0, 1, 0, TILE_WIDTH, part.data, forged))

    with pytest.raises(Corruption, match="inner nodes"):
        reader_for(store, signer).audit()
    # Index 256 + 2 has the forged node (positions 0..1 at level 1) as its sibling.
    proof = reader_for(store, signer).inclusion_proof(TILE_WIDTH + 2)
    with pytest.raises(InvalidProof):
        proof.verify(root)


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=TILE_WIDTH), min_size=1, max_size=5),
    seed=st.binary(min_size=1, max_size=8),
)
def test_a_growing_tile_s_levels_are_those_computed_from_scratch(
    cuts: list[int], seed: bytes
) -> None:
    """Each step keeps the nodes the tile had and hashes only the new ones: the levels are
    exactly those of the whole tile computed from nothing, whatever sizes it grew by."""
    hashes = b"".join(leaf_hash(seed + bytes([i])) for i in range(TILE_WIDTH))
    known: list[bytes] = []
    for count in sorted(cuts):
        known = inner_levels(hashes[: 32 * count], known)
        assert known == inner_levels(hashes[: 32 * count])
