"""An in-memory store with fault injection, for tests.

It keeps the same contract as the durable stores, and it can be told to fail at named
points of a commit or a read, so that tests can crash the sequencer wherever a real store
could. A commit is applied in steps (parts and leaves, then the checkpoint) exactly so that
a fault *between* the steps leaves what a step-wise backend could leave behind.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from sealtrail.errors import CheckpointConflict, Fenced, StorageError

from ._protocols import (
    ENTRY_BUNDLES,
    BacklogRow,
    Commit,
    StatementRecord,
    StoredCheckpoint,
    TilePart,
    replaced_row,
)

HASH_SIZE = 32

__all__ = ["FAULT_POINTS", "Faults", "MemoryLease", "MemoryStore", "SharedMemoryStore"]

#: Where a :class:`MemoryStore` can be told to fail.
#:
#: ``before_commit``     nothing of the commit is applied
#: ``after_parts``       parts and leaves applied, checkpoint not (a torn step-wise write)
#: ``after_checkpoint``  everything applied, then the call fails ("failed but persisted")
#: ``read_parts`` / ``read_checkpoint`` / ``lookup_leaves``  the read fails
FAULT_POINTS = frozenset(
    {
        "before_commit",
        "after_parts",
        "after_checkpoint",
        "read_parts",
        "read_checkpoint",
        "lookup_leaves",
    }
)


@dataclass
class Faults:
    """Armed fault points; each fires ``times`` times, then disarms itself."""

    armed: dict[str, int] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)

    def arm(self, point: str, *, times: int = 1) -> None:
        if point not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {sorted(FAULT_POINTS)}")
        self.armed[point] = times

    def disarm(self) -> None:
        self.armed.clear()

    def check(self, point: str) -> None:
        left = self.armed.get(point, 0)
        if left <= 0:
            return
        if left == 1:
            del self.armed[point]
        else:
            self.armed[point] = left - 1
        self.fired.append(point)
        raise StorageError(f"injected fault at {point}")


def _own(stored: StatementRecord, given: StatementRecord) -> bool:
    """Whether ``stored`` is the row ``given`` would be, but for its time."""
    return stored == dataclasses.replace(given, registered_at=stored.registered_at)


class MemoryStore:
    """A :class:`~sealtrail.storage.LogStore` in a dict. Thread-safe; lost when dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checkpoint: StoredCheckpoint | None = None
        self._tiles: dict[tuple[int, int], dict[int, TilePart]] = {}
        self._leaves: dict[bytes, list[int]] = {}
        self.faults = Faults()
        self.commits = 0
        self._statements: dict[bytes, tuple[int, StatementRecord]] = {}
        self._order: list[StatementRecord] = []
        self._sequenced = 0
        self._row_key_check: bytes | None = None
        self._epoch = 0
        self._holder: str | None = None

    # -- reads --------------------------------------------------------------------------------

    def read_checkpoint(self) -> StoredCheckpoint | None:
        with self._lock:
            self.faults.check("read_checkpoint")
            return self._checkpoint

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        with self._lock:
            self.faults.check("read_parts")
            parts = self._tiles.get((level, index), {})
            return [parts[start] for start in sorted(parts)]

    def lookup_leaves(self, leaf_hashes: Collection[bytes]) -> dict[bytes, list[int]]:
        with self._lock:
            self.faults.check("lookup_leaves")
            return {h: list(self._leaves[h]) for h in leaf_hashes if h in self._leaves}

    # -- the one write ------------------------------------------------------------------------

    def commit(self, commit: Commit) -> None:
        with self._lock:
            current = self._checkpoint.size if self._checkpoint else 0
            if commit.fence is not None and commit.fence != self._epoch:
                raise Fenced(f"sequencer epoch {commit.fence} was fenced by epoch {self._epoch}")
            if current != commit.old_size:
                raise CheckpointConflict(f"the log is at size {current}, not {commit.old_size}")
            if commit.new_size == 0 and self._checkpoint is not None:
                raise CheckpointConflict("the log was started already")
            self.faults.check("before_commit")
            for part in commit.stored_parts():
                _put_part(self._tiles.setdefault((part.level, part.index), {}), part)
            for leaf, index in commit.leaves:
                indexes = self._leaves.setdefault(leaf, [])
                if index not in indexes:
                    indexes.append(index)
            self.faults.check("after_parts")
            self._checkpoint = StoredCheckpoint(
                commit.new_size, bytes(commit.checkpoint), commit.watermark
            )
            self.commits += 1
            self.faults.check("after_checkpoint")

    def close(self) -> None:
        """Nothing to release; the data stays readable (a closed store is not wiped)."""

    # -- statements ----------------------------------------------------------------------------

    def put_statements(self, records: Sequence[StatementRecord]) -> list[int]:
        with self._lock:
            self.faults.check("before_commit")
            out = []
            for record in records:
                known = self._statements.get(record.entry_id)
                if known is None or not _own(known[1], record):
                    # Another row under the entry id (tamper_insert) gives way to the given
                    # one, under a new number; the old stays at its number as evidence.
                    self._order.append(record)
                    if known is not None:
                        replaced_row(record.entry_id, len(self._order))
                    known = (len(self._order), record)
                    self._statements[record.entry_id] = known
                out.append(known[0])
            return out

    def get_statement(self, entry_id: bytes) -> StatementRecord | None:
        with self._lock:
            known = self._statements.get(entry_id)
            return None if known is None else known[1]

    def content_types(self, entry_ids: Collection[bytes]) -> dict[bytes, str]:
        with self._lock:
            known = self._statements
            return {e: known[e][1].content_type for e in entry_ids if e in known}

    def statements_since(self, seq: int, *, limit: int) -> list[tuple[int, StatementRecord]]:
        seq = max(seq, 0)  # numbers start at 1
        with self._lock:
            return [(seq + 1 + i, r) for i, r in enumerate(self._order[seq : seq + limit])]

    def entries_since(self, seq: int, *, limit: int) -> list[tuple[int, bytes]]:
        return [(s, r.entry_id) for s, r in self.statements_since(seq, limit=limit)]

    def backlog_since(self, seq: int, *, limit: int) -> list[BacklogRow]:
        return [
            BacklogRow(s, r.entry_id, r.issuer, r.subject, r.content_type, r.registered_at, r.tag)
            for s, r in self.statements_since(seq, limit=limit)
        ]

    def statements_of_type(self, content_type: str, *, skip: int = 0) -> list[StatementRecord]:
        with self._lock:
            return [r for r in self._order if r.content_type == content_type][skip:]

    def statements_of_type_after(
        self, content_type: str, seq: int
    ) -> list[tuple[int, StatementRecord]]:
        with self._lock:
            return [
                (n, r)
                for n, r in enumerate(self._order, start=1)
                if n > seq and r.content_type == content_type
            ]

    def read_sequenced(self) -> int:
        with self._lock:
            return self._sequenced

    def write_sequenced(self, seq: int) -> None:
        with self._lock:
            self._sequenced = max(self._sequenced, seq)

    def recorded_row_key_check(self) -> bytes | None:
        with self._lock:
            return self._row_key_check

    def row_key_check(self, check: bytes, *, replace: bool = False) -> bytes:
        with self._lock:
            if replace or self._row_key_check is None:
                self._row_key_check = check
            return self._row_key_check

    # -- tampering, for attack tests -----------------------------------------------------------

    def tamper_part(self, level: int, index: int, *, position: int, data: bytes) -> None:
        """Overwrite the hash at ``position`` of hash tile ``(level, index)`` behind the log's back.

        For an entry bundle (``level == ENTRY_BUNDLES``) ``data`` replaces the whole part
        that holds ``position``.
        """
        with self._lock:
            parts = self._tiles[(level, index)]
            start = max(s for s in parts if s <= position)
            old = parts[start]
            if level == ENTRY_BUNDLES:
                new = data
            else:
                offset = (position - start) * HASH_SIZE
                new = old.data[:offset] + data + old.data[offset + len(data) :]
            parts[start] = TilePart(level, index, start, old.count, new)

    def tamper_replace(self, part: TilePart) -> None:
        """Replace the stored part at ``part``'s tile and start behind the log's back."""
        with self._lock:
            self._tiles[(part.level, part.index)][part.start] = part

    def tamper_checkpoint(self, size: int, note: bytes) -> None:
        """Overwrite the stored checkpoint behind the log's back."""
        with self._lock:
            self._checkpoint = StoredCheckpoint(size, note)

    def tamper_statement(self, entry_id: bytes, **columns: str | bytes | int) -> None:
        """Overwrite a stored statement's columns (``body``, ``issuer``, ...) behind the
        log's back."""
        with self._lock:
            seq, record = self._statements[entry_id]
            edited = dataclasses.replace(record, **columns)  # type: ignore[arg-type]
            self._statements[entry_id] = (seq, edited)
            self._order[seq - 1] = edited

    def tamper_insert(self, record: StatementRecord) -> int:
        """Add a statement row behind the service's back (no idempotence, no checks), as
        an ``INSERT`` into a database would; its sequence number."""
        with self._lock:
            self._order.append(record)
            self._statements[record.entry_id] = (len(self._order), record)
            return len(self._order)

    def drop_tile(self, level: int, index: int) -> None:
        """Delete a tile's parts behind the log's back."""
        with self._lock:
            self._tiles.pop((level, index), None)


class SharedMemoryStore(MemoryStore):
    """A :class:`MemoryStore` with the sequencer role (:class:`SequencerRoles`), for tests of
    several services sharing one store in one process."""

    def acquire_role(self, holder: str) -> MemoryLease | None:
        with self._lock:
            if self._holder is not None:
                return None
            self._epoch += 1
            self._holder = holder
            return MemoryLease(self, self._epoch)

    def revoke_role(self) -> None:
        """Take the role from its holder, as a dead connection would (for tests)."""
        with self._lock:
            self._holder = None

    def _holds(self, epoch: int) -> bool:
        with self._lock:
            return self._holder is not None and self._epoch == epoch

    def _release(self, epoch: int) -> None:
        with self._lock:
            if self._epoch == epoch:
                self._holder = None


class MemoryLease:
    """The sequencer role in a :class:`MemoryStore`."""

    def __init__(self, store: SharedMemoryStore, epoch: int) -> None:
        self._store = store
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        return self._epoch

    def alive(self) -> bool:
        return self._store._holds(self._epoch)

    def release(self) -> None:
        self._store._release(self._epoch)


def _put_part(parts: dict[int, TilePart], part: TilePart) -> None:
    """Store ``part``, replacing whatever it overlaps (a full part replaces the whole tile).

    A part that starts before ``part`` and reaches into it (a full part left by a failed
    write) keeps its head: its positions before ``part.start`` are committed ones.
    """
    end = part.start + part.count
    for start, old in [(s, p) for s, p in parts.items() if s < end and part.start < s + p.count]:
        if start < part.start:
            parts[start] = old.head(part.start - start)
        else:
            del parts[start]
    parts[part.start] = part
