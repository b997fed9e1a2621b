"""The storage contract of the log: one narrow protocol, each method saying what is durable.

A log is stored as *tile parts* (C2SP tlog-tiles tiles and entry bundles, written a batch at
a time), a *leaf index* (leaf hash -> index, for deduplication and proof-by-hash), and the
*signed checkpoint* that commits to all of it. Nothing here assumes one process or a local
file: the only coordination is the compare-and-swap on the checkpoint size in ``commit``.

Backends share a conformance suite (tests/conformance), not a base class.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger("sealtrail.storage")

__all__ = [
    "ENTRY_BUNDLES",
    "BacklogRow",
    "Commit",
    "Lease",
    "LogStore",
    "SequencerRoles",
    "StatementRecord",
    "StatementStore",
    "StoredCheckpoint",
    "TilePart",
]

#: Pseudo tile level under which entry bundles (``tile/entries/N``) are stored.
ENTRY_BUNDLES = -1

_HASH_SIZE = 32
_TILE_WIDTH = 256


@dataclass(frozen=True, slots=True)
class TilePart:
    """A run of consecutive positions of one tile, written by one batch.

    ``level`` is the tile level (>= 0) of a hash tile, or :data:`ENTRY_BUNDLES`.
    Positions ``start .. start+count-1`` lie within the tile (``start + count <= 256``).
    ``data`` is ``count`` 32-byte hashes for a hash tile, or ``count`` entries each
    prefixed by its big-endian uint16 length for an entry bundle (the C2SP bundle format),
    so that concatenating a tile's parts in ``start`` order yields the tile itself.

    ``interior`` is empty, or — on a full hash tile only — the tile's inner nodes: the 254
    hashes of the subtrees of 2, 4, … 128 positions, level by level from left to right.
    They are derived data (the sequencer computes them once, so that a cold proof does not
    rehash the tile); readers may use them and ``audit`` checks them.
    """

    level: int
    index: int
    start: int
    count: int
    data: bytes
    interior: bytes = b""

    def head(self, count: int) -> TilePart:
        """This part cut down to its first ``count`` positions (``0 < count <= self.count``).

        What a store keeps of a part that reaches into the positions of a newer one.
        """
        if self.level == ENTRY_BUNDLES:
            end = 0
            for _ in range(count):
                end += 2 + int.from_bytes(self.data[end : end + 2], "big")
        else:
            end = count * _HASH_SIZE
        return TilePart(self.level, self.index, self.start, count, self.data[:end])


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """The latest committed checkpoint: its tree size and the signed note as stored.

    ``indexed`` is the leaf-index watermark: the hashes of entries ``0 .. indexed-1`` are in
    the leaf index; those from ``indexed`` on are found on the level-0 tiles.
    """

    size: int
    note: bytes
    indexed: int = 0


@dataclass(frozen=True, slots=True)
class Commit:
    """Everything one batch adds to the log, committed with one compare-and-swap.

    ``parts`` cover exactly the positions ``old_size .. new_size-1`` at every level they
    reach (plus, optionally, a *full* part — ``start == 0, count == 256`` — that restates a
    tile completed by this batch, so that a full tile is read back as a single part).
    ``leaves`` pairs leaf hashes with their indexes for the leaf index, and ``indexed`` is
    the new leaf-index watermark (``None``: ``new_size``, i.e. ``leaves`` lists every new
    leaf). A sequencer may leave recent leaves out of the index and add them later in one
    large run: a store's leaf index (sorted runs in SQLite, a B-tree keyed by hash in
    PostgreSQL) costs less per entry written in large runs than a batch at a time.
    """

    old_size: int
    new_size: int
    checkpoint: bytes
    parts: Sequence[TilePart]
    leaves: Sequence[tuple[bytes, int]]
    indexed: int | None = None
    #: The epoch of the sequencer role this batch was prepared under (``None``: unfenced,
    #: for stores without roles and single-writer tools). See :class:`SequencerRoles`.
    fence: int | None = None

    @property
    def watermark(self) -> int:
        return self.new_size if self.indexed is None else self.indexed

    def stored_parts(self) -> list[TilePart]:
        """The parts a store writes: a full part makes its tile's partial parts redundant."""
        full = {(p.level, p.index) for p in self.parts if p.count == _TILE_WIDTH}
        return [p for p in self.parts if p.count == _TILE_WIDTH or (p.level, p.index) not in full]


@runtime_checkable
class LogStore(Protocol):
    """Durable home of one log. Implementations: memory (tests), sqlite (default).

    Readers may run in any number of threads and processes at once; ``commit`` may be
    called by more than one would-be sequencer and the compare-and-swap picks one.
    """

    def read_checkpoint(self) -> StoredCheckpoint | None:
        """Return the latest committed checkpoint, or ``None`` for a log never committed.

        MUST return a checkpoint whose ``commit`` has returned (or was durably applied
        before a crash); MUST NOT return one whose commit is still in flight.
        """
        ...

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        """Return the stored parts of tile ``(level, index)`` ordered by ``start``.

        MAY return parts at positions beyond the latest checkpoint (a backend that writes
        in steps can leave them after a crash): callers MUST truncate to the positions the
        checkpoint covers. MUST NOT return two parts covering the same position, except
        that a full part replaces the partial parts of its tile.
        """
        ...

    def lookup_leaves(self, leaf_hashes: Collection[bytes]) -> dict[bytes, list[int]]:
        """Return ``{leaf_hash: candidate indexes}`` for those of ``leaf_hashes`` it may know.

        Candidates are *hints*: a backend MAY key its index by a prefix of the hash and
        return every index under that prefix, and rows left behind by a failed batch MAY
        remain. Callers MUST confirm a candidate against the hash tile (index below the
        checkpoint size and the stored leaf hash equal) before trusting it. MUST return
        every index below the stored ``indexed`` watermark committed for a requested hash
        (no false negatives there); entries at or above it are on the level-0 tiles.
        """
        ...

    def commit(self, commit: Commit) -> None:
        """Atomically add one batch and its checkpoint, if the log is still at ``old_size``.

        The stored checkpoint's ``indexed`` becomes ``commit.watermark``.
        MUST raise :class:`sealtrail.errors.CheckpointConflict` and write nothing when the
        stored checkpoint size is not ``commit.old_size`` (``0`` for an empty store), and
        for a commit of size 0 (a log's genesis) when the store holds any checkpoint: two
        logs started in one store at once cannot both have begun it.
        MUST be all-or-nothing: after a crash at any point either the whole batch and its
        checkpoint are visible or none of it is. MUST NOT return before all of it is
        durable: a caller resolves its waiters as soon as this returns.
        On failure raises :class:`sealtrail.errors.StorageError`; the batch MAY then have
        been applied ("failed but persisted"), which the caller learns by reloading.
        A part at positions that already exist (left by a failed step-wise write) MUST be
        replaced, never merged.
        A store that implements :class:`SequencerRoles` MUST raise
        :class:`sealtrail.errors.Fenced` and write nothing when ``commit.fence`` is set and
        is not the epoch of the role's current holder, checked in the same atomic step.
        """
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


class Lease(Protocol):
    """The sequencer role, held. ``epoch`` fences the holder's commits."""

    @property
    def epoch(self) -> int: ...

    def alive(self) -> bool:
        """Whether the role is still held. MUST return False once another process may have
        taken it (then every commit fenced with ``epoch`` fails). May block briefly."""
        ...

    def release(self) -> None:
        """Give the role up (idempotent); another process may take it at once."""
        ...


@runtime_checkable
class SequencerRoles(Protocol):
    """A store shared by several processes, of which one at a time sequences.

    Stores without it (SQLite, memory) are written by the one process that opens them.
    """

    def acquire_role(self, holder: str) -> Lease | None:
        """Take the sequencer role for ``holder`` (a name for logs) if nobody holds it.

        Returns ``None`` while another process holds it. MUST give each new holder an epoch
        greater than every earlier holder's, so that once this returns, commits fenced with
        an earlier epoch fail with :class:`sealtrail.errors.Fenced`. The role MUST pass on
        without anyone's help when its holder dies (a lock tied to the holder's connection,
        say) — how fast is the store's to document.
        """
        ...


@dataclass(frozen=True, slots=True)
class StatementRecord:
    """A registered signed statement as stored: its bytes and what registration read from them.

    ``entry_id`` is SHA-256 of ``body`` (the statement's leaf entry in the log). ``tag`` is
    the row's authentication tag, computed by the server that registered it (an HMAC under
    a key the store never holds: ``scitt.StatementRows``), or empty for a row stored
    without one (before the tags, or by a caller that has no key). Stores keep it as given.
    """

    entry_id: bytes
    body: bytes
    issuer: str
    subject: str
    content_type: str
    registered_at: int
    tag: bytes = b""


def replaced_row(entry_id: bytes, seq: int) -> None:
    """Log a statement row that gave way in a write (see ``put_statements``)."""
    log.warning(
        "statement row of entry %s… was not the one a server stores (written behind the "
        "service?): replaced by the statement registered now, as seq %d",
        entry_id.hex()[:16],
        seq,
    )


@dataclass(frozen=True, slots=True)
class BacklogRow:
    """A stored statement as a sequencer's backlog reads it: its sequence number and every
    column but the body (the entry id is the body's SHA-256, and the body is what makes a
    row large). ``readable`` is False for a row a store cannot give back as its columns'
    types (an edit of a SQLite file): its other fields are then empty, and it is never
    appended."""

    seq: int
    entry_id: bytes
    issuer: str
    subject: str
    content_type: str
    registered_at: int
    tag: bytes = b""
    readable: bool = True


@runtime_checkable
class StatementStore(Protocol):
    """Durable home of registered statements (the log holds only their hashes).

    A statement is stored *before* its leaf is appended, so that nothing the log commits
    to can be missing here; ``sequenced`` is the watermark below which every stored
    statement's leaf is known to be in the log (recovery re-appends the rest: appending a
    leaf twice returns its first index).
    """

    def put_statements(self, records: Sequence[StatementRecord]) -> list[int]:
        """Store statements (one transaction); return each one's sequence number.

        MUST NOT return before they are durable. A statement already stored keeps its
        first record and sequence number (idempotent by ``entry_id``), if that row is the
        one given but for ``registered_at`` (the same tag, body and columns). A row under
        the entry id that is not (written behind the service: the sequencer refuses it,
        or its body is not the statement) gives way to the given record under a new
        sequence number, above every other, so that a backlog reads it; logged
        (:func:`replaced_row`).
        """
        ...

    def get_statement(self, entry_id: bytes) -> StatementRecord | None:
        """The stored statement with this id, or ``None``."""
        ...

    def content_types(self, entry_ids: Collection[bytes]) -> dict[bytes, str]:
        """``{entry_id: content type}`` of those of ``entry_ids`` that are stored (one read:
        what an indexer needs to skip the statements that are not its kind)."""
        ...

    def statements_since(self, seq: int, *, limit: int) -> list[tuple[int, StatementRecord]]:
        """Statements with sequence numbers above ``seq``, in order, at most ``limit``."""
        ...

    def entries_since(self, seq: int, *, limit: int) -> list[tuple[int, bytes]]:
        """As :meth:`statements_since`, the entry ids only (what a sequencer appends)."""
        ...

    def backlog_since(self, seq: int, *, limit: int) -> list[BacklogRow]:
        """As :meth:`statements_since`, every column but the body (what a sequencer checks
        before it appends a row). A row whose values are not of their columns' types is
        given as unreadable, not raised: one damaged row must not stop the backlog."""
        ...

    def row_key_check(self, check: bytes, *, replace: bool = False) -> bytes:
        """The check value of the key this store's rows are tagged under
        (``scitt.StatementRows.check``): ``check`` is recorded if none is, or with
        ``replace`` over the one recorded; the value recorded is returned. A server whose
        key gives another value would store rows the role's holder refuses."""
        ...

    def recorded_row_key_check(self) -> bytes | None:
        """The check value :meth:`row_key_check` recorded, if any; writes nothing."""
        ...

    def statements_of_type(self, content_type: str, *, skip: int = 0) -> list[StatementRecord]:
        """Every stored statement of this content type, in registration order, but the
        first ``skip`` of them (a reader that folded those already fetches only the rest)."""
        ...

    def statements_of_type_after(
        self, content_type: str, seq: int
    ) -> list[tuple[int, StatementRecord]]:
        """The stored statements of this content type whose ``seq`` is above ``seq``, with
        it, in ``seq`` order (a reader that folded those up to ``seq`` fetches the rest,
        whatever was deleted before it)."""
        ...

    def read_sequenced(self) -> int:
        """The sequenced watermark (0 when never set)."""
        ...

    def write_sequenced(self, seq: int) -> None:
        """Raise the sequenced watermark (never lowers it). Durable on return."""
        ...
