"""The server store: a log and its statements in PostgreSQL (psycopg 3, one connection pool).

Same contract, same layout as the SQLite store (tests/conformance checks both); what differs
is how the one coordination point is enforced when several processes share the database.

**Compare-and-swap.** The checkpoint is a single row (``log_checkpoint``, ``id = 0``) that
exists from the first migration on (``note IS NULL``: never committed). ``commit`` runs at
READ COMMITTED and first takes that row with ``SELECT … FOR UPDATE``: a second committer
blocks there until the first one ends, and PostgreSQL then hands it the *newest* version of
the row, so it sees the winner's size and raises :class:`CheckpointConflict` before writing
anything. The final ``UPDATE … WHERE size = old_size`` repeats the check in the statement that
publishes the checkpoint. We chose the row lock over SERIALIZABLE because the outcome is
deterministic and says what happened: the loser always gets a clean ``CheckpointConflict``,
never a serialization failure (40001) that it would have to retry just to learn that it lost,
and readers never take predicate locks or abort a writer.

**Durability.** A transaction is durable when ``COMMIT`` returns as long as the server keeps
``fsync = on`` and the session's ``synchronous_commit`` is ``on`` or ``remote_apply``: every
pooled connection raises a weaker value it inherits (``off``, ``local``, ``remote_write``:
none of them waits for a synchronous standby to flush the commit) to ``on``, and keeps
``remote_apply`` (:func:`durable_commits`, which the index store shares). ``commit`` and
``put_statements`` return only after ``COMMIT`` has returned.

**A process that stops** (SIGSTOP, a paused VM or container, a stuck event loop) keeps its
sessions open: its kernel still answers TCP keepalives. So the server ends a pooled session
that has sat inside a transaction for :data:`IDLE_IN_TRANSACTION` seconds (the checkpoint
row of a commit and the ``statements`` table lock are released with it; a leaf-index merge,
which computes between its statements, allows itself :data:`MERGE_IDLE_IN_TRANSACTION`),
and the sequencer role is a lease on top of the advisory lock (below).

**Migrations** are one list per store, recorded in ``sealtrail_schema(component, version)``
(``component = 'log'`` here; another store keeps its own row in the same table) and applied at
open inside one transaction under an advisory lock, so that processes starting together apply
each step once. A separate migration tool is not needed yet: every step so far only creates
tables, which is fast and cannot fail half-way (the transaction is all-or-nothing), and a store
with a schema newer than the code is refused instead of touched. When a step has to rewrite
large tables we will want to run it deliberately, ahead of a rollout: that is the time for a
tool.

Tables live in the first schema of the connection's ``search_path`` (set it in the URL with
``?options=-csearch_path%3Dname``)::

    sealtrail_schema(component, version)
    log_checkpoint(id = 0, size, note, indexed, epoch)     note NULL: never committed
    log_tile_parts(level, idx, start, count, data, interior)
    log_entry_bundles(level = -1, idx, start, count, data, interior)
    log_leaf_runs(run, count, keys, first_page)             the leaf index: sorted runs of
    log_leaf_pages(page, indexes)                           the hashes' first 4 bytes, and
                                                            their indexes (see _leafruns)
    statements(seq, entry_id, body, issuer, subject, content_type, registered_at, tag)
                                                            tag: the row's authentication
                                                            tag (schema 6; NULL: none)
    statements_sequenced(id = 0, seq)

**The sequencer role** (:meth:`PostgresStore.acquire_role`) is a session advisory lock held
on a connection of its own, plus an *epoch* in the checkpoint row that the new holder raises
as soon as it has the lock. Every fenced commit compares its epoch with the row's under the
same row lock as the size, so once a new holder has raised it, nothing its predecessor
prepared can land — even if the predecessor has not noticed yet that it lost the lock. The
lock goes with its session: when the holder dies, its connection closes and the server
releases it at once; when the holder's host or network goes silent, TCP keepalives
(:data:`ROLE_KEEPALIVE`) end the session within about 11 s; when the holder stops without
dying, the server ends the session once it has gone :data:`ROLE_LEASE` seconds without a
query (``idle_session_timeout``, PostgreSQL 14 and later): the holder asks
:meth:`PostgresLease.alive` every 0.25 s, and each ask is a query on that session. Should
the new holder find the checkpoint row still taken by a commit of its predecessor for
:data:`ROLE_TAKEOVER_WAIT` seconds (a process stopped in the middle of a ``COPY``, where no
idle timeout applies), it ends that commit's session: the commit rolls back as a whole, and
nothing was acknowledged of it. A holder that steps down unlocks before it closes the
session, so the role is free when ``release`` returns. A process waiting for the role bids
on one session it keeps, not on a new backend per bid.

A commit's tile parts and leaf-index pages go in by binary ``COPY``, one per table: the server
takes streamed rows far faster than it unpacks large array parameters (an ``INSERT … SELECT
FROM unnest(bytea[])`` of a batch's 4 MB of entry bundles took about ten times as long). The
queries that clear the positions a commit overwrites go in one pipelined round trip.
Statements go in as ``INSERT … SELECT FROM (VALUES …)``, each statement's columns
parameters of their own (bound in a third of the time the same bytes take as ``bytea[]``
arrays), up to :data:`PUT_ROWS` rows per statement padded to a power of two, so that a
connection prepares a handful of texts (with the server's own ``$n`` placeholders, which the
driver need not parse); the whole transaction (``BEGIN``, the table lock,
the writes, ``COMMIT``) goes in one round trip.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, TypeVar

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from sealtrail.errors import (
    CheckpointConflict,
    ConfigError,
    Corruption,
    Error,
    Fenced,
    StorageError,
)

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

__all__ = ["PostgresLease", "PostgresStore", "durable_commits"]

log = logging.getLogger("sealtrail.storage")

#: Seconds to wait for a connection to the server (at open and from the pool).
CONNECT_TIMEOUT = 10
#: Connections the pool keeps open at most (readers in several threads, one writer).
POOL_SIZE = 8
#: Name of this store's row in ``sealtrail_schema``.
COMPONENT = "log"
#: Advisory lock key serializing migrations (any fixed 64-bit value; ours spells "sealtrl").
_MIGRATION_LOCK = 0x7365616C74726C
#: First half of the sequencer role's advisory lock key; the second is the schema's hash, so
#: that logs in different schemas of one database have their own roles.
_ROLE_LOCK_CLASS = 0x5351
#: Seconds of silence after which the server drops a sequencer's lock connection
#: (TCP keepalive: idle, then probes at an interval, a count of them), releasing the role.
ROLE_KEEPALIVE = (5, 2, 3)
#: Seconds the sequencer's lock session may go without a query before the server ends it,
#: releasing the role (``idle_session_timeout``). The holder queries it every 0.25 s
#: (``ROLE_CHECK``), so this is twenty checks: an event loop held up by a second or two of
#: load keeps the role, a process stopped for longer loses it.
ROLE_LEASE = 5.0
#: Seconds a pooled session may sit inside a transaction waiting for its client before the
#: server ends it (``idle_in_transaction_session_timeout``), releasing its locks. Every
#: transaction here is a pipeline or a few round trips; the client's gaps between them
#: last milliseconds, tens of them under load.
IDLE_IN_TRANSACTION = 5.0
#: The same within a commit that merges leaf-index runs: it sorts their keys between its
#: statements (a merge into a run of ``MAX_RUN`` entries computes for 2-5 s here).
MERGE_IDLE_IN_TRANSACTION = 60.0
#: Seconds a new holder waits for the checkpoint row to raise the epoch before it ends the
#: session of the commit holding it (only its deposed predecessor's commit can: see
#: :meth:`PostgresStore.acquire_role`), then tries once more.
ROLE_TAKEOVER_WAIT = 2.0
#: Seconds a statement write waits for the ``statements`` table lock at a time; between
#: waits it ends a session that holds the lock and has waited :data:`STATEMENTS_STALLED`
#: seconds for its own client in the middle of a pipeline, and it gives up (a retryable
#: storage error) after waiting that long and once more.
STATEMENTS_LOCK_WAIT = IDLE_IN_TRANSACTION
#: A process stopped, or cut off, half-way through sending a statement write holds the lock
#: and looks to the server like one still sending (neither is idle). A writer still sending
#: is given this long: a group at the statement size limit (16 MiB) over a link of
#: 0.3 MB/s.
STATEMENTS_STALLED = 60.0
#: The ``synchronous_commit`` values a session keeps: a ``COMMIT`` returns once the WAL is
#: flushed locally and on a synchronous standby (``remote_apply``: and applied there).
_DURABLE_COMMITS = frozenset({"on", "remote_apply"})

_STATEMENT_COLUMNS = "entry_id, body, issuer, subject, content_type, registered_at, tag"
#: A statement row's columns as a backlog reads them (no body).
_BACKLOG_COLUMNS = "seq, entry_id, issuer, subject, content_type, registered_at, tag"

#: Bytes of tile parts and bundles up to which a commit goes as INSERT … unnest in one
#: pipeline (two round trips in all); above it, binary COPY (a multi-megabyte bytea[]
#: parameter is slow for the server to unpack).
SMALL_COMMIT = 256 * 1024

#: Publish the new checkpoint: the compare-and-swap's write.
_PUBLISH: LiteralString = (
    "UPDATE log_checkpoint SET size = %s, note = %s, indexed = %s WHERE id = 0 AND size = %s"
)


def _publish_params(commit: Commit) -> tuple[object, ...]:
    return (commit.new_size, commit.checkpoint, commit.watermark, commit.old_size)


#: The checkpoint row, locked for a commit: its size, the role's epoch, and whether a
#: log was ever started (``note`` is NULL until the genesis).
_LOCK_CHECKPOINT: LiteralString = (
    "SELECT size, epoch, note IS NOT NULL FROM log_checkpoint WHERE id = 0 FOR UPDATE"
)


def _check_base(row: Sequence[Any] | None, commit: Commit) -> None:
    """The compare-and-swap's check, on the checkpoint row read under its lock."""
    if row is None:
        raise Corruption("the checkpoint row of the PostgreSQL store is missing")
    if commit.fence is not None and int(row[1]) != commit.fence:
        raise Fenced(f"sequencer epoch {commit.fence} was fenced by epoch {row[1]}")
    if int(row[0]) != commit.old_size:
        # Leaving the block by an exception rolls back: nothing of the batch is written.
        raise CheckpointConflict(f"the log is at size {row[0]}, not {commit.old_size}")
    if commit.new_size == 0 and row[2]:
        raise CheckpointConflict("the log was started already")


#: ``_insert_parts_sql`` before its VALUES rows.
_INSERT_PARTS: LiteralString = (
    "INSERT INTO {table} (level, idx, start, count, data, interior) VALUES "
)
#: Types of one tile part's row of parameters in ``_insert_parts_sql``.
_PART_TYPES = ("int4", "int8", "int4", "int4", "bytea", "bytea")


@functools.cache
def _insert_parts_sql(table: LiteralString, rows: int) -> LiteralString:
    """Insert ``rows`` tile parts into ``table``, each part's columns parameters of their
    own: bound in a few µs, where the same parts as arrays to ``unnest`` take ~50 µs even
    bound binary (a small commit has a few parts, so few texts are prepared)."""
    width = len(_PART_TYPES)
    values = ", ".join(
        "(" + ", ".join(f"${row * width + col + 1}::{t}" for col, t in enumerate(_PART_TYPES)) + ")"
        for row in range(rows)
    )
    return _INSERT_PARTS.replace("{table}", table) + values


def _parts_params(parts: Sequence[TilePart]) -> list[object]:
    return [v for p in parts for v in (p.level, p.index, p.start, p.count, p.data, p.interior)]


def _firsts(parts: Sequence[TilePart]) -> list[TilePart]:
    """Each level's first part in the commit: everything from it on is restated."""
    first: dict[int, TilePart] = {}
    for part in parts:
        low = first.get(part.level)
        if low is None or (part.index, part.start) < (low.index, low.start):
            first[part.level] = part
    return list(first.values())


#: Statements per INSERT at most (larger groups take several, in one transaction).
PUT_ROWS = 256
#: Types of one statement's row of parameters in ``_put_statements_sql``.
_PUT_TYPES = ("bigint", "bytea", "bytea", "text", "text", "text", "bigint", "bytea")
#: ``_put_statements_sql`` around its VALUES rows.
_PUT_HEAD: LiteralString = """
    WITH given AS (
        SELECT * FROM (VALUES """
_PUT_TAIL: LiteralString = """)
            AS g(position, entry_id, body, issuer, subject, content_type, registered_at, tag)
        WHERE entry_id IS NOT NULL
    ), stored AS (
        -- One probe of the entry_id index per given statement: a LATERAL subquery with a
        -- LIMIT is not flattened, so the planner cannot turn it into a hash join over a
        -- sequential scan of the whole table (its choice while the table is small). A
        -- row is the statement's own only if it is the row given, but for its time.
        SELECT given.entry_id, s.seq, s.own FROM given
            CROSS JOIN LATERAL (
                SELECT seq, (statements.tag IS NOT DISTINCT FROM given.tag
                             AND statements.body = given.body
                             AND statements.issuer = given.issuer
                             AND statements.subject = given.subject
                             AND statements.content_type = given.content_type) AS own
                FROM statements WHERE statements.entry_id = given.entry_id LIMIT 1
            ) s
    ), fresh AS (
        SELECT given.*, row_number() OVER (ORDER BY position) AS rank FROM given
        WHERE entry_id NOT IN (SELECT entry_id FROM stored WHERE own)
    ), top AS (
        SELECT coalesce(max(seq), 0) AS seq FROM statements
    ), replaced AS (
        -- Another row under the entry id (written behind the service): the given one in
        -- its place, under a new number, so that a backlog reads it again.
        UPDATE statements SET seq = top.seq + fresh.rank, body = fresh.body,
               issuer = fresh.issuer, subject = fresh.subject,
               content_type = fresh.content_type, registered_at = fresh.registered_at,
               tag = fresh.tag
        FROM fresh, top WHERE statements.entry_id = fresh.entry_id
        RETURNING statements.entry_id, statements.seq
    ), inserted AS (
        INSERT INTO statements (seq, entry_id, body, issuer, subject, content_type,
                                registered_at, tag)
        SELECT top.seq + rank, entry_id, body, issuer, subject, content_type, registered_at,
               tag
        FROM fresh, top WHERE entry_id NOT IN (SELECT entry_id FROM stored)
        RETURNING entry_id, seq
    )
    SELECT entry_id, seq, false FROM stored WHERE own
    UNION ALL SELECT entry_id, seq, true FROM replaced
    UNION ALL SELECT entry_id, seq, false FROM inserted
"""


@functools.cache
def _put_statements_sql(rows: int) -> LiteralString:
    """Store the statements of ``rows`` parameter rows (position, then the statement's
    columns; NULL rows pad the count to a power of two, so that few statements are
    prepared) that are not stored yet, numbered on from the highest number in order, and
    answer every given entry id with its number (new or already stored). Run under the
    table lock (see ``put_statements``); the entry ids are distinct.

    Each statement is a parameter of its own: a VALUES list binds 36 statements of 2 KB in
    a third of the time that the same bytes take as ``bytea[]`` arrays to ``unnest``. The
    placeholders are the server's own (``$1``), sent by a :class:`psycopg.RawCursor`: the
    driver rewrites ``%s`` placeholders by parsing the text on every call once a query has
    more than a few dozen parameters (about 0.3 ms for 32 rows, more than binding them).
    """
    width = len(_PUT_TYPES)
    values = ", ".join(
        "(" + ", ".join(f"${row * width + col + 1}::{t}" for col, t in enumerate(_PUT_TYPES)) + ")"
        for row in range(rows)
    )
    return _PUT_HEAD + values + _PUT_TAIL


def _put_statements_params(records: Sequence[StatementRecord]) -> tuple[int, list[object]]:
    """The row count (a power of two) and the parameters of one ``_put_statements_sql``."""
    rows = 1 << (len(records) - 1).bit_length()
    params: list[object] = []
    for position, r in enumerate(records):
        params += (position, r.entry_id, r.body, r.issuer, r.subject, r.content_type)
        params += (r.registered_at, r.tag or None)
    params += [None] * (len(_PUT_TYPES) * (rows - len(records)))
    return rows, params


def _parts_table(name: LiteralString, level_check: LiteralString) -> LiteralString:
    return f"""CREATE TABLE {name} (
            level integer NOT NULL CHECK ({level_check}),
            idx bigint NOT NULL CHECK (idx >= 0),
            start integer NOT NULL CHECK (start >= 0 AND start < 256),
            count integer NOT NULL CHECK (count > 0 AND start + count <= 256),
            data bytea NOT NULL,
            interior bytea NOT NULL DEFAULT '',
            PRIMARY KEY (level, idx, start)
        )"""


_MIGRATIONS: list[tuple[LiteralString, ...]] = [
    (
        """CREATE TABLE log_checkpoint (
            id integer PRIMARY KEY CHECK (id = 0),
            size bigint NOT NULL CHECK (size >= 0),
            note bytea,
            indexed bigint NOT NULL CHECK (indexed >= 0 AND indexed <= size)
        )""",
        # The CAS row exists from the start, so that the first commit also locks a row.
        "INSERT INTO log_checkpoint (id, size, note, indexed) VALUES (0, 0, NULL, 0)",
        _parts_table("log_tile_parts", "level >= 0"),
        # Entry bundles apart from hash tiles, as in SQLite: their 66 KB values go to TOAST
        # anyway, but the hash tiles a proof reads stay on few heap pages.
        _parts_table("log_entry_bundles", "level = -1"),
        """CREATE TABLE log_leaves (
            prefix bigint NOT NULL,
            idx bigint NOT NULL,
            PRIMARY KEY (prefix, idx)
        )""",
    ),
    (
        """CREATE TABLE statements (
            seq bigint PRIMARY KEY,
            entry_id bytea NOT NULL UNIQUE CHECK (length(entry_id) = 32),
            body bytea NOT NULL,
            issuer text NOT NULL,
            subject text NOT NULL,
            content_type text NOT NULL,
            registered_at bigint NOT NULL
        )""",
        "CREATE INDEX statements_by_type ON statements (content_type, seq)",
        """CREATE TABLE statements_sequenced (
            id integer PRIMARY KEY CHECK (id = 0),
            seq bigint NOT NULL
        )""",
    ),
    (
        # The sequencer role's fencing epoch, beside the size it guards (see acquire_role).
        "ALTER TABLE log_checkpoint ADD COLUMN epoch bigint NOT NULL DEFAULT 0",
    ),
    (
        # Statements of up to ~8 KB stay in their row. By default a row past ~2 KB (a
        # signed statement with its certificate chain is about that) has its body moved
        # to the TOAST table in chunks, each with a row and an index entry of its own:
        # 30 such statements took 1.3 ms to commit instead of 1.0 ms.
        "ALTER TABLE statements SET (toast_tuple_target = 8160)",
    ),
    (
        # The leaf index as sorted runs merged by size (``_leafruns``), as in SQLite: a
        # flush into the B-tree keyed by hash touched more of it the larger the log.
        """CREATE TABLE log_leaf_runs (
            run bigserial PRIMARY KEY,
            count integer NOT NULL CHECK (count > 0),
            keys bytea NOT NULL CHECK (length(keys) = 4 * count),
            first_page bigint NOT NULL CHECK (first_page >= 0)
        )""",
        """CREATE TABLE log_leaf_pages (
            page bigint PRIMARY KEY,
            indexes bytea NOT NULL CHECK (length(indexes) > 0
                AND length(indexes) <= 32768 AND length(indexes) % 8 = 0)
        )""",
        # Keys and indexes are as good as random bytes: compressing them gains nothing, and
        # trying (PostgreSQL does for every value past ~2 KB) took most of a flush's time:
        # four runs of 262,144 merged in 1.15 s with it, 0.22 s without.
        "ALTER TABLE log_leaf_runs ALTER COLUMN keys SET STORAGE EXTERNAL",
        "ALTER TABLE log_leaf_pages ALTER COLUMN indexes SET STORAGE EXTERNAL",
        # The old index becomes runs: its rows in key order (the prefix's high 4 bytes,
        # unsigned), cut into runs of at most 2^24 (MAX_RUN) rows, each run's keys in one
        # value (big-endian) and its indexes 4,096 to a page (PAGE_ENTRIES).
        """CREATE TEMPORARY TABLE leaves_in_order ON COMMIT DROP AS
            SELECT row_number() OVER (ORDER BY (prefix >> 32) & 4294967295, idx, prefix) - 1
                AS pos, substring(int8send(prefix) FROM 1 FOR 4) AS key, idx
            FROM log_leaves""",
        """INSERT INTO log_leaf_runs (count, keys, first_page)
            SELECT count(*), string_agg(key, ''::bytea ORDER BY pos), min(pos) / 4096
            FROM leaves_in_order GROUP BY pos / 16777216 ORDER BY pos / 16777216""",
        """INSERT INTO log_leaf_pages (page, indexes)
            SELECT pos / 4096, string_agg(int8send(idx), ''::bytea ORDER BY pos)
            FROM leaves_in_order GROUP BY pos / 4096""",
        "DROP TABLE log_leaves",
    ),
    (
        # Each statement row's authentication tag (an HMAC its server computed: a row
        # written behind the service has none that verifies, and is never appended).
        # Rows stored before have none (NULL): see docs/deploy.md, "Upgrading". A column
        # without a default or a constraint: no row is read or rewritten.
        "ALTER TABLE statements ADD COLUMN tag bytea",
        # The check value of the key the rows are tagged under (see row_key_check).
        """CREATE TABLE statement_row_key (
            id integer PRIMARY KEY CHECK (id = 0),
            key_check bytea NOT NULL
        )""",
    ),
]


def _table(level: int) -> LiteralString:
    """The table of a level's parts (entry bundles are level -1)."""
    return "log_entry_bundles" if level == ENTRY_BUNDLES else "log_tile_parts"


def _parts_queries(table: LiteralString) -> dict[str, LiteralString]:
    """The queries on one table of tile parts (one of ours, never input), as text: a
    composed ``sql.Identifier`` would be rendered again on every call."""
    texts: dict[str, LiteralString] = {
        "read": "SELECT start, count, data, interior FROM {table}"
        " WHERE level = %s AND idx = %s ORDER BY start",
        "reaching": "SELECT start, count, data FROM {table}"
        " WHERE level = %s AND idx = %s AND start < %s AND start + count > %s",
        "clear": "DELETE FROM {table}"
        " WHERE level = %s AND (idx > %s OR (idx = %s AND start >= %s))",
        "cut": "UPDATE {table} SET count = %s, data = %s, interior = %s"
        " WHERE level = %s AND idx = %s AND start = %s",
        "copy": "COPY {table} (level, idx, start, count, data, interior)"
        " FROM STDIN (FORMAT BINARY)",
    }
    return {name: text.replace("{table}", table) for name, text in texts.items()}


_PARTS_SQL = {table: _parts_queries(table) for table in (_table(0), _table(ENTRY_BUNDLES))}


def _parts_sql(level: int, query: str) -> LiteralString:
    """One of :func:`_parts_queries` for the table of ``level``."""
    return _PARTS_SQL[_table(level)][query]


@contextmanager
def _rolled_back_on_error(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """For a transaction begun and committed by hand (``BEGIN`` queued in a pipeline with the
    statements after it, rather than a round trip of its own as ``conn.transaction()``
    sends it): should anything fail before the ``COMMIT`` went through, roll it back."""
    try:
        yield
    except BaseException:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise


def _copy(
    conn: psycopg.Connection[Any],
    statement: LiteralString,
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Stream ``rows`` into a ``COPY … FROM STDIN (FORMAT BINARY)`` statement."""
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


#: Every leaf-index run's row without its keys, oldest first.
_RUN_ROWS: LiteralString = "SELECT run, count, first_page FROM log_leaf_runs ORDER BY run"

_T = TypeVar("_T")


class _Runs:
    """The leaf-index runs and pages (a :class:`~._leafruns.RunTable`) in a commit, which
    holds the checkpoint row's lock: one writer at a time numbers the new pages."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._merging = False

    def rows(self) -> list[runs.RunRow]:
        listed = self.conn.execute(_RUN_ROWS, prepare=True)
        return [runs.RunRow(int(r), int(c), int(p)) for r, c, p in listed]

    def read(self, row: runs.RunRow) -> runs.Run:
        if not self._merging:
            # Runs are read only to be merged: the keys are sorted here, between this
            # transaction's statements, for longer than IDLE_IN_TRANSACTION allows.
            self._merging = True
            self.conn.execute(
                sql.SQL("SET LOCAL idle_in_transaction_session_timeout = {}").format(
                    _milliseconds(MERGE_IDLE_IN_TRANSACTION)
                )
            )
        found = self.conn.execute(
            "SELECT keys FROM log_leaf_runs WHERE run = %s", (row.run,)
        ).fetchone()
        if found is None:  # listed in this transaction a moment ago, under the row lock
            raise Corruption(f"leaf-index run {row.run} vanished during a commit")
        (keys,) = found
        pages = self.conn.execute(
            "SELECT indexes FROM log_leaf_pages WHERE page BETWEEN %s AND %s ORDER BY page",
            (row.first_page, row.last_page),
        )
        indexes = runs.indexes_from_bytes(b"".join(bytes(p) for (p,) in pages))
        return runs.Run(runs.keys_from_bytes(bytes(keys)), indexes)

    def delete(self, row: runs.RunRow) -> None:
        self.conn.execute("DELETE FROM log_leaf_runs WHERE run = %s", (row.run,))
        self.conn.execute(
            "DELETE FROM log_leaf_pages WHERE page BETWEEN %s AND %s",
            (row.first_page, row.last_page),
        )

    def insert(self, run: runs.Run) -> None:
        query = "SELECT coalesce(max(page) + 1, 0) FROM log_leaf_pages"
        (first,) = self.conn.execute(query).fetchone() or (0,)
        self.conn.execute(
            "INSERT INTO log_leaf_runs (count, keys, first_page) VALUES (%s, %s, %s)",
            (run.count, run.key_bytes(), first),
        )
        _copy(
            self.conn,
            "COPY log_leaf_pages (page, indexes) FROM STDIN (FORMAT BINARY)",
            ("int8", "bytea"),
            [(first + k, page) for k, page in enumerate(run.pages())],
        )


def _record(row: Sequence[Any]) -> StatementRecord:
    entry_id, body, issuer, subject, content_type, registered_at, tag = row
    return StatementRecord(
        bytes(entry_id),
        bytes(body),
        str(issuer),
        str(subject),
        str(content_type),
        int(registered_at),
        b"" if tag is None else bytes(tag),
    )


def _backlog_row(row: Sequence[Any]) -> BacklogRow:
    seq, entry_id, issuer, subject, content_type, registered_at, tag = row
    return BacklogRow(
        int(seq),
        bytes(entry_id),
        str(issuer),
        str(subject),
        str(content_type),
        int(registered_at),
        b"" if tag is None else bytes(tag),
    )


def describe(url: str) -> str:
    """``host:port/dbname`` of a connection URL: what messages may show (never a password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "an unparsable PostgreSQL URL"
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = str(params.get("port") or "").split(",")
    if len(ports) != len(hosts):  # one port (or none) for every host
        ports = ports[:1] * len(hosts)
    nodes = ",".join(
        f"{f'[{host}]' if ':' in host else host or 'localhost'}:{port or 5432}"
        for host, port in zip(hosts, ports, strict=True)
    )
    return f"{nodes}/{params.get('dbname') or '(default)'}"


def _reason(exc: BaseException, url: str) -> str:
    """The first line of a driver error, with the URL's password scrubbed just in case."""
    text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def schema_version(
    conn: psycopg.Connection[Any],
    table: str,
    query: LiteralString,
    params: Sequence[object] = (),
) -> int:
    """The schema version ``query`` reads from ``table``, 0 when the table does not exist
    in the current schema (or holds no row), read without writing anything. A table further
    down the ``search_path`` is another schema's: the migration makes this one's.

    :class:`ConfigError` when the ``search_path`` names no existing schema: there is none
    to read or to make the tables in."""
    schema = conn.execute("SELECT current_schema()").fetchone()
    if schema is None or schema[0] is None:
        raise ConfigError(
            "the PostgreSQL search_path names no existing schema",
            hint="Create the schema, or fix options=-csearch_path=... in the URL.",
        )
    exists = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
        " WHERE schemaname = current_schema() AND tablename = %s)",
        (table,),
    ).fetchone()
    if exists is None or not exists[0]:
        return 0
    row = conn.execute(query, params).fetchone()
    return 0 if row is None else int(row[0])


def migration_due(what: str, version: int, latest: int) -> bool:
    """Whether the ``what`` (store, index) at schema ``version`` needs migrating to
    ``latest``; :class:`ConfigError` when it is newer than this Sealtrail understands."""
    if version > latest:
        raise ConfigError(
            f"the {what} has schema version {version}, newer than this Sealtrail "
            f"understands ({latest}); upgrade Sealtrail"
        )
    return version < latest


@contextmanager
def writable_for_migration(what: str, version: int, latest: int) -> Iterator[None]:
    """A migration refused by a read-only session is a clear configuration error, not a
    storage failure to retry."""
    try:
        yield
    except psycopg.errors.ReadOnlySqlTransaction:
        raise ConfigError(
            f"the {what} has schema version {version} and this Sealtrail needs {latest}, "
            "but the connection is read-only (a hot standby?)",
            hint="Open it once through a read-write connection to the primary: "
            "that upgrades the schema, and the standby follows.",
        ) from None


def durable_commits(conn: psycopg.Connection[Any]) -> None:
    """Make ``conn``'s commits durable when ``COMMIT`` returns: ``synchronous_commit`` below
    ``on`` (``off``, ``local``, ``remote_write``) is raised to ``on``; ``on`` and the stricter
    ``remote_apply`` are kept."""
    row = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
    if row is None or row[0] not in _DURABLE_COMMITS:
        conn.execute("SET synchronous_commit = on")


def _milliseconds(seconds: float) -> sql.Literal:
    return sql.Literal(round(seconds * 1000))


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Run on every new pooled connection: a commit is durable when it returns, and a
    transaction left waiting for a stopped client ends (:data:`IDLE_IN_TRANSACTION`)."""
    durable_commits(conn)
    conn.execute(
        sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
            _milliseconds(IDLE_IN_TRANSACTION)
        )
    )


class PostgresStore:
    """A :class:`~sealtrail.storage.LogStore` and :class:`~sealtrail.storage.StatementStore`
    in one PostgreSQL schema.

    Safe to share between threads (a connection pool) and between processes and hosts (the
    checkpoint compare-and-swap is a row lock in the database, see the module docstring).
    """

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self._url = url
        self._where = describe(url)
        self._closed = False
        self._run_keys = runs.KeyCache()
        #: The connection of the last bid for the role that failed, kept for the next bid.
        self._bidder: tuple[str, psycopg.Connection[Any]] | None = None
        self._bid_lock = threading.Lock()
        self._warned_lease = False
        try:
            first = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot connect to PostgreSQL at {self._where}: {_reason(exc, url)}",
                hint="Check that the server is running and accepts TCP connections, the user "
                "and database in the store URL (postgresql://user@host:5432/dbname) and the "
                "password in PGPASSWORD, ~/.pgpass or a passfile (never in the URL).",
            ) from None
        try:
            with first, self._errors("open"):
                self._migrate(first)
        except BaseException:
            self._closed = True
            raise
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = (
            psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=max(1, pool_size),
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                configure=_configure,
                timeout=CONNECT_TIMEOUT,
                name="sealtrail-store",
                open=False,
            )
        )
        try:
            with self._errors("open"):
                self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except BaseException:
            self.close()
            raise

    # -- connections --------------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Driver errors as :class:`StorageError`: the error class and the server's primary
        message only (never the query, its parameters or a DETAIL line with row values)."""
        try:
            yield
        except Error:
            raise
        except psycopg_pool.PoolTimeout as exc:
            raise StorageError(
                f"PostgreSQL {what} failed: no connection to {self._where} within "
                f"{CONNECT_TIMEOUT} s",
                hint="The server may be down or out of connections; retry later.",
            ) from exc
        except psycopg.Error as exc:
            primary = exc.diag.message_primary or exc.__class__.__name__
            state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
            raise StorageError(
                f"PostgreSQL {what} failed: {exc.__class__.__name__}{state}: {primary}"
            ) from exc

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StorageError("the store is closed")
        with self._pool.connection() as conn:
            yield conn

    def _reading(self, what: str, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``work``, which only reads, on a pooled connection. Retried once on a dropped
        connection (a server restart leaves every pooled connection broken; reads are
        idempotent, writes are never retried)."""
        for attempt in (1, 2):
            try:
                with self._errors(what), self._conn() as conn:
                    return work(conn)
            except StorageError as exc:
                if attempt == 2 or not isinstance(exc.__cause__, psycopg.OperationalError):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(
        self, what: str, query: sql.Composed | LiteralString, params: Sequence[Any]
    ) -> list[Any]:
        """One read-only query (see :meth:`_reading`)."""
        return self._reading(
            what, lambda conn: conn.execute(query, params, prepare=True).fetchall()
        )

    @staticmethod
    def _migrate(conn: psycopg.Connection[Any]) -> None:
        version = schema_version(
            conn,
            "sealtrail_schema",
            "SELECT version FROM sealtrail_schema WHERE component = %s",
            (COMPONENT,),
        )
        if not migration_due("store", version, len(_MIGRATIONS)):
            return  # nothing to write: a read-only session (a hot standby) opens it as well
        with writable_for_migration("store", version, len(_MIGRATIONS)), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sealtrail_schema ("
                " component text PRIMARY KEY, version integer NOT NULL CHECK (version >= 0))"
            )
            row = conn.execute(
                "SELECT version FROM sealtrail_schema WHERE component = %s", (COMPONENT,)
            ).fetchone()
            version = 0 if row is None else int(row[0])
            migration_due("store", version, len(_MIGRATIONS))  # under the lock: read again
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO sealtrail_schema (component, version) VALUES (%s, %s)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (COMPONENT, len(_MIGRATIONS)),
            )

    # -- reads --------------------------------------------------------------------------------

    def read_checkpoint(self) -> StoredCheckpoint | None:
        rows = self._read("read", "SELECT size, note, indexed FROM log_checkpoint WHERE id = 0", ())
        if not rows or rows[0][1] is None:
            return None
        size, note, indexed = rows[0]
        return StoredCheckpoint(int(size), bytes(note), int(indexed))

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        rows = self._read("read", _parts_sql(level, "read"), (level, index))
        return [TilePart(level, index, int(s), int(c), bytes(d), bytes(i)) for s, c, d, i in rows]

    def lookup_leaves(self, leaf_hashes: Collection[bytes]) -> dict[bytes, list[int]]:
        asked = list(dict.fromkeys(leaf_hashes))
        if not asked:
            return {}

        def lookup(conn: psycopg.Connection[Any]) -> dict[bytes, list[int]]:
            with _rolled_back_on_error(conn):
                return self._lookup(conn, asked)

        return self._reading("read", lookup)

    def _lookup(self, conn: psycopg.Connection[Any], asked: list[bytes]) -> dict[bytes, list[int]]:
        """One lookup in one snapshot (the runs listed are the runs and pages read): the
        list of runs in the round trip that begins it; pages only for keys that match."""
        with conn.pipeline():
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            listed = conn.execute(_RUN_ROWS, prepare=True)
        rows = [runs.RunRow(int(r), int(c), int(p)) for r, c, p in listed.fetchall()]

        def load(numbers: Collection[int]) -> dict[int, bytes]:
            query = "SELECT run, keys FROM log_leaf_runs WHERE run = ANY(%s)"
            return {int(r): bytes(k) for r, k in conn.execute(query, (list(numbers),))}

        spots = runs.wanted(asked, self._run_keys.runs(rows, load))
        pages: dict[int, bytes] = {}
        if spots:
            query = "SELECT page, indexes FROM log_leaf_pages WHERE page = ANY(%s)"
            wanted = sorted({page for _, page, _ in spots})
            pages = {int(p): bytes(d) for p, d in conn.execute(query, (wanted,), prepare=True)}
        conn.execute("COMMIT")
        return runs.candidates(asked, spots, pages)

    # -- the one write ------------------------------------------------------------------------

    def commit(self, commit: Commit) -> None:
        parts = commit.stored_parts()
        if not commit.leaves and sum(len(p.data) + len(p.interior) for p in parts) <= SMALL_COMMIT:
            self._commit_small(commit, parts)
            return
        # Sorted before the transaction: the checkpoint row is held for the writes alone.
        run = runs.build_run(commit.leaves) if commit.leaves else None
        with self._errors("commit"), self._conn() as conn, conn.transaction():
            # The compare-and-swap: the row lock makes a concurrent committer wait here and
            # then read the size this transaction leaves (see the module docstring).
            row = conn.execute(_LOCK_CHECKPOINT, prepare=True).fetchone()
            _check_base(row, commit)
            with conn.pipeline():
                reaching = self._make_room(conn, _firsts(parts))
            self._cut_reaching(conn, reaching)
            for level in {p.level == ENTRY_BUNDLES for p in parts}:
                mine = [p for p in parts if (p.level == ENTRY_BUNDLES) == level]
                # Binary COPY, not INSERT … unnest: unnest of a multi-megabyte bytea[]
                # parameter costs the server about ten times more than streaming the rows.
                _copy(
                    conn,
                    _parts_sql(mine[0].level, "copy"),
                    ("int4", "int8", "int4", "int4", "bytea", "bytea"),
                    [(p.level, p.index, p.start, p.count, p.data, p.interior) for p in mine],
                )
            if run is not None:
                runs.add_run(_Runs(conn), run)
            published = conn.execute(_PUBLISH, _publish_params(commit), prepare=True)
            if published.rowcount != 1:  # cannot happen under the row lock; never publish twice
                raise CheckpointConflict("the checkpoint moved during the commit")
        # If we crash before COMMIT returned, the transaction is rolled back as a whole (or,
        # if the COMMIT record reached the WAL, applied as a whole): the caller reloads.

    def _commit_small(self, commit: Commit, parts: Sequence[TilePart]) -> None:
        """:meth:`commit` of a batch of a few entries (a service's usual batch) in two round
        trips: ``BEGIN`` and every statement in one pipeline, then the ``COMMIT``. Every
        wait for the server is also a wait to win the GIL back from the event loop, so each
        one saved counts.

        The writes go ahead of the compare-and-swap's answer: the row lock still orders
        committers, and a transaction whose check fails is rolled back, writes and all.
        """
        with self._errors("commit"), self._conn() as conn, _rolled_back_on_error(conn):
            with conn.pipeline():
                conn.execute("BEGIN")
                base = conn.execute(
                    _LOCK_CHECKPOINT,
                    prepare=True,
                )
                reaching = self._make_room(conn, _firsts(parts))
                for bundles in {p.level == ENTRY_BUNDLES for p in parts}:
                    mine = [p for p in parts if (p.level == ENTRY_BUNDLES) == bundles]
                    psycopg.RawCursor(conn).execute(
                        _insert_parts_sql(_table(mine[0].level), len(mine)),
                        _parts_params(mine),
                        prepare=True,
                    )
                published = conn.execute(_PUBLISH, _publish_params(commit), prepare=True)
            _check_base(base.fetchone(), commit)
            if published.rowcount != 1:  # cannot happen under the row lock; never publish twice
                raise CheckpointConflict("the checkpoint moved during the commit")
            self._cut_reaching(conn, reaching)
            conn.execute("COMMIT")

    @staticmethod
    def _make_room(
        conn: psycopg.Connection[Any], firsts: Sequence[TilePart]
    ) -> list[tuple[TilePart, psycopg.Cursor[Any]]]:
        """Queue, in the caller's pipeline, the clearing of the positions from each of
        ``firsts`` on (the commit's first part at each of its levels); the parts found
        reaching into them are cut afterwards by :meth:`_cut_reaching`.

        All levels' queries go in one round trip: each wait for the server also means
        winning the GIL back from the thread that prepares the next batch. The deletes
        leave the parts found here alone (they start before the position).
        """
        reaching = [
            (
                part,
                # A part from before this one that reaches into it (a full part left by a
                # failed write) keeps only its head: those positions are committed.
                conn.execute(
                    _parts_sql(part.level, "reaching"),
                    (part.level, part.index, part.start, part.start),
                    prepare=True,
                ),
            )
            for part in firsts
        ]
        for part in firsts:
            conn.execute(
                _parts_sql(part.level, "clear"),
                (part.level, part.index, part.index, part.start),
                prepare=True,
            )
        return reaching

    @staticmethod
    def _cut_reaching(
        conn: psycopg.Connection[Any], reaching: Sequence[tuple[TilePart, psycopg.Cursor[Any]]]
    ) -> None:
        for part, cursor in reaching:
            row = cursor.fetchone()
            if row is None:
                continue
            old = TilePart(part.level, part.index, int(row[0]), int(row[1]), bytes(row[2]))
            head = old.head(part.start - old.start)
            conn.execute(
                _parts_sql(part.level, "cut"),
                (head.count, head.data, head.interior, part.level, part.index, head.start),
            )

    # -- statements ---------------------------------------------------------------------------

    def put_statements(self, records: Sequence[StatementRecord]) -> list[int]:
        if not records:
            return []
        given: dict[bytes, StatementRecord] = {}
        for r in records:
            given.setdefault(r.entry_id, r)  # the first of each entry id, in order
        first = list(given.values())
        with self._errors("statement write"):
            deadline = time.monotonic() + STATEMENTS_STALLED + STATEMENTS_LOCK_WAIT
            while True:
                try:
                    seqs = self._put_statements(first)
                    break
                except psycopg.errors.LockNotAvailable:
                    if time.monotonic() >= deadline:
                        raise
                # Held for STATEMENTS_LOCK_WAIT: by a writer still sending a large group,
                # or by one stopped in the middle of its pipeline, which no idle timeout
                # ends (it is not idle: it waits for the rest of its messages). One that
                # has waited STATEMENTS_STALLED for its client is ended, which rolls it back
                # whole (nothing of it was acknowledged); then write again: nothing of this
                # attempt was written.
                with self._conn() as conn:
                    conn.execute(_END_STATEMENTS_LOCKER, (round(STATEMENTS_STALLED * 1000),))
        return [seqs[r.entry_id] for r in records]

    def _put_statements(self, first: Sequence[StatementRecord]) -> dict[bytes, int]:
        with self._conn() as conn:
            # Sequence numbers MUST follow commit order: recovery reads statements above the
            # sequenced watermark, and a number taken by a transaction that commits later
            # would be skipped. So writers take turns (readers are not blocked), and numbers
            # are assigned under the lock, without gaps, as SQLite assigns them. The lock is
            # held until the commit; the whole transaction goes in one round trip.
            with _rolled_back_on_error(conn), conn.pipeline():
                conn.execute("BEGIN")
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    (str(round(STATEMENTS_LOCK_WAIT * 1000)),),
                    prepare=True,
                )
                conn.execute("LOCK TABLE statements IN SHARE ROW EXCLUSIVE MODE")
                cursors = []
                for at in range(0, len(first), PUT_ROWS):
                    rows, params = _put_statements_params(first[at : at + PUT_ROWS])
                    cursor = psycopg.RawCursor(conn)
                    cursor.execute(_put_statements_sql(rows), params, prepare=True, binary=True)
                    cursors.append(cursor)
                conn.execute("COMMIT")
            seqs: dict[bytes, int] = {}
            for cursor in cursors:
                for entry_id, seq, replaced in cursor.fetchall():
                    seqs[bytes(entry_id)] = int(seq)
                    if replaced:
                        replaced_row(bytes(entry_id), int(seq))
            return seqs

    def get_statement(self, entry_id: bytes) -> StatementRecord | None:
        rows = self._read(
            "read",
            f"SELECT {_STATEMENT_COLUMNS} FROM statements WHERE entry_id = %s",  # noqa: S608
            (entry_id,),
        )
        return _record(rows[0]) if rows else None

    def content_types(self, entry_ids: Collection[bytes]) -> dict[bytes, str]:
        ids = list(dict.fromkeys(entry_ids))
        if not ids:
            return {}
        rows = self._read(
            "read",
            "SELECT entry_id, content_type FROM statements WHERE entry_id = ANY(%b::bytea[])",
            (ids,),
        )
        return {bytes(e): str(t) for e, t in rows}

    def statements_since(self, seq: int, *, limit: int) -> list[tuple[int, StatementRecord]]:
        rows = self._read(
            "read",
            f"SELECT seq, {_STATEMENT_COLUMNS} FROM statements"  # noqa: S608
            " WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [(int(r[0]), _record(r[1:])) for r in rows]

    def entries_since(self, seq: int, *, limit: int) -> list[tuple[int, bytes]]:
        rows = self._read(
            "read",
            "SELECT seq, entry_id FROM statements WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [(int(s), bytes(e)) for s, e in rows]

    def backlog_since(self, seq: int, *, limit: int) -> list[BacklogRow]:
        rows = self._read(
            "read",
            f"SELECT {_BACKLOG_COLUMNS} FROM statements"  # noqa: S608
            " WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [_backlog_row(r) for r in rows]

    def statements_of_type(self, content_type: str, *, skip: int = 0) -> list[StatementRecord]:
        rows = self._read(
            "read",
            f"SELECT {_STATEMENT_COLUMNS} FROM statements"  # noqa: S608
            " WHERE content_type = %s ORDER BY seq OFFSET %s",
            (content_type, skip),
        )
        return [_record(r) for r in rows]

    def statements_of_type_after(
        self, content_type: str, seq: int
    ) -> list[tuple[int, StatementRecord]]:
        rows = self._read(
            "read",
            f"SELECT seq, {_STATEMENT_COLUMNS} FROM statements"  # noqa: S608
            " WHERE content_type = %s AND seq > %s ORDER BY seq",
            (content_type, seq),
        )
        return [(int(r[0]), _record(r[1:])) for r in rows]

    def read_sequenced(self) -> int:
        rows = self._read("read", "SELECT seq FROM statements_sequenced WHERE id = 0", ())
        return int(rows[0][0]) if rows else 0

    def write_sequenced(self, seq: int) -> None:
        with self._errors("statement write"), self._conn() as conn:
            conn.execute(
                "INSERT INTO statements_sequenced (id, seq) VALUES (0, %s)"
                " ON CONFLICT (id) DO UPDATE"
                " SET seq = greatest(statements_sequenced.seq, excluded.seq)",
                (seq,),
            )

    def row_key_check(self, check: bytes, *, replace: bool = False) -> bytes:
        with self._errors("statement write"), self._conn() as conn:
            row = conn.execute(
                "INSERT INTO statement_row_key (id, key_check) VALUES (0, %s)"
                " ON CONFLICT (id) DO UPDATE SET key_check = CASE WHEN %s"
                " THEN excluded.key_check ELSE statement_row_key.key_check END"
                " RETURNING key_check",
                (check, replace),
            ).fetchone()
        assert row is not None
        return bytes(row[0])

    def recorded_row_key_check(self) -> bytes | None:
        with self._errors("read"), self._conn() as conn:
            row = conn.execute("SELECT key_check FROM statement_row_key").fetchone()
        return None if row is None else bytes(row[0])

    # -- the sequencer role -------------------------------------------------------------------

    def acquire_role(self, holder: str) -> PostgresLease | None:
        """Take the sequencer role (see the module docstring) or return ``None``.

        A bid that fails keeps its connection for the next bid of the same holder: a
        process waiting for the role asks every ``ROLE_CHECK`` on one session, rather than
        having the server start a new backend for each ask. A kept session the server has
        ended meanwhile (a restart; the bidder stopped for longer than :data:`ROLE_LEASE`)
        is replaced within the same bid.
        """
        with self._bid_lock:
            spare, self._bidder = self._bidder, None
        if spare is not None:
            if spare[0] == holder and not spare[1].closed:
                try:
                    return self._bid(holder, spare[1])
                except StorageError:
                    if not spare[1].broken:
                        raise
            else:
                spare[1].close()
        return self._bid(holder, self._bid_connection(holder))

    def _bid(self, holder: str, conn: psycopg.Connection[Any]) -> PostgresLease | None:
        """One bid on ``conn``: closed unless it holds the role or is kept for the next bid."""
        try:
            with self._errors("role bid"):
                got = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",
                    (_ROLE_LOCK_CLASS,),
                ).fetchone()
                if got is None or not got[0]:
                    with self._bid_lock:
                        if self._closed:
                            conn.close()
                        else:
                            self._bidder = (holder, conn)
                    return None
                # Raised while we hold the lock: commits fenced with any older epoch fail.
                return PostgresLease(conn, _raise_epoch(conn))
        except BaseException:
            conn.close()
            raise

    def _bid_connection(self, holder: str) -> psycopg.Connection[Any]:
        """A session of its own for the role: the advisory lock lives and dies with it; TCP
        keepalives end it when its host goes silent (:data:`ROLE_KEEPALIVE`), the server
        when its process stops querying it (:data:`ROLE_LEASE`)."""
        idle, interval, count = ROLE_KEEPALIVE
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=f"sealtrail-sequencer {holder}"[:63],
                keepalives=1,
                keepalives_idle=idle,
                keepalives_interval=interval,
                keepalives_count=count,
            )
        except psycopg.Error as exc:
            raise StorageError(
                f"PostgreSQL role bid failed: {exc.__class__.__name__}",
                hint="The server may be down; the bid is retried.",
            ) from None
        settings: list[tuple[str, object]] = [
            *zip(
                ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"),
                ROLE_KEEPALIVE,
                strict=True,
            ),
            ("lock_timeout", _milliseconds(ROLE_TAKEOVER_WAIT)),
        ]
        if conn.info.server_version >= 140000:
            settings.append(("idle_session_timeout", _milliseconds(ROLE_LEASE)))
        elif not self._warned_lease:
            self._warned_lease = True
            log.warning(
                "PostgreSQL %d has no idle_session_timeout (14 and later do): a sequencer "
                "whose process stops keeps the role until it runs again",
                conn.info.server_version // 10000,
            )
        try:
            with self._errors("role bid"):
                for setting, value in settings:
                    conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(setting), value))
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self._closed = True
        with self._bid_lock:  # set before anything in __init__ can fail
            spare, self._bidder = self._bidder, None
        if spare is not None:
            spare[1].close()
        pool = getattr(self, "_pool", None)
        if pool is not None and not pool.closed:
            pool.close()

    # -- tampering, for attack tests (a database row edited behind the log's back) ------------

    def execute(self, query: LiteralString, params: tuple[object, ...] = ()) -> None:
        """Run one raw statement. Only tests and repair tools should ever call this."""
        with self._errors("statement"), self._conn() as conn:
            conn.execute(query, params)


#: Raise the fencing epoch (the new holder's first act, under its advisory lock).
_RAISE_EPOCH: LiteralString = (
    "UPDATE log_checkpoint SET epoch = epoch + 1 WHERE id = 0 RETURNING epoch"
)
#: End the session whose transaction holds the checkpoint row (its ``xmax`` is the locker's
#: transaction while the lock is held; the row is never locked by two at once).
_END_ROW_LOCKER: LiteralString = """
    SELECT pg_terminate_backend(a.pid)
    FROM pg_stat_activity AS a, log_checkpoint AS c
    WHERE c.id = 0 AND a.backend_xid = c.xmax AND a.pid <> pg_backend_pid()
"""


#: End the sessions that hold the ``statements`` lock while waiting for their client in the
#: middle of a transaction for longer than the parameter (milliseconds).
_END_STATEMENTS_LOCKER: LiteralString = """
    SELECT pg_terminate_backend(a.pid)
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.relation = 'statements'::regclass AND l.granted
      AND l.mode = 'ShareRowExclusiveLock' AND a.pid <> pg_backend_pid()
      AND a.state = 'active' AND a.wait_event = 'ClientRead'
      AND clock_timestamp() - a.state_change >= make_interval(secs => %s / 1000.0)
"""


def _raise_epoch(conn: psycopg.Connection[Any]) -> int:
    """Raise the epoch on the role's session, which holds the advisory lock: the new epoch.

    The checkpoint row may be held by a commit of the previous holder. Only it: every
    commit is a sequencer's, and a sequencer runs only while its process holds the role.
    A commit of a running process ends within :data:`ROLE_TAKEOVER_WAIT` or is fenced
    anyway; one that holds the row longer belongs to a process stopped in the middle of
    it (in a ``COPY``, which no idle timeout ends). Its session is ended, which rolls the
    commit back as a whole; nothing of it was acknowledged.
    """
    try:
        row = conn.execute(_RAISE_EPOCH).fetchone()
    except psycopg.errors.LockNotAvailable:
        conn.execute(_END_ROW_LOCKER)
        row = conn.execute(_RAISE_EPOCH).fetchone()
    if row is None:
        raise Corruption("the checkpoint row of the PostgreSQL store is missing")
    return int(row[0])


class PostgresLease:
    """The sequencer role: held while its connection (and so its advisory lock) lives.

    :meth:`alive` is a query on that connection: asked every ``ROLE_CHECK``, it is also what
    keeps the server from ending the session as idle (:data:`ROLE_LEASE`).
    """

    def __init__(self, conn: psycopg.Connection[Any], epoch: int) -> None:
        self._conn = conn
        self._epoch = epoch
        self._lock = threading.Lock()
        self._lost = False

    @property
    def epoch(self) -> int:
        return self._epoch

    def alive(self) -> bool:
        with self._lock:
            if self._lost:
                return False
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error:
                self._lost = True
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
            return not self._lost

    def release(self) -> None:
        with self._lock:
            if not self._lost and not self._conn.closed:
                # Let go of the lock before ending the session: a closed session's backend
                # ends a moment after the client has moved on, and a bid made meanwhile
                # would find the role still taken. Against a server gone silent this waits
                # at most as long as the session's keepalives (ROLE_KEEPALIVE, ~11 s).
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
            self._lost = True
            with contextlib.suppress(psycopg.Error):
                self._conn.close()  # the session ends, and the advisory lock with it
