"""A private PostgreSQL server for tests that stop and crash it (the shared one must stay up).

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
    if found:
        return Path(found).parent
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


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
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
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
