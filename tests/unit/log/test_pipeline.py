"""Two batches at a time: one being written, the next prepared on top of it.

The second batch must deduplicate against the first while it is still in flight, must not
be answered before its own commit, and must be redone from the store if the first fails.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from sealtrail.errors import StorageError
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.storage import Commit, MemoryStore
from tests.conftest import reader_for

CONFIG = SequencerConfig(max_batch=100, max_delay=0, index_every=150)


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
        self.on_top += base is not None
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
        assert seq.on_top == 1, "the next batch was not prepared meanwhile"
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


@pytest.mark.parametrize(
    ("fault", "persisted"), [("before_commit", False), ("after_checkpoint", True)]
)
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
