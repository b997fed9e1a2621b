"""A writing service: the sequencer and the transparency service run inside the app.

:func:`service_app` wires one store into a FastAPI app whose lifespan starts the
:class:`~sealtrail.log.Sequencer` and the :class:`~sealtrail.scitt.TransparencyService`
(registry rebuild and recovery of stored-but-unsequenced statements) before the first
request, and stops them (sequencing everything accepted) after the last one.
``sealtrail serve``, the tests and the benchmarks all build their server here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sealtrail.errors import Conflict, Error
from sealtrail.keys import Signer, Verifier
from sealtrail.log import (
    CheckpointSigner,
    Sequencer,
    SequencerConfig,
    SharedSequencer,
    SignedCheckpoint,
    cancel_and_wait,
)
from sealtrail.provenance import (
    ProvenanceLedger,
    ProvenancePolicy,
    check_index_of_log,
    service_signed,
)
from sealtrail.scitt import (
    MAX_STATEMENT_SIZE,
    ChainValidator,
    PayloadRule,
    StatementBacklog,
    StatementRows,
    TransparencyService,
    adopt_row_key,
)
from sealtrail.storage import (
    CLAIM_TTL,
    IndexStore,
    LogStore,
    SequencerRoles,
    StatementStore,
    claim_holder,
    open_index,
)

from ._head import head_limited_protocol
from ._passport import add_passport_routes
from ._peer import client_certificate_protocol
from .app import RateLimits, create_app

__all__ = [
    "SEEN_PERIOD",
    "STOP_SIGNALS",
    "ServiceStore",
    "http_protocol",
    "run_server",
    "server_config",
    "service_app",
    "settle_heap",
]

log = logging.getLogger(__name__)


class ServiceStore(LogStore, StatementStore, Protocol):
    """A store holding both the log and the registered statements."""


def _statement_rows(store: ServiceStore, challenge_key: bytes | None) -> StatementRows | None:
    """The rows' tags under ``challenge_key``, once the store is known to tag its rows
    under it (:func:`~sealtrail.scitt.adopt_row_key`)."""
    if challenge_key is None:
        return None
    rows = StatementRows(challenge_key)
    adopt_row_key(store, rows)
    return rows


def service_app(
    store: ServiceStore,
    *,
    checkpoint_signer: CheckpointSigner,
    service_signer: Signer,
    issuer: str,
    retired: Sequence[Verifier] = (),
    admin_token_hash: bytes | None = None,
    sequencer_config: SequencerConfig | None = None,
    validator: ChainValidator | None = None,
    payload_rules: Mapping[str, PayloadRule] | None = None,
    index: IndexStore | None = None,
    max_statement_size: int = MAX_STATEMENT_SIZE,
    provenance_policy: ProvenancePolicy | None = None,
    challenge_key: bytes | None = None,
    limits: RateLimits | None = None,
    auth_required: bool = False,
    on_checkpoint: Callable[[SignedCheckpoint], None] | None = None,
) -> FastAPI:
    """The full service over ``store``: read API, SCRAPI registration, administration.

    ``on_checkpoint`` is handed the newest checkpoint the app has seen, in a worker
    thread: once it has started, every :data:`SEEN_PERIOD` seconds when the log grew, and
    once more when it stops (``sealtrail serve`` keeps it in the data directory).

    The provenance ledger keeps ``index`` (in memory when not given) up with the log, and
    its rules are the registration's payload rules unless ``payload_rules`` replaces them.

    Over a store several processes share (:class:`~sealtrail.storage.SequencerRoles`:
    PostgreSQL), run any number of such apps: they take turns holding the sequencer role
    (:class:`~sealtrail.log.SharedSequencer`). Over any other store the app owns the
    sequencer: run one app per store.

    With ``challenge_key`` (the deployment's ``keys/challenge.key``, the same on every
    server), every statement row is stored with an authentication tag under a key derived
    from it, and no row whose tag does not verify is appended to the log, by the feeder
    or by recovery (:class:`~sealtrail.scitt.StatementRows`). Without it, rows are neither
    tagged nor checked: ``sealtrail serve`` always gives it. The store records which key
    its rows are tagged under, and an app given another is refused
    (``challenge-key-mismatch``).
    """
    rows = _statement_rows(store, challenge_key)
    sequencer: Sequencer | SharedSequencer
    if isinstance(store, SequencerRoles):
        sequencer = SharedSequencer(
            store,
            signer=checkpoint_signer,
            backlog=store,
            holder=f"{socket.gethostname()}/{os.getpid()}",
            config=sequencer_config,
        )
        if rows is not None:
            # The feeder appends only the rows a server of this deployment stored; it
            # asks the sequencer's own reader whether a refused one is in the log already.
            sequencer.backlog = StatementBacklog(store, rows, sequencer.reader)
    else:
        sequencer = Sequencer(store, signer=checkpoint_signer, config=sequencer_config)
    ledger = ProvenanceLedger(
        index if index is not None else open_index("memory:"),
        statement=store.get_statement,
        org_of=lambda issuer: service.org_name(issuer),  # noqa: PLW0108 (built below)
        policy=(provenance_policy or ProvenancePolicy()).initial(),
        shared=isinstance(sequencer, SharedSequencer),
        content_types=store.content_types,
        challenge_key=challenge_key,
    )
    service = TransparencyService(
        store=store,
        sequencer=sequencer,
        signer=service_signer,
        issuer=issuer,
        retired=retired,
        validator=validator,
        payload_rules=ledger.rules() if payload_rules is None else payload_rules,
        max_statement_size=max_statement_size,
        statement_rows=rows,
    )

    service.history = ledger
    ledger.service_record = service_signed(issuer, service.keys)
    service.withdraw = ledger.withdraw

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Not while `sealtrail index rebuild` has the index, and none from now on.
        stopping = _Stopping()
        app.state.stopping = stopping
        claim = _Claim(ledger.index, claim_holder("sealtrail serve"), on_lost=stopping.stop)
        await claim.take()
        try:
            # Before anything writes (the service re-appends and records keys as it
            # starts): a rolled-back store would otherwise be signed over at sizes clients
            # have seen.
            await asyncio.to_thread(check_index_of_log, ledger.index, sequencer.reader)
            await sequencer.start()
            seen = _Seen(on_checkpoint, sequencer.reader)
            try:
                await service.start()
                await ledger.start(sequencer.reader)
                policy = _PolicyRecorder(ledger, service, provenance_policy)
                await policy.start()
                seen.start()
                try:
                    yield
                finally:
                    await policy.close()
                    await seen.close()
                    await service.close()
                    await ledger.close(sequencer.reader)
            finally:
                await sequencer.close()
                await seen.tell()
        finally:
            await claim.release()

    app = create_app(
        sequencer.reader,
        verifier_key=checkpoint_signer.verifier_key(),
        service=service,
        admin_token_hash=admin_token_hash,
        ledger=ledger,
        lifespan=lifespan,
        limits=limits,
        auth_required=auth_required,
    )
    add_passport_routes(app, ledger=ledger, service=service)
    app.state.sequencer = sequencer
    app.state.transparency_service = service
    app.state.ledger = ledger
    return app


class _PolicyRecorder:
    """Records the configured provenance policy as the service starts, when the log's
    differs (:meth:`ProvenanceLedger.record_policy`): at once over a store of its own,
    in the background over a shared one (the sequencer role may have no holder yet). A
    failure is logged; the next start records it."""

    def __init__(
        self,
        ledger: ProvenanceLedger,
        service: TransparencyService,
        desired: ProvenancePolicy | None,
    ) -> None:
        self._ledger = ledger
        self._service = service
        self._desired = desired or ProvenancePolicy()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._service.shared:
            self._task = asyncio.create_task(self._record(), name="sealtrail-policy")
        else:
            await self._record()

    async def _record(self) -> None:
        try:
            await self._ledger.record_policy(self._desired, self._service)
        except Error as exc:
            log.warning("provenance policy not recorded: %s (%s)", exc, exc.code)

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


#: Allocations between the garbage collector's youngest collections in a server (Python's
#: default: 700). A registration allocates many short-lived containers; with 2 API processes
#: at 64 connections, 20,000 registrations cost each process ~650 young collections and
#: ~400-600 ms of collecting at 700, ~15 and ~60 ms at 10,000.
SERVER_GC_THRESHOLD = 10_000


def settle_heap() -> None:
    """For a server process about to serve: move everything imported and built so far out
    of the garbage collector's way (``gc.freeze``), and collect young objects less often
    (:data:`SERVER_GC_THRESHOLD`). What exists now lives as long as the process, yet every
    full collection walked all of it: ~50 ms each with the event loop stopped (~100,000
    objects), ~17 ms once they are frozen, measured under load. Call once, just before
    serving."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(SERVER_GC_THRESHOLD, middle, old)


#: The signals that stop a server gracefully: the requests in flight are answered, then the
#: app's lifespan ends (its sequencer commits what it accepted).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGINT or SIGTERM without the signal being raised
    again afterwards: the process then ends normally (status 0, exit handlers run). Once
    it listens it calls ``ready`` with the address and port bound."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[str, int], None] | None) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.ready is not None and self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.ready(str(host), int(port))

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


#: Seconds between two hand-overs of the newest checkpoint to ``on_checkpoint``.
SEEN_PERIOD = 5.0


class _Seeing(Protocol):
    """What :class:`_Seen` watches: a :class:`LogReader`'s newest checkpoint."""

    @property
    def latest(self) -> SignedCheckpoint | None: ...


class _Seen:
    """Hands the newest checkpoint a reader has seen to a callback: every
    :data:`SEEN_PERIOD` seconds when it is newer than the last one handed over."""

    def __init__(
        self, callback: Callable[[SignedCheckpoint], None] | None, reader: _Seeing
    ) -> None:
        self._callback = callback
        self._reader = reader
        self._told = -1
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._callback is not None:
            self._task = asyncio.create_task(self._run(), name="sealtrail-seen-checkpoint")

    async def _run(self) -> None:
        while True:
            await self.tell()
            await asyncio.sleep(SEEN_PERIOD)

    async def tell(self) -> None:
        latest = self._reader.latest
        if self._callback is None or latest is None or latest.size <= self._told:
            return
        try:
            await asyncio.to_thread(self._callback, latest)
        except Error as exc:  # a full disk, say: the log goes on; the next turn tries again
            log.warning("cannot keep the newest checkpoint: %s (%s)", exc, exc.code)
            return
        self._told = latest.size

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


class _Stopping:
    """Why the app must stop serving, once it must (see :func:`run_server`)."""

    def __init__(self) -> None:
        self.reason: Error | None = None
        self.event = asyncio.Event()

    def stop(self, reason: Error) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


class _Claim:
    """A server's shared claim on its provenance index (:meth:`IndexStore.claim`), renewed
    every third of :data:`~sealtrail.storage.CLAIM_TTL` until released.

    A renewal refused because a rebuild holds the index (the server's own claim lapsed
    first: the process was paused, or the database away, for longer than the claim lasts)
    calls ``on_lost``: the index it answers and judges registrations from is being emptied
    and built again under it, so the server must stop rather than go on.
    """

    def __init__(
        self, index: IndexStore, holder: str, *, on_lost: Callable[[Error], None] | None = None
    ) -> None:
        self._index = index
        self._holder = holder
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def take(self) -> None:
        """Claim the index (:class:`Conflict` ``index-in-use`` while a rebuild has it).

        A start cancelled meanwhile (Ctrl-C) leaves no claim behind: the claim, which its
        worker thread writes whatever happens to the caller, is released once written.
        """
        taking = asyncio.ensure_future(
            asyncio.to_thread(self._index.claim, self._holder, ttl=CLAIM_TTL)
        )
        try:
            await asyncio.shield(taking)
        except asyncio.CancelledError:
            await asyncio.wait([taking])
            if not taking.cancelled() and taking.exception() is None:
                await self._drop()
            raise
        self._task = asyncio.create_task(self._renew(), name="sealtrail-index-claim")

    async def _renew(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CLAIM_TTL / 3)
            if self._stop.is_set():
                return
            try:
                await asyncio.to_thread(self._index.claim, self._holder, ttl=CLAIM_TTL)
            except Error as exc:
                if isinstance(exc, Conflict) and exc.code == "index-in-use":
                    log.error("this server lost its claim on the index: %s; it stops", exc)
                    if self._on_lost is not None:
                        self._on_lost(exc)
                    return
                # The database is away, say: the next turn tries again.
                log.warning("cannot renew this server's claim on the index: %s", exc)

    async def release(self) -> None:
        # Not cancelled: a renewal under way runs on in its worker thread whatever
        # happens to the task, and would write the claim again after the release.
        self._stop.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            self._task = None
            await self._drop()

    async def _drop(self) -> None:
        try:
            await asyncio.to_thread(self._index.release, self._holder)
        except Error as exc:  # it lapses by itself
            log.warning("cannot release this server's claim on the index: %s", exc)


async def _stop_on(stopping: _Stopping, server: uvicorn.Server) -> None:
    await stopping.event.wait()
    server.should_exit = True


def http_protocol(*, client_certificates: bool = False) -> type[asyncio.Protocol]:
    """The HTTP protocol every server of ours speaks: uvicorn's httptools parser, with the
    request head bounded (:data:`~sealtrail.service._head.MAX_REQUEST_HEAD`) and, with
    ``client_certificates``, a verified TLS client certificate handed to the app."""
    protocol = head_limited_protocol(HttpToolsProtocol)
    if client_certificates:
        protocol = client_certificate_protocol(protocol)
    return protocol


def server_config(
    app: ASGIApp,
    *,
    client_certificates: bool = False,
    **options: Any,  # noqa: ANN401 (uvicorn's options)
) -> uvicorn.Config:
    """uvicorn's settings for ``app`` (``options`` are :class:`uvicorn.Config`'s), with what
    no caller may change: the protocol of :func:`http_protocol`, and forwarding headers
    (``X-Forwarded-For``, ``X-Forwarded-Proto``) ignored, whoever the peer is. uvicorn
    trusts them by default from 127.0.0.1: a client on the same host (or a proxy there
    passing the header through) would name any address it likes, and have a new rate
    budget (docs/limits.md) with each."""
    return uvicorn.Config(
        app,
        http=http_protocol(client_certificates=client_certificates),
        proxy_headers=False,
        **options,
    )


def run_server(
    app: FastAPI,
    *,
    ready: Callable[[str, int], None] | None = None,
    client_certificates: bool = False,
    **options: Any,  # noqa: ANN401 (uvicorn's options)
) -> None:
    """Serve ``app`` with uvicorn (``options`` are :class:`uvicorn.Config`'s) until one of
    :data:`STOP_SIGNALS`; call from the main thread.

    The app's lifespan runs around uvicorn rather than inside it, so that an error at start
    (stored records signed by a receipt key this process does not have, say) reaches the
    caller as the error it is, before the port is bound, where uvicorn would log it as a
    traceback. A stop signal ends the process normally rather than by the signal: exit
    handlers run, so worker processes are shut down and nothing is reported leaked.
    ``ready`` is called with the address and port bound (port 0 asks for a free one) once
    the server listens. uvicorn runs as :func:`server_config` sets it (a bounded request
    head, no forwarding headers trusted); with ``client_certificates`` (mutual TLS), a
    verified client certificate reaches the app. An app that must stop (a server whose
    claim on its index was lost to a rebuild) stops serving as a stop signal would, and its
    reason is then raised.
    """
    config = server_config(app, client_certificates=client_certificates, lifespan="off", **options)
    server = _Server(config, ready)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            stopping: _Stopping | None = getattr(app.state, "stopping", None)
            watch = None if stopping is None else asyncio.create_task(_stop_on(stopping, server))
            try:
                await server.serve()
            finally:
                await cancel_and_wait(watch)
        if stopping is not None and stopping.reason is not None:
            raise stopping.reason

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(main())
