"""A sequencer hands its reader the tiles and the checkpoint it commits, so that the receipts
of a batch read nothing from the store (on a server store, a read on the event loop holds up
every request).

What the reader answers from absorbed tiles must be exactly what it would read: every proof
is compared with a fresh reader's, and checked against the signed root.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sealtrail.errors import NotFound
from sealtrail.keys import Ed25519Signer
from sealtrail.log import (
    CheckpointSigner,
    LogReader,
    Sequencer,
    SequencerConfig,
    SignedCheckpoint,
)
from sealtrail.merkle import leaf_hash
from sealtrail.storage import MemoryStore, StoredCheckpoint, TilePart
from tests.conftest import ORIGIN, reader_for


class CountingStore(MemoryStore):
    """Counts the tile and checkpoint reads."""

    reads = 0

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        self.reads += 1
        return super().read_parts(level, index)

    def read_checkpoint(self) -> StoredCheckpoint | None:
        self.reads += 1
        return super().read_checkpoint()


def _entries(tag: str, count: int) -> list[bytes]:
    return [f"{tag}-{i}".encode() for i in range(count)]


SIGNER = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=6))
def test_proofs_from_absorbed_tiles_are_the_stored_ones(sizes: list[int]) -> None:
    store, signer = CountingStore(), SIGNER

    async def run() -> None:
        config = SequencerConfig(max_batch=512, max_delay=0)
        async with Sequencer(store, signer=signer, config=config) as seq:
            done = 0
            for n, size in enumerate(sizes):
                indexes = await seq.add_many(_entries(f"b{n}", size))
                latest = seq.latest
                assert latest is not None
                store.reads = 0
                for index in indexes:  # the batch's receipts: every tile is absorbed
                    proof = seq.reader.inclusion_proof(index, size=latest.size)
                    proof.verify(latest.root)
                assert store.reads == 0, f"batch {n} of {size} read the store {store.reads} times"
                assert seq.reader.latest == latest
                done += size
            fresh = reader_for(store, signer)
            for index in range(done):
                assert seq.reader.inclusion_proof(index, size=done) == fresh.inclusion_proof(
                    index, size=done
                )

    asyncio.run(run())


def test_a_part_that_continues_no_cached_tile_is_left_to_the_store(
    signer: CheckpointSigner,
) -> None:
    """Absorbing the second half of a tile whose first half is not cached must not make up
    a tile: the next read of that width goes to the store, and gives the stored tile."""
    store = CountingStore()

    async def fill() -> None:
        async with Sequencer(store, signer=signer, config=SequencerConfig(max_delay=0)) as seq:
            await seq.add_many(_entries("a", 10))
            await seq.add_many(_entries("b", 6))

    asyncio.run(fill())
    reader = LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    second = [p for p in store.read_parts(0, 0) if p.start == 10]
    assert len(second) == 1
    reader.absorb(second)
    store.reads = 0
    proof = reader.inclusion_proof(12, size=16)
    assert store.reads > 0
    checkpoint = reader.checkpoint()
    assert checkpoint is not None
    proof.verify(checkpoint.root)
    assert proof.leaf_hash == leaf_hash(b"b-2")


def test_entry_bundles_and_malformed_parts_are_not_absorbed(signer: CheckpointSigner) -> None:
    store = CountingStore()
    reader = LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    reader.absorb(
        [
            TilePart(-1, 0, 0, 1, b"\x00\x01x"),  # an entry bundle
            TilePart(0, 0, 0, 2, b"\x00" * 63),  # one byte short of two hashes
        ]
    )
    assert reader._cache == {}


def test_an_older_checkpoint_is_not_adopted(signer: CheckpointSigner) -> None:
    store = MemoryStore()

    async def fill() -> tuple[SignedCheckpoint, SignedCheckpoint]:
        async with Sequencer(store, signer=signer, config=SequencerConfig(max_delay=0)) as seq:
            await seq.add_many(_entries("a", 3))
            first = seq.latest
            await seq.add_many(_entries("b", 2))
            second = seq.latest
            assert first is not None and second is not None
            assert seq.reader.latest == second
            seq.reader.adopt(first)
            assert seq.reader.latest == second  # the log only grows
            return first, second

    first, second = asyncio.run(fill())
    reader = LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    reader.adopt(first)
    assert reader.latest == first
    reader.inclusion_proof(2, size=3).verify(first.root)
    with pytest.raises(NotFound):
        reader.inclusion_proof(4, size=6)  # beyond what the store holds, adopted or read
    reader.inclusion_proof(4, size=5).verify(second.root)  # read from the store: newer
    assert reader.latest == second


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=2, max_size=6))
@example(sizes=[10, 6, 100])  # tile 0 grows twice, in place
def test_a_reader_following_a_growing_log_rehashes_only_what_its_tiles_gained(
    sizes: list[int],
) -> None:
    """A reader that is not handed the tiles (another process's follower) reads each
    right-edge tile again as the log grows: it builds on the narrower one it has cached,
    and its proofs are exactly a fresh reader's."""
    store, signer = CountingStore(), SIGNER
    follower = reader_for(store, signer)
    grown: list[int] = []
    real = LogReader._grown

    def counted(self: LogReader, *args: Any) -> Any:
        out = real(self, *args)
        grown.append(out is not None)
        return out

    async def run() -> None:
        config = SequencerConfig(max_batch=512, max_delay=0)
        async with Sequencer(store, signer=signer, config=config) as seq:
            done = 0
            for n, size in enumerate(sizes):
                await seq.add_many(_entries(f"b{n}", size))
                done += size
                fresh = reader_for(store, signer)
                for index in (0, done // 2, done - 1):
                    assert follower.inclusion_proof(index, size=done) == fresh.inclusion_proof(
                        index, size=done
                    )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LogReader, "_grown", counted)
        asyncio.run(run())
    if sizes[0] % 256 and (sizes[0] + sizes[1]) // 256 == sizes[0] // 256:
        assert any(grown)  # the second step grew the first step's tile 0 in place
