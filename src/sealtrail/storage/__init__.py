"""Where the log lives: the storage contract and its backends.

``open_store(url)`` picks a backend from a URL:

==============================  =========================================
``memory:``                     :class:`MemoryStore` (tests; lost on exit)
``sqlite:///path/to/log.db``    :class:`SQLiteStore` (the embedded default)
``/path/to/log.db``             the same, as a plain path
==============================  =========================================
"""

from __future__ import annotations

from pathlib import Path

from sealtrail.errors import ConfigError

from ._protocols import (
    ENTRY_BUNDLES,
    Commit,
    LogStore,
    StatementRecord,
    StatementStore,
    StoredCheckpoint,
    TilePart,
)
from .memory import FAULT_POINTS, Faults, MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "ENTRY_BUNDLES",
    "FAULT_POINTS",
    "Commit",
    "Faults",
    "LogStore",
    "MemoryStore",
    "SQLiteStore",
    "StatementRecord",
    "StatementStore",
    "StoredCheckpoint",
    "TilePart",
    "open_store",
]


def open_store(url: str) -> MemoryStore | SQLiteStore:
    """Open the store a URL names; :class:`ConfigError` for one this version cannot open."""
    if url in ("memory:", "memory://"):
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SQLiteStore(Path(url[len("sqlite:///") :]))
    scheme, sep, _ = url.partition("://")
    if sep:
        raise ConfigError(
            f"unsupported store URL scheme {scheme!r}",
            hint="Use sqlite:///path/to/log.db (the default) or memory: for a throwaway log.",
        )
    return SQLiteStore(Path(url))
