"""The sequencer: durability before answers, deduplication, back-pressure, concurrency."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from sealtrail.errors import CheckpointConflict, Corruption, RetryLater, TooLarge
from sealtrail.log import MAX_ENTRY_SIZE, CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.merkle import leaf_hash
from sealtrail.storage import Commit, MemoryStore, StoredCheckpoint
from tests.conftest import reader_for

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def entries(n: int, tag: str = "e") -> list[bytes]:
    return [f"{tag}-{i}".encode() for i in range(n)]


def test_appends_get_consecutive_indexes_and_a_verified_checkpoint(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    async def go() -> list[int]:
        async with Sequencer(memory_store, signer=signer) as seq:
            return await seq.add_many(entries(1000))

    assert run(go()) == list(range(1000))
    reader = reader_for(memory_store, signer)
    latest = reader.checkpoint()
    assert latest is not None and latest.size == 1000
    assert reader.entries(0, 1000) == entries(1000)
    assert reader.audit() == latest


def test_duplicates_keep_their_index_within_and_across_batches(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    async def go() -> tuple[list[int], list[int]]:
        async with Sequencer(memory_store, signer=signer) as seq:
            first = await seq.add_many([b"a", b"b", b"a", b"c", b"b"])
            second = await seq.add_many([b"c", b"d", b"a"])
            return first, second

    first, second = run(go())
    assert first == [0, 1, 0, 2, 1]
    assert second == [2, 3, 0]
    assert reader_for(memory_store, signer).size() == 4


def test_a_restarted_sequencer_continues_and_still_deduplicates(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    async def go(batch: list[bytes]) -> list[int]:
        async with Sequencer(memory_store, signer=signer) as seq:
            return await seq.add_many(batch)

    assert run(go(entries(300))) == list(range(300))
    assert run(go([*entries(2, "new"), b"e-7"])) == [300, 301, 7]
    assert reader_for(memory_store, signer).audit() is not None


def test_oversized_entry_is_refused_and_nothing_changes(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    async def go() -> None:
        async with Sequencer(memory_store, signer=signer) as seq:
            with pytest.raises(TooLarge):
                seq.submit(b"x" * (MAX_ENTRY_SIZE + 1))
            assert await seq.add(b"x" * MAX_ENTRY_SIZE) == 0

    run(go())
    assert reader_for(memory_store, signer).size() == 1


class SlowStore(MemoryStore):
    """Every commit waits for ``gate``: batches pile up behind the first one. ``entered``
    is set once a commit is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def commit(self, commit: Commit) -> None:
        self.entered.set()
        self.gate.wait(5)
        super().commit(commit)


def test_full_queue_pushes_back_instead_of_growing(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    store = SlowStore()
    config = SequencerConfig(max_batch=4, max_delay=0, max_pending=8)

    async def go() -> list[int]:
        async with Sequencer(store, signer=signer, config=config) as seq:
            first = [seq.submit(e) for e in entries(4)]
            await asyncio.sleep(0.05)  # the first batch is now stuck in commit
            queued = [seq.submit(e) for e in entries(8, "q")]
            with pytest.raises(RetryLater) as info:
                seq.submit(b"one too many")
            assert info.value.retry_after > 0
            store.gate.set()
            return list(await asyncio.gather(*first, *queued))

    assert sorted(run(go())) == list(range(12))
    assert b"one too many" not in reader_for(store, signer).entries(0, 12)


def test_no_answer_before_the_commit_is_durable(signer: CheckpointSigner) -> None:
    store = SlowStore()
    entered, release = store.entered, store.gate

    async def go() -> None:
        async with Sequencer(store, signer=signer) as seq:
            future = seq.submit(b"entry")
            await asyncio.to_thread(entered.wait, 5)
            await asyncio.sleep(0.05)
            assert not future.done(), "resolved before the store committed"
            assert store.read_checkpoint() is None
            release.set()
            assert await future == 0
            assert store.read_checkpoint() is not None

    run(go())


def test_a_close_cut_short_answers_every_waiter(signer: CheckpointSigner) -> None:
    """A close bounded in time cancels the loop while a commit hangs: the waiters of that
    batch and of the queue behind it get RetryLater (they may submit again), none waits on
    forever, and the stopped sequencer takes nothing more."""
    store = SlowStore()
    entered, release = store.entered, store.gate

    async def go() -> list[BaseException | list[int]]:
        seq = Sequencer(store, signer=signer, config=SequencerConfig(max_batch=4))
        await seq.start()
        first = seq.submit_many(entries(4))
        await asyncio.to_thread(entered.wait, 5)
        queued = seq.submit_many(entries(8, "later"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await seq.close()
        with pytest.raises(RetryLater):
            seq.submit_many(entries(1, "after"))
        async with asyncio.timeout(1):
            results = await asyncio.gather(*first, *queued, return_exceptions=True)
        release.set()
        return results

    try:
        results = run(go())
    finally:
        release.set()
    assert len(results) == 3
    assert all(isinstance(result, RetryLater) for result in results)


class ConflictThenSlowStore(SlowStore):
    """The first commit loses the compare-and-swap (another writer, as far as the
    sequencer can tell); the redo that follows hangs in its commit until ``gate``."""

    conflicted = False

    def commit(self, commit: Commit) -> None:
        if not self.conflicted:
            self.conflicted = True
            raise CheckpointConflict("the log moved on")
        super().commit(commit)


def test_a_close_cut_short_during_a_redo_answers_its_waiters(signer: CheckpointSigner) -> None:
    """A batch being redone after a lost compare-and-swap is still the loop's to answer:
    a close bounded in time that cancels the redo gives its waiters RetryLater."""
    store = ConflictThenSlowStore()

    async def go() -> list[BaseException | list[int]]:
        seq = Sequencer(store, signer=signer, config=SequencerConfig(max_batch=4))
        await seq.start()
        first = seq.submit_many(entries(4))
        await asyncio.to_thread(store.entered.wait, 5)  # the redo's commit is under way
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await seq.close()
        async with asyncio.timeout(1):
            results = await asyncio.gather(*first, return_exceptions=True)
        store.gate.set()
        return results

    try:
        results = run(go())
    finally:
        store.gate.set()
    assert len(results) == 1
    assert isinstance(results[0], RetryLater)


def test_two_sequencers_on_one_store_never_share_an_index(signer: CheckpointSigner) -> None:
    store = MemoryStore()
    config = SequencerConfig(max_batch=16, max_delay=0)

    async def go() -> tuple[list[int], list[int]]:
        async with (
            Sequencer(store, signer=signer, config=config) as a,
            Sequencer(store, signer=signer, config=config) as b,
        ):
            return await asyncio.gather(
                a.add_many(entries(400, "a")), b.add_many(entries(400, "b"))
            )

    got_a, got_b = run(go())
    assert len(set(got_a) | set(got_b)) == 800
    reader = reader_for(store, signer)
    assert reader.size() == 800
    for index, entry in zip(got_a, entries(400, "a"), strict=True):
        assert reader.entry(index) == entry
    assert reader.audit() is not None


def test_a_store_whose_tiles_were_edited_is_refused_at_start(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    async def go() -> None:
        async with Sequencer(memory_store, signer=signer) as seq:
            await seq.add_many(entries(300))

    run(go())
    memory_store.tamper_part(0, 1, position=0, data=leaf_hash(b"forged"))
    with pytest.raises(Corruption):
        run(go())


def test_queued_bytes_are_bounded_too(memory_store: MemoryStore, signer: CheckpointSigner) -> None:
    store = SlowStore()
    config = SequencerConfig(max_batch=2, max_delay=0, max_pending_bytes=3 * MAX_ENTRY_SIZE)
    big = [bytes([i]) * MAX_ENTRY_SIZE for i in range(5)]

    async def go() -> list[int]:
        async with Sequencer(store, signer=signer, config=config) as seq:
            first = seq.submit(big[0])
            await asyncio.sleep(0.05)  # the first batch is now stuck in commit
            queued = [seq.submit(e) for e in big[1:4]]
            with pytest.raises(RetryLater):
                seq.submit(big[4])
            store.gate.set()
            return list(await asyncio.gather(first, *queued))

    assert sorted(run(go())) == [0, 1, 2, 3]
    assert reader_for(store, signer).size() == 4


@pytest.mark.parametrize("how", ["rolled back", "emptied"])
def test_a_store_rolled_back_under_a_running_sequencer_is_never_signed_over(
    memory_store: MemoryStore, signer: CheckpointSigner, how: str
) -> None:
    """The checkpoint row restored from a backup (or emptied) while the sequencer runs: its
    next commit finds the log moved, reloads, and refuses the store rather than sign a
    second history at sizes it has already published. Its reader refuses it too."""

    async def go() -> None:
        config = SequencerConfig(max_delay=0)
        async with Sequencer(memory_store, signer=signer, config=config) as seq:
            await seq.add_many(entries(10))
            earlier = memory_store.read_checkpoint()
            assert earlier is not None
            await seq.add_many(entries(10, "f"))
            if how == "rolled back":
                memory_store.tamper_checkpoint(earlier.size, earlier.note)
            else:
                memory_store._checkpoint = None
            planted = memory_store.read_checkpoint()
            with pytest.raises(Corruption):
                await seq.add_many(entries(5, "g"))
            assert memory_store.read_checkpoint() == planted  # nothing signed over it
            with pytest.raises(Corruption):
                seq.reader.checkpoint()

    run(go())


def test_a_reader_refuses_a_checkpoint_of_a_size_it_saw_with_another_root(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    async def go() -> None:
        async with Sequencer(memory_store, signer=signer) as seq:
            await seq.add_many(entries(20))

    run(go())
    reader = reader_for(memory_store, signer)
    seen = reader.checkpoint()
    assert seen is not None
    fork = signer.sign(size=seen.size, root=leaf_hash(b"another tree"))
    memory_store.tamper_checkpoint(seen.size, fork.note)
    with pytest.raises(Corruption, match="changed its root"):
        reader.checkpoint()


def test_a_checkpoint_adopted_while_a_read_is_on_its_way_is_no_rollback(
    memory_store: MemoryStore, signer: CheckpointSigner
) -> None:
    """A reader thread reads the store just before the sequencer commits and adopts a newer
    checkpoint: the older one it read back is no sign of a rollback (what the reader saw
    before the read is what the read must cover), and the reader keeps the newer one."""

    async def grow(n: int, tag: str) -> None:
        async with Sequencer(memory_store, signer=signer) as seq:
            await seq.add_many(entries(n, tag))

    run(grow(10, "a"))
    older = memory_store.read_checkpoint()
    run(grow(5, "b"))
    latest = reader_for(memory_store, signer).checkpoint()
    assert older is not None and latest is not None and latest.size == 15
    newer = latest

    class _Racing(MemoryStore):
        def read_checkpoint(self) -> StoredCheckpoint | None:
            reader.adopt(newer)  # the sequencer's commit lands while this read is out
            return older

    reader = reader_for(memory_store, signer)
    assert reader.checkpoint() == newer
    reader = reader_for(_Racing(), signer)
    seen = reader.checkpoint()
    assert seen is not None and seen.size == 10
    assert reader.latest == newer
