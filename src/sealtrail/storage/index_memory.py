"""An in-memory provenance index with fault injection, for tests.

Same contract as the SQLite index. ``apply`` validates and stages the whole batch before
touching anything, so it is all-or-nothing without a rollback; a fault can be armed before
the batch is applied (nothing applied) or after it ("failed but persisted").
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sealtrail.errors import Conflict, InvalidInput, NotFound

from ._index import (
    CLAIM_TTL,
    Change,
    IndexedEntry,
    check_batch,
    check_claim,
    check_read,
    check_rules_version,
    claim_conflict,
    claim_stands,
    rules_conflict,
)
from .memory import Faults

__all__ = ["INDEX_FAULT_POINTS", "IndexFaults", "MemoryIndex"]

#: Where a :class:`MemoryIndex` can be told to fail.
#:
#: ``before_apply``  nothing of the batch is applied
#: ``after_apply``   the whole batch is applied, then the call fails ("failed but persisted")
#: ``read``          any read (including the dumps) fails
INDEX_FAULT_POINTS = frozenset({"before_apply", "after_apply", "read"})


@dataclass
class IndexFaults(Faults):
    """:class:`~sealtrail.storage.Faults` with the index's fault points."""

    def arm(self, point: str, *, times: int = 1) -> None:
        if point not in INDEX_FAULT_POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {sorted(INDEX_FAULT_POINTS)}")
        self.armed[point] = times


class MemoryIndex:
    """An :class:`~sealtrail.storage.IndexStore` in dicts. Thread-safe; lost when dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults = IndexFaults()
        #: holder -> (exclusive, expiry on the monotonic clock)
        self._claims: dict[str, tuple[bool, float]] = {}
        #: the rules version the entries were computed with (IndexStore.rules_version)
        self._rules_version: int | None = None
        self._clear()

    def _clear(self) -> None:
        self._entries: list[IndexedEntry] = []
        self._changes: list[tuple[int, int, str, str, str | None]] = []
        self._rows: dict[tuple[str, str], str] = {}
        #: (table, key) -> its changes' entry indexes and values, oldest first
        self._history: dict[tuple[str, str], tuple[list[int], list[str | None]]] = {}
        self._about: dict[str, list[int]] = {}

    # -- the one write --------------------------------------------------------------------------

    def applied_size(self) -> int:
        with self._lock:
            self.faults.check("read")
            return len(self._entries)

    def rules_version(self) -> int | None:
        with self._lock:
            self.faults.check("read")
            return self._rules_version

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
        with self._lock:
            first = batch[0][0].index
            if first != len(self._entries):
                raise Conflict(
                    f"the index has applied {len(self._entries)} entries; "
                    f"a batch starting at entry {first} does not follow",
                    code="index-conflict",
                    hint="Read applied_size() and resume the replay from there.",
                )
            if self._entries and rules_version != self._rules_version:
                raise rules_conflict(self._rules_version, rules_version)
            self.faults.check("before_apply")
            # Validated and checked: from here on nothing can fail, so nothing is half done.
            self._rules_version = rules_version  # the same, or the empty index's first
            for entry, changes in batch:
                self._entries.append(entry)
                for subject in entry.subjects:
                    self._about.setdefault(subject, []).append(entry.index)
                for position, (table, key, value) in enumerate(changes):
                    self._changes.append((entry.index, position, table, key, value))
                    indexes, values = self._history.setdefault((table, key), ([], []))
                    indexes.append(entry.index)
                    values.append(value)
                    if value is None:
                        self._rows.pop((table, key), None)
                    else:
                        self._rows[(table, key)] = value
            self.faults.check("after_apply")

    def reset(self, *, rules_version: int | None = None) -> None:
        check_rules_version(rules_version)
        with self._lock:
            self.faults.check("before_apply")
            self._clear()
            self._rules_version = rules_version

    def claim(self, holder: str, *, exclusive: bool = False, ttl: float = CLAIM_TTL) -> None:
        check_claim(holder, ttl)
        with self._lock:
            now = time.monotonic()
            for other, (their_exclusive, until) in self._claims.items():
                if other != holder and claim_stands(until - now) and (exclusive or their_exclusive):
                    raise claim_conflict(other, their_exclusive, until - now)
            self._claims = {
                other: claim
                for other, claim in self._claims.items()
                if claim_stands(claim[1] - now)
            }
            self._claims[holder] = (exclusive, now + ttl)

    def release(self, holder: str) -> None:
        with self._lock:
            self._claims.pop(holder, None)

    def claims(self) -> list[tuple[str, bool, float]]:
        with self._lock:
            now = time.monotonic()
            return sorted(
                (holder, exclusive, until - now)
                for holder, (exclusive, until) in self._claims.items()
                if claim_stands(until - now)
            )

    def close(self) -> None:
        """Nothing to release; the data stays readable (a closed index is not wiped)."""

    # -- reads ----------------------------------------------------------------------------------

    def row(self, table: str, key: str) -> str | None:
        with self._lock:
            self.faults.check("read")
            return self._rows.get((table, key))

    def rows(self, table: str) -> list[tuple[str, str]]:
        with self._lock:
            self.faults.check("read")
            return sorted((k, v) for (t, k), v in self._rows.items() if t == table)

    def row_at(self, table: str, key: str, size: int) -> str | None:
        if size < 0:
            raise InvalidInput("a log size is >= 0", code="index-bad-read")
        with self._lock:
            self.faults.check("read")
            if size > len(self._entries):
                raise NotFound(
                    f"the index has applied {len(self._entries)} entries, not {size} (yet)"
                )
            indexes, values = self._history.get((table, key), ([], []))
            # The last change made by an entry below ``size``.
            at = bisect.bisect_left(indexes, size)
            return values[at - 1] if at else None

    def history(self, table: str, key: str) -> list[tuple[int, str | None]]:
        with self._lock:
            self.faults.check("read")
            indexes, values = self._history.get((table, key), ([], []))
            return list(zip(indexes, values, strict=True))

    def entries(self, start: int, stop: int) -> list[IndexedEntry]:
        check_read(start, stop - start)
        with self._lock:
            self.faults.check("read")
            return self._entries[start:stop]

    def changes(self, start: int, stop: int) -> list[tuple[int, int, str, str, str | None]]:
        check_read(start, stop - start)
        with self._lock:
            self.faults.check("read")
            low = bisect.bisect_left(self._changes, (start,))
            high = bisect.bisect_left(self._changes, (stop,))
            return self._changes[low:high]

    def entries_about(
        self, subject: str, *, start: int = 0, limit: int = 1000
    ) -> list[IndexedEntry]:
        check_read(start, limit, least=1)
        with self._lock:
            self.faults.check("read")
            indexes = self._about.get(subject, [])
            at = bisect.bisect_left(indexes, start)
            return [self._entries[i] for i in indexes[at : at + limit]]

    # Values are kept as given, never as stored bytes: nothing here is ever damaged, so
    # ``mark_damaged`` changes nothing.

    def dump_rows(self, *, mark_damaged: bool = False) -> Iterator[tuple[str, str, str]]:
        with self._lock:
            self.faults.check("read")
            return iter(sorted((t, k, v) for (t, k), v in self._rows.items()))

    def dump_changes(
        self, *, mark_damaged: bool = False
    ) -> Iterator[tuple[int, int, str, str, str | None]]:
        with self._lock:
            self.faults.check("read")
            return iter(list(self._changes))

    def dump_entries(self, *, mark_damaged: bool = False) -> Iterator[IndexedEntry]:
        with self._lock:
            self.faults.check("read")
            return iter(list(self._entries))

    # -- tampering, for audit tests (the index edited behind the log's back) -------------------

    def tamper_row(self, table: str, key: str, value: str | None) -> None:
        """Set (or, with ``None``, delete) a current row without recording a change."""
        with self._lock:
            if value is None:
                self._rows.pop((table, key), None)
            else:
                self._rows[(table, key)] = value

    def tamper_entry(self, entry: IndexedEntry) -> None:
        """Replace the stored verdict of ``entry.index`` (subjects index left as it was)."""
        with self._lock:
            self._entries[entry.index] = entry
