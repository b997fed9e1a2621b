"""Passports: one self-contained file about a server (or any node) or a device, verified
offline.

A passport (docs/passports.md, media type :data:`PASSPORT_TYPE`) holds, for one subject:

* the log's origin, verifier key and one signed checkpoint;
* the transparency service's issuer and COSE key set;
* the service-signed organization records of every organization that issued one of its
  statements (their anchors and roles), each with its receipt;
* every applied provenance statement in the subject's *scope* (below), each with its
  receipt — all receipts against that one checkpoint;
* a **seal**: a COSE_Sign1 by the service key over the SHA-256 of everything else, by which
  the service vouches that these are all the scope's applied statements up to the
  checkpoint.

:func:`build_passport` writes one from the index and the log; :func:`verify_passport`
checks one with nothing else (no network) and replays its facts to reconstruct the
journey. Every failure is a :class:`~sealtrail.errors.VerificationError` whose code names
what failed.

**Scope.** A passport cannot hold the whole log, so it holds the facts about the subject's
*scope*, derived from its own assembly records (the same rule on both sides):

* *up*: every node the subject was ever installed in, and upwards; a server among them
  counts as a root below;
* *down*: the subject (or the servers above a device or a blade) and everything ever
  installed in it, downwards; the *devices* are those installed in a *down* node, and the
  subject device;
* the shipments whose shipped record carries a scope node; the devices an arrival or an
  attestation of a scope server names; the measurements its evidence carries.

A statement is *relevant* when it touches the scope (a manifest holding a scope or named
device, a release matching a measurement, an assembly of or into a scope node or device, a
custody record of a scope shipment, an arrival, attestation or compliance change of a scope
server). A passport holds relevant statements only: anything else is foreign. The replay
applies them in log order through a fresh :class:`ProvenanceState`; a node or a device
outside the scope that one of them names (the other servers of a rack, another server in
the same shipment) is out of scope: it is given a placeholder row so the rule can run, and
reported, never judged. Everything in the scope is judged by the real rules.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from sealtrail.errors import (
    Corruption,
    Error,
    InvalidInput,
    InvalidSignature,
    MalformedNote,
    NotFound,
    TooLarge,
    VerificationError,
)
from sealtrail.keys import Signer, Verifier
from sealtrail.log import LogReader, SignedCheckpoint, verify_checkpoint
from sealtrail.merkle import leaf_hash
from sealtrail.note import MAX_NOTE_SIZE, NoteVerifier
from sealtrail.scitt import (
    MAX_STATEMENT_SIZE,
    ORG_RECORD_TYPE,
    ChainValidator,
    Header,
    Organization,
    ReceiptInfo,
    ReceiptSigner,
    Registry,
    SignedStatement,
    add_receipts,
    decode_key_set,
    decode_sign1,
    issuer_key,
    key_id,
    parse_org_record,
    parse_statement,
    sign1,
    split_transparent,
    verify_receipt,
)
from sealtrail.storage import IndexedEntry

from ._devicechain import DeviceChainValidator
from ._kinds import KINDS, Payload
from ._ledger import check_index_rules, screen
from ._payloads import (
    Arrival,
    Assembly,
    AttestationResult,
    ChildRef,
    Compliance,
    Custody,
    CustodyEvent,
    DeviceManifest,
    FirmwareRelease,
    Node,
    NodeType,
    PolicyChange,
)
from ._state import Fact, MemoryRows, ProvenancePolicy, ProvenanceState, child_key
from ._strict import canonical
from ._views import MAX_TIMELINE, ProvenanceViews

__all__ = [
    "MAX_PASSPORT_SIZE",
    "MAX_PASSPORT_STATEMENTS",
    "PASSPORT_TYPE",
    "PassportReport",
    "PassportSubject",
    "Stage",
    "build_passport",
    "verify_passport",
]

#: The passport's media type; also its ``type`` field (a new format gets a new ``vN``).
PASSPORT_TYPE = "application/vnd.sealtrail.passport.v1+json"
#: Largest passport read or written, in bytes.
MAX_PASSPORT_SIZE = 64 * 1024 * 1024
#: Most provenance statements in one passport.
MAX_PASSPORT_STATEMENTS = 4096
#: Most organization records in one passport.
MAX_PASSPORT_ORG_RECORDS = 1024
#: Largest transparent statement (a statement and its one receipt), in bytes.
MAX_TRANSPARENT_SIZE = MAX_STATEMENT_SIZE + 64 * 1024
#: Largest service key set, in bytes (64 keys, ML-DSA-87 ones included).
MAX_KEY_SET_SIZE = 256 * 1024
#: Largest seal (a COSE_Sign1 with a detached payload), in bytes.
MAX_SEAL_SIZE = 16 * 1024
#: Longest origin, issuer, serial or verifier key, in characters.
MAX_NAME = 1024
#: Log indexes are below 2^63 (merkle.MAX_TREE_SIZE).
MAX_INDEX = 2**63 - 1
#: Rounds of widening the scope while a passport is built (each adds what it found).
MAX_SCOPE_ROUNDS = 64

#: The replay's policy. The service's own (minimum security versions, maximum attestation
#: age) is in the log's policy records, which a passport does not carry: the replay only
#: applies rules that hold under any policy (a stricter policy can only have refused more).
REPLAY_POLICY = ProvenancePolicy(min_security_version={}, max_attestation_age=2**62)

# CWT claim keys (RFC 8392).
_ISS, _SUB, _IAT = 1, 2, 6
_FIELDS = frozenset({"type", "subject", "log", "service", "organizations", "statements", "seal"})
_LOG_FIELDS = frozenset({"origin", "verifier_key", "checkpoint"})
_SERVICE_FIELDS = frozenset({"issuer", "keys"})
_ITEM_FIELDS = frozenset({"index", "statement"})
_HEX64 = frozenset("0123456789abcdef")
#: The journey stage of each statement kind.
_STAGES = {
    DeviceManifest: "factory",
    FirmwareRelease: "firmware",
    Assembly: "assembly",
    Custody: "transit",
    Arrival: "arrival",
    AttestationResult: "attestation",
    Compliance: "compliance",
}


def _fail(code: str, message: str, *, hint: str | None = None) -> NoReturn:
    raise VerificationError(
        message,
        code=code,
        hint=hint or "Do not trust this passport: it is not what the log and the service say.",
    )


# -- the subject and its scope ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PassportSubject:
    """What a passport is about: a node (``serial``) or a device (``device_id``)."""

    kind: Literal["node", "device"]
    name: str

    @classmethod
    def node(cls, serial: str) -> PassportSubject:
        if not isinstance(serial, str) or not 0 < len(serial) <= MAX_NAME:
            raise InvalidInput("a serial is 1..1024 characters", code="serial-invalid")
        if not serial.isprintable():  # as every serial a statement gives (and no surrogate)
            raise InvalidInput("a serial holds printable characters only", code="serial-invalid")
        return cls("node", serial)

    @classmethod
    def device(cls, device_id: str) -> PassportSubject:
        if not isinstance(device_id, str) or len(device_id) != 64 or set(device_id) - _HEX64:
            raise InvalidInput("a device id is 64 lowercase hex digits", code="device-id-invalid")
        return cls("device", device_id)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def _doc(self) -> dict[str, str]:
        return {"serial": self.name} if self.kind == "node" else {"device_id": self.name}


@dataclass
class _Scope:
    """The nodes, devices, shipments and measurements a passport's facts are about."""

    subject: PassportSubject
    up: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)
    shipments: set[str] = field(default_factory=set)
    measured: set[tuple[str, str, str]] = field(default_factory=set)
    types: dict[str, str] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)

    @classmethod
    def derive(cls, subject: PassportSubject, payloads: Sequence[Payload]) -> _Scope:
        """The scope the facts ``payloads`` give (order does not matter)."""
        scope = cls(subject)
        if subject.kind == "node":
            scope.down.add(subject.name)
        else:
            scope.devices.add(subject.name)
        scope._structure([p for p in payloads if isinstance(p, Assembly)])
        scope.nodes = scope.up | scope.down
        for p in payloads:
            if isinstance(p, Custody) and p.event is CustodyEvent.SHIPPED:
                if scope.nodes.intersection(p.contents):
                    scope.shipments.add(p.shipment_id)
            elif isinstance(p, Arrival) and p.server_serial in scope.nodes:
                scope.named.update(c.device_id for c in p.devices_challenged)
            elif isinstance(p, AttestationResult) and p.server_serial in scope.nodes:
                for d in p.devices:
                    scope.named.add(d.device_id)
                    if d.evidence is not None:
                        scope.measured.update(
                            (m.component, m.alg.value, m.digest) for m in d.evidence.measurements
                        )
        return scope

    def _structure(self, assemblies: Sequence[Assembly]) -> None:
        """*up* and *down* from the assembly records, to a fixed point (time plays no
        part: whatever was ever installed in the subject is in its scope)."""
        for a in assemblies:
            self.types.setdefault(a.parent.serial, a.parent.type.value)
            for kid in (*a.children, *a.removed):
                if isinstance(kid, Node):
                    self.types.setdefault(kid.serial, kid.type.value)
        changed = True
        while changed:
            changed = False
            for a in assemblies:
                kids = (*a.children, *a.removed)
                parent = a.parent.serial
                if parent not in self.up and any(self._carries(kid) for kid in kids):
                    self.up.add(parent)
                    changed = True
                    if a.parent.type is NodeType.SERVER:
                        self.down.add(parent)
                if parent in self.down:
                    for kid in kids:
                        if isinstance(kid, Node):
                            changed |= _added(self.down, kid.serial)
                        else:
                            changed |= _added(self.devices, kid.device_id)

    def _carries(self, kid: ChildRef) -> bool:
        """Is ``kid`` the subject or a node it sits in (so its parent is above it too)?"""
        if isinstance(kid, Node):
            return kid.serial in self.up or (
                self.subject.kind == "node" and kid.serial == self.subject.name
            )
        return self.subject.kind == "device" and kid.device_id == self.subject.name

    def holds(self, kid: ChildRef) -> bool:
        if isinstance(kid, Node):
            return kid.serial in self.nodes
        return kid.device_id in self.devices

    def relevant(self, payload: Payload) -> bool:  # noqa: PLR0911
        """Does ``payload`` touch the scope? (A passport holds nothing else.)"""
        if isinstance(payload, DeviceManifest):
            wanted = self.devices | self.named
            return any(d.device_id in wanted for d in payload.devices)
        if isinstance(payload, FirmwareRelease):
            return any(
                (payload.component, m.alg.value, m.digest) in self.measured
                for m in payload.measurements
            )
        if isinstance(payload, Assembly):
            return payload.parent.serial in self.nodes or any(
                self.holds(k) for k in (*payload.children, *payload.removed)
            )
        if isinstance(payload, Custody):
            if payload.event is CustodyEvent.SHIPPED:
                return bool(self.nodes.intersection(payload.contents))
            return payload.shipment_id in self.shipments
        if isinstance(payload, PolicyChange):
            return False  # the service's policy: the replay applies its own (REPLAY_POLICY)
        return payload.server_serial in self.nodes

    def outside(self, payloads: Iterable[Payload]) -> set[str]:
        """The nodes and devices the assembly and custody records name outside the scope
        (a manifest's other devices are not named: they are only listed)."""
        found: set[str] = set()
        for p in payloads:
            if isinstance(p, Assembly):
                for kid in (p.parent, *p.children, *p.removed):
                    if not self.holds(kid):
                        found.add(child_key(kid))
            elif isinstance(p, Custody):
                found.update(f"node:{n}" for n in p.contents if n not in self.nodes)
        return found

    def queries(self) -> set[str]:
        """The index subjects whose entries may be relevant."""
        return {
            *(f"node:{n}" for n in self.nodes),
            *(f"device:{d}" for d in self.devices | self.named),
            *(f"component:{c}" for c, _, _ in self.measured),
        }


def _added(found: set[str], item: str) -> bool:
    if item in found:
        return False
    found.add(item)
    return True


# -- building -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fetched:
    index: int
    org: str
    body: bytes
    payload: Payload


def _fetch(entry: IndexedEntry, statements: Callable[[bytes], bytes | None]) -> _Fetched:
    entry_id, index = entry.entry_id, entry.index
    body = statements(entry_id)
    if body is None:
        raise Corruption(f"the index names log entry {index}, whose statement is not stored")
    if hashlib.sha256(body).digest() != entry_id:
        raise Corruption(f"the stored statement of log entry {index} does not hash to it")
    statement = parse_statement(body, max_size=len(body))
    kind = KINDS.get(str(statement.content_type))
    if kind is None:
        raise Corruption(f"the index names log entry {index} a provenance fact; it is not one")
    return _Fetched(index, entry.org, body, kind.parse(statement.payload))


def _collect(
    subject: PassportSubject,
    views: ProvenanceViews,
    statements: Callable[[bytes], bytes | None],
    size: int,
) -> list[_Fetched]:
    """The applied entries below ``size`` relevant to ``subject``'s scope, in log order.

    The scope is widened round by round: each round reads the entries about what the last
    one found (the server's blades, the rack above it, the releases its attestations
    measured ...) until nothing new turns up.
    """
    fetched: dict[int, _Fetched] = {}
    asked: set[str] = set()
    scope = _Scope.derive(subject, [])
    for _ in range(MAX_SCOPE_ROUNDS):
        wanted = sorted(scope.queries() - asked)
        if not wanted:
            break
        for about in wanted:
            entries = views.timeline([about], size=size, limit=MAX_TIMELINE)
            if len(entries) >= MAX_TIMELINE:
                raise TooLarge(
                    f"{MAX_TIMELINE} or more log entries are about one thing in the scope",
                    code="passport-too-large",
                )
            for entry in entries:
                if entry.index not in fetched:
                    fetched[entry.index] = _fetch(entry, statements)
            if len(fetched) > 4 * MAX_PASSPORT_STATEMENTS:
                raise TooLarge("the subject's scope is too large", code="passport-too-large")
        asked.update(wanted)
        scope = _Scope.derive(subject, [f.payload for f in fetched.values()])
    else:
        raise TooLarge("the subject's scope does not settle", code="passport-too-large")
    found = [fetched[i] for i in sorted(fetched) if scope.relevant(fetched[i].payload)]
    if len(found) > MAX_PASSPORT_STATEMENTS:
        raise TooLarge(
            f"the passport would hold {len(found)} statements, over {MAX_PASSPORT_STATEMENTS}",
            code="passport-too-large",
        )
    return found


def _org_records(
    records: Iterable[bytes], *, issuer: str, involved: set[str], reader: LogReader, size: int
) -> list[tuple[int, bytes]]:
    """The service's records of the ``involved`` organizations in the first ``size``
    entries, with their log indexes."""
    found: list[tuple[int, bytes]] = []
    for body in records:
        statement = parse_statement(body, max_size=len(body))
        if statement.issuer != issuer or statement.content_type != ORG_RECORD_TYPE:
            continue
        if parse_org_record(statement.payload).name not in involved:
            continue
        try:
            index = reader.index_of(leaf_hash(statement.leaf_entry), size=size)
        except NotFound:
            continue  # registered after the checkpoint
        found.append((index, body))
    return sorted(found)


def _transparent(
    body: bytes,
    index: int,
    reader: LogReader,
    checkpoint: SignedCheckpoint,
    receipts: ReceiptSigner,
) -> bytes:
    entry = hashlib.sha256(body).digest()
    proof = reader.inclusion_proof(index, size=checkpoint.size)
    if proof.leaf_hash != leaf_hash(entry):
        raise Corruption(f"the log's entry {index} is not the statement the index names there")
    receipt = receipts.receipt(
        tree_size=checkpoint.size, leaf_index=index, path=proof.hashes, root=checkpoint.root
    )
    return add_receipts(body, [receipt])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _seal_digest(doc: Mapping[str, Any]) -> bytes:
    """What the seal signs: SHA-256 of the canonical passport without its seal."""
    return hashlib.sha256(canonical({k: v for k, v in doc.items() if k != "seal"})).digest()


def build_passport(
    subject: PassportSubject,
    *,
    views: ProvenanceViews,
    statements: Callable[[bytes], bytes | None],
    org_records: Callable[[], Iterable[bytes]],
    reader: LogReader,
    checkpoint: SignedCheckpoint,
    receipts: ReceiptSigner,
    key_set: bytes,
    verifier_key: str,
    seal: Signer,
    now: int | None = None,
) -> bytes:
    """The passport of ``subject`` as of ``checkpoint`` (bytes of canonical JSON).

    ``views`` reads the provenance index, which MUST have applied at least the
    checkpoint's entries (else :class:`NotFound`, ``index-size-unknown``: wait for it);
    ``statements`` gives a registered statement's bytes by leaf entry; ``org_records`` the
    stored organization-record statements; ``reader`` the log the checkpoint is of;
    ``receipts`` signs receipts against it and ``seal`` (a key of ``key_set``, usually the
    same service key) seals the passport. Blocking: it reads the store and the index.

    Raises :class:`NotFound` for an unknown subject (``node-unknown``, ``device-unknown``),
    :class:`TooLarge` (``passport-too-large``) for a scope over the limits, and
    :class:`ConfigError` for an index built with other rules than this release's
    (``index-rules-outdated``, ``index-rules-newer``): the scope is read from it.
    """
    check_index_rules(views.index)
    size = checkpoint.size
    if subject.kind == "node":
        views.node(subject.name, size=size)
    else:
        views.device(subject.name, size=size)
    found = _collect(subject, views, statements, size)
    involved = {f.org for f in found}
    records = _org_records(
        org_records(), issuer=receipts.issuer, involved=involved, reader=reader, size=size
    )
    seal_kid = key_id(seal.verifier())
    if seal_kid not in decode_key_set(key_set):
        raise InvalidInput(
            "the sealing key is not in the service key set", code="passport-seal-key"
        )
    doc: dict[str, Any] = {
        "type": PASSPORT_TYPE,
        "subject": subject._doc(),
        "log": {
            "origin": checkpoint.checkpoint.origin,
            "verifier_key": verifier_key,
            "checkpoint": checkpoint.note.decode("utf-8"),
        },
        "service": {"issuer": receipts.issuer, "keys": _b64(key_set)},
        "organizations": [
            {"index": i, "statement": _b64(_transparent(b, i, reader, checkpoint, receipts))}
            for i, b in records
        ],
        "statements": [
            {
                "index": f.index,
                "statement": _b64(_transparent(f.body, f.index, reader, checkpoint, receipts)),
            }
            for f in found
        ],
    }
    doc["seal"] = _b64(
        sign1(
            seal,
            protected={
                Header.KID: seal_kid,
                Header.CONTENT_TYPE: PASSPORT_TYPE,
                Header.CWT_CLAIMS: {
                    _ISS: receipts.issuer,
                    _SUB: str(subject),
                    _IAT: int(time.time()) if now is None else now,
                },
            },
            payload=_seal_digest(doc),
            detached=True,
        )
    )
    data = canonical(doc)
    if len(data) > MAX_PASSPORT_SIZE:
        raise TooLarge(
            f"the passport would be {len(data)} bytes, over {MAX_PASSPORT_SIZE}",
            code="passport-too-large",
        )
    return data


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of the journey: a statement of the passport, as the replay applied it."""

    index: int  # log index
    entry_id: str
    time: int  # the statement's iat, seconds since the epoch
    org: str
    kind: str  # statement kind ("device-manifest", "assembly", ...)
    stage: str  # factory, firmware, assembly, transit, arrival, attestation, compliance
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "entry_id": self.entry_id,
            "time": _utc(self.time),
            "iat": self.time,
            "org": self.org,
            "kind": self.kind,
            "stage": self.stage,
            "summary": self.summary,
        }


@dataclass(frozen=True, slots=True)
class PassportReport:
    """A passport that verified, and the journey it shows.

    ``log_key_pinned`` / ``service_keys_pinned`` say whether the caller's own keys vouched
    for the file's; when not, the file proves only that it is self-consistent: compare the
    fingerprints (``log_key``, ``service_keys``) with the operator's published ones.
    """

    subject: PassportSubject
    origin: str
    checkpoint_size: int
    checkpoint_root: bytes
    log_key: str
    log_key_pinned: bool
    issuer: str
    service_keys: tuple[tuple[str, str], ...]  # (kid hex, algorithm), the file's key set
    service_keys_pinned: bool
    sealed_at: int
    seal_kid: str
    organizations: tuple[tuple[str, int, tuple[str, ...]], ...]  # (name, version, roles)
    stages: tuple[Stage, ...]
    status: dict[str, Any]
    outside: tuple[str, ...]  # nodes and devices named by its facts, outside its scope

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "type": PASSPORT_TYPE,
            "subject": {"kind": self.subject.kind, "name": self.subject.name},
            "log": {
                "origin": self.origin,
                "checkpoint_size": self.checkpoint_size,
                "checkpoint_root": self.checkpoint_root.hex(),
                "verifier_key": self.log_key,
                "pinned": self.log_key_pinned,
            },
            "service": {
                "issuer": self.issuer,
                "keys": [{"kid": kid, "alg": alg} for kid, alg in self.service_keys],
                "pinned": self.service_keys_pinned,
                "seal_kid": self.seal_kid,
                "sealed_at": _utc(self.sealed_at),
            },
            "organizations": [
                {"org": name, "version": version, "roles": list(roles)}
                for name, version, roles in self.organizations
            ],
            "journey": [s.to_json() for s in self.stages],
            "status": self.status,
            "outside_scope": list(self.outside),
        }


def _utc(seconds: int) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


# -- reading the file -------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            _fail("passport-malformed", "the passport repeats a key in one object")
        doc[key] = value
    return doc


def _no_number(_: str) -> NoReturn:
    _fail("passport-malformed", "the passport holds a number that is not an integer")


def _load(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_PASSPORT_SIZE:
        _fail("passport-too-large", f"the passport is over {MAX_PASSPORT_SIZE} bytes")
    try:
        doc = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_number,
            parse_float=_no_number,
        )
    except (ValueError, RecursionError):
        _fail("passport-malformed", "the file is not a JSON document")
    if not isinstance(doc, dict):
        _fail("passport-malformed", "a passport is a JSON object")
    if doc.get("type") != PASSPORT_TYPE:
        _fail(
            "passport-unsupported-type",
            f"the file is not a {PASSPORT_TYPE} passport",
            hint="Check the file; a newer format needs a newer sealtrail.",
        )
    try:
        encoded = canonical(doc)
    except UnicodeEncodeError:  # a lone surrogate escape ("\ud800") parses, but is not text
        _fail("passport-malformed", "the passport holds a string that is not Unicode text")
    if encoded != data:
        _fail(
            "passport-not-canonical",
            "the passport is not in its canonical encoding (sorted keys, no spaces): it was edited",
        )
    if set(doc) != _FIELDS:
        _fail("passport-malformed", "the passport's fields are not those of version 1")
    return doc


def _object(value: object, where: str, fields: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != fields:
        _fail("passport-malformed", f"{where} must be an object of {', '.join(sorted(fields))}")
    return value


def _text(value: object, where: str, *, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        _fail("passport-malformed", f"{where} must be text of 1..{limit} characters")
    return value


def _bytes(value: object, where: str, *, limit: int) -> bytes:
    if not isinstance(value, str) or not 0 < len(value) <= 4 * ((limit + 2) // 3):
        _fail("passport-malformed", f"{where} must be base64 of at most {limit} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        _fail("passport-malformed", f"{where} is not base64")
    if _b64(raw) != value:
        _fail("passport-malformed", f"{where} is not canonical (padded, standard) base64")
    return raw


def _expected(found: PassportSubject, expected: PassportSubject | None) -> PassportSubject:
    if expected is not None and found != expected:
        _fail(
            "passport-subject-mismatch",
            f"the passport is of {found.kind} {found.name!r}, not of {expected.kind} "
            f"{expected.name!r}",
            hint="It is another subject's passport: check the file, or where it came from.",
        )
    return found


def _subject(value: object) -> PassportSubject:
    if isinstance(value, dict) and set(value) == {"device_id"}:
        device_id = value["device_id"]
        if not isinstance(device_id, str) or len(device_id) != 64 or set(device_id) - _HEX64:
            _fail("passport-malformed", "subject.device_id must be 64 lowercase hex digits")
        return PassportSubject("device", device_id)
    if isinstance(value, dict) and set(value) == {"serial"}:
        return PassportSubject("node", _text(value["serial"], "subject.serial"))
    _fail("passport-malformed", "subject must be an object of serial, or of device_id")


@dataclass(frozen=True, slots=True)
class _Item:
    """A transparent statement of the passport: its statement and its one receipt."""

    where: str
    index: int
    statement: SignedStatement
    receipt: bytes


def _items(value: object, where: str, *, limit: int) -> list[_Item]:
    if not isinstance(value, list) or len(value) > limit:
        _fail("passport-malformed", f"{where} must be a list of at most {limit} entries")
    items = []
    for n, raw in enumerate(value):
        at = f"{where}[{n}]"
        doc = _object(raw, at, _ITEM_FIELDS)
        index = doc["index"]
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_INDEX:
            _fail("passport-malformed", f"{at}.index must be a log index")
        at = f"{at} (log index {index})"
        data = _bytes(doc["statement"], f"{at}.statement", limit=MAX_TRANSPARENT_SIZE)
        try:
            body, receipts = split_transparent(data)
            if len(receipts) != 1:
                _fail("passport-receipt-missing", f"{at} must carry exactly one receipt")
            if add_receipts(body, receipts) != data:
                _fail("passport-malformed", f"{at}: the transparent statement is not canonical")
            statement = parse_statement(body, max_size=len(body))
        except InvalidInput as exc:
            _fail("passport-malformed", f"{at}: not a transparent statement: {exc.message}")
        except InvalidSignature as exc:
            _fail("passport-malformed", f"{at}: not a transparent statement: {exc.message}")
        items.append(_Item(at, index, statement, receipts[0]))
    for a, b in itertools.pairwise(items):
        if b.index == a.index:
            _fail("passport-duplicate-statement", f"{b.where} repeats log index {a.index}")
        if b.index < a.index:
            _fail("passport-out-of-order", f"{b.where} comes after log index {a.index}")
    return items


# -- verifying ------------------------------------------------------------------------------


def _log_key(
    vkey: str, origin: str, pinned: str | NoteVerifier | None
) -> tuple[NoteVerifier, bool]:
    try:
        verifier = NoteVerifier.parse(vkey)
    except InvalidInput as exc:
        _fail("passport-bad-log-key", f"log.verifier_key: {exc.message}")
    if type(verifier) is not NoteVerifier or verifier.name != origin:
        _fail("passport-bad-log-key", "log.verifier_key is not the log's own key for its origin")
    if pinned is None:
        return verifier, False
    try:
        trusted = pinned if isinstance(pinned, NoteVerifier) else NoteVerifier.parse(pinned)
    except InvalidInput as exc:
        raise InvalidInput(f"the pinned log key: {exc.message}", code="log-key-invalid") from None
    if trusted != verifier:
        _fail(
            "passport-log-key-mismatch",
            "the passport's log key is not the pinned one: another log, or a forged file",
        )
    return trusted, True


def _service_keys(
    raw: bytes, pinned: Mapping[bytes, Verifier] | bytes | None
) -> tuple[dict[bytes, Verifier], dict[bytes, Verifier], bool]:
    """The file's keys and the keys trusted (the pinned ones when given)."""
    try:
        keys = decode_key_set(raw)
    except InvalidInput as exc:
        _fail("passport-bad-service-keys", f"service.keys: {exc.message}")
    if pinned is None:
        return keys, keys, False
    trusted = dict(decode_key_set(pinned) if isinstance(pinned, bytes) else pinned)
    unknown = [kid.hex()[:16] for kid in keys if kid not in trusted]
    if unknown:
        _fail(
            "passport-service-keys-mismatch",
            f"the passport holds service keys that are not pinned ({', '.join(unknown)}…): "
            "another service, or a forged file",
        )
    return keys, trusted, True


def _receipt(
    item: _Item,
    *,
    keys: Mapping[bytes, Verifier],
    checkpoint: SignedCheckpoint,
    issuer: str,
) -> ReceiptInfo:
    try:
        info = verify_receipt(item.receipt, leaf_entry=item.statement.leaf_entry, keys=keys)
    except VerificationError as exc:
        raise VerificationError(f"{item.where}: {exc.message}", code=exc.code) from None
    if (info.tree_size, info.root) != (checkpoint.size, checkpoint.root):
        _fail(
            "passport-receipt-not-at-checkpoint",
            f"{item.where}: its receipt is for a tree of {info.tree_size} entries, not the "
            f"passport's checkpoint ({checkpoint.size}): not all in one consistent log",
        )
    if info.leaf_index != item.index:
        _fail(
            "passport-index-mismatch",
            f"{item.where}: its receipt puts it at log index {info.leaf_index}",
        )
    if info.issuer != issuer or info.subject != checkpoint.checkpoint.origin:
        _fail(
            "passport-receipt-mismatch",
            f"{item.where}: its receipt names another service or log",
        )
    return info


@dataclass(frozen=True, slots=True)
class _Verified:
    item: _Item
    fact: Fact
    kind: str


def _statements(
    orgs: Sequence[_Item],
    items: Sequence[_Item],
    *,
    keys: Mapping[bytes, Verifier],
    issuer: str,
) -> tuple[list[_Verified], Registry]:
    """Organization records folded and statements checked, in log order, as registration
    checked them: issuer, policy, key (chain validated at the statement's iat), signature,
    role and payload."""
    registry = Registry()
    validator = ChainValidator()
    devices = DeviceChainValidator()
    verified: list[_Verified] = []
    events = sorted(
        [(i.index, 0, n) for n, i in enumerate(orgs)]
        + [(i.index, 1, n) for n, i in enumerate(items)]
    )
    for a, b in itertools.pairwise(events):
        if a[0] == b[0]:
            _fail("passport-duplicate-statement", f"log index {a[0]} appears twice")
    for _, is_statement, n in events:
        item = (items if is_statement else orgs)[n]
        try:
            if not is_statement:
                registry.apply(_org_record(item, keys=keys, issuer=issuer))
                continue
            verified.append(_statement(item, registry, validator, devices))
        except VerificationError as exc:
            if exc.code.startswith("passport-"):
                raise
            raise VerificationError(f"{item.where}: {exc.message}", code=exc.code) from None
        except Error as exc:
            raise VerificationError(f"{item.where}: {exc.message}", code=exc.code) from None
    return verified, registry


def _org_record(item: _Item, *, keys: Mapping[bytes, Verifier], issuer: str) -> Organization:
    statement = item.statement
    if statement.issuer != issuer or statement.content_type != ORG_RECORD_TYPE:
        _fail(
            "passport-org-record-untrusted",
            f"{item.where}: not an organization record of the passport's service",
        )
    verifier = keys.get(statement.kid or b"")
    if verifier is None:
        _fail(
            "passport-org-record-untrusted",
            f"{item.where}: the organization record is signed by a key that is not a service key",
        )
    try:
        statement.message.verify(verifier)
    except InvalidSignature:
        _fail("passport-org-record-untrusted", f"{item.where}: the service's signature fails")
    return parse_org_record(statement.payload)


def _statement(
    item: _Item, registry: Registry, validator: ChainValidator, devices: DeviceChainValidator
) -> _Verified:
    statement = item.statement
    content_type = str(statement.content_type)
    kind = KINDS.get(content_type)
    if kind is None:
        _fail("passport-not-provenance", f"{item.where}: not a provenance statement")
    org = registry.for_issuer(statement.issuer)
    org.policy.check(
        content_type=content_type,
        subject=statement.subject,
        alg=statement.alg,
        size=len(statement.encoded),
    )
    if statement.issued_at is None:
        raise InvalidInput("the statement has no issued-at time", code="provenance-no-iat")
    when = dt.datetime.fromtimestamp(statement.issued_at, dt.UTC)
    key = issuer_key(statement, org, validator, now=when)
    try:
        statement.message.verify(key)
    except InvalidSignature:
        _fail(
            "statement-bad-signature",
            f"{item.where}: the statement's signature does not verify with its organization's key",
        )
    payload = screen(statement, org, kind, devices)
    return _Verified(
        item, Fact(statement.leaf_entry, org.name, statement.issued_at, payload), kind.name
    )


def _seal(
    seal: bytes,
    doc: Mapping[str, Any],
    *,
    keys: Mapping[bytes, Verifier],
    issuer: str,
    subject: PassportSubject,
) -> tuple[int, bytes]:
    """Check the service's seal over the passport; its iat and kid."""
    try:
        message = decode_sign1(seal)
    except (InvalidInput, InvalidSignature) as exc:
        _fail("passport-bad-seal", f"the seal is not a COSE_Sign1: {exc.message}")
    claims = message.protected.get(Header.CWT_CLAIMS)
    if (
        message.payload is not None
        or message.unprotected
        or message.protected.get(Header.CONTENT_TYPE) != PASSPORT_TYPE
        or not isinstance(claims, dict)
        or claims.get(_ISS) != issuer
        or claims.get(_SUB) != str(subject)
        or not isinstance(claims.get(_IAT), int)
    ):
        _fail("passport-bad-seal", "the seal is not the service's seal of this passport")
    kid = message.protected.get(Header.KID)
    verifier = keys.get(kid) if isinstance(kid, bytes) else None
    if verifier is None:
        _fail("passport-seal-unknown-key", "the seal is signed by a key that is not a service key")
    try:
        message.verify(verifier, payload=_seal_digest(doc))
    except InvalidSignature:
        _fail(
            "passport-bad-seal",
            "the service's seal does not verify: the passport was changed after it was "
            "sealed (a statement removed, added or replaced)",
        )
    assert isinstance(kid, bytes)
    return claims[_IAT], kid


class _Replay:
    """The passport's facts applied in log order; out-of-scope names get placeholders.

    A placeholder's row is not the log's (its trips and contents are outside the
    passport), so the state sees the nodes outside the scope as unseen: a holder resting
    on one is unknown, never judged.
    """

    def __init__(self, scope: _Scope) -> None:
        self.scope = scope
        self.rows = MemoryRows()
        self.state = ProvenanceState(
            self.rows, policy=REPLAY_POLICY, unseen=lambda serial: serial not in scope.nodes
        )

    def apply(self, verified: _Verified) -> None:
        self._seed(verified.fact.payload)
        outcome = self.state.apply(verified.fact)
        if not outcome.applied:
            _fail(
                "passport-replay-refused",
                f"{verified.item.where}: the provenance rules refuse this {verified.kind} "
                f"after the passport's earlier facts ({outcome.code}: {outcome.message}); "
                "a statement is missing or does not belong here",
            )

    def _placeholder(self, kid: ChildRef) -> None:
        if isinstance(kid, Node):
            if self.rows.get("node", kid.serial) is None:
                self.rows.put("node", kid.serial, _node_row(kid.type.value, []))
        elif self.rows.get("device", kid.device_id) is None:
            self.rows.put("device", kid.device_id, _PLACEHOLDER_DEVICE)

    def _seed(self, payload: Payload) -> None:
        """Rows for what ``payload`` names outside the scope (whose history the passport
        does not hold), so that its rule judges only what is in the scope."""
        scope = self.scope
        if isinstance(payload, Custody) and payload.event is CustodyEvent.SHIPPED:
            for serial in payload.contents:
                if serial not in scope.nodes and self.rows.get("node", serial) is None:
                    kind = scope.types.get(serial, NodeType.SERVER.value)
                    self.rows.put("node", serial, _node_row(kind, []))
            return
        if not isinstance(payload, Assembly):
            return
        for kid in payload.children:
            if scope.holds(kid):
                continue
            self._placeholder(kid)
            key = child_key(kid)
            holder = self.rows.get("parent", key)
            if holder is not None and holder["parent"] not in scope.nodes:
                # Its removal from an out-of-scope parent is outside the passport.
                self._unlink(holder["parent"], key)
        parent = payload.parent.serial
        if parent in scope.nodes:
            return
        for kid in payload.removed:
            if scope.holds(kid):
                continue
            key = child_key(kid)
            node = self.rows.get("node", parent)
            if node is None or key not in node["children"]:
                self._placeholder(kid)
                children = sorted({*(node["children"] if node else []), key})
                row = _node_row(payload.parent.type.value, children)
                if node is not None:
                    row["assembler"] = node["assembler"]
                self.rows.put("node", parent, row)
                self.rows.put("parent", key, {"parent": parent, "entry": ""})

    def _unlink(self, parent: str, key: str) -> None:
        self.rows.put("parent", key, None)
        node = self.rows.get("node", parent)
        if node is not None and key in node["children"]:
            row = dict(node)
            row["children"] = [c for c in node["children"] if c != key]
            self.rows.put("node", parent, row)

    def lineage(self, key: str) -> list[str]:
        found: list[str] = []
        holder = self.rows.get("parent", key)
        while holder is not None and holder["parent"] not in found:
            found.append(holder["parent"])
            holder = self.rows.get("parent", f"node:{holder['parent']}")
        return found


_PLACEHOLDER_DEVICE: dict[str, Any] = {
    "serial": "",
    "kind": "other",
    "algorithm": "",
    "maker": "",
    "batch": "",
    "manifest": "",
    "identity": "",
}


def _node_row(kind: str, children: list[str]) -> dict[str, Any]:
    return {"type": kind, "assembler": "", "children": children}


def _short(key: str) -> str:
    kind, _, name = key.partition(":")
    return f"device {name[:12]}…" if kind == "device" else f"{name}"


def _names(keys: Sequence[str], limit: int = 4) -> str:
    shown = [_short(k) for k in keys[:limit]]
    if len(keys) > limit:
        shown.append(f"+{len(keys) - limit} more")
    return ", ".join(shown)


def _summary(payload: Payload, scope: _Scope, rows: MemoryRows) -> str:  # noqa: PLR0911
    if isinstance(payload, DeviceManifest):
        mine = sum(1 for d in payload.devices if d.device_id in scope.devices)
        return (
            f"device manifest {payload.batch_id}: {len(payload.devices)} device(s), "
            f"{mine} of them in this passport"
        )
    if isinstance(payload, FirmwareRelease):
        return (
            f"firmware {payload.component} {payload.version} "
            f"(security version {payload.security_version})"
        )
    if isinstance(payload, Assembly):
        parent = payload.parent
        parts = []
        if payload.children:
            parts.append("installed " + _names([child_key(c) for c in payload.children]))
        if payload.removed:
            parts.append("removed " + _names([child_key(c) for c in payload.removed]))
        return f"{parent.type.value} {parent.serial}: " + "; ".join(parts)
    if isinstance(payload, Custody):
        if payload.event is CustodyEvent.SHIPPED:
            return (
                f"shipment {payload.shipment_id} shipped {payload.from_org} -> "
                f"{payload.to_org} from {payload.place}: {', '.join(payload.contents[:4])}"
                f"{' …' if len(payload.contents) > 4 else ''}, {len(payload.seals)} seal(s)"
            )
        shipment = rows.get("shipment", payload.shipment_id) or {}
        findings = shipment.get("findings") or []
        return f"shipment {payload.shipment_id} received at {payload.place}: " + (
            "findings " + ", ".join(findings[:4]) if findings else "no findings"
        )
    if isinstance(payload, Arrival):
        reasons = f" ({', '.join(payload.reasons)})" if payload.reasons else ""
        return (
            f"server {payload.server_serial} checked on arrival (shipment "
            f"{payload.shipment_id}): {payload.result.value}{reasons}, "
            f"{len(payload.devices_challenged)} device(s) challenged"
        )
    if isinstance(payload, AttestationResult):
        row = rows.get("attestation", payload.server_serial) or {}
        shown: list[str] = row.get("reasons") or []
        return (
            f"server {payload.server_serial} attested {payload.status.value} "
            f"({len(payload.devices)} device(s))"
            + (f"; the evidence shows {', '.join(shown)}" if shown else "")
        )
    if isinstance(payload, PolicyChange):
        return f"the service's provenance policy, version {payload.version}"
    return (
        f"server {payload.server_serial}: {payload.from_state.value} -> "
        f"{payload.to_state.value} ({payload.reason})"
    )


def _status(subject: PassportSubject, replay: _Replay) -> dict[str, Any]:
    rows, state = replay.rows, replay.state
    if subject.kind == "device":
        device = rows.get("device", subject.name) or {}
        lineage = replay.lineage(f"device:{subject.name}")
        servers = [n for n in lineage if (rows.get("node", n) or {}).get("type") == "server"]
        return {
            "device_id": subject.name,
            "serial": device.get("serial"),
            "kind": device.get("kind"),
            "maker": device.get("maker"),
            "installed_in": lineage,
            "compliance": {s: state.compliance_state(s).value for s in servers},
        }
    node = rows.get("node", subject.name) or {}
    doc: dict[str, Any] = {
        "serial": subject.name,
        "type": node.get("type"),
        "installed_in": replay.lineage(f"node:{subject.name}"),
        "devices": state.devices_of(subject.name),
        "in_transit": (rows.get("transit", subject.name) or {}).get("shipment"),
    }
    if node.get("type") == NodeType.SERVER.value:
        arrival = rows.get("arrival", subject.name)
        attestation = rows.get("attestation", subject.name)
        doc["compliance"] = state.compliance_state(subject.name).value
        doc["arrival"] = None if arrival is None else arrival["result"]
        doc["attestation"] = None if attestation is None else attestation["status"]
    return doc


def verify_passport(
    data: bytes,
    *,
    service_keys: Mapping[bytes, Verifier] | bytes | None = None,
    log_key: str | NoteVerifier | None = None,
    subject: PassportSubject | None = None,
) -> PassportReport:
    """Verify a passport offline; raise a :class:`VerificationError` naming what failed.

    With ``log_key`` (a verifier key string) and ``service_keys`` (a COSE key set, as
    ``sealtrail fetch-keys`` saves it) the file's keys must be the pinned ones; without
    them the file is only checked to be consistent with the keys it carries (compare the
    report's fingerprints with the operator's). With ``subject``, the file must be that
    subject's passport (``passport-subject-mismatch``): a genuine passport of another
    server or device verifies as well as the right one. Checks, in order: the structure
    and the subject; the checkpoint's signature; every receipt against the service keys,
    at the checkpoint; the organization records (service-signed, versions in order); every
    statement as registration checked it; that every statement belongs to the subject's
    scope; the replay of the facts in log order; and the service's seal over the whole file.
    """
    doc = _load(data)
    subject = _expected(_subject(doc["subject"]), subject)
    log = _object(doc["log"], "log", _LOG_FIELDS)
    service = _object(doc["service"], "service", _SERVICE_FIELDS)
    origin = _text(log["origin"], "log.origin")
    vkey = _text(log["verifier_key"], "log.verifier_key")
    note = _text(log["checkpoint"], "log.checkpoint", limit=MAX_NOTE_SIZE)
    issuer = _text(service["issuer"], "service.issuer")
    raw_keys = _bytes(service["keys"], "service.keys", limit=MAX_KEY_SET_SIZE)
    seal = _bytes(doc["seal"], "seal", limit=MAX_SEAL_SIZE)
    orgs = _items(doc["organizations"], "organizations", limit=MAX_PASSPORT_ORG_RECORDS)
    items = _items(doc["statements"], "statements", limit=MAX_PASSPORT_STATEMENTS)

    log_verifier, log_pinned = _log_key(vkey, origin, log_key)
    try:
        checkpoint = verify_checkpoint(
            note.encode("utf-8"), origin=origin, verifiers=[log_verifier]
        )
    except (MalformedNote, InvalidSignature, InvalidInput) as exc:
        _fail("passport-bad-checkpoint", f"log.checkpoint: {exc.message}")
    file_keys, trusted, keys_pinned = _service_keys(raw_keys, service_keys)
    for item in (*orgs, *items):
        _receipt(item, keys=trusted, checkpoint=checkpoint, issuer=issuer)

    verified, registry = _statements(orgs, items, keys=trusted, issuer=issuer)
    involved = {v.fact.org for v in verified}
    for item in orgs:
        name = parse_org_record(item.statement.payload).name
        if name not in involved:
            _fail(
                "passport-foreign-statement",
                f"{item.where}: organization {name!r} issued none of the passport's statements",
            )

    scope = _Scope.derive(subject, [v.fact.payload for v in verified])
    for v in verified:
        if not scope.relevant(v.fact.payload):
            _fail(
                "passport-foreign-statement",
                f"{v.item.where}: this {v.kind} is not about {subject} or anything in its "
                "scope (a statement of another server or device)",
            )
    replay = _Replay(scope)
    stages = []
    for v in verified:
        replay.apply(v)
        payload = v.fact.payload
        stages.append(
            Stage(
                index=v.item.index,
                entry_id=v.item.statement.entry_id,
                time=v.fact.iat,
                org=v.fact.org,
                kind=v.kind,
                stage=_STAGES[type(payload)],
                summary=_summary(payload, scope, replay.rows),
            )
        )
    present = replay.rows.get("node" if subject.kind == "node" else "device", subject.name)
    if present is None:
        _fail("passport-subject-missing", f"none of the passport's statements makes {subject}")

    sealed_at, seal_kid = _seal(seal, doc, keys=trusted, issuer=issuer, subject=subject)
    organizations = []
    for name in sorted(involved):
        org = registry.get(name)
        assert org is not None
        organizations.append((name, org.version, org.roles))
    return PassportReport(
        subject=subject,
        origin=origin,
        checkpoint_size=checkpoint.size,
        checkpoint_root=checkpoint.root,
        log_key=log_verifier.verifier_key(),
        log_key_pinned=log_pinned,
        issuer=issuer,
        service_keys=tuple((kid.hex(), v.algorithm) for kid, v in file_keys.items()),
        service_keys_pinned=keys_pinned,
        sealed_at=sealed_at,
        seal_kid=seal_kid.hex(),
        organizations=tuple(organizations),
        stages=tuple(stages),
        status=_status(subject, replay),
        outside=tuple(sorted(scope.outside(v.fact.payload for v in verified))),
    )
