"""The store URL parser every command shares, and what ``init_data_dir`` does with a store:
refuse one that holds anything of a log, start the log in an empty one, leave nothing
behind when it refuses."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from sealtrail.config import (
    Config,
    absolute_store_path,
    check_store_url,
    init_data_dir,
    issue_admin_token,
    load_config,
    open_log_store,
    rotate_service_key,
)
from sealtrail.errors import ConfigError
from sealtrail.log import LogReader
from sealtrail.merkle import EMPTY_ROOT
from sealtrail.note import NoteVerifier
from sealtrail.storage import SQLiteStore, StatementRecord


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory:", "memory"),
        ("sqlite:///log.db", "sqlite"),
        ("sqlite:////srv/sealtrail/log.db", "sqlite"),
        ("log.db", "sqlite"),
        ("/srv/sealtrail/log.db", "sqlite"),
        ("./name:with-colon.db", "sqlite"),
        ("postgresql://user@db.example:5432/ledger", "postgresql"),
        ("postgres://db.example/ledger?options=-csearch_path%3Dx", "postgresql"),
        ("postgresql:///ledger", "postgresql"),
        ("postgresql://db1,db2/ledger?target_session_attrs=read-write", "postgresql"),
        ("postgresql://db.example/?dbname=ledger", "postgresql"),
    ],
)
def test_store_urls_that_name_a_store(url: str, kind: str) -> None:
    assert check_store_url(url) == kind


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://x/y", "unsupported store URL scheme 'mysql'"),
        ("sqlite://log.db", "unsupported store URL scheme 'sqlite'"),
        ("sqlite:///", "names no file"),
        ("postgresql:/db", "neither a URL this version knows nor a file"),
        ("postgres:db", "neither a URL this version knows nor a file"),
        ("postgresql://db.example:5432/", "postgresql://db.example:5432/ names no database"),
        ("postgresql://db.example", "names no database"),
        ("host=127.0.0.1 dbname=x", "libpq connection string"),
        ("  dbname = x", "libpq connection string"),
        ("", "neither a URL this version knows nor a file"),
    ],
)
def test_store_urls_that_are_refused(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        check_store_url(url)
    assert refused.value.code == "store-url-invalid"


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("log.db", "{d}/log.db"),
        ("sqlite:///log.db", "{d}/log.db"),
        ("sub/log.db", "{d}/sub/log.db"),
        ("/srv/log.db", "/srv/log.db"),
        ("sqlite:////srv/log.db", "/srv/log.db"),
        ("memory:", "memory:"),
        ("postgresql://db.example/ledger", "postgresql://db.example/ledger"),
    ],
)
def test_a_relative_path_in_the_configuration_is_the_data_directorys(
    tmp_path: Path, url: str, resolved: str
) -> None:
    config = Config(data_dir=tmp_path, origin="o.test/log", store_url=url, index_url=url)
    assert config.resolved_store_url() == resolved.format(d=tmp_path)


def test_a_plain_relative_path_on_the_command_line_is_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_store_path("log.db") == str(tmp_path / "log.db")
    for kept in (
        "sqlite:///log.db",  # the configuration's form: relative to the data directory
        "/srv/log.db",
        "memory:",
        "postgresql://db.example/ledger",
        "host=db dbname=ledger",  # refused later, as written
    ):
        assert absolute_store_path(kept) == kept


def test_init_writes_a_plain_relative_store_path_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else the data directory would work from the folder it was made in only."""
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    init_data_dir(Path("d"), origin="o.test/log", store_url=absolute_store_path("mylog.db"))
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("a/d"))
    assert config.store_url == str(tmp_path / "a" / "mylog.db")
    open_log_store(config).close()


def test_messages_never_show_a_password() -> None:
    for url in ("host=h dbname=x password=s3cret", "postgresql:/u:s3cret@h/db"):
        with pytest.raises(ConfigError) as refused:
            check_store_url(url)
        assert "s3cret" not in refused.value.message + refused.value.hint
    with pytest.raises(ConfigError) as refused:
        check_store_url("host=h port=6432 user=u dbname=x password=s3cret")
    assert "postgresql://u@h:6432/x" in refused.value.hint


def test_init_starts_the_log_and_binds_the_store(tmp_path: Path) -> None:
    config = load_config(init_data_dir(tmp_path / "d", origin="bind.test/log").config.data_dir)
    store = open_log_store(config)
    try:
        verifier = NoteVerifier.parse(config.verifier_key())
        latest = LogReader(store, origin=config.origin, verifiers=[verifier]).checkpoint()
        assert latest is not None
        assert (latest.size, latest.root) == (0, EMPTY_ROOT)
    finally:
        store.close()


def test_init_refuses_a_store_with_statements_but_no_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "half.db"
    store = SQLiteStore(path)
    try:
        body = b"a statement"
        store.put_statements(
            [StatementRecord(hashlib.sha256(body).digest(), body, "i", "s", "text/plain", 0)]
        )
    finally:
        store.close()
    with pytest.raises(ConfigError, match="tiles or statements but no checkpoint") as refused:
        init_data_dir(tmp_path / "d", origin="bind.test/log", store_url=f"sqlite:///{path}")
    assert refused.value.code == "store-log-exists"
    assert sorted(os.listdir(tmp_path)) == ["half.db"]


def test_init_refuses_memory_and_leaves_missing_parents_alone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be memory:"):
        init_data_dir(tmp_path / "a" / "b" / "d", store_url="memory:")
    assert os.listdir(tmp_path) == []


def test_a_failed_init_removes_what_it_made(tmp_path: Path) -> None:
    """A store that cannot be made (its folder missing) fails after the keys were written:
    the directories init made go, a folder that was there stays as it was."""
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("mine\n")
    missing = tmp_path / "nowhere" / "log.db"
    for target in (tmp_path / "new" / "d", tmp_path / "kept"):
        with pytest.raises(ConfigError):
            init_data_dir(target, store_url=f"sqlite:///{missing}")
    assert sorted(os.listdir(tmp_path)) == ["kept"]
    assert os.listdir(tmp_path / "kept") == ["mine.txt"]


# -- a data directory that cannot be written (read-only file system) -----------------------
# Tests may run as root, whom a chmod does not stop: the calls are made to fail instead.


def _read_only(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return init_data_dir(tmp_path / "d", origin="ro.test/log").config.data_dir


@pytest.mark.parametrize("fails", ["mkdir", "mkstemp", "replace", "key-file"])
def test_a_rotation_that_cannot_write_is_one_error_and_changes_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    config = load_config(data_dir)
    before = _snapshot(data_dir)
    if fails == "mkdir":
        monkeypatch.setattr(Path, "mkdir", _read_only)
    elif fails == "mkstemp":
        monkeypatch.setattr(tempfile, "mkstemp", _read_only)
    elif fails == "replace":  # the new key's rename into place, after the retired key
        real = os.replace

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            if str(src).endswith(".new"):
                _read_only()
            real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    else:  # the new key file itself (keys/_files.py) cannot be made
        real_mkstemp = tempfile.mkstemp

        def mkstemp(**kwargs: Any) -> tuple[int, str]:  # as both writers call it
            if ".new." in kwargs["prefix"]:
                _read_only()
            return real_mkstemp(**kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(ConfigError, match="Read-only file system") as refused:
        rotate_service_key(config)
    assert "\n" not in refused.value.message
    monkeypatch.undo()
    assert _snapshot(data_dir) == before  # no key changed, no empty keys/retired/ left
    assert not (data_dir / "keys" / "retired").exists()


def test_a_directory_that_cannot_be_synced_is_one_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            _read_only()
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(ConfigError, match="cannot sync the folder keys: Read-only file system"):
        issue_admin_token(load_config(data_dir))


def test_an_admin_token_that_cannot_be_written_is_one_error_and_changes_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(data_dir)
    before = _snapshot(data_dir)
    monkeypatch.setattr(tempfile, "mkstemp", _read_only)
    with pytest.raises(ConfigError, match=r"cannot write admin-token\.sha256: Read-only"):
        issue_admin_token(config)
    monkeypatch.undo()
    assert _snapshot(data_dir) == before
