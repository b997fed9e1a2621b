"""The reader's tile-aware inclusion proofs equal the general RFC 9162 plan, byte for byte."""

from __future__ import annotations

import asyncio
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.log import CheckpointSigner, LogReader, Sequencer, SequencerConfig
from sealtrail.merkle import (
    TILE_WIDTH,
    RequestError,
    inclusion_proof,
    leaf_hash,
    node_inclusion_nodes,
    verify_inclusion,
)
from sealtrail.storage import MemoryStore
from tests.conftest import reader_for

SIZE = 5 * TILE_WIDTH + 3


@pytest.fixture(scope="module")
def built() -> tuple[MemoryStore, CheckpointSigner]:
    from sealtrail.keys import Ed25519Signer

    signer = CheckpointSigner(origin="proofs.test/log", signer=Ed25519Signer.generate())
    store = MemoryStore()

    async def go() -> None:
        async with Sequencer(store, signer=signer, config=SequencerConfig(max_delay=0)) as seq:
            await seq.add_many([f"e{i}".encode() for i in range(SIZE)])

    asyncio.run(go())
    return store, signer


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_reader_proofs_equal_the_general_plan(
    built: tuple[MemoryStore, CheckpointSigner], data: st.DataObject
) -> None:
    store, signer = built
    reader: LogReader = reader_for(store, signer)
    size = data.draw(st.integers(1, SIZE), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = reader.inclusion_proof(index, size=size)
    general = inclusion_proof(index, size, lambda ids: reader.read_nodes(ids, size=size))
    assert proof.hashes == general
    assert proof.leaf_hash == leaf_hash(f"e{index}".encode())
    verify_inclusion(
        leaf_hash=proof.leaf_hash,
        index=index,
        size=size,
        proof=proof.hashes,
        root=reader.root(size),
    )


def test_node_plan_refuses_nodes_outside_the_tree() -> None:
    with pytest.raises(RequestError):
        node_inclusion_nodes(8, 1, 511)
    assert node_inclusion_nodes(8, 1, 512).nodes == ((8, 0),)


def test_upper_paths_through_full_level_1_tiles_equal_the_general_plan() -> None:
    # 2 full level-1 tiles (2 * 65,536 entries) and a ragged edge: paths reuse tiles above.
    from sealtrail.keys import Ed25519Signer

    signer = CheckpointSigner(origin="proofs.test/log", signer=Ed25519Signer.generate())
    store = MemoryStore()
    size = 2 * TILE_WIDTH * TILE_WIDTH + 300

    async def go() -> None:
        async with Sequencer(store, signer=signer, config=SequencerConfig(max_delay=0)) as seq:
            for start in range(0, size, 16384):
                end = min(size, start + 16384)
                await seq.add_many([i.to_bytes(4, "big") for i in range(start, end)])

    asyncio.run(go())
    reader = reader_for(store, signer)
    general = reader_for(store, signer)
    root = reader.root(size)
    for tree in (size, size - 300, TILE_WIDTH * TILE_WIDTH, TILE_WIDTH * TILE_WIDTH + 1):
        for index in [0, 255, 256, 65535, 65536, 70000, tree - 1, *range(7, tree, 9973)]:
            if index >= tree:
                continue
            proof = reader.inclusion_proof(index, size=tree)
            want = inclusion_proof(index, tree, functools.partial(general.read_nodes, size=tree))
            assert proof.hashes == want, (index, tree)
    reader.inclusion_proof(70000).verify(root)
