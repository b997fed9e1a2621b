"""SQLiteStore specifics: durability settings, schema versions, errors, edited rows."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from sealtrail.errors import ConfigError, Corruption, StorageError, VerificationError
from sealtrail.log import CheckpointSigner, LogReader, Sequencer, SequencerConfig
from sealtrail.merkle import leaf_hash
from sealtrail.storage import (
    ENTRY_BUNDLES,
    Commit,
    LogStore,
    MemoryStore,
    SQLiteStore,
    open_store,
    sqlite,
)
from sealtrail.storage.sqlite import _MIGRATIONS, LOOKUP_CHUNK, MAX_VARIABLES

SCHEMA_VERSION = len(_MIGRATIONS)
ENTRIES = [f"part {i}".encode() for i in range(300)]


def pragma(conn: sqlite3.Connection, name: str) -> object:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return row[0]


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


async def _add(store: LogStore, signer: CheckpointSigner, entries: list[bytes]) -> list[int]:
    # index_every=1: every batch goes into the leaf index, which these tests tamper with.
    async with Sequencer(store, signer=signer, config=SequencerConfig(index_every=1)) as seq:
        return await seq.add_many(entries)


def add(store: LogStore, signer: CheckpointSigner, entries: list[bytes]) -> list[int]:
    return asyncio.run(_add(store, signer, entries))


def reader(store: LogStore, signer: CheckpointSigner) -> LogReader:
    return LogReader(store, origin=signer.origin, verifiers=[signer.verifier])


@pytest.fixture
def logged(db: Path, signer: CheckpointSigner) -> SQLiteStore:
    """A store holding ENTRIES, written by the sequencer and verified once."""
    store = SQLiteStore(db)
    assert add(store, signer, ENTRIES) == list(range(len(ENTRIES)))
    assert reader(store, signer).audit() is not None
    return store


# -- durability settings and schema -------------------------------------------------------------


def test_wal_and_synchronous_full_are_set_on_every_connection(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        conn = raw(db)
        assert pragma(conn, "journal_mode") == "wal"  # persistent in the file
        conn.close()
        assert pragma(store._conn(), "synchronous") == 2  # FULL, per connection
        in_thread: list[object] = []
        t = threading.Thread(target=lambda: in_thread.append(pragma(store._conn(), "synchronous")))
        t.start()
        t.join()
        assert in_thread == [2]
    finally:
        store.close()


def test_synchronous_can_be_relaxed_but_not_turned_off(db: Path) -> None:
    store = SQLiteStore(db, synchronous="NORMAL")
    assert pragma(store._conn(), "synchronous") == 1
    store.close()
    with pytest.raises(ConfigError, match="synchronous"):
        SQLiteStore(db, synchronous="OFF")


def test_schema_version_is_recorded_in_user_version(db: Path) -> None:
    assert SCHEMA_VERSION >= 1
    SQLiteStore(db).close()
    SQLiteStore(db).close()  # reopening migrates nothing twice
    conn = raw(db)
    assert pragma(conn, "user_version") == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"checkpoint", "tile_parts", "entry_bundles", "leaves"} <= tables
    conn.close()


def _downgrade_to_schema_2(db: Path) -> None:
    """Put the hash tiles back in the WITHOUT ROWID table schema 2 had."""
    conn = raw(db)
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE tile_parts RENAME TO tile_parts_new")
    conn.execute(_MIGRATIONS[0][1])  # schema 1's tile_parts
    conn.execute("INSERT INTO tile_parts SELECT * FROM tile_parts_new")
    conn.execute("DROP TABLE tile_parts_new")
    conn.execute("PRAGMA user_version = 2")
    conn.execute("COMMIT")
    conn.close()


def _tiles_are_without_rowid(db: Path) -> bool:
    conn = raw(db)
    (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'tile_parts'").fetchone()
    conn.close()
    return "WITHOUT ROWID" in ddl


def test_schema_3_moves_the_hash_tiles_to_a_rowid_table_keeping_every_tile(
    logged: SQLiteStore, db: Path, signer: CheckpointSigner
) -> None:
    before = [logged.read_parts(level, i) for level in (0, 1) for i in range(3)]
    logged.close()
    _downgrade_to_schema_2(db)
    assert _tiles_are_without_rowid(db)
    store = SQLiteStore(db)  # migrates
    try:
        assert not _tiles_are_without_rowid(db)
        conn = raw(db)
        assert pragma(conn, "user_version") == SCHEMA_VERSION
        conn.close()
        assert [store.read_parts(level, i) for level in (0, 1) for i in range(3)] == before
        checkpoint = reader(store, signer).audit()  # the tree verifies from scratch
        assert checkpoint is not None
        assert checkpoint.size == len(ENTRIES)
        assert add(store, signer, [b"after the migration"]) == [len(ENTRIES)]
    finally:
        store.close()


def test_a_store_with_a_newer_schema_is_refused_and_left_alone(db: Path) -> None:
    SQLiteStore(db).close()
    conn = raw(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError) as info:
        SQLiteStore(db)
    assert f"schema version {SCHEMA_VERSION + 1}" in info.value.message
    assert "upgrade" in info.value.message
    conn = raw(db)
    assert pragma(conn, "user_version") == SCHEMA_VERSION + 1
    conn.close()


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SQLiteStore(tmp_path / "nowhere" / "log.db")
    assert not (tmp_path / "nowhere").exists()


def test_a_file_that_is_not_a_database_is_a_storage_error(db: Path) -> None:
    db.write_bytes(b"not a database, but a text file long enough to fill a header. " * 4)
    with pytest.raises(StorageError, match="not a database") as info:
        SQLiteStore(db)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert db.read_bytes().startswith(b"not a database")  # left untouched


def test_a_directory_in_place_of_the_file_is_a_storage_error(db: Path) -> None:
    db.mkdir()
    with pytest.raises(StorageError, match="open"):
        SQLiteStore(db)


def test_a_closed_store_refuses_to_work(db: Path) -> None:
    store = SQLiteStore(db)
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.read_checkpoint()
    with pytest.raises(StorageError, match="closed"):
        store.read_parts(0, 0)


def test_a_bad_raw_statement_is_a_storage_error(db: Path) -> None:
    store = SQLiteStore(db)
    with pytest.raises(StorageError, match="statement"):
        store.execute(
            "INSERT INTO tile_parts (level, idx, start, count, data) VALUES (0, 0, 0, 0, x'')"
        )
    store.close()


# -- rows edited behind the log's back ------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "sql"),
    [
        (
            "a hash in a full level-0 tile",
            "UPDATE tile_parts SET data = ? WHERE level = 0 AND idx = 0",
        ),
        (
            "a hash in a partial level-0 tile",
            "UPDATE tile_parts SET data = ? WHERE level = 0 AND idx = 1",
        ),
        ("an entry bundle", "UPDATE entry_bundles SET data = ? WHERE level = -1 AND idx = 0"),
    ],
)
def test_an_edited_tile_row_is_caught_by_the_audit(
    logged: SQLiteStore, signer: CheckpointSigner, what: str, sql: str
) -> None:
    (part,) = logged.read_parts(
        0 if "level-0" in what else ENTRY_BUNDLES, 1 if "partial" in what else 0
    )
    data = bytearray(part.data)
    data[len(data) // 2] ^= 0x01  # one bit, mid-tile
    logged.execute(sql, (bytes(data),))
    with pytest.raises((VerificationError, Corruption)):
        reader(logged, signer).audit()
    logged.close()


def test_a_deleted_tile_row_is_caught_by_the_audit(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    logged.execute("DELETE FROM entry_bundles WHERE level = -1 AND idx = 1")
    with pytest.raises(Corruption):
        reader(logged, signer).audit()
    logged.close()


def test_an_edited_checkpoint_row_is_caught(logged: SQLiteStore, signer: CheckpointSigner) -> None:
    checkpoint = logged.read_checkpoint()
    assert checkpoint is not None
    forged = checkpoint.note.replace(b"\n300\n", b"\n299\n")
    logged.execute("UPDATE checkpoint SET size = 299, indexed = 0, note = ?", (forged,))
    with pytest.raises(VerificationError):
        reader(logged, signer).audit()
    logged.close()


def test_a_deleted_leaf_row_only_loses_the_hint(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    logged.execute("DELETE FROM leaves WHERE idx = 7")
    # Deduplication against the log no longer finds entry 7: it is appended again.
    assert add(logged, signer, [ENTRIES[6], ENTRIES[7]]) == [6, 300]
    log = reader(logged, signer)
    assert log.audit() is not None
    assert log.entry(7) == log.entry(300) == ENTRIES[7]
    assert log.index_of(leaf_hash(ENTRIES[7])) == 300  # proof by hash still works
    logged.close()


def test_an_edited_leaf_row_never_aliases_another_entry(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    # Point entry 7's hint at entry 9, and plant a hint past the checkpoint for a new entry.
    logged.execute("UPDATE leaves SET idx = 9 WHERE idx = 7")
    new = b"not yet in the log"
    store_key = int.from_bytes(leaf_hash(new)[:8], "big", signed=True)
    logged.execute("INSERT INTO leaves (prefix, idx) VALUES (?, 305)", (store_key,))
    assert add(logged, signer, [ENTRIES[7], new]) == [300, 301]
    log = reader(logged, signer)
    assert log.audit() is not None
    assert log.entry(9) == ENTRIES[9]
    logged.close()


def test_a_log_written_to_sqlite_survives_reopening(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    logged.close()
    again = SQLiteStore(logged.path)
    assert add(again, signer, [ENTRIES[0], b"one more"]) == [0, 300]
    assert reader(again, signer).audit() is not None
    again.close()


# -- open_store -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory:", "memory://"])
def test_open_store_memory(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, MemoryStore)
    assert isinstance(store, LogStore)


def test_open_store_sqlite_url_with_an_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "url.db"
    store = open_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteStore)
    assert store.path == path
    store.close()
    assert path.is_file()


def test_open_store_plain_path(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    store = open_store(str(path))
    assert isinstance(store, SQLiteStore)
    assert store.path == path
    store.close()


@pytest.mark.parametrize("url", ["ftp://x", "s3://bucket/log"])
def test_open_store_refuses_unsupported_schemes(url: str) -> None:
    with pytest.raises(ConfigError, match="unsupported store URL scheme") as info:
        open_store(url)
    assert "sqlite:///" in info.value.hint


def test_open_store_sqlite_url_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_store(f"sqlite:///{tmp_path}/missing/log.db")


@pytest.mark.parametrize("json", [True, False], ids=["json-array", "in-list"])
def test_large_leaf_runs_and_lookups_span_several_statements(
    db: Path, json: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More leaf-index rows than one statement may bind, and more lookups than one query
    takes, as a JSON array and (an SQLite without JSON functions) as ``IN`` lists."""
    count = MAX_VARIABLES  # two statements' worth of (prefix, idx) rows
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(count)]
    store = SQLiteStore(db)
    monkeypatch.setattr(store, "_json", json)
    monkeypatch.setattr(sqlite, "LEAF_LOOKUP_CHUNK", 5000)
    store.commit(
        Commit(0, count, b"note", parts=[], leaves=list(zip(hashes, range(count), strict=True)))
    )
    asked = [*hashes[: LOOKUP_CHUNK + 7], leaf_hash(b"never added")]
    found = store.lookup_leaves(asked)
    assert len(found) == LOOKUP_CHUNK + 7
    assert all(found[h] == [i] for i, h in enumerate(asked[:-1]))
    store.close()
