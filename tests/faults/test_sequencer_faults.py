"""Table-driven crash cases: the store fails at a named point; what must hold afterwards.

Every case: the waiters of the failing batch get an error (never a wrong index), the log
afterwards verifies from scratch, every entry acknowledged before is where it was, and the
next batch (including a retry of the failed one) works without restarting anything.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from sealtrail.errors import StorageError
from sealtrail.log import CheckpointSigner, Sequencer
from sealtrail.storage import MemoryStore
from tests.conftest import reader_for


@dataclass(frozen=True)
class Case:
    name: str
    fault: str
    persisted: bool  # is the failed batch in the log afterwards?


CASES = [
    Case("fail before anything is written", "before_commit", persisted=False),
    Case("fail after tiles and leaves, before the checkpoint", "after_parts", persisted=False),
    Case("fail after the checkpoint (failed but persisted)", "after_checkpoint", persisted=True),
]

BEFORE = [f"acked {i}".encode() for i in range(300)]
FAILING = [f"failing {i}".encode() for i in range(40)]
OTHERS = [f"other {i}".encode() for i in range(50)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sequencer_survives_store_faults(case: Case, signer: CheckpointSigner) -> None:
    store = MemoryStore()

    async def go() -> None:
        async with Sequencer(store, signer=signer) as seq:
            acked = await seq.add_many(BEFORE)
            store.faults.arm(case.fault)
            with pytest.raises(StorageError):
                await seq.add_many(FAILING)

            reader = reader_for(store, signer)
            size = reader.size()
            assert size == (340 if case.persisted else 300)

            # Different entries next: if the failed batch left rows behind, they are replaced.
            others = await seq.add_many(OTHERS)
            assert others == list(range(size, size + 50))
            # The failed batch retried: found where it is if persisted, else appended anew.
            retried = await seq.add_many(FAILING)
            if case.persisted:
                assert retried == list(range(300, 340))
            else:
                assert retried == list(range(350, 390))

            assert reader.audit() is not None
            for index, entry in zip(acked, BEFORE, strict=True):
                assert reader.entry(index) == entry
            for index, entry in zip(others, OTHERS, strict=True):
                assert reader.entry(index) == entry
            for index, entry in zip(retried, FAILING, strict=True):
                assert reader.entry(index) == entry

    asyncio.run(go())


def test_read_failure_during_reload_fails_the_batch_then_recovers(signer: CheckpointSigner) -> None:
    store = MemoryStore()

    async def go() -> None:
        async with Sequencer(store, signer=signer) as seq:
            await seq.add_many(BEFORE)
            store.faults.arm("before_commit")
            with pytest.raises(StorageError):
                await seq.add(b"x")
            store.faults.arm("read_checkpoint")  # the reload that follows a failure fails too
            with pytest.raises(StorageError):
                await seq.add(b"y")
            assert await seq.add(b"z") == 300
            assert reader_for(store, signer).audit() is not None

    asyncio.run(go())


def test_signing_failure_writes_nothing(signer: CheckpointSigner) -> None:
    store = MemoryStore()

    class BrokenSigner(CheckpointSigner):
        def sign(self, *, size: int, root: bytes):  # type: ignore[no-untyped-def]
            raise StorageError("the signing key is unavailable")

    broken = BrokenSigner.__new__(BrokenSigner)
    broken.__dict__.update(signer.__dict__)

    async def go() -> None:
        async with Sequencer(store, signer=broken) as seq:
            with pytest.raises(StorageError):
                await seq.add(b"x")
        assert store.read_checkpoint() is None
        async with Sequencer(store, signer=signer) as seq:
            assert await seq.add(b"x") == 0

    asyncio.run(go())
