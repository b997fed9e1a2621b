"""The embedded default store: one SQLite file in WAL mode.

Durability choice (see ARCHITECTURE.md, "SQLite settings"): ``journal_mode=WAL`` with
``synchronous=FULL``, so that every commit is on stable storage before ``commit`` returns,
power loss included. The sequencer commits one transaction per batch, so the one fsync per
commit is shared by up to ``max_batch`` entries.

Schema (``PRAGMA user_version`` tracks migrations)::

    checkpoint(id = 0, size, note, indexed)          the one latest signed checkpoint and
                                                     the leaf-index watermark
    tile_parts(level, idx, start, count, data, interior)   hash tiles, part by part
    entry_bundles(level = -1, idx, start, count, data)     entry bundles, part by part
    leaf_runs(run, count, keys, first_page)          the leaf index: sorted runs of the
    leaf_pages(page, indexes)                        leaf hashes' first 4 bytes, and their
                                                     indexes in pages of 4,096 (a hint:
                                                     candidates are confirmed on the level-0
                                                     tile, so shared keys are safe); see
                                                     ``_leafruns``
    statements(seq, entry_id, body, issuer, subject, content_type, registered_at, tag)
                                                     registered statements, in the order
                                                     stored; ``tag`` authenticates the row
                                                     (schema 5; NULL: stored without one)
    statements_sequenced(id = 0, seq)                the backlog's sequenced watermark
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sealtrail.errors import CheckpointConflict, ConfigError, Corruption, Error, StorageError

from . import _leafruns as runs
from ._protocols import (
    ENTRY_BUNDLES,
    BacklogRow,
    Commit,
    StatementRecord,
    StoredCheckpoint,
    TilePart,
    replaced_row,
)

__all__ = ["SQLiteStore"]

#: Seconds a writer waits for another process's write transaction before failing.
BUSY_TIMEOUT_MS = 10_000
#: Page cache per connection, in KiB (the leaf index is a B-tree with random keys).
CACHE_KIB = 65536
#: Bytes of the file mapped into memory for reads (tiles are read without a copy into the
#: page cache: a cold tile read takes half the time).
MMAP_BYTES = 1 << 30
#: Most values bound to one statement: SQLite's default limit (``SQLITE_MAX_VARIABLE_NUMBER``).
MAX_VARIABLES = 32766
#: Most keys in one ``IN`` list (of entry ids).
LOOKUP_CHUNK = 8192
#: Rows of the old leaf-index table read at a time when converting it into a run.
CONVERT_CHUNK = 1 << 16


def _parts_table(name: str, level_check: str | None, *, without_rowid: bool) -> str:
    """DDL of a table of tile parts (hash tiles and entry bundles share the layout)."""
    check = f" CHECK ({level_check})" if level_check else ""
    return f"""CREATE TABLE {name} (
            level INTEGER NOT NULL{check},
            idx INTEGER NOT NULL,
            start INTEGER NOT NULL CHECK (start >= 0 AND start < 256),
            count INTEGER NOT NULL CHECK (count > 0 AND start + count <= 256),
            data BLOB NOT NULL,
            interior BLOB NOT NULL DEFAULT x'',
            PRIMARY KEY (level, idx, start)
        ){" WITHOUT ROWID" if without_rowid else ""}"""


def _leaves_to_runs(conn: sqlite3.Connection) -> None:
    """Schema 4: the leaf-index table of schema 1 (8-byte signed prefix -> index) as runs
    (one, or several of :data:`~._leafruns.MAX_RUN` entries for a larger log)."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see _leafruns)

    keys: list[runs.Keys] = []
    indexes: list[runs.Indexes] = []
    cursor = conn.execute("SELECT prefix, idx FROM leaves")
    while rows := cursor.fetchmany(CONVERT_CHUNK):
        pairs = np.array(rows, dtype=np.int64)
        keys.append((pairs[:, 0].view(np.uint64) >> np.uint64(32)).astype(np.uint32))
        indexes.append(pairs[:, 1].astype(np.uint64))
    if keys:
        run, table = runs.sorted_run(np.concatenate(keys), np.concatenate(indexes)), _Runs(conn)
        for start in range(0, run.count, runs.MAX_RUN):
            end = start + runs.MAX_RUN
            table.insert(runs.Run(run.keys[start:end], run.indexes[start:end]))


class _Runs:
    """The leaf-index runs and pages (a :class:`~._leafruns.RunTable`) in a write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self) -> list[runs.RunRow]:
        query = "SELECT run, count, first_page FROM leaf_runs ORDER BY run"
        return [
            runs.RunRow(
                stored_int(r, "leaf_runs.run"),
                stored_int(c, "leaf_runs.count"),
                stored_int(p, "leaf_runs.first_page"),
            )
            for r, c, p in self.conn.execute(query)
        ]

    def read(self, row: runs.RunRow) -> runs.Run:
        (keys,) = self.conn.execute(
            "SELECT keys FROM leaf_runs WHERE run = ?", (row.run,)
        ).fetchone()
        pages = self.conn.execute(
            "SELECT indexes FROM leaf_pages WHERE page BETWEEN ? AND ? ORDER BY page",
            (row.first_page, row.last_page),
        ).fetchall()
        indexes = runs.indexes_from_bytes(
            b"".join(stored_bytes(p, "leaf_pages.indexes") for (p,) in pages)
        )
        return runs.Run(runs.keys_from_bytes(stored_bytes(keys, "leaf_runs.keys")), indexes)

    def delete(self, row: runs.RunRow) -> None:
        self.conn.execute("DELETE FROM leaf_runs WHERE run = ?", (row.run,))
        self.conn.execute(
            "DELETE FROM leaf_pages WHERE page BETWEEN ? AND ?", (row.first_page, row.last_page)
        )

    def insert(self, run: runs.Run) -> None:
        query = "SELECT coalesce(max(page) + 1, 0) FROM leaf_pages"
        (first,) = self.conn.execute(query).fetchone()
        self.conn.execute(
            "INSERT INTO leaf_runs (count, keys, first_page) VALUES (?, ?, ?)",
            (run.count, run.key_bytes(), first),
        )
        pages = run.pages()
        rows: list[object] = [v for k, page in enumerate(pages) for v in (first + k, page)]
        _insert(self.conn, "INSERT INTO leaf_pages (page, indexes)", 2, rows)


#: Schema steps: SQL statements, or Python for what SQL cannot do, all in one transaction.
_MIGRATIONS: list[tuple[str | Callable[[sqlite3.Connection], None], ...]] = [
    (
        """CREATE TABLE checkpoint (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            size INTEGER NOT NULL CHECK (size >= 0),
            note BLOB NOT NULL,
            indexed INTEGER NOT NULL CHECK (indexed >= 0 AND indexed <= size)
        )""",
        _parts_table("tile_parts", None, without_rowid=True),
        # Entry bundles apart from hash tiles: their 66 KB rows would otherwise sit between
        # the hash tiles a proof reads (measured: a cold level-0 tile read 130 us -> 47 us).
        _parts_table("entry_bundles", "level = -1", without_rowid=False),
        """CREATE TABLE leaves (
            prefix INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            PRIMARY KEY (prefix, idx)
        ) WITHOUT ROWID""",
    ),
    (
        # Registered signed statements: the log holds their SHA-256, this table the bytes.
        """CREATE TABLE statements (
            seq INTEGER PRIMARY KEY,
            entry_id BLOB NOT NULL UNIQUE CHECK (length(entry_id) = 32),
            body BLOB NOT NULL,
            issuer TEXT NOT NULL,
            subject TEXT NOT NULL,
            content_type TEXT NOT NULL,
            registered_at INTEGER NOT NULL
        )""",
        "CREATE INDEX statements_by_type ON statements (content_type, seq)",
        """CREATE TABLE statements_sequenced (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            seq INTEGER NOT NULL
        )""",
    ),
    (
        # Hash tiles move to a rowid table: a WITHOUT ROWID table keeps only ~1 KB of a row
        # on its B-tree page, so each 16 KB tile (hashes and interior) was a long overflow
        # chain. Measured at 10^6 entries: a cold level-0 tile read 15.6 us -> 6.4 us.
        _parts_table("tile_parts_v3", None, without_rowid=False),
        "INSERT INTO tile_parts_v3 SELECT level, idx, start, count, data, interior"
        " FROM tile_parts ORDER BY level, idx, start",
        "DROP TABLE tile_parts",
        "ALTER TABLE tile_parts_v3 RENAME TO tile_parts",
    ),
    (
        # The leaf index as sorted runs (``_leafruns``): a flush writes one row in time that
        # does not grow with the log, where the B-tree keyed by hash took longer the larger
        # it was. AUTOINCREMENT: a run's number is never reused, so cached runs stay valid.
        """CREATE TABLE leaf_runs (
            run INTEGER PRIMARY KEY AUTOINCREMENT,
            count INTEGER NOT NULL CHECK (count > 0),
            keys BLOB NOT NULL CHECK (length(keys) = 4 * count),
            first_page INTEGER NOT NULL CHECK (first_page >= 0)
        )""",
        f"""CREATE TABLE leaf_pages (
            page INTEGER PRIMARY KEY,
            indexes BLOB NOT NULL CHECK (length(indexes) > 0
                AND length(indexes) <= {runs.INDEX_SIZE * runs.PAGE_ENTRIES}
                AND length(indexes) % {runs.INDEX_SIZE} = 0)
        )""",
        _leaves_to_runs,
        "DROP TABLE leaves",
    ),
    (
        # Each statement row's authentication tag (an HMAC its server computed: a row
        # written behind the service has none that verifies, and is never appended).
        # Rows stored before have none (NULL): see docs/deploy.md, "Upgrading".
        "ALTER TABLE statements ADD COLUMN tag BLOB",
        # The check value of the key the rows are tagged under (see row_key_check).
        """CREATE TABLE statement_row_key (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            key_check BLOB NOT NULL
        )""",
    ),
]


def _table(level: int) -> str:
    """Where a part of this level lives (a fixed table name, never user input)."""
    return "entry_bundles" if level == ENTRY_BUNDLES else "tile_parts"


#: The parts of one tile, by table (fixed text: a cold proof's tile read is a hot path).
_READ_PARTS = {
    table: f"SELECT start, count, data, interior FROM {table}"  # noqa: S608 (fixed names)
    " WHERE level = ? AND idx = ? ORDER BY start"
    for table in ("tile_parts", "entry_bundles")
}


def _failed(what: str, exc: sqlite3.Error) -> StorageError:
    return StorageError(f"SQLite {what} failed: {exc.__class__.__name__}: {exc}")


#: SQLite's primary result codes of a file it could not open or write: SQLITE_PERM,
#: SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN.
_ACCESS_CODES = frozenset({3, 8, 10, 14})


def _not_writable(path: Path) -> str | None:
    """Why this process cannot write the database ``path`` and the files SQLite keeps
    beside it, as the file system tells (None when it does not say it cannot)."""
    folder = path.parent
    if not folder.is_dir():
        return None  # a directory that does not exist: SQLite's own message says so
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "its directory is on a read-only file system"
    except OSError:
        pass
    if not os.access(folder, os.W_OK | os.X_OK):
        return "its directory is not writable by this user"
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return f"{file.name} is not readable and writable by this user"
    return None


def open_failed(what: str, path: Path, exc: sqlite3.Error) -> StorageError:
    """A connection to the ``what`` (store, index) at ``path`` that could not be opened,
    or set up: when the file system is why (a read-only mount, a directory or a file this
    user may not write), a message that says so and names the file only (never its
    directory: an error may reach an HTTP client).

    Every command opens SQLite read-write, even one that only reads: in WAL mode a reader
    needs the ``-shm`` file beside the database, which a read-only directory cannot get
    (``mode=ro`` fails there unless the file already exists, and ``immutable=1`` would
    ignore what the ``-wal`` holds, or what a writer on another mount adds)."""
    code = getattr(exc, "sqlite_errorcode", None)
    why = _not_writable(path) if code is None or (code & 0xFF) in _ACCESS_CODES else None
    if why is None:
        return _failed("open", exc)
    return StorageError(
        f"cannot open the {what} {path.name}: {why} (SQLite writes beside the database, "
        "its -wal and -shm files, even to read it)",
        hint="Give this user write access to the data directory and its database files (a "
        "read-only mount or directory cannot be used, even by commands that only read).",
        code="store-not-writable",
    )


# -- values read back ----------------------------------------------------------------------
#
# SQLite keeps whatever type a value is given, whatever its column says (a hand edit can
# put text where bytes belong, or a word where a number does; a CHECK does not stop a word,
# ``'x' >= 0`` holds), and fails a whole query on a TEXT value that is not UTF-8. So the
# connections of both SQLite files hand TEXT over as its stored bytes (``text_factory``
# ``bytearray``, told apart from a BLOB's ``bytes``), and every value is read through one
# of these: a value of the wrong type is Corruption naming the column, never a TypeError
# from deep inside a reader, a failed query, or the value itself in a message.


#: What to do about a value of the wrong type in the log's store. The checkpoint and the
#: tiles are read by every command (``log verify`` and ``audit`` too), so none of them is
#: the way out: the store itself is the lead.
STORE_DAMAGED = (
    "The store was edited behind the log's back or is damaged: stop every process using "
    "it and investigate it (restore it from a backup)."
)


def _type_name(value: object) -> str:
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, str | bytearray):  # TEXT (a bytearray, as the connections read it)
        return "text"
    if value is None:
        return "NULL"
    return "a number" if isinstance(value, int | float) else type(value).__name__


def wrong_type(value: object, belongs: str, where: str, *, hint: str) -> Corruption:
    """The error for a value of another type than its column's (``belongs``: what belongs
    there, e.g. ``"bytes belong"``). Names the column and the types, never the value."""
    return Corruption(
        f"{where} holds {_type_name(value)} where {belongs} (edited behind the store's "
        "back, or damaged)",
        hint=hint,
    )


def stored_bytes(value: object, where: str, *, hint: str = STORE_DAMAGED) -> bytes:
    """A BLOB column's value: bytes, else :class:`Corruption` (with ``hint``)."""
    if isinstance(value, bytes):
        return value
    raise wrong_type(value, "bytes belong", where, hint=hint)


def stored_int(value: object, where: str, *, hint: str = STORE_DAMAGED) -> int:
    """An INTEGER column's value: an integer, else :class:`Corruption`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise wrong_type(value, "an integer belongs", where, hint=hint)


def stored_text(value: object, where: str, *, hint: str = STORE_DAMAGED) -> str:
    """A TEXT column's value (a bytearray, as the connections read TEXT) read as UTF-8,
    else :class:`Corruption`. A BLOB is not text, even one of the same bytes: SQLite
    never takes one for the other (``WHERE key = ?`` with text does not find it), so a
    value's type changed behind the store's back is an edit, named as one."""
    if type(value) is bytearray:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise Corruption(
                f"{where} holds bytes that are not UTF-8 text (edited behind the store's "
                "back, or damaged)",
                hint=hint,
            ) from None
    raise wrong_type(value, "text belongs", where, hint=hint)


def _insert(
    conn: sqlite3.Connection,
    insert: str,
    width: int,
    values: Sequence[object],
) -> None:
    """Insert rows of ``width`` columns, given flat, with as few statements as allowed.

    One multi-row ``VALUES`` statement per chunk rather than ``executemany``: the driver
    lets go of the GIL around every statement step, and with another thread busy in Python
    (the sequencer preparing the next batch) each time it takes it back can cost a whole
    switch interval. Measured on 10^6 leaf-index rows beside a hashing thread: over 120 s
    row by row, 2.9 s in chunks.
    """
    per = MAX_VARIABLES // width * width
    one = "(" + ",".join("?" * width) + ")"
    for i in range(0, len(values), per):
        chunk = values[i : i + per]
        marks = ",".join([one] * (len(chunk) // width))
        conn.execute(f"{insert} VALUES {marks}", chunk)


#: A statement row's columns as :func:`_record` reads them.
_STATEMENT_COLUMNS = "entry_id, body, issuer, subject, content_type, registered_at, tag"
#: A statement row's columns as :func:`_backlog_row` reads them.
_BACKLOG_COLUMNS = "seq, entry_id, issuer, subject, content_type, registered_at, tag"


def _tag(value: object) -> bytes:
    """A row's tag: its bytes; NULL (stored without one) or a value of another type (an
    edit) as no tag, which never verifies."""
    return value if isinstance(value, bytes) else b""


def _record(row: Sequence[Any]) -> StatementRecord:
    entry_id, body, issuer, subject, content_type, registered_at, tag = row
    return StatementRecord(
        stored_bytes(entry_id, "statements.entry_id"),
        stored_bytes(body, "statements.body"),
        stored_text(issuer, "statements.issuer"),
        stored_text(subject, "statements.subject"),
        stored_text(content_type, "statements.content_type"),
        stored_int(registered_at, "statements.registered_at"),
        _tag(tag),
    )


def _backlog_row(row: Sequence[Any]) -> BacklogRow:
    seq, entry_id, issuer, subject, content_type, registered_at, tag = row
    try:
        return BacklogRow(
            stored_int(seq, "statements.seq"),
            stored_bytes(entry_id, "statements.entry_id"),
            stored_text(issuer, "statements.issuer"),
            stored_text(subject, "statements.subject"),
            stored_text(content_type, "statements.content_type"),
            stored_int(registered_at, "statements.registered_at"),
            _tag(tag),
        )
    except Corruption:
        # An edit, as any row the service did not write: refused, not a stalled backlog.
        return BacklogRow(int(seq), b"", "", "", "", 0, b"", readable=False)


def _own_rows(conn: sqlite3.Connection, records: Sequence[StatementRecord]) -> dict[bytes, int]:
    """In a statement write, for ``records`` whose entry id a row held already: a row that
    is not the one given, but for its time (another tag, body or column: written behind
    the service), gives way to it under a new number, so that a backlog reads it again.
    The new numbers, by entry id."""
    out: dict[bytes, int] = {}
    for record in {r.entry_id: r for r in records}.values():
        same = conn.execute(
            "SELECT 1 FROM statements WHERE entry_id = ? AND tag IS ? AND body = ?"
            " AND issuer = ? AND subject = ? AND content_type = ?",
            (
                record.entry_id,
                record.tag or None,
                record.body,
                record.issuer,
                record.subject,
                record.content_type,
            ),
        ).fetchone()
        if same is not None:
            continue
        (seq,) = conn.execute(
            "UPDATE statements SET seq = (SELECT max(seq) FROM statements) + 1, body = ?,"
            " issuer = ?, subject = ?, content_type = ?, registered_at = ?, tag = ?"
            " WHERE entry_id = ? RETURNING seq",
            (
                record.body,
                record.issuer,
                record.subject,
                record.content_type,
                record.registered_at,
                record.tag or None,
                record.entry_id,
            ),
        ).fetchone()
        out[record.entry_id] = int(seq)
        replaced_row(record.entry_id, int(seq))
    return out


class SQLiteStore:
    """A :class:`~sealtrail.storage.LogStore` in one SQLite file.

    Safe to share between threads (one connection per thread) and between processes
    (SQLite's own locking; the checkpoint compare-and-swap runs inside one write
    transaction, so two writers can never both commit on top of the same size).
    """

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"unsupported SQLite synchronous setting {synchronous!r}")
        self.synchronous = synchronous
        if not self.path.parent.is_dir():
            raise ConfigError(f"directory of the store {self.path.name} does not exist")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._run_keys = runs.KeyCache()
        try:
            try:
                self._migrate(self._conn())
            except sqlite3.Error as exc:
                raise open_failed("store", self.path, exc) from exc
            self._returning = sqlite3.sqlite_version_info >= (3, 35, 0)
        except BaseException:
            self.close()
            raise

    # -- connections --------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError("the store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                raise open_failed("store", self.path, exc) from exc
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        conn.text_factory = bytearray  # TEXT as its bytes, read through stored_text
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except Error:
            raise
        except sqlite3.Error as exc:
            raise _failed(what, exc) from exc

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > len(_MIGRATIONS):
                raise ConfigError(
                    f"the store has schema version {version}, newer than this Sealtrail "
                    f"understands ({len(_MIGRATIONS)}); upgrade Sealtrail"
                )
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reads --------------------------------------------------------------------------------

    def read_checkpoint(self) -> StoredCheckpoint | None:
        with self._errors("read"):
            row = (
                self._conn()
                .execute("SELECT size, note, indexed FROM checkpoint WHERE id = 0")
                .fetchone()
            )
        if row is None:
            return None
        return StoredCheckpoint(
            stored_int(row[0], "checkpoint.size"),
            stored_bytes(row[1], "checkpoint.note"),
            stored_int(row[2], "checkpoint.indexed"),
        )

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        # The read of every cold proof's tile: no context manager, the query text fixed.
        try:
            rows = self._conn().execute(_READ_PARTS[_table(level)], (level, index)).fetchall()
        except sqlite3.Error as exc:
            raise _failed("read", exc) from exc
        table = _table(level)
        return [
            TilePart(
                level,
                index,
                stored_int(s, f"{table}.start"),
                stored_int(c, f"{table}.count"),
                stored_bytes(d, f"{table}.data"),
                stored_bytes(i, f"{table}.interior"),
            )
            for s, c, d, i in rows
        ]

    def lookup_leaves(self, leaf_hashes: Collection[bytes]) -> dict[bytes, list[int]]:
        asked = list(dict.fromkeys(leaf_hashes))  # each asked-for hash once
        if not asked:
            return {}
        pages: dict[int, bytes] = {}
        with self._errors("read"):
            conn = self._conn()
            conn.execute("BEGIN")  # one snapshot: the runs listed are the runs read
            try:
                spots = runs.wanted(asked, self._run_keys.runs(_Runs(conn).rows(), self._keys))
                for page in {page for _, page, _ in spots}:
                    query = "SELECT indexes FROM leaf_pages WHERE page = ?"
                    row = conn.execute(query, (page,)).fetchone()
                    if row is not None:
                        pages[page] = stored_bytes(row[0], "leaf_pages.indexes")
            finally:
                conn.execute("COMMIT")
        return runs.candidates(asked, spots, pages)

    def _keys(self, numbers: Collection[int]) -> dict[int, bytes]:
        """The stored keys of these runs (on this thread's connection, in its snapshot)."""
        conn = self._conn()
        query = "SELECT run, keys FROM leaf_runs WHERE run = ?"
        rows = [conn.execute(query, (n,)).fetchone() for n in numbers]
        return {
            stored_int(r[0], "leaf_runs.run"): stored_bytes(r[1], "leaf_runs.keys")
            for r in rows
            if r is not None
        }

    # -- the one write ------------------------------------------------------------------------

    def commit(self, commit: Commit) -> None:
        with self._errors("commit"):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT size FROM checkpoint WHERE id = 0").fetchone()
                current = 0 if row is None else stored_int(row[0], "checkpoint.size")
                if current != commit.old_size:
                    raise CheckpointConflict(f"the log is at size {current}, not {commit.old_size}")
                if commit.new_size == 0 and row is not None:
                    raise CheckpointConflict("the log was started already")
                parts = commit.stored_parts()
                # Per level, everything from the commit's first position on is a leftover
                # or being restated: clear it once, then insert.
                first: dict[int, TilePart] = {}
                for part in parts:
                    low = first.get(part.level)
                    if low is None or (part.index, part.start) < (low.index, low.start):
                        first[part.level] = part
                self._make_room(conn, list(first.values()))
                for table in {_table(p.level) for p in parts}:
                    _insert(
                        conn,
                        f"INSERT INTO {table} (level, idx, start, count, data, interior)",
                        6,
                        [
                            value
                            for p in parts
                            if _table(p.level) == table
                            for value in (p.level, p.index, p.start, p.count, p.data, p.interior)
                        ],
                    )
                if commit.leaves:
                    runs.add_run(_Runs(conn), runs.build_run(commit.leaves))
                conn.execute(
                    "INSERT INTO checkpoint (id, size, note, indexed) VALUES (0, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET size = excluded.size,"
                    " note = excluded.note, indexed = excluded.indexed",
                    (commit.new_size, commit.checkpoint, commit.watermark),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _make_room(self, conn: sqlite3.Connection, firsts: Sequence[TilePart]) -> None:
        """Clear the positions from each of ``firsts`` on (a commit's first part per level).

        Anything at or after a part's start is a leftover or being restated, and so is
        everything in later tiles of its level. A part from before it that reaches into it
        (a full part left by a failed write) keeps only its head: those positions are
        committed ones. One statement per table where SQLite has ``DELETE ... RETURNING``
        (3.35): a commit runs few statements, as each one's return to Python may wait for
        the GIL while the sequencer prepares the next batch.
        """
        for table in {_table(p.level) for p in firsts}:
            at = [p for p in firsts if _table(p.level) == table]
            if self._returning:
                terms = " OR ".join(
                    ["(level = ? AND idx >= ? AND (idx > ? OR start + count > ?))"] * len(at)
                )
                removed = conn.execute(
                    f"DELETE FROM {table} WHERE {terms}"  # noqa: S608 (placeholders)
                    " RETURNING level, idx, start, count, data",
                    [v for p in at for v in (p.level, p.index, p.index, p.start)],
                ).fetchall()
            else:
                removed = []
                for p in at:
                    key = (p.level, p.index)
                    removed += conn.execute(
                        f"SELECT level, idx, start, count, data FROM {table}"  # noqa: S608
                        " WHERE level = ? AND idx = ? AND start < ? AND start + count > ?",
                        (*key, p.start, p.start),
                    ).fetchall()
                    conn.execute(
                        f"DELETE FROM {table} WHERE level = ? AND idx = ?"  # noqa: S608
                        " AND start + count > ?",
                        (*key, p.start),
                    )
                    conn.execute(f"DELETE FROM {table} WHERE level = ? AND idx > ?", key)  # noqa: S608
            starts = {(p.level, p.index): p.start for p in at}
            for level, index, start, count, data in removed:
                cut = starts.get((level, index))
                if cut is not None and start < cut:
                    old = TilePart(
                        level,
                        index,
                        stored_int(start, f"{table}.start"),
                        stored_int(count, f"{table}.count"),
                        stored_bytes(data, f"{table}.data"),
                    )
                    head = old.head(cut - old.start)
                    conn.execute(
                        f"INSERT INTO {table} (level, idx, start, count, data, interior)"  # noqa: S608
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (level, index, head.start, head.count, head.data, head.interior),
                    )

    # -- statements ---------------------------------------------------------------------------

    def put_statements(self, records: Sequence[StatementRecord]) -> list[int]:
        if not records:
            return []
        with self._errors("statement write"):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                _insert(
                    conn,
                    f"INSERT OR IGNORE INTO statements ({_STATEMENT_COLUMNS})",
                    7,
                    [
                        v
                        for r in records
                        for v in (
                            r.entry_id,
                            r.body,
                            r.issuer,
                            r.subject,
                            r.content_type,
                            r.registered_at,
                            r.tag or None,
                        )
                    ],
                )
                seqs: dict[bytes, int] = {}
                ids = list({r.entry_id: None for r in records})
                for i in range(0, len(ids), LOOKUP_CHUNK):
                    chunk = ids[i : i + LOOKUP_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT entry_id, seq FROM statements WHERE entry_id IN ({marks})"  # noqa: S608
                    seqs.update(
                        (stored_bytes(e, "statements.entry_id"), stored_int(q, "statements.seq"))
                        for e, q in conn.execute(query, chunk).fetchall()
                    )
                inserted = conn.total_changes - before
                if inserted < len(seqs):
                    # Some were stored already: the rows just inserted hold the highest
                    # numbers (a new row's is the table's highest plus one).
                    fresh = set(sorted(seqs.values())[len(seqs) - inserted :])
                    seqs.update(
                        _own_rows(conn, [r for r in records if seqs[r.entry_id] not in fresh])
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return [seqs[r.entry_id] for r in records]

    def get_statement(self, entry_id: bytes) -> StatementRecord | None:
        with self._errors("read"):
            row = (
                self._conn()
                .execute(
                    f"SELECT {_STATEMENT_COLUMNS} FROM statements WHERE entry_id = ?",  # noqa: S608
                    (entry_id,),
                )
                .fetchone()
            )
        return None if row is None else _record(row)

    def content_types(self, entry_ids: Collection[bytes]) -> dict[bytes, str]:
        ids = list(dict.fromkeys(entry_ids))
        out: dict[bytes, str] = {}
        with self._errors("read"):
            conn = self._conn()
            for i in range(0, len(ids), LOOKUP_CHUNK):
                chunk = ids[i : i + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT entry_id, content_type FROM statements"  # noqa: S608 (marks only)
                    f" WHERE entry_id IN ({marks})",
                    chunk,
                ).fetchall()
                out.update(
                    (
                        stored_bytes(e, "statements.entry_id"),
                        stored_text(t, "statements.content_type"),
                    )
                    for e, t in rows
                )
        return out

    def statements_since(self, seq: int, *, limit: int) -> list[tuple[int, StatementRecord]]:
        with self._errors("read"):
            rows = (
                self._conn()
                .execute(
                    f"SELECT seq, {_STATEMENT_COLUMNS} FROM statements"  # noqa: S608
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
                .fetchall()
            )
        return [(int(r[0]), _record(r[1:])) for r in rows]

    def entries_since(self, seq: int, *, limit: int) -> list[tuple[int, bytes]]:
        with self._errors("read"):
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, entry_id FROM statements WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
                .fetchall()
            )
        return [
            (stored_int(s, "statements.seq"), stored_bytes(e, "statements.entry_id"))
            for s, e in rows
        ]

    def backlog_since(self, seq: int, *, limit: int) -> list[BacklogRow]:
        with self._errors("read"):
            rows = (
                self._conn()
                .execute(
                    f"SELECT {_BACKLOG_COLUMNS} FROM statements"  # noqa: S608
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
                .fetchall()
            )
        return [_backlog_row(r) for r in rows]

    def statements_of_type(self, content_type: str, *, skip: int = 0) -> list[StatementRecord]:
        with self._errors("read"):
            rows = (
                self._conn()
                .execute(
                    f"SELECT {_STATEMENT_COLUMNS} FROM statements"  # noqa: S608
                    " WHERE content_type = ? ORDER BY seq LIMIT -1 OFFSET ?",
                    (content_type, skip),
                )
                .fetchall()
            )
        return [_record(r) for r in rows]

    def statements_of_type_after(
        self, content_type: str, seq: int
    ) -> list[tuple[int, StatementRecord]]:
        with self._errors("read"):
            rows = (
                self._conn()
                .execute(
                    f"SELECT seq, {_STATEMENT_COLUMNS} FROM statements"  # noqa: S608
                    " WHERE content_type = ? AND seq > ? ORDER BY seq",
                    (content_type, seq),
                )
                .fetchall()
            )
        return [(int(r[0]), _record(r[1:])) for r in rows]

    def read_sequenced(self) -> int:
        with self._errors("read"):
            row = self._conn().execute("SELECT seq FROM statements_sequenced").fetchone()
        return 0 if row is None else stored_int(row[0], "statements_sequenced.seq")

    def write_sequenced(self, seq: int) -> None:
        with self._errors("statement write"):
            self._conn().execute(
                "INSERT INTO statements_sequenced (id, seq) VALUES (0, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = max(seq, excluded.seq)",
                (seq,),
            )

    def row_key_check(self, check: bytes, *, replace: bool = False) -> bytes:
        with self._errors("statement write"):
            conn = self._conn()
            conn.execute(
                "INSERT INTO statement_row_key (id, key_check) VALUES (0, ?)"
                " ON CONFLICT (id) DO UPDATE SET key_check = CASE WHEN ?"
                " THEN excluded.key_check ELSE key_check END",
                (check, replace),
            )
            row = conn.execute("SELECT key_check FROM statement_row_key").fetchone()
        return _tag(row[0])

    def recorded_row_key_check(self) -> bytes | None:
        with self._errors("read"):
            row = self._conn().execute("SELECT key_check FROM statement_row_key").fetchone()
        return None if row is None else _tag(row[0])

    def close(self) -> None:
        with self._all_lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    # -- tampering, for attack tests (a database row edited behind the log's back) ------------

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        """Run one raw statement. Only tests and repair tools should ever call this."""
        with self._errors("statement"):
            self._conn().execute(sql, params)
