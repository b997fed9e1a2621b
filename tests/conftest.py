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


def pytest_report_header() -> list[str]:
    """Say up front which optional backends this run covers."""
    import socket

    from tests.unit.keys._softhsm import hsm_skip_reason

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            reachable = "reachable at 127.0.0.1:5432"
    except OSError:
        reachable = "not reachable at 127.0.0.1:5432"
    hsm_reason = hsm_skip_reason()
    return [
        f"PostgreSQL: server {reachable}; no PostgreSQL store yet, so no PostgreSQL tests "
        "run (storage backends covered: memory, sqlite)",
        "HSM (PKCS#11): SoftHSM2 tests will run"
        if hsm_reason is None
        else f"HSM (PKCS#11): SoftHSM2 tests will be skipped: {hsm_reason}",
    ]
