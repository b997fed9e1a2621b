"""The provenance index in its own SQLite file (``provenance.db`` beside ``log.db``).

Its own file, because it is derived data with its own life: it can be deleted and rebuilt
from the log, and its writes never share a transaction (or a lock) with the log's.
Settings as the log's store (see ARCHITECTURE.md, "SQLite settings"): ``journal_mode=WAL``,
``synchronous=FULL`` — an applied batch survives power loss, so a replay that saw ``apply``
return never indexes an entry twice or skips one.

Schema (``PRAGMA user_version`` tracks migrations)::

    idx_entries(idx, entry_id, kind, org, outcome, code)   one verdict per log entry
    idx_subjects(subject, idx)                      what each entry is about (timelines)
    idx_changes(idx, pos, tbl, key, value)          every row change, in order (history,
                                                    point-in-time reads, the audit)
    idx_rows(tbl, key, value)                       the current rows
    idx_claims(holder, exclusive, expires)          who uses the index (not its data)
    idx_meta(one, rules_version)                    one row: the rules version the entries
                                                    were computed with (schema 3)

The applied size is ``max(idx) + 1`` of ``idx_entries``, not a counter of its own: a counter
is a second record of the same fact, which a bug or a hand edit can set out of step with the
entries; deriving it leaves one. ``apply`` refuses a batch that does not start there, and
``idx``'s primary key refuses an entry twice, so the entries stay dense from 0.

SQLite keeps whatever a hand edit gives it, so every value is read as the log's store
reads its own (``sqlite.py``, "values read back"): a text column's value is its stored
bytes read as UTF-8 (a TEXT or a BLOB alike, as the PostgreSQL index stores every text as
bytes), and anything else (bytes that are not UTF-8, text where bytes belong, a word where
a number does) is :class:`Corruption`, never a ``TypeError`` or a failed query. As TEXT is
handed over as its bytes, one undecodable value is one row's damage: the audit's dumps
(``mark_damaged``) read past it and name it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from sealtrail.errors import (
    ConfigError,
    Conflict,
    Corruption,
    Error,
    InvalidInput,
    NotFound,
    StorageError,
)

from ._index import (
    CLAIM_HORIZON,
    CLAIM_TTL,
    Change,
    IndexedEntry,
    check_batch,
    check_claim,
    check_read,
    check_rules_version,
    claim_conflict,
    rules_conflict,
)
from .sqlite import (
    BUSY_TIMEOUT_MS,
    MAX_VARIABLES,
    _insert,
    open_failed,
    stored_bytes,
    stored_int,
    stored_text,
    wrong_type,
)

__all__ = ["SQLiteIndex"]

#: Page cache per connection, in KiB.
CACHE_KIB = 16384
#: Rows fetched at a time by the dumps (they never hold a whole table in memory).
DUMP_CHUNK = 1024

_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE idx_entries (
            idx INTEGER PRIMARY KEY CHECK (idx >= 0),
            entry_id BLOB NOT NULL CHECK (length(entry_id) = 32),
            kind TEXT NOT NULL,
            org TEXT NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('applied', 'refused', 'skipped')),
            code TEXT CHECK (outcome = 'skipped' OR (code IS NULL) = (outcome = 'applied'))
        )""",
        # Keyed for timelines (subject, then index); the index by entry serves ``entries``.
        """CREATE TABLE idx_subjects (
            subject TEXT NOT NULL,
            idx INTEGER NOT NULL,
            PRIMARY KEY (subject, idx)
        ) WITHOUT ROWID""",
        "CREATE INDEX idx_subjects_by_entry ON idx_subjects (idx)",
        # A rowid table: values run up to 1 MiB, too large for a WITHOUT ROWID B-tree.
        """CREATE TABLE idx_changes (
            idx INTEGER NOT NULL,
            pos INTEGER NOT NULL CHECK (pos >= 0),
            tbl TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT,
            PRIMARY KEY (idx, pos)
        )""",
        # ``row_at`` and ``history``: one seek, then a walk in (index, position) order.
        "CREATE INDEX idx_changes_by_key ON idx_changes (tbl, key, idx, pos)",
        """CREATE TABLE idx_rows (
            tbl TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (tbl, key)
        ) WITHOUT ROWID""",
    ),
    (
        # Who uses the index (IndexStore.claim): not index data, kept by ``reset``.
        """CREATE TABLE idx_claims (
            holder TEXT PRIMARY KEY,
            exclusive INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
            expires REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # The rules version the index was built with (IndexStore.rules_version), one row.
        # An index that holds entries was built before versions were recorded, by the rules
        # the provenance layer numbers 1 (every release before this schema), so it gets 1
        # and a release of newer rules refuses it rather than add its rows to the old ones.
        # An empty one holds nothing computed by any rules: it records none, and the first
        # batch applied to it records its own. (Storage does not know the current version;
        # the applier passes it in.) In the migration's write transaction, so no batch of
        # an older server lands between the look at the entries and the version.
        """CREATE TABLE idx_meta (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            rules_version INTEGER CHECK (rules_version >= 1)
        )""",
        "INSERT INTO idx_meta (one, rules_version)"
        " SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM idx_entries) THEN 1 END",
    ),
]

_T = TypeVar("_T")

_APPLIED = "SELECT coalesce(max(idx) + 1, 0) FROM idx_entries"
_RULES = "SELECT rules_version FROM idx_meta WHERE one = 1"
#: Records the rules version (the row is put back if it was deleted behind the index).
_STAMP = "INSERT OR REPLACE INTO idx_meta (one, rules_version) VALUES (1, ?)"
_ENTRY_COLUMNS = "idx, entry_id, kind, org, outcome, code"

#: What to do about a value the index cannot have written. The audit reads past every one
#: of them (its dumps mark what they cannot read), so it is the command to run.
DAMAGED = (
    "The index was edited behind the log's back: run `sealtrail audit` to name what "
    "differs, then rebuild the index from the log (`sealtrail index rebuild`, every "
    "server of the index stopped)."
)

#: One converter of a text column's value: strict (Corruption) or marking (lone surrogates).
_Text = Callable[[object, str], str]


def _text(value: object, where: str) -> str:
    """A TEXT column's value as UTF-8, else :class:`Corruption` (a BLOB included: see
    :func:`stored_text`)."""
    if type(value) is bytearray:  # the common case, without building a message
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return stored_text(value, f"the index's {where}", hint=DAMAGED)


#: Put before a BLOB's bytes where text belongs (the dumps' ``mark_damaged``): a lone
#: surrogate standing for the byte 0x80, which begins no UTF-8 text, so the value never
#: equals the text of the same bytes the log gives.
BLOB_MARK = "\udc80"


def _marked(value: object, where: str) -> str:
    """As :func:`_text`, but bytes that are not UTF-8 are read with each byte that does
    not decode as a lone surrogate (``surrogateescape``), which no applied text holds, and
    a BLOB's bytes after :data:`BLOB_MARK`: the dumps' ``mark_damaged``."""
    if type(value) is bytearray:
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, bytes):
        return BLOB_MARK + value.decode("utf-8", "surrogateescape")
    raise wrong_type(value, "text belongs", f"the index's {where}", hint=DAMAGED)


def _maybe(value: object, where: str, text: _Text = _text) -> str | None:
    return None if value is None else text(value, where)


def _int(value: object, where: str) -> int:
    if type(value) is int:  # the common case, without building a message
        return value
    return stored_int(value, f"the index's {where}", hint=DAMAGED)


def _entry_id(value: object, *, marked: bool) -> bytes:
    if marked and not isinstance(value, bytes):
        return b""  # no entry's id: read as different from any (IndexStore.dump_entries)
    return stored_bytes(value, "the index's idx_entries.entry_id", hint=DAMAGED)


def _holder(value: object) -> str:
    """A claim's holder, shown and never compared here: readable whatever was stored."""
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


class _Dump(Generic[_T]):
    """An iterator over a dump that gives its connection back when exhausted, failed or
    closed (or dropped unstarted: a plain generator would hold the snapshot open)."""

    def __init__(self, rows: Iterator[_T], release: Callable[[], None]) -> None:
        self._rows = rows
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> _Dump[_T]:
        return self

    def __next__(self) -> _T:
        try:
            return next(self._rows)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        self.close()


def _entry(row: Sequence[Any], subjects: Sequence[str], *, marked: bool = False) -> IndexedEntry:
    idx, entry_id, kind, org, outcome, code = row
    text = _marked if marked else _text
    return IndexedEntry(
        _int(idx, "idx_entries.idx"),
        _entry_id(entry_id, marked=marked),
        text(kind, "idx_entries.kind"),
        text(org, "idx_entries.org"),
        text(outcome, "idx_entries.outcome"),
        _maybe(code, "idx_entries.code", text),
        tuple(subjects),
    )


def _with_subjects(
    rows: Sequence[Sequence[Any]], subjects: Sequence[Sequence[Any]]
) -> list[IndexedEntry]:
    """Join entry rows with ``(idx, subject)`` rows, both ordered by index."""
    by_entry: dict[int, list[str]] = {}
    for idx, subject in subjects:
        by_entry.setdefault(_int(idx, "idx_subjects.idx"), []).append(
            _text(subject, "idx_subjects.subject")
        )
    return [_entry(row, by_entry.get(_int(row[0], "idx_entries.idx"), ())) for row in rows]


def _change(row: Sequence[Any], text: _Text = _text) -> tuple[int, int, str, str, str | None]:
    i, p, t, k, v = row
    return (
        _int(i, "idx_changes.idx"),
        _int(p, "idx_changes.pos"),
        text(t, "idx_changes.tbl"),
        text(k, "idx_changes.key"),
        _maybe(v, "idx_changes.value", text),
    )


def _flatten(
    batch: Sequence[tuple[IndexedEntry, Sequence[Change]]],
) -> tuple[list[object], list[object], list[object], list[object], list[object]]:
    """A batch's rows, flat, for multi-row inserts: entries, subjects, changes, and the
    current rows it leaves (upserts, then deletions), each row once, in key order."""
    entries: list[object] = []
    subjects: list[object] = []
    changes: list[object] = []
    final: dict[tuple[str, str], str | None] = {}
    for entry, entry_changes in batch:
        entries += (entry.index, entry.entry_id, entry.kind, entry.org, entry.outcome, entry.code)
        for subject in entry.subjects:
            subjects += (subject, entry.index)
        for position, (table, key, value) in enumerate(entry_changes):
            changes += (entry.index, position, table, key, value)
            final[(table, key)] = value  # a later change of the key wins
    # Rows in key order: the B-tree is walked once, left to right.
    upserts: list[object] = []
    deletes: list[object] = []
    for (table, key), value in sorted(final.items(), key=lambda item: item[0]):
        if value is None:
            deletes += (table, key)
        else:
            upserts += (table, key, value)
    return entries, subjects, changes, upserts, deletes


class SQLiteIndex:
    """An :class:`~sealtrail.storage.IndexStore` in one SQLite file.

    Safe to share between threads (one connection per thread, plus one per open dump) and
    between processes (SQLite's locking; the check of ``applied_size`` runs inside the
    write transaction, so two writers can never both apply the same entry).
    """

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"unsupported SQLite synchronous setting {synchronous!r}")
        self.synchronous = synchronous
        if not self.path.parent.is_dir():
            raise ConfigError(f"directory of the index {self.path.name} does not exist")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        try:
            try:
                self._migrate(self._conn())
            except sqlite3.Error as exc:
                raise open_failed("index", self.path, exc) from exc
        except BaseException:
            self.close()
            raise

    # -- connections ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A new connection with the durability settings, registered for ``close``."""
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise open_failed("index", self.path, exc) from exc
        # TEXT as its stored bytes, decoded by the reads (module docs): a value that is not
        # UTF-8 is then one row's Corruption, or a marked row in a dump, not a query failed
        # half-way (which would read as the database failing).
        conn.text_factory = bytearray
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        except sqlite3.Error as exc:
            conn.close()
            raise open_failed("index", self.path, exc) from exc
        except BaseException:
            conn.close()
            raise
        with self._all_lock:
            if self._closed:
                conn.close()
                raise StorageError("the index is closed")
            self._all.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError("the index is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except Error:
            raise
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite {what} failed: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on this thread's connection: every query sees one state."""
        with self._errors("read"):
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > len(_MIGRATIONS):
                raise ConfigError(
                    f"the index has schema version {version}, newer than this Sealtrail "
                    f"understands ({len(_MIGRATIONS)}); upgrade Sealtrail"
                )
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- the one write --------------------------------------------------------------------------

    def applied_size(self) -> int:
        with self._errors("read"):
            (size,) = self._conn().execute(_APPLIED).fetchone()
        return int(size)

    def rules_version(self) -> int | None:
        with self._errors("read"):
            found = self._conn().execute(_RULES).fetchone()
        return None if found is None or found[0] is None else _int(found[0], "rules_version")

    def apply(
        self,
        batch: Sequence[tuple[IndexedEntry, Sequence[Change]]],
        *,
        rules_version: int | None = None,
    ) -> None:
        check_batch(batch)
        check_rules_version(rules_version)
        if not batch:
            return
        entries, subjects, changes, upserts, deletes = _flatten(batch)
        with self._errors("apply"):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                applied, recorded = conn.execute(f"SELECT ({_APPLIED}), ({_RULES})").fetchone()
                if recorded is not None:
                    recorded = _int(recorded, "rules_version")
                first = batch[0][0].index
                if first != applied:
                    raise Conflict(
                        f"the index has applied {applied} entries; "
                        f"a batch starting at entry {first} does not follow",
                        code="index-conflict",
                        hint="Read applied_size() and resume the replay from there.",
                    )
                if recorded != rules_version:
                    if applied:
                        raise rules_conflict(recorded, rules_version)
                    conn.execute(_STAMP, (rules_version,))  # the empty index's first batch
                _insert(conn, f"INSERT INTO idx_entries ({_ENTRY_COLUMNS})", 6, entries)
                _insert(conn, "INSERT INTO idx_subjects (subject, idx)", 2, subjects)
                _insert(conn, "INSERT INTO idx_changes (idx, pos, tbl, key, value)", 5, changes)
                _insert(conn, "INSERT OR REPLACE INTO idx_rows (tbl, key, value)", 3, upserts)
                per = MAX_VARIABLES // 2 * 2
                for i in range(0, len(deletes), per):
                    chunk = deletes[i : i + per]
                    marks = ",".join(["(?,?)"] * (len(chunk) // 2))
                    conn.execute(
                        f"DELETE FROM idx_rows WHERE (tbl, key) IN (VALUES {marks})",  # noqa: S608
                        chunk,
                    )
                # If we crash before this COMMIT, none of the batch is visible: the replay
                # resumes from the same applied size. Once it returns, the batch is durable
                # (synchronous=FULL) and applied_size has moved past it.
                conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # The batch was checked and follows the entries stored, so a clash can only
                # be with rows edited or left behind the index's back (e.g. changes of an
                # entry whose verdict was deleted).
                raise Corruption(
                    f"the index contradicts itself: {exc}",
                    hint="Run `sealtrail audit`, then reset and rebuild the index from the log.",
                ) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def reset(self, *, rules_version: int | None = None) -> None:
        check_rules_version(rules_version)
        with self._errors("reset"):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in ("idx_entries", "idx_subjects", "idx_changes", "idx_rows"):
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608
                conn.execute(_STAMP, (rules_version,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def claim(self, holder: str, *, exclusive: bool = False, ttl: float = CLAIM_TTL) -> None:
        check_claim(holder, ttl)
        with self._errors("claim"):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()  # one host's processes share the file: one clock
                # Only claims that stand (claim_stands): one that expires further ahead
                # than any claim is made was written by hand, and holds nothing. (A word
                # or bytes stored as the expiry sorts after every number: beyond too.)
                other = conn.execute(
                    "SELECT holder, exclusive, expires FROM idx_claims WHERE holder != ?"
                    " AND expires > ? AND expires <= ? AND (exclusive = 1 OR ?)"
                    " ORDER BY exclusive DESC LIMIT 1",
                    (holder, now, now + CLAIM_HORIZON, exclusive),
                ).fetchone()
                if other is not None:
                    raise claim_conflict(_holder(other[0]), bool(other[1]), other[2] - now)
                conn.execute(
                    "DELETE FROM idx_claims WHERE NOT (expires > ? AND expires <= ?)",
                    (now, now + CLAIM_HORIZON),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO idx_claims (holder, exclusive, expires)"
                    " VALUES (?, ?, ?)",
                    (holder, int(exclusive), now + ttl),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def release(self, holder: str) -> None:
        with self._errors("release"):
            self._conn().execute("DELETE FROM idx_claims WHERE holder = ?", (holder,))

    def claims(self) -> list[tuple[str, bool, float]]:
        now = time.time()
        with self._errors("read"):
            rows = (
                self._conn()
                .execute(
                    "SELECT holder, exclusive, expires FROM idx_claims"
                    " WHERE expires > ? AND expires <= ? ORDER BY holder",
                    (now, now + CLAIM_HORIZON),
                )
                .fetchall()
            )
        return [
            (_holder(holder), bool(exclusive), until - now) for holder, exclusive, until in rows
        ]

    def close(self) -> None:
        with self._all_lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    # -- reads ----------------------------------------------------------------------------------

    def row(self, table: str, key: str) -> str | None:
        with self._errors("read"):
            found = (
                self._conn()
                .execute("SELECT value FROM idx_rows WHERE tbl = ? AND key = ?", (table, key))
                .fetchone()
            )
        return None if found is None else _text(found[0], "idx_rows.value")

    def rows(self, table: str) -> list[tuple[str, str]]:
        with self._errors("read"):
            found = (
                self._conn()
                .execute("SELECT key, value FROM idx_rows WHERE tbl = ? ORDER BY key", (table,))
                .fetchall()
            )
        return [(_text(k, "idx_rows.key"), _text(v, "idx_rows.value")) for k, v in found]

    def row_at(self, table: str, key: str, size: int) -> str | None:
        if size < 0:
            raise InvalidInput("a log size is >= 0", code="index-bad-read")
        with self._errors("read"):
            # One statement, so the applied size and the value come from one snapshot.
            applied, value = (
                self._conn()
                .execute(
                    f"SELECT ({_APPLIED}), (SELECT value FROM idx_changes"  # noqa: S608
                    " WHERE tbl = ? AND key = ? AND idx < ? ORDER BY idx DESC, pos DESC LIMIT 1)",
                    (table, key, size),
                )
                .fetchone()
            )
        if size > applied:
            raise NotFound(f"the index has applied {applied} entries, not {size} (yet)")
        return _maybe(value, "idx_changes.value")

    def history(self, table: str, key: str) -> list[tuple[int, str | None]]:
        with self._errors("read"):
            found = (
                self._conn()
                .execute(
                    "SELECT idx, value FROM idx_changes WHERE tbl = ? AND key = ?"
                    " ORDER BY idx, pos",
                    (table, key),
                )
                .fetchall()
            )
        return [(_int(i, "idx_changes.idx"), _maybe(v, "idx_changes.value")) for i, v in found]

    def entries(self, start: int, stop: int) -> list[IndexedEntry]:
        check_read(start, stop - start)
        with self._snapshot() as conn:
            found = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM idx_entries"  # noqa: S608
                " WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, stop),
            ).fetchall()
            subjects = conn.execute(
                "SELECT idx, subject FROM idx_subjects WHERE idx >= ? AND idx < ?"
                " ORDER BY idx, subject",
                (start, stop),
            ).fetchall()
        return _with_subjects(found, subjects)

    def changes(self, start: int, stop: int) -> list[tuple[int, int, str, str, str | None]]:
        check_read(start, stop - start)
        with self._snapshot() as conn:
            found = conn.execute(
                "SELECT idx, pos, tbl, key, value FROM idx_changes"
                " WHERE idx >= ? AND idx < ? ORDER BY idx, pos",
                (start, stop),
            ).fetchall()
        return [_change(row) for row in found]

    def entries_about(
        self, subject: str, *, start: int = 0, limit: int = 1000
    ) -> list[IndexedEntry]:
        check_read(start, limit, least=1)
        with self._snapshot() as conn:
            found = conn.execute(
                "SELECT e.idx, e.entry_id, e.kind, e.org, e.outcome, e.code"
                " FROM idx_subjects AS s JOIN idx_entries AS e ON e.idx = s.idx"
                " WHERE s.subject = ? AND s.idx >= ? ORDER BY s.idx LIMIT ?",
                (subject, start, limit),
            ).fetchall()
            indexes = [_int(row[0], "idx_entries.idx") for row in found]
            subjects: list[Any] = []
            for i in range(0, len(indexes), MAX_VARIABLES):
                chunk = indexes[i : i + MAX_VARIABLES]
                marks = ",".join("?" * len(chunk))
                subjects += conn.execute(
                    f"SELECT idx, subject FROM idx_subjects WHERE idx IN ({marks})"  # noqa: S608
                    " ORDER BY idx, subject",
                    chunk,
                ).fetchall()
        return _with_subjects(found, subjects)

    # -- dumps: one snapshot each, on a connection of their own ---------------------------------

    def _dump(self, *queries: str) -> tuple[sqlite3.Connection, list[sqlite3.Cursor]]:
        """Open a read transaction on a new connection and start ``queries`` in it.

        Started here, not on the first ``next``, so that the snapshot is the index as it
        was when the dump was asked for. Its own connection, so that the caller may keep
        using this thread's connection (even to write) while it iterates.
        """
        with self._errors("read"):
            conn = self._connect()
            try:
                conn.execute("BEGIN")
                return conn, [conn.execute(query) for query in queries]
            except BaseException:
                self._release(conn)
                raise

    def _fetch(self, cursor: sqlite3.Cursor) -> Iterator[Any]:
        while True:
            with self._errors("read"):
                chunk = cursor.fetchmany(DUMP_CHUNK)
            if not chunk:
                return
            yield from chunk

    def dump_rows(self, *, mark_damaged: bool = False) -> Iterator[tuple[str, str, str]]:
        conn, (cursor,) = self._dump("SELECT tbl, key, value FROM idx_rows ORDER BY tbl, key")
        text = _marked if mark_damaged else _text
        rows = (
            (text(t, "idx_rows.tbl"), text(k, "idx_rows.key"), text(v, "idx_rows.value"))
            for t, k, v in self._fetch(cursor)
        )
        return _Dump(rows, lambda: self._release(conn))

    def dump_changes(
        self, *, mark_damaged: bool = False
    ) -> Iterator[tuple[int, int, str, str, str | None]]:
        conn, (cursor,) = self._dump(
            "SELECT idx, pos, tbl, key, value FROM idx_changes ORDER BY idx, pos"
        )
        text = _marked if mark_damaged else _text
        rows = (_change(row, text) for row in self._fetch(cursor))
        return _Dump(rows, lambda: self._release(conn))

    def dump_entries(self, *, mark_damaged: bool = False) -> Iterator[IndexedEntry]:
        conn, (entries, subjects) = self._dump(
            f"SELECT {_ENTRY_COLUMNS} FROM idx_entries ORDER BY idx",  # noqa: S608
            "SELECT idx, subject FROM idx_subjects ORDER BY idx, subject",
        )
        merged = self._merge(entries, subjects, marked=mark_damaged)
        return _Dump(merged, lambda: self._release(conn))

    def _merge(
        self, entries: sqlite3.Cursor, subjects: sqlite3.Cursor, *, marked: bool
    ) -> Iterator[IndexedEntry]:
        """Join entries with their subjects, both ordered by index (a merge join)."""
        text = _marked if marked else _text
        rows = self._fetch(subjects)
        pending = next(rows, None)
        for row in self._fetch(entries):
            idx = _int(row[0], "idx_entries.idx")
            mine: list[str] = []
            # A subject row of an entry that is not stored is passed over: the audit
            # compares entries with a replay and finds that entry missing. So is one whose
            # index is not a number (edited; no read joins it to an entry): the entry it
            # was taken from lacks it.
            while pending is not None:
                at = pending[0]
                if isinstance(at, int):
                    if at > idx:
                        break
                    if at == idx:
                        mine.append(text(pending[1], "idx_subjects.subject"))
                pending = next(rows, None)
            yield _entry(row, mine, marked=marked)

    # -- tampering, for audit tests (the index edited behind the log's back) -------------------

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        """Run one raw statement. Only tests and repair tools should ever call this."""
        with self._errors("statement"):
            self._conn().execute(sql, params)
