"""Several processes sequencing one log (SharedSequencer), simulated in one event loop.

Two or three "processes" share a store with a sequencer role. The attacks: the holder
loses its role mid-load (as a dead connection would) while it still holds a batch; a
deposed holder keeps taking entries; entries are accepted by a process that never holds
the role. Every entry must get exactly one index, and the same one whoever reports it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from sealtrail.errors import Corruption, RetryLater
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig, SharedSequencer
from sealtrail.storage import SharedMemoryStore, StatementRecord, TilePart
from sealtrail.storage.memory import MemoryLease
from tests.conftest import reader_for

T = TypeVar("T")

FAST = SequencerConfig(max_batch=64, max_delay=0.001)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _record(entry: bytes) -> StatementRecord:
    return StatementRecord(entry, entry, "iss", "sub", "text/plain", 0)


def _entry(tag: str, i: int) -> bytes:
    return f"{tag}-{i:06d}".ljust(32, "-").encode()


async def _submit(
    node: SharedSequencer, store: SharedMemoryStore, entries: Sequence[bytes]
) -> list[int]:
    """What the transparency service does: store in the backlog first, then submit, with
    the entries' seq numbers there."""
    seqs = await asyncio.to_thread(store.put_statements, [_record(e) for e in entries])
    out: list[int] = []
    for result in await asyncio.gather(*node.submit_many(entries, seqs)):
        out += result
    return out


async def _fed(store: SharedMemoryStore, seq: int) -> None:
    """Wait until the feeder's watermark covers backlog entry ``seq``."""
    deadline = time.monotonic() + 5
    while store.read_sequenced() < seq:
        assert time.monotonic() < deadline, "the feeder did not pass the backlog within 5 s"
        await asyncio.sleep(0.01)


def _node(store: SharedMemoryStore, signer: CheckpointSigner, name: str) -> SharedSequencer:
    return SharedSequencer(
        store, signer=signer, backlog=store, holder=name, config=FAST, role_check=0.02
    )


async def _holder_and_other(
    store: SharedMemoryStore, signer: CheckpointSigner
) -> tuple[SharedSequencer, SharedSequencer]:
    """Two started processes: the first holds the role, the other never sequences."""
    holder = _node(store, signer, "holder")
    await holder.start()
    other = _node(store, signer, "other")
    await other.start()
    assert holder.holds_role and not other.holds_role
    return holder, other


def test_one_process_holds_the_role_and_every_process_gets_indexes(
    signer: CheckpointSigner,
) -> None:
    store = SharedMemoryStore()

    async def go() -> dict[bytes, int]:
        nodes = [_node(store, signer, f"p{k}") for k in range(3)]
        for node in nodes:
            await node.start()
        assert sum(node.holds_role for node in nodes) == 1
        got: dict[bytes, int] = {}
        batches = [[_entry(f"p{k}b{b}", i) for i in range(50)] for k in range(3) for b in range(4)]
        results = await asyncio.gather(
            *(_submit(nodes[n % 3], store, batch) for n, batch in enumerate(batches))
        )
        for batch, indexes in zip(batches, results, strict=True):
            got.update(zip(batch, indexes, strict=True))
        for node in nodes:
            await node.close()
        return got

    got = run(go())
    reader = reader_for(store, signer)
    assert reader.size() == len(got) == 600
    assert sorted(got.values()) == list(range(600)), "every entry once, no index twice"
    entries = reader.entries(0, 600)
    assert all(entries[index] == entry for entry, index in got.items())
    assert reader.audit() is not None


def test_the_role_passes_on_when_its_holder_loses_it_mid_load(signer: CheckpointSigner) -> None:
    store = SharedMemoryStore()

    async def go() -> tuple[dict[bytes, int], list[list[int]], float]:
        nodes = [_node(store, signer, f"p{k}") for k in range(3)]
        for node in nodes:
            await node.start()
        got: dict[bytes, int] = {}
        takeover = 0.0

        async def load(k: int) -> None:
            for b in range(30):
                batch = [_entry(f"p{k}b{b}", i) for i in range(20)]
                got.update(zip(batch, await _submit(nodes[k], store, batch), strict=True))

        async def depose() -> None:
            nonlocal takeover
            for _ in range(3):
                await asyncio.sleep(0.05)
                before = [node.holds_role for node in nodes]
                store.revoke_role()  # the holder's lock connection died
                lost = time.monotonic()
                while not any(
                    node.holds_role and not was for node, was in zip(nodes, before, strict=True)
                ):
                    await asyncio.sleep(0.005)
                    if time.monotonic() - lost > 5:
                        raise AssertionError("no process took the role within 5 s")
                takeover = max(takeover, time.monotonic() - lost)

        await asyncio.gather(*(load(k) for k in range(3)), depose())
        epochs = [node.epochs for node in nodes]
        for node in nodes:
            await node.close()
        return got, epochs, takeover

    got, epochs, takeover = run(go())
    assert len({e for held in epochs for e in held}) >= 4, "the role changed hands"
    reader = reader_for(store, signer)
    assert reader.size() == len(got) == 3 * 30 * 20
    assert sorted(got.values()) == list(range(len(got)))
    entries = reader.entries(0, reader.size())
    assert all(entries[index] == entry for entry, index in got.items())
    assert reader.audit() is not None
    assert takeover < 1.0


def test_entries_stored_by_a_process_that_never_sequences_are_appended(
    signer: CheckpointSigner,
) -> None:
    store = SharedMemoryStore()

    async def go() -> list[int]:
        holder, follower = await _holder_and_other(store, signer)
        indexes = await _submit(follower, store, [_entry("f", i) for i in range(100)])
        # A statement stored twice keeps its index, whoever waits for it.
        again = await _submit(follower, store, [_entry("f", 7)])
        await follower.close()
        await holder.close()
        return indexes + again

    indexes = run(go())
    assert indexes[:100] == list(range(100))
    assert indexes[100] == 7
    assert store.read_sequenced() == 100


class _LoopReadsStore(SharedMemoryStore):
    """Counts the tile reads made on one thread (the event loop's)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_thread = -1
        self.loop_reads = 0

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        if threading.get_ident() == self.loop_thread:
            self.loop_reads += 1
        return super().read_parts(level, index)


def test_a_process_that_never_sequences_proves_its_entries_without_reading_the_store(
    signer: CheckpointSigner,
) -> None:
    """The other process builds its registrations' receipts on its event loop, where a
    read of a server store holds up every request: the follower has read the tiles those
    proofs need in its worker thread, with the leaves it waited for."""
    store = _LoopReadsStore()

    async def go() -> int:
        store.loop_thread = threading.get_ident()
        holder, other = await _holder_and_other(store, signer)
        proved = 0
        for batch in range(7):  # across full tiles and the partial edge, 0..699
            indexes = await _submit(other, store, [_entry(f"b{batch}", i) for i in range(100)])
            latest = other.latest
            assert latest is not None and latest.size > indexes[-1]
            before = store.loop_reads
            for index in indexes:
                other.reader.inclusion_proof(index, size=latest.size).verify(latest.root)
                proved += 1
            assert store.loop_reads == before, f"batch {batch}: tiles read on the event loop"
        await other.close()
        await holder.close()
        return proved

    assert run(go()) == 700


class _HighTilesFailStore(SharedMemoryStore):
    """Fails every read of a tile above level 0 once ``failing`` is set."""

    failing = False

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        if self.failing and level > 0:
            raise Corruption(f"tile {level}/{index} is unreadable")
        return super().read_parts(level, index)


def test_a_tile_the_follower_cannot_read_ahead_does_not_hold_up_the_indexes(
    signer: CheckpointSigner,
) -> None:
    """Reading the receipts' tiles ahead is a convenience: should it fail, the waiters
    still learn their indexes (a receipt then reads the tile itself, and reports)."""
    store = _HighTilesFailStore()

    async def go() -> list[int]:
        holder, other = await _holder_and_other(store, signer)
        store.failing = True  # size 300: the proofs need tile 1/0
        entries = [_entry("high", i) for i in range(300)]
        indexes = await asyncio.wait_for(_submit(other, store, entries), 10)
        with pytest.raises(Corruption):
            other.reader.inclusion_proof(299, size=300)
        store.failing = False
        await other.close()
        await holder.close()
        return indexes

    assert run(go()) == list(range(300))


def test_the_feeder_does_not_append_again_what_the_holder_was_handed(
    signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's own registrations reach its sequencer directly; its feeder, reading the
    same entries from the backlog, waits for their groups instead of appending them again."""
    store = SharedMemoryStore()
    entries = [_entry("own", i) for i in range(200)]

    async def go() -> tuple[list[bytes], list[int]]:
        node = _node(store, signer, "p0")
        await node.start()
        assert node.sequencer is not None
        handed: list[bytes] = []
        submit = node.sequencer.submit_many

        def counted(batch: Sequence[bytes]) -> list[asyncio.Future[list[int]]]:
            handed.extend(batch)
            return submit(batch)

        monkeypatch.setattr(node.sequencer, "submit_many", counted)
        indexes: list[int] = []
        for k in range(0, len(entries), 20):
            indexes += await _submit(node, store, entries[k : k + 20])
        await _fed(store, len(entries))
        leftover = dict(node._direct)
        await node.close()
        assert not leftover, "nothing handed over is remembered once the feeder passed it"
        return handed, indexes

    handed, indexes = run(go())
    assert indexes == list(range(len(entries)))
    assert sorted(handed) == sorted(entries), "each entry reached the sequencer once"


def test_a_handed_group_that_fails_is_appended_by_the_feeder(signer: CheckpointSigner) -> None:
    store = SharedMemoryStore()
    entries = [_entry("lost", i) for i in range(30)]

    async def go() -> list[int]:
        node = _node(store, signer, "p0")
        await node.start()
        seqs = await asyncio.to_thread(store.put_statements, [_record(e) for e in entries])
        store.faults.arm("before_commit")  # the commit of the group handed over fails
        out: list[int] = []
        for result in await asyncio.gather(*node.submit_many(entries, seqs)):
            out += result  # learnt from the log, once the feeder appended them
        await _fed(store, seqs[-1])
        await node.close()
        return out

    indexes = run(go())
    assert store.faults.fired == ["before_commit"]
    assert indexes == list(range(len(entries)))
    reader = reader_for(store, signer)
    assert reader.size() == len(entries)
    assert reader.entries(0, len(entries)) == entries


def test_a_handed_group_answered_retry_later_is_appended_by_the_feeder(
    signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group can also fail with RetryLater (its sequencer stopped with it queued): the
    feeder's step that waited on it fails, and the feeder must start again from its
    watermark rather than go on past those entries."""
    store = SharedMemoryStore()
    entries = [_entry("later", i) for i in range(30)]

    async def go() -> list[int]:
        node = _node(store, signer, "p0")
        await node.start()
        assert node.sequencer is not None
        seqs = await asyncio.to_thread(store.put_statements, [_record(e) for e in entries])
        loop = asyncio.get_running_loop()

        def stopped(batch: Sequence[bytes]) -> list[asyncio.Future[list[int]]]:
            group: asyncio.Future[list[int]] = loop.create_future()
            loop.call_later(0.05, group.set_exception, RetryLater("the sequencer stopped"))
            return [group]

        with monkeypatch.context() as patch:
            patch.setattr(node.sequencer, "submit_many", stopped)
            futures = node.submit_many(entries, seqs)
            await asyncio.sleep(0.1)  # the feeder took the handed rows, then the group failed
        out: list[int] = []
        for result in await asyncio.wait_for(asyncio.gather(*futures), 10):
            out += result
        await node.close()
        return out

    assert run(go()) == list(range(len(entries)))
    assert reader_for(store, signer).size() == len(entries)


def test_closing_while_the_role_is_being_given_up_stops(
    signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() cancels the role loop; if that loop is stepping down at the time (waiting
    for its feeder to stop), the cancellation must still end it, not be taken for the
    feeder's own and swallowed (close() would wait forever)."""
    store = SharedMemoryStore()

    async def slow_feeder(self: SharedSequencer, sequencer: object) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.2)  # stopping takes a while

    monkeypatch.setattr(SharedSequencer, "_feed", slow_feeder)

    async def go() -> float:
        node = _node(store, signer, "p0")
        await node.start()
        assert node.holds_role
        store.revoke_role()
        deadline = time.monotonic() + 5
        while node._lease is not None:  # the role loop noticed and is stepping down
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        began = time.monotonic()
        await asyncio.wait_for(node.close(), 5)
        return time.monotonic() - began

    assert run(go()) < 2.0


def test_the_lease_is_checked_on_its_own_thread_while_the_tree_loads(
    signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store may end a lease left unchecked for a few seconds (PostgreSQL's ROLE_LEASE):
    a new holder loading a large tree keeps checking it, and the checks run on the role's
    own thread, not behind the store reads and writes of the default executor."""
    store = SharedMemoryStore()
    checks: list[str] = []
    acquire = store.acquire_role

    def acquire_role(holder: str) -> MemoryLease | None:
        lease = acquire(holder)
        if lease is not None:
            alive = lease.alive

            def checked() -> bool:
                checks.append(threading.current_thread().name)
                return alive()

            monkeypatch.setattr(lease, "alive", checked)
        return lease

    monkeypatch.setattr(store, "acquire_role", acquire_role)
    start = Sequencer.start

    async def slow_start(self: Sequencer) -> None:
        await asyncio.sleep(0.3)  # a tree that takes a while to load
        await start(self)

    monkeypatch.setattr(Sequencer, "start", slow_start)

    async def go() -> int:
        node = _node(store, signer, "p0")  # checks every 0.02 s
        await node.start()
        assert node.holds_role
        during = len(checks)
        await node.close()
        return during

    assert run(go()) >= 5
    assert checks and all(name.startswith("sealtrail-role") for name in checks)
