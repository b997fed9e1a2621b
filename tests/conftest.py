"""Shared fixtures: fresh keys and stores. Every test gets its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, LogReader
from sealtrail.storage import MemoryStore

ORIGIN = "test.sealtrail.localhost/log"


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())


@pytest.fixture
def memory_store() -> Iterator[MemoryStore]:
    store = MemoryStore()
    yield store
    store.close()


def reader_for(store: object, signer: CheckpointSigner) -> LogReader:
    from sealtrail.storage import LogStore

    assert isinstance(store, LogStore)
    return LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
