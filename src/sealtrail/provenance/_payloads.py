"""The provenance statement payloads, as typed values with strict parsers.

Each payload is a frozen dataclass with ``to_json()`` (canonical JSON) and a
``parse_<kind>(payload: bytes)`` that refuses anything its schema (docs/provenance.md) does
not allow, with a stable code. These are the rules a payload can be checked against on its
own; the rules that need the log (chains to the maker's registered device CA, children that
exist and sit nowhere else, hand-offs that chain, measurements that match a release, nonces
used once) are applied when the statement is registered and indexed.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from ._compliance import ComplianceState, check_transition
from ._device import (
    MAX_CERTIFICATE_SIZE,
    Algorithm,
    identity_id,
    leaf_algorithm_matches,
    load_identity,
)
from ._strict import (
    array,
    boolean,
    canonical,
    choice,
    fail,
    hexa,
    ident,
    integer,
    load,
    obj,
    text,
    too_large,
    unique,
)

#: Most devices in one manifest (a maker's batch; issue 4 benchmarks this size).
MAX_DEVICES = 10_000
#: Most certificates in one device's identity chain (as for a statement's x5chain).
MAX_CHAIN_LENGTH = 8
#: Most measurements in one firmware release.
MAX_MEASUREMENTS = 64
#: Largest OCP SAFE evidence (a compact JWS), in characters; published reports are ~2 KiB.
MAX_EVIDENCE_SIZE = 64 * 1024
#: Most children (and, separately, removed children) in one assembly record.
MAX_CHILDREN = 1024
#: Most servers or racks in one shipment.
MAX_CONTENTS = 1024
#: Most tamper-evident seals on one shipment.
MAX_SEALS = 256
#: Most devices challenged on one arrival, or results in one attestation.
MAX_DEVICE_RESULTS = 1024
#: Most reasons attached to one result.
MAX_REASONS = 64
#: Nonce sizes, in bytes: at least 128 bits of freshness.
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 64
#: Highest security version (an unsigned 32-bit counter, as Caliptra's SVN).
MAX_SECURITY_VERSION = 2**32 - 1


_DEVICE_ID = re.compile(r"[0-9a-f]{64}")
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")


class _Payload:
    """What every payload has: its kind, content type and canonical JSON."""

    __slots__ = ()
    KIND: ClassVar[str]
    CONTENT_TYPE: ClassVar[str]

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces) that parses back to an equal value."""
        return canonical(self._doc())

    def _doc(self) -> dict[str, Any]:
        raise NotImplementedError


def _content_type(kind: str) -> str:
    return f"application/vnd.sealtrail.{kind}.v1+json"


def _device_id(value: object, where: str) -> str:
    if not isinstance(value, str) or _DEVICE_ID.fullmatch(value) is None:
        fail(where, "must be a device id (64 lowercase hex digits)")
    return value


def _reasons(value: object, where: str) -> tuple[str, ...]:
    items = array(value, where, max_items=MAX_REASONS)
    return tuple(text(r, f"{where}[{i}]") for i, r in enumerate(items))


def _idents(value: object, where: str, *, max_items: int, min_items: int = 0) -> tuple[str, ...]:
    items = array(value, where, max_items=max_items, min_items=min_items)
    result = [ident(v, f"{where}[{i}]") for i, v in enumerate(items)]
    unique(result, where)
    return tuple(result)


# -- device manifest -----------------------------------------------------------------------


class DeviceKind(StrEnum):
    """The kind of hardware root of trust."""

    CALIPTRA = "caliptra"
    CERBERUS = "cerberus"
    TPM = "tpm"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """One root-of-trust device: its identity certificate chain, leaf first (DER).

    ``device_id`` is derived from the leaf's public key (see :func:`device_id`); it is not
    part of the JSON, so it cannot disagree with the certificate.
    """

    kind: DeviceKind
    serial: str
    chain: tuple[bytes, ...]
    algorithm: Algorithm
    device_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.chain:
            fail("device", "the identity chain is empty")
        leaf = load_identity(self.chain[0], "device")
        object.__setattr__(self, "device_id", identity_id(leaf))

    def _doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "serial": self.serial,
            "chain": [base64.b64encode(c).decode("ascii") for c in self.chain],
            "algorithm": self.algorithm.value,
        }


@dataclass(frozen=True, slots=True)
class DeviceManifest(_Payload):
    """A device maker's batch of root-of-trust identities."""

    KIND: ClassVar[str] = "device-manifest"
    CONTENT_TYPE: ClassVar[str] = _content_type("device-manifest")

    batch_id: str
    devices: tuple[DeviceIdentity, ...]

    def _doc(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "devices": [d._doc() for d in self.devices]}


def _der(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        fail(where, "must be a base64 string", code="manifest-bad-certificate")
    try:
        der = base64.b64decode(value, validate=True)
    except ValueError:
        fail(where, "must be base64", code="manifest-bad-certificate")
    if base64.b64encode(der).decode("ascii") != value:
        fail(where, "must be canonical base64 (padded)", code="manifest-bad-certificate")
    return der


def _identity(value: object, where: str) -> DeviceIdentity:
    doc = obj(value, where, required=frozenset({"kind", "serial", "chain", "algorithm"}))
    kind = choice(doc["kind"], f"{where}.kind", DeviceKind)
    serial = ident(doc["serial"], f"{where}.serial")
    algorithm = choice(doc["algorithm"], f"{where}.algorithm", Algorithm)
    items = array(doc["chain"], f"{where}.chain", max_items=MAX_CHAIN_LENGTH, min_items=1)
    chain = tuple(_der(c, f"{where}.chain[{i}]") for i, c in enumerate(items))
    certificates = [load_identity(der, f"{where}.chain[{i}]") for i, der in enumerate(chain)]
    if not leaf_algorithm_matches(certificates[0], algorithm):
        fail(
            f"{where}.algorithm",
            "does not match the leaf certificate's public key",
            code="manifest-algorithm-mismatch",
        )
    return DeviceIdentity(kind=kind, serial=serial, chain=chain, algorithm=algorithm)


def parse_device_manifest(payload: bytes) -> DeviceManifest:
    """Read a device identity manifest (``device-manifest``)."""
    where = DeviceManifest.KIND
    doc = obj(load(payload, where), where, required=frozenset({"batch_id", "devices"}))
    batch_id = ident(doc["batch_id"], f"{where}.batch_id")
    raw = doc["devices"]
    if isinstance(raw, list) and len(raw) > MAX_DEVICES:
        too_large(f"{where}.devices", f"holds more than {MAX_DEVICES}", code="manifest-too-large")
    items = array(raw, f"{where}.devices", max_items=MAX_DEVICES, min_items=1)
    devices = tuple(_identity(d, f"{where}.devices[{i}]") for i, d in enumerate(items))
    unique([d.serial for d in devices], f"{where}.devices", code="manifest-duplicate-device")
    unique([d.device_id for d in devices], f"{where}.devices", code="manifest-duplicate-device")
    return DeviceManifest(batch_id=batch_id, devices=devices)


# -- firmware release ----------------------------------------------------------------------


class DigestAlgorithm(StrEnum):
    """A measurement's hash algorithm (names as in the IANA named-information registry)."""

    SHA256 = "sha-256"
    SHA384 = "sha-384"
    SHA512 = "sha-512"


_DIGEST_SIZE = {DigestAlgorithm.SHA256: 32, DigestAlgorithm.SHA384: 48, DigestAlgorithm.SHA512: 64}


@dataclass(frozen=True, slots=True)
class Measurement:
    """A reference measurement: algorithm and lowercase hex digest."""

    alg: DigestAlgorithm
    digest: str


@dataclass(frozen=True, slots=True)
class FirmwareRelease(_Payload):
    """A device maker's firmware release: the reference values attestation compares with.

    ``evidence`` is an optional OCP SAFE short-form report, a compact JWS kept as published.
    """

    KIND: ClassVar[str] = "firmware-release"
    CONTENT_TYPE: ClassVar[str] = _content_type("firmware-release")

    component: str
    version: str
    security_version: int
    measurements: tuple[Measurement, ...]
    evidence: str | None = None

    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "component": self.component,
            "version": self.version,
            "security_version": self.security_version,
            "measurements": [{"alg": m.alg.value, "digest": m.digest} for m in self.measurements],
        }
        if self.evidence is not None:
            doc["evidence"] = self.evidence
        return doc


def _measurement(value: object, where: str) -> Measurement:
    doc = obj(value, where, required=frozenset({"alg", "digest"}))
    alg = choice(doc["alg"], f"{where}.alg", DigestAlgorithm)
    size = _DIGEST_SIZE[alg]
    digest = hexa(doc["digest"], f"{where}.digest", min_bytes=size, max_bytes=size)
    return Measurement(alg=alg, digest=digest)


def parse_firmware_release(payload: bytes) -> FirmwareRelease:
    """Read a firmware release (``firmware-release``)."""
    where = FirmwareRelease.KIND
    doc = obj(
        load(payload, where),
        where,
        required=frozenset({"component", "version", "security_version", "measurements"}),
        optional=frozenset({"evidence"}),
    )
    items = array(
        doc["measurements"], f"{where}.measurements", max_items=MAX_MEASUREMENTS, min_items=1
    )
    measurements = tuple(_measurement(m, f"{where}.measurements[{i}]") for i, m in enumerate(items))
    unique(list(measurements), f"{where}.measurements")
    evidence = doc.get("evidence")
    if "evidence" in doc:  # optional: absent, never null
        if not isinstance(evidence, str):
            fail(f"{where}.evidence", "must be a compact JWS string")
        if len(evidence) > MAX_EVIDENCE_SIZE:
            too_large(f"{where}.evidence", f"is longer than {MAX_EVIDENCE_SIZE} characters")
        if _JWS.fullmatch(evidence) is None:
            fail(f"{where}.evidence", "must be a compact JWS (three base64url parts)")
    return FirmwareRelease(
        component=ident(doc["component"], f"{where}.component"),
        version=ident(doc["version"], f"{where}.version"),
        security_version=integer(
            doc["security_version"], f"{where}.security_version", low=0, high=MAX_SECURITY_VERSION
        ),
        measurements=measurements,
        evidence=evidence,
    )


# -- assembly ------------------------------------------------------------------------------


class NodeType(StrEnum):
    """A level of assembly, from a component up to a rack."""

    COMPONENT = "component"
    BLADE = "blade"
    MOTHERBOARD = "motherboard"
    SERVER = "server"
    RACK = "rack"


#: A child node must sit at a lower level than its parent (devices fit anywhere).
NODE_LEVEL = {
    NodeType.COMPONENT: 0,
    NodeType.BLADE: 1,
    NodeType.MOTHERBOARD: 1,
    NodeType.SERVER: 2,
    NodeType.RACK: 3,
}


@dataclass(frozen=True, slots=True)
class Node:
    """An assembled thing: its type and serial."""

    type: NodeType
    serial: str

    def _doc(self) -> dict[str, Any]:
        return {"type": self.type.value, "serial": self.serial}


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A root-of-trust device, by its device id."""

    device_id: str

    def _doc(self) -> dict[str, Any]:
        return {"device_id": self.device_id}


ChildRef = DeviceRef | Node


@dataclass(frozen=True, slots=True)
class Assembly(_Payload):
    """An assembler's record: what was put into (and taken out of) ``parent``.

    A record is a delta: ``children`` were installed, ``removed`` were taken out. Nothing is
    ever silently overwritten.
    """

    KIND: ClassVar[str] = "assembly"
    CONTENT_TYPE: ClassVar[str] = _content_type("assembly")

    parent: Node
    children: tuple[ChildRef, ...]
    removed: tuple[ChildRef, ...] = ()
    reason: str | None = None

    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "parent": self.parent._doc(),
            "children": [c._doc() for c in self.children],
            "removed": [c._doc() for c in self.removed],
        }
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc


def _node(value: object, where: str) -> Node:
    doc = obj(value, where, required=frozenset({"type", "serial"}))
    return Node(
        type=choice(doc["type"], f"{where}.type", NodeType),
        serial=ident(doc["serial"], f"{where}.serial"),
    )


def _child(value: object, where: str) -> ChildRef:
    if isinstance(value, dict) and "device_id" in value:
        doc = obj(value, where, required=frozenset({"device_id"}))
        return DeviceRef(_device_id(doc["device_id"], f"{where}.device_id"))
    return _node(value, where)


def _children(value: object, where: str, parent: Node) -> tuple[ChildRef, ...]:
    items = array(value, where, max_items=MAX_CHILDREN)
    children = tuple(_child(c, f"{where}[{i}]") for i, c in enumerate(items))
    for i, child in enumerate(children):
        if child == parent:
            fail(f"{where}[{i}]", "is the parent itself", code="assembly-self-child")
        if isinstance(child, Node) and NODE_LEVEL[child.type] >= NODE_LEVEL[parent.type]:
            fail(
                f"{where}[{i}]", "cannot sit inside its parent's type", code="assembly-bad-nesting"
            )
    return children


def parse_assembly(payload: bytes) -> Assembly:
    """Read an assembly record (``assembly``)."""
    where = Assembly.KIND
    doc = obj(
        load(payload, where),
        where,
        required=frozenset({"parent", "children"}),
        optional=frozenset({"removed", "reason"}),
    )
    parent = _node(doc["parent"], f"{where}.parent")
    children = _children(doc["children"], f"{where}.children", parent)
    removed = _children(doc.get("removed", []), f"{where}.removed", parent)
    if not children and not removed:
        fail(where, "installs and removes nothing", code="assembly-empty")
    unique([*children, *removed], where, code="assembly-duplicate-child")
    return Assembly(
        parent=parent,
        children=children,
        removed=removed,
        reason=text(doc["reason"], f"{where}.reason") if "reason" in doc else None,
    )


# -- custody -------------------------------------------------------------------------------


class CustodyEvent(StrEnum):
    """A carrier's hand-off event."""

    SHIPPED = "shipped"
    RECEIVED = "received"


def parse_time(value: object, where: str) -> dt.datetime:
    """An RFC 3339 UTC time (``Z``, up to 9 fraction digits kept to the microsecond)."""
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        fail(where, "must be an RFC 3339 UTC time such as 2026-01-31T12:00:00Z")
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")[:6]),
            tzinfo=dt.UTC,
        )
    except ValueError:
        fail(where, "is not a valid date and time")


def format_time(value: dt.datetime) -> str:
    """The RFC 3339 UTC text of ``value`` (a fraction only when it has microseconds)."""
    utc = value.astimezone(dt.UTC)
    fraction = f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else ""
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


@dataclass(frozen=True, slots=True)
class Custody(_Payload):
    """A carrier's custody record: a shipment shipped or received, with its seals."""

    KIND: ClassVar[str] = "custody"
    CONTENT_TYPE: ClassVar[str] = _content_type("custody")

    shipment_id: str
    event: CustodyEvent
    from_org: str
    to_org: str
    contents: tuple[str, ...]
    seals: tuple[str, ...]
    time: dt.datetime
    place: str

    def _doc(self) -> dict[str, Any]:
        return {
            "shipment_id": self.shipment_id,
            "event": self.event.value,
            "from_org": self.from_org,
            "to_org": self.to_org,
            "contents": list(self.contents),
            "seals": list(self.seals),
            "time": format_time(self.time),
            "place": self.place,
        }


def parse_custody(payload: bytes) -> Custody:
    """Read a custody record (``custody``)."""
    where = Custody.KIND
    names = ("shipment_id", "event", "from_org", "to_org", "contents", "seals", "time", "place")
    doc = obj(load(payload, where), where, required=frozenset(names))
    return Custody(
        shipment_id=ident(doc["shipment_id"], f"{where}.shipment_id"),
        event=choice(doc["event"], f"{where}.event", CustodyEvent),
        from_org=ident(doc["from_org"], f"{where}.from_org"),
        to_org=ident(doc["to_org"], f"{where}.to_org"),
        contents=_idents(doc["contents"], f"{where}.contents", max_items=MAX_CONTENTS, min_items=1),
        seals=_idents(doc["seals"], f"{where}.seals", max_items=MAX_SEALS),
        time=parse_time(doc["time"], f"{where}.time"),
        place=text(doc["place"], f"{where}.place"),
    )


# -- arrival -------------------------------------------------------------------------------


class Verdict(StrEnum):
    """Pass or fail."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Challenge:
    """One device's answer to a fresh challenge with its identity key."""

    device_id: str
    nonce: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Arrival(_Payload):
    """An operator's arrival verification of one server of a shipment."""

    KIND: ClassVar[str] = "arrival"
    CONTENT_TYPE: ClassVar[str] = _content_type("arrival")

    shipment_id: str
    server_serial: str
    seals_intact: bool
    devices_challenged: tuple[Challenge, ...]
    result: Verdict
    reasons: tuple[str, ...] = ()

    def _doc(self) -> dict[str, Any]:
        return {
            "shipment_id": self.shipment_id,
            "server_serial": self.server_serial,
            "seals_intact": self.seals_intact,
            "devices_challenged": [
                {"device_id": c.device_id, "nonce": c.nonce, "ok": c.ok}
                for c in self.devices_challenged
            ],
            "result": self.result.value,
            "reasons": list(self.reasons),
        }


def _nonce(value: object, where: str) -> str:
    return hexa(value, where, min_bytes=MIN_NONCE_SIZE, max_bytes=MAX_NONCE_SIZE)


def _challenge(value: object, where: str) -> Challenge:
    doc = obj(value, where, required=frozenset({"device_id", "nonce", "ok"}))
    return Challenge(
        device_id=_device_id(doc["device_id"], f"{where}.device_id"),
        nonce=_nonce(doc["nonce"], f"{where}.nonce"),
        ok=boolean(doc["ok"], f"{where}.ok"),
    )


def parse_arrival(payload: bytes) -> Arrival:
    """Read an arrival verification (``arrival``)."""
    where = Arrival.KIND
    names = ("shipment_id", "server_serial", "seals_intact", "devices_challenged", "result")
    doc = obj(
        load(payload, where),
        where,
        required=frozenset(names),
        optional=frozenset({"reasons"}),
    )
    items = array(
        doc["devices_challenged"], f"{where}.devices_challenged", max_items=MAX_DEVICE_RESULTS
    )
    challenges = tuple(
        _challenge(c, f"{where}.devices_challenged[{i}]") for i, c in enumerate(items)
    )
    unique([c.device_id for c in challenges], f"{where}.devices_challenged")
    arrival = Arrival(
        shipment_id=ident(doc["shipment_id"], f"{where}.shipment_id"),
        server_serial=ident(doc["server_serial"], f"{where}.server_serial"),
        seals_intact=boolean(doc["seals_intact"], f"{where}.seals_intact"),
        devices_challenged=challenges,
        result=choice(doc["result"], f"{where}.result", Verdict),
        reasons=_reasons(doc.get("reasons", []), f"{where}.reasons"),
    )
    if arrival.result is Verdict.PASS and not (
        arrival.seals_intact and all(c.ok for c in challenges)
    ):
        fail(
            f"{where}.result",
            "is pass with a broken seal or a failed challenge",
            code="arrival-inconsistent",
        )
    if arrival.result is Verdict.FAIL and not arrival.reasons:
        fail(f"{where}.reasons", "a failed arrival needs a reason", code="arrival-inconsistent")
    return arrival


# -- attestation result --------------------------------------------------------------------


class EarStatus(StrEnum):
    """An IETF RATS EAR trust tier."""

    NONE = "none"
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


class TrustClaim(StrEnum):
    """A claim of the EAR / AR4SI trustworthiness vector."""

    INSTANCE_IDENTITY = "instance-identity"
    CONFIGURATION = "configuration"
    EXECUTABLES = "executables"
    FILE_SYSTEM = "file-system"
    HARDWARE = "hardware"
    RUNTIME_OPAQUE = "runtime-opaque"
    STORAGE_OPAQUE = "storage-opaque"
    SOURCED_DATA = "sourced-data"


#: How bad a tier is; an overall status may not be better than any device's.
_SEVERITY = {
    EarStatus.NONE: 0,
    EarStatus.AFFIRMING: 0,
    EarStatus.WARNING: 1,
    EarStatus.CONTRAINDICATED: 2,
}


#: Largest evidence signature, in bytes (an ML-DSA-87 signature is 4,627 bytes).
MAX_SIGNATURE_SIZE = 8 * 1024


@dataclass(frozen=True, slots=True)
class ComponentMeasurement:
    """A device's measurement of one firmware component: algorithm and lowercase hex digest."""

    component: str
    alg: DigestAlgorithm
    digest: str

    def _doc(self) -> dict[str, Any]:
        return {"component": self.component, "alg": self.alg.value, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class DeviceEvidence:
    """What a device signed for the verifier: its measurements over the verifier's nonce.

    ``signature`` is by the key of ``chain[0]`` (alias certificates, DER, leaf first, the last
    one issued by the device's identity key), or by the identity key itself when ``chain`` is
    empty. The signed bytes are :func:`sealtrail.provenance._evidence.evidence_message`.
    """

    chain: tuple[bytes, ...]
    measurements: tuple[ComponentMeasurement, ...]
    signature: bytes

    def _doc(self) -> dict[str, Any]:
        return {
            "chain": [base64.b64encode(c).decode("ascii") for c in self.chain],
            "measurements": [m._doc() for m in self.measurements],
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """One device's part of an attestation result, with the evidence it was appraised on."""

    device_id: str
    status: EarStatus
    reasons: tuple[str, ...] = ()
    evidence: DeviceEvidence | None = None

    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "device_id": self.device_id,
            "status": self.status.value,
            "reasons": list(self.reasons),
        }
        if self.evidence is not None:
            doc["evidence"] = self.evidence._doc()
        return doc


@dataclass(frozen=True, slots=True)
class AttestationResult(_Payload):
    """An operator's verifier's appraisal of a server, shaped after IETF RATS EAR.

    ``trustworthiness`` is the EAR trustworthiness vector as (claim, tier) pairs sorted by
    claim; tiers are AR4SI values (-128..127: 0 none, 2 affirming, 32 warning, 96
    contraindicated, and the ranges around them).
    """

    KIND: ClassVar[str] = "attestation-result"
    CONTENT_TYPE: ClassVar[str] = _content_type("attestation-result")

    server_serial: str
    nonce: str
    status: EarStatus
    trustworthiness: tuple[tuple[TrustClaim, int], ...]
    devices: tuple[DeviceResult, ...]

    def _doc(self) -> dict[str, Any]:
        return {
            "server_serial": self.server_serial,
            "nonce": self.nonce,
            "status": self.status.value,
            "trustworthiness": {claim.value: tier for claim, tier in self.trustworthiness},
            "devices": [d._doc() for d in self.devices],
        }


def _evidence_bytes(value: object, where: str, *, max_bytes: int) -> bytes:
    """Canonical (padded) base64 of 1..``max_bytes`` bytes."""
    if not isinstance(value, str):
        fail(where, "must be a base64 string", code="attestation-bad-evidence")
    if len(value) > 4 * ((max_bytes + 2) // 3):
        too_large(where, f"encodes more than {max_bytes} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        fail(where, "must be base64", code="attestation-bad-evidence")
    if not raw or base64.b64encode(raw).decode("ascii") != value:
        fail(where, "must be canonical, non-empty base64 (padded)", code="attestation-bad-evidence")
    if len(raw) > max_bytes:
        too_large(where, f"encodes more than {max_bytes} bytes")
    return raw


def _component_measurement(value: object, where: str) -> ComponentMeasurement:
    doc = obj(value, where, required=frozenset({"component", "alg", "digest"}))
    alg = choice(doc["alg"], f"{where}.alg", DigestAlgorithm)
    size = _DIGEST_SIZE[alg]
    return ComponentMeasurement(
        component=ident(doc["component"], f"{where}.component"),
        alg=alg,
        digest=hexa(doc["digest"], f"{where}.digest", min_bytes=size, max_bytes=size),
    )


def _evidence(value: object, where: str) -> DeviceEvidence:
    doc = obj(value, where, required=frozenset({"chain", "measurements", "signature"}))
    items = array(doc["chain"], f"{where}.chain", max_items=MAX_CHAIN_LENGTH)
    chain = tuple(
        _evidence_bytes(c, f"{where}.chain[{i}]", max_bytes=MAX_CERTIFICATE_SIZE)
        for i, c in enumerate(items)
    )
    items = array(
        doc["measurements"], f"{where}.measurements", max_items=MAX_MEASUREMENTS, min_items=1
    )
    measurements = tuple(
        _component_measurement(m, f"{where}.measurements[{i}]") for i, m in enumerate(items)
    )
    # One digest per component and algorithm: two would leave it open which one ran.
    unique([(m.component, m.alg) for m in measurements], f"{where}.measurements")
    signature = _evidence_bytes(
        doc["signature"], f"{where}.signature", max_bytes=MAX_SIGNATURE_SIZE
    )
    return DeviceEvidence(chain=chain, measurements=measurements, signature=signature)


def _device_result(value: object, where: str) -> DeviceResult:
    doc = obj(
        value,
        where,
        required=frozenset({"device_id", "status"}),
        optional=frozenset({"reasons", "evidence"}),
    )
    return DeviceResult(
        device_id=_device_id(doc["device_id"], f"{where}.device_id"),
        status=choice(doc["status"], f"{where}.status", EarStatus),
        reasons=_reasons(doc.get("reasons", []), f"{where}.reasons"),
        evidence=_evidence(doc["evidence"], f"{where}.evidence") if "evidence" in doc else None,
    )


def parse_attestation_result(payload: bytes) -> AttestationResult:
    """Read an attestation result (``attestation-result``)."""
    where = AttestationResult.KIND
    names = ("server_serial", "nonce", "status", "trustworthiness", "devices")
    doc = obj(load(payload, where), where, required=frozenset(names))
    vector = obj(
        doc["trustworthiness"],
        f"{where}.trustworthiness",
        required=frozenset(),
        optional=frozenset(c.value for c in TrustClaim),
    )
    trustworthiness = tuple(
        (
            TrustClaim(claim),
            integer(vector[claim], f"{where}.trustworthiness.{claim}", low=-128, high=127),
        )
        for claim in sorted(vector)
    )
    items = array(doc["devices"], f"{where}.devices", max_items=MAX_DEVICE_RESULTS, min_items=1)
    devices = tuple(_device_result(d, f"{where}.devices[{i}]") for i, d in enumerate(items))
    unique([d.device_id for d in devices], f"{where}.devices")
    status = choice(doc["status"], f"{where}.status", EarStatus)
    if any(_SEVERITY[d.status] > _SEVERITY[status] for d in devices):
        fail(
            f"{where}.status",
            "is better than one of its devices' statuses",
            code="attestation-inconsistent",
        )
    return AttestationResult(
        server_serial=ident(doc["server_serial"], f"{where}.server_serial"),
        nonce=_nonce(doc["nonce"], f"{where}.nonce"),
        status=status,
        trustworthiness=trustworthiness,
        devices=devices,
    )


# -- compliance ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compliance(_Payload):
    """An operator's compliance state change for one server, with its reason."""

    KIND: ClassVar[str] = "compliance"
    CONTENT_TYPE: ClassVar[str] = _content_type("compliance")

    server_serial: str
    from_state: ComplianceState
    to_state: ComplianceState
    reason: str

    def _doc(self) -> dict[str, Any]:
        return {
            "server_serial": self.server_serial,
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "reason": self.reason,
        }


def parse_compliance(payload: bytes) -> Compliance:
    """Read a compliance state change (``compliance``)."""
    where = Compliance.KIND
    names = ("server_serial", "from_state", "to_state", "reason")
    doc = obj(load(payload, where), where, required=frozenset(names))
    compliance = Compliance(
        server_serial=ident(doc["server_serial"], f"{where}.server_serial"),
        from_state=choice(doc["from_state"], f"{where}.from_state", ComplianceState),
        to_state=choice(doc["to_state"], f"{where}.to_state", ComplianceState),
        reason=text(doc["reason"], f"{where}.reason"),
    )
    check_transition(compliance.from_state, compliance.to_state)
    return compliance


# -- the service's provenance policy ---------------------------------------------------------

#: Most components one policy names a minimum security version for.
MAX_POLICY_COMPONENTS = 256
#: Longest attestation age a policy allows: a year, in seconds.
MAX_POLICY_AGE = 366 * 24 * 3600


@dataclass(frozen=True, slots=True)
class PolicyChange(_Payload):
    """The service's provenance policy from this entry on: a record the service signs
    (never an organization's statement), versions one by one.

    ``max_attestation_age`` (seconds) is how old a server's latest passing attestation may
    be when it is moved to ``verified`` or ``production`` and when ``compliance sweep``
    looks; ``min_security_version`` maps a firmware component to the lowest security
    version an attestation accepts without a warning.
    """

    KIND: ClassVar[str] = "policy"
    CONTENT_TYPE: ClassVar[str] = _content_type("policy")

    version: int
    max_attestation_age: int
    min_security_version: tuple[tuple[str, int], ...] = ()

    def _doc(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "max_attestation_age": self.max_attestation_age,
            "min_security_version": dict(self.min_security_version),
        }


def parse_policy_change(payload: bytes) -> PolicyChange:
    """Read a provenance policy record (``policy``)."""
    where = PolicyChange.KIND
    names = ("version", "max_attestation_age", "min_security_version")
    doc = obj(load(payload, where), where, required=frozenset(names))
    minimums = doc["min_security_version"]
    if not isinstance(minimums, dict):
        fail(f"{where}.min_security_version", "must be an object")
    if len(minimums) > MAX_POLICY_COMPONENTS:
        too_large(
            f"{where}.min_security_version", f"names more than {MAX_POLICY_COMPONENTS} components"
        )
    floors = tuple(
        sorted(
            (
                ident(component, f"{where}.min_security_version"),
                integer(
                    floor,
                    f"{where}.min_security_version[{component!r}]",
                    low=0,
                    high=MAX_SECURITY_VERSION,
                ),
            )
            for component, floor in minimums.items()
        )
    )
    return PolicyChange(
        version=integer(doc["version"], f"{where}.version", low=1, high=2**31 - 1),
        max_attestation_age=integer(
            doc["max_attestation_age"], f"{where}.max_attestation_age", low=1, high=MAX_POLICY_AGE
        ),
        min_security_version=floors,
    )
