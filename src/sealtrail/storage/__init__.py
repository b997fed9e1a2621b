"""Where the log lives: the storage contract and its backends.

``open_store(url)`` picks a backend from a URL:

==============================  =========================================
``memory:``                     :class:`MemoryStore` (tests; lost on exit)
``sqlite:///path/to/log.db``    :class:`SQLiteStore` (the embedded default)
``/path/to/log.db``             the same, as a plain path
``postgresql://user@host/db``   :class:`PostgresStore` (several processes; also
                                ``postgres://``; any libpq URL parameter)
==============================  =========================================

The provenance index — a database that is only ever an index of the log, rebuilt from it
at will — has its own protocol, :class:`IndexStore`, and ``open_index(url)``:

====================================  ===================================================
``memory:``                           :class:`MemoryIndex` (tests; lost on exit)
``sqlite:///path/to/provenance.db``   :class:`SQLiteIndex` (its own file beside the log's)
``/path/to/provenance.db``            the same, as a plain path
``postgresql://host/db?options=...``  :class:`PostgresIndex` (``postgres://`` too; a schema
                                      other than ``public`` via ``-csearch_path%3D<name>``)
====================================  ===================================================
"""

from __future__ import annotations

from pathlib import Path

from sealtrail.errors import ConfigError

from ._index import (
    CLAIM_TTL,
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    MAX_BATCH_ROWS,
    MAX_NAME_BYTES,
    MAX_READ_ENTRIES,
    MAX_VALUE_BYTES,
    Change,
    IndexedEntry,
    IndexStore,
    claim_conflict,
    claim_holder,
)
from ._protocols import (
    ENTRY_BUNDLES,
    BacklogRow,
    Commit,
    Lease,
    LogStore,
    SequencerRoles,
    StatementRecord,
    StatementStore,
    StoredCheckpoint,
    TilePart,
)
from .index_memory import INDEX_FAULT_POINTS, IndexFaults, MemoryIndex
from .index_postgres import PostgresIndex
from .index_sqlite import SQLiteIndex
from .memory import FAULT_POINTS, Faults, MemoryStore, SharedMemoryStore
from .postgres import PostgresStore, describe
from .sqlite import SQLiteStore

__all__ = [
    "CLAIM_TTL",
    "ENTRY_BUNDLES",
    "FAULT_POINTS",
    "INDEX_FAULT_POINTS",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_BATCH_ROWS",
    "MAX_NAME_BYTES",
    "MAX_READ_ENTRIES",
    "MAX_VALUE_BYTES",
    "BacklogRow",
    "Change",
    "Commit",
    "Faults",
    "IndexFaults",
    "IndexStore",
    "IndexedEntry",
    "Lease",
    "LogStore",
    "MemoryIndex",
    "MemoryStore",
    "PostgresIndex",
    "PostgresStore",
    "SQLiteIndex",
    "SQLiteStore",
    "SequencerRoles",
    "SharedMemoryStore",
    "StatementRecord",
    "StatementStore",
    "StoredCheckpoint",
    "TilePart",
    "claim_conflict",
    "claim_holder",
    "describe_store",
    "open_index",
    "open_store",
]


def describe_store(url: str) -> str:
    """A store or index URL as messages may show it: a PostgreSQL URL as
    ``postgresql://host:port/dbname`` (never its user or password), any other as it is."""
    scheme, sep, _ = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        return f"postgresql://{describe(url)}"
    return url


def open_store(url: str) -> MemoryStore | SQLiteStore | PostgresStore:
    """Open the store a URL names; :class:`ConfigError` for one this version cannot open
    (or, for PostgreSQL, cannot reach: the message names host, port and database, never the
    password)."""
    if url in ("memory:", "memory://"):
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SQLiteStore(Path(url[len("sqlite:///") :]))
    scheme, sep, _ = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        return PostgresStore(url)
    if sep:
        raise ConfigError(
            f"unsupported store URL scheme {scheme!r}",
            hint="Use sqlite:///path/to/log.db (the default), postgresql://user@host/dbname "
            "or memory: for a throwaway log.",
        )
    return SQLiteStore(Path(url))


def open_index(url: str) -> MemoryIndex | SQLiteIndex | PostgresIndex:
    """Open the provenance index a URL names; :class:`ConfigError` for one this version
    cannot open."""
    if url in ("memory:", "memory://"):
        return MemoryIndex()
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresIndex(url)
    if url.startswith("sqlite:///"):
        return SQLiteIndex(Path(url[len("sqlite:///") :]))
    scheme, sep, _ = url.partition("://")
    if sep:
        raise ConfigError(
            f"unsupported index URL scheme {scheme!r}",
            hint="Use sqlite:///path/to/provenance.db (the default), "
            "postgresql://host/database, or memory: for a throwaway index.",
        )
    return SQLiteIndex(Path(url))
