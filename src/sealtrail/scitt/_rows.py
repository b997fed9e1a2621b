"""Statement rows a server of this deployment stored: an authentication tag on each row.

The statement store is the sequencer's backlog: what it holds above the sequenced
watermark is appended to the log, and the provenance index then applies it without
checking its signature again (registration did). Someone who can write to the database but
cannot read the servers' key files could otherwise slip a row in that was never registered.
So every row carries a tag, HMAC-SHA256 under a key the database never holds, and no row
becomes a log entry unless its tag verifies.

**The key** is derived from the deployment's challenge key (``keys/challenge.key``, which
every server of a data directory already shares) with HKDF-SHA256 and a label of its own
(:data:`LABEL`): the challenge key itself keeps sealing nonces, and neither use can stand
in for the other.

**The tag** covers every column the log and the index read of a row: the entry id, the
issuer, the subject and the content type, each length-prefixed (:func:`row_message`). Not
the registration time, which nothing judges by: so a statement has one tag whenever it is
registered, and a store tells the row a server would write for it from any other by
comparing (``StatementStore.put_statements`` puts the given row in place of another). The
body is covered through the entry id, its SHA-256: every reader of a body (the indexer,
receipts and reads, the audit) refuses one that does not hash to its entry id, and a
backlog reads no body, so a statement of megabytes costs a sequencer nothing to check. The
sequence number is not covered (the store assigns it as it commits): a row moved to
another number is still the statement a server stored, and appending it again gives its
first index.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealtrail.errors import ConfigError
from sealtrail.log import LogReader
from sealtrail.merkle import leaf_hash
from sealtrail.storage import BacklogRow, StatementRecord, StatementStore

__all__ = [
    "CHECK_MESSAGE",
    "LABEL",
    "TAG_SIZE",
    "StatementBacklog",
    "StatementRows",
    "adopt_row_key",
    "refused_rows",
    "row_message",
]

log = logging.getLogger("sealtrail.scitt")

#: The HKDF label (``info``) of the statement-row key.
LABEL = b"sealtrail statement-row v1"
#: What a key's check value is the HMAC of: no row's message is (each begins with the
#: 8-byte length of a 32-byte entry id).
CHECK_MESSAGE = b"sealtrail statement-row key check v1"
#: Bytes of a row's tag (HMAC-SHA256).
TAG_SIZE = 32
#: Refused rows remembered per backlog, so that each is logged once (then forgotten all at
#: once: a flood of forged rows is logged again rather than held in memory).
MAX_REPORTED = 65536
#: Rows of the statement store :func:`refused_rows` reads per step.
ROWS_STEP = 4096

_ENTRY_ID_SIZE = 32
#: Below every store ``seq`` (an edit may have made one negative).
_MIN_SEQ = -(1 << 63)


def row_message(entry_id: bytes, issuer: str, subject: str, content_type: str) -> bytes:
    """The bytes a row's tag is computed over: each field with its length before it (8
    bytes, big-endian), texts as UTF-8. No two rows that differ in any field give the same
    bytes."""
    out = bytearray()
    texts = (t.encode("utf-8", "surrogatepass") for t in (issuer, subject, content_type))
    for field in (entry_id, *texts):
        out += len(field).to_bytes(8, "big") + field
    return bytes(out)


class StatementRows:
    """Tags statement rows, and checks them, under the key derived from ``secret`` (the
    deployment's challenge key). Holds a secret: its ``repr`` shows none of it, and it
    cannot be pickled."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the statement-row secret must be at least 16 bytes")
        self._key = HKDF(hashes.SHA256(), length=32, salt=None, info=LABEL).derive(secret)

    def __repr__(self) -> str:
        return "StatementRows(<secret>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would copy the key into whatever stores the pickle.
        raise TypeError("StatementRows cannot be pickled")

    def tag(self, row: StatementRecord | BacklogRow) -> bytes:
        message = row_message(row.entry_id, row.issuer, row.subject, row.content_type)
        return hmac.digest(self._key, message, "sha256")

    @property
    def check(self) -> bytes:
        """A value that tells this key from another and reveals nothing of it (the HMAC of
        :data:`CHECK_MESSAGE`): recorded in the store, so that a server given another
        challenge key is refused at its start (:func:`adopt_row_key`) rather than have
        every row it stores refused by the sequencer."""
        return hmac.digest(self._key, CHECK_MESSAGE, "sha256")

    def tagged(self, record: StatementRecord) -> StatementRecord:
        """``record`` with its tag, as a server stores it."""
        return replace(record, tag=self.tag(record))

    def valid(self, row: StatementRecord | BacklogRow) -> bool:
        """Whether ``row`` carries the tag a server of this deployment gave it."""
        if isinstance(row, BacklogRow) and not row.readable:
            return False
        if len(row.tag) != TAG_SIZE or len(row.entry_id) != _ENTRY_ID_SIZE:
            return False
        return hmac.compare_digest(row.tag, self.tag(row))

    def holds(self, record: StatementRecord) -> bool:
        """Whether ``record`` is a row a server of this deployment stored, body and all:
        its tag verifies and its body is the statement its entry id names."""
        return self.valid(record) and hashlib.sha256(record.body).digest() == record.entry_id

    def problem(self, row: StatementRecord | BacklogRow) -> str | None:
        """Why ``row``'s tag does not verify (``None``: it does). Says what is wrong, never
        the tag or the row's content."""
        if isinstance(row, BacklogRow) and not row.readable:
            return "its values are not of their columns' types"
        if not row.tag:
            return "it carries no authentication tag"
        if not self.valid(row):
            return "its authentication tag does not verify"
        return None


class StatementBacklog:
    """The statement store as a sequencer's backlog (:class:`sealtrail.log.Backlog`), giving
    only the rows a server of this deployment stored.

    A row whose tag does not verify is given as ``None``: never appended, and the feeder's
    watermark moves past it, so it holds nothing up. It is left in the store as it is, for
    the audit to name. It is logged at error level, once per backlog, by its sequence
    number and entry id: unless its entry is in the log already (a row stored before the
    tags, or under a challenge key since replaced, that a server appended then), which is
    nothing to append and nothing to report.
    """

    def __init__(self, store: StatementStore, rows: StatementRows, reader: LogReader) -> None:
        self.store = store
        self.rows = rows
        self.reader = reader
        #: Rows refused and reported, by sequence number.
        self._reported: set[int] = set()
        #: Rows refused so far (each once), for whoever watches.
        self.refused = 0

    def entries_since(self, seq: int, *, limit: int) -> list[tuple[int, bytes | None]]:
        return self.screen(self.store.backlog_since(seq, limit=limit))

    def read_sequenced(self) -> int:
        return self.store.read_sequenced()

    def write_sequenced(self, seq: int) -> None:
        self.store.write_sequenced(seq)

    def screen(self, rows: Sequence[BacklogRow]) -> list[tuple[int, bytes | None]]:
        """``rows`` as a backlog gives them: the entry of each one whose tag verifies,
        ``None`` for the others (reported, see the class)."""
        out: list[tuple[int, bytes | None]] = []
        doubtful: list[BacklogRow] = []
        for row in rows:
            if self.rows.valid(row):
                out.append((row.seq, row.entry_id))
            else:
                out.append((row.seq, None))
                doubtful.append(row)
        if doubtful:
            self._report([r for r in doubtful if r.seq not in self._reported])
        return out

    def _report(self, rows: list[BacklogRow]) -> None:
        if not rows:
            return
        in_log = _in_log(self.reader, rows)
        if len(self._reported) + len(rows) > MAX_REPORTED:
            self._reported.clear()
        logged = 0
        for row in rows:
            self._reported.add(row.seq)
            if row.seq in in_log:
                continue
            self.refused += 1
            entry = row.entry_id.hex()[:16] + "…" if row.entry_id else "unreadable"
            log.error(
                "statement row seq %d (entry %s) refused: %s; not appended to the log, "
                "left in the store (written behind the service? `sealtrail audit` names it)",
                row.seq,
                entry,
                self.rows.problem(row),
            )
            logged += 1
        if len(rows) > logged:
            log.info(
                "%d statement rows without a valid tag are in the log already (stored "
                "before the tags, or under another challenge key): nothing to append",
                len(rows) - logged,
            )


def _in_log(reader: LogReader, rows: Sequence[BacklogRow]) -> set[int]:
    """The numbers of those of ``rows`` whose entry the log holds (one lookup)."""
    leaves = {r.seq: leaf_hash(r.entry_id) for r in rows if len(r.entry_id) == _ENTRY_ID_SIZE}
    known = reader.indexes_of(list(leaves.values())) if leaves else {}
    return {seq for seq, leaf in leaves.items() if leaf in known}


def refused_rows(
    store: StatementStore, rows: StatementRows, reader: LogReader, *, step: int = ROWS_STEP
) -> Iterator[tuple[BacklogRow, str]]:
    """Every row of ``store`` a :class:`StatementBacklog` refuses and reports, below its
    watermark or above it, in store order, each with why (:meth:`StatementRows.problem`):
    its tag does not verify, and the log does not hold its entry (the same lookup as the
    backlog's). Reads every row but no body, ``step`` at a time, and writes nothing
    (``sealtrail index status`` runs it, on a standby too)."""
    after = _MIN_SEQ
    while found := store.backlog_since(after, limit=step):
        doubtful = [r for r in found if not rows.valid(r)]
        in_log = _in_log(reader, doubtful) if doubtful else set()
        for row in doubtful:
            if row.seq not in in_log:
                yield row, rows.problem(row) or "its authentication tag does not verify"
        after = found[-1].seq


def adopt_row_key(store: StatementStore, rows: StatementRows, *, replace: bool = False) -> None:
    """Record ``rows``' key as the one ``store``'s rows are tagged under, if none is (or,
    with ``replace``, over the one recorded); a :class:`ConfigError`
    (``challenge-key-mismatch``) if another is: every row this server stored would be
    refused by whichever server holds the sequencer role, and its registrations would
    never complete."""
    recorded = store.row_key_check(rows.check, replace=replace)
    if not hmac.compare_digest(recorded, rows.check):
        raise ConfigError(
            "keys/challenge.key is not the challenge key this store's statement rows are "
            "tagged under: the sequencer would refuse every row this server stored",
            hint="Copy keys/challenge.key from a server of this deployment. To replace the "
            "key, stop every server with SIGTERM, then run `sealtrail keys challenge-key` "
            "and copy the new file to every host.",
            code="challenge-key-mismatch",
        )
