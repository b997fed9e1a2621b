"""The transparency service: registration of signed statements and receipts.

Life of a registration (``TransparencyService.register``):

1. **Check** (:meth:`TransparencyService.check`): the statement profile, the issuer's
   organization, its policy, the signing key (a certificate chain validated to the
   organization's anchors, or a registered ``kid``), and the signature. Nothing is written
   for a statement that fails any of it.
2. **Store**: the statement's bytes are committed to the statement store, grouped with
   concurrent registrations into one transaction. *If we crash after this, recovery
   re-appends every stored statement above the sequenced watermark; appending a leaf twice
   returns its first index, so nothing is lost and nothing gets two indexes.*
3. **Append**: its leaf entry, SHA-256 of the statement, goes to the sequencer, whose
   future resolves once a checkpoint covering it is durable.
4. **Receipt**: on request, against the latest checkpoint (refreshable at any time).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm

from sealtrail.errors import Error, InvalidInput, NotFound, StorageError, VerificationError
from sealtrail.keys import Signer, Verifier, verifier_for
from sealtrail.log import LogReader, Sequencer
from sealtrail.merkle import leaf_hash
from sealtrail.storage import StatementRecord, StatementStore

from ._chain import ChainValidator
from ._cose import Claim, Header, sign1
from ._cosekey import encode_key_set, key_id
from ._receipt import ReceiptSigner, add_receipts
from ._registry import ORG_RECORD_TYPE, Organization, Registry, parse_org_record
from ._statement import MAX_STATEMENT_SIZE, SignedStatement, parse_statement

__all__ = ["Registration", "TransparencyService"]

log = logging.getLogger("sealtrail.scitt")

#: Statements written to the store in one transaction, at most.
STORE_BATCH = 4096
#: Statements re-appended per step during recovery.
RECOVERY_STEP = 4096


@dataclass(frozen=True)
class Registration:
    """A registered statement: its entry id and its index in the log."""

    entry_id: str
    index: int


class _StatementWriter:
    """Groups concurrent statement writes into one store transaction each."""

    def __init__(self, store: StatementStore) -> None:
        self.store = store
        self._queue: list[tuple[StatementRecord, asyncio.Future[int]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sealtrail-statement-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, future in self._queue:
            if not future.done():
                future.cancel()

    def put(self, record: StatementRecord) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((record, future))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:STORE_BATCH], self._queue[STORE_BATCH:]
                try:
                    seqs = await asyncio.to_thread(self.store.put_statements, [r for r, _ in batch])
                except Exception as exc:
                    error = (
                        exc
                        if isinstance(exc, Error)
                        else StorageError(f"statement store failed: {type(exc).__name__}")
                    )
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), seq in zip(batch, seqs, strict=True):
                    if not future.done():
                        future.set_result(seq)


class TransparencyService:
    """Registers signed statements into a log and issues receipts for them."""

    def __init__(
        self,
        *,
        store: StatementStore,
        sequencer: Sequencer,
        signer: Signer,
        issuer: str,
        retired: Sequence[Verifier] = (),
        validator: ChainValidator | None = None,
        max_statement_size: int = MAX_STATEMENT_SIZE,
    ) -> None:
        self.store = store
        self.sequencer = sequencer
        self.reader: LogReader = sequencer.reader
        self.signer = signer
        self.issuer = issuer
        self.receipts = ReceiptSigner(signer, issuer=issuer, subject=sequencer.signer.origin)
        self.registry = Registry()
        self.validator = validator or ChainValidator()
        self.max_statement_size = max_statement_size
        current = signer.verifier()
        self.keys: dict[bytes, Verifier] = {key_id(v): v for v in retired}
        self.keys[key_id(current)] = current
        self._writer = _StatementWriter(store)
        self._done: set[int] = set()
        self._sequenced = 0
        # Organization changes one at a time: check, log and apply must not interleave, or
        # two records of the same version could both reach the log.
        self._org_lock = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the registry from the stored records and re-append unsequenced statements."""
        records = await asyncio.to_thread(self.store.statements_of_type, ORG_RECORD_TYPE)
        for record in records:
            statement = parse_statement(record.body)
            if statement.issuer != self.issuer:
                continue  # only the service's own records count
            self._verify_service_signature(statement)
            self.registry.apply(parse_org_record(statement.payload))
        self._writer.start()
        self._sequenced = await asyncio.to_thread(self.store.read_sequenced)
        await self._recover()

    async def close(self) -> None:
        await self._writer.close()
        with contextlib.suppress(Error):
            await asyncio.to_thread(self.store.write_sequenced, self._sequenced)

    async def _recover(self) -> None:
        """Every stored statement's leaf is in the log: append those above the watermark."""
        while True:
            rows = await asyncio.to_thread(
                self.store.statements_since, self._sequenced, limit=RECOVERY_STEP
            )
            if not rows:
                return
            await self.sequencer.add_many([r.entry_id for _, r in rows])
            self._sequenced = rows[-1][0]
            await asyncio.to_thread(self.store.write_sequenced, self._sequenced)
            log.info("recovered %d stored statements into the log", len(rows))

    # -- registration -------------------------------------------------------------------------

    def check(
        self, data: bytes, *, now: float | None = None
    ) -> tuple[SignedStatement, Organization]:
        """Every registration check, no side effects. Raises an :class:`Error` with a code."""
        statement = parse_statement(data, max_size=self.max_statement_size)
        org = self.registry.for_issuer(statement.issuer)
        content_type = str(statement.content_type)
        org.policy.check(
            content_type=content_type,
            subject=statement.subject,
            alg=statement.alg,
            size=len(data),
        )
        verifier = self._issuer_key(statement, org, now=now)
        statement.message.verify(verifier)
        return statement, org

    def _issuer_key(
        self, statement: SignedStatement, org: Organization, *, now: float | None
    ) -> Verifier:
        if statement.x5chain:
            when = dt.datetime.fromtimestamp(now if now is not None else time.time(), dt.UTC)
            leaf = self.validator.validate(
                statement.x5chain, org.anchors, now=when, revoked=org.revoked
            )
            try:
                chain_key = verifier_for(leaf.public_key(), statement.alg)
            except (ValueError, UnsupportedAlgorithm):
                raise VerificationError(
                    "the signing certificate's key is unusable", code="chain-invalid"
                ) from None
            if statement.kid is not None and statement.kid != key_id(chain_key):
                raise VerificationError(
                    "kid does not name the x5chain's key", code="statement-bad-kid"
                )
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

    async def register(self, data: bytes) -> Registration:
        """Check, store and append one statement; returns once its checkpoint is durable."""
        statement, _ = self.check(data)
        return await self.register_checked(statement)

    async def register_checked(self, statement: SignedStatement) -> Registration:
        record = StatementRecord(
            entry_id=statement.leaf_entry,
            body=statement.encoded,
            issuer=statement.issuer,
            subject=statement.subject,
            content_type=str(statement.content_type),
            registered_at=int(time.time()),
        )
        seq = await self._writer.put(record)
        # Durable in the statement store from here (see the module docstring).
        index = await self.sequencer.add(statement.leaf_entry)
        self._mark_sequenced(seq)
        return Registration(statement.entry_id, index)

    def _mark_sequenced(self, seq: int) -> None:
        self._done.add(seq)
        while self._sequenced + 1 in self._done:
            self._sequenced += 1
            self._done.discard(self._sequenced)

    # -- organizations (admin) ----------------------------------------------------------------

    async def put_organization(
        self, record_json: bytes, *, expected_name: str | None = None
    ) -> Registration:
        """Register an organization record, signed by the service, then apply it."""
        org = parse_org_record(record_json)
        if expected_name is not None and org.name != expected_name:
            raise InvalidInput(
                f"the record is for {org.name!r}, not {expected_name!r}", code="org-record-invalid"
            )
        async with self._org_lock:
            return await self._put_organization(org, record_json)

    async def _put_organization(self, org: Organization, record_json: bytes) -> Registration:
        self.registry.check(org)
        data = sign1(
            self.signer,
            protected={
                Header.CONTENT_TYPE: ORG_RECORD_TYPE,
                Header.KID: key_id(self.signer.verifier()),
                Header.CWT_CLAIMS: {
                    Claim.ISS: self.issuer,
                    Claim.SUB: f"org:{org.name}",
                    Claim.IAT: int(time.time()),
                },
            },
            payload=record_json,
        )
        statement = parse_statement(data)
        registration = await self.register_checked(statement)
        self.registry.apply(org)
        return registration

    def _verify_service_signature(self, statement: SignedStatement) -> None:
        verifier = self.keys.get(statement.kid or b"")
        if verifier is None:
            raise VerificationError(
                "a stored organization record is signed by an unknown service key",
                code="org-record-untrusted",
            )
        statement.message.verify(verifier)

    # -- reads --------------------------------------------------------------------------------

    def statement(self, entry_id: str) -> bytes:
        return self._record(entry_id).body

    def _record(self, entry_id: str) -> StatementRecord:
        try:
            raw = bytes.fromhex(entry_id)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise NotFound("an entry id is 64 hex digits", code="entry-unknown")
        record = self.store.get_statement(raw)
        if record is None:
            raise NotFound("no statement with this entry id", code="entry-unknown")
        return record

    def receipt(self, entry_id: str) -> bytes:
        """A receipt for the entry against the latest checkpoint.

        :class:`NotFound` (code ``entry-pending``) while the statement is stored but not yet
        covered by a checkpoint.
        """
        record = self._record(entry_id)
        checkpoint = self.reader.checkpoint()
        if checkpoint is None:
            raise NotFound("the entry is not in the log yet", code="entry-pending")
        try:
            index = self.reader.index_of(leaf_hash(record.entry_id), size=checkpoint.size)
        except NotFound:
            raise NotFound("the entry is not in the log yet", code="entry-pending") from None
        proof = self.reader.inclusion_proof(index, size=checkpoint.size)
        return self.receipts.receipt(
            tree_size=checkpoint.size, leaf_index=index, path=proof.hashes, root=checkpoint.root
        )

    def transparent_statement(self, entry_id: str) -> bytes:
        return add_receipts(self.statement(entry_id), [self.receipt(entry_id)])

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
