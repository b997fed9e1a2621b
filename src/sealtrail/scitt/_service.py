"""The transparency service: registration of signed statements and receipts.

Life of a registration (``TransparencyService.register``):

1. **Check** (:meth:`TransparencyService.check`): the statement profile, the issuer's
   organization, its policy, the signing key (a certificate chain validated to the
   organization's anchors, or a registered ``kid``), and the signature. Nothing is written
   for a statement that fails any of it.
2. **Store**: the statement's bytes are committed to the statement store, grouped with
   concurrent registrations into one transaction, each row with its authentication tag
   (``_rows``). *If we crash after this, recovery re-appends every stored statement above
   the sequenced watermark whose tag verifies; appending a leaf twice returns its first
   index, so nothing is lost and nothing gets two indexes.*
3. **Append**: its leaf entry, SHA-256 of the statement, goes to the sequencer with the
   rest of its group (one submission), whose futures resolve once a checkpoint covering
   them is durable.
4. **Receipt**: on request, against the latest checkpoint (refreshable at any time); for a
   registration that has just completed, :meth:`TransparencyService.receipt_for` builds it
   from the known index without a lookup.

The check runs on the event loop, signature included: handing ECDSA checks to a thread
would let ``cryptography`` verify without the GIL, but under load the thread then waits a
whole switch interval to take the GIL back after each one, and throughput drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sealtrail.errors import (
    Conflict,
    Corruption,
    Error,
    InvalidInput,
    InvalidSignature,
    NotFound,
    StorageError,
    VerificationError,
)
from sealtrail.keys import Signer, Verifier, parallel
from sealtrail.log import (
    LogReader,
    Sequencer,
    SharedSequencer,
    SignedCheckpoint,
    cancel_and_wait,
)
from sealtrail.merkle import leaf_hash
from sealtrail.storage import StatementRecord, StatementStore

from ._chain import ChainValidator
from ._cose import Claim, Header, bad_signature, sign1
from ._cosekey import encode_key_set, key_id
from ._keyrecords import KEYS_RECORD_TYPE, ServiceKeys, keys_record, parse_keys_record
from ._receipt import MIN_RECEIPT_TREE_SIZE, ReceiptSigner, add_receipts
from ._refresh import Refresher
from ._registry import ORG_RECORD_TYPE, Organization, Registry, parse_org_record
from ._rows import StatementBacklog, StatementRows
from ._signatures import SignatureChecks
from ._statement import (
    MAX_STATEMENT_SIZE,
    MAX_STATEMENT_SIZE_LIMIT,
    SignedStatement,
    parse_statement,
)
from ._users import (
    GRANT_RECORD_TYPE,
    USER_RECORD_TYPE,
    Grant,
    Grants,
    User,
    Users,
    grant_record,
    parse_grant_record,
    parse_user_record,
    user_record,
)

__all__ = [
    "MAX_CLOCK_SKEW",
    "History",
    "PayloadRule",
    "Registration",
    "RuleContext",
    "Submission",
    "TransparencyService",
    "edited_columns",
    "issuer_key",
]

log = logging.getLogger("sealtrail.scitt")

#: Below every store ``seq`` (an edit may have made one negative: it is folded all the same).
MIN_SEQ = -(1 << 63)
#: How far before the last ``seq`` it folded a running process looks for new records: the
#: store gives a deleted newest row's ``seq`` to the next statement.
FOLD_LOOKBACK = 1024
#: How far ahead of the service's clock a statement's ``iat`` may be, in seconds.
MAX_CLOCK_SKEW = 600

#: Statements written to the store in one transaction, at most.
STORE_BATCH = 4096
#: Statements re-appended per step during recovery.
RECOVERY_STEP = 4096
#: Seconds :meth:`TransparencyService.start` waits for the signature workers to start.
WARM_WAIT = 5.0
#: Seconds :meth:`TransparencyService.close` waits for stored statements' leaves.
CLOSE_WAIT = 10.0
#: Seconds between writes of the sequenced watermark while registrations flow.
WATERMARK_EVERY = 1.0
#: Seconds between looks for organization records another process registered (a store
#: shared by several processes).
REGISTRY_POLL = 1.0
#: Seconds from the start of one read of the stored records on demand
#: (:meth:`TransparencyService.refresh_orgs`: refusals on organization records, credentials
#: a server does not know) to the next at the earliest. However many callers ask, the store
#: is read this often at most, and a record stored elsewhere a moment ago is found after at
#: most this long plus the read.
ORG_READ_SPACING = 0.05


def issuer_key(
    statement: SignedStatement, org: Organization, validator: ChainValidator, *, now: dt.datetime
) -> Verifier:
    """The key a statement must verify with: its x5chain's leaf, validated at ``now`` to the
    organization's anchors, or the registered key its ``kid`` names. Raises a
    :class:`VerificationError` with a stable code (registration and the audit share it)."""
    if statement.x5chain:
        chain_key = validator.signing_key(
            statement.x5chain, org.anchors, alg=statement.alg, now=now, revoked=org.revoked
        )
        if statement.kid is not None and statement.kid != key_id(chain_key):
            raise VerificationError("kid does not name the x5chain's key", code="statement-bad-kid")
        return chain_key
    assert statement.kid is not None
    if statement.kid in org.retired_keys:
        raise VerificationError(
            "the statement is signed with a retired key", code="issuer-key-retired"
        )
    verifier = org.keys.get(statement.kid)
    if verifier is None:
        raise VerificationError(
            "kid names no key registered for this issuer", code="issuer-key-unknown"
        )
    return verifier


def checked_record(record: StatementRecord) -> StatementRecord:
    """``record``, once its body is known to be the entry's and its columns the body's.

    Who may read or share a statement is decided by its issuer's organization: read from
    a column an edit of the database could change (the audit names such edits, but a
    running server must not act on one meanwhile). :class:`Corruption` otherwise."""
    if hashlib.sha256(record.body).digest() != record.entry_id:
        raise Corruption(
            f"statement {record.entry_id.hex()[:16]}…: the stored body is not the entry's "
            "(edited behind the log)"
        )
    edited = edited_columns(record, parse_statement(record.body, max_size=len(record.body)))
    if edited:
        raise Corruption(
            f"statement {record.entry_id.hex()[:16]}…: the store's {', '.join(edited)} "
            "edited behind the log (the statement says otherwise)"
        )
    return record


def edited_columns(
    record: StatementRecord, statement: SignedStatement
) -> dict[str, tuple[str, str]]:
    """The columns of ``record`` that disagree with its body ``statement``: name ->
    (what the store holds, what the statement says). Registration fills them from the
    statement, and the service reads them instead of the body."""
    columns = {
        "issuer": (record.issuer, statement.issuer),
        "subject": (record.subject, statement.subject),
        "content_type": (record.content_type, str(statement.content_type)),
    }
    return {name: pair for name, pair in columns.items() if pair[0] != pair[1]}


class RuleContext(Protocol):
    """What a payload rule may ask the service about registrations other than its own."""

    def is_registered(self, leaf_entry: bytes) -> bool:
        """Whether a statement with this leaf entry is stored or on its way to the store
        (accepted and queued): it will be in the log."""
        ...


class History(Protocol):
    """The log's history as the payload rules judge by it, kept by the layer that gives
    those rules (the provenance ledger); on a shared store another process's registrations
    reach it only when it reads the log (:meth:`TransparencyService.check_current`)."""

    @property
    def generation(self) -> int:
        """Changes whenever the history takes in log entries it did not hold: registered
        through another process."""
        ...

    async def refresh(self) -> None:
        """Take in what the log holds now."""
        ...


PayloadRule = Callable[[SignedStatement, Organization, RuleContext], None]
"""A registration rule for one content type, run after every other check passed: it reads
the statement (payload included), its issuer's organization and the :class:`RuleContext`,
and raises an :class:`~sealtrail.errors.Error` with a stable code to refuse it. Rules run
on the event loop one at a time, so a rule that records what it accepted (a device id,
say) sees every earlier acceptance. Layers above ``scitt`` (the provenance model) plug
their rules in this way."""

Authorize = Callable[[SignedStatement, Organization], None]
"""Whether the sender may register a statement for the organization its issuer belongs to
(the service layer's access check): raises an :class:`~sealtrail.errors.Error` to refuse."""


@dataclass(frozen=True)
class Submission:
    """A registration under way.

    ``stored`` resolves once the statement is durable in the statement store: from then
    on it will be in the log even if the process dies (recovery appends it), so the entry
    may be announced (SCRAPI's 303). ``index`` resolves to its index once a checkpoint
    covering it is durable. Either fails with an :class:`~sealtrail.errors.Error`.
    """

    stored: asyncio.Future[None]
    index: asyncio.Future[int]

    def cancel(self) -> None:
        self.stored.cancel()
        self.index.cancel()


@dataclass(frozen=True)
class Registration:
    """A registered statement: its entry id and its index in the log."""

    entry_id: str
    index: int


def _as_error(exc: BaseException, what: str) -> Error:
    return exc if isinstance(exc, Error) else StorageError(f"{what} failed: {type(exc).__name__}")


class _Registrar:
    """Stores statements a group at a time, then appends each group's leaves together.

    Registrations that arrive while a group is being written form the next group: one
    store transaction and one sequencer submission per group, and one thread hop, rather
    than one of each per statement. A group's leaves are submitted only once its
    statements are committed (the order the module docstring relies on).
    """

    def __init__(
        self,
        store: StatementStore,
        sequencer: Sequencer | SharedSequencer,
        on_sequenced: Callable[[Sequence[int]], None],
        watermark: Callable[[], int] | None,
        *,
        rows: StatementRows | None = None,
        on_stored: Callable[[Sequence[int]], None] | None = None,
        on_unstored: Callable[[Sequence[bytes]], None] | None = None,
    ) -> None:
        self.store = store
        self.sequencer = sequencer
        #: Tags each row as it is stored (see ``_rows``); None: rows go untagged.
        self.rows = rows
        self._on_sequenced = on_sequenced
        self._on_stored = on_stored
        self._on_unstored = on_unstored
        self._watermark = watermark
        self._written_watermark = -1
        self._watermark_at = 0.0
        self._queue: list[tuple[StatementRecord, Submission]] = []
        #: Leaf entries queued or being written (not stored yet, and not failed yet), each
        #: with how many of its copies are: one copy's failure leaves the others counted.
        self.unstored: Counter[bytes] = Counter()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._appending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sealtrail-registrar")

    async def close(self) -> None:
        """Stop taking groups; wait (bounded) for the leaves of stored groups."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for _, submission in self._queue:
            submission.cancel()
        self._queue = []
        self.unstored.clear()
        if self._appending:
            _, late = await asyncio.wait(self._appending, timeout=CLOSE_WAIT)
            for task in late:
                task.cancel()

    def put(self, record: StatementRecord) -> Submission:
        """Queue a checked statement: see :class:`Submission` for what resolves when.

        Raises :class:`~sealtrail.errors.RetryLater` under back-pressure, before anything
        is stored: a statement stored but refused by the sequencer would wait for a retry
        or a restart to reach the log.
        """
        queued = len(self._queue) + 1
        self.sequencer.check_admission(queued, queued * len(record.entry_id))
        loop = asyncio.get_running_loop()
        submission = Submission(stored=loop.create_future(), index=loop.create_future())
        # Most callers await only the index; a store failure is reported there too.
        submission.stored.add_done_callback(_seen)
        self._queue.append((record, submission))
        self.unstored[record.entry_id] += 1
        self._wakeup.set()
        self.start()
        return submission

    def _settled(self, entries: Iterable[bytes]) -> None:
        """One copy of each of ``entries`` is stored, or failed: no longer unstored."""
        unstored = self.unstored
        for entry in entries:
            left = unstored[entry] - 1
            if left > 0:
                unstored[entry] = left
            else:
                unstored.pop(entry, None)

    def _store(self, records: list[StatementRecord], watermark: int | None) -> list[int]:
        """One transaction for the group (a worker thread), each row with its tag; the
        watermark rides along."""
        rows = self.rows
        if rows is not None:
            records = [rows.tagged(r) for r in records]
        seqs = self.store.put_statements(records)
        if watermark is not None:
            try:
                self.store.write_sequenced(watermark)
            except Error as exc:
                # The group is stored all the same; the watermark is written with a later one.
                log.warning("sequenced watermark not written: %s (%s)", exc, exc.code)
                self._written_watermark = -1
        return seqs

    def _due_watermark(self) -> int | None:
        """The sequenced watermark, when it moved and was last written a while ago.

        Persisting it bounds the work of recovery after a crash to the statements of the
        last :data:`WATERMARK_EVERY` seconds (and any a failed batch left behind).
        """
        if self._watermark is None:
            return None  # a shared sequencer's feeder keeps it
        now = time.monotonic()
        current = self._watermark()
        if current == self._written_watermark or now - self._watermark_at < WATERMARK_EVERY:
            return None
        self._written_watermark, self._watermark_at = current, now
        return current

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # A group is never larger than one sequencer batch: it is submitted all or none,
            # and so always fits an empty queue.
            limit = min(STORE_BATCH, self.sequencer.config.max_batch)
            while self._queue:
                group = self._queue[:limit]
                self._queue = self._queue[limit:]
                records = [record for record, _ in group]
                try:
                    seqs = await asyncio.to_thread(self._store, records, self._due_watermark())
                except Exception as exc:
                    self._settled(r.entry_id for r in records)
                    error = _as_error(exc, "statement store")
                    _fail([s.stored for _, s in group], error)
                    _fail([s.index for _, s in group], error, logged=False)
                    if self._on_unstored is not None:
                        self._on_unstored([r.entry_id for r in records])
                    continue
                # Durable in the statement store from here (see the module docstring).
                self._settled(r.entry_id for r in records)
                if self._on_stored is not None:
                    self._on_stored(seqs)
                for _, submission in group:
                    if not submission.stored.done():
                        submission.stored.set_result(None)
                try:
                    entries = [r.entry_id for r in records]
                    submitted = (
                        self.sequencer.submit_many(entries, seqs)
                        if isinstance(self.sequencer, SharedSequencer)
                        else self.sequencer.submit_many(entries)
                    )
                except Exception as exc:
                    # Stored, not appended: recovery appends it at the next start, and a
                    # retried registration of the same statement appends it now.
                    _fail([s.index for _, s in group], _as_error(exc, "sequencing"))
                    continue
                task = asyncio.create_task(self._answer(group, seqs, submitted))
                self._appending.add(task)
                task.add_done_callback(self._appending.discard)

    async def _answer(
        self,
        group: list[tuple[StatementRecord, Submission]],
        seqs: list[int],
        submitted: list[asyncio.Future[list[int]]],
    ) -> None:
        results = await asyncio.gather(*submitted, return_exceptions=True)
        pos = 0
        for result in results:
            if isinstance(result, BaseException):
                # This part of the group is stored but not appended: start-up recovery
                # appends it (the watermark stays below it); its registrants may retry.
                step = self.sequencer.config.max_batch
                part = group[pos : pos + step]
                _fail([s.index for _, s in part], _as_error(result, "sequencing"))
                pos += step
                continue
            self._on_sequenced(seqs[pos : pos + len(result)])
            for (_, submission), index in zip(group[pos : pos + len(result)], result, strict=True):
                if not submission.index.done():
                    submission.index.set_result(index)
            pos += len(result)


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _fail(futures: Sequence[asyncio.Future[Any]], error: Error, *, logged: bool = True) -> None:
    if logged:
        log.warning("registration of %d statements failed: %s", len(futures), error.code)
    for future in futures:
        if not future.done():
            future.set_exception(error)


def _lost(code: str, what: str) -> Conflict:
    """A record another process registered the same version of first (a shared store)."""
    return Conflict(
        f"another process registered {what} first; this record is in the log but not in effect",
        code=code,
        hint="Read it again and send the next version.",
    )


class TransparencyService:
    """Registers signed statements into a log and issues receipts for them."""

    def __init__(
        self,
        *,
        store: StatementStore,
        sequencer: Sequencer | SharedSequencer,
        signer: Signer,
        issuer: str,
        retired: Sequence[Verifier] = (),
        validator: ChainValidator | None = None,
        max_statement_size: int = MAX_STATEMENT_SIZE,
        payload_rules: Mapping[str, PayloadRule] | None = None,
        statement_rows: StatementRows | None = None,
    ) -> None:
        self.store = store
        self.sequencer = sequencer
        self.reader: LogReader = sequencer.reader
        self.signer = signer
        self.issuer = issuer
        self.receipts = ReceiptSigner(signer, issuer=issuer, subject=sequencer.signer.origin)
        self.registry = Registry()
        self.validator = validator or ChainValidator()
        if not 0 < max_statement_size <= MAX_STATEMENT_SIZE_LIMIT:
            raise ValueError(f"max_statement_size must be 1..{MAX_STATEMENT_SIZE_LIMIT}")
        self.max_statement_size = max_statement_size
        self.payload_rules: Mapping[str, PayloadRule] = dict(payload_rules or {})
        current = signer.verifier()
        self.keys: dict[bytes, Verifier] = {key_id(v): v for v in retired}
        self.keys[key_id(current)] = current
        #: Several processes share the store: the sequencer's feeder appends what any of
        #: them stored, so recovery and the watermark are its business, and organization
        #: records registered elsewhere are picked up every REGISTRY_POLL seconds.
        self.shared = isinstance(sequencer, SharedSequencer)
        #: Tags the rows this service stores and checks those recovery appends (a server
        #: is given one: ``service_app``). None: rows are neither tagged nor checked.
        self.statement_rows = statement_rows
        self._registrar = _Registrar(
            store,
            sequencer,
            self._mark_sequenced,
            None if self.shared else lambda: self._sequenced,
            rows=statement_rows,
            on_stored=None if self.shared else self._mark_stored,
            on_unstored=self._store_failed,
        )
        self.users = Users()
        self.grants = Grants()
        #: Of each administrative content type, the highest store ``seq`` folded so far
        #: (``None`` before the first fold, which reads them all, in the log's order).
        self._folded: dict[str, int | None] = {
            ORG_RECORD_TYPE: None,
            USER_RECORD_TYPE: None,
            GRANT_RECORD_TYPE: None,
            KEYS_RECORD_TYPE: None,
        }
        #: The receipt keys this process signs and verifies with, and the last key set the
        #: log records (None: no rotation recorded yet).
        self.receipt_keys = ServiceKeys(
            key_id(current),
            current.algorithm,
            tuple(sorted(k for k in self.keys if k != key_id(current))),
        )
        self.recorded_keys: ServiceKeys | None = None
        self._keys_task: asyncio.Task[None] | None = None
        # Folding runs on the loop's worker threads and in an indexer's: one at a time.
        self._fold_lock = threading.Lock()
        #: Set by a layer above whose payload rules rest on the log's history (the
        #: provenance ledger): read anew on a shared store when a rule refuses on it.
        self.history: History | None = None
        #: Set by the layer whose payload rules remember what they accept (the provenance
        #: ledger): takes back a statement's acceptance when it is to be checked again.
        self.withdraw: Callable[[bytes], None] | None = None
        self._registry_task: asyncio.Task[None] | None = None
        #: The store ``seq`` of every row this process stored and has not seen in the log,
        #: and the highest it stored: the watermark stays below the lowest of the first,
        #: whatever else the store numbered meanwhile (see :meth:`_mark_sequenced`).
        self._outstanding: set[int] = set()
        self._stored_max = 0
        self._sequenced = 0
        # Organization changes one at a time: check, log and apply must not interleave, or
        # two records of the same version could both reach the log.
        self._org_lock = asyncio.Lock()
        #: The folds of :meth:`refresh_orgs`, shared by the callers waiting together, one at
        #: a time with ``_org_lock``.
        self._refresher = Refresher(
            lambda: self._fold_orgs(),  # noqa: PLW0108 (looked up at each fold)
            spacing=ORG_READ_SPACING,
            lock=self._org_lock,
            name="sealtrail-orgs-refresh",
        )
        #: Organization name -> set once the new record being registered for it is in
        #: effect (:meth:`submit_current` holds that organization's statements meanwhile).
        self._changing: dict[str, asyncio.Event] = {}
        #: Each service record folded, by its signed content and signature's first half.
        self._service_marks: dict[bytes, bytes] = {}
        #: Entry ids of the administrative records folded (each is folded once).
        self._folded_ids: set[bytes] = set()
        self._started = False
        self._signatures = SignatureChecks()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the registry from the stored records and re-append unsequenced statements."""
        warming = parallel.warm()  # the signature workers start while the registry folds
        await self._fold_orgs()
        self._registrar.start()
        if self.shared:
            self._registry_task = asyncio.create_task(self._follow_orgs(), name="sealtrail-orgs")
            # In the background: the role may have no holder yet to sequence it.
            self._keys_task = asyncio.create_task(self._record_keys(), name="sealtrail-keys")
        else:
            self._sequenced = await asyncio.to_thread(self.store.read_sequenced)
            await self._recover()
            await self._record_keys()
        if warming is not None:  # bounded: a pool that cannot start is found out on use
            await asyncio.wait([asyncio.wrap_future(warming)], timeout=WARM_WAIT)
        self._started = True

    async def close(self) -> None:
        tasks = (self._keys_task, self._registry_task)
        self._keys_task = self._registry_task = None
        for task in tasks:
            await cancel_and_wait(task)
        await self._refresher.close()
        await self._registrar.close()
        if not self.shared:
            with contextlib.suppress(Error):
                await asyncio.to_thread(self.store.write_sequenced, self._sequenced)

    async def _fold_orgs(self) -> None:
        await asyncio.to_thread(self.fold_records)

    def org_name(self, issuer: str) -> str | None:
        """The organization of ``issuer``; on a shared store, the records another process
        registered are folded in first when it is not known (blocking: an indexer's thread)."""
        name = self.registry.name_of(issuer)
        if name is None and self.shared:
            self.fold_records()
            name = self.registry.name_of(issuer)
        return name

    def fold_records(self) -> None:
        """Apply the stored organization and user records not folded yet, in store order
        (blocking; any thread).

        A record that does not apply (two processes that each registered the next version of
        one organization or user: the later one lost the race) is skipped with a warning,
        the same way every time the registry is rebuilt.
        """
        folds: tuple[tuple[str, Callable[[bytes], None]], ...] = (
            (ORG_RECORD_TYPE, lambda payload: self.registry.apply(parse_org_record(payload))),
            (USER_RECORD_TYPE, lambda payload: self.users.apply(parse_user_record(payload))),
            (GRANT_RECORD_TYPE, lambda payload: self.grants.apply(parse_grant_record(payload))),
            (KEYS_RECORD_TYPE, self._fold_keys),
        )
        with self._fold_lock:
            for content_type, fold in folds:
                self._fold_type(content_type, fold)

    def _fold_type(self, content_type: str, fold: Callable[[bytes], None]) -> None:
        # Only the records not folded yet: on a shared store the service polls this every
        # second. They are found by their seq, from a little before the last folded (a
        # deleted newest row frees its seq for the next record), and each is folded once,
        # by entry id (a row moved to a new seq is not applied again). Not by counting: a
        # row deleted behind the log would shift the count and hide the next record.
        after = self._folded[content_type]
        rows = self.store.statements_of_type_after(
            content_type, MIN_SEQ if after is None else after - FOLD_LOOKBACK
        )
        if after is None:
            rows = self._in_log_order(rows)
        for seq, record in rows:
            last = self._folded[content_type]
            self._folded[content_type] = seq if last is None else max(last, seq)
            if record.entry_id in self._folded_ids:
                continue
            self._folded_ids.add(record.entry_id)
            try:
                statement = parse_statement(record.body)
                if statement.issuer != self.issuer:
                    continue  # only the service's own records count
                self._verify_service_signature(statement)
                self._not_replayed(record, statement)
            except Error as exc:
                if not self._started:
                    raise  # a store edited so is not served
                # Running: the row is not applied, and later records still are (a
                # revocation after it must take effect); the audit names it in the log.
                log.error("record %s: %s (%s); not applied", record.entry_id.hex(), exc, exc.code)
                continue
            try:
                fold(statement.payload)
            except InvalidInput as exc:
                log.warning("record %s not applied: %s", record.entry_id.hex(), exc)

    def _in_log_order(
        self, rows: list[tuple[int, StatementRecord]]
    ) -> list[tuple[int, StatementRecord]]:
        """``rows`` as the log orders them, those not in it yet after, in store order.

        The store's own order is its ``seq`` column, which an edit of the database can
        change (putting a user's revocation before the record it revokes, say): the log's
        order is signed. The audit replays the log in its order; so does a start."""
        leaves = [leaf_hash(record.entry_id) for _, record in rows]
        found = self.reader.indexes_of(leaves)
        keyed = sorted(
            ((0, found[leaf]) if leaf in found else (1, n), n) for n, leaf in enumerate(leaves)
        )
        return [rows[n] for _, n in keyed]

    def _not_replayed(self, record: StatementRecord, statement: SignedStatement) -> None:
        """Refuse a service record that is an earlier one again under a re-encoded
        signature (:attr:`CoseSign1.signing_mark`): a copy made without the key."""
        mark = statement.message.signing_mark
        if self._service_marks.setdefault(mark, record.entry_id) != record.entry_id:
            raise Corruption(
                f"service record {record.entry_id.hex()[:16]}… repeats an earlier record "
                "under a re-encoded signature: the statement store was edited behind the log"
            )

    def _fold_keys(self, payload: bytes) -> None:
        self.recorded_keys = parse_keys_record(payload)

    async def _record_keys(self) -> None:
        """Register the receipt key set when it is not the one the log last recorded (after
        a rotation; a log's first key set goes unrecorded). A failure is logged: the keys
        are in use either way, and the next start records them."""
        mine = self.receipt_keys
        if self.recorded_keys == mine or (self.recorded_keys is None and not mine.retired):
            return
        record = keys_record(mine)
        try:
            async with self._org_lock:
                await self._put_record(
                    KEYS_RECORD_TYPE,
                    "service-keys",
                    record,
                    check=lambda: None,
                    in_effect=lambda: self.recorded_keys == mine,
                    apply=lambda: self._fold_keys(record),
                    lost=Conflict(
                        "another process recorded another key set", code="keys-record-lost"
                    ),
                )
        except Error as exc:
            log.warning("receipt key set not recorded: %s (%s)", exc, exc.code)
            return
        log.info(
            "receipt key set recorded: kid %s, %d retired",
            mine.current.hex()[:16],
            len(mine.retired),
        )

    async def _follow_orgs(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_POLL)
            try:
                async with self._org_lock:
                    await self._fold_orgs()
            except Error as exc:
                log.warning("organization records: %s (%s); retrying", exc, exc.code)

    async def _recover(self) -> None:
        """Every stored statement's leaf is in the log: append those above the watermark,
        but a row whose tag does not verify (:class:`StatementBacklog`: never appended,
        logged, and passed)."""
        rows = self.statement_rows
        backlog = None if rows is None else StatementBacklog(self.store, rows, self.reader)
        while True:
            found: Sequence[tuple[int, bytes | None]] = await asyncio.to_thread(
                self.store.entries_since if backlog is None else backlog.entries_since,
                self._sequenced,
                limit=RECOVERY_STEP,
            )
            if not found:
                return
            entries = [entry for _, entry in found if entry is not None]
            if entries:
                await self.sequencer.add_many(entries)
            self._sequenced = found[-1][0]
            await asyncio.to_thread(self.store.write_sequenced, self._sequenced)
            log.info("recovered %d stored statements into the log", len(entries))

    # -- registration -------------------------------------------------------------------------

    def check(
        self, data: bytes | SignedStatement, *, now: float | None = None
    ) -> tuple[SignedStatement, Organization]:
        """Every registration check. Raises an :class:`Error` with a code.

        ``data`` is the statement's bytes, or the statement already parsed (with this
        service's ``max_statement_size``) by a caller that needed to read it first.
        Nothing is written; a payload rule may remember what it accepted (see
        :data:`PayloadRule`): a statement that then does not reach the store has that taken
        back (:meth:`submit_checked`).
        """
        statement, org, verifier = self._screen(data, now=now)
        statement.message.verify(verifier)
        return self._payload_rule(statement, org)

    async def check_async(
        self,
        data: bytes | SignedStatement,
        *,
        now: float | None = None,
        authorize: Authorize | None = None,
    ) -> tuple[SignedStatement, Organization]:
        """:meth:`check`, with the signature checked off the event loop (in a worker
        process, together with the other checks of the loop's turn: see
        :class:`SignatureChecks`), so that the loop serves other requests meanwhile.

        ``authorize``, when given, is called with the statement and its issuer's
        organization as soon as that is found, before any other check: what it raises
        ends the check, before anything could remember the statement."""
        statement, org, verifier = self._screen(data, now=now, authorize=authorize)
        message = statement.message
        signed = message.to_be_signed(verifier)
        try:
            await self._signatures.verify(verifier, signature=message.signature, message=signed)
        except InvalidSignature as exc:
            raise bad_signature(exc.message) from None
        return self._payload_rule(statement, org)

    def _payload_rule(
        self, statement: SignedStatement, org: Organization
    ) -> tuple[SignedStatement, Organization]:
        # Domain rules last: a payload is read only once its signature is known good.
        rule = self.payload_rules.get(str(statement.content_type))
        if rule is not None:
            rule(statement, org, self)
        return statement, org

    async def check_current(
        self,
        data: bytes | SignedStatement,
        *,
        now: float | None = None,
        authorize: Authorize | None = None,
    ) -> tuple[SignedStatement, Organization]:
        """:meth:`check_async`, judged with what other processes registered before the
        statement was sent (a shared store): a statement sent after the receipts of what it
        rests on is judged with them, whichever process receives it.

        A process knows the organization records and the history it has read. A refusal
        that rests on the history (marked ``depends_on_history``: a device no manifest
        holds, say) has :attr:`history` take in the log as it is now; any other
        :class:`VerificationError` (an issuer not known here, or a key, chain or policy an
        organization record registered elsewhere may have changed) has the organization
        records folded. The statement is checked again only if that read taught this
        process something since the check began (the history took in other processes'
        entries, or an organization record was applied), and each is read at most once per
        call: at most three checks. A check that passes reads nothing more; with a store of
        its own (not shared) this is :meth:`check_async`. ``authorize`` as
        :meth:`check_async`, asked of the organization each check found.
        """
        if not self.shared:
            return await self.check_async(data, now=now, authorize=authorize)
        read: set[str] = set()
        while True:
            # What this process knew as the check began: a read that changes it may change
            # the answer. Counters in memory: the accepted path reads nothing more.
            orgs = self.registry.applied
            history = None if self.history is None else self.history.generation
            try:
                return await self.check_async(data, now=now, authorize=authorize)
            except VerificationError as exc:
                if not await self._read_anew(exc, read, orgs, history):
                    raise

    async def _read_anew(
        self, refusal: VerificationError, read: set[str], orgs: int, history: int | None
    ) -> bool:
        """After ``refusal`` on a shared store, read what it rests on anew, unless this
        call did (``read``); whether that grew since the check began (``orgs``,
        ``history``), so that checking again may answer otherwise."""
        source = self.history
        if getattr(refusal, "depends_on_history", False) and source is not None:
            if "history" in read:
                return False
            read.add("history")
            await source.refresh()
            return source.generation != history
        if "organizations" in read or not getattr(refusal, "depends_on_organizations", False):
            return False
        read.add("organizations")
        await self.refresh_orgs()
        return self.registry.applied != orgs

    async def refresh_orgs(self, asked: float | None = None) -> None:
        """Fold the organization, user, grant and key records other processes stored (a
        fold applies only what is new), for a caller whose lookup failed at ``asked`` (the
        event loop's clock; default now): returns once a fold that began at or after that
        moment has ended, so every record stored before it is folded.

        Folds run one at a time, with ``_org_lock`` (never call this holding it), each
        :data:`ORG_READ_SPACING` after the one before at the earliest, and are shared
        (:class:`Refresher`): a caller that asks while a fold runs that began earlier waits
        for it, then for the next (the first may have read before what the caller looks for
        was stored); callers waiting together share that next fold. A fold runs as a task
        of its own: a caller cancelled does not cancel it for the others. A fold that fails
        raises its error (a :class:`StorageError`, say) to the callers that shared it, so
        that they do not answer from records read before; the next caller folds anew."""
        await self._refresher.after(asked)

    def is_registered(self, leaf_entry: bytes) -> bool:
        """:class:`RuleContext`: stored by a server, or accepted and on its way to the
        store. A row written behind the service does not count (the rules would pass its
        statement as one registered before): with :attr:`statement_rows`, a stored row
        counts if its tag and body verify, or if its entry is in the log (a row stored
        before the tags)."""
        if leaf_entry in self._registrar.unstored:
            return True
        record = self.store.get_statement(leaf_entry)
        if record is None:
            return False
        rows = self.statement_rows
        if rows is None or rows.holds(record):
            return True
        return bool(self.reader.indexes_of([leaf_hash(leaf_entry)]))

    def _screen(
        self,
        data: bytes | SignedStatement,
        *,
        now: float | None,
        authorize: Authorize | None = None,
    ) -> tuple[SignedStatement, Organization, Verifier]:
        """Every check but the signature's: profile, issuer, ``authorize``, policy, and the
        key to use."""
        if isinstance(data, SignedStatement):
            statement = data
        else:
            statement = parse_statement(data, max_size=self.max_statement_size)
        try:
            org = self.registry.for_issuer(statement.issuer)
            if authorize is not None:
                authorize(statement, org)
            content_type = str(statement.content_type)
            org.policy.check(
                content_type=content_type,
                subject=statement.subject,
                alg=statement.alg,
                size=len(statement.encoded),
            )
            return statement, org, self._issuer_key(statement, org, now=now)
        except VerificationError as exc:
            # A refusal on the issuer's organization record (unknown issuer, its policy,
            # keys or chain): a newer record, registered through another process, may
            # answer otherwise (check_current).
            exc.depends_on_organizations = True
            raise

    def _issuer_key(
        self, statement: SignedStatement, org: Organization, *, now: float | None
    ) -> Verifier:
        """The key, with its chain valid now and, for a statement that says when it was
        issued, then too: passports and the audit check the chain at ``iat``."""
        current = now if now is not None else time.time()
        iat = statement.issued_at
        if iat is not None and iat > current + MAX_CLOCK_SKEW:
            raise VerificationError(
                f"the statement's iat is {iat - current:.0f} s ahead of the service's clock "
                f"(at most {MAX_CLOCK_SKEW} s are allowed)",
                code="statement-iat-future",
                hint="Sign with iat set to the signing time, from a synchronized clock.",
            )
        when = dt.datetime.fromtimestamp(current, dt.UTC)
        key = issuer_key(statement, org, self.validator, now=when)
        if iat is not None and statement.x5chain:
            issued = dt.datetime.fromtimestamp(iat, dt.UTC)
            try:
                issuer_key(statement, org, self.validator, now=issued)
            except VerificationError as exc:
                raise VerificationError(
                    f"{exc.message} at the statement's iat ({issued:%Y-%m-%dT%H:%M:%SZ})",
                    code=exc.code,
                    hint="The chain must be valid when the statement says it was signed.",
                ) from None
        return key

    async def register(self, data: bytes) -> Registration:
        """Check (:meth:`check_current`), store and append one statement; returns once its
        checkpoint is durable."""
        statement, org = await self.check_current(data)
        index = await (await self.submit_current(statement, org)).index
        return Registration(statement.entry_id, index)

    async def submit_current(
        self,
        statement: SignedStatement,
        org: Organization,
        *,
        authorize: Authorize | None = None,
    ) -> Submission:
        """:meth:`submit_checked` for a statement that passed :meth:`check` against
        ``org``, provided that is still the organization's record and no new one is being
        registered; otherwise the statement waits for the change and is checked again
        (with ``authorize``, as :meth:`check_current`).

        The audit and passports judge each statement by the organization record in force
        at its place in the log, so a statement checked just before a change (a revoked
        certificate, a narrower policy) must not land after it unless the change admits
        it too. Another process's change is seen once this process folds it
        (:data:`REGISTRY_POLL`, or at once on a refusal that may depend on it).
        """
        while True:
            changing = self._changing.get(org.name)
            current = self.registry.get(org.name)
            if changing is None and current is not None and current.version == org.version:
                return self.submit_checked(statement)
            if self.withdraw is not None and not self.is_registered(statement.leaf_entry):
                # Accepted by this check (a copy of one registered already accepted nothing,
                # and the registered one's acceptance is not this call's to take back).
                self.withdraw(statement.leaf_entry)
            if changing is not None:
                await changing.wait()
            statement, org = await self.check_current(statement, authorize=authorize)

    async def register_checked(self, statement: SignedStatement) -> Registration:
        """Store and append a statement that passed :meth:`check`; returns once durable."""
        index = await self.submit_checked(statement).index
        return Registration(statement.entry_id, index)

    def submit_checked(self, statement: SignedStatement) -> Submission:
        """Queue a statement that passed :meth:`check` to be stored and appended.

        Registration carries on whether or not anyone still waits on its futures.
        """
        try:
            return self._registrar.put(
                StatementRecord(
                    entry_id=statement.leaf_entry,
                    body=statement.encoded,
                    issuer=statement.issuer,
                    subject=statement.subject,
                    content_type=str(statement.content_type),
                    registered_at=int(time.time()),
                )
            )
        except BaseException:
            self._not_stored([statement.leaf_entry])
            raise

    def _store_failed(self, entries: Sequence[bytes]) -> None:
        """A group's write failed. Its rows may be committed all the same (a commit whose
        answer was lost), under numbers this process never learnt: until a restart's
        recovery reads them, the watermark stays below anything stored from here on. And
        their acceptance is taken back (:meth:`_not_stored`)."""
        if not self.shared:
            self._outstanding.add(max(self._stored_max, self._sequenced) + 1)
        self._not_stored(entries)

    def _not_stored(self, entries: Sequence[bytes]) -> None:
        """Statements the check accepted that did not reach the store (back-pressure
        refused them, or their write failed): their acceptance is taken back, so that no
        later statement is judged with them (an assembly of the devices of a manifest that
        was never stored), unless another copy of one is still on its way to the store.
        Nothing is read: a statement stored before (registered again) loses its acceptance
        too, and one that rests on it is refused until it is indexed, rather than accepted
        on something that may not be stored."""
        if self.withdraw is None:
            return
        unstored = self._registrar.unstored
        for entry in entries:
            if entry not in unstored:
                self.withdraw(entry)

    def _mark_stored(self, seqs: Sequence[int]) -> None:
        """The rows of a group are committed: the watermark stays below them until they
        are in the log."""
        self._outstanding.update(s for s in seqs if s > self._sequenced)
        self._stored_max = max(self._stored_max, max(seqs, default=0))

    def _mark_sequenced(self, seqs: Sequence[int]) -> None:
        """Move the watermark up to the lowest row this process stored that is not in
        the log yet, or to the highest it stored. A number the store gave a row this
        process did not write (a row planted behind the service, or the one a planted row
        was replaced by) holds nothing up: recovery would refuse that row, and nothing of
        this process waits on it. A group that failed to append keeps the watermark below
        it, so that recovery appends it at the next start unless a retried registration
        does so first."""
        outstanding = self._outstanding
        outstanding.difference_update(seqs)
        below = min(outstanding) - 1 if outstanding else self._stored_max
        self._sequenced = max(self._sequenced, below)

    # -- organizations (admin) ----------------------------------------------------------------

    async def put_organization(
        self, record_json: bytes, *, expected_name: str | None = None
    ) -> Registration:
        """Register an organization record, signed by the service, then apply it."""
        org = parse_org_record(record_json, new=True)
        if expected_name is not None and org.name != expected_name:
            raise InvalidInput(
                f"the record is for {org.name!r}, not {expected_name!r}", code="org-record-invalid"
            )
        async with self._org_lock:
            return await self._put_organization(org, record_json)

    async def _put_organization(self, org: Organization, record_json: bytes) -> Registration:
        done = self._changing[org.name] = asyncio.Event()  # one change at a time: _org_lock
        try:
            return await self._put_record(
                ORG_RECORD_TYPE,
                f"org:{org.name}",
                record_json,
                check=lambda: self.registry.check(org),
                in_effect=lambda: self.registry.get(org.name) == org,
                apply=lambda: self.registry.apply(org),
                lost=_lost("org-version", f"version {org.version} of {org.name}"),
            )
        finally:
            del self._changing[org.name]
            done.set()

    async def put_user(self, user: User) -> Registration:
        """Register a user record (persona, organization, token hashes), signed by the
        service, then apply it. Raises ``user-version`` for a version that is not next."""
        record = user_record(user)
        parse_user_record(record)  # what the fold will read back
        async with self._org_lock:
            return await self._put_record(
                USER_RECORD_TYPE,
                f"user:{user.name}",
                record,
                check=lambda: self.users.check(user),
                in_effect=lambda: self.users.get(user.name) == user,
                apply=lambda: self.users.apply(user),
                lost=_lost("user-version", f"version {user.version} of user {user.name}"),
            )

    async def put_grant(self, grant: Grant) -> Registration:
        """Record that ``grant.to`` may (or, revoked, may no longer) read the statement
        ``grant.entry``: a log entry signed by the service. Granting twice records twice
        and changes nothing."""
        async with self._org_lock:
            return await self._put_record(
                GRANT_RECORD_TYPE,
                f"grant:{grant.entry.hex()}",
                grant_record(grant),
                check=lambda: None,
                in_effect=lambda: self.grants.allows(grant.entry, grant.to) != grant.revoked,
                apply=lambda: self.grants.apply(grant),
                lost=Conflict("the grant did not take effect", code="grant-lost"),
            )

    async def _put_record(
        self,
        content_type: str,
        subject: str,
        record_json: bytes,
        *,
        check: Callable[[], None],
        in_effect: Callable[[], bool],
        apply: Callable[[], None],
        lost: Error,
    ) -> Registration:
        """Sign an administrative record with the service key and register it; then it is
        in effect (with ``_org_lock`` held: check, log and apply do not interleave)."""
        if self.shared:
            await self._fold_orgs()
        check()
        statement = self.sign_record(content_type, subject, record_json)
        registration = await self.register_checked(statement)
        if self.shared:
            await self._fold_orgs()  # with any other process's records, in store order
            if not in_effect():
                raise lost
        else:
            apply()  # one process: nothing is folded after its start
        return registration

    def sign_record(self, content_type: str, subject: str, payload: bytes) -> SignedStatement:
        """A record of the service's own, signed with its receipt key (issued now): the
        administrative records above, and a layer's records (the provenance policy), which
        that layer checks and registers with :meth:`register_checked`."""
        data = sign1(
            self.signer,
            protected={
                Header.CONTENT_TYPE: content_type,
                Header.KID: key_id(self.signer.verifier()),
                Header.CWT_CLAIMS: {
                    Claim.ISS: self.issuer,
                    Claim.SUB: subject,
                    Claim.IAT: int(time.time()),
                },
            },
            payload=payload,
        )
        return parse_statement(data)

    def _verify_service_signature(self, statement: SignedStatement) -> None:
        verifier = self.keys.get(statement.kid or b"")
        if verifier is None:
            raise VerificationError(
                "a stored organization record is signed by an unknown service key "
                f"(kid {(statement.kid or b'').hex()[:16]})",
                code="org-record-untrusted",
                hint="If this host's receipt key is not the service's, copy keys/service.key "
                "and keys/retired/ from a host that serves this log (docs/keys.md); otherwise "
                "the record was not written by the service: do not trust the store.",
            )
        statement.message.verify(verifier)

    # -- reads --------------------------------------------------------------------------------

    def statement(self, entry_id: str) -> bytes:
        return self.statement_record(entry_id).body

    def statement_record(self, entry_id: str) -> StatementRecord:
        """The stored record of a statement by entry id (hex), its body the entry's and its
        columns the body's; ``entry-unknown`` if none, or if the row is one no server of
        this deployment stored and the log does not hold its entry (:meth:`_stranger`):
        only a statement registered, or on its way to the log, is read."""
        record = self._record(entry_id, checked=False)
        rows = self.statement_rows
        # The tag first (no body read): a row written behind the service is unknown.
        if rows is not None and not rows.valid(record) and not self._in_log(record):
            raise self._unknown()
        try:
            return checked_record(record)
        except Corruption:
            # Its tag verifies and its body is not the entry's (swapped before the row was
            # sequenced): no server stored that body either, unless the log holds the entry.
            if rows is not None and not self._in_log(record):
                raise self._unknown() from None
            raise

    def _in_log(self, record: StatementRecord) -> bool:
        """Whether the log (any size this process has seen) holds ``record``'s entry."""
        return bool(self.reader.indexes_of([leaf_hash(record.entry_id)]))

    def _stranger(self, record: StatementRecord) -> bool:
        """Whether ``record`` is a stored row no server of this deployment stored (its tag
        does not verify) and whose entry is not in the log: the sequencer refuses it, so it
        never will be. The body is not read: a row with a good tag is appended under its
        entry id whatever its body (the audit names a body that is not the entry's), so its
        receipt is pending until then. False without :attr:`statement_rows` (rows neither
        tagged nor checked)."""
        rows = self.statement_rows
        return rows is not None and not rows.valid(record) and not self._in_log(record)

    def _record(self, entry_id: str, *, checked: bool = True) -> StatementRecord:
        try:
            raw = bytes.fromhex(entry_id)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise NotFound("an entry id is 64 hex digits", code="entry-unknown")
        record = self.store.get_statement(raw)
        if record is None:
            raise self._unknown()
        return checked_record(record) if checked else record

    @staticmethod
    def _unknown() -> NotFound:
        """What a client is told of an entry id no server stored a statement under."""
        return NotFound("no statement with this entry id", code="entry-unknown")

    def receipt(self, entry_id: str) -> bytes:
        """A receipt for the entry against the latest checkpoint.

        :class:`NotFound` (code ``entry-pending``) while the statement is stored but not yet
        covered by a checkpoint of at least :data:`MIN_RECEIPT_TREE_SIZE` entries (RFC 9942
        has no receipt for a tree of one: its inclusion path would be empty; the log's first
        entry, a service record, gets one once a second entry follows). ``entry-unknown``,
        as for an entry never stored, for a row no server of this deployment stored whose
        entry is not in the log (:meth:`_stranger`): it never will be, and a client that
        sends its statement again has the server's row put in its place.
        """
        # Not the whole record: a receipt needs the entry id only, and proves nothing about
        # the columns (checked_record would hash and parse up to 64 MB per request).
        return self._receipt_of(self._record(entry_id, checked=False))

    def _receipt_of(self, record: StatementRecord, *, screened: bool = False) -> bytes:
        """``record``'s receipt; ``screened``: ``record`` is known to be a row a server
        stored, or in the log (:meth:`statement_record` gave it)."""
        checkpoint = self.reader.checkpoint()
        index = None
        if checkpoint is not None and checkpoint.size >= MIN_RECEIPT_TREE_SIZE:
            with contextlib.suppress(NotFound):
                index = self.reader.index_of(leaf_hash(record.entry_id), size=checkpoint.size)
        if index is None:
            # Not covered yet: only here is the row's tag checked and its body hashed.
            if not screened and self._stranger(record):
                raise self._unknown()
            raise NotFound("the entry is not in the log yet", code="entry-pending")
        assert checkpoint is not None
        proof = self.reader.inclusion_proof(index, size=checkpoint.size)
        return self.receipts.receipt(
            tree_size=checkpoint.size, leaf_index=index, path=proof.hashes, root=checkpoint.root
        )

    def receipt_for(self, registration: Registration) -> bytes:
        """A receipt for a registration that has completed, without looking it up.

        The same receipt as :meth:`receipt` gives, against the sequencer's latest committed
        checkpoint (held in memory; it covers the entry once the registration returned).
        Its index is known, so only the proof's tiles are needed, and those are in the
        reader's cache (the sequencer absorbed them, or the follower read them ahead in its
        worker thread): cheap enough for the event loop.
        """
        latest = self.sequencer.latest
        if latest is None or latest.size <= registration.index:
            latest = self.reader.checkpoint()
        return self.receipt_at(latest, bytes.fromhex(registration.entry_id), registration.index)

    def receipt_at(
        self, checkpoint: SignedCheckpoint | None, leaf_entry: bytes, index: int
    ) -> bytes:
        """A receipt for the entry at ``index`` against ``checkpoint`` (one the service's
        log signed), checking that the log holds ``leaf_entry`` there. ``entry-pending``
        while the checkpoint does not cover it, or is of a tree too small for a receipt."""
        if (
            checkpoint is None
            or index >= checkpoint.size
            or checkpoint.size < MIN_RECEIPT_TREE_SIZE
        ):
            raise NotFound("the entry is not in the log yet", code="entry-pending")
        proof = self.reader.inclusion_proof(index, size=checkpoint.size)
        if proof.leaf_hash != leaf_hash(leaf_entry):
            raise Corruption(f"the log's entry {index} is not the statement registered there")
        return self.receipts.receipt(
            tree_size=checkpoint.size, leaf_index=index, path=proof.hashes, root=checkpoint.root
        )

    def transparent_statement(self, entry_id: str, record: StatementRecord | None = None) -> bytes:
        """The statement with a fresh receipt; ``record``: its stored record, already read
        by :meth:`statement_record`."""
        record = self.statement_record(entry_id) if record is None else record
        return add_receipts(record.body, [self._receipt_of(record, screened=True)])

    def key_set(self) -> bytes:
        """The service keys as a COSE_KeySet: the current key first, then retired ones."""
        current = key_id(self.signer.verifier())
        ordered = [self.keys[current], *(v for k, v in self.keys.items() if k != current)]
        return encode_key_set(ordered)

    def configuration(self) -> dict[str, Any]:
        """``/.well-known/transparency-configuration``."""
        return {
            "issuer": self.issuer,
            "log_origin": self.sequencer.signer.origin,
            "registration_endpoint": "/entries",
            "jwks_uri": "/.well-known/scitt-keys",
            "supported_signature_algorithms": sorted(
                {a for o in self.registry.names() for a in self._algs(o)}
                or {"ES256", "ES384", "Ed25519"}
            ),
            "verifiable_data_structure": "RFC9162_SHA256",
            "max_statement_size": self.max_statement_size,
        }

    def _algs(self, name: str) -> tuple[str, ...]:
        org = self.registry.get(name)
        return () if org is None else org.policy.algorithms
