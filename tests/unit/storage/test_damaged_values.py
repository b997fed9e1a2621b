"""A value edited into a store that its code could not have written: another type than its
column's (SQLite keeps whatever it is given), or bytes that are not UTF-8 where text
belongs. Every read of it is a coded Corruption naming the column, never a TypeError, a
failed query ("may be retried") or the value itself; the index's dumps read for the audit
(``mark_damaged``) name nothing and refuse nothing: they mark the damaged value and go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from sealtrail.errors import Corruption
from sealtrail.log import CheckpointSigner, LogReader, Sequencer, SequencerConfig
from sealtrail.storage import IndexStore, PostgresIndex, SQLiteIndex, SQLiteStore, StatementRecord
from tests.unit.storage.test_index import HISTORY

#: The marked reading of the bytes ``{"`` 0xff ``"`` (lone surrogates stand for bytes).
MARKED = '{"\udcff"'


def _corrupt(read: Callable[[], object], column: str) -> Corruption:
    with pytest.raises(Corruption) as refused:
        read()
    assert refused.value.code == "corruption"
    assert column in str(refused.value)
    return refused.value


# -- the index: SQLite ------------------------------------------------------------------


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Iterator[SQLiteIndex]:
    index = SQLiteIndex(tmp_path / "provenance.db")
    index.apply(HISTORY)
    yield index
    index.close()


def test_a_value_that_is_not_utf8_is_corruption_pointing_at_the_audit(
    sqlite_index: SQLiteIndex,
) -> None:
    sqlite_index.execute("UPDATE idx_rows SET value = CAST(x'7b22ff22' AS TEXT) WHERE key = 'aa'")
    for read in (
        lambda: sqlite_index.row("devices", "aa"),
        lambda: sqlite_index.rows("devices"),
        lambda: list(sqlite_index.dump_rows()),
    ):
        refused = _corrupt(read, "idx_rows.value")
        assert "not UTF-8" in str(refused) and "\\xff" not in str(refused)
        assert "sealtrail audit" in refused.hint  # which reads past it (below)
    assert sqlite_index.row("devices", "bb") == '{"state":"made"}'  # one row's damage
    # The audit's reading: every row, the damaged one marked.
    assert list(sqlite_index.dump_rows(mark_damaged=True)) == [
        ("devices", "aa", MARKED),
        ("devices", "bb", '{"state":"made"}'),
        ("nodes", "srv-1", '{"ok":true}'),
    ]


def test_damaged_changes_and_entries_are_marked_for_the_audit(sqlite_index: SQLiteIndex) -> None:
    sqlite_index.execute(
        "UPDATE idx_changes SET tbl = CAST(x'ff' AS TEXT) WHERE idx = 0 AND pos = 0"
    )
    sqlite_index.execute(
        "UPDATE idx_subjects SET subject = CAST(x'ff41' AS TEXT) WHERE subject = 'node:srv-1'"
        " AND idx = 2"
    )
    sqlite_index.execute("UPDATE idx_entries SET kind = CAST(x'c3' AS TEXT) WHERE idx = 1")
    _corrupt(lambda: list(sqlite_index.dump_changes()), "idx_changes.tbl")
    _corrupt(lambda: sqlite_index.changes(0, 3), "idx_changes.tbl")
    _corrupt(lambda: sqlite_index.entries(0, 3), "idx_subjects.subject")
    _corrupt(lambda: list(sqlite_index.dump_entries()), "idx_entries.kind")
    changes = list(sqlite_index.dump_changes(mark_damaged=True))
    assert [c[2] for c in changes] == ["\udcff", "devices", "devices", "nodes"]
    entries = list(sqlite_index.dump_entries(mark_damaged=True))
    assert [e.kind for e in entries] == ["device-manifest", "\udcc3", "arrival"]
    assert entries[2].subjects == ("device:aa", "\udcffA")


def test_an_entry_id_stored_as_text_is_corruption_not_a_type_error(
    sqlite_index: SQLiteIndex,
) -> None:
    """32 characters pass the column's CHECK (length 32): they are not 32 bytes."""
    sqlite_index.execute("UPDATE idx_entries SET entry_id = hex(randomblob(16)) WHERE idx = 2")
    for read in (
        lambda: sqlite_index.entries(0, 3),
        lambda: sqlite_index.entries_about("node:srv-1"),
        lambda: list(sqlite_index.dump_entries()),
    ):
        refused = _corrupt(read, "idx_entries.entry_id")
        assert "holds text where bytes belong" in str(refused)
    marked = list(sqlite_index.dump_entries(mark_damaged=True))
    assert [e.entry_id for e in marked] == [HISTORY[0][0].entry_id, HISTORY[1][0].entry_id, b""]


def test_words_where_numbers_belong_are_corruption(sqlite_index: SQLiteIndex) -> None:
    sqlite_index.execute("UPDATE idx_meta SET rules_version = 'two'")  # 'two' >= 1 holds
    _corrupt(sqlite_index.rules_version, "rules_version")
    sqlite_index.execute("UPDATE idx_meta SET rules_version = NULL")
    sqlite_index.execute("UPDATE idx_changes SET idx = 'x' WHERE idx = 2 AND pos = 1")
    _corrupt(lambda: sqlite_index.history("nodes", "srv-1"), "idx_changes.idx")
    _corrupt(lambda: list(sqlite_index.dump_changes(mark_damaged=True)), "idx_changes.idx")
    # A subject moved off every entry is passed over, as one of an entry not stored: the
    # entry it left lacks it (which the audit names).
    sqlite_index.execute("UPDATE idx_subjects SET idx = 'x' WHERE subject = 'device:bb'")
    first = next(iter(sqlite_index.dump_entries()))
    assert first.subjects == ("device:aa",)


# -- the index: PostgreSQL --------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_bytes_that_are_not_text_are_marked_for_the_audit(postgres_url: str) -> None:
    index: IndexStore = PostgresIndex(postgres_url)
    try:
        index.apply(HISTORY)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE idx_rows SET value = '\\xff'::bytea || value WHERE key = 'aa'::bytea"
            )
            conn.execute("UPDATE idx_changes SET key = '\\xff'::bytea WHERE idx = 2 AND pos = 1")
        refused = _corrupt(lambda: list(index.dump_rows()), "")
        assert "sealtrail audit" in refused.hint
        assert list(index.dump_rows(mark_damaged=True)) == [
            ("devices", "aa", '\udcff{"state":"arrived"}'),
            ("devices", "bb", '{"state":"made"}'),
            ("nodes", "srv-1", '{"ok":true}'),
        ]
        assert [c[3] for c in index.dump_changes(mark_damaged=True)] == ["aa", "bb", "aa", "\udcff"]
    finally:
        index.close()


# -- the log's store: SQLite ------------------------------------------------------------


async def _add(store: SQLiteStore, signer: CheckpointSigner, entries: list[bytes]) -> None:
    async with Sequencer(store, signer=signer, config=SequencerConfig()) as seq:
        await seq.add_many(entries)


@pytest.fixture
def logged(tmp_path: Path, signer: CheckpointSigner) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "log.db")
    asyncio.run(_add(store, signer, [f"entry {i}".encode() for i in range(10)]))
    body = b"a statement"
    record = StatementRecord(bytes(32), body, "issuer", "subject", "text/plain", 0)
    store.put_statements([record])
    yield store
    store.close()


@pytest.mark.parametrize(
    ("edit", "column"),
    [
        ("UPDATE checkpoint SET note = CAST(note AS TEXT)", "checkpoint.note"),
        ("UPDATE checkpoint SET note = CAST(x'ff' AS TEXT)", "checkpoint.note"),
        ("UPDATE checkpoint SET size = 'ten'", "checkpoint.size"),
    ],
)
def test_a_checkpoint_of_the_wrong_type_is_corruption(
    logged: SQLiteStore, edit: str, column: str
) -> None:
    logged.execute(edit)
    refused = _corrupt(logged.read_checkpoint, column)
    assert "sealtrail audit" not in refused.hint  # it reads this row too: of no help here


def test_a_tile_of_the_wrong_type_is_corruption_not_a_failed_read(
    logged: SQLiteStore, signer: CheckpointSigner
) -> None:
    logged.execute("UPDATE tile_parts SET data = CAST(x'ff00ff' AS TEXT) WHERE level = 0")
    _corrupt(lambda: logged.read_parts(0, 0), "tile_parts.data")
    reader = LogReader(logged, origin=signer.origin, verifiers=[signer.verifier])
    _corrupt(reader.audit, "tile_parts.data")


def test_a_statement_of_the_wrong_type_is_corruption(logged: SQLiteStore) -> None:
    logged.execute("UPDATE statements SET body = hex(body)")
    _corrupt(lambda: logged.get_statement(bytes(32)), "statements.body")
    logged.execute("UPDATE statements SET body = x'00', issuer = CAST(x'ff' AS TEXT)")
    _corrupt(lambda: logged.get_statement(bytes(32)), "statements.issuer")
    _corrupt(lambda: logged.statements_since(0, limit=10), "statements.issuer")
    logged.execute("UPDATE statements SET issuer = 'issuer', entry_id = hex(randomblob(16))")
    _corrupt(lambda: logged.entries_since(0, limit=10), "statements.entry_id")


def test_a_column_turned_into_a_blob_is_not_read_as_its_text(tmp_path: Path) -> None:
    """A statement's content type turned into a BLOB of the same bytes: no longer found by
    it (statements_of_type), so reading it back as the same text would hide the edit."""
    store = SQLiteStore(tmp_path / "log.db")
    try:
        record = StatementRecord(
            entry_id=b"\x01" * 32,
            body=b"body",
            issuer="https://maker.example",
            subject="urn:x",
            content_type="application/x",
            registered_at=1,
        )
        store.put_statements([record])
        store.execute("UPDATE statements SET content_type = CAST(content_type AS BLOB)")
        assert store.statements_of_type("application/x") == []
        _corrupt(lambda: store.get_statement(b"\x01" * 32), "content_type")
    finally:
        store.close()
