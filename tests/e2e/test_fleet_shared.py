"""A fleet's whole journey through a load balancer in front of several ``sealtrail serve``
processes on one PostgreSQL database.

The balancer hands each new TCP connection to the next server in turn, so a statement is
often registered on a process other than the one that issued its challenge nonces (sealed
with the shared ``keys/challenge.key``), and on a process that does not hold the sequencer
role. The data directory requires tokens (as ``sealtrail init`` writes it): a user's token
issued through one server must work on the others. Every statement must still be accepted,
every server of the fleet must reach production, and afterwards ``sealtrail audit`` must
find the index exactly what the log gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sealtrail.client import Client
from sealtrail.sim import FleetSpec, generate_fleet, run_journey
from tests._serve_proc import user_token
from tests.conftest import report_figure
from tests.e2e._cluster import Cluster
from tests.e2e.test_failover import _init
from tests.integration.test_cli import sealtrail

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SERVERS = 2
#: Small enough to take a few seconds: 4 servers of 3 devices (a Caliptra-like and a
#: TPM-like RoT on the motherboard, one Cerberus-like on a blade).
SPEC = FleetSpec(racks=2, servers_per_rack=2, rots_per_server=3, seed=11)
#: Bytes read from one side of a connection at a time.
CHUNK = 64 * 1024
#: Seconds the index may take to apply the journey's last entries.
INDEX_WAIT = 10.0


class Balancer:
    """A round-robin TCP load balancer on 127.0.0.1, in a thread with its own event loop.

    Each accepted connection goes to the next backend in turn; bytes are piped both ways
    until either side closes, then both are closed. ``counts[i]``: connections given to
    backend ``i``.
    """

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.counts = [0] * len(backends)
        self.failed = 0  # connections whose backend could not be reached
        self.port = 0
        self._turn = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="balancer")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise self._error
        assert self.port, "the balancer did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the balancer did not stop"
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test's thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                # Cancelled when the balancer stops: end quietly (asyncio logs a cancelled
                # connection callback as an error).
                with contextlib.suppress(asyncio.CancelledError):
                    await self._serve(reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        which = self._turn
        self._turn = (which + 1) % len(self.backends)
        self.counts[which] += 1
        host, port = self.backends[which]
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                self.failed += 1
                return
            try:
                pipes = [
                    asyncio.create_task(_pipe(reader, up_writer)),
                    asyncio.create_task(_pipe(up_reader, writer)),
                ]
                try:
                    await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for pipe in pipes:
                        pipe.cancel()
                    await asyncio.gather(*pipes, return_exceptions=True)
            finally:
                await _close(up_writer)
        finally:
            await _close(writer)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until the source closes (or either side fails)."""
    with contextlib.suppress(ConnectionError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@contextlib.contextmanager
def balancing(cluster: Cluster) -> Iterator[Balancer]:
    backends = []
    for server in cluster.servers:
        parts = urlsplit(server.url)
        assert parts.hostname is not None and parts.port is not None
        backends.append((parts.hostname, parts.port))
    balancer = Balancer(backends)
    balancer.start()
    try:
        yield balancer
    finally:
        balancer.stop()


def _compliance_at_least(url: str, token: str, state: str, size: int) -> dict[str, Any]:
    """The compliance view (read with an auditor's ``token``) once the index has applied
    ``size`` log entries: a query answers from the index, which follows the log (every
    INDEX_POLL seconds)."""
    deadline = time.monotonic() + INDEX_WAIT
    with Client(url, token=token) as client:
        while True:
            doc = client.compliance(state)
            if doc["size"] >= size:
                return doc
            assert time.monotonic() < deadline, f"the index stayed at {doc['size']} < {size}"
            time.sleep(0.05)


def test_a_fleet_reaches_production_through_a_balancer_over_shared_servers(
    tmp_path: Path, postgres_url: str
) -> None:
    token = _init(tmp_path, postgres_url)
    fleet = generate_fleet(SPEC)
    serials = sorted(s.serial for s in fleet.servers)
    cluster = Cluster(tmp_path, "d", SERVERS)
    try:
        assert cluster.holder() is not None, "nobody holds the sequencer role"
        with balancing(cluster) as balancer:
            # Made first: by the end of the journey every server has read the user.
            auditor = user_token(balancer.url, token, "auditor", "auditor")
            report = asyncio.run(run_journey(fleet, balancer.url, admin_token=token))
            entries = 2 + report.entries  # the auditor and its token, then the journey's
            production = _compliance_at_least(balancer.url, auditor, "production", entries)
            counts = list(balancer.counts)
            failed = balancer.failed
        # The index lives in the database beside the log: no rebuild empties it under
        # servers that answer and judge registrations from it, whichever host they run on.
        refused = sealtrail("index", "rebuild", "-d", "d", cwd=tmp_path)
        assert refused.returncode == 1, refused.stdout
        assert "(index-in-use)" in refused.stderr, refused.stderr
        assert "in use by sealtrail serve " in refused.stderr
        cluster.stop()
        assert all(s.proc.returncode == 0 for s in cluster.servers), "a server did not stop cleanly"
    finally:
        cluster.stop()

    # Every statement of every phase was accepted (a refusal raises StepRefused).
    phases = {p.name: p.statements for p in report.phases}
    assert report.organizations == report.users == len(fleet.actors)
    assert report.statements == sum(phases.values()) - phases["organizations"] - phases["users"]
    assert len(report.registered) == report.statements
    for phase in ("arrival", "attestation", "production"):
        assert phases[phase] == SPEC.servers, (phase, phases)
    assert all(r.leaf_index is not None for r in report.registered.values()), (
        "a receipt without its index"
    )
    # The balancer spread the connections over every server.
    assert failed == 0, f"{failed} connections found no backend"
    assert all(n > 0 for n in counts), f"connections per server: {counts}"
    # The index took every server of the fleet to production.
    assert sorted(s["server_serial"] for s in production["servers"]) == serials

    audit = sealtrail("audit", "-d", "d", "--json", cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    doc = json.loads(audit.stdout)
    assert doc["ok"] and not doc["findings"], doc
    assert doc["refused"] == 0, doc  # no statement refused by the rules in log order
    assert doc["entries"] == entries, doc
    # The servers stopped (their claims released, not left to lapse): the rebuild runs.
    rebuilt = sealtrail("index", "rebuild", "-d", "d", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert sealtrail("audit", "-d", "d", cwd=tmp_path).returncode == 0
    report_figure(
        "fleet over shared servers",
        f"{SPEC.servers} servers x {SPEC.rots_per_server} RoTs through a round-robin balancer "
        f"over {SERVERS} processes: {report.statements} statements in {report.seconds:.1f} s; "
        f"connections per process {counts}",
    )
