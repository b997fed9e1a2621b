"""A store or index that cannot be opened fails at once, with one error that says why.

A PostgreSQL index that cannot be reached fails on one connection attempt (not after the
pool's timeout of retries, with the pool's log lines around the error), and ``init`` opens
it before it writes anything. A SQLite store or index in a directory this process may not
write (a read-only mount, a directory without write permission) is refused with
``store-not-writable`` and the reason, not a "retry once it is healthy". A PostgreSQL URL
that holds a password is refused by ``init`` and by every command that loads
``sealtrail.toml``, without showing the password.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from sealtrail.config import check_store_url, load_config
from sealtrail.errors import ConfigError, StorageError
from sealtrail.storage import PostgresIndex, SQLiteIndex, SQLiteStore
from tests.integration.test_cli import assert_clean_error, sealtrail

#: Port 1 on loopback: refused at once, whatever this machine runs.
UNREACHABLE = "postgresql://127.0.0.1:1/x"
#: Seconds an unreachable index may take to fail: the pool's timeout is 10 s.
FAST = 6.0
SECRET = "s3cret-pw"


def _init(cwd: Path, *args: str) -> Path:
    result = sealtrail("init", "-d", "d", "--origin", "open.test/log", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "d"


def _set(data: Path, key: str, value: str) -> None:
    """Set a top-level ``key`` of the data directory's sealtrail.toml."""
    config = data / "sealtrail.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.startswith(f"{key} = "):
            lines[number] = f'{key} = "{value}"'
            break
    else:
        raise AssertionError(f"no {key} in sealtrail.toml")
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _one_error(result: subprocess.CompletedProcess[str], code: str) -> str:
    """A clean failure: the error and its hint, nothing else on stderr."""
    assert_clean_error(result, code)
    assert len(result.stderr.strip().splitlines()) == 2, result.stderr
    return result.stderr


# -- an unreachable PostgreSQL index -------------------------------------------------------


def test_an_unreachable_postgres_index_fails_at_once_without_pool_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="psycopg.pool")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        PostgresIndex(f"postgresql://sealtrail:{SECRET}@127.0.0.1:1/x")
    assert time.monotonic() - started < FAST
    assert "cannot connect" in info.value.message
    assert "Connection refused" in info.value.message
    text = info.value.diagnostics()
    assert SECRET not in text
    assert "127.0.0.1" not in text  # the index's messages never name the host or the user
    assert "sealtrail" not in text.replace("Sealtrail", "")
    assert not [r for r in caplog.records if r.name.startswith("psycopg.pool")]


def test_index_status_on_an_unreachable_postgres_index_is_one_quick_error(
    tmp_path: Path,
) -> None:
    data = _init(tmp_path)
    _set(data, "index", UNREACHABLE)
    started = time.monotonic()
    result = sealtrail("index", "status", "-d", "d", cwd=tmp_path)
    assert time.monotonic() - started < FAST
    stderr = _one_error(result, "storage-error")
    assert "provenance index" in stderr and "Connection refused" in stderr
    assert "PoolTimeout" not in stderr and "error connecting" not in stderr


def test_the_pool_logs_only_where_the_process_set_up_logging() -> None:
    """The pool's warnings reach the handlers a process installed (``serve`` logs them with
    their time and level), and are not printed bare by a command that installed none."""
    code = (
        "import logging, sys\n"
        "import sealtrail.storage.index_postgres\n"
        "logging.getLogger('psycopg.pool').warning('bare pool warning')\n"
        "logging.basicConfig(stream=sys.stdout, format='LOGGED %(name)s %(message)s')\n"
        "logging.getLogger('psycopg.pool').warning('configured pool warning')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr == ""
    assert result.stdout == "LOGGED psycopg.pool configured pool warning\n"


def test_init_refuses_an_unreachable_postgres_index_and_leaves_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    result = sealtrail("init", "-d", "d", "--index", UNREACHABLE, cwd=tmp_path)
    assert time.monotonic() - started < FAST
    stderr = _one_error(result, "storage-error")
    assert "provenance index" in stderr and "Connection refused" in stderr
    assert os.listdir(tmp_path) == []


def test_init_opens_a_reachable_postgres_index(tmp_path: Path, postgres_url: str) -> None:
    """A SQLite store with its index in PostgreSQL: init reaches the index, and the index
    is the one the data directory then uses."""
    data = _init(tmp_path, "--index", postgres_url)
    assert load_config(data).index_url == postgres_url
    with psycopg.connect(postgres_url) as conn:  # init made the index's tables
        found = conn.execute("SELECT schema_version FROM idx_meta").fetchone()
    assert found is not None and found[0] > 0
    result = sealtrail("index", "status", "-d", "d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# -- a SQLite store or index this process may not write ------------------------------------

SQLITE_KINDS: list[tuple[str, Callable[[Path], Any]]] = [
    ("store", SQLiteStore),
    ("index", SQLiteIndex),
]


@pytest.fixture(params=SQLITE_KINDS, ids=[kind for kind, _ in SQLITE_KINDS])
def sqlite_kind(request: pytest.FixtureRequest) -> tuple[str, Callable[[Path], Any]]:
    kind: tuple[str, Callable[[Path], Any]] = request.param
    return kind


def _deny_writes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """What the file system answers a user who may not write ``folder`` (root is never
    refused by permission bits, and tests may run as root): ``os.access`` says no, and
    SQLite cannot open the database (it makes its -shm file beside it, even to read)."""
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    real_connect = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if Path(database).parent == folder:
            error = sqlite3.OperationalError("unable to open database file")
            error.sqlite_errorcode = 14  # SQLITE_CANTOPEN
            raise error
        conn: sqlite3.Connection = real_connect(database, *args, **kwargs)
        return conn

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(sqlite3, "connect", connect)


def test_an_unwritable_directory_is_named_as_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_kind: tuple[str, Callable[[Path], Any]],
) -> None:
    what, open_it = sqlite_kind
    path = tmp_path / f"{what}.db"
    open_it(path).close()
    real_connect = sqlite3.connect
    _deny_writes(monkeypatch, tmp_path)
    with pytest.raises(StorageError) as info:
        open_it(path)
    assert info.value.code == "store-not-writable"
    assert info.value.message.startswith(f"cannot open the {what} {path.name}: ")
    assert "directory is not writable by this user" in info.value.message
    assert "retry" not in info.value.hint
    assert str(tmp_path) not in info.value.diagnostics()  # the file's name only
    # A file that is no database, in that directory: SQLite's own error, not a guess about
    # permissions.
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    path.unlink()
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(StorageError) as info:
        open_it(path)
    assert info.value.code == "storage-error"
    assert "not a database" in info.value.message


def test_a_read_only_file_system_is_named_as_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_kind: tuple[str, Callable[[Path], Any]],
) -> None:
    what, open_it = sqlite_kind
    path = tmp_path / f"{what}.db"
    open_it(path).close()
    _deny_writes(monkeypatch, tmp_path)
    real_statvfs = os.statvfs

    def statvfs(folder: Any) -> Any:
        if Path(folder) == tmp_path:
            return SimpleNamespace(f_flag=os.ST_RDONLY)
        return real_statvfs(folder)

    monkeypatch.setattr(os, "statvfs", statvfs)
    with pytest.raises(StorageError) as info:
        open_it(path)
    assert info.value.code == "store-not-writable"
    assert "read-only file system" in info.value.message


@pytest.fixture
def read_only_data(tmp_path: Path) -> Iterator[Path]:
    """A data directory (store and index made) whose mode is then 0555."""
    if os.geteuid() == 0:
        pytest.skip("runs as root, whom permission bits do not stop (see the simulated tests)")
    data = _init(tmp_path)
    assert sealtrail("index", "status", "-d", "d", cwd=tmp_path).returncode == 0
    data.chmod(0o555)
    yield data
    data.chmod(stat.S_IRWXU)


@pytest.mark.parametrize(
    "command", [("log", "checkpoint"), ("log", "verify"), ("audit",), ("index", "status")]
)
def test_a_read_only_data_directory_says_so(read_only_data: Path, command: tuple[str, ...]) -> None:
    result = sealtrail(*command, "-d", "d", cwd=read_only_data.parent)
    stderr = _one_error(result, "store-not-writable")
    assert "not writable by this user" in stderr


def _unshare() -> str | None:
    """``unshare`` when this process may make a mount namespace of its own (root, with the
    capability), else None."""
    tool = shutil.which("unshare")
    if os.geteuid() != 0 or tool is None:
        return None
    probe = subprocess.run([tool, "-m", "true"], capture_output=True, timeout=30, check=False)
    return tool if probe.returncode == 0 else None


def test_a_read_only_mount_says_so(tmp_path: Path) -> None:
    """The data directory bind-mounted read-only (in a mount namespace of the test's own)."""
    tool = _unshare()
    if tool is None:
        pytest.skip("needs root and unshare -m to make a read-only bind mount")
    data = _init(tmp_path)
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    script = (
        'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && cd "$0" && exec "$@"'
    )
    result = subprocess.run(
        [
            tool,
            "-m",
            "sh",
            "-c",
            script,
            str(tmp_path),
            str(data),
            str(mounted),
            sys.executable,
            "-m",
            "sealtrail",
            "log",
            "checkpoint",
            "-d",
            "mounted",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )
    stderr = _one_error(result, "store-not-writable")
    assert "read-only file system" in stderr
    assert "unable to open database file" not in stderr


# -- a password in a PostgreSQL URL --------------------------------------------------------

PASSWORD_URLS = [
    f"postgresql://sealtrail:{SECRET}@127.0.0.1:1/ledger",
    f"postgres://127.0.0.1:1/ledger?password={SECRET}",
    f"postgresql://127.0.0.1:1/ledger?sslpassword={SECRET}",  # the client key's passphrase
]


@pytest.mark.parametrize("url", PASSWORD_URLS)
def test_a_url_with_a_password_is_refused(url: str) -> None:
    for what in ("store", "index"):
        with pytest.raises(ConfigError) as info:
            check_store_url(url, what=what)
        assert info.value.code == "store-url-invalid"
        assert f"the {what} URL postgresql://127.0.0.1:1/ledger holds a password" in (
            info.value.message
        )
        text = info.value.diagnostics()
        assert SECRET not in text
        assert "~/.pgpass" in text and "passfile" in text and "PGPASSWORD" in text
    # Where the password goes instead is taken.
    assert check_store_url("postgresql://u@db.example/ledger?passfile=/etc/pg.pass") == (
        "postgresql"
    )


@pytest.mark.parametrize("option", ["--store", "--index"])
def test_init_refuses_a_password_in_a_url_and_leaves_nothing(tmp_path: Path, option: str) -> None:
    result = sealtrail("init", "-d", "d", option, PASSWORD_URLS[0], cwd=tmp_path)
    stderr = _one_error(result, "store-url-invalid")
    assert SECRET not in stderr and "holds a password" in stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("key", ["store", "index"])
def test_a_password_in_sealtrail_toml_is_refused_at_load(tmp_path: Path, key: str) -> None:
    data = _init(tmp_path)
    _set(data, key, PASSWORD_URLS[0])
    with pytest.raises(ConfigError) as info:
        load_config(data)
    assert info.value.code == "store-url-invalid"
    assert info.value.message.startswith(f"sealtrail.toml: the {key} URL ")
    assert SECRET not in info.value.diagnostics()
    result = sealtrail("log", "checkpoint", "-d", "d", cwd=tmp_path)
    stderr = _one_error(result, "store-url-invalid")
    assert SECRET not in stderr
