"""SQLiteStore specifics: durability settings, schema versions, errors, edited rows."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
)
from sealtrail.storage import _leafruns as leafruns
from sealtrail.storage._leafruns import FANOUT, Run
from sealtrail.storage.sqlite import _MIGRATIONS, MAX_VARIABLES, _Runs

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
    assert {"checkpoint", "tile_parts", "entry_bundles", "leaf_runs"} <= tables
    assert "leaves" not in tables
    conn.close()


def _leaf_pairs(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """Every ``(key, index)`` pair of the leaf-index runs, sorted."""
    pairs: list[tuple[int, int]] = []
    table = _Runs(conn)
    for row in table.rows():
        run = table.read(row)
        pairs += zip(run.keys.tolist(), run.indexes.tolist(), strict=True)
    return sorted(pairs)


def _rewrite_leaf_index(
    db: Path, edit: Callable[[list[tuple[int, int]]], list[tuple[int, int]]]
) -> None:
    """Replace the leaf index by one run of ``edit(pairs)`` (an edit behind the log's back)."""
    conn = raw(db)
    pairs = edit(_leaf_pairs(conn))
    keys = np.array([k for k, _ in pairs], dtype=np.uint32)
    order = np.argsort(keys, kind="stable")
    run = Run(keys[order], np.array([i for _, i in pairs], dtype=np.uint64)[order])
    conn.execute("BEGIN")
    conn.execute("DELETE FROM leaf_runs")
    conn.execute("DELETE FROM leaf_pages")
    _Runs(conn).insert(run)
    conn.execute("COMMIT")
    conn.close()


def _downgrade_to_schema_3(db: Path) -> None:
    """Put the leaf index back in the B-tree keyed by 8-byte prefix that schema 3 had."""
    hashes = {leaf_hash(e): i for i, e in enumerate(ENTRIES)}
    conn = raw(db)
    indexed = {i for _, i in _leaf_pairs(conn)}
    conn.execute("BEGIN")
    conn.execute(str(_MIGRATIONS[0][3]))  # schema 1's leaves
    conn.executemany(
        "INSERT INTO leaves (prefix, idx) VALUES (?, ?)",
        [(int.from_bytes(h[:8], "big", signed=True), i) for h, i in hashes.items() if i in indexed],
    )
    conn.execute("DROP TABLE leaf_runs")
    conn.execute("DROP TABLE leaf_pages")
    conn.execute("ALTER TABLE statements DROP COLUMN tag")  # schema 5's
    conn.execute("DROP TABLE statement_row_key")
    conn.execute("PRAGMA user_version = 3")
    conn.execute("COMMIT")
    conn.close()


def test_schema_4_turns_the_leaf_index_into_one_run_keeping_every_entry(
    logged: SQLiteStore, db: Path, signer: CheckpointSigner
) -> None:
    logged.close()
    _downgrade_to_schema_3(db)
    conn = raw(db)
    assert conn.execute("SELECT count(*) FROM leaves").fetchone() == (len(ENTRIES),)
    conn.close()
    store = SQLiteStore(db)  # migrates
    try:
        conn = raw(db)
        assert pragma(conn, "user_version") == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "leaves" not in tables
        assert conn.execute("SELECT count(*) FROM leaf_runs").fetchone() == (1,)
        conn.close()
        found = store.lookup_leaves([leaf_hash(e) for e in ENTRIES])
        assert all(i in found[leaf_hash(e)] for i, e in enumerate(ENTRIES))
        # Duplicates are still found in the index: the same indexes come back.
        assert add(store, signer, [ENTRIES[5], ENTRIES[250], b"new"]) == [5, 250, len(ENTRIES)]
        assert reader(store, signer).audit() is not None
    finally:
        store.close()


def test_schema_4_cuts_a_large_leaf_index_into_runs_of_at_most_max_run(
    logged: SQLiteStore, db: Path, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged.close()
    _downgrade_to_schema_3(db)
    monkeypatch.setattr(leafruns, "MAX_RUN", 128)
    store = SQLiteStore(db)  # migrates
    try:
        conn = raw(db)
        assert _run_counts(db) == [128, 128, len(ENTRIES) - 256]
        assert _leaf_pairs(conn) == sorted(
            (int.from_bytes(leaf_hash(e)[:4], "big"), i) for i, e in enumerate(ENTRIES)
        )
        conn.close()
        found = store.lookup_leaves([leaf_hash(e) for e in ENTRIES])
        assert all(i in found[leaf_hash(e)] for i, e in enumerate(ENTRIES))
    finally:
        store.close()


def _downgrade_to_schema_2(db: Path) -> None:
    """Put the hash tiles back in the WITHOUT ROWID table schema 2 had."""
    _downgrade_to_schema_3(db)
    conn = raw(db)
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE tile_parts RENAME TO tile_parts_new")
    conn.execute(str(_MIGRATIONS[0][1]))  # schema 1's tile_parts
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


@pytest.mark.parametrize(("level", "table"), [(0, "tile_parts"), (-1, "entry_bundles")])
def test_a_failed_tile_read_is_a_storage_error(
    logged: SQLiteStore, db: Path, level: int, table: str
) -> None:
    assert logged.read_parts(level, 0)
    conn = raw(db)
    conn.execute(f"DROP TABLE {table}")
    conn.close()
    with pytest.raises(StorageError, match=f"SQLite read failed: OperationalError: .*{table}"):
        logged.read_parts(level, 0)
    logged.close()


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


def test_a_deleted_leaf_row_is_named_by_the_audit(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    _rewrite_leaf_index(logged.path, lambda pairs: [(k, i) for k, i in pairs if i != 7])
    with pytest.raises(Corruption, match="the leaf index does not hold entry 7"):
        reader(logged, signer).audit()
    # Deduplication against the log no longer finds entry 7: it is appended again, and the
    # tree stays sound (the audit still names the row).
    assert add(logged, signer, [ENTRIES[6], ENTRIES[7]]) == [6, 300]
    log = reader(logged, signer)
    with pytest.raises(Corruption, match="the leaf index does not hold entry 7"):
        log.audit()
    assert log.entry(7) == log.entry(300) == ENTRIES[7]
    assert log.index_of(leaf_hash(ENTRIES[7])) == 300  # proof by hash still works
    logged.close()


def test_deleted_leaf_pages_stop_the_sequencer_and_are_named_by_the_audit(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    conn = raw(logged.path)
    assert conn.execute("SELECT count(*) FROM leaf_pages").fetchone()[0] >= 1
    conn.execute("DELETE FROM leaf_pages")  # every page of every run, keys left behind
    conn.close()
    assert logged.lookup_leaves([leaf_hash(ENTRIES[7])]) == {}
    # Every entry sent again would be taken for a new one: the sequencer does not start.
    with pytest.raises(Corruption, match="the leaf index does not hold entry 299"):
        add(logged, signer, [ENTRIES[7]])
    with pytest.raises(Corruption, match="the leaf index does not hold entry 0"):
        reader(logged, signer).audit()
    logged.close()


def test_an_edited_leaf_row_never_aliases_another_entry(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    # Point entry 7's hint at entry 9, and plant a hint past the checkpoint for a new entry.
    new = b"not yet in the log"
    planted = (int.from_bytes(leaf_hash(new)[:4], "big"), 305)
    _rewrite_leaf_index(
        logged.path, lambda pairs: [(k, 9 if i == 7 else i) for k, i in pairs] + [planted]
    )
    assert add(logged, signer, [ENTRIES[7], new]) == [300, 301]
    log = reader(logged, signer)
    with pytest.raises(Corruption, match="the leaf index does not hold entry 7"):
        log.audit()  # the tree is sound; the audit names the edited row
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


def test_large_leaf_runs_and_lookups(db: Path) -> None:
    """More leaf-index pairs than one statement may bind, looked up all at once."""
    count = MAX_VARIABLES + 7
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(count)]
    store = SQLiteStore(db)
    store.commit(
        Commit(0, count, b"note", parts=[], leaves=list(zip(hashes, range(count), strict=True)))
    )
    asked = [*hashes, leaf_hash(b"never added")]
    found = store.lookup_leaves(asked)
    assert all(i in found[h] for i, h in enumerate(hashes))
    assert sum(map(len, found.values())) < count + 5, "4-byte keys rarely collide"
    store.close()


def _run_counts(db: Path) -> list[int]:
    conn = raw(db)
    counts = [int(c) for (c,) in conn.execute("SELECT count FROM leaf_runs ORDER BY run")]
    conn.close()
    return counts


def _commit_leaves(store: SQLiteStore, start: int, count: int) -> list[bytes]:
    hashes = [leaf_hash(i.to_bytes(8, "big")) for i in range(start, start + count)]
    pairs = list(zip(hashes, range(start, start + count), strict=True))
    store.commit(Commit(start, start + count, b"note", parts=[], leaves=pairs))
    return hashes


def test_leaf_runs_merge_by_tiers_and_every_entry_stays_found(db: Path) -> None:
    store = SQLiteStore(db)
    other = SQLiteStore(db)  # another process's view: it must follow the merges
    hashes: list[bytes] = []
    seen: list[list[int]] = []
    for _ in range(FANOUT * FANOUT + 1):
        hashes += _commit_leaves(store, len(hashes), 100)
        seen.append(_run_counts(db))
        for view in (store, other):
            found = view.lookup_leaves(hashes)
            assert all(i in found[h] for i, h in enumerate(hashes))
    assert seen[FANOUT - 2] == [100] * (FANOUT - 1)
    assert seen[FANOUT - 1] == [100 * FANOUT]  # a full tier became one run
    assert seen[FANOUT * FANOUT - 1] == [100 * FANOUT * FANOUT]  # and so on up
    assert seen[-1] == [100 * FANOUT * FANOUT, 100]
    # A run's number is never reused, so a cached run can never stand for another.
    conn = raw(db)
    (numbers,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'leaf_runs'").fetchone()
    conn.close()
    assert numbers > FANOUT * FANOUT
    store.close()
    other.close()


def test_hashes_sharing_a_leaf_key_are_both_candidates(db: Path) -> None:
    first = b"\x01\x02\x03\x04" + bytes(28)
    second = b"\x01\x02\x03\x04" + b"\xff" * 28
    store = SQLiteStore(db)
    store.commit(Commit(0, 2, b"note", parts=[], leaves=[(first, 0), (second, 1)]))
    found = store.lookup_leaves([first, second, bytes(32)])
    assert sorted(found[first]) == sorted(found[second]) == [0, 1]  # hints, to be confirmed
    assert bytes(32) not in found
    store.close()


def test_a_tampered_leaf_run_is_refused_by_the_schema(db: Path) -> None:
    store = SQLiteStore(db)
    _commit_leaves(store, 0, 10)
    with pytest.raises(StorageError):
        store.execute("UPDATE leaf_runs SET keys = substr(keys, 1, 8)")
    with pytest.raises(StorageError):
        store.execute("UPDATE leaf_runs SET count = count + 1")
    with pytest.raises(StorageError):
        store.execute("UPDATE leaf_pages SET indexes = x'0102'")
    store.close()


def test_a_lookup_during_a_merge_sees_one_whole_snapshot(db: Path) -> None:
    """Lookups race commits that merge runs away: none may miss an entry committed before
    it began (the runs listed and the pages read come from one snapshot)."""
    writer, reader = SQLiteStore(db), SQLiteStore(db)
    committed = [_commit_leaves(writer, 0, 40)]
    done = threading.Event()
    misses: list[bytes] = []

    def look() -> None:
        while not done.is_set():
            known = [h for batch in committed for h in batch]
            found = reader.lookup_leaves(known)
            misses.extend(h for i, h in enumerate(known) if i not in found.get(h, []))

    thread = threading.Thread(target=look)
    thread.start()
    try:
        size = 40
        for _ in range(3 * FANOUT * FANOUT):
            committed.append(_commit_leaves(writer, size, 10))
            size += 10
    finally:
        done.set()
        thread.join(30)
    assert misses == []
    writer.close()
    reader.close()
