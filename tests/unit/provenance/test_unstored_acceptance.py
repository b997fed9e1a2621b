"""A statement the rules accepted but that never reached the store (back-pressure refused
it, or the store's write failed) must not be remembered: a later statement that rests on
it (an assembly of the devices of a manifest that was never stored) is refused, and is
accepted once that statement is registered after all."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sealtrail.errors import Error, RetryLater, StorageError, VerificationError
from sealtrail.provenance import Assembly, DeviceManifest, DeviceRef, Node, NodeType

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
