"""A statement the rules accepted but that never reached the store (back-pressure refused
it, or the store's write failed) must not be remembered: a later statement that rests on
it (an assembly of the devices of a manifest that was never stored) is refused, and is
accepted once that statement is registered after all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sealtrail.errors import Error, RetryLater, StorageError, VerificationError
from sealtrail.provenance import Assembly, DeviceManifest, DeviceRef, Node, NodeType
from sealtrail.storage import StatementRecord

from ._signed import SignedChain, signed_chain
from ._world import ASSEMBLER, MAKER


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _refuse_admission(chain: SignedChain, monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(*_: object) -> None:
        raise RetryLater("the sequencer's queue is full")

    monkeypatch.setattr(chain.sequencer, "check_admission", busy)


def _fail_store(chain: SignedChain, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> list[int]:
        raise StorageError("the disk is full")

    monkeypatch.setattr(chain.service.store, "put_statements", broken)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("lost", "error"), [(_refuse_admission, RetryLater), (_fail_store, StorageError)]
)
async def test_a_statement_that_was_not_stored_is_not_remembered(
    lost: Callable[[SignedChain, pytest.MonkeyPatch], None],
    error: type[Error],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with signed_chain() as chain:
        devices = chain.world.devices(2)
        manifest = chain.sign(MAKER, DeviceManifest("batch-lost", tuple(devices)))
        blade = Assembly(
            Node(NodeType.BLADE, "blade-lost"), tuple(DeviceRef(d.device_id) for d in devices)
        )
        with monkeypatch.context() as patch:
            lost(chain, patch)
            with pytest.raises(error):
                await chain.service.register(manifest)
        with pytest.raises(VerificationError) as caught:
            await chain.service.register(chain.sign(ASSEMBLER, blade))
        assert caught.value.code == "assembly-unknown-device"

        await chain.service.register(manifest)
        await chain.service.register(chain.sign(ASSEMBLER, blade))


@pytest.mark.anyio
async def test_a_failed_write_reads_nothing_more_from_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Taking the acceptances back reads nothing: during an outage every read would wait
    for the store, on the event loop."""
    async with signed_chain() as chain:
        store = chain.service.store
        manifest = chain.sign(MAKER, DeviceManifest("batch-outage", tuple(chain.world.devices(2))))
        reads_after_failure = []
        failed = False
        get = store.get_statement

        def counted(entry_id: bytes) -> object:
            if failed:
                reads_after_failure.append(entry_id)
            return get(entry_id)

        def broken(*_: object) -> list[int]:
            nonlocal failed
            failed = True
            raise StorageError("the database is unreachable")

        monkeypatch.setattr(store, "get_statement", counted)
        with monkeypatch.context() as patch:
            patch.setattr(store, "put_statements", broken)
            with pytest.raises(StorageError):
                await chain.service.register(manifest)
        assert reads_after_failure == []


@pytest.mark.anyio
async def test_a_copy_still_on_its_way_to_the_store_keeps_the_acceptance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same statement twice in flight (a client's retry): the first copy's write fails,
    the second's succeeds. Its acceptance stands, so a second manifest of the same devices
    is refused."""
    async with signed_chain() as chain:
        devices = chain.world.devices(2)
        first = chain.sign(MAKER, DeviceManifest("batch-a", tuple(devices)))
        clone = chain.sign(MAKER, DeviceManifest("batch-b", tuple(devices)))
        store = chain.service.store
        put = store.put_statements
        calls = 0

        def slow_then_fails_once(records: list[StatementRecord]) -> list[int]:
            nonlocal calls
            calls += 1
            time.sleep(0.2)
            if calls == 1:
                raise StorageError("the disk is full")
            return put(records)

        monkeypatch.setattr(store, "put_statements", slow_then_fails_once)
        lost = asyncio.create_task(chain.service.register(first))
        await asyncio.sleep(0.05)  # the first copy's group is being written
        retried = asyncio.create_task(chain.service.register(first))
        await asyncio.sleep(0.25)  # the first group failed; the retry's is being written
        with pytest.raises(VerificationError) as caught:
            await chain.service.register(clone)
        assert caught.value.code == "manifest-cloned-device"
        with pytest.raises(StorageError):
            await lost
        await retried
