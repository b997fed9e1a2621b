"""What only a server store has to get right: racing processes, dropped connections, schema
versions shared by several processes, and errors that never show a password.

The LogStore contract itself is checked by tests/conformance (its ``postgresql`` rows).
Every test gets a fresh schema (``postgres_url``, tests/conftest.py) and skips, with the
reason, when no server is reachable.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.errors import ReadOnlySqlTransaction

from sealtrail.errors import CheckpointConflict, ConfigError, Fenced, StorageError
from sealtrail.log import CheckpointSigner, LogReader, Sequencer, SequencerConfig
from sealtrail.storage import (
    Commit,
    LogStore,
    PostgresIndex,
    PostgresStore,
    StatementRecord,
    StatementStore,
    TilePart,
    open_store,
)
from sealtrail.storage import postgres as postgres_module
from sealtrail.storage._leafruns import FANOUT, MAX_RUN, PAGE_ENTRIES
from sealtrail.storage.postgres import (
    _MIGRATIONS,
    COMPONENT,
    IDLE_IN_TRANSACTION,
    MERGE_IDLE_IN_TRANSACTION,
    PUT_ROWS,
    ROLE_LEASE,
    ROLE_TAKEOVER_WAIT,
    PostgresLease,
)
from sealtrail.storage.postgres import _Runs as PostgresRuns
from tests.conftest import PostgresSchemas

pytestmark = pytest.mark.postgres

SCHEMA_VERSION = len(_MIGRATIONS)


def _leaf(tag: str, i: int) -> bytes:
    return hashlib.sha256(f"{tag} {i}".encode()).digest()


def batch(tag: str, old: int, n: int) -> Commit:
    """``n`` leaves after ``old`` (within tile 0), one level-0 part, one bundle part."""
    leaves = [_leaf(tag, i) for i in range(old, old + n)]
    entries = b"".join(len(tag).to_bytes(2, "big") + tag.encode() for _ in leaves)
    return Commit(
        old,
        old + n,
        f"{tag} {old + n}".encode(),
        [TilePart(0, 0, old, n, b"".join(leaves)), TilePart(-1, 0, old, n, entries)],
        list(zip(leaves, range(old, old + n), strict=True)),
    )


@pytest.fixture
def stores(postgres_url: str) -> Iterator[Callable[[], PostgresStore]]:
    """Opens store objects on the test's schema; closes them all afterwards."""
    opened: list[PostgresStore] = []

    def open_one() -> PostgresStore:
        store = PostgresStore(postgres_url)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def raw(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def assert_holds_only(store: PostgresStore, commit: Commit, lost: Commit | None) -> None:
    """The store holds ``commit`` as its newest batch, and nothing of ``lost``."""
    checkpoint = store.read_checkpoint()
    assert checkpoint is not None
    assert (checkpoint.size, checkpoint.note) == (commit.new_size, commit.checkpoint)
    parts = store.read_parts(0, 0)
    assert parts[-1].data == commit.parts[0].data
    assert store.read_parts(-1, 0)[-1].data == commit.parts[1].data
    if lost is not None:
        assert store.lookup_leaves([h for h, _ in lost.leaves]) == {}


# -- the compare-and-swap between processes ---------------------------------------------------


def test_both_protocols_are_implemented(stores: Callable[[], PostgresStore]) -> None:
    store = stores()
    assert isinstance(store, LogStore)
    assert isinstance(store, StatementStore)


@pytest.mark.parametrize("round_", range(5))
def test_two_stores_racing_for_the_same_size_exactly_one_wins(
    postgres_url: str, stores: Callable[[], PostgresStore], round_: int
) -> None:
    first, second = stores(), stores()
    first.commit(batch("base", 0, 10))
    contenders = {"a": (first, batch("a", 10, 20)), "b": (second, batch("b", 10, 30))}
    outcome: dict[str, BaseException | None] = {}
    # Hold the checkpoint row so that both commits are in flight at once, then let go.
    with raw(postgres_url) as holder, holder.transaction():
        holder.execute("SELECT size FROM log_checkpoint WHERE id = 0 FOR UPDATE")

        def run(name: str) -> None:
            store, commit = contenders[name]
            try:
                store.commit(commit)
                outcome[name] = None
            except BaseException as exc:
                outcome[name] = exc

        threads = [threading.Thread(target=run, args=(name,)) for name in contenders]
        for t in threads:
            t.start()
        _wait_for_lock_waiters(holder, 2)
    for t in threads:
        t.join(30)
    winners = [name for name, exc in outcome.items() if exc is None]
    assert len(winners) == 1, outcome
    (loser,) = set(contenders) - set(winners)
    assert isinstance(outcome[loser], CheckpointConflict)
    for store in (first, second, stores()):
        assert_holds_only(store, contenders[winners[0]][1], contenders[loser][1])


def _wait_for_lock_waiters(conn: psycopg.Connection[Any], count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # Only this test's sessions (its URL names them): other runs may share the database.
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
            " AND application_name = current_setting('application_name')"
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{count} commits never queued on the checkpoint row")


def test_the_loser_of_a_race_succeeds_after_reloading(stores: Callable[[], PostgresStore]) -> None:
    first, second = stores(), stores()
    first.commit(batch("a", 0, 5))
    with pytest.raises(CheckpointConflict, match="at size 5, not 0"):
        second.commit(batch("b", 0, 5))
    checkpoint = second.read_checkpoint()
    assert checkpoint is not None
    second.commit(batch("b", checkpoint.size, 5))
    assert_holds_only(first, batch("b", 5, 5), None)


# -- a connection dropped mid-commit ------------------------------------------------------------


def test_a_commit_whose_connection_is_killed_midway_leaves_nothing(
    postgres_url: str, stores: Callable[[], PostgresStore]
) -> None:
    store = stores()
    base = batch("base", 0, 10)
    store.commit(base)
    doomed = batch("doomed", 10, 50)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            store.commit(doomed)
        except BaseException as exc:
            failure.append(exc)

    # Block the commit after it has written its tile parts (the leaf index is locked), then
    # end its backend the way a crash or a failover would.
    with raw(postgres_url) as blocker, blocker.transaction():
        blocker.execute("LOCK TABLE log_leaf_runs IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=run)
        thread.start()
        _wait_for_lock_waiters(blocker, 1)
        with raw(postgres_url) as killer:
            killed = killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                " AND application_name = current_setting('application_name')"
            ).fetchall()
        assert killed == [(True,)]
        thread.join(30)
    assert len(failure) == 1
    assert type(failure[0]) is StorageError
    assert "doomed" not in str(failure[0])
    for reader in (store, stores()):  # the same pool (it dropped the dead one) and a new one
        assert_holds_only(reader, base, doomed)
        assert reader.read_parts(0, 0) == [base.parts[0]]
    store.commit(doomed)  # the caller reloads and commits again
    assert_holds_only(stores(), doomed, None)


def test_a_commit_on_a_closed_pool_writes_nothing(stores: Callable[[], PostgresStore]) -> None:
    store = stores()
    store.commit(batch("base", 0, 3))
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.commit(batch("late", 3, 3))
    assert_holds_only(stores(), batch("base", 0, 3), batch("late", 3, 3))


def _end_pooled_sessions(url: str) -> None:
    """End every session of this test's stores on the server, as a restart would."""
    with raw(url) as killer:
        killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            " AND application_name = current_setting('application_name')"
        )


def test_reads_survive_every_pooled_connection_being_terminated(
    postgres_url: str, stores: Callable[[], PostgresStore]
) -> None:
    store = stores()
    store.commit(batch("base", 0, 3))
    _end_pooled_sessions(postgres_url)
    # A read is retried once on a fresh connection; the dead ones leave the pool.
    assert_holds_only(store, batch("base", 0, 3), None)
    store.commit(batch("more", 3, 2))


def test_leaf_lookups_survive_every_pooled_connection_being_terminated(
    postgres_url: str, stores: Callable[[], PostgresStore]
) -> None:
    store = stores()
    base = batch("base", 0, 3)
    store.commit(base)
    assert store.lookup_leaves([base.leaves[0][0]]) == {base.leaves[0][0]: [0]}
    _end_pooled_sessions(postgres_url)
    found = store.lookup_leaves([h for h, _ in base.leaves])  # the first read after it
    assert found == {h: [i] for h, i in base.leaves}


def test_a_sequencer_log_on_postgres_verifies_and_survives_reopening(
    stores: Callable[[], PostgresStore], signer: CheckpointSigner
) -> None:
    entries = [f"entry {i}".encode() for i in range(700)]

    async def add(store: LogStore, items: list[bytes]) -> list[int]:
        config = SequencerConfig(index_every=1)
        async with Sequencer(store, signer=signer, config=config) as seq:
            return await seq.add_many(items)

    first = stores()
    assert asyncio.run(add(first, entries)) == list(range(700))
    first.close()
    again = stores()
    assert asyncio.run(add(again, [entries[5], b"one more"])) == [5, 700]
    reader = LogReader(again, origin=signer.origin, verifiers=[signer.verifier])
    assert reader.audit() is not None


# -- statements -----------------------------------------------------------------------------------


def _statement(i: int, content_type: str = "application/x") -> StatementRecord:
    body = f"statement {i}".encode()
    return StatementRecord(hashlib.sha256(body).digest(), body, "iss", f"sub {i}", content_type, i)


def test_statements_round_trip_idempotently(stores: Callable[[], PostgresStore]) -> None:
    store = stores()
    a, b, c = _statement(1), _statement(2, "text/plain"), _statement(3)
    assert store.put_statements([]) == []
    assert store.put_statements([a, b, a]) == [1, 2, 1]
    assert store.put_statements([c, b]) == [3, 2]
    assert store.get_statement(b.entry_id) == b
    assert store.get_statement(b"\0" * 32) is None
    assert store.statements_since(1, limit=5) == [(2, b), (3, c)]
    assert store.statements_since(0, limit=1) == [(1, a)]
    assert store.statements_of_type("application/x") == [a, c]
    assert store.read_sequenced() == 0
    store.write_sequenced(2)
    store.write_sequenced(1)  # never lowered
    assert stores().read_sequenced() == 2


def test_groups_of_every_shape_keep_each_statement_s_columns_in_place(
    stores: Callable[[], PostgresStore],
) -> None:
    """Groups padded to a power of two, and a group larger than one INSERT (PUT_ROWS),
    bind every column of every statement to its own row ($n placeholders, RawCursor)."""
    store = stores()
    made = [_statement(k, f"application/x-{k % 3}") for k in range(PUT_ROWS + 45)]
    assert store.put_statements(made[:3]) == [1, 2, 3]
    assert store.put_statements(made[2:7]) == [3, 4, 5, 6, 7]
    assert store.put_statements(made) == list(range(1, len(made) + 1))
    assert store.statements_since(0, limit=len(made) + 1) == list(enumerate(made, start=1))


def test_statements_of_a_few_kilobytes_stay_in_their_row(
    stores: Callable[[], PostgresStore],
) -> None:
    store = stores()
    body = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(96))  # 3 KB, random
    record = StatementRecord(hashlib.sha256(body).digest(), body, "iss", "sub", "a/b", 1)
    assert store.put_statements([record]) == [1]
    with store._pool.connection() as conn:
        row = conn.execute(
            "SELECT pg_relation_size(reltoastrelid), reloptions FROM pg_class"
            " WHERE oid = 'statements'::regclass"
        ).fetchone()
    assert row is not None
    toast, options = row
    assert toast == 0
    assert "toast_tuple_target=8160" in options
    assert store.get_statement(record.entry_id) == record


def test_concurrent_statement_writers_get_sequence_numbers_in_commit_order(
    stores: Callable[[], PostgresStore],
) -> None:
    writers = [stores() for _ in range(4)]
    results: list[list[int]] = [[] for _ in writers]

    def write(k: int) -> None:
        for j in range(25):
            results[k] += writers[k].put_statements([_statement(1000 * k + j)])

    threads = [threading.Thread(target=write, args=(k,)) for k in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(s for r in results for s in r) == list(range(1, 101)), "no gaps, no repeats"
    assert all(r == sorted(r) for r in results)


# -- schema migrations ---------------------------------------------------------------------------


def test_the_schema_version_is_recorded_per_component(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    PostgresStore(postgres_url).close()  # idempotent
    with raw(postgres_url) as conn:
        rows = conn.execute("SELECT component, version FROM sealtrail_schema").fetchall()
    assert rows == [(COMPONENT, SCHEMA_VERSION)]


def test_processes_opening_a_new_database_together_migrate_it_once(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def open_close() -> None:
        try:
            PostgresStore(postgres_url, pool_size=1).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    store = PostgresStore(postgres_url)
    assert store.read_checkpoint() is None
    store.close()


def test_a_store_with_a_newer_schema_is_refused_and_left_alone(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with raw(postgres_url) as conn:
        conn.execute("UPDATE sealtrail_schema SET version = 99 WHERE component = %s", (COMPONENT,))
    with pytest.raises(ConfigError, match="schema version 99"):
        PostgresStore(postgres_url)
    with raw(postgres_url) as conn:
        assert conn.execute("SELECT version FROM sealtrail_schema").fetchall() == [(99,)]


def _read_only(url: str) -> str:
    """``url`` whose sessions are read-only, as every session of a hot standby is."""
    return url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20", 1)


def test_a_current_store_and_index_open_on_a_read_only_session(
    postgres_url: str, signer: CheckpointSigner
) -> None:
    """A read-only server or an auditor pointed at a standby: opening writes nothing."""
    store = PostgresStore(postgres_url)
    asyncio.run(_append(store, signer))
    store.close()
    PostgresIndex(postgres_url).close()
    assert "default_transaction_read_only" in _read_only(postgres_url)
    with raw(_read_only(postgres_url)) as conn, pytest.raises(ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE nope (x int)")  # the session is read-only indeed
    reading = PostgresStore(_read_only(postgres_url))
    try:
        stored = reading.read_checkpoint()
        assert stored is not None and stored.size == 3
    finally:
        reading.close()
    index = PostgresIndex(_read_only(postgres_url))
    try:
        assert index.applied_size() == 0
    finally:
        index.close()


async def _append(store: LogStore, signer: CheckpointSigner) -> None:
    async with Sequencer(store, signer=signer) as seq:
        await seq.add_many([b"entry %d" % i for i in range(3)])


@pytest.mark.parametrize("kind", ["log", "index"])
def test_a_schema_to_upgrade_on_a_read_only_session_says_where_to_upgrade_it(
    postgres_url: str, kind: str
) -> None:
    opener = PostgresStore if kind == "log" else PostgresIndex
    with pytest.raises(ConfigError, match="read-only") as refused:
        opener(_read_only(postgres_url))
    assert f"the {'store' if kind == 'log' else 'index'} has schema version 0" in str(refused.value)
    assert "read-write connection to the primary" in refused.value.hint


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("kind", ["log", "index"])
def test_a_search_path_naming_no_schema_is_a_configuration_error(
    postgres_url: str, kind: str, read_only: bool
) -> None:
    """Not a storage failure to retry, nor a schema to upgrade through the primary."""
    opener = PostgresStore if kind == "log" else PostgresIndex
    name = postgres_url.rsplit("sealtrail-test-", 1)[1]
    url = postgres_url.replace(f"search_path%3D{name}", f"search_path%3D{name}_missing")
    with pytest.raises(ConfigError, match="search_path names no existing schema"):
        opener(_read_only(url) if read_only else url)


@pytest.mark.parametrize("kind", ["log", "index"])
def test_a_schema_first_on_the_search_path_gets_its_own_tables(
    postgres_schemas: PostgresSchemas, kind: str
) -> None:
    """A current schema found further down the ``search_path`` (another deployment's) is
    not this one's: the first schema gets tables of its own, as a first open makes them."""
    opener = PostgresStore if kind == "log" else PostgresIndex
    theirs, mine = postgres_schemas.new_url(), postgres_schemas.new_url()
    opener(theirs).close()
    first, second = (url.rsplit("sealtrail-test-", 1)[1] for url in (mine, theirs))
    both = mine.replace(f"search_path%3D{first}", f"search_path%3D{first}%2C{second}")
    assert both != mine
    opener(both).close()
    with raw(mine) as conn:
        made = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()"
        ).fetchone()
    assert made is not None and made[0] > 0


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("off", "on"),
        ("local", "on"),  # does not wait for a synchronous standby
        ("remote_write", "on"),  # waits for the standby's write, not its flush
        ("on", "on"),
        ("remote_apply", "remote_apply"),  # stricter: kept
    ],
)
@pytest.mark.parametrize("kind", ["log", "index"])
def test_pooled_connections_commit_durably_whatever_synchronous_commit_they_start_with(
    postgres_schemas: PostgresSchemas, given: str, kept: str, kind: str
) -> None:
    """Both stores' pools, the session's value set in the URL (as a role or server default
    would set it): anything below ``on`` is raised to ``on``, ``remote_apply`` is kept."""
    url = postgres_schemas.new_url().replace(
        "options=", f"options=-csynchronous_commit%3D{given}%20"
    )
    store: PostgresStore | PostgresIndex = (
        PostgresStore(url) if kind == "log" else PostgresIndex(url)
    )
    try:
        with store._pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
    finally:
        store.close()
    assert row == (kept,)


@pytest.mark.parametrize("kind", ["log", "index"])
def test_pooled_connections_end_transactions_left_waiting_for_their_client(
    postgres_url: str, kind: str
) -> None:
    store: PostgresStore | PostgresIndex = (
        PostgresStore(postgres_url) if kind == "log" else PostgresIndex(postgres_url)
    )
    try:
        with store._pool.connection() as conn:
            row = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
    finally:
        store.close()
    assert row == (f"{IDLE_IN_TRANSACTION:g}s",)


def test_a_commit_left_waiting_by_a_stopped_process_ends_and_frees_the_checkpoint_row(
    postgres_url: str, stores: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped in the middle of a commit holds the checkpoint row: the server ends
    its session after IDLE_IN_TRANSACTION, and the next committer goes ahead."""
    monkeypatch.setattr(postgres_module, "IDLE_IN_TRANSACTION", 0.3)
    stopped, other = stores(), stores()
    stopped.commit(batch("base", 0, 10))
    with stopped._pool.connection() as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT size FROM log_checkpoint WHERE id = 0 FOR UPDATE")
        began = time.monotonic()
        other.commit(batch("next", 10, 5))  # waits for the row until the session ends
        waited = time.monotonic() - began
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            conn.execute("SELECT 1")
        assert conn.broken
    assert 0.2 < waited < 3.0, waited
    assert_holds_only(other, batch("next", 10, 5), None)


def test_a_statement_write_left_half_sent_by_a_stopped_process_is_ended(
    stores: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped half-way through sending a statement write holds the statements
    lock, and the server does not count its session as idle (it waits for the rest of a
    pipeline): the next writer ends it once it has waited STATEMENTS_STALLED for its client,
    and goes ahead."""
    monkeypatch.setattr(postgres_module, "STATEMENTS_LOCK_WAIT", 0.1)
    monkeypatch.setattr(postgres_module, "STATEMENTS_STALLED", 0.3)
    stopped, other = stores(), stores()
    assert other.put_statements([_statement(1)]) == [1]
    with psycopg.connect(stopped._url, autocommit=True) as conn, ExitStack() as pipeline:
        pipeline.enter_context(conn.pipeline())
        conn.execute("BEGIN")
        conn.execute("LOCK TABLE statements IN SHARE ROW EXCLUSIVE MODE")
        # This "process" now stops sending: the lock is held, with no Sync to come.
        _wait_for_statements_lock(other)
        began = time.monotonic()
        assert other.put_statements([_statement(2)]) == [2]
        waited = time.monotonic() - began
        with pytest.raises(psycopg.OperationalError):
            pipeline.close()  # the session was ended
        assert conn.broken
    assert 0.25 < waited < 3.0, waited
    assert other.put_statements([_statement(3)]) == [3]


def _wait_for_statements_lock(store: PostgresStore) -> None:
    deadline = time.monotonic() + 5
    query: LiteralString = (
        "SELECT count(*) FROM pg_locks WHERE relation = 'statements'::regclass AND granted"
    )
    while True:
        with store._conn() as conn:
            row = conn.execute(query).fetchone()
        if row is not None and row[0]:
            return
        assert time.monotonic() < deadline, "the statements lock was never taken"
        time.sleep(0.01)


def test_a_statement_writer_still_sending_is_given_its_time(
    stores: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that holds the lock while it sends a large group (waiting for the rest of
    its pipeline, as a stopped one does) for less than STATEMENTS_STALLED is waited for."""
    monkeypatch.setattr(postgres_module, "STATEMENTS_LOCK_WAIT", 0.1)
    monkeypatch.setattr(postgres_module, "STATEMENTS_STALLED", 3.0)
    sending, other = stores(), stores()
    with psycopg.connect(sending._url, autocommit=True) as conn, ExitStack() as pipeline:
        pipeline.enter_context(conn.pipeline())
        conn.execute("BEGIN")
        conn.execute("LOCK TABLE statements IN SHARE ROW EXCLUSIVE MODE")
        _wait_for_statements_lock(other)

        def rest_of_the_group() -> None:
            conn.execute("COMMIT")
            pipeline.close()

        finished = threading.Timer(1.0, rest_of_the_group)
        finished.start()
        began = time.monotonic()
        assert other.put_statements([_statement(1)]) == [1]
        waited = time.monotonic() - began
        finished.join()
        assert not conn.broken
    assert 0.8 < waited < 2.9, waited


def test_a_statement_writer_that_is_merely_slow_is_not_ended(
    stores: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that holds the lock while the server works for it (not waiting for its
    client) is waited for, and the second write fails clearly after one more wait."""
    monkeypatch.setattr(postgres_module, "STATEMENTS_LOCK_WAIT", 0.1)
    monkeypatch.setattr(postgres_module, "STATEMENTS_STALLED", 0.3)
    busy, other = stores(), stores()
    with busy._conn() as conn, conn.transaction():
        conn.execute("LOCK TABLE statements IN SHARE ROW EXCLUSIVE MODE")
        worker = threading.Thread(target=conn.execute, args=("SELECT pg_sleep(1.5)",))
        worker.start()
        try:
            _wait_for_statements_lock(other)
            with pytest.raises(StorageError, match="LockNotAvailable"):
                other.put_statements([_statement(1)])
        finally:
            worker.join()
    assert other.put_statements([_statement(1)]) == [1]


def test_a_leaf_index_merge_allows_itself_longer_between_statements(
    stores: Callable[[], PostgresStore],
) -> None:
    """Merging computes between its statements: its transaction alone waits longer."""
    store = stores()
    store.commit(batch("base", 0, 10))
    with store._conn() as conn:
        with conn.transaction():
            table = PostgresRuns(conn)
            table.read(table.rows()[0])
            inside = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        after = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
    assert inside == (f"{MERGE_IDLE_IN_TRANSACTION / 60:g}min",)
    assert after == (f"{IDLE_IN_TRANSACTION:g}s",)


# -- open_store and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_open_store_opens_postgresql_urls(postgres_url: str, scheme: str) -> None:
    store = open_store(postgres_url.replace("postgresql", scheme, 1))
    assert isinstance(store, PostgresStore)
    store.close()


def test_an_unreachable_server_is_a_config_error_without_the_password() -> None:
    # Port 1 on loopback: refused at once, whatever this machine runs.
    url = "postgresql://sealtrail:s3cret-pw@127.0.0.1:1/ledger"
    with pytest.raises(ConfigError) as info:
        open_store(url)
    text = info.value.diagnostics()
    assert "127.0.0.1:1/ledger" in text
    assert "s3cret-pw" not in text
    # The hint keeps the password off the command line (--store) and out of the URL.
    assert "postgresql://user@host:5432/dbname" in info.value.hint
    assert "PGPASSWORD" in info.value.hint and "~/.pgpass" in info.value.hint
    assert "password@" not in info.value.hint
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@db:6543/ledger", "db:6543/ledger"),
        ("postgresql://db/ledger", "db:5432/ledger"),
        # The URL docs/deploy.md gives for a primary and its standby: each node its port.
        (
            "postgresql://u:pw@db1:5433,db2:5434/ledger?target_session_attrs=read-write",
            "db1:5433,db2:5434/ledger",
        ),
        ("postgresql://db1,db2/ledger", "db1:5432,db2:5432/ledger"),
        ("postgresql://[::1]:5433/ledger", "[::1]:5433/ledger"),
    ],
)
def test_messages_show_each_node_of_a_url_and_never_its_password(url: str, shown: str) -> None:
    assert postgres_module.describe(url) == shown


def test_a_wrong_password_is_a_config_error_without_the_password(postgres_url: str) -> None:
    # Trust authentication ignores passwords; a missing database fails the same way.
    url = postgres_url.replace("@", ":s3cret-pw@", 1).replace("/test?", "/no_such_db?", 1)
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert "s3cret-pw" not in info.value.diagnostics()
    assert "no_such_db" in info.value.message


def test_a_bad_raw_statement_is_a_storage_error_without_sql_or_values(
    stores: Callable[[], PostgresStore],
) -> None:
    store = stores()
    with pytest.raises(StorageError) as info:
        store.execute(
            "INSERT INTO log_leaf_pages (page, indexes) VALUES (%s, %s), (%s, %s)",
            (7, b"secret-1", 7, b"secret-1"),
        )
    assert "[23505]" in info.value.message
    assert "INSERT" not in info.value.message
    assert "secret" not in info.value.message
    assert "(7)" not in info.value.message


def test_a_closed_store_refuses_to_work(stores: Callable[[], PostgresStore]) -> None:
    store = stores()
    store.close()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.read_checkpoint()
    with pytest.raises(StorageError, match="closed"):
        store.put_statements([_statement(1)])


def test_small_and_large_batches_take_their_own_write_paths_and_verify(
    stores: Callable[[], PostgresStore], signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of a few entries goes in one pipeline, a large one by COPY (above
    SMALL_COMMIT bytes): both leave a tree that verifies from scratch."""
    from sealtrail.storage import postgres

    store = stores()
    paths: list[str] = []
    small = postgres.PostgresStore._commit_small

    def counted(self: PostgresStore, commit: Commit, parts: Any) -> None:
        paths.append("small")
        small(self, commit, parts)

    monkeypatch.setattr(postgres.PostgresStore, "_commit_small", counted)
    large = [hashlib.sha512(b"%d" % i).digest() * 8 for i in range(2000)]  # 512 B each

    async def append() -> None:
        config = SequencerConfig(max_batch=4096, index_every=1 << 20)
        async with Sequencer(store, signer=signer, config=config) as seq:
            await seq.add_many([b"a few", b"entries"])
            assert paths == ["small"]
            await seq.add_many(large)  # ~1.1 MB of bundles: COPY
            assert paths == ["small"]
            await seq.add_many([b"and", b"a few more"])
            assert paths == ["small", "small"]

    asyncio.run(append())
    checkpoint = LogReader(store, origin=signer.origin, verifiers=[signer.verifier]).audit()
    assert checkpoint is not None
    assert checkpoint.size == 2004


# -- transactions begun and committed by hand (one pipeline) -------------------------------------


def _leafless(tag: str, old: int, n: int) -> Commit:
    """``batch`` without leaf index rows: what takes the small commit's pipeline."""
    full = batch(tag, old, n)
    return Commit(full.old_size, full.new_size, full.checkpoint, full.parts, [])


def test_a_small_commit_that_loses_the_race_leaves_nothing_and_its_connection_usable(
    postgres_url: str,
) -> None:
    """The small commit writes ahead of its compare-and-swap's answer, in a transaction it
    begins and ends itself: a lost race must roll all of it back, and leave the pool's one
    connection usable."""
    store = PostgresStore(postgres_url, pool_size=1)
    try:
        base, stale = _leafless("base", 0, 10), _leafless("stale", 0, 12)
        store.commit(base)
        with pytest.raises(CheckpointConflict):
            store.commit(stale)
        assert_holds_only(store, base, None)
        assert store.read_parts(0, 0) == [base.parts[0]]
        store.commit(_leafless("next", 10, 5))  # the same connection, idle again
        assert_holds_only(store, _leafless("next", 10, 5), None)
    finally:
        store.close()


def test_a_statement_write_that_fails_midway_stores_none_of_it(postgres_url: str) -> None:
    """The whole write goes in one round trip, in a transaction begun by hand; a statement
    that cannot be stored (text with a NUL byte) fails the lot, leaves no gap in the
    sequence numbers, and the pool's one connection works on."""
    store = PostgresStore(postgres_url, pool_size=1)
    try:
        good, bad = _statement(1), _statement(2, "text/\0plain")
        with pytest.raises(StorageError):
            store.put_statements([good, bad])
        assert store.get_statement(good.entry_id) is None
        assert store.put_statements([good, _statement(3)]) == [1, 2]
    finally:
        store.close()


# -- bidding for the sequencer role ----------------------------------------------------------


def _bidders(url: str, holder: str) -> list[int]:
    """Backend pids of the sessions bidding for (or holding) the role as ``holder``."""
    with raw(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (f"sealtrail-sequencer {holder}",),
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


def test_failed_bids_ask_again_on_one_session_and_close_lets_it_go(
    postgres_url: str, stores: Callable[[], PostgresStore]
) -> None:
    """A process waiting for the role bids every quarter second: on one session kept for the
    purpose, not on a new backend each time; once the role is free, that session takes it."""
    holder, waiter = stores(), stores()
    lease = holder.acquire_role("holder")
    assert lease is not None
    assert waiter.acquire_role("waiter") is None
    first = _bidders(postgres_url, "waiter")
    assert len(first) == 1
    for _ in range(3):
        assert waiter.acquire_role("waiter") is None
    assert _bidders(postgres_url, "waiter") == first
    lease.release()
    taken = waiter.acquire_role("waiter")
    assert taken is not None and taken.epoch > lease.epoch
    assert _bidders(postgres_url, "waiter") == first  # the kept session holds the role now
    taken.release()
    other = waiter.acquire_role("other name")  # a new session for a new name
    assert other is not None
    other.release()


def test_a_closed_store_keeps_no_bid_session(
    postgres_url: str, stores: Callable[[], PostgresStore]
) -> None:
    holder, waiter = stores(), stores()
    lease = holder.acquire_role("holder")
    assert lease is not None
    assert waiter.acquire_role("closing") is None
    assert len(_bidders(postgres_url, "closing")) == 1
    waiter.close()
    deadline = time.monotonic() + 5
    while _bidders(postgres_url, "closing") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _bidders(postgres_url, "closing") == []
    lease.release()


def test_a_bid_session_the_server_ended_is_replaced(
    postgres_url: str, stores: Callable[[], PostgresStore]
) -> None:
    """The server ends the kept session (a restart; a bidder stopped for longer than
    ROLE_LEASE): the next bid opens a new session and bids on it."""
    holder, waiter = stores(), stores()
    lease = holder.acquire_role("holder")
    assert lease is not None
    assert waiter.acquire_role("ended") is None
    (pid,) = _bidders(postgres_url, "ended")
    with raw(postgres_url) as killer:
        killer.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    assert waiter.acquire_role("ended") is None
    after = _bidders(postgres_url, "ended")
    assert len(after) == 1 and after != [pid]
    lease.release()
    taken = waiter.acquire_role("ended")
    assert taken is not None
    taken.release()


def _setting(lease: PostgresLease, name: LiteralString) -> str:
    row = lease._conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
    assert row is not None
    return str(row[0])


def test_the_role_session_is_a_lease_the_server_ends_when_left_idle(
    stores: Callable[[], PostgresStore],
) -> None:
    lease = stores().acquire_role("holder")
    assert lease is not None
    assert _setting(lease, "idle_session_timeout") == f"{ROLE_LEASE:g}s"
    assert _setting(lease, "lock_timeout") == f"{ROLE_TAKEOVER_WAIT:g}s"
    lease.release()


def test_a_holder_that_checks_its_lease_keeps_it_and_one_that_stops_is_fenced(
    stores: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder that stops checking (a stopped process) loses the role once its session has
    been idle for ROLE_LEASE; the next bid takes it with a higher epoch, and whatever the
    stopped one commits when it runs again is fenced."""
    monkeypatch.setattr(postgres_module, "ROLE_LEASE", 0.5)
    first, second = stores(), stores()
    first.commit(batch("base", 0, 10))
    lease = first.acquire_role("first")
    assert lease is not None
    deadline = time.monotonic() + 1.5  # three times the lease, checked every 0.1 s
    while time.monotonic() < deadline:
        assert lease.alive()
        assert second.acquire_role("second") is None
        time.sleep(0.1)
    time.sleep(0.8)  # "stopped": no check for longer than the lease
    taken = second.acquire_role("second")
    assert taken is not None and taken.epoch > lease.epoch
    assert not lease.alive()
    stale = replace(batch("stale", 10, 5), fence=lease.epoch)
    with pytest.raises(Fenced):
        first.commit(stale)
    second.commit(replace(batch("next", 10, 5), fence=taken.epoch))
    assert_holds_only(second, batch("next", 10, 5), stale)
    lease.release()  # idempotent on a lost lease
    taken.release()


def test_a_new_holder_ends_a_commit_that_keeps_the_checkpoint_row(
    postgres_url: str, stores: Callable[[], PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit of a stopped predecessor that holds the checkpoint row where no idle timeout
    reaches it (in a COPY; here a session without the timeout) is ended by the new holder
    after ROLE_TAKEOVER_WAIT: it rolls back, and the epoch is raised."""
    monkeypatch.setattr(postgres_module, "ROLE_TAKEOVER_WAIT", 0.3)
    store = stores()
    store.commit(batch("base", 0, 10))
    with raw(postgres_url) as stuck:
        stuck.execute("BEGIN")
        stuck.execute("SELECT size FROM log_checkpoint WHERE id = 0 FOR UPDATE")
        stuck.execute("UPDATE log_checkpoint SET size = size WHERE id = 0")
        began = time.monotonic()
        lease = store.acquire_role("next")
        waited = time.monotonic() - began
        assert lease is not None
        with pytest.raises(psycopg.OperationalError):
            stuck.execute("SELECT 1")
    assert 0.2 < waited < 3.0, waited
    store.commit(replace(batch("next", 10, 5), fence=lease.epoch))
    lease.release()


# -- the leaf index: sorted runs -----------------------------------------------------------------


def _pairs(start: int, count: int) -> list[tuple[bytes, int]]:
    return [(_leaf("run", i), i) for i in range(start, start + count)]


def _stored_pairs(store: PostgresStore) -> list[tuple[int, int]]:
    """Every ``(key, index)`` pair of the store's runs, each run's keys checked sorted."""
    pairs: list[tuple[int, int]] = []
    with store._conn() as conn, conn.transaction():
        table = PostgresRuns(conn)
        for row in table.rows():
            run = table.read(row)
            assert run.keys.tolist() == sorted(run.keys.tolist())
            pairs += zip(run.keys.tolist(), run.indexes.tolist(), strict=True)
    return sorted(pairs)


def test_schema_5_turns_the_leaf_index_into_one_run_keeping_every_entry(
    postgres_url: str,
) -> None:
    count = 2 * PAGE_ENTRIES + 7  # three pages, the last one short
    pairs = _pairs(0, count)
    store = PostgresStore(postgres_url)
    store.commit(Commit(0, count, b"note", parts=[], leaves=pairs))
    store.close()
    with raw(postgres_url) as conn, conn.transaction():  # back to schema 4's B-tree
        conn.execute(_MIGRATIONS[0][4])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO log_leaves (prefix, idx) VALUES (%s, %s)",
                [(int.from_bytes(h[:8], "big", signed=True), i) for h, i in pairs],
            )
        conn.execute("DROP TABLE log_leaf_runs, log_leaf_pages")
        conn.execute("ALTER TABLE statements DROP COLUMN tag")  # schema 6's
        conn.execute("DROP TABLE statement_row_key")
        conn.execute("UPDATE sealtrail_schema SET version = 4 WHERE component = %s", (COMPONENT,))
    store = PostgresStore(postgres_url)  # migrates
    try:
        with raw(postgres_url) as conn:
            assert conn.execute("SELECT to_regclass('log_leaves')").fetchone() == (None,)
            assert conn.execute("SELECT count FROM log_leaf_runs").fetchall() == [(count,)]
            assert conn.execute("SELECT count(*) FROM log_leaf_pages").fetchone() == (3,)
        expected = sorted((int.from_bytes(h[:4], "big"), i) for h, i in pairs)
        assert _stored_pairs(store) == expected  # the SQL wrote what build_run would
        found = store.lookup_leaves([h for h, _ in pairs])
        assert all(i in found[h] for h, i in pairs)
    finally:
        store.close()


def test_schema_5_is_written_for_the_run_and_page_sizes_of_the_code() -> None:
    """Its SQL spells the sizes out (a migration is fixed text); they must be the code's."""
    text = " ".join(_MIGRATIONS[4])
    assert f"pos / {PAGE_ENTRIES}" in text
    assert f"min(pos) / {PAGE_ENTRIES}" in text
    assert f"pos / {MAX_RUN}" in text
    assert f"length(indexes) <= {8 * PAGE_ENTRIES}" in text


def test_leaf_run_values_are_stored_uncompressed(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with raw(postgres_url) as conn:
        rows = conn.execute(
            "SELECT attrelid::regclass::text, attname, attstorage FROM pg_attribute"
            " WHERE (attrelid, attname) IN (('log_leaf_runs'::regclass, 'keys'),"
            " ('log_leaf_pages'::regclass, 'indexes'))"
        ).fetchall()
    assert sorted(rows) == [("log_leaf_pages", "indexes", "e"), ("log_leaf_runs", "keys", "e")]


def test_leaf_runs_merge_by_tiers_and_every_process_keeps_finding_every_entry(
    stores: Callable[[], PostgresStore],
) -> None:
    store, other = stores(), stores()
    pairs: list[tuple[bytes, int]] = []
    counts: list[list[int]] = []
    for _ in range(FANOUT * FANOUT + 1):
        new = _pairs(len(pairs), 50)
        store.commit(Commit(len(pairs), len(pairs) + 50, b"note", parts=[], leaves=new))
        pairs += new
        with store._conn() as conn:
            counts.append([c for (c,) in conn.execute("SELECT count FROM log_leaf_runs")])
        for view in (store, other):  # the other one caches runs that merges replace
            found = view.lookup_leaves([h for h, _ in pairs])
            assert all(i in found[h] for h, i in pairs)
    assert counts[FANOUT - 1] == [50 * FANOUT]
    assert counts[-1] == [50 * FANOUT * FANOUT, 50]
    assert _stored_pairs(store) == sorted((int.from_bytes(h[:4], "big"), i) for h, i in pairs)


def test_a_lookup_during_a_merge_sees_one_whole_snapshot(
    stores: Callable[[], PostgresStore],
) -> None:
    """Lookups race commits that merge runs away: none may miss an entry committed before
    it began (the runs listed and the pages read come from one snapshot)."""
    writer, reader = stores(), stores()
    pairs = _pairs(0, 40)
    writer.commit(Commit(0, 40, b"note", parts=[], leaves=pairs))
    done = threading.Event()
    misses: list[bytes] = []
    committed = [pairs]

    def look() -> None:
        while not done.is_set():
            known = [p for batch in committed for p in batch]
            found = reader.lookup_leaves([h for h, _ in known])
            misses.extend(h for h, i in known if i not in found.get(h, []))

    thread = threading.Thread(target=look)
    thread.start()
    try:
        size = 40
        for _ in range(3 * FANOUT * FANOUT):
            new = _pairs(size, 10)
            writer.commit(Commit(size, size + 10, b"note", parts=[], leaves=new))
            committed.append(new)
            size += 10
    finally:
        done.set()
        thread.join(30)
    assert misses == []
