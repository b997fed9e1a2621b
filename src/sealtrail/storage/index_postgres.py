"""The provenance index on PostgreSQL (psycopg 3), for deployments of several processes.

Same contract and conformance suite as :class:`~sealtrail.storage.SQLiteIndex`; no shared
code beyond the validation in ``_index.py`` and the log store's session settings (durable
commits, an end to transactions left waiting by a stopped process). The URL is a libpq
URL; a schema other than ``public`` is chosen with ``?options=-csearch_path%3D<schema>``
(the tests run each case in a schema of its own that way).

Schema (``idx_meta.schema_version`` tracks migrations)::

    idx_meta(one, schema_version, rules_version)    one row: the schema's version, the
                                                    rules version the entries were computed
                                                    with (schema 3), and the lock every
                                                    writer takes (see ``apply``)
    idx_entries(idx, entry_id, kind, org, outcome, code)
    idx_subjects(subject, idx)
    idx_changes(idx, pos, tbl, key, value)          history, row_at, the audit
    idx_rows(tbl, key, value)                       the current rows
    idx_claims(holder, exclusive, expires)          who uses the index (not its data)

Texts (table names, keys, values, subjects, kinds, organizations, codes) are stored as
``bytea`` holding their UTF-8, not as ``text``: PostgreSQL ``text`` cannot hold U+0000, which
the contract allows (and the conformance suite stores), and byte order is the code-point
order the contract asks for whatever the database's collation. An operator reads a value
with ``convert_from(value, 'UTF8')``. Bytes that are not UTF-8 (a hand edit) read back as
:class:`Corruption`, one row at a time: the audit's dumps (``mark_damaged``) read past such
a row and name it. The outcome, a closed set of ASCII words, is ``text``.

As with SQLite, the applied size is ``max(idx) + 1`` of ``idx_entries``, not a counter.
Connections come from a :class:`psycopg_pool.ConnectionPool`; a dump holds a connection of
its own (outside the pool, so that dumps left open never starve the other calls). Opening
the index makes one connection directly first, as the log's store does: a server that is
down, or a URL that names the wrong host, user or database, fails at once with libpq's
reason instead of after the pool's timeout of retries.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

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
from .postgres import (
    IDLE_IN_TRANSACTION,
    durable_commits,
    migration_due,
    schema_version,
    writable_for_migration,
)

__all__ = ["PostgresIndex"]

#: Rows fetched at a time by the dumps (server-side cursors: never a whole table in memory).
DUMP_CHUNK = 1024
#: Seconds to wait for a connection (at open, and from a busy pool) before a StorageError.
CONNECT_TIMEOUT = 10.0

#: ``application_name`` of the index's connections, unless the URL sets one.
APPLICATION_NAME = "sealtrail-index"

# The pool logs each failed attempt to connect (a warning of two lines). A process that set
# up logging (``sealtrail serve``) still gets them, with their time and level; a command
# that did not would have Python print them bare on stderr, around the one error the
# command reports. So the pool's logger gets a handler that drops what reaches it, and its
# records still go on to the handlers a process installed.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

#: A name libpq quotes in a message (a host, a user, a database).
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")

_Conn = psycopg.Connection[tuple[Any, ...]]
_Cursor = psycopg.ServerCursor[tuple[Any, ...]]

#: Each migration is a list of statements, run in one transaction with the version bump.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE idx_entries (
            idx bigint PRIMARY KEY CHECK (idx >= 0),
            entry_id bytea NOT NULL CHECK (length(entry_id) = 32),
            kind bytea NOT NULL,
            org bytea NOT NULL,
            outcome text NOT NULL CHECK (outcome IN ('applied', 'refused', 'skipped')),
            code bytea CHECK (outcome = 'skipped' OR (code IS NULL) = (outcome = 'applied'))
        )""",
        # Keyed for timelines (subject, then index); the index by entry serves ``entries``.
        """CREATE TABLE idx_subjects (
            subject bytea NOT NULL,
            idx bigint NOT NULL,
            PRIMARY KEY (subject, idx)
        )""",
        "CREATE INDEX idx_subjects_by_entry ON idx_subjects (idx)",
        """CREATE TABLE idx_changes (
            idx bigint NOT NULL,
            pos integer NOT NULL CHECK (pos >= 0),
            tbl bytea NOT NULL,
            key bytea NOT NULL,
            value bytea,
            PRIMARY KEY (idx, pos)
        )""",
        # ``row_at`` and ``history``: one seek, then a walk in (index, position) order.
        "CREATE INDEX idx_changes_by_key ON idx_changes (tbl, key, idx, pos)",
        """CREATE TABLE idx_rows (
            tbl bytea NOT NULL,
            key bytea NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (tbl, key)
        )""",
    ),
    (
        # Who uses the index (IndexStore.claim): not index data, kept by ``reset``.
        """CREATE TABLE idx_claims (
            holder text PRIMARY KEY,
            exclusive boolean NOT NULL,
            expires double precision NOT NULL
        )""",
    ),
    (
        # The rules version the index was built with (IndexStore.rules_version). An index
        # that holds entries was built before versions were recorded, by the rules the
        # provenance layer numbers 1 (every release before this schema), so it gets 1 and a
        # release of newer rules refuses it rather than add its rows to the old ones. An
        # empty one holds nothing computed by any rules: it records none, and the first
        # batch applied to it records its own. (Storage does not know the current version;
        # the applier passes it in.) The migration holds the idx_meta row, the writers'
        # lock, so no batch of an older server lands between the look and the version.
        "ALTER TABLE idx_meta ADD COLUMN rules_version integer CHECK (rules_version >= 1)",
        "UPDATE idx_meta SET rules_version = 1 WHERE EXISTS (SELECT FROM idx_entries)",
    ),
]

_TABLES = ("idx_entries", "idx_subjects", "idx_changes", "idx_rows")
_APPLIED = "SELECT coalesce(max(idx) + 1, 0) FROM idx_entries"
#: An entry's columns with its subjects (ordered by their bytes, i.e. by code point), so
#: that one statement — one snapshot — reads whole entries.
_ENTRY = (
    "e.idx, e.entry_id, e.kind, e.org, e.outcome, e.code,"
    " ARRAY(SELECT s2.subject FROM idx_subjects AS s2 WHERE s2.idx = e.idx"
    " ORDER BY s2.subject)"
)

_T = TypeVar("_T")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")  # check_batch has refused what does not encode


#: What to do about a value the index cannot have written. The audit reads past every one
#: of them (its dumps mark what they cannot read), so it is the command to run.
DAMAGED = (
    "The index was edited behind the log's back: run `sealtrail audit` to name what "
    "differs, then rebuild the index from the log (`sealtrail index rebuild`, every "
    "server of the index stopped)."
)


def _text(data: object) -> str:
    try:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError
        return bytes(data).decode("utf-8")
    except (UnicodeDecodeError, TypeError):
        raise Corruption(
            "the index holds bytes that are not UTF-8 text (edited behind its back)",
            hint=DAMAGED,
        ) from None


def _marked(data: object) -> str:
    """As :func:`_text`, but bytes that are not UTF-8 are read with each byte that does
    not decode as a lone surrogate (``surrogateescape``), which no applied text holds:
    the dumps' ``mark_damaged``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return _text(data)  # not bytes: cannot be (the columns are bytea), and refused
    return bytes(data).decode("utf-8", "surrogateescape")


def _maybe(data: object, text: Callable[[object], str] = _text) -> str | None:
    return None if data is None else text(data)


def _entry(row: Sequence[Any], *, marked: bool = False) -> IndexedEntry:
    idx, entry_id, kind, org, outcome, code, subjects = row
    text = _marked if marked else _text
    return IndexedEntry(
        int(idx),
        bytes(entry_id),
        text(kind),
        text(org),
        str(outcome),
        _maybe(code, text),
        tuple(text(s) for s in subjects),
    )


def _marked_entry(row: Sequence[Any]) -> IndexedEntry:
    return _entry(row, marked=True)


def _storage_error(what: str, exc: psycopg.Error) -> StorageError:
    # Only the class and SQLSTATE: psycopg's messages can carry the host, the user, SQL
    # and (in DETAIL) the keys or values of a row, none of which belongs in an error.
    state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    return StorageError(
        f"PostgreSQL {what} failed: {exc.__class__.__name__}{state}",
        hint="Check that the PostgreSQL server is reachable and healthy, then retry.",
    )


def _not_connected(exc: psycopg.Error, url: str) -> StorageError:
    """A first connection that failed: libpq's reason, without the host, the user or the
    password it may name (the last clause of its first line, quoted names elided)."""
    line = (str(exc).strip().splitlines() or [""])[0]
    reason = " ".join(_QUOTED.sub("…", line.rsplit("failed: ", 1)[-1]).split())
    with suppress(psycopg.Error):
        password = conninfo_to_dict(url).get("password")
        if password:
            reason = reason.replace(str(password), "…")
    return StorageError(
        "cannot connect to the PostgreSQL server of the provenance index: "
        f"{reason or exc.__class__.__name__}",
        hint="Check that the server is running and accepts connections, and the host, port, "
        "user and database of the index URL (postgresql://user@host:5432/dbname); a password "
        "goes in ~/.pgpass, a passfile or PGPASSWORD, never in the URL.",
    )


def _columns(
    batch: Sequence[tuple[IndexedEntry, Sequence[Change]]],
) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]], list[list[Any]], list[list[Any]]]:
    """A batch as columns, one array parameter each: entries, subjects, changes, and the
    current rows it leaves (upserts, then deletions), each row once, in key order."""
    entries: list[list[Any]] = [[], [], [], [], [], []]
    subjects: list[list[Any]] = [[], []]
    changes: list[list[Any]] = [[], [], [], [], []]
    final: dict[tuple[bytes, bytes], bytes | None] = {}
    for entry, entry_changes in batch:
        for column, value in zip(
            entries,
            (
                entry.index,
                entry.entry_id,
                _utf8(entry.kind),
                _utf8(entry.org),
                entry.outcome,
                None if entry.code is None else _utf8(entry.code),
            ),
            strict=True,
        ):
            column.append(value)
        for subject in entry.subjects:
            subjects[0].append(_utf8(subject))
            subjects[1].append(entry.index)
        for position, (table, key, value) in enumerate(entry_changes):
            row = (_utf8(table), _utf8(key), None if value is None else _utf8(value))
            for column, item in zip(changes, (entry.index, position, *row), strict=True):
                column.append(item)
            final[row[:2]] = row[2]  # a later change of the key wins
    upserts: list[list[Any]] = [[], [], []]
    deletes: list[list[Any]] = [[], []]
    for (table_b, key_b), value_b in sorted(final.items(), key=lambda item: item[0]):
        if value_b is None:
            deletes[0].append(table_b)
            deletes[1].append(key_b)
        else:
            for column_b, item_b in zip(upserts, (table_b, key_b, value_b), strict=True):
                column_b.append(item_b)
    return entries, subjects, changes, upserts, deletes


def _close_dump(conn: _Conn, cursor: _Cursor | None) -> None:
    """Close a dump's cursor, then its connection (which ends its read transaction)."""
    if cursor is not None:
        # The connection is going anyway: closing it ends the cursor too.
        with suppress(psycopg.Error):
            cursor.close()
    conn.close()


class _Dump(Generic[_T]):
    """An iterator over a dump that closes its connection when exhausted, failed or
    closed (or dropped unstarted)."""

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


class PostgresIndex:
    """An :class:`~sealtrail.storage.IndexStore` in one PostgreSQL schema.

    Safe to share between threads (a connection pool) and between processes and hosts:
    writers serialize on the ``idx_meta`` row (see :meth:`apply`), so two indexers racing
    for the same entries apply them once, and the other gets :class:`Conflict`.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        # The URL may hold a password: it is kept to open dump connections, never shown.
        self._url = url
        self._timeout = timeout
        #: open dumps: their connections and server-side cursors (None until declared)
        self._dumps: dict[_Conn, _Cursor | None] = {}
        self._dumps_lock = threading.Lock()
        self._closed = False
        connect_kwargs = self._connect_kwargs()
        # One attempt of our own first, which fails at once on a server that is down or a
        # wrong URL (the pool would retry until its timeout), and migrates the schema.
        try:
            first: _Conn = psycopg.connect(url, autocommit=True, **connect_kwargs)
        except psycopg.Error as exc:
            raise _not_connected(exc, url) from None
        try:
            with first, self._errors("open"):
                self._configure(first)
                self._migrate(first)
        except BaseException:
            self._closed = True
            raise
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True, **connect_kwargs},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            open=False,
            name="sealtrail-index",
        )
        try:
            with self._errors("open"):
                self._pool.open(wait=True, timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _connect_kwargs(self) -> dict[str, Any]:
        """Connection settings besides the URL: a timeout, and a name operators see in
        ``pg_stat_activity`` (unless the URL names one)."""
        kwargs: dict[str, Any] = {"connect_timeout": max(1, int(self._timeout))}
        try:
            named = "application_name" in conninfo_to_dict(self._url)
        except psycopg.ProgrammingError:
            raise ConfigError("the PostgreSQL URL of the index is malformed") from None
        if not named:
            kwargs["application_name"] = APPLICATION_NAME
        return kwargs

    def __repr__(self) -> str:
        return "PostgresIndex(<url hidden>)"

    # -- connections ----------------------------------------------------------------------------

    @staticmethod
    def _configure(conn: _Conn) -> None:
        # READ COMMITTED, whatever the server's default: ``apply`` relies on each statement
        # after the lock seeing what committed before it (see there).
        conn.isolation_level = IsolationLevel.READ_COMMITTED
        # ``apply`` MUST NOT return before the batch is durable: a commit waits for the WAL
        # flush (and a synchronous standby's), whatever the server or role default says; a
        # stricter ``remote_apply`` is kept.
        durable_commits(conn)
        # A process stopped inside ``apply`` would hold the writers' lock (``idx_meta``)
        # for as long as it stays stopped: the server ends such a session, as the log's.
        conn.execute(
            sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
                sql.Literal(round(IDLE_IN_TRANSACTION * 1000))
            )
        )

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except Error:
            raise
        except psycopg.IntegrityError as exc:
            # The batch was checked and follows the entries stored (under the lock), so a
            # clash can only be with rows edited or left behind the index's back.
            raise Corruption(
                f"the index contradicts itself: {exc.__class__.__name__}, SQLSTATE {exc.sqlstate}",
                hint=DAMAGED,
            ) from exc
        except psycopg.Error as exc:
            raise _storage_error(what, exc) from exc

    @contextmanager
    def _conn(self, what: str) -> Iterator[_Conn]:
        if self._closed:
            raise StorageError("the index is closed")
        with self._errors(what), self._pool.connection(timeout=self._timeout) as conn:
            yield conn

    @staticmethod
    def _migrate(conn: _Conn) -> None:
        """Create or upgrade the schema; idempotent, and safe with several processes
        opening at once (an advisory lock per schema serializes them). A current schema is
        only read: a read-only session (a hot standby) opens it as well."""
        version = schema_version(conn, "idx_meta", "SELECT schema_version FROM idx_meta")
        if not migration_due("index", version, len(_MIGRATIONS)):
            return
        with writable_for_migration("index", version, len(_MIGRATIONS)), conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('sealtrail-index:' || current_schema()))"
            )
            conn.execute(
                """CREATE TABLE IF NOT EXISTS idx_meta (
                    one boolean PRIMARY KEY DEFAULT true CHECK (one),
                    schema_version integer NOT NULL CHECK (schema_version >= 0)
                )"""
            )
            conn.execute("INSERT INTO idx_meta (schema_version) VALUES (0) ON CONFLICT DO NOTHING")
            found = conn.execute("SELECT schema_version FROM idx_meta FOR UPDATE").fetchone()
            version = int(found[0]) if found else 0
            migration_due("index", version, len(_MIGRATIONS))  # under the lock: read again
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("UPDATE idx_meta SET schema_version = %s", (number,))

    # -- the one write --------------------------------------------------------------------------

    def applied_size(self) -> int:
        with self._conn("read") as conn:
            found = conn.execute(_APPLIED).fetchone()
        assert found is not None
        return int(found[0])

    def rules_version(self) -> int | None:
        with self._conn("read") as conn:
            found = conn.execute("SELECT rules_version FROM idx_meta").fetchone()
        return None if found is None or found[0] is None else int(found[0])

    def _lock(self, conn: _Conn) -> int | None:
        """Take the writers' lock: the one ``idx_meta`` row, until the transaction ends.
        Returns the rules version it records."""
        found = conn.execute("SELECT rules_version FROM idx_meta FOR UPDATE").fetchone()
        if found is None:
            raise Corruption(
                "the index's idx_meta row is missing (edited behind its back)",
                hint=DAMAGED,
            )
        return None if found[0] is None else int(found[0])

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
        first = batch[0][0].index
        entries, subjects, changes, upserts, deletes = _columns(batch)

        with self._conn("apply") as conn, conn.transaction():
            # Writers serialize here. Why a lock row and not only the primary key of
            # idx_entries: with the key alone, the loser of a race for entry N would wait
            # for the winner's commit and then fail with a unique violation — which reads as
            # Corruption, not Conflict — and only at its first insert. Holding the row lock
            # first, the check below runs after any rival batch committed: in READ
            # COMMITTED each statement takes a fresh snapshot, so the loser sees the
            # winner's entries and refuses cleanly, having written nothing. (The primary
            # key stays as a second line against writers that bypass the lock.)
            recorded = self._lock(conn)
            found = conn.execute(_APPLIED).fetchone()
            applied = int(found[0]) if found else 0
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
                # The empty index's first batch records its rules (under the lock).
                conn.execute("UPDATE idx_meta SET rules_version = %s", (rules_version,))
            # One statement per table, the rows as arrays (binary parameters): a batch of
            # 10,000 changes is five round trips, not 10,000.
            conn.execute(
                "INSERT INTO idx_entries (idx, entry_id, kind, org, outcome, code)"
                " SELECT * FROM unnest(%b::bigint[], %b::bytea[], %b::bytea[], %b::bytea[],"
                " %b::text[], %b::bytea[])",
                entries,
            )
            if subjects[0]:
                conn.execute(
                    "INSERT INTO idx_subjects (subject, idx)"
                    " SELECT * FROM unnest(%b::bytea[], %b::bigint[])",
                    subjects,
                )
            if changes[0]:
                conn.execute(
                    "INSERT INTO idx_changes (idx, pos, tbl, key, value)"
                    " SELECT * FROM unnest(%b::bigint[], %b::integer[], %b::bytea[],"
                    " %b::bytea[], %b::bytea[])",
                    changes,
                )
            if upserts[0]:
                conn.execute(
                    "INSERT INTO idx_rows (tbl, key, value)"
                    " SELECT * FROM unnest(%b::bytea[], %b::bytea[], %b::bytea[])"
                    " ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value",
                    upserts,
                )
            if deletes[0]:
                conn.execute(
                    "DELETE FROM idx_rows WHERE (tbl, key) IN"
                    " (SELECT * FROM unnest(%b::bytea[], %b::bytea[]))",
                    deletes,
                )
            # If we crash before the commit that ends this block, none of the batch is
            # visible: the replay resumes from the same applied size. Once it returns, the
            # batch is durable (synchronous_commit on or stricter) and applied_size has moved
            # past it.

    def reset(self, *, rules_version: int | None = None) -> None:
        check_rules_version(rules_version)
        with self._conn("reset") as conn, conn.transaction():
            self._lock(conn)  # not while a batch is being applied
            # DELETE, not TRUNCATE: TRUNCATE's exclusive lock would wait for (and block)
            # every reader and open dump; DELETE leaves their snapshots alone.
            for table in _TABLES:
                conn.execute(f"DELETE FROM {table}")  # noqa: S608
            conn.execute("UPDATE idx_meta SET rules_version = %s", (rules_version,))

    def claim(self, holder: str, *, exclusive: bool = False, ttl: float = CLAIM_TTL) -> None:
        check_claim(holder, ttl)
        with self._conn("claim") as conn, conn.transaction():
            # Claimers take turns; readers and the writers of the index's data do not wait.
            conn.execute("LOCK TABLE idx_claims IN SHARE ROW EXCLUSIVE MODE")
            # The database server's clock: the hosts of a deployment need not agree.
            clock = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            now = float(clock[0]) if clock is not None else 0.0
            # Only claims that stand (claim_stands): one that expires further ahead than
            # any claim is made was written by hand, and holds nothing (NaN, which sorts
            # above every number here, included).
            other = conn.execute(
                "SELECT holder, exclusive, expires FROM idx_claims WHERE holder != %s"
                " AND expires > %s AND expires <= %s AND (exclusive OR %s)"
                " ORDER BY exclusive DESC LIMIT 1",
                (holder, now, now + CLAIM_HORIZON, exclusive),
            ).fetchone()
            if other is not None:
                raise claim_conflict(other[0], other[1], other[2] - now)
            conn.execute(
                "DELETE FROM idx_claims WHERE NOT (expires > %s AND expires <= %s)",
                (now, now + CLAIM_HORIZON),
            )
            conn.execute(
                "INSERT INTO idx_claims (holder, exclusive, expires) VALUES (%s, %s, %s)"
                " ON CONFLICT (holder) DO UPDATE"
                " SET exclusive = excluded.exclusive, expires = excluded.expires",
                (holder, exclusive, now + ttl),
            )

    def release(self, holder: str) -> None:
        with self._conn("release") as conn:
            conn.execute("DELETE FROM idx_claims WHERE holder = %s", (holder,))

    def claims(self) -> list[tuple[str, bool, float]]:
        with self._conn("read") as conn:
            rows = conn.execute(
                "SELECT holder, exclusive, left_s FROM (SELECT holder, exclusive,"
                " expires - extract(epoch FROM clock_timestamp()) AS left_s FROM idx_claims)"
                " AS c WHERE left_s > 0 AND left_s <= %s ORDER BY convert_to(holder, 'UTF8')",
                (CLAIM_HORIZON,),
            ).fetchall()
        return [(str(holder), bool(exclusive), float(left)) for holder, exclusive, left in rows]

    def close(self) -> None:
        self._closed = True
        with self._dumps_lock:
            dumps, self._dumps = self._dumps, {}
        for conn, cursor in dumps.items():
            _close_dump(conn, cursor)
        self._pool.close()

    # -- reads ----------------------------------------------------------------------------------

    def row(self, table: str, key: str) -> str | None:
        with self._conn("read") as conn:
            found = conn.execute(
                "SELECT value FROM idx_rows WHERE tbl = %b AND key = %b",
                (_utf8(table), _utf8(key)),
            ).fetchone()
        return None if found is None else _text(found[0])

    def rows(self, table: str) -> list[tuple[str, str]]:
        with self._conn("read") as conn:
            found = conn.execute(
                "SELECT key, value FROM idx_rows WHERE tbl = %b ORDER BY key", (_utf8(table),)
            ).fetchall()
        return [(_text(k), _text(v)) for k, v in found]

    def row_at(self, table: str, key: str, size: int) -> str | None:
        if size < 0:
            raise InvalidInput("a log size is >= 0", code="index-bad-read")
        with self._conn("read") as conn:
            # One statement, so the applied size and the value come from one snapshot.
            found = conn.execute(
                f"SELECT ({_APPLIED}), (SELECT value FROM idx_changes"  # noqa: S608
                " WHERE tbl = %b AND key = %b AND idx < %b ORDER BY idx DESC, pos DESC LIMIT 1)",
                (_utf8(table), _utf8(key), size),
            ).fetchone()
        assert found is not None
        applied, value = found
        if size > applied:
            raise NotFound(f"the index has applied {applied} entries, not {size} (yet)")
        return _maybe(value)

    def history(self, table: str, key: str) -> list[tuple[int, str | None]]:
        with self._conn("read") as conn:
            found = conn.execute(
                "SELECT idx, value FROM idx_changes WHERE tbl = %b AND key = %b ORDER BY idx, pos",
                (_utf8(table), _utf8(key)),
            ).fetchall()
        return [(int(i), _maybe(v)) for i, v in found]

    def entries(self, start: int, stop: int) -> list[IndexedEntry]:
        check_read(start, stop - start)
        with self._conn("read") as conn:
            found = conn.execute(
                f"SELECT {_ENTRY} FROM idx_entries AS e"  # noqa: S608
                " WHERE e.idx >= %b AND e.idx < %b ORDER BY e.idx",
                (start, stop),
            ).fetchall()
        return [_entry(row) for row in found]

    def changes(self, start: int, stop: int) -> list[tuple[int, int, str, str, str | None]]:
        check_read(start, stop - start)
        with self._conn("read") as conn:
            found = conn.execute(
                "SELECT idx, pos, tbl, key, value FROM idx_changes"
                " WHERE idx >= %b AND idx < %b ORDER BY idx, pos",
                (start, stop),
            ).fetchall()
        return [(int(i), int(p), _text(t), _text(k), _maybe(v)) for i, p, t, k, v in found]

    def entries_about(
        self, subject: str, *, start: int = 0, limit: int = 1000
    ) -> list[IndexedEntry]:
        check_read(start, limit, least=1)
        with self._conn("read") as conn:
            found = conn.execute(
                f"SELECT {_ENTRY} FROM idx_subjects AS s"  # noqa: S608
                " JOIN idx_entries AS e ON e.idx = s.idx"
                " WHERE s.subject = %b AND s.idx >= %b ORDER BY s.idx LIMIT %b",
                (_utf8(subject), start, limit),
            ).fetchall()
        return [_entry(row) for row in found]

    # -- dumps: one snapshot each, on a connection of their own ---------------------------------

    def _register(self, conn: _Conn) -> bool:
        """Track a dump's connection for ``close``; False when the index closed meanwhile."""
        with self._dumps_lock:
            if self._closed:
                return False
            self._dumps[conn] = None
            return True

    def _release(self, conn: _Conn) -> None:
        with self._dumps_lock:
            cursor = self._dumps.pop(conn, None)
        _close_dump(conn, cursor)

    def _dump(self, query: str, convert: Callable[[Sequence[Any]], _T]) -> _Dump[_T]:
        """Start ``query`` in a REPEATABLE READ transaction on a new connection.

        Started here, not on the first ``next``, so that the snapshot is the index as it
        was when the dump was asked for (the DECLARE of the server-side cursor takes it).
        """
        if self._closed:
            raise StorageError("the index is closed")
        with self._errors("read"):
            conn: _Conn = psycopg.connect(self._url, **self._connect_kwargs())
            if not self._register(conn):
                conn.close()
                raise StorageError("the index is closed")
            try:
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                cursor = conn.cursor(name="sealtrail_dump")
                with self._dumps_lock:
                    if conn in self._dumps:
                        self._dumps[conn] = cursor
                cursor.execute(query)
            except BaseException:
                self._release(conn)
                raise

        def rows() -> Iterator[_T]:
            while True:
                with self._errors("read"):
                    chunk = cursor.fetchmany(DUMP_CHUNK)
                if not chunk:
                    return
                for row in chunk:
                    yield convert(row)

        return _Dump(rows(), lambda: self._release(conn))

    def dump_rows(self, *, mark_damaged: bool = False) -> Iterator[tuple[str, str, str]]:
        text = _marked if mark_damaged else _text
        return self._dump(
            "SELECT tbl, key, value FROM idx_rows ORDER BY tbl, key",
            lambda r: (text(r[0]), text(r[1]), text(r[2])),
        )

    def dump_changes(
        self, *, mark_damaged: bool = False
    ) -> Iterator[tuple[int, int, str, str, str | None]]:
        text = _marked if mark_damaged else _text
        return self._dump(
            "SELECT idx, pos, tbl, key, value FROM idx_changes ORDER BY idx, pos",
            lambda r: (int(r[0]), int(r[1]), text(r[2]), text(r[3]), _maybe(r[4], text)),
        )

    def dump_entries(self, *, mark_damaged: bool = False) -> Iterator[IndexedEntry]:
        return self._dump(
            f"SELECT {_ENTRY} FROM idx_entries AS e ORDER BY e.idx",  # noqa: S608
            _marked_entry if mark_damaged else _entry,
        )
