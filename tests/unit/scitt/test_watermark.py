"""The sequenced watermark of a single-process service: it follows the rows this process
stored, not the store's numbering (a row planted behind the service takes a number too),
and stays below a group that failed to reach the log, so that recovery appends it."""

from __future__ import annotations

import hashlib

import pytest

from sealtrail.errors import StorageError
from sealtrail.scitt import _service
from sealtrail.storage import StatementRecord

from .conftest import Running
from .test_registration import good

pytestmark = pytest.mark.anyio


def _planted(n: int) -> StatementRecord:
    body = f"a row written behind the service {n}".encode()
    return StatementRecord(
        entry_id=hashlib.sha256(body).digest(),
        body=body,
        issuer="did:x509:planted",
        subject=f"urn:planted:{n}",
        content_type="application/json",
        registered_at=0,
    )


async def _register(running: Running, *subjects: str) -> None:
    for subject in subjects:
        await running.service.register(good(running.issuer, subject=subject))


async def test_a_planted_row_does_not_hold_the_watermark_back(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_service, "WATERMARK_EVERY", 0.0)
    await _register(running, "urn:maker:device:0")
    planted = running.store.tamper_insert(_planted(0))
    await _register(running, "urn:maker:device:1", "urn:maker:device:2")
    last = len(running.store.statements_since(0, limit=100))
    await _register(running, "urn:maker:device:3")  # writes the watermark with its group
    assert planted < last
    assert running.store.read_sequenced() >= last


async def test_a_group_that_failed_to_append_keeps_the_watermark_below_it(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_service, "WATERMARK_EVERY", 0.0)
    await _register(running, "urn:maker:device:0")
    sequencer = running.service.sequencer
    submit = sequencer.submit_many

    def refuse(*_: object, **__: object) -> object:
        raise StorageError("the log store is gone")

    monkeypatch.setattr(sequencer, "submit_many", refuse)
    failing = good(running.issuer, subject="urn:maker:device:1")
    with pytest.raises(StorageError):
        await running.service.register(failing)
    failed = len(running.store.statements_since(0, limit=100))
    monkeypatch.setattr(sequencer, "submit_many", submit)
    await _register(running, "urn:maker:device:2", "urn:maker:device:3", "urn:maker:device:4")
    assert running.store.read_sequenced() == failed - 1
    # Registered again, it reaches the log, and the watermark moves past it.
    await running.service.register(failing)
    await _register(running, "urn:maker:device:5", "urn:maker:device:6")
    assert running.store.read_sequenced() > failed


async def test_a_watermark_write_that_fails_leaves_its_group_stored_and_counted(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watermark rides along with a group's write: if writing it fails once the group
    is committed, the group is stored all the same, reaches the log, and holds the
    watermark until it does."""
    monkeypatch.setattr(_service, "WATERMARK_EVERY", 0.0)
    await _register(running, "urn:maker:device:0")
    store = running.store
    write = store.write_sequenced
    failures = [StorageError("database is locked")]

    def flaky(seq: int) -> None:
        if failures:
            raise failures.pop()
        write(seq)

    monkeypatch.setattr(store, "write_sequenced", flaky)
    await _register(running, "urn:maker:device:1")  # its group's watermark write fails
    assert not failures
    await _register(running, "urn:maker:device:2", "urn:maker:device:3")
    assert store.read_sequenced() >= len(store.statements_since(0, limit=100)) - 1


async def test_a_write_that_fails_after_its_commit_holds_the_watermark_below_it(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit whose answer is lost: the rows are stored under numbers the process never
    learnt. The watermark must not pass them, or recovery would never append them."""
    monkeypatch.setattr(_service, "WATERMARK_EVERY", 0.0)
    await _register(running, "urn:maker:device:0")
    store = running.store
    put = store.put_statements

    def committed_then_lost(records: list[StatementRecord]) -> list[int]:
        put(records)
        raise StorageError("the connection was lost at commit")

    with monkeypatch.context() as patch:
        patch.setattr(store, "put_statements", committed_then_lost)
        with pytest.raises(StorageError):
            await running.service.register(good(running.issuer, subject="urn:maker:device:1"))
    lost = len(store.statements_since(0, limit=100))
    await _register(running, "urn:maker:device:2", "urn:maker:device:3", "urn:maker:device:4")
    assert store.read_sequenced() < lost
