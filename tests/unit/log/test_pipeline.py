"""Batches in a pipeline: one being written, the next ones prepared on top of it.

A batch must deduplicate against those still in flight, must not be answered before its
own commit, and must be redone from the store if one it was built on fails.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.errors import StorageError
from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.log._tiles import bundle_entries
from sealtrail.merkle import leaf_hash
from sealtrail.storage import ENTRY_BUNDLES, Commit, MemoryStore
from tests.conftest import ORIGIN, reader_for
from tests.unit.log.test_reader_absorb import CountingStore

SIGNER_KEY = Ed25519Signer.generate()

CONFIG = SequencerConfig(max_batch=100, max_delay=0, index_every=150)
#: A commit that fails with nothing written, and one that fails after it was written.
COMMIT_FAULTS = pytest.mark.parametrize(
    ("fault", "persisted"), [("before_commit", False), ("after_checkpoint", True)]
)


def items(start: int, end: int) -> list[bytes]:
    return [f"e-{i}".encode() for i in range(start, end)]


class GatedStore(MemoryStore):
    """Holds the first commit until released, so that the next batch is prepared meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gated = True

    def commit(self, commit: Commit) -> None:
        if self.gated:
            self.gated = False
            self.entered.set()
            self.release.wait(5)
        super().commit(commit)


class CountingSequencer(Sequencer):
    """Counts the batches prepared on top of one in flight."""

    on_top = 0

    def _prepare(self, entries: Sequence[bytes], base: Any) -> Any:
        self.on_top += bool(base)
        return super()._prepare(entries, base)


async def _two_batches(
    store: GatedStore, signer: CheckpointSigner, first: list[bytes], second: list[bytes]
) -> tuple[list[int] | BaseException, list[int] | BaseException]:
    seq = CountingSequencer(store, signer=signer, config=CONFIG)
    async with seq:
        one = asyncio.ensure_future(seq.add_many(first))
        await asyncio.to_thread(store.entered.wait, 5)
        two = asyncio.ensure_future(seq.add_many(second))
        await asyncio.sleep(0.05)  # the second batch is now prepared on top of the first
        assert not one.done()
        assert not two.done()
        batches = -(-len(second) // CONFIG.max_batch)
        assert seq.on_top == batches, "the next batches were not prepared meanwhile"
        store.release.set()
        results = await asyncio.gather(one, two, return_exceptions=True)
        return results[0], results[1]


def test_the_next_batch_deduplicates_against_the_one_in_flight(signer: CheckpointSigner) -> None:
    store = GatedStore()
    one, two = asyncio.run(_two_batches(store, signer, items(0, 100), items(50, 150)))
    assert one == list(range(100))
    assert two == list(range(50, 150))
    reader = reader_for(store, signer)
    assert reader.size() == 150
    assert reader.audit() is not None
    stored = store.read_checkpoint()
    assert stored is not None
    assert stored.indexed == 150  # the second batch flushed the first one's leaves too
    assert store.lookup_leaves([b"x"]) == {}


@COMMIT_FAULTS
def test_a_failed_batch_in_flight_makes_the_next_one_start_over(
    signer: CheckpointSigner, fault: str, persisted: bool
) -> None:
    store = GatedStore()
    store.faults.arm(fault)
    one, two = asyncio.run(_two_batches(store, signer, items(0, 100), items(50, 150)))
    assert isinstance(one, StorageError)
    if persisted:
        assert two == list(range(50, 150))
    else:
        assert two == list(range(100))  # the first batch is not in the log: e-50.. start at 0
    reader = reader_for(store, signer)
    assert reader.size() == (150 if persisted else 100)
    assert reader.audit() is not None


def test_partial_tiles_continue_across_the_pipeline(signer: CheckpointSigner) -> None:
    # Batches of 100 end mid-tile: the second completes tile 0 using the first's part.
    store = GatedStore()
    one, two = asyncio.run(_two_batches(store, signer, items(0, 100), items(100, 300)))
    assert one == list(range(100))
    assert two == list(range(100, 300))
    (full,) = store.read_parts(0, 0)
    assert (full.start, full.count, len(full.interior)) == (0, 256, 254 * 32)
    assert reader_for(store, signer).audit() is not None


class SlowSequencer(Sequencer):
    """Preparing a batch takes a while, so that close() arrives in the middle of it."""

    def _prepare(self, entries: Sequence[bytes], base: Any) -> Any:
        threading.Event().wait(0.3)
        return super()._prepare(entries, base)


def test_close_during_a_batch_returns_once_it_is_sequenced(signer: CheckpointSigner) -> None:
    """close() wakes the loop while a batch is prepared; that wakeup must not be lost."""

    async def run() -> int:
        seq = SlowSequencer(MemoryStore(), signer=signer, config=SequencerConfig(max_delay=0))
        await seq.start()
        added = asyncio.ensure_future(seq.add(b"entry"))
        await asyncio.sleep(0.1)  # the batch is being prepared now
        await asyncio.wait_for(seq.close(), 10)
        return await added

    assert asyncio.run(run()) == 0


class DepthSequencer(Sequencer):
    """Records how many uncommitted batches each batch was prepared on top of."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.depths: list[int] = []

    def _prepare(self, entries: Sequence[bytes], base: Any) -> Any:
        prepared = super()._prepare(entries, base)
        self.depths.append(len(base))
        return prepared


async def _pipelined(
    store: GatedStore, signer: CheckpointSigner, groups: list[list[bytes]], config: SequencerConfig
) -> tuple[DepthSequencer, list[list[int] | BaseException]]:
    """Submit ``groups`` while the first one's commit is held: each later one is prepared
    on top of all before it, up to the pipeline's depth."""
    seq = DepthSequencer(store, signer=signer, config=config)
    async with seq:
        futures = [asyncio.ensure_future(seq.add_many(groups[0]))]
        await asyncio.to_thread(store.entered.wait, 5)
        for n, group in enumerate(groups[1:], start=2):
            futures.append(asyncio.ensure_future(seq.add_many(group)))
            async with asyncio.timeout(5):
                while len(seq.depths) < n:
                    await asyncio.sleep(0.005)
        assert not any(f.done() for f in futures), "answered before the first commit"
        store.release.set()
        results = await asyncio.gather(*futures, return_exceptions=True)
    return seq, list(results)


def test_a_batch_is_prepared_on_top_of_two_uncommitted_ones(signer: CheckpointSigner) -> None:
    # Tile 0 is completed by the third batch: positions 0-99 come from the first batch and
    # 100-199 from the second, neither of them committed yet. The third flushes the leaf
    # index for all three, and repeats entries of both.
    store = GatedStore()
    config = SequencerConfig(max_batch=100, max_delay=0, index_every=250)
    third = [*items(200, 298), b"e-10", b"e-150"]
    seq, results = asyncio.run(
        _pipelined(store, signer, [items(0, 100), items(100, 200), third], config)
    )
    assert seq.depths == [0, 1, 2]
    assert results == [list(range(100)), list(range(100, 200)), [*range(200, 298), 10, 150]]
    (full,) = store.read_parts(0, 0)
    assert (full.start, full.count, len(full.interior)) == (0, 256, 254 * 32)
    stored = store.read_checkpoint()
    assert stored is not None
    assert stored.size == 298
    assert stored.indexed == 298
    found = store.lookup_leaves([leaf_hash(b"e-10"), leaf_hash(b"e-150"), leaf_hash(b"e-297")])
    assert found == {
        leaf_hash(b"e-10"): [10],
        leaf_hash(b"e-150"): [150],
        leaf_hash(b"e-297"): [297],
    }
    assert reader_for(store, signer).audit() is not None


@COMMIT_FAULTS
def test_a_failed_commit_makes_every_batch_built_on_it_start_over(
    signer: CheckpointSigner, fault: str, persisted: bool
) -> None:
    store = GatedStore()
    store.faults.arm(fault)
    config = SequencerConfig(max_batch=100, max_delay=0, index_every=1000)
    groups = [items(0, 100), items(100, 200), [*items(200, 250), b"e-120"]]
    seq, results = asyncio.run(_pipelined(store, signer, groups, config))
    assert seq.depths[:3] == [0, 1, 2]
    assert isinstance(results[0], StorageError)
    shift = 0 if persisted else 100  # the first batch is not in the log: the rest move down
    assert results[1] == [i - shift for i in range(100, 200)]
    assert results[2] == [*(i - shift for i in range(200, 250)), 120 - shift]
    reader = reader_for(store, signer)
    assert reader.size() == 250 - shift
    assert reader.audit() is not None


def test_a_duplicate_found_in_the_leaf_index_is_answered_with_its_index(
    signer: CheckpointSigner,
) -> None:
    # Past the watermark the index is asked beside the preparation, which assumed every
    # entry new: a batch with an indexed entry in it is built again.
    store = MemoryStore()
    config = SequencerConfig(max_batch=100, max_delay=0, index_every=100)

    async def run() -> tuple[list[int], list[int]]:
        async with Sequencer(store, signer=signer, config=config) as seq:
            await seq.add_many(items(0, 100))
            await seq.add_many(items(100, 200))
            again = await seq.add_many([b"new-0", b"e-5", b"new-1", b"e-150"])
            return again, await seq.add_many([b"new-2"])

    again, after = asyncio.run(run())
    assert again == [200, 5, 201, 150]
    assert after == [202]
    reader = reader_for(store, signer)
    assert reader.size() == 203
    assert reader.audit() is not None


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=2, max_size=8),
    restart=st.integers(min_value=0, max_value=7),
)
def test_a_completed_tile_is_restated_from_what_the_sequencer_wrote(
    sizes: list[int], restart: int
) -> None:
    """The batch that completes a tile restates it as one full part without reading the
    tile back; after a restart, from the store. Either way the log audits, entries and all."""
    signer = CheckpointSigner(origin=ORIGIN, signer=SIGNER_KEY)
    store = CountingStore()  # tile and checkpoint reads
    config = SequencerConfig(max_batch=300, max_delay=0)
    entries: list[bytes] = []

    async def run(batches: list[int]) -> int:
        async with Sequencer(store, signer=signer, config=config) as seq:
            store.reads = 0  # what the start read is not the question
            for count in batches:
                batch = items(len(entries), len(entries) + count)
                assert await seq.add_many(batch) == list(range(len(entries), len(entries) + count))
                entries.extend(batch)
            return store.reads

    cut = min(restart, len(sizes))
    assert asyncio.run(run(sizes[:cut])) == 0
    asyncio.run(run(sizes[cut:]))
    for index in range(len(entries) // 256):
        (bundle,) = store.read_parts(ENTRY_BUNDLES, index)
        assert (bundle.start, bundle.count) == (0, 256)
        assert bundle_entries(bundle.data) == entries[256 * index : 256 * (index + 1)]
    assert reader_for(store, signer).audit() is not None
