"""The backends the storage conformance suite runs against, one row each.

To add a backend (PostgreSQL, say), append one ``pytest.param(Backend(...), id=...)`` to
``BACKENDS``:

* ``database`` gets a fresh, empty directory and returns an *opener*: each call opens a new
  store object on that one database (a backend whose data lives in the object itself, like
  memory, returns the same object every time). A server backend creates a fresh database
  or schema here and ignores the directory.
* ``persistent``: data is still there for a store object opened after the others closed.
* ``plant_leftover`` writes a commit's parts and leaves *without* its checkpoint, the way
  a torn step-wise write or a crash could leave them (raw SQL is fine).
* ``marks``: e.g. ``pytest.mark.postgres`` for a backend that needs a server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sealtrail.errors import StorageError
from sealtrail.storage import Commit, LogStore, MemoryStore, PostgresStore, SQLiteStore
from sealtrail.storage._leafruns import build_run
from sealtrail.storage.postgres import _Runs as PostgresRuns
from sealtrail.storage.sqlite import _Runs
from sealtrail.storage.sqlite import _table as parts_table
from tests.conftest import PostgresSchemas, postgres_server

Opener = Callable[[], LogStore]


@dataclass(frozen=True)
class Backend:
    name: str
    database: Callable[[Path], Opener]
    persistent: bool
    plant_leftover: Callable[[LogStore, Commit], None]
    #: Called with every directory ``database`` got, after the test's stores are closed.
    drop: Callable[[Path], None] | None = None


# -- memory -------------------------------------------------------------------------------------


def _memory_database(directory: Path) -> Opener:
    store = MemoryStore()
    return lambda: store


def _memory_leftover(store: LogStore, commit: Commit) -> None:
    assert isinstance(store, MemoryStore)
    store.faults.arm("after_parts")
    with pytest.raises(StorageError):
        store.commit(commit)


# -- sqlite -------------------------------------------------------------------------------------


def _sqlite_database(directory: Path) -> Opener:
    path = directory / "log.db"
    return lambda: SQLiteStore(path)


def _old_sqlite_database(directory: Path) -> Opener:
    """The SQLite store as it runs on an SQLite older than 3.35: no ``DELETE ... RETURNING``
    (taken as missing here, whatever this SQLite has)."""
    path = directory / "log.db"

    def opener() -> SQLiteStore:
        store = SQLiteStore(path)
        store._returning = False
        return store

    return opener


def _sqlite_leftover(store: LogStore, commit: Commit) -> None:
    assert isinstance(store, SQLiteStore)
    for p in commit.stored_parts():
        table = parts_table(p.level)
        store.execute(
            f"DELETE FROM {table} WHERE level = ? AND idx = ? AND start >= ?",
            (p.level, p.index, p.start),
        )
        store.execute(
            f"INSERT INTO {table} (level, idx, start, count, data, interior)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (p.level, p.index, p.start, p.count, p.data, p.interior),
        )
    if commit.leaves:
        _Runs(store._conn()).insert(build_run(commit.leaves))


# -- postgresql ---------------------------------------------------------------------------------
# Each database is a fresh schema on the test server (tests/conftest.py), its URL kept in the
# directory so that ``drop`` finds it again.


def _postgres_database(directory: Path) -> Opener:
    server, why = postgres_server()
    if server is None:
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    schemas = PostgresSchemas(server)
    url = schemas.new_url()
    (directory / "postgres-url").write_text(url)
    return lambda: PostgresStore(url)


def _postgres_drop(directory: Path) -> None:
    server, _ = postgres_server()
    url_file = directory / "postgres-url"
    if server is None or not url_file.exists():
        return
    schemas = PostgresSchemas(server)
    schemas.adopt(url_file.read_text())
    schemas.drop_all()


def _postgres_leftover(store: LogStore, commit: Commit) -> None:
    assert isinstance(store, PostgresStore)
    for p in commit.stored_parts():
        table = "log_entry_bundles" if p.level == -1 else "log_tile_parts"
        store.execute(
            f"DELETE FROM {table} WHERE level = %s AND idx = %s AND start >= %s",
            (p.level, p.index, p.start),
        )
        store.execute(
            f"INSERT INTO {table} (level, idx, start, count, data, interior)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (p.level, p.index, p.start, p.count, p.data, p.interior),
        )
    if commit.leaves:
        with store._conn() as conn, conn.transaction():
            PostgresRuns(conn).insert(build_run(commit.leaves))


BACKENDS = [
    pytest.param(
        Backend("memory", _memory_database, persistent=False, plant_leftover=_memory_leftover),
        id="memory",
    ),
    pytest.param(
        Backend("sqlite", _sqlite_database, persistent=True, plant_leftover=_sqlite_leftover),
        id="sqlite",
    ),
    pytest.param(
        Backend(
            "old-sqlite", _old_sqlite_database, persistent=True, plant_leftover=_sqlite_leftover
        ),
        id="old-sqlite",
    ),
    pytest.param(
        Backend(
            "postgresql",
            _postgres_database,
            persistent=True,
            plant_leftover=_postgres_leftover,
            drop=_postgres_drop,
        ),
        id="postgresql",
        marks=pytest.mark.postgres,
    ),
]


class StoreFactory:
    """Opens store objects of one backend for one test; closes them all afterwards."""

    def __init__(self, backend: Backend, directory: Path) -> None:
        self.backend = backend
        self.name = backend.name
        self.persistent = backend.persistent
        self._directory = directory
        self._databases = 0
        self._directories: list[Path] = []
        self._opened: list[LogStore] = []
        self._open_default = self._new_database()

    def _new_database(self) -> Opener:
        self._databases += 1
        directory = self._directory / f"db{self._databases}"
        directory.mkdir()
        self._directories.append(directory)
        return self.backend.database(directory)

    def _track(self, store: LogStore) -> LogStore:
        self._opened.append(store)
        return store

    def open(self) -> LogStore:
        """A store object on this test's one database (another object where the backend can)."""
        return self._track(self._open_default())

    def fresh(self) -> LogStore:
        """A store on a new, empty database (one per hypothesis example)."""
        return self._track(self._new_database()())

    def plant_leftover(self, store: LogStore, commit: Commit) -> None:
        self.backend.plant_leftover(store, commit)

    def close_all(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()
        if self.backend.drop is not None:
            for directory in self._directories:
                self.backend.drop(directory)


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    param: Any = request.param
    assert isinstance(param, Backend)
    factory = StoreFactory(param, tmp_path)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
def store(store_factory: StoreFactory) -> LogStore:
    return store_factory.open()
