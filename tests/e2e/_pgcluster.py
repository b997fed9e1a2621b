"""Private PostgreSQL servers for tests that stop, crash or replace them (the shared one must
stay up): a primary, and a streaming standby of it.

``initdb`` into a fresh directory, listening on a free loopback port only; when the tests run
as root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root). Skips
with the reason when the server binaries or that user are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests._serve_proc import free_port


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:  # where it really is: a link on the PATH may have no siblings
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


class PrivatePostgres:
    def __init__(self, bindir: Path, directory: Path, port: int, user: str | None) -> None:
        self.bindir = bindir
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.user = user
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=check, cwd=self.directory
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=on -c synchronous_commit=on"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "the private PostgreSQL did not come up"
                time.sleep(0.1)

    def crash(self) -> None:
        """Stop at once, without a checkpoint: what a power cut or an OOM kill does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def copy_to_standby(self, standby: PrivatePostgres, name: str) -> None:
        """Make ``standby`` (not yet started) a streaming replica of this server that
        connects as ``name``: a base backup with WAL, and the replication settings."""
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-D", str(standby.data), "-R", "-X", "stream",
        )  # fmt: skip
        with (standby.data / "postgresql.auto.conf").open("a") as conf:  # the last one wins
            conf.write(
                f"primary_conninfo = 'host=127.0.0.1 port={self.port} user=postgres "
                f"application_name={name}'\n"
            )

    def replicate_synchronously(self, name: str) -> None:
        """Commits wait until the standby ``name`` has flushed them; returns once it does."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 30
            while (
                conn.execute(
                    "SELECT 1 FROM pg_stat_replication WHERE application_name = %s"
                    " AND sync_state = 'sync' AND state = 'streaming'",
                    (name,),
                ).fetchone()
                is None
            ):
                assert time.monotonic() < deadline, f"{name} did not become a synchronous standby"
                time.sleep(0.1)

    def stop_receiving(self) -> None:
        """A standby that no longer receives the primary's WAL (a network partition, a
        replica falling behind): it keeps what it has, and answers as of then."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 30
            while conn.execute("SELECT 1 FROM pg_stat_wal_receiver").fetchone() is not None:
                assert time.monotonic() < deadline, "the standby kept receiving"
                time.sleep(0.1)

    def promote(self) -> None:
        """A standby becomes a primary (what a fail-over does)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    with _private() as server:
        server.init()
        server.start()
        yield server


@contextmanager
def private_standby(primary: PrivatePostgres, name: str) -> Iterator[PrivatePostgres]:
    """A hot standby of ``primary``, streaming from it as ``name`` (asynchronously until
    :meth:`PrivatePostgres.replicate_synchronously`)."""
    with _private() as standby:
        primary.copy_to_standby(standby, name)
        standby.start()
        yield standby


@contextmanager
def _private() -> Iterator[PrivatePostgres]:
    """A server's directory on a free port, stopped and removed afterwards."""
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL restart test skipped: no PostgreSQL server binaries (initdb)")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL restart test skipped: running as root without a postgres user")
        if shutil.which("runuser") is None:
            pytest.skip("PostgreSQL restart test skipped: running as root without runuser")
        user = "postgres"
    directory = Path(tempfile.mkdtemp(prefix="sealtrail-pg-"))
    if user is not None:
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    server = PrivatePostgres(bindir, directory, free_port(), user)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
