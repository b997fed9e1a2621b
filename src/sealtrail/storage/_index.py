"""The provenance index: a database that is only ever an index of the log.

The provenance model replays the log's entries in order; for each entry it produces a
verdict (:class:`IndexedEntry`) and the row changes it causes (:data:`Change`). An
:class:`IndexStore` keeps both, so that the service can answer "what holds now", "what held
at log size N" and "what happened to X" without replaying, and so that ``sealtrail audit``
can compare the database with a fresh replay and name every row that differs.

Nothing in an index is a source of truth: it is derived from the log, and it MUST be
rebuildable from the log alone (``reset`` and replay). An operator who edits it is caught by
the audit, which is why reads MUST return what is stored, never a cache of it.

``storage`` sits below ``provenance``: the index knows tables, keys and opaque JSON text,
not what they mean. Nor does it know the rules that computed them: it records the *rules
version* its appliers pass in (:meth:`IndexStore.rules_version`) and refuses to mix two
in one index; the provenance layer decides what a version means. Backends share a
conformance suite (tests/unit/storage/test_index.py), not a base class;
:func:`check_batch` is the one validation both run before writing.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sealtrail.errors import Conflict, InvalidInput, TooLarge

__all__ = [
    "CLAIM_CLOCK_SLACK",
    "CLAIM_HORIZON",
    "CLAIM_TTL",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_BATCH_ROWS",
    "MAX_NAME_BYTES",
    "MAX_READ_ENTRIES",
    "MAX_VALUE_BYTES",
    "OUTCOMES",
    "Change",
    "IndexStore",
    "IndexedEntry",
    "check_batch",
    "check_claim",
    "check_read",
    "check_rules_version",
    "claim_conflict",
    "claim_holder",
    "claim_stands",
    "rules_conflict",
]

#: One row change: ``(table, key, value)``. ``value`` is canonical JSON text, kept as given
#: (the index never parses it); ``None`` deletes the row.
Change = tuple[str, str, str | None]

#: What the model decided about an entry.
OUTCOMES = frozenset({"applied", "refused", "skipped"})

#: Most entries in one ``apply``: the sequencer's default ``max_batch``, so that a replay
#: can index one log batch per call.
MAX_BATCH_ENTRIES = 16_384
#: Most rows one ``apply`` writes besides its entries: changes plus subjects. A device
#: manifest of ``provenance.MAX_DEVICES`` (10,000) devices fits many times over; a replay
#: cuts its batches to stay below this.
MAX_BATCH_ROWS = 262_144
#: Most bytes (UTF-8) of change values in one ``apply``: bounds one transaction.
MAX_BATCH_BYTES = 64 * 1024 * 1024
#: Most bytes (UTF-8) of one change value.
MAX_VALUE_BYTES = 1024 * 1024
#: Most bytes (UTF-8) of a table name, key, subject, kind, organization or refusal code
#: (provenance texts are at most 1,024 characters, i.e. 4,096 bytes).
MAX_NAME_BYTES = 4096
#: Most entries one ``entries`` or ``entries_about`` call returns.
MAX_READ_ENTRIES = 10_000

_ENTRY_ID_SIZE = 32

#: Seconds a claim on an index lasts unless renewed (:meth:`IndexStore.claim`): a server
#: renews its claim every third of this, and a claim of a process that was killed lapses
#: within it. No claim is taken for longer (:func:`check_claim`).
CLAIM_TTL = 15.0
#: Seconds a stored claim may expire beyond :data:`CLAIM_TTL` from now and still be one:
#: a store reads one clock (the host's, or the database server's), so this only covers
#: that clock set back while a claim runs (a large NTP step, a virtual machine restored).
#: Generous, as it costs little: a claim written in by hand holds the index for at most
#: :data:`CLAIM_HORIZON`, and one a clock step made look forged would let a rebuild run
#: under a live server.
CLAIM_CLOCK_SLACK = 60.0
#: The furthest ahead of the store's clock a claim can expire. A stored claim that expires
#: later was made by no process (it was written into the store by hand): it is treated as
#: lapsed, so that it cannot hold the index, let alone forever.
CLAIM_HORIZON = CLAIM_TTL + CLAIM_CLOCK_SLACK
#: Most characters of a claim's holder name.
MAX_HOLDER = 200


@dataclass(frozen=True, slots=True)
class IndexedEntry:
    """What the provenance model decided about one log entry.

    ``entry_id`` is the 32-byte leaf entry (the statement hash). ``kind`` is the statement
    kind (``"device-manifest"``, …) or ``""`` for an entry that is not provenance; ``org``
    the issuer's organization (``""`` when none). ``outcome`` is one of :data:`OUTCOMES`;
    ``code`` is the stable code of why: MUST be set when ``"refused"``, MAY be set when
    ``"skipped"`` (e.g. a statement that does not parse), MUST be ``None`` when
    ``"applied"``. ``subjects`` (e.g. ``("device:ab12…", "node:srv-1")``) are what the entry is
    about, sorted and without repeats, so that equal verdicts compare equal.
    """

    index: int
    entry_id: bytes
    kind: str
    org: str
    outcome: str
    code: str | None
    subjects: tuple[str, ...]


@runtime_checkable
class IndexStore(Protocol):
    """Durable home of the provenance index. Implementations: memory (tests), sqlite, postgresql.

    One writer at a time is expected (the service's replay), but the index never trusts
    that: ``apply`` is a compare-and-swap on ``applied_size``. Readers may run in any number
    of threads and processes at once. Table names and keys are compared and ordered by code
    point (the same as by their UTF-8 bytes).
    """

    def applied_size(self) -> int:
        """The number of log entries applied: the index ``apply`` expects next.

        MUST count only batches whose ``apply`` returned (or was durably applied before a
        crash), never one in flight.
        """
        ...

    def rules_version(self) -> int | None:
        """The version of the rules that computed the index's entries and rows, as recorded
        by :meth:`reset` or by the first batch applied to the empty index; ``None`` when
        none was recorded (an index that was never applied to, or an index built before
        rules had versions and left empty). The index does not interpret it.

        An index of one version never holds a batch of another (see :meth:`apply`), so a
        reader that finds a version other than its own knows the whole index was computed
        by other rules: rebuilt, not compared row by row.
        """
        ...

    def apply(
        self,
        batch: Sequence[tuple[IndexedEntry, Sequence[Change]]],
        *,
        rules_version: int | None = None,
    ) -> None:
        """Add a batch of entries, each with its row changes, in one transaction.

        The entries' indexes MUST be consecutive (else :class:`InvalidInput`,
        ``index-not-consecutive``) and the first MUST equal ``applied_size()`` — an index
        never skips or re-applies an entry. When it does not, MUST raise
        :class:`sealtrail.errors.Conflict` (``index-conflict``: another writer moved the
        index, or the caller lost track; read ``applied_size()`` and resume from there) and
        write nothing. Over a limit (``MAX_*`` in this module) or malformed, MUST raise
        :class:`InvalidInput` / :class:`TooLarge` with a stable code, before writing
        anything. An empty batch does nothing.

        ``rules_version`` is the version of the rules that computed the batch (an integer
        >= 1, or ``None``). Applied to the empty index (``applied_size() == 0``), the batch
        records it as :meth:`rules_version`, in the same transaction. Applied to an index
        that holds entries, it MUST equal the recorded version, else MUST raise
        :class:`Conflict` (``index-rules-mismatch``, see :func:`rules_conflict`) and write
        nothing: one index never holds the rows of two versions of the rules, which no
        replay of the log gives.

        Changes apply in order, entry after entry: a later change of a key replaces an
        earlier one, in the same entry or not; ``None`` deletes the current row (deleting
        an absent row is allowed and recorded). Every change is kept in the history.

        MUST be all-or-nothing: after a crash at any point either the whole batch is
        visible or none of it is. MUST NOT return before it is durable. On
        :class:`StorageError` the batch MAY have been applied ("failed but persisted"):
        the caller reads ``applied_size()`` to find out. :class:`Corruption` means the
        stored index contradicts itself (edited behind its back): rebuild it.
        """
        ...

    def row(self, table: str, key: str) -> str | None:
        """The current value of a row, or ``None`` when absent (never set, or deleted)."""
        ...

    def rows(self, table: str) -> list[tuple[str, str]]:
        """Every current ``(key, value)`` of ``table``, ordered by key."""
        ...

    def row_at(self, table: str, key: str, size: int) -> str | None:
        """The value of a row once entries ``[0, size)`` were applied (``None``: absent).

        Read from the change history, not from the current rows. MUST raise
        :class:`NotFound` when ``size > applied_size()``: the index cannot answer for
        entries it has not seen (it MUST NOT guess "unchanged since"). A negative ``size``
        is :class:`InvalidInput`.
        """
        ...

    def history(self, table: str, key: str) -> list[tuple[int, str | None]]:
        """Every change of a row as ``(entry index, value)``, oldest first.

        Deletions are kept (``value is None``); an entry that changed the row twice
        appears twice, in order.
        """
        ...

    def entries(self, start: int, stop: int) -> list[IndexedEntry]:
        """The applied entries with ``start <= index < stop``, ordered by index.

        ``stop`` beyond ``applied_size()`` is cut short, as with a slice.
        ``0 <= start <= stop`` and ``stop - start <= MAX_READ_ENTRIES``, else
        :class:`InvalidInput` / :class:`TooLarge`.
        """
        ...

    def changes(self, start: int, stop: int) -> list[tuple[int, int, str, str, str | None]]:
        """The row changes of the applied entries with ``start <= index < stop``, as
        ``(entry index, position in its entry, table, key, value)``, ordered by index, then
        position: what brings a copy of the rows from ``start`` entries to ``stop``.

        Bounds as :meth:`entries` (``stop`` beyond ``applied_size()`` is cut short).
        """
        ...

    def entries_about(
        self, subject: str, *, start: int = 0, limit: int = 1000
    ) -> list[IndexedEntry]:
        """The first ``limit`` entries at or after index ``start`` naming ``subject``.

        Ordered by index: a timeline, paged by passing the last index + 1 as ``start``.
        ``1 <= limit <= MAX_READ_ENTRIES``, else :class:`InvalidInput`.
        """
        ...

    def dump_rows(self, *, mark_damaged: bool = False) -> Iterator[tuple[str, str, str]]:
        """Every current ``(table, key, value)``, ordered by table, then key.

        Like every dump, reads one consistent snapshot taken when it is called, and reads
        what is stored (the audit compares it with a replay): no cache. A SQLite dump holds
        its snapshot (and a connection) until exhausted, closed or dropped.

        A stored value the index cannot have written (edited behind its back) MUST raise
        :class:`Corruption`, which ends the dump — unless ``mark_damaged``, for a reader
        that compares rather than uses what it reads (the audit): then a text that is not
        UTF-8 MUST be read with each byte that does not decode as a lone surrogate
        (U+DC80 to U+DCFF, as Python's ``surrogateescape``), which no applied text holds
        (:func:`check_batch` refuses lone surrogates), and the dump goes on, so that one
        damaged row never hides the others. A value of another type than its column's
        (SQLite keeps whatever it is given) is :class:`Corruption` either way, except as
        :meth:`dump_entries` says.
        """
        ...

    def dump_changes(
        self, *, mark_damaged: bool = False
    ) -> Iterator[tuple[int, int, str, str, str | None]]:
        """Every change as ``(entry index, position in its entry, table, key, value)``,
        ordered by index, then position. One snapshot, and damage, as :meth:`dump_rows`."""
        ...

    def dump_entries(self, *, mark_damaged: bool = False) -> Iterator[IndexedEntry]:
        """Every applied entry, ordered by index. One snapshot, and damage, as
        :meth:`dump_rows`; with ``mark_damaged``, an entry id stored as something else than
        bytes is read as ``b""``, which no entry's id is."""
        ...

    def reset(self, *, rules_version: int | None = None) -> None:
        """Forget everything and record ``rules_version`` (as :meth:`apply` takes it) as the
        rules the index is rebuilt with, in one durable transaction (before a rebuild).

        Afterwards ``applied_size() == 0``, every read is empty and
        ``rules_version() == rules_version``. Claims are kept.
        """
        ...

    def claim(self, holder: str, *, exclusive: bool = False, ttl: float = CLAIM_TTL) -> None:
        """Take or renew ``holder``'s claim on the index, for ``ttl`` seconds.

        A running service holds a shared claim and renews it; ``sealtrail index rebuild``
        holds an exclusive one while it forgets and rebuilds the index. MUST raise
        :class:`Conflict` (``index-in-use``, see :func:`claim_conflict`) and claim nothing
        when another holder's unexpired claim stands in the way: any claim, of an
        exclusive one; an exclusive claim, of a shared one. Lapsed claims are ignored;
        expiry is by the store's clock (the database server's, when it has one). A stored
        claim that expires more than :data:`CLAIM_HORIZON` seconds from now was not made
        by :meth:`claim` (``ttl`` is at most :data:`CLAIM_TTL`): it MUST be treated as
        lapsed, never as standing in the way. A claim drops every lapsed claim, such ones too.
        """
        ...

    def release(self, holder: str) -> None:
        """Drop ``holder``'s claim, if it holds one."""
        ...

    def claims(self) -> list[tuple[str, bool, float]]:
        """The unexpired claims as ``(holder, exclusive, seconds left)``, by holder: those
        that :func:`claim_stands` (none left for longer than :data:`CLAIM_HORIZON`). Reads
        only: lapsed claims are left for the next :meth:`claim` to drop."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


# -- validation shared by the backends ------------------------------------------------------------


def _utf8_size(text: object, what: str, *, code: str = "index-bad-value") -> int:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be text", code=code)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # Lone surrogates: not storable as UTF-8, and they would order differently.
        raise InvalidInput(f"{what} is not valid Unicode text", code=code) from None


def _name(text: object, what: str, *, empty: bool = False, code: str = "index-bad-value") -> None:
    size = _utf8_size(text, what, code=code)
    if size == 0 and not empty:
        raise InvalidInput(f"{what} must not be empty", code=code)
    if size > MAX_NAME_BYTES:
        raise TooLarge(
            f"{what} is {size} bytes, over the limit of {MAX_NAME_BYTES}",
            code="index-name-too-large",
        )


def _check_entry(entry: object) -> IndexedEntry:
    if not isinstance(entry, IndexedEntry):
        raise InvalidInput("a batch item must pair an IndexedEntry with its changes")
    if not isinstance(entry.index, int) or isinstance(entry.index, bool) or entry.index < 0:
        raise InvalidInput("an entry index must be an integer >= 0", code="index-bad-entry")
    at = f"entry {entry.index}"
    if not isinstance(entry.entry_id, bytes) or len(entry.entry_id) != _ENTRY_ID_SIZE:
        raise InvalidInput(f"{at}: entry_id must be {_ENTRY_ID_SIZE} bytes", code="index-bad-entry")
    _name(entry.kind, f"{at}: kind", empty=True, code="index-bad-entry")
    _name(entry.org, f"{at}: org", empty=True, code="index-bad-entry")
    if entry.outcome not in OUTCOMES:
        raise InvalidInput(
            f"{at}: outcome must be one of {sorted(OUTCOMES)}", code="index-bad-entry"
        )
    if entry.outcome == "refused" or (entry.outcome == "skipped" and entry.code is not None):
        _name(entry.code, f"{at}: code", code="index-bad-entry")
    elif entry.code is not None:
        raise InvalidInput(f"{at}: an applied entry has no code", code="index-bad-entry")
    if not isinstance(entry.subjects, tuple):
        raise InvalidInput(f"{at}: subjects must be a tuple", code="index-bad-entry")
    for subject in entry.subjects:
        _name(subject, f"{at}: subject", code="index-bad-entry")
    if list(entry.subjects) != sorted(set(entry.subjects)):
        raise InvalidInput(f"{at}: subjects must be sorted and unique", code="index-bad-entry")
    return entry


def check_batch(batch: Sequence[tuple[IndexedEntry, Sequence[Change]]]) -> None:
    """Refuse a malformed or oversized batch before anything is written.

    Everything ``apply`` checks except the compare-and-swap on ``applied_size``, which a
    backend does inside its transaction. Messages name entries and change positions, never
    keys or values (they are statement contents).
    """
    if len(batch) > MAX_BATCH_ENTRIES:
        raise TooLarge(
            f"a batch of {len(batch)} entries is over the limit of {MAX_BATCH_ENTRIES}",
            code="index-batch-too-large",
        )
    rows = 0
    total = 0
    expected: int | None = None
    for item in batch:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidInput("a batch item must pair an IndexedEntry with its changes")
        entry = _check_entry(item[0])
        changes = item[1]
        if expected is not None and entry.index != expected:
            raise InvalidInput(
                f"entry {entry.index} follows entry {expected - 1}: indexes must be consecutive",
                code="index-not-consecutive",
            )
        expected = entry.index + 1
        rows += len(changes) + len(entry.subjects)
        if rows > MAX_BATCH_ROWS:
            raise TooLarge(
                f"a batch writing over {MAX_BATCH_ROWS} changes and subjects is over the limit",
                code="index-batch-too-large",
            )
        for position, change in enumerate(changes):
            at = f"entry {entry.index}, change {position}"
            if not isinstance(change, tuple) or len(change) != 3:
                raise InvalidInput(
                    f"{at}: a change is a (table, key, value) tuple", code="index-bad-value"
                )
            table, key, value = change
            _name(table, f"{at}: table name")
            _name(key, f"{at}: key")
            if value is None:
                continue
            size = _utf8_size(value, f"{at}: value")
            if size > MAX_VALUE_BYTES:
                raise TooLarge(
                    f"{at}: a value of {size} bytes is over the limit of {MAX_VALUE_BYTES}",
                    code="index-value-too-large",
                )
            total += size
            if total > MAX_BATCH_BYTES:
                raise TooLarge(
                    f"a batch with over {MAX_BATCH_BYTES} bytes of values is over the limit",
                    code="index-batch-too-large",
                )


def check_rules_version(version: object) -> None:
    """Refuse a rules version that is neither ``None`` nor an integer >= 1, before anything
    is written."""
    if version is None:
        return
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput(
            "a rules version is an integer >= 1, or None", code="index-bad-rules-version"
        )


def rules_conflict(recorded: int | None, given: int | None) -> Conflict:
    """The refusal of a batch computed by rules of version ``given`` for an index whose
    entries were computed by version ``recorded`` (``None``: not recorded)."""
    held = "of no recorded version" if recorded is None else f"version {recorded}"
    new = "of no version" if given is None else f"version {given}"
    return Conflict(
        f"the index was built with rules {held}, and a batch computed with rules {new} "
        "cannot join it",
        code="index-rules-mismatch",
        hint="Rebuild the index from the log with the rules of the running release "
        "(`sealtrail index rebuild`, every server of the index stopped).",
    )


def check_read(start: int, count: int, *, least: int = 0) -> None:
    """Refuse a read of ``count`` (at least ``least``) entries from ``start`` that is
    malformed or too large."""
    if start < 0 or count < least:
        raise InvalidInput(
            f"a read starts at an index >= 0 and asks for at least {least} entries",
            code="index-bad-read",
        )
    if count > MAX_READ_ENTRIES:
        raise TooLarge(
            f"a read of {count} entries is over the limit of {MAX_READ_ENTRIES}",
            code="index-read-too-large",
        )


def check_claim(holder: str, ttl: float) -> None:
    """The one validation of a claim before it is written: a holder name of 1 to
    :data:`MAX_HOLDER` printable characters, a ``ttl`` of more than 0 and at most
    :data:`CLAIM_TTL` seconds."""
    if not 0 < len(holder) <= MAX_HOLDER or not holder.isprintable():
        raise InvalidInput(
            f"a claim's holder is 1 to {MAX_HOLDER} printable characters", code="claim-invalid"
        )
    if not 0 < ttl <= CLAIM_TTL:
        raise InvalidInput(
            f"a claim lasts more than 0 and at most {CLAIM_TTL:g} s", code="claim-invalid"
        )


def claim_stands(left: float) -> bool:
    """Whether a stored claim with ``left`` seconds to go (by the store's clock) holds the
    index: not lapsed, and not further ahead than any claim is made (:data:`CLAIM_HORIZON`).
    A store that selects claims in SQL applies the same bounds there."""
    return 0 < left <= CLAIM_HORIZON


def claim_holder(what: str) -> str:
    """A holder name for :meth:`IndexStore.claim`: ``what`` and this process's host and
    id, made unique where those repeat (containers on one host's network, each its
    process 1; several servers in one process): holders of one name share one claim, and
    the first to release it drops the others'."""
    return f"{what} {socket.gethostname()[:64]}/{os.getpid()} #{secrets.token_hex(4)}"


def claim_conflict(
    holder: str, exclusive: bool, left: float, *, then: str = "Wait for the rebuild to finish"
) -> Conflict:
    """The refusal of a claim, or of a read, because ``holder`` holds one (``exclusive``
    or shared) for ``left`` more seconds unless renewed. ``then``: what to do about a
    rebuild."""
    lapse = f"the claim of one that was killed lapses within {max(1, round(left))} s"
    if exclusive:
        return Conflict(
            f"the index is being rebuilt by {holder}",
            code="index-in-use",
            hint=f"{then} ({lapse}).",
        )
    return Conflict(
        f"the index is in use by {holder}",
        code="index-in-use",
        hint=f"Stop every server using this index first ({lapse}).",
    )
