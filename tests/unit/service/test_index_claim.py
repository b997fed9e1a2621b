"""A server's claim on its provenance index: renewed while it runs, released as it stops;
a store that is away for a while costs a warning, and a claim lost to a rebuild stops the
server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI

from sealtrail.errors import Conflict, StorageError
from sealtrail.service import _runtime
from sealtrail.storage import MemoryIndex, MemoryStore
from tests.integration.conftest import service_application

SERVER = "sealtrail serve host/1"
REBUILD = "sealtrail index rebuild host/2"


def _slow_claims(index: MemoryIndex) -> tuple[Callable[..., None], threading.Event]:
    """``index.claim`` as a database slow to answer (0.2 s), and an event set as a claim
    starts: to patch in for the claims a test races."""
    claim_now = index.claim
    started = threading.Event()

    def slow(holder: str, *, exclusive: bool = False, ttl: float = 15.0) -> None:
        started.set()
        time.sleep(0.2)
        claim_now(holder, exclusive=exclusive, ttl=ttl)

    return slow, started


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
    slow, renewing = _slow_claims(index)

    async def run() -> None:
        claim = _runtime._Claim(index, SERVER)
        await claim.take()
        monkeypatch.setattr(index, "claim", slow)
        await asyncio.to_thread(renewing.wait)
        await claim.release()
        await asyncio.sleep(0.25)  # the renewal, had it been left running, has now landed
        claim_now(REBUILD, exclusive=True)

    asyncio.run(run())


def test_a_claim_lost_to_a_rebuild_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's claim lapsed while it could not renew it (paused, or its database
    away), and a rebuild took the index: the server must not go on answering and judging
    registrations from an index being emptied and built again."""
    monkeypatch.setattr(_runtime, "CLAIM_TTL", 0.3)
    index = MemoryIndex()
    claim_now = index.claim
    away = threading.Event()
    away.set()

    def unreachable(holder: str, *, exclusive: bool = False, ttl: float = 0.3) -> None:
        if away.is_set():
            raise StorageError("the database is away")
        claim_now(holder, exclusive=exclusive, ttl=ttl)

    async def run() -> list[Exception]:
        lost: list[Exception] = []
        claim = _runtime._Claim(index, SERVER, on_lost=lost.append)
        await claim.take()
        monkeypatch.setattr(index, "claim", unreachable)
        await asyncio.sleep(0.45)  # the claim lapsed
        claim_now(REBUILD, exclusive=True, ttl=5)
        away.clear()
        await asyncio.sleep(0.25)  # the next renewal is refused
        await claim.release()
        return lost

    with caplog.at_level(logging.WARNING):
        lost = asyncio.run(run())
    assert len(lost) == 1 and isinstance(lost[0], Conflict)
    assert lost[0].code == "index-in-use"
    assert "this server lost its claim on the index: the index is being rebuilt" in caplog.text
    with pytest.raises(Conflict, match="being rebuilt"):  # the rebuild keeps the index
        claim_now("sealtrail serve host/3")


def test_an_app_that_must_stop_stops_serving_and_says_why() -> None:
    """run_server stops as for a stop signal and raises the app's reason: `sealtrail
    serve` prints it as its one-line error and exits 1."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stopping = _runtime._Stopping()
        app.state.stopping = stopping
        reason = Conflict("the index is being rebuilt by x", code="index-in-use")
        asyncio.get_running_loop().call_later(0.3, stopping.stop, reason)
        yield

    app = FastAPI(lifespan=lifespan)
    started = time.monotonic()
    with pytest.raises(Conflict, match="being rebuilt by x"):
        _runtime.run_server(app, host="127.0.0.1", port=0, log_level="warning")
    assert time.monotonic() - started < 10


def test_a_served_app_whose_claim_is_lost_stops_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path: the service's lifespan claims its index, the claim lapses while the
    index cannot be reached, a rebuild takes it, and run_server stops and says why."""
    monkeypatch.setattr(_runtime, "CLAIM_TTL", 0.3)
    index = MemoryIndex()
    claim_now = index.claim
    app = service_application(MemoryStore(), index=index)

    def unreachable(holder: str, *, exclusive: bool = False, ttl: float = 0.3) -> None:
        raise StorageError("the database is away")

    def rebuild_meanwhile() -> None:
        time.sleep(0.5)  # the server has claimed the index and serves
        monkeypatch.setattr(index, "claim", unreachable)
        time.sleep(0.45)  # its claim lapsed
        claim_now(REBUILD, exclusive=True, ttl=15)  # a claim lasts 15 s at most
        monkeypatch.setattr(index, "claim", claim_now)

    rebuilder = threading.Thread(target=rebuild_meanwhile)
    rebuilder.start()
    started = time.monotonic()
    try:
        with pytest.raises(Conflict, match="being rebuilt") as stopped:
            _runtime.run_server(app, host="127.0.0.1", port=0, log_level="warning")
    finally:
        rebuilder.join()
    assert stopped.value.code == "index-in-use"
    assert time.monotonic() - started < 10


def test_a_start_cancelled_while_it_claims_leaves_no_claim_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C as a server starts cancels its claim while the worker thread writes it: the
    claim is released once written, rather than left standing until it lapses."""
    index = MemoryIndex()
    claim_now = index.claim
    slow, claiming = _slow_claims(index)
    monkeypatch.setattr(index, "claim", slow)

    async def run() -> None:
        start = asyncio.create_task(_runtime._Claim(index, SERVER).take())
        await asyncio.to_thread(claiming.wait)
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        await asyncio.sleep(0.25)  # the claim, had it been left to its thread, has landed
        claim_now(REBUILD, exclusive=True)  # nothing stands in the rebuild's way

    asyncio.run(run())
