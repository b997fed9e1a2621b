"""The provenance ledger: the index kept up with the log, and the rules registration runs.

Two states, one model (:class:`~sealtrail.provenance.ProvenanceState`):

* the **index** (an :class:`~sealtrail.storage.IndexStore`, ``provenance.db``) holds the
  rows the log's entries give when applied in log order, and is only ever written by
  applying the next log entry;
* the **tentative** state, in memory, is the index plus the statements accepted since, in
  acceptance order: the writes of those statements over a copy of the index's rows.
  Registration rules check a statement against it and, if it passes, apply it there and
  queue it.

Acceptance order is the log's order (the registrar stores and appends in the order
statements pass their checks), so when the indexer meets the log's next entry at the head
of the queue, applying it to the index gives exactly the changes the tentative state
computed: the indexer reuses them rather than verifying twice. When the two orders part
(a statement accepted but never stored, say), the indexer computes the entry itself —
the log's order is the truth — and the tentative state is rebuilt from the index: the
copy takes in the index's changes since it was last brought up (never a read of every
row), and the statements still queued are applied again on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sealtrail.errors import (
    ConfigError,
    Conflict,
    Corruption,
    Error,
    InvalidInput,
    NotFound,
    VerificationError,
)
from sealtrail.keys import Verifier
from sealtrail.log import LogReader, cancel_and_wait
from sealtrail.merkle import leaf_hash
from sealtrail.scitt import (
    MAX_CLOCK_SKEW,
    Organization,
    PayloadRule,
    RuleContext,
    SignedStatement,
    TransparencyService,
    parse_statement,
)
from sealtrail.storage import MAX_READ_ENTRIES, Change, IndexedEntry, IndexStore, StatementRecord

from ._devicechain import DeviceChainValidator
from ._kinds import KINDS, Kind, Payload
from ._payloads import (
    Arrival,
    AttestationResult,
    Compliance,
    DeviceManifest,
    PolicyChange,
    parse_policy_change,
)
from ._state import (
    POLICY_KEY,
    RULES_VERSION,
    Fact,
    MemoryRows,
    Outcome,
    ProvenancePolicy,
    ProvenanceState,
    Refused,
    Value,
    policy_of,
)

__all__ = [
    "MAX_CHALLENGE_COUNT",
    "Issued",
    "ProvenanceLedger",
    "check_index_of_log",
    "check_index_rules",
    "fact_of",
    "indexed_entry",
    "load_rows",
    "open_nonce",
    "policy_fact",
    "screen",
    "seal_nonce",
    "service_signed",
]

log = logging.getLogger("sealtrail.provenance")

#: Log entries applied to the index per transaction, at most.
INDEX_STEP = 1024
#: Row changes per index transaction, about (a 10,000-device manifest gives 20,000).
INDEX_ROWS = 65_536
#: Most challenge nonces per request.
MAX_CHALLENGE_COUNT = 1024
#: A challenge nonce: 12 random bytes, its expiry (uint32 seconds), the first 8 bytes of
#: SHA-256 of its server's serial, and the first 8 bytes of an HMAC-SHA256 of those under
#: the challenge key: 32 bytes, 64 hex digits.
NONCE_BYTES = 32
_NONCE_RANDOM = 12
_NONCE_MAC = 8
_NONCE_CONTEXT = b"sealtrail challenge nonce v1\0"


def _serial_tag(server_serial: str) -> bytes:
    return hashlib.sha256(server_serial.encode()).digest()[:8]


def seal_nonce(key: bytes, server_serial: str, expires: int) -> str:
    """A fresh challenge nonce for ``server_serial``, valid until ``expires`` (see
    :data:`NONCE_BYTES` for its layout), as 64 hex digits."""
    body = secrets.token_bytes(_NONCE_RANDOM) + expires.to_bytes(4, "big")
    body += _serial_tag(server_serial)
    mac = hmac.new(key, _NONCE_CONTEXT + body, hashlib.sha256).digest()[:_NONCE_MAC]
    return (body + mac).hex()


def open_nonce(key: bytes, nonce: str) -> tuple[bytes, int] | None:
    """``(serial tag, expiry)`` of a nonce sealed with ``key``, or None for any other."""
    try:
        raw = bytes.fromhex(nonce)
    except ValueError:
        return None
    if len(raw) != NONCE_BYTES:
        return None
    body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
    want = hmac.new(key, _NONCE_CONTEXT + body, hashlib.sha256).digest()[:_NONCE_MAC]
    if not hmac.compare_digest(mac, want):
        return None
    expires = int.from_bytes(body[_NONCE_RANDOM : _NONCE_RANDOM + 4], "big")
    return body[_NONCE_RANDOM + 4 :], expires


#: Seconds between looks at the log's size while it is idle.
INDEX_POLL = 0.2

#: Longest a query waits for the index to reach the log's size (:meth:`ProvenanceLedger.synced`).
INDEX_WAIT = 5.0

#: Writes the tentative state holds over its copy of the index before they are taken into
#: the copy (see ProvenanceLedger._fold).
OVERLAY_MAX = 65_536


def fact_of(statement: SignedStatement, org: str) -> Fact | None:
    """The provenance fact a registered statement states, or None for another content type.

    Raises the payload parser's :class:`~sealtrail.errors.InvalidInput` for a payload that
    does not parse (registration refuses those, so a registered one is a finding).
    """
    kind = KINDS.get(str(statement.content_type))
    if kind is None:
        return None
    return Fact(statement.leaf_entry, org, statement.issued_at or 0, kind.parse(statement.payload))


def screen(
    statement: SignedStatement, org: Organization, kind: Kind, devices: DeviceChainValidator
) -> Payload:
    """The provenance checks a statement passes on its own and with its organization's
    record (registration and the audit both run them); returns its payload.

    Refuses a provenance statement in a hash envelope (``provenance-hash-envelope``), from
    an organization without the kind's role (``provenance-role``), without an issued-at
    time (``provenance-no-iat``), whose payload does not parse (the parser's codes), or a
    manifest with a device that does not chain to the organization's device anchors.
    """
    if statement.payload_hash_alg is not None:
        raise InvalidInput(
            f"a {kind.name} statement must carry its payload, not a hash envelope",
            code="provenance-hash-envelope",
        )
    if kind.role not in org.roles:
        raise VerificationError(
            f"{kind.name} statements are issued by organizations with the "
            f"{kind.role} role, and the issuer's organization does not have it",
            code="provenance-role",
        )
    if statement.issued_at is None:
        raise InvalidInput(
            f"a {kind.name} statement must say when it was issued (CWT iat)",
            code="provenance-no-iat",
        )
    payload = kind.parse(statement.payload)
    if isinstance(payload, DeviceManifest):
        # All of a manifest's chains at once: a large one is spread over the cores.
        devices.validate_many(
            [device.chain for device in payload.devices],
            org.device_anchors,
            where=lambda i: f"devices[{i}]",
        )
    return payload


@dataclass(frozen=True, slots=True)
class Issued:
    """Nonces issued for one server's attestation or arrival, valid until ``expires``
    (seconds since the epoch)."""

    server_serial: str
    nonces: tuple[str, ...]
    expires: int


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A statement the tentative state accepted, waiting for its turn in the log."""

    fact: Fact
    kind: str
    outcome: Outcome


class _IndexRows:
    """The index's rows, with one batch's writes held until the batch is committed.

    A write the tentative state computed is held as the JSON text it gave (see
    :meth:`put_text`) and decoded only if a later entry of the batch reads the row: a
    10,000-device manifest writes 20,000 rows that nothing in its batch reads again.
    """

    def __init__(self, index: IndexStore) -> None:
        self.index = index
        self.pending: dict[tuple[str, str], Value | str | None] = {}

    def get(self, table: str, key: str) -> Value | None:
        if (table, key) in self.pending:
            value = self.pending[(table, key)]
            if isinstance(value, str):
                value = self.pending[(table, key)] = json.loads(value)
            return value
        raw = self.index.row(table, key)
        return None if raw is None else json.loads(raw)

    def put(self, table: str, key: str, value: Value | None) -> None:
        self.pending[(table, key)] = value

    def put_text(self, table: str, key: str, text: str | None) -> None:
        """Set (or with None, delete) a row to the value of canonical JSON ``text``."""
        self.pending[(table, key)] = text


class _Overlay:
    """The tentative state's rows: the ledger's copy of the index's rows, under the writes
    of the statements accepted since. The copy itself is only changed by
    :meth:`ProvenanceLedger._rebuild` and :meth:`ProvenanceLedger._fold`, which then start
    a new overlay."""

    def __init__(self, base: MemoryRows) -> None:
        self.base = base
        self.writes: dict[tuple[str, str], Value | None] = {}

    def get(self, table: str, key: str) -> Value | None:
        try:
            return self.writes[(table, key)]
        except KeyError:
            return self.base.get(table, key)

    def put(self, table: str, key: str, value: Value | None) -> None:
        self.writes[(table, key)] = value


def indexed_entry(
    index: int, leaf: bytes, kind: str, fact: Fact | None, outcome: Outcome
) -> IndexedEntry:
    """The index's record of log entry ``index``: ``skipped`` when it states no provenance
    fact (with the code of why not, if any), else ``applied`` or ``refused`` with its code.
    The indexer writes it; the audit expects it."""
    verdict = "skipped" if fact is None else "refused" if outcome.code is not None else "applied"
    if len(leaf) != hashlib.sha256().digest_size:
        # Not a statement's id (a raw entry appended by other means): recorded under its
        # RFC 9162 leaf hash, so that one odd entry never stops the index.
        leaf = leaf_hash(leaf)
    return IndexedEntry(
        index=index,
        entry_id=leaf,
        kind=kind,
        org="" if fact is None else fact.org,
        outcome=verdict,
        code=outcome.code,
        subjects=outcome.subjects,
    )


def check_index_rules(index: IndexStore) -> None:
    """Raise :class:`ConfigError` unless ``index`` was built with this release's rules
    (:data:`RULES_VERSION`), or holds no entry yet (the first batch applied records them).

    ``index-rules-outdated``: built with older rules (or before versions were recorded);
    ``index-rules-newer``: built by a newer release. Either way its rows are not what these
    rules give the log: extended with this release's rows, the index would hold what no
    replay gives, and every difference would read as an edit behind the log.
    """
    recorded = index.rules_version()
    if recorded == RULES_VERSION or index.applied_size() == 0:
        return
    if recorded is not None and recorded > RULES_VERSION:
        raise ConfigError(
            f"the provenance index was built with provenance rules version {recorded}, "
            f"newer than this Sealtrail's ({RULES_VERSION})",
            hint="Run the Sealtrail release that built it (upgrade this one), or, to run "
            "this release, stop every server of the index and run `sealtrail index rebuild`.",
            code="index-rules-newer",
        )
    built = "of no recorded version" if recorded is None else f"version {recorded}"
    raise ConfigError(
        f"the provenance index was built with provenance rules {built}, and this Sealtrail "
        f"applies version {RULES_VERSION}",
        hint="Stop every server of this index, run `sealtrail index rebuild`, then start "
        "them again (docs/deploy.md, Upgrading).",
        code="index-rules-outdated",
    )


def check_index_of_log(index: IndexStore, reader: LogReader, *, rules: bool = True) -> None:
    """Raise :class:`Corruption` unless ``index`` could have been built from the log of
    ``reader``: no further than the log, and its last entry the log's entry at that
    position; then, with ``rules``, :class:`ConfigError` unless it was built with this
    release's rules (:func:`check_index_rules`).

    An index ahead of its log, or at odds with it, means the store was rolled back
    (restored from an older backup, say) or is not the index's log. Serving it would sign
    a second history under the log's key, at sizes clients have already seen. That comes
    first: an index of other rules is rebuilt, and a rebuild must not hide a rolled-back
    log.
    """
    applied = index.applied_size()  # first: a log only grows, so its size read next covers it
    size = reader.size()
    hint = (
        "Serve the store that holds the index's entries (a newer backup of it). If this "
        "store is the log to keep, `sealtrail index rebuild` rebuilds the index from it; "
        "clients that saw the longer log will then see a fork."
    )
    if applied > size:
        raise Corruption(
            f"the provenance index has applied {applied} entries, but the log holds {size}: "
            "the store was rolled back or is not the index's log",
            hint=hint,
            code="index-ahead-of-log",
        )
    if applied:
        recorded = index.entries(applied - 1, applied)
        entry = reader.entry(applied - 1)
        expected = entry if len(entry) == hashlib.sha256().digest_size else leaf_hash(entry)
        if not recorded or recorded[0].entry_id != expected:
            raise Corruption(
                f"the provenance index's entry {applied - 1} is not the log's: the store is "
                "not the index's log, or was rewritten",
                hint=hint,
                code="index-of-another-log",
            )
    if rules:
        check_index_rules(index)


def load_rows(index: IndexStore) -> MemoryRows:
    """Every current row of the index, in memory."""
    rows = MemoryRows()
    for table, key, value in index.dump_rows():
        rows.put(table, key, json.loads(value))
    return rows


#: The ``sub`` of a policy record.
POLICY_SUBJECT = "urn:sealtrail:provenance-policy"
#: Why a stored statement whose body is not the log's entry gives no fact.
ALTERED = "the stored statement does not hash to the log's entry"
#: Why a policy record the service did not sign changes nothing.
UNTRUSTED = "a policy record not signed by the service"


def service_signed(
    issuer: str, keys: Mapping[bytes, Verifier]
) -> Callable[[SignedStatement], bool]:
    """A ledger's ``service_record`` for a service known by its issuer and receipt keys
    (kid -> key, current and retired): a record it signed names it as issuer and verifies
    with the key its kid names."""

    def signed(statement: SignedStatement) -> bool:
        verifier = keys.get(statement.kid or b"")
        if statement.issuer != issuer or verifier is None:
            return False
        try:
            statement.message.verify(verifier)
        except Error:
            return False
        return True

    return signed


def policy_fact(statement: SignedStatement) -> Fact:
    """The fact a policy record states (the service's: no organization), as the index and
    the audit apply it. Raises the parser's error for a payload that is not one."""
    return Fact(
        statement.leaf_entry, "", statement.issued_at or 0, parse_policy_change(statement.payload)
    )


def _policy_reserved(statement: SignedStatement, org: Organization, context: RuleContext) -> None:
    raise VerificationError(
        "provenance policy records are the service's own: it records its configured "
        "policy itself (sealtrail.toml, [provenance])",
        code="policy-record-reserved",
    )


class ProvenanceLedger:
    """Keeps an index up with a log and gives the registration rules; see the module docs.

    ``statement`` reads a registered statement's record by leaf entry, ``org_of`` names the
    organization of an issuer (None for one the service does not know).
    """

    def __init__(
        self,
        index: IndexStore,
        *,
        statement: Callable[[bytes], StatementRecord | None],
        org_of: Callable[[str], str | None],
        policy: ProvenancePolicy | None = None,
        devices: DeviceChainValidator | None = None,
        shared: bool = False,
        content_types: Callable[[Sequence[bytes]], dict[bytes, str]] | None = None,
        challenge_key: bytes | None = None,
        service_record: Callable[[SignedStatement], bool] | None = None,
    ) -> None:
        """``shared``: other processes register into the same log and index (a PostgreSQL
        deployment). Entries they registered reach this process only through the log, so
        each one makes the tentative state rebuild from the index before the next check,
        and an index batch another process applied first is simply skipped.

        ``policy`` is the policy in force before the log holds a policy record (its
        ``require_challenge`` and ``challenge_ttl`` always: they are registration's alone).
        ``service_record`` says whether a statement is a record the service signed (its
        issuer and one of its receipt keys): only those can change the policy. Without
        it, no policy record is trusted (``policy-record-untrusted``)."""
        self.index = index
        self.shared = shared
        self.policy = policy or ProvenancePolicy()
        self.devices = devices or DeviceChainValidator()
        self._statement = statement
        #: entry id -> content type, for many at once (a store's ``content_types``): lets the
        #: indexer skip the statements that state no provenance fact without reading them.
        self._content_types = content_types
        self._types: dict[bytes, str] | None = None
        self._org_of = org_of
        self.service_record = service_record
        self._indexed = ProvenanceState(_IndexRows(index), policy=self.policy)
        #: A copy of the index's rows as of ``_base_size`` entries, and the tentative state
        #: over it (see _rebuild).
        self._base = MemoryRows()
        self._base_size = 0
        self._overlay, self.tentative = self._over_base()
        self._queue: deque[_Accepted] = deque()
        # Guards the queue and the index's commits against the indexer's worker thread.
        self._lock = threading.Lock()
        self._diverged = False
        #: The index's applied size that the tentative state reflects (shared stores: an
        #: index that moved past it holds another process's entries).
        self._applied_mark = 0
        #: Shared stores: the index's applied size up to which the entries another process
        #: applied have been taken in (see _taken_in).
        self._seen = 0
        #: Acceptances taken off the queue for an index batch not committed yet.
        self._popped: list[_Accepted] = []
        #: Changes each time the tentative state is rebuilt from the index, the one way it
        #: takes in entries another process registered (:class:`~sealtrail.scitt.History`).
        self.generation = 0
        self._reader: LogReader | None = None
        self._refreshing = asyncio.Lock()
        self._refreshed_size = -1
        self._task: asyncio.Task[None] | None = None
        self._challenge_key = challenge_key if challenge_key is not None else os.urandom(32)
        self._wakeup = asyncio.Event()
        #: Set, and replaced, after each round of the indexer.
        self._progress = asyncio.Event()

    # -- registration rules ---------------------------------------------------------------

    def rules(self) -> dict[str, PayloadRule]:
        """content type -> the rule the transparency service runs for it (a policy
        record is the service's own: submitted by anyone, it is refused)."""
        rules = {content_type: self._rule_for(kind) for content_type, kind in KINDS.items()}
        rules[PolicyChange.CONTENT_TYPE] = _policy_reserved
        return rules

    def policy_row(self) -> Value | None:
        """The index's ``policy`` row: the latest policy record applied (its version,
        settings, entry and ``iat``), or None before the log holds one (blocking)."""
        raw = self.index.row("policy", POLICY_KEY)
        return None if raw is None else json.loads(raw)

    def policy_in_force(self) -> ProvenancePolicy:
        """The policy of the latest policy record the index holds, over ``policy`` (the
        defaults before the log holds one; blocking)."""
        return policy_of(self.policy, self.policy_row())

    def _rule_for(self, kind: Kind) -> PayloadRule:
        def rule(statement: SignedStatement, org: Organization, context: RuleContext) -> None:
            payload = screen(statement, org, kind, self.devices)
            if context.is_registered(statement.leaf_entry):
                return  # registered before: the store keeps its one copy
            self._check_nonces(payload)
            self._check_moment(payload, statement.issued_at or 0)
            # Each nonce is used once: the model refuses a second use (in the tentative state
            # now, and in log order in the index, whichever process registered it).
            self.accept(
                Fact(statement.leaf_entry, org.name, statement.issued_at or 0, payload), context
            )

        return rule

    async def record_policy(self, desired: ProvenancePolicy, service: TransparencyService) -> bool:
        """Make ``desired``'s settings (its maximum attestation age and minimum security
        versions) the service's policy, if the policy in force differs: a policy record the
        service signs, in force for every statement accepted after it (it is accepted here
        as a statement is) and in the index from its place in the log on. Returns whether
        one was recorded, once the index holds it.

        Two processes of a shared store recording at once make two records of one version:
        the first in the log applies, the other is refused (``policy-version``), and a
        warning says so when they differ.
        """
        await self.refresh()
        row = await asyncio.to_thread(self.policy_row)
        in_force = policy_of(self.policy, row)
        settings = (desired.max_attestation_age, dict(desired.min_security_version))
        if (in_force.max_attestation_age, dict(in_force.min_security_version)) == settings:
            return False
        change = PolicyChange(
            version=1 if row is None else row["version"] + 1,
            max_attestation_age=desired.max_attestation_age,
            min_security_version=tuple(sorted(desired.min_security_version.items())),
        )
        statement = service.sign_record(change.CONTENT_TYPE, POLICY_SUBJECT, change.to_json())
        self.accept(Fact(statement.leaf_entry, "", statement.issued_at or 0, change), service)
        try:
            registration = await service.register_checked(statement)
        except BaseException:
            # Not in the log (yet: a record stored but not appended is appended by a later
            # start's recovery, in its place): registration goes on judging by the log's.
            self.withdraw(statement.leaf_entry)
            raise
        if not await self.synced(registration.index + 1):
            log.warning(
                "provenance policy version %d recorded (entry %d); the index has not applied "
                "it yet: it is in force there once it has",
                change.version,
                registration.index,
            )
            return True
        row = await asyncio.to_thread(self.policy_row)
        if row is None or row["entry"] != statement.leaf_entry.hex():
            log.warning(
                "provenance policy: another process recorded version %d first; the policy "
                "in force is that one (check that every server has the same [provenance])",
                change.version,
            )
            return False
        log.info(
            "provenance policy version %d recorded (entry %d)", change.version, registration.index
        )
        return True

    # -- challenges (fresh nonces) ----------------------------------------------------------

    def challenge(self, server_serial: str, count: int = 1, *, now: float | None = None) -> Issued:
        """Issue ``count`` fresh nonces for a known server's attestation or arrival.

        Raises :class:`NotFound` (``node-unknown``) for a server no assembly built and
        :class:`InvalidInput` for a count outside 1..:data:`MAX_CHALLENGE_COUNT`.

        Nothing is remembered: each nonce carries its expiry and its server and is sealed
        with the challenge key (:func:`seal_nonce`), so that every process holding the key
        recognizes it, after a restart too.
        """
        if not 1 <= count <= MAX_CHALLENGE_COUNT:
            raise InvalidInput(
                f"count must be 1..{MAX_CHALLENGE_COUNT}", code="challenge-bad-count"
            )
        if self._diverged:
            self._rebuild(None)
        node = self.tentative.rows.get("node", server_serial)
        if node is None or node["type"] != "server":
            raise NotFound(
                "no assembly record built a server with this serial", code="node-unknown"
            )
        moment = time.time() if now is None else now
        expires = int(moment + self.policy.challenge_ttl)
        nonces = [seal_nonce(self._challenge_key, server_serial, expires) for _ in range(count)]
        return Issued(server_serial, tuple(nonces), expires)

    def _check_nonces(self, payload: Payload, *, now: float | None = None) -> None:
        """With ``require_challenge``: every nonce of an attestation or arrival was issued by
        this service (any process holding the challenge key) for its server and has not
        expired; raises naming the first that was not."""
        if isinstance(payload, AttestationResult):
            nonces = [payload.nonce]
        elif isinstance(payload, Arrival):
            nonces = [c.nonce for c in payload.devices_challenged]
        else:
            return
        if not self.policy.require_challenge:
            return
        moment = time.time() if now is None else now
        for nonce in nonces:
            opened = open_nonce(self._challenge_key, nonce)
            if opened is None:
                raise VerificationError(
                    "a nonce this service did not issue",
                    code="nonce-not-issued",
                    hint="Ask POST /provenance/v1/challenges for fresh nonces, then attest.",
                )
            tag, expires = opened
            if tag != _serial_tag(payload.server_serial):
                raise VerificationError(
                    "a nonce issued for another server", code="nonce-other-server"
                )
            if expires <= moment:
                raise VerificationError(
                    f"a nonce older than {self.policy.challenge_ttl} s", code="nonce-expired"
                )

    @staticmethod
    def _check_moment(payload: Payload, iat: int, *, now: float | None = None) -> None:
        """A compliance statement is a decision taken now: its ``iat`` may be at most
        :data:`MAX_CLOCK_SKEW` seconds in the past (or, as for every statement, in the
        future), or a backdated one could pass an attestation the policy finds too old."""
        if not isinstance(payload, Compliance):
            return
        moment = time.time() if now is None else now
        if iat < moment - MAX_CLOCK_SKEW:
            raise InvalidInput(
                f"a compliance statement issued more than {MAX_CLOCK_SKEW} s ago",
                code="compliance-iat-past",
                hint="Sign compliance statements when you submit them, with the current time.",
            )

    def withdraw(self, entry_id: bytes) -> None:
        """Take back the acceptance of a statement that is not queued for the store as it
        was checked (it waits for a change of its organization's record, and is checked
        again after it): until then, other statements are judged without it, and checked
        again it is accepted once, not twice."""
        with self._lock:
            kept = deque(a for a in self._queue if a.fact.entry_id != entry_id)
            if len(kept) == len(self._queue):
                return
            self._queue = kept
            self._diverged = True  # the tentative state is built again before its next use

    def accept(self, fact: Fact, context: RuleContext) -> None:
        """Apply ``fact`` to the tentative state and queue it, or raise its refusal."""
        if self._diverged:
            self._rebuild(context)
        elif len(self._overlay.writes) > OVERLAY_MAX:
            self._fold(context)
        outcome = self.tentative.apply(fact)
        if not outcome.applied and self._queue and self._dropped(context):
            # An earlier acceptance never reached the store: judge again without it.
            self._rebuild(context)
            outcome = self.tentative.apply(fact)
        if not outcome.applied:
            raise Refused(outcome.message, code=outcome.code or "provenance-refused")
        with self._lock:
            self._queue.append(_Accepted(fact, type(fact.payload).KIND, outcome))

    def _dropped(self, context: RuleContext) -> bool:
        with self._lock:
            queued = [a.fact.entry_id for a in self._queue]
        return not all(context.is_registered(e) for e in queued)

    def _rebuild(self, context: RuleContext | None) -> None:
        """The tentative state again: the index's rows, then the queue still to come.

        The ledger's copy of the index's rows is brought up to date with the changes of
        the entries applied since it was last (:meth:`IndexStore.changes`), so that the
        cost is that of what changed, not of the whole index: on a shared store every
        entry another process registered leads here before the next check.
        """
        with self._lock:
            mark = self._sync_base()
            overlay, state = self._over_base()
            self._applied_mark = mark
            kept: deque[_Accepted] = deque()
            for accepted in self._queue:
                if context is not None and not context.is_registered(accepted.fact.entry_id):
                    continue
                kept.append(_Accepted(accepted.fact, accepted.kind, state.apply(accepted.fact)))
            self._queue = kept
            self._overlay, self.tentative = overlay, state
            self._diverged = False
            self.generation += 1
        log.debug("provenance: tentative state rebuilt from the index (%d entries)", mark)

    def _fold(self, context: RuleContext) -> None:
        """Take the tentative state's writes into the copy of the index's rows, so that
        they do not pile up. Once every accepted statement is indexed (nothing queued, no
        other process writing), the copy and the writes over it are the index: they are
        merged in memory. Otherwise this waits for such a moment, up to 8 times
        :data:`OVERLAY_MAX` writes, and then rebuilds from the index's changes."""
        with self._lock:
            if not self._queue and not self.shared:
                for (table, key), value in self._overlay.writes.items():
                    self._base.put(table, key, value)
                self._base_size = self._applied_mark = self.index.applied_size()
                self._overlay, self.tentative = self._over_base()
                return
            if len(self._overlay.writes) <= 8 * OVERLAY_MAX:
                return
        self._rebuild(context)

    def _over_base(self) -> tuple[_Overlay, ProvenanceState]:
        """A tentative state with no writes yet over the copy of the index's rows."""
        overlay = _Overlay(self._base)
        return overlay, ProvenanceState(overlay, policy=self.policy)

    def _sync_base(self) -> int:
        """Bring the copy of the index's rows up to the index; its applied size. Holds
        ``_lock`` (the caller does)."""
        size = self.index.applied_size()
        if size < self._base_size:  # the index was reset (and is being rebuilt)
            self._base.tables.clear()
            self._base_size = 0
        while self._base_size < size:
            stop = min(size, self._base_size + MAX_READ_ENTRIES)
            for _, _, table, key, value in self.index.changes(self._base_size, stop):
                self._base.put(table, key, None if value is None else json.loads(value))
            self._base_size = stop
        return size

    # -- the indexer ----------------------------------------------------------------------

    def catch_up(self, reader: LogReader, *, limit: int | None = None) -> int:
        """Apply the log's entries the index lacks, in order (blocking). Returns how many."""
        done = 0
        size = reader.size()
        while (start := self.index.applied_size()) < size:
            stop = min(size, start + INDEX_STEP)
            if limit is not None:
                stop = min(stop, start + limit - done)
            if stop <= start:
                break
            if self.shared:
                # Before this process's next batch: what another process applied first.
                self._taken_in(start)
            try:
                self.apply_entries(start, reader.entries(start, stop))
            except Conflict as exc:
                if not self.shared or exc.code != "index-conflict":
                    raise
                self._diverged = True  # another process indexed them first: read on
                continue
            done += stop - start
            with self._lock:
                self._applied_mark = max(self._applied_mark, stop)
                self._seen = max(self._seen, stop)
        if self.shared:
            # Entries another process indexed (this one found nothing left to do, say).
            self._taken_in(self.index.applied_size())
        return done

    def _taken_in(self, size: int) -> None:
        """A shared store whose index has applied ``size`` entries: take in those another
        process applied since this one last looked (blocking; the indexer's thread).

        This process's own statements among them leave the queue: indexed already, they
        are neither to be applied again over the index in a rebuild nor waited for. And
        unless the tentative state reflects them already, it is rebuilt before the next
        check, and no outcome queued after them, computed without them, is reused by the
        index: the index's next entry, from this process, may follow another process's
        entries in the log that its check never saw.
        """
        with self._lock:
            seen, queued = self._seen, bool(self._queue)
        if size <= seen:
            return
        taken: set[bytes] = set()
        if queued:  # which entries they were matters only to the queue
            for first in range(seen, size, MAX_READ_ENTRIES):
                stop = min(size, first + MAX_READ_ENTRIES)
                taken.update(entry.entry_id for entry in self.index.entries(first, stop))
        with self._lock:
            if taken:
                self._queue = deque(a for a in self._queue if a.fact.entry_id not in taken)
            self._seen = max(self._seen, size)
            if size > self._applied_mark:
                self._diverged = True

    async def refresh(self) -> None:
        """A shared store: bring the index up to the log as it is now, and the tentative
        state up to the index — what another process registered a moment ago, before a
        refusal that rests on the state is final. Only when the log grew since the last
        refresh (one checkpoint read otherwise); callers wait for the one running."""
        reader = self._reader
        if reader is None:
            return
        async with self._refreshing:
            size = await asyncio.to_thread(reader.size)
            if size == self._refreshed_size and not self._diverged:
                return
            await asyncio.to_thread(self.catch_up, reader)
            if self._diverged:
                self._rebuild(None)
            self._refreshed_size = size

    def apply_entries(self, start: int, leaves: Sequence[bytes]) -> None:
        """Apply log entries ``start, start + 1, …`` (their leaf entries) to the index.

        One index transaction per :data:`INDEX_ROWS` changes or so: a batch of large
        manifests is committed in several steps, each whole.
        """
        rows = self._indexed.rows
        assert isinstance(rows, _IndexRows)
        types = None if self._content_types is None else self._content_types(leaves)
        with self._lock:
            self._types = types
            batch: list[tuple[IndexedEntry, Sequence[Change]]] = []
            changes = 0
            # This process's acceptances taken off the queue for the batch not committed
            # yet: put back if it fails (another process's indexer applied some of the
            # entries first, say), or they would be lost from the tentative state.
            self._popped = []
            try:
                for offset, leaf in enumerate(leaves):
                    entry = self._index_one(start + offset, leaf)
                    batch.append(entry)
                    changes += len(entry[1])
                    if changes >= INDEX_ROWS:
                        self.index.apply(batch, rules_version=RULES_VERSION)
                        self._popped.clear()
                        rows.pending.clear()
                        batch, changes = [], 0
                if batch:
                    # The index records the rules of its first batch and refuses a batch
                    # of other rules (index-rules-mismatch): one index, one version.
                    self.index.apply(batch, rules_version=RULES_VERSION)
                self._popped.clear()
            except BaseException:
                self._queue.extendleft(reversed(self._popped))
                raise
            finally:
                self._popped = []
                rows.pending.clear()
                self._types = None

    def _index_one(self, index: int, leaf: bytes) -> tuple[IndexedEntry, Sequence[Change]]:
        fact: Fact | None
        if self._queue and self._queue[0].fact.entry_id == leaf and not self._diverged:
            accepted = self._queue.popleft()
            self._popped.append(accepted)
            outcome, fact, kind = accepted.outcome, accepted.fact, accepted.kind
            # The tentative state applied it on top of the same rows: write what it computed.
            rows = self._indexed.rows
            assert isinstance(rows, _IndexRows)
            for table, key, value in outcome.changes:
                rows.put_text(table, key, value)
        else:
            ours = bool(self._queue) and self._queue[0].fact.entry_id == leaf
            if ours:
                # Ours, but the tentative state computed it on rows that are no longer the
                # log's (a provenance entry before it was missing there): judged again.
                self._popped.append(self._queue.popleft())
            fact, kind, outcome = self._judge(leaf)
            if fact is not None and not ours:
                # A provenance fact the tentative state has not seen: the log's order is the
                # truth, so the tentative state is rebuilt from the index (also with nothing
                # queued: its copy of the index's rows lacks this entry's changes, and
                # _fold would otherwise take that copy for the index).
                self._diverged = True
        return (
            indexed_entry(index, leaf, kind, fact, outcome),
            outcome.changes,
        )

    def _judge(self, leaf: bytes) -> tuple[Fact | None, str, Outcome]:  # noqa: PLR0911
        """Apply one log entry the tentative state did not see (after a restart, say)."""
        if self._types is not None:
            content_type = self._types.get(leaf)
            if content_type is None:
                return None, "", Outcome(code="index-statement-missing", message="not stored")
            if content_type not in KINDS and content_type != PolicyChange.CONTENT_TYPE:
                return None, "", Outcome()
        record = self._statement(leaf)
        if record is None:
            return None, "", Outcome(code="index-statement-missing", message="not stored")
        if hashlib.sha256(record.body).digest() != leaf:
            # A body put in the place of the registered one: its facts are not the log's.
            return None, "", Outcome(code="index-statement-altered", message=ALTERED)
        if record.content_type == PolicyChange.CONTENT_TYPE:
            return self._judge_policy(record)
        kind = KINDS.get(record.content_type)
        if kind is None:
            return None, "", Outcome()
        try:
            statement = parse_statement(record.body, max_size=len(record.body))
            org = self._org_of(statement.issuer)
            fact = fact_of(statement, org or "")
        except Error as exc:
            return None, kind.name, Outcome(code=exc.code, message=str(exc))
        assert fact is not None
        return fact, kind.name, self._indexed.apply(fact)

    def _judge_policy(self, record: StatementRecord) -> tuple[Fact | None, str, Outcome]:
        """A policy record, applied only when the service signed it."""
        kind = PolicyChange.KIND
        try:
            statement = parse_statement(record.body, max_size=len(record.body))
            if self.service_record is None or not self.service_record(statement):
                return None, kind, Outcome(code="policy-record-untrusted", message=UNTRUSTED)
            fact = policy_fact(statement)
        except Error as exc:
            return None, kind, Outcome(code=exc.code, message=str(exc))
        return fact, kind, self._indexed.apply(fact)

    async def start(self, reader: LogReader) -> None:
        """Bring the index up to the log, seed the tentative state, and follow the log.
        (The service checks the index against the log first: :func:`check_index_of_log`.)

        Refuses an index built with other rules (:func:`check_index_rules`) before
        applying anything to it: ``sealtrail index rebuild`` builds it with these."""
        await asyncio.to_thread(check_index_rules, self.index)
        self._reader = reader
        await asyncio.to_thread(self.catch_up, reader)
        # The size first: the rows may be read a few entries later, and replaying changes
        # the copy already holds leaves it as it is (each row ends at its last change).
        self._applied_mark = self._base_size = await asyncio.to_thread(self.index.applied_size)
        self._seen = self._applied_mark
        self._base = await asyncio.to_thread(load_rows, self.index)
        self._overlay, self.tentative = self._over_base()
        self._task = asyncio.create_task(self._follow(reader), name="sealtrail-indexer")

    def poke(self) -> None:
        """The log grew: index it soon."""
        self._wakeup.set()

    async def synced(self, size: int | None = None, *, timeout: float | None = None) -> bool:
        """Wait until the index holds the log's first ``size`` entries (all the log's
        signed checkpoint covers, when None), at most ``timeout`` seconds (:data:`INDEX_WAIT`
        when None): a client holding a receipt sees its entry in the views. Whether it
        does; the views say the size they reflect either way.
        """
        reader = self._reader
        if reader is None:  # not following a log (not started)
            return size is None or await asyncio.to_thread(self.index.applied_size) >= size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (INDEX_WAIT if timeout is None else timeout)
        covered = await asyncio.to_thread(reader.size)
        target = covered if size is None else min(size, covered)
        while await asyncio.to_thread(self.index.applied_size) < target:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._task is None:
                return False
            progress = self._progress
            self.poke()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await progress.wait()
        return True

    async def _follow(self, reader: LogReader) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INDEX_POLL):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await asyncio.to_thread(self.catch_up, reader)
            except Error as exc:
                log.warning("provenance index: %s (%s); retrying", exc, exc.code)
                await asyncio.sleep(1.0)
            finally:
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()

    async def close(self, reader: LogReader | None = None) -> None:
        """Stop following; with ``reader``, index what the log holds first."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if reader is not None:
            with contextlib.suppress(Error):
                await asyncio.to_thread(self.catch_up, reader)
