"""A server's claim on its provenance index: renewed while it runs, released as it stops,
and a store that is away for a while costs a warning, not the server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from sealtrail.errors import Conflict, StorageError
from sealtrail.service import _runtime
from sealtrail.storage import MemoryIndex, MemoryStore
from tests.integration.conftest import service_application

SERVER = "sealtrail serve host/1"
REBUILD = "sealtrail index rebuild host/2"


def test_the_claim_is_renewed_until_released(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runtime, "CLAIM_TTL", 0.3)  # renewed every 0.1 s, for 0.3 s
    index = MemoryIndex()

    async def run() -> None:
        claim = _runtime._Claim(index, SERVER)
        await claim.take()
        await asyncio.sleep(0.6)  # twice the claim's own life: only renewals keep it
        with pytest.raises(Conflict, match=SERVER):
            index.claim(REBUILD, exclusive=True)
        await claim.release()
        index.claim(REBUILD, exclusive=True)  # released at once, not left to lapse

    asyncio.run(run())


def test_a_failed_renewal_is_a_warning_and_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_runtime, "CLAIM_TTL", 0.3)
    index = MemoryIndex()
    claim_once = index.claim
    failures = [StorageError("the database is away")]

    def flaky(holder: str, *, exclusive: bool = False, ttl: float = 0.3) -> None:
        if failures:
            raise failures.pop()
        claim_once(holder, exclusive=exclusive, ttl=ttl)

    async def run() -> None:
        claim = _runtime._Claim(index, SERVER)
        await claim.take()
        monkeypatch.setattr(index, "claim", flaky)
        await asyncio.sleep(0.35)
        await claim.release()

    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
    assert "cannot renew this server's claim on the index: the database is away" in caplog.text
    assert not failures


def test_a_server_does_not_start_while_a_rebuild_has_the_index() -> None:
    index = MemoryIndex()
    index.claim(REBUILD, exclusive=True)

    async def run() -> None:
        with pytest.raises(Conflict, match="being rebuilt") as refused:
            await _runtime._Claim(index, SERVER).take()
        assert refused.value.code == "index-in-use"

    asyncio.run(run())


def test_servers_in_one_process_hold_claims_of_their_own() -> None:
    """Two servers of one index whose host and process id are the same (two apps in one
    process here; containers on one host's network, each its process 1, in production):
    the one that stops drops its own claim, not the other's."""
    index = MemoryIndex()
    first = service_application(MemoryStore(), index=index)
    second = service_application(MemoryStore(), index=index)

    async def run() -> None:
        async with first.router.lifespan_context(first):
            async with second.router.lifespan_context(second):
                pass
            with pytest.raises(Conflict, match="in use by sealtrail serve "):
                index.claim(REBUILD, exclusive=True)

    asyncio.run(run())


def test_a_renewal_under_way_as_the_server_stops_leaves_no_claim_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The renewal runs in a worker thread, which a cancellation does not stop: the
    release waits for it rather than dropping the claim before the renewal writes it."""
    monkeypatch.setattr(_runtime, "CLAIM_TTL", 0.3)
    index = MemoryIndex()
    claim_now = index.claim
    renewing = threading.Event()

    def slow(holder: str, *, exclusive: bool = False, ttl: float = 0.3) -> None:
        renewing.set()
        time.sleep(0.2)  # a database that is slow to answer
        claim_now(holder, exclusive=exclusive, ttl=ttl)

    async def run() -> None:
        claim = _runtime._Claim(index, SERVER)
        await claim.take()
        monkeypatch.setattr(index, "claim", slow)
        await asyncio.to_thread(renewing.wait)
        await claim.release()
        await asyncio.sleep(0.25)  # the renewal, had it been left running, has now landed
        claim_now(REBUILD, exclusive=True)

    asyncio.run(run())
