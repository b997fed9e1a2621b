"""Several ``sealtrail serve`` processes on one PostgreSQL schema, a load generator, and the
checks that run after the dust settles (tests/e2e/test_failover.py)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from sealtrail.config import load_config
from sealtrail.log import LogReader, verify_checkpoint
from sealtrail.note import NoteVerifier
from sealtrail.scitt import key_id, verify_receipt
from sealtrail.storage import PostgresStore
from sealtrail.storage.postgres import _ROLE_LOCK_CLASS
from tests._serve_proc import COSE, free_port, statement_for
from tests.unit.scitt._pki import Issuer

#: Seconds a server gets to start, and a request to answer.
START_WAIT = 30.0
REQUEST_TIMEOUT = 10.0


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    #: Stopped with SIGSTOP (:meth:`Cluster.pause`): running, but not answering.
    paused: bool = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Cluster:
    """``count`` servers over the data directory ``data`` (its store: a PostgreSQL URL)."""

    def __init__(self, root: Path, data: str, count: int, env: dict[str, str] | None = None):
        self.root = root
        self.data = data
        self.env = {**os.environ, **(env or {})}
        self.servers: list[Server] = []
        self.config = load_config(root / data)
        for _ in range(count):
            self.start_one()

    def start_one(self) -> Server:
        port = free_port()
        log = self.root / f"serve-{len(self.servers)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sealtrail", "serve", "-d", self.data, "--port", str(port)],
                cwd=self.root,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        server = Server(f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + START_WAIT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {log.read_text()}")
            try:
                httpx.get(server.url + "/log/v1/info", timeout=1.0)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        self.servers.append(server)
        return server

    def live(self) -> list[Server]:
        """The servers running and not paused: those that answer."""
        return [s for s in self.servers if s.alive and not s.paused]

    def holder(self) -> Server | None:
        """The server holding the sequencer role, paused or not: the session that holds the
        role's advisory lock (a bidder's session has the same name) names its pid."""
        with psycopg.connect(self.config.store_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT a.application_name FROM pg_locks AS l"
                " JOIN pg_stat_activity AS a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s"
                " AND l.objsubid = 2 AND a.application_name LIKE 'sealtrail-sequencer %%'",
                (_ROLE_LOCK_CLASS,),
            ).fetchall()
        pids = {str(name).rsplit("/", 1)[-1] for (name,) in rows}
        for server in self.servers:
            if server.alive and str(server.proc.pid) in pids:
                return server
        return None

    def pause(self, server: Server) -> None:
        """Stop ``server`` with SIGSTOP (as a paused VM or container is): its sessions stay
        open, its kernel still answers TCP. The load leaves it alone meanwhile."""
        server.paused = True
        server.proc.send_signal(signal.SIGSTOP)

    def resume(self, server: Server) -> None:
        server.proc.send_signal(signal.SIGCONT)
        server.paused = False

    def stop(self) -> None:
        for server in self.servers:
            if server.alive and server.paused:
                self.resume(server)
        for server in self.servers:
            if server.alive:
                server.proc.send_signal(signal.SIGINT)
        for server in self.servers:
            try:
                server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()

    def reader(self) -> tuple[PostgresStore, LogReader]:
        store = PostgresStore(self.config.store_url)
        verifier = NoteVerifier.parse(self.config.verifier_key())
        return store, LogReader(store, origin=self.config.origin, verifiers=[verifier])


@dataclass
class Load:
    """Clients submitting distinct statements to the servers round-robin; a request that
    fails (connection refused, reset, 5xx) is retried, on the next server, until acknowledged.
    """

    cluster: Cluster
    issuer: Issuer
    clients: int = 8
    #: entry id (hex) -> the receipt a 201 carried, from whichever server answered (None:
    #: acknowledged with 303, pending).
    acked: dict[str, bytes | None] = field(default_factory=dict)
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    checkpoints: list[bytes] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def _statement(self) -> bytes:
        with self._lock:
            n = self._next
            self._next += 1
        return statement_for(self.issuer, n)

    def _client(self, k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
            while not self.stop.is_set():
                statement = self._statement()
                while not self.stop.is_set():
                    live = self.cluster.live()
                    if not live:
                        time.sleep(0.05)
                        continue
                    server = rng.choice(live)
                    try:
                        r = http.post(server.url + "/entries", content=statement, headers=COSE)
                    except httpx.HTTPError as exc:
                        self._count(type(exc).__name__)
                        continue
                    if r.status_code in (201, 303):
                        entry = hashlib.sha256(statement).hexdigest()
                        with self._lock:
                            self.acked[entry] = r.content if r.status_code == 201 else None
                        break
                    # Counted, for the test to judge: only 5xx (and 429) are retryable.
                    self._count(f"http {r.status_code}")
                    time.sleep(0.02)

    def _count(self, what: str) -> None:
        with self._lock:
            self.retries += 1
            self.errors[what] = self.errors.get(what, 0) + 1

    def _watch(self) -> None:
        """Record every checkpoint the servers publish (for the consistency checks)."""
        with httpx.Client(timeout=2.0) as http:
            while not self.stop.is_set():
                for server in self.cluster.live():
                    with contextlib.suppress(httpx.HTTPError):
                        r = http.get(server.url + "/checkpoint")
                        if r.status_code == 200 and (
                            not self.checkpoints or r.content != self.checkpoints[-1]
                        ):
                            self.checkpoints.append(r.content)
                time.sleep(0.02)

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        threads = [threading.Thread(target=self._client, args=(k,)) for k in range(self.clients)]
        threads.append(threading.Thread(target=self._watch))
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=60)

    def sizes(self) -> list[int]:
        return [self.size_of(note) for note in self.checkpoints]

    def size_of(self, note: bytes) -> int:
        return int(note.split(b"\n")[1])


def verify_history(cluster: Cluster, load: Load) -> dict[str, float]:
    """The checks of the fail-over and restart tests; returns a few figures."""
    store, reader = cluster.reader()
    try:
        latest = reader.audit()  # every tile and bundle rehashed from entry 0
        assert latest is not None
        entries = reader.entries(0, latest.size)
        where: dict[str, int] = {}
        for index, entry in enumerate(entries):
            key = entry.hex()
            assert key not in where, f"entry {key} at {where[key]} and {index}"
            where[key] = index
        # Every acknowledged entry is in the log; every receipt given out, by the
        # sequencer's process or another (built from tiles it read ahead), verifies offline,
        # at the entry's index and against this log's root at its size.
        service = cluster.config.service_signer().verifier()
        keys = {key_id(service): service}
        receipts = 0
        for acked, receipt in load.acked.items():
            assert acked in where, f"acknowledged entry {acked} is not in the log"
            if receipt is not None:
                info = verify_receipt(receipt, leaf_entry=bytes.fromhex(acked), keys=keys)
                assert info.leaf_index == where[acked], "a receipt's index disagrees with the log"
                assert reader.root(info.tree_size) == info.root, "a receipt's root is not the log's"
                receipts += 1
        # Every checkpoint any server published is consistent with the final tree.
        verifier = NoteVerifier.parse(cluster.config.verifier_key())
        seen = [
            verify_checkpoint(note, origin=cluster.config.origin, verifiers=[verifier])
            for note in load.checkpoints
        ]
        assert [c.size for c in seen] == sorted(c.size for c in seen), "a checkpoint went back"
        for older, newer in itertools.pairwise(seen):
            if 0 < older.size < newer.size:
                reader.consistency_proof(older.size, newer.size).verify(older.root, newer.root)
        for checkpoint in seen:
            if checkpoint.size:
                assert reader.root(checkpoint.size) == checkpoint.root
        statements = store.entries_since(0, limit=10**9)
        assert len(statements) == latest.size, "every stored statement is in the log, once"
        return {
            "entries": float(latest.size),
            "checkpoints": float(len(seen)),
            "receipts": float(receipts),
        }
    finally:
        store.close()
