"""A data directory's keys sign one log: its store is bound to it from ``sealtrail init`` on.

``init`` checks the store URL with the parser ``serve`` uses, refuses a store that holds a
log, leaves nothing behind when it refuses, and starts the log (a signed checkpoint of size
0). ``serve`` refuses, before binding its port, a store that holds no log (a rogue empty
database, a mistyped ``--store``) or another directory's log. A data directory made before
``init`` started its log starts it once with ``serve --new-log``.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealtrail import config as config_module
from sealtrail.config import init_data_dir, load_config
from sealtrail.errors import ConfigError
from sealtrail.log import LogReader
from sealtrail.merkle import EMPTY_ROOT
from sealtrail.note import NoteVerifier
from sealtrail.storage import PostgresStore, SQLiteStore
from tests._serve_proc import (
    allow_anonymous,
    init_data,
    onboard,
    register,
    served,
    statement_for,
)
from tests.integration.test_cli import assert_clean_error, sealtrail
from tests.unit.scitt._pki import make_issuer

ORIGIN = "binding.test/log"


def _init(cwd: Path, name: str, *args: str, origin: str = ORIGIN) -> None:
    result = sealtrail("init", "-d", name, "--origin", origin, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr


def _serve_refused(cwd: Path, name: str, *args: str) -> str:
    """``sealtrail serve`` that must stop before binding its port: its stderr."""
    result = sealtrail("serve", "-d", name, "--port", "0", *args, cwd=cwd)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Serving" not in result.stderr
    return result.stderr


def _size_and_root(store: SQLiteStore | PostgresStore, data_dir: Path) -> tuple[int, bytes]:
    config = load_config(data_dir)
    reader = LogReader(
        store, origin=config.origin, verifiers=[NoteVerifier.parse(config.verifier_key())]
    )
    latest = reader.checkpoint()
    assert latest is not None, "init starts the log: a signed checkpoint of size 0"
    return latest.size, latest.root


def test_init_starts_the_log_with_a_signed_checkpoint_of_size_0(tmp_path: Path) -> None:
    _init(tmp_path, "d")
    store = SQLiteStore(tmp_path / "d" / "log.db")
    try:
        assert _size_and_root(store, tmp_path / "d") == (0, EMPTY_ROOT)
    finally:
        store.close()
    with served(tmp_path) as url:  # the server takes the log on from its genesis
        assert httpx.get(url + "/log/v1/info").json()["size"] == 0
        assert httpx.get(url + "/checkpoint").text.startswith(f"{ORIGIN}\n0\n")


def test_serve_refuses_an_empty_sqlite_store(tmp_path: Path) -> None:
    """``--store`` naming a file that does not exist, or an empty database: no second log
    signed with the directory's keys, and no file made."""
    _init(tmp_path, "d")
    rogue = tmp_path / "rogue.db"
    stderr = _serve_refused(tmp_path, "d", "--store", f"sqlite:///{rogue}")
    assert "(store-log-missing)" in stderr
    assert f"the store at {rogue} holds no log" in stderr
    assert f"origin {ORIGIN}" in stderr
    assert not rogue.exists()
    SQLiteStore(rogue).close()  # an empty database, tables and all
    stderr = _serve_refused(tmp_path, "d", "--store", f"sqlite:///{rogue}")
    assert "(store-log-missing)" in stderr
    store = SQLiteStore(rogue)
    try:
        assert store.read_checkpoint() is None
    finally:
        store.close()
    # The config's store, moved away: refused the same way.
    (tmp_path / "d" / "log.db").rename(tmp_path / "moved.db")
    assert "(store-log-missing)" in _serve_refused(tmp_path, "d")


def test_serve_refuses_a_libpq_key_value_string(tmp_path: Path) -> None:
    """libpq's ``key=value`` form is not taken for a SQLite file's name."""
    _init(tmp_path, "d")
    before = sorted(os.listdir(tmp_path))
    stderr = _serve_refused(tmp_path, "d", "--store", "host=127.0.0.1 dbname=x password=s3cret")
    assert "(store-url-invalid)" in stderr
    assert "postgresql://127.0.0.1/x" in stderr  # the URL to write instead
    assert "s3cret" not in stderr
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x/y",
        "postgresql:/db",  # one slash: once taken for a SQLite file's name
        "postgresql://127.0.0.1:5432/",  # no database
    ],
)
def test_init_with_a_bad_store_url_leaves_nothing_behind(tmp_path: Path, url: str) -> None:
    result = sealtrail("init", "-d", "d", "--store", url, cwd=tmp_path)
    assert_clean_error(result, "store-url-invalid")
    assert os.listdir(tmp_path) == []


def test_init_refuses_a_store_that_holds_a_log(tmp_path: Path) -> None:
    """Another directory's SQLite file; a refused init into an existing folder leaves it
    as it was."""
    _init(tmp_path, "d")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("mine\n")
    store = f"sqlite:///{tmp_path / 'd' / 'log.db'}"
    result = sealtrail("init", "-d", "e", "--store", store, cwd=tmp_path)
    assert_clean_error(result, "store-log-exists")
    assert f"holds log {ORIGIN} (size 0)" in result.stderr
    assert os.listdir(tmp_path / "e") == ["notes.txt"]


def test_init_on_a_postgres_store_holding_a_log_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    """The first init starts the log in the database; a second one, from another data
    directory, is refused and leaves nothing behind; the log is the first one's."""
    _, rest = postgres_url.split("://", 1)
    host = rest.rpartition("@")[2]
    _init(tmp_path, "a", "--store", postgres_url)
    result = sealtrail(
        "init", "-d", "b", "--origin", "other.test/log", "--store", postgres_url, cwd=tmp_path
    )
    assert_clean_error(result, "store-log-exists")
    assert (
        f"the store at postgresql://{host.split('?')[0]} already holds log {ORIGIN} (size 0)"
        in (result.stderr)
    )
    assert not (tmp_path / "b").exists()
    store = PostgresStore(postgres_url)
    try:
        assert _size_and_root(store, tmp_path / "a") == (0, EMPTY_ROOT)
    finally:
        store.close()


def test_read_only_commands_and_servers_read_a_read_only_session(
    tmp_path: Path, postgres_url: str
) -> None:
    """A hot standby takes no write, not even a schema check that writes: `serve
    --read-only` and `log verify` pointed at one read the log as it is."""
    _init(tmp_path, "d", "--store", postgres_url)
    standby = postgres_url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
    with served(tmp_path, "--read-only", "--store", standby) as url:
        assert httpx.get(url + "/log/v1/info").json()["size"] == 0
        assert httpx.get(url + "/checkpoint").content.startswith(ORIGIN.encode() + b"\n0\n")
    config = tmp_path / "d" / "sealtrail.toml"  # an auditor's copy, pointed at the standby
    config.write_text(config.read_text().replace(postgres_url, standby))
    # No server has made the index yet: on the standby it cannot be, and the error says so.
    refused = sealtrail("index", "status", "-d", "d", cwd=tmp_path)
    assert_clean_error(refused, "config-error")
    assert "schema version 0 and this Sealtrail needs" in refused.stderr
    assert "read-write connection to the primary" in refused.stderr
    config.write_text(config.read_text().replace(standby, postgres_url))
    assert sealtrail("index", "status", "-d", "d", cwd=tmp_path).returncode == 0  # made
    config.write_text(config.read_text().replace(postgres_url, standby))
    for command in (("log", "verify"), ("index", "status"), ("audit",)):
        result = sealtrail(*command, "-d", "d", cwd=tmp_path)
        assert result.returncode == 0, (command, result.stdout, result.stderr)


def test_a_sqlite_directory_served_on_an_empty_postgres_store_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    _init(tmp_path, "d")
    stderr = _serve_refused(tmp_path, "d", "--store", postgres_url)
    assert "(store-log-missing)" in stderr
    store = PostgresStore(postgres_url)
    try:
        assert store.read_checkpoint() is None
    finally:
        store.close()


def test_a_store_holding_another_directorys_log_is_refused(tmp_path: Path) -> None:
    """Another origin's log, and a log of the same origin signed by another key: one clear
    line each, for a writing server and a read-only one."""
    _init(tmp_path, "d")
    _init(tmp_path, "twin")  # the same origin, its own keys
    _init(tmp_path, "other", origin="other.test/log")
    twin = f"sqlite:///{tmp_path / 'twin' / 'log.db'}"
    other = f"sqlite:///{tmp_path / 'other' / 'log.db'}"
    for mode in ((), ("--read-only",)):
        stderr = _serve_refused(tmp_path, "d", "--store", other, *mode)
        assert "(store-log-foreign)" in stderr
        assert f"holds log other.test/log (size 0), not this data directory's log {ORIGIN}" in (
            stderr
        )
        stderr = _serve_refused(tmp_path, "d", "--store", twin, *mode)
        assert "(store-log-foreign)" in stderr
        assert f"holds log {ORIGIN} (size 0) signed by another key" in stderr
        assert "invalid-signature" not in stderr


def test_an_old_data_directory_starts_its_log_once_with_new_log(tmp_path: Path) -> None:
    """A directory whose store holds no log (made by an older ``init``, never served) is
    refused with a hint; ``serve --new-log`` starts its log, once, in the config's store."""
    _init(tmp_path, "d")
    (tmp_path / "d" / "log.db").unlink()  # what an older init left: no store yet
    stderr = _serve_refused(tmp_path, "d")
    assert "(store-log-missing)" in stderr and "--new-log" in stderr
    assert "(config-error)" in _serve_refused(
        tmp_path, "d", "--new-log", "--store", f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert "(config-error)" in _serve_refused(tmp_path, "d", "--new-log", "--read-only")
    with served(tmp_path, "--new-log") as url:
        assert httpx.get(url + "/checkpoint").text.startswith(f"{ORIGIN}\n0\n")
    stderr = _serve_refused(tmp_path, "d", "--new-log")
    assert "(store-log-exists)" in stderr and "Drop --new-log" in stderr
    with served(tmp_path) as url:
        assert httpx.get(url + "/log/v1/info").json()["size"] == 0


def test_new_log_is_refused_where_the_directory_served_a_log(tmp_path: Path) -> None:
    """The log's store lost, its provenance index still there: ``--new-log`` would fork."""
    root, token = init_data(tmp_path)
    allow_anonymous(root / "d")
    issuer = make_issuer("ES256", cn="Maker")
    with served(root) as url:
        onboard(url, token, issuer)
        register(url, statement_for(issuer, 1))
    rebuilt = sealtrail("index", "rebuild", "-d", "d", cwd=root)  # the index up with the log
    assert rebuilt.returncode == 0, rebuilt.stderr
    for suffix in ("", "-wal", "-shm"):
        path = root / "d" / f"log.db{suffix}"
        if path.exists():
            shutil.move(path, root / f"lost.db{suffix}")
    stderr = _serve_refused(root, "d", "--new-log")
    assert "(store-log-missing)" in stderr
    assert "the provenance index has applied 2 entries" in stderr
    assert not (root / "d" / "log.db").exists()
    # The index lost too: the newest checkpoint the server saw still tells.
    _swap_sqlite(root, "provenance.db", root / "lost-index.db")
    stderr = _serve_refused(root, "d", "--new-log")
    assert "(store-log-missing)" in stderr
    assert "a server of this data directory saw its log at size 2" in stderr
    assert not (root / "d" / "log.db").exists()


def test_two_inits_racing_on_one_empty_database_start_one_log(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both have found the database empty before either writes its genesis: the store's
    compare-and-swap lets one begin the log; the other is refused and leaves nothing."""
    racers = 2
    barrier = threading.Barrier(racers)
    write_genesis = config_module._write_genesis

    def after_both_looked(*args: Any) -> None:
        barrier.wait(30)
        write_genesis(*args)

    monkeypatch.setattr(config_module, "_write_genesis", after_both_looked)
    outcome: dict[str, str] = {}

    def init(name: str) -> None:
        try:
            init_data_dir(tmp_path / name, origin=f"{name}.test/log", store_url=postgres_url)
            outcome[name] = "started"
        except ConfigError as exc:
            outcome[name] = exc.code or repr(exc)

    threads = [threading.Thread(target=init, args=(f"r{k}",)) for k in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcome.values()) == ["started", "store-log-exists"], outcome
    winner = next(name for name, result in outcome.items() if result == "started")
    loser = next(name for name in outcome if name != winner)
    assert not (tmp_path / loser).exists()
    store = PostgresStore(postgres_url)
    try:
        assert _size_and_root(store, tmp_path / winner) == (0, EMPTY_ROOT)
    finally:
        store.close()


def _swap_sqlite(root: Path, name: str, to: Path) -> None:
    """``root/d/name`` (and its WAL files) moved to ``to`` (same suffixes)."""
    for suffix in ("", "-wal", "-shm"):
        path = root / "d" / f"{name}{suffix}"
        if path.exists():
            shutil.move(path, f"{to}{suffix}")


def _log_size(root: Path) -> int:
    store = SQLiteStore(root / "d" / "log.db")
    try:
        stored = store.read_checkpoint()
        assert stored is not None
        return stored.size
    finally:
        store.close()


def test_a_store_rolled_back_or_forked_is_refused(tmp_path: Path) -> None:
    """The log's store restored from an older backup: ``serve`` would sign a second history
    at sizes clients have seen, so it refuses before it writes anything, as does every
    command that opens the log. Two witnesses in the data directory tell: the newest
    checkpoint its servers saw (``seen-checkpoint``), and the provenance index."""
    root, token = init_data(tmp_path)
    allow_anonymous(root / "d")
    seen = root / "d" / "seen-checkpoint"
    shutil.copy(root / "d" / "log.db", root / "backup.db")  # the log at its genesis
    issuer = make_issuer("ES256", cn="Maker")
    with served(root) as url:
        onboard(url, token, issuer)
        for n in range(3):
            register(url, statement_for(issuer, n))
    first = _log_size(root)
    assert seen.read_text().startswith(f"serve.test/log\n{first}\n")  # kept as it stops
    shutil.copy(seen, root / "first-seen")
    _swap_sqlite(root, "log.db", root / "newer.db")
    shutil.copy(root / "backup.db", root / "d" / "log.db")

    stderr = _serve_refused(root, "d")
    assert "(store-log-rolled-back)" in stderr
    assert f"at size 0, but a server of this data directory saw it at size {first}" in stderr
    assert _log_size(root) == 0  # the service recorded no key, re-appended nothing
    assert_clean_error(sealtrail("log", "verify", "-d", "d", cwd=root), "store-log-rolled-back")

    # Without seen-checkpoint (a directory copied without it), the index tells.
    seen.unlink()
    stderr = _serve_refused(root, "d")
    assert "(index-ahead-of-log)" in stderr
    assert "but the log holds 0: the store was rolled back" in stderr
    assert_clean_error(sealtrail("index", "status", "-d", "d", cwd=root), "index-ahead-of-log")

    # A second history grown past the first (the index set aside): it is not an extension
    # of the checkpoint seen before, nor of the index's entries.
    _swap_sqlite(root, "provenance.db", root / "index.db")
    with served(root) as url:
        onboard(url, token, issuer)
        for n in range(10, 16):
            register(url, statement_for(issuer, n))
    size = _log_size(root)
    assert size > first
    shutil.copy(root / "first-seen", seen)
    stderr = _serve_refused(root, "d")
    assert "(store-log-forked)" in stderr
    assert f"at size {size}, which does not extend the checkpoint of size {first}" in stderr
    seen.unlink()
    _swap_sqlite(root, "provenance.db", root / "second-index.db")
    shutil.move(root / "index.db", root / "d" / "provenance.db")
    assert "(index-of-another-log)" in _serve_refused(root, "d")
    assert _log_size(root) == size

    seen.write_text(f"serve.test/log\n{first}\nnot a checkpoint\n")
    stderr = _serve_refused(root, "d")
    assert "(seen-checkpoint-invalid)" in stderr


def test_an_auditors_copy_without_the_secret_keys_reads_and_verifies_the_log(
    tmp_path: Path,
) -> None:
    """The published ``log.vkey`` is what a reading command checks the store against: an
    auditor's copy of the data directory needs no ``keys/``. Appending still needs them."""
    _init(tmp_path, "d")
    appended = sealtrail("log", "append", "-d", "d", "--lines", "-", cwd=tmp_path, stdin=b"a\nb\n")
    assert appended.returncode == 0, appended.stderr
    shutil.copytree(tmp_path / "d", tmp_path / "a", ignore=shutil.ignore_patterns("keys"))
    result = sealtrail("log", "verify", "-d", "a", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK: 2 entries" in result.stdout
    result = sealtrail("log", "append", "-d", "a", "--lines", "-", cwd=tmp_path, stdin=b"c\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "log.key" in result.stderr
    (tmp_path / "a" / "log.vkey").write_text("not a key\n")
    assert_clean_error(sealtrail("log", "verify", "-d", "a", cwd=tmp_path), "config-error")
