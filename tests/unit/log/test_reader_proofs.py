"""The reader's tile-aware inclusion proofs equal the general RFC 9162 plan, byte for byte."""

from __future__ import annotations

import asyncio

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
