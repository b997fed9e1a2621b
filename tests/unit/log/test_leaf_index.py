"""The leaf index is written in sorted runs behind a watermark; deduplication never misses.

Entries above the watermark are deduplicated from memory and, after a restart, from the
level-0 tiles; entries below it from the store's index. Each test submits duplicates from
both sides of the watermark, across restarts and store failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

import pytest

from sealtrail.errors import StorageError
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.merkle import leaf_hash
from sealtrail.storage import LogStore, MemoryStore, SQLiteStore
from tests.conftest import reader_for

CONFIG = SequencerConfig(max_batch=50, max_delay=0, index_every=120)


def items(n: int, tag: str = "e") -> list[bytes]:
    return [f"{tag}-{i}".encode() for i in range(n)]


def add(store: LogStore, signer: CheckpointSigner, entries: list[bytes]) -> list[int]:
    async def go() -> list[int]:
        async with Sequencer(store, signer=signer, config=CONFIG) as seq:
            out: list[int] = []
            for pos in range(0, len(entries), 50):
                out += await seq.add_many(entries[pos : pos + 50])
            return out

    return asyncio.run(go())


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LogStore:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "log.db")


def test_watermark_moves_in_runs(store: LogStore, signer: CheckpointSigner) -> None:
    assert add(store, signer, items(100)) == list(range(100))
    stored = store.read_checkpoint()
    assert stored is not None
    assert (stored.size, stored.indexed) == (100, 0)  # not enough for a run yet
    add(store, signer, items(50, "f"))
    stored = store.read_checkpoint()
    assert stored is not None
    assert (stored.size, stored.indexed) == (150, 150)
    assert store.lookup_leaves([leaf_hash(b"e-3")]) == {leaf_hash(b"e-3"): [3]}


def test_duplicates_on_both_sides_of_the_watermark_across_restarts(
    store: LogStore, signer: CheckpointSigner
) -> None:
    add(store, signer, items(150))  # indexed: 0..149
    add(store, signer, items(60, "tail"))  # unindexed tail: 150..209
    # A fresh sequencer: the tail is rebuilt from the tiles, the rest found in the index.
    again = add(store, signer, [b"e-7", b"tail-5", b"new", b"e-149", b"tail-59"])
    assert again == [7, 155, 210, 149, 209]
    reader = reader_for(store, signer)
    assert reader.size() == 211
    assert reader.audit() is not None
    for entry, index in [(b"e-7", 7), (b"tail-5", 155), (b"new", 210)]:
        assert reader.index_of(leaf_hash(entry)) == index
        assert reader.inclusion_proof_by_hash(leaf_hash(entry)).index == index


def test_reader_follows_the_watermark(store: LogStore, signer: CheckpointSigner) -> None:
    add(store, signer, items(100))
    reader = reader_for(store, signer)
    assert reader.index_of(leaf_hash(b"e-99")) == 99  # from the tail, read off the tiles
    add(store, signer, items(100, "g"))  # the watermark moves past both
    assert reader.index_of(leaf_hash(b"e-99")) == 99
    assert reader.index_of(leaf_hash(b"g-99")) == 199


@pytest.mark.parametrize("fault", ["before_commit", "after_parts", "after_checkpoint"])
def test_a_failed_flush_loses_no_deduplication(signer: CheckpointSigner, fault: str) -> None:
    store = MemoryStore()
    add(store, signer, items(100))

    async def go() -> None:
        async with Sequencer(store, signer=signer, config=CONFIG) as seq:
            store.faults.arm(fault)
            with pytest.raises(StorageError):
                await seq.add_many(items(30, "flush"))  # this batch would move the watermark
            retried = await seq.add_many([*items(30, "flush"), b"e-5"])
            assert retried == [*range(100, 130), 5]

    asyncio.run(go())
    reader = reader_for(store, signer)
    assert reader.size() == 130
    assert reader.audit() is not None
    assert add(store, signer, [b"e-1", b"flush-1"]) == [1, 101]


def test_the_index_is_asked_only_once_it_holds_entries(signer: CheckpointSigner) -> None:
    """Below the first run every entry is in memory: no lookups. Once runs are written, an
    entry from below the watermark is still found (through the index) and keeps its index."""

    class CountingStore(MemoryStore):
        lookups = 0

        def lookup_leaves(self, leaf_hashes: Collection[bytes]) -> dict[bytes, list[int]]:
            self.lookups += 1
            return super().lookup_leaves(leaf_hashes)

    store = CountingStore()
    assert add(store, signer, items(100)) == list(range(100))
    assert store.lookups == 0
    assert add(store, signer, items(200)) == list(range(200))  # the first run is written
    stored = store.read_checkpoint()
    assert stored is not None and stored.indexed >= 120
    before = store.lookups
    assert add(store, signer, [b"e-3", b"new"]) == [3, 200]
    assert store.lookups > before


def test_a_watermark_raised_behind_the_log_is_refused(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    """The leaf index holds the entries below its watermark and the tiles hold the rest: a
    watermark raised in the database hides the entries between from both, and an entry
    sent again would get a second index. The sequencer's start and the audit refuse it."""
    import sqlite3

    from sealtrail.errors import Corruption

    store = SQLiteStore(tmp_path / "log.db")
    add(store, signer, items(150))  # indexed up to 150
    add(store, signer, items(30, "g"))  # 30 more in the tail
    with sqlite3.connect(tmp_path / "log.db") as db:
        db.execute("UPDATE checkpoint SET indexed = size")
    db.close()
    with pytest.raises(Corruption, match="does not hold entry 179, below its watermark 180"):
        add(store, signer, items(1, "again"))
    with pytest.raises(Corruption, match="does not hold entry 150, below its watermark 180"):
        reader_for(store, signer).audit()
    store.close()


def test_an_audit_of_a_live_store_takes_a_newer_watermark_in_its_stride(
    signer: CheckpointSigner,
) -> None:
    """The audit verifies the checkpoint it read first; a commit that indexed more before
    the audit read the leaf-index watermark (a hot standby, a running server) is not a
    corruption."""
    from sealtrail.storage import StoredCheckpoint

    store = MemoryStore()
    add(store, signer, items(100))
    first = store.read_checkpoint()
    add(store, signer, items(50, "f"))
    later = store.read_checkpoint()
    assert first is not None and later is not None
    assert (first.size, first.indexed, later.indexed) == (100, 0, 150)
    reads = iter([first])

    class Live(MemoryStore):
        def read_checkpoint(self) -> StoredCheckpoint | None:
            return next(reads, later)  # the first read, then the commit landed

    live = Live()
    live.__dict__.update(store.__dict__)
    audited = reader_for(live, signer).audit()
    assert audited is not None and audited.size == 100


def test_a_watermark_above_the_tree_is_named_by_the_audit(signer: CheckpointSigner) -> None:
    """What the sequencer's start refuses, the audit names too."""
    import dataclasses

    from sealtrail.errors import Corruption

    store = MemoryStore()
    add(store, signer, items(150))
    stored = store.read_checkpoint()
    assert stored is not None
    store._checkpoint = dataclasses.replace(stored, indexed=stored.size + 100)
    with pytest.raises(Corruption, match="leaf-index watermark 250 is outside the tree"):
        reader_for(store, signer).audit()
