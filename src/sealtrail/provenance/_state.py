"""The provenance model: the state the log's provenance statements build, and the rules
that need the log's history.

:class:`ProvenanceState` applies :class:`Fact` values (a registered statement's payload, its
issuer's organization and its entry id) one at a time, in log order. Each fact is either
*applied*, giving a list of row changes, or *refused* with a stable code and changing
nothing. The same code runs in three places, so that they cannot disagree:

* at registration, on a tentative state (the index plus the statements accepted since), to
  refuse a statement before it is stored;
* when the index is built (``sealtrail index rebuild``, and as the log grows), on the state
  the index database holds;
* in ``sealtrail audit``, on a fresh state in memory, whose rows are compared with the
  database's.

The state is a set of **rows**: ``(table, key) -> JSON object``, read and written through
a :class:`Rows` source. Values hold entry ids, never log indexes, so that a fact gives the
same changes whether or not its index is known yet. The tables are documented in
docs/provenance.md ("The provenance index").

Pure: no I/O, no clock, no randomness. Time comes from the facts (their ``iat``).

**The rules have a version**, :data:`RULES_VERSION`, which the index records (it is built
with one version, never two: :meth:`~sealtrail.storage.IndexStore.rules_version`). Bump it
in the commit that changes what any fact gives: whether it is applied or refused, its code,
the rows it writes or clears, or its subjects — here, or in what the rules call (the
appraisal of evidence in ``_evidence.py``, the compliance state machine in
``_compliance.py``). An index of another version is then refused by servers
(``index-rules-outdated``, ``index-rules-newer``) and reported once by the audit, instead
of being extended with rows the new rules would not have given, which the audit would
report as rows edited behind the log. A change that gives every fact the same outcome and
rows (a refactoring, a faster path, a message's wording) keeps the version.

Versions: 1, every release before versions were recorded; 2, trips (the ``trip`` row, an
arrival's and attestation's rows cleared when a server ships or its contents change, only
the recipient, the assembler and the carrier speaking for theirs, only the holder sending,
a passing arrival on the latest trip before an affirming attestation and before
``verified`` or ``production``) and the appraisal holding
measurements to the alias chain's DICE TcbInfo FWIDs (``evidence-tcb-mismatch``); 3, the
service's policy (maximum attestation age, minimum security versions) read from the log's
policy records in log order (the ``policy`` row) instead of the configuration, and a
received record of another organization's shipment refused as one of an unknown shipment
(``custody-not-shipped``, which was ``custody-wrong-party``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from sealtrail.errors import VerificationError

from ._compliance import ComplianceState, stale_reason
from ._evidence import AliasChains, appraise_devices
from ._kinds import Payload
from ._payloads import (
    Arrival,
    Assembly,
    AttestationResult,
    ChildRef,
    Compliance,
    ComponentMeasurement,
    Custody,
    CustodyEvent,
    DeviceManifest,
    DeviceRef,
    DeviceResult,
    EarStatus,
    FirmwareRelease,
    Node,
    NodeType,
    PolicyChange,
    Verdict,
)

__all__ = [
    "POLICY_KEY",
    "RULES_VERSION",
    "Change",
    "Fact",
    "MemoryRows",
    "Outcome",
    "ProvenancePolicy",
    "ProvenanceState",
    "Refused",
    "Rows",
    "child_key",
    "policy_of",
]

#: The version of the rules below (see the module docs: bump it whenever a fact's outcome,
#: code, rows or subjects change).
RULES_VERSION = 3

#: The key of the one row of the ``policy`` table.
POLICY_KEY = "provenance"

Change = tuple[str, str, str | None]
"""``(table, key, value)``: a row's new value as canonical JSON text, or None once deleted."""

#: A row value: a JSON object.
Value = dict[str, Any]

#: How much worse one EAR status is than another (an overall status may not be better).
SEVERITY = {
    EarStatus.AFFIRMING: 0,
    EarStatus.NONE: 1,
    EarStatus.WARNING: 1,
    EarStatus.CONTRAINDICATED: 2,
}

_S = ComplianceState


#: The assembler of a node whose builder is not known: a passport's stand-in for a node
#: outside its scope (the index always knows; an organization's name is never empty).
_UNKNOWN = ""


def encode(value: Value) -> str:
    """A row value's canonical JSON text (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def child_key(child: ChildRef) -> str:
    """The key of a child in the ``parent`` table: ``device:<id>`` or ``node:<serial>``."""
    if isinstance(child, DeviceRef):
        return f"device:{child.device_id}"
    return f"node:{child.serial}"


@dataclass(frozen=True, slots=True)
class Fact:
    """A registered provenance statement, as the model sees it.

    ``org`` is the issuer's organization name (empty for the service's own policy record),
    ``iat`` the statement's issued-at time (seconds since the epoch, as signed),
    ``entry_id`` its leaf entry (32 bytes).
    """

    entry_id: bytes
    org: str
    iat: int
    payload: Payload

    @property
    def entry(self) -> str:
        return self.entry_id.hex()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying a fact did: its changes, or the refusal's code and message."""

    changes: tuple[Change, ...] = ()
    subjects: tuple[str, ...] = ()
    code: str | None = None
    message: str = ""

    @property
    def applied(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class ProvenancePolicy:
    """Settings the rules read.

    ``min_security_version`` maps a firmware component to the lowest security version an
    attestation accepts without a warning; ``max_attestation_age`` (seconds) is how old a
    server's last passing attestation may be before ``compliance sweep`` makes it
    non-compliant. With ``require_challenge``, registration accepts an attestation's or an
    arrival's nonces only if this service issued them for that server (its challenge
    route) less than ``challenge_ttl`` seconds before: fresh as well as used once.
    """

    min_security_version: Mapping[str, int] = field(default_factory=dict)
    max_attestation_age: int = 24 * 3600
    require_challenge: bool = False
    challenge_ttl: int = 300

    def initial(self) -> ProvenancePolicy:
        """The policy a ledger starts from: these challenge settings (registration's alone)
        with the default attestation age and no minimum security versions. Those two are
        in force until the log holds a policy record, so that every replay of the log
        judges its entries alike, whatever a configuration says: a server records its
        configured ones (:meth:`ProvenanceLedger.record_policy`)."""
        return ProvenancePolicy(
            require_challenge=self.require_challenge, challenge_ttl=self.challenge_ttl
        )


def policy_of(base: ProvenancePolicy, row: Value | None) -> ProvenancePolicy:
    """The policy in force: the settings of ``row`` (the ``policy`` row: the latest policy
    record), over ``base`` (the defaults, before the log holds a record)."""
    if row is None:
        return base
    return replace(
        base,
        max_attestation_age=row["max_attestation_age"],
        min_security_version=dict(row["min_security_version"]),
    )


class Rows(Protocol):
    """Where the state's rows live: a dict in memory, or the index database."""

    def get(self, table: str, key: str) -> Value | None:
        """The row's current value, or None."""
        ...

    def put(self, table: str, key: str, value: Value | None) -> None:
        """Set (or with None, delete) a row."""
        ...


class MemoryRows:
    """Rows in a dict: the tentative state at registration, and the audit's replay."""

    def __init__(self, rows: Mapping[str, Mapping[str, Value]] | None = None) -> None:
        self.tables: dict[str, dict[str, Value]] = {
            table: dict(values) for table, values in (rows or {}).items()
        }

    def get(self, table: str, key: str) -> Value | None:
        return self.tables.get(table, {}).get(key)

    def put(self, table: str, key: str, value: Value | None) -> None:
        if value is None:
            self.tables.get(table, {}).pop(key, None)
        else:
            self.tables.setdefault(table, {})[key] = value

    def dump(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(table, key, value)``, ordered, values as canonical JSON."""
        for table in sorted(self.tables):
            values = self.tables[table]
            for key in sorted(values):
                yield table, key, encode(values[key])


def lineage(rows: Rows, serial: str) -> Iterator[str]:
    """``serial``, then the node it is installed in, and so on up."""
    seen: set[str] = set()
    current: str | None = serial
    while current is not None and current not in seen:
        yield current
        seen.add(current)
        holder = rows.get("parent", f"node:{current}")
        current = None if holder is None else holder["parent"]


def installed(rows: Rows, serial: str) -> Iterator[tuple[str, str]]:
    """Every ``(kind, name)`` installed in ``serial`` at any depth, ``serial`` first:
    ``("node", serial)`` for nodes and ``("device", id)`` for devices."""
    stack = [serial]
    seen: set[str] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        yield "node", current
        node = rows.get("node", current)
        for key in node["children"] if node is not None else ():
            kind, _, name = key.partition(":")
            if kind == "device":
                yield "device", name
            else:
                stack.append(name)


def nodes_in(rows: Rows, serial: str) -> Iterator[str]:
    """``serial`` and every node installed in it, at any depth."""
    return (name for kind, name in installed(rows, serial) if kind == "node")


class Refused(VerificationError):
    """A fact the log's history refuses: :meth:`ProvenanceState.apply` reports it as an
    :class:`Outcome`, registration raises it."""

    #: The refusal rests on the log's history as this process knows it (see
    #: ``TransparencyService.check_current``: on a shared store the history is brought up
    #: to date, and the statement checked again if that taught the process anything).
    depends_on_history = True

    code = "provenance-refused"


def _refuse(code: str, message: str) -> Refused:
    return Refused(message, code=code)


class _Writer:
    """Buffers one fact's writes: reads see them, and nothing reaches the rows unless the
    whole fact is applied."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.pending: dict[tuple[str, str], Value | None] = {}
        self.order: list[tuple[str, str]] = []
        self.subjects: set[str] = set()

    def get(self, table: str, key: str) -> Value | None:
        if (table, key) in self.pending:
            return self.pending[(table, key)]
        return self.rows.get(table, key)

    def put(self, table: str, key: str, value: Value | None) -> None:
        if (table, key) not in self.pending:
            self.order.append((table, key))
        self.pending[(table, key)] = value

    def about(self, *subjects: str) -> None:
        self.subjects.update(subjects)

    def commit(self) -> tuple[Change, ...]:
        changes = []
        for table, key in self.order:
            value = self.pending[(table, key)]
            self.rows.put(table, key, value)
            changes.append((table, key, None if value is None else encode(value)))
        return tuple(changes)


class ProvenanceState:
    """The provenance rows and the rules that change them; see the module docstring."""

    def __init__(
        self,
        rows: Rows | None = None,
        *,
        policy: ProvenancePolicy | None = None,
        chains: AliasChains | None = None,
        unseen: Callable[[str], bool] | None = None,
    ) -> None:
        self.rows: Rows = rows if rows is not None else MemoryRows()
        self.policy = policy or ProvenancePolicy()
        self.chains = chains or AliasChains()
        #: The nodes whose rows this state does not hold in full (a passport's replay: those
        #: outside its scope); a node's holder resting on one is unknown. The index and the
        #: audit hold every row: None.
        self.unseen = unseen
        self._rules: dict[type[Any], Callable[[_Writer, Fact, Any], None]] = {
            DeviceManifest: self._manifest,
            FirmwareRelease: self._release,
            Assembly: self._assembly,
            Custody: self._custody,
            Arrival: self._arrival,
            AttestationResult: self._attestation,
            Compliance: self._compliance,
            PolicyChange: self._policy_change,
        }

    def policy_in_force(self, rows: Rows | None = None) -> ProvenancePolicy:
        """The policy the rules apply: :func:`policy_of` this state's ``policy`` and its
        ``policy`` row."""
        return policy_of(self.policy, (rows or self.rows).get("policy", POLICY_KEY))

    # -- applying facts -------------------------------------------------------------------

    def apply(self, fact: Fact) -> Outcome:
        """Apply ``fact`` if the history allows it; a refusal changes nothing."""
        writer = _Writer(self.rows)
        try:
            self._rules[type(fact.payload)](writer, fact, fact.payload)
        except Refused as exc:
            return Outcome(code=exc.code, message=str(exc))
        return Outcome(changes=writer.commit(), subjects=tuple(sorted(writer.subjects)))

    # -- device manifests and firmware ----------------------------------------------------

    def _manifest(self, w: _Writer, fact: Fact, manifest: DeviceManifest) -> None:
        for i, device in enumerate(manifest.devices):
            if w.get("device", device.device_id) is not None:
                raise _refuse(
                    "manifest-cloned-device",
                    f"devices[{i}]: this identity key is already registered by another "
                    "manifest (a cloned identity)",
                )
            serial_key = f"{fact.org}/{device.serial}"
            if w.get("device-serial", serial_key) is not None:
                raise _refuse(
                    "manifest-duplicate-serial",
                    f"devices[{i}]: the maker already registered a device with this serial",
                )
            w.put(
                "device",
                device.device_id,
                {
                    "serial": device.serial,
                    "kind": device.kind.value,
                    "algorithm": device.algorithm.value,
                    "maker": fact.org,
                    "batch": manifest.batch_id,
                    "manifest": fact.entry,
                    "identity": base64.b64encode(device.chain[0]).decode("ascii"),
                },
            )
            w.put("device-serial", serial_key, {"device_id": device.device_id})
            w.about(f"device:{device.device_id}")

    def _release(self, w: _Writer, fact: Fact, release: FirmwareRelease) -> None:
        owner = w.get("component", release.component)
        if owner is not None and owner["maker"] != fact.org:
            raise _refuse(
                "firmware-component-owner",
                "another maker registered releases of this component",
            )
        key = f"{release.component}/{release.version}"
        if w.get("release", key) is not None:
            raise _refuse("firmware-duplicate-release", "this version is already released")
        for i, m in enumerate(release.measurements):
            mkey = f"{release.component}/{m.alg.value}/{m.digest}"
            if w.get("measurement", mkey) is not None:
                raise _refuse(
                    "firmware-duplicate-measurement",
                    f"measurements[{i}]: an earlier release has this measurement",
                )
            w.put(
                "measurement",
                mkey,
                {"version": release.version, "security_version": release.security_version},
            )
        w.put("component", release.component, {"maker": fact.org})
        w.put(
            "release",
            key,
            {
                "security_version": release.security_version,
                "maker": fact.org,
                "entry": fact.entry,
                "measurements": [
                    {"alg": m.alg.value, "digest": m.digest} for m in release.measurements
                ],
            },
        )
        w.about(f"component:{release.component}")

    # -- assembly -------------------------------------------------------------------------

    def _assembly(self, w: _Writer, fact: Fact, assembly: Assembly) -> None:
        parent = assembly.parent
        node = w.get("node", parent.serial)
        if node is not None and node["type"] != parent.type.value:
            raise _refuse(
                "assembly-parent-type", f"the parent is a {node['type']}, not a {parent.type}"
            )
        if node is not None and node["assembler"] not in (fact.org, _UNKNOWN):
            raise _refuse(
                "assembly-not-assembler",
                f"the parent was built by {node['assembler']!r}: only that organization "
                "records changes to it",
            )
        if self._transit(w, parent.serial) is not None:
            raise _refuse("assembly-in-transit", "the parent is in transit")
        children: set[str] = set(node["children"]) if node is not None else set()
        for i, child in enumerate(assembly.removed):
            key = child_key(child)
            if key not in children:
                raise _refuse(
                    "assembly-not-installed", f"removed[{i}]: the child is not in this parent"
                )
            children.discard(key)
            w.put("parent", key, None)
            w.about(key)
        for i, child in enumerate(assembly.children):
            key = child_key(child)
            self._installable(w, child, parent, f"children[{i}]")
            children.add(key)
            w.put("parent", key, {"parent": parent.serial, "entry": fact.entry})
            w.about(key)
        w.put(
            "node",
            parent.serial,
            {
                "type": parent.type.value,
                "assembler": node["assembler"] if node is not None else fact.org,
                "children": sorted(children),
            },
        )
        w.about(f"node:{parent.serial}")
        # A server whose contents changed must attest again: its last attestation measured
        # another set of devices.
        for serial in lineage(w, parent.serial):
            if self._is_server(w, serial):
                w.put("attestation", serial, None)

    def _installable(self, w: _Writer, child: ChildRef, parent: Node, where: str) -> None:
        key = child_key(child)
        if isinstance(child, DeviceRef):
            if w.get("device", child.device_id) is None:
                raise _refuse(
                    "assembly-unknown-device",
                    f"{where}: no registered manifest holds this device (a rogue device)",
                )
        else:
            node = w.get("node", child.serial)
            if node is None:
                raise _refuse(
                    "assembly-unknown-node",
                    f"{where}: this node has no provenance (no assembly record built it)",
                )
            if node["type"] != child.type.value:
                raise _refuse("assembly-parent-type", f"{where}: the node is a {node['type']}")
            if self._is_ancestor(w, child.serial, parent.serial):
                raise _refuse("assembly-cycle", f"{where}: the child contains the parent")
            if self._shipping(w, child.serial):
                raise _refuse(
                    "assembly-in-transit", f"{where}: the child, or a node in it, is in transit"
                )
        holder = w.get("parent", key)
        if holder is not None:
            raise _refuse(
                "assembly-child-elsewhere",
                f"{where}: the child is installed in {holder['parent']!r}; "
                "an assembly record must remove it there first",
            )

    def _is_ancestor(self, w: _Writer, ancestor: str, serial: str) -> bool:
        return ancestor in lineage(w, serial)

    @staticmethod
    def _is_server(rows: Rows, serial: str) -> bool:
        node = rows.get("node", serial)
        return node is not None and node["type"] == NodeType.SERVER.value

    @staticmethod
    def _shipping(rows: Rows, serial: str) -> bool:
        """Whether ``serial`` or a node installed in it is in an open shipment."""
        return any(rows.get("transit", node) is not None for node in nodes_in(rows, serial))

    def _transit(self, rows: Rows, serial: str) -> Value | None:
        """The open shipment carrying ``serial`` or a node it is installed in."""
        for node in lineage(rows, serial):
            transit = rows.get("transit", node)
            if transit is not None:
                return transit
        return None

    def devices_of(self, serial: str, rows: Rows | None = None) -> list[str]:
        """The device ids installed in a node and everything below it, sorted."""
        found = installed(rows or self.rows, serial)
        return sorted(name for kind, name in found if kind == "device")

    # -- custody --------------------------------------------------------------------------

    def _custody(self, w: _Writer, fact: Fact, custody: Custody) -> None:
        shipment = w.get("shipment", custody.shipment_id)
        w.about(f"shipment:{custody.shipment_id}")
        if custody.event is CustodyEvent.SHIPPED:
            self._shipped(w, fact, custody, shipment)
        else:
            self._received(w, fact, custody, shipment)

    def _shipped(self, w: _Writer, fact: Fact, custody: Custody, shipment: Value | None) -> None:
        if shipment is not None:
            raise _refuse("custody-duplicate-shipment", "this shipment id is already used")
        for i, serial in enumerate(custody.contents):
            if w.get("node", serial) is None:
                raise _refuse(
                    "custody-unknown-contents", f"contents[{i}]: no assembly built this node"
                )
            if self._transit(w, serial) is not None or self._shipping(w, serial):
                raise _refuse(
                    "custody-already-in-transit",
                    f"contents[{i}]: it, or a node in it or holding it, is already in a shipment",
                )
            holder = self._holder(w, serial)
            if holder not in (custody.from_org, _UNKNOWN):
                raise _refuse(
                    "custody-not-holder",
                    f"contents[{i}]: it is held by {holder!r}, not by the sender",
                )
            w.put("transit", serial, {"shipment": custody.shipment_id})
            w.about(f"node:{serial}")
            # Each server shipped starts a trip: it arrives, and attests, anew.
            for server in filter(partial(self._is_server, w), nodes_in(w, serial)):
                w.put(
                    "trip",
                    server,
                    {"shipment": custody.shipment_id, "to": custody.to_org, "received": None},
                )
                w.put("arrival", server, None)
                w.put("attestation", server, None)
                w.about(f"node:{server}")
        w.put(
            "shipment",
            custody.shipment_id,
            {
                "carrier": fact.org,
                "from": custody.from_org,
                "to": custody.to_org,
                "contents": sorted(custody.contents),
                "seals": sorted(custody.seals),
                "shipped": fact.entry,
                "received": None,
                "findings": [],
            },
        )

    def _holder(self, w: _Writer, serial: str) -> str:
        """Who holds a node about to ship: the organization its servers were last shipped
        to, or, if none of them ever shipped, the node's assembler. Unknown when an unseen
        node comes first: its trips, and what is in it, may be the answer."""
        for found in nodes_in(w, serial):
            if self.unseen is not None and self.unseen(found):
                return _UNKNOWN
            trip = w.get("trip", found) if self._is_server(w, found) else None
            if trip is not None:
                return str(trip["to"])
        node = w.get("node", serial)
        return _UNKNOWN if node is None else str(node["assembler"])

    def _received(self, w: _Writer, fact: Fact, custody: Custody, shipment: Value | None) -> None:
        # Another organization's shipment is answered as an unknown one: its receipt is
        # recorded by its carrier or its recipient only, and the refusal tells no one else
        # that it exists, whether it was received, or who its parties are.
        if shipment is None or fact.org not in (shipment["carrier"], shipment["to"]):
            raise _refuse(
                "custody-not-shipped",
                "no shipment this organization carries or receives was shipped under this id",
            )
        if shipment["received"] is not None:
            raise _refuse("custody-already-received", "this shipment was already received")
        if (custody.from_org, custody.to_org) != (shipment["from"], shipment["to"]):
            raise _refuse(
                "custody-handoff-mismatch",
                "the parties differ from the shipped record's (from, to)",
            )
        shipped, received = set(shipment["contents"]), set(custody.contents)
        sealed, intact = set(shipment["seals"]), set(custody.seals)
        findings = [
            *(f"contents-missing:{s}" for s in sorted(shipped - received)),
            *(f"contents-extra:{s}" for s in sorted(received - shipped)),
            *(f"seal-broken:{s}" for s in sorted(sealed - intact)),
            *(f"seal-unknown:{s}" for s in sorted(intact - sealed)),
        ]
        for serial in sorted(shipped):
            w.put("transit", serial, None)
            w.about(f"node:{serial}")
            for server in filter(partial(self._is_server, w), nodes_in(w, serial)):
                trip = w.get("trip", server)
                if trip is not None and trip["shipment"] == custody.shipment_id:
                    w.put("trip", server, {**trip, "received": fact.entry})
        w.put(
            "shipment",
            custody.shipment_id,
            {**shipment, "received": fact.entry, "findings": findings},
        )

    # -- arrival, attestation, compliance -------------------------------------------------

    def _server(self, w: _Writer, fact: Fact, serial: str, kind: str) -> Value | None:
        """Check that ``serial`` is a server and that ``fact``'s organization may speak
        for it: once shipped, only the organization it was shipped to. Returns its trip."""
        node = w.get("node", serial)
        if node is None or node["type"] != NodeType.SERVER.value:
            raise _refuse(
                f"{kind}-unknown-server", "no assembly record built a server with this serial"
            )
        w.about(f"node:{serial}")
        trip = w.get("trip", serial)
        if trip is not None and trip["to"] != fact.org:
            raise _refuse(
                f"{kind}-wrong-operator",
                f"the server was shipped to {trip['to']!r}: only that organization records "
                "its arrival, attestation and compliance",
            )
        return trip

    def _use_nonce(self, w: _Writer, nonce: str, fact: Fact, code: str) -> None:
        if w.get("nonce", nonce) is not None:
            raise _refuse(code, "this nonce was already used (a replay)")
        w.put("nonce", nonce, {"entry": fact.entry})

    def _arrival(self, w: _Writer, fact: Fact, arrival: Arrival) -> None:
        trip = self._server(w, fact, arrival.server_serial, "arrival")
        shipment = w.get("shipment", arrival.shipment_id)
        if shipment is None or shipment["received"] is None:
            raise _refuse("arrival-not-received", "the shipment has no received record")
        if not set(lineage(w, arrival.server_serial)) & set(shipment["contents"]):
            raise _refuse("arrival-not-in-shipment", "the server was not in this shipment")
        if self._transit(w, arrival.server_serial) is not None:
            raise _refuse("arrival-in-transit", "the server is in an open shipment")
        if trip is None or trip["shipment"] != arrival.shipment_id:
            raise _refuse(
                "arrival-not-latest-shipment",
                "the server was never shipped"
                if trip is None
                else f"the server's latest shipment is {trip['shipment']!r}",
            )
        for challenge in arrival.devices_challenged:
            self._use_nonce(w, challenge.nonce, fact, "arrival-nonce-replayed")
        if arrival.result is Verdict.PASS:
            if shipment["findings"]:
                raise _refuse(
                    "arrival-contradicts-custody",
                    "a pass for a shipment received with findings: "
                    + ", ".join(shipment["findings"][:8]),
                )
            expected = self.devices_of(arrival.server_serial, w)
            challenged = sorted(c.device_id for c in arrival.devices_challenged)
            if challenged != expected:
                raise _refuse(
                    "arrival-devices-mismatch",
                    "a pass whose challenged devices differ from the server's recorded assembly",
                )
        w.put(
            "arrival",
            arrival.server_serial,
            {
                "shipment": arrival.shipment_id,
                "result": arrival.result.value,
                "reasons": list(arrival.reasons),
                "entry": fact.entry,
                "iat": fact.iat,
            },
        )
        w.about(f"shipment:{arrival.shipment_id}")

    def appraise(self, result: AttestationResult, rows: Rows | None = None) -> AttestationResult:
        """The ledger's own appraisal of ``result``'s evidence against the log.

        Returns the result with every device's status and reasons as the ledger finds them
        (devices of the server's recorded assembly that are missing are added), and the
        overall status the worst of them. A registered result may be more severe than this,
        never better (``attestation-result-mismatch``).
        """
        source = rows or self.rows
        nonce = bytes.fromhex(result.nonce)
        expected = set(self.devices_of(result.server_serial, source))
        identities = {}
        for device in result.devices:
            row = source.get("device", device.device_id)
            if row is not None:
                identities[device.device_id] = base64.b64decode(row["identity"])
        # Every known device's evidence at once: its signature checks run side by side.
        found = iter(
            appraise_devices(
                [
                    (d.evidence, identities[d.device_id])
                    for d in result.devices
                    if d.device_id in identities
                ],
                nonce=nonce,
                release_of=lambda m: self._release_of(source, m),
                min_security_version=self.policy_in_force(source).min_security_version.get,
                chains=self.chains,
            )
        )
        appraised = []
        for device in result.devices:
            status: EarStatus
            reasons: tuple[str, ...]
            if device.device_id not in identities:
                status, reasons = EarStatus.CONTRAINDICATED, ("device-unknown",)
            else:
                status, reasons = next(found)
                if device.device_id not in expected:
                    status = EarStatus.CONTRAINDICATED
                    reasons = tuple(sorted({*reasons, "device-not-in-assembly"}))
            appraised.append(
                DeviceResult(device.device_id, status, reasons, evidence=device.evidence)
            )
        reported = {d.device_id for d in result.devices}
        for missing in sorted(expected - reported):
            appraised.append(DeviceResult(missing, EarStatus.CONTRAINDICATED, ("device-missing",)))
        worst = max((d.status for d in appraised), key=SEVERITY.__getitem__)
        return AttestationResult(
            server_serial=result.server_serial,
            nonce=result.nonce,
            status=worst,
            trustworthiness=result.trustworthiness,
            devices=tuple(appraised),
        )

    @staticmethod
    def _release_of(rows: Rows, m: ComponentMeasurement) -> int | None:
        row = rows.get("measurement", f"{m.component}/{m.alg.value}/{m.digest}")
        return None if row is None else int(row["security_version"])

    def _attestation(self, w: _Writer, fact: Fact, result: AttestationResult) -> None:
        trip = self._server(w, fact, result.server_serial, "attestation")
        if self._transit(w, result.server_serial) is not None:
            raise _refuse("attestation-in-transit", "the server is in an open shipment")
        if (
            trip is not None
            and result.status is EarStatus.AFFIRMING
            and not self._arrived(w, result.server_serial)
        ):
            raise _refuse(
                "attestation-needs-arrival",
                "an affirming attestation of a shipped server needs a passing arrival on its "
                "latest trip first (a failing one may be recorded)",
            )
        self._use_nonce(w, result.nonce, fact, "attestation-nonce-replayed")
        ours = self.appraise(result, w)
        recorded = {d.device_id: d for d in result.devices}
        for device in ours.devices:
            theirs = recorded.get(device.device_id)
            if theirs is None:
                continue  # a missing device makes the overall status at least as bad
            if SEVERITY[theirs.status] < SEVERITY[device.status]:
                raise _refuse(
                    "attestation-result-mismatch",
                    f"device {device.device_id[:16]}…: recorded {theirs.status.value}, but "
                    f"the evidence gives {device.status.value} ({', '.join(device.reasons)})",
                )
        if SEVERITY[result.status] < SEVERITY[ours.status]:
            reasons = sorted({r for d in ours.devices for r in d.reasons})
            raise _refuse(
                "attestation-result-mismatch",
                f"recorded {result.status.value}, but the evidence gives "
                f"{ours.status.value} ({', '.join(reasons)})",
            )
        w.put(
            "attestation",
            result.server_serial,
            {
                "status": result.status.value,
                "reasons": sorted({r for d in ours.devices for r in d.reasons}),
                "entry": fact.entry,
                "iat": fact.iat,
            },
        )
        for device in result.devices:
            w.about(f"device:{device.device_id}")

    @staticmethod
    def _arrived(rows: Rows, serial: str) -> bool:
        """Whether a passing arrival is on record for the server's latest trip (a shipment
        clears the one before)."""
        arrival = rows.get("arrival", serial)
        return arrival is not None and arrival["result"] == Verdict.PASS.value

    def compliance_state(self, serial: str, rows: Rows | None = None) -> ComplianceState:
        """A server's compliance state: ``registered`` until a compliance statement moves it."""
        row = (rows or self.rows).get("compliance", serial)
        return _S.REGISTERED if row is None else _S(row["state"])

    def _compliance(self, w: _Writer, fact: Fact, change: Compliance) -> None:
        serial = change.server_serial
        trip = self._server(w, fact, serial, "compliance")
        current = self.compliance_state(serial, w)
        if change.from_state is not current:
            raise _refuse(
                "compliance-stale-state",
                f"the server is {current.value}, not {change.from_state.value}",
            )
        row = w.get("compliance", serial)
        since = None if row is None else row.get("noncompliant_since")
        to = change.to_state
        if to is _S.IN_TRANSIT and self._transit(w, serial) is None:
            raise _refuse("compliance-not-shipped", "the server is in no open shipment")
        if to is _S.ARRIVED and not self._arrived(w, serial):
            raise _refuse("compliance-needs-arrival", "no passing arrival for the server")
        if to in (_S.VERIFIED, _S.PRODUCTION):
            if trip is not None and not self._arrived(w, serial):
                raise _refuse(
                    "compliance-needs-arrival",
                    "no passing arrival on the server's latest trip",
                )
            attestation = w.get("attestation", serial)
            if attestation is None or attestation["status"] != EarStatus.AFFIRMING.value:
                raise _refuse(
                    "compliance-needs-attestation",
                    "the server's latest attestation is not affirming",
                )
            if since is not None and attestation["iat"] < since:
                raise _refuse(
                    "compliance-needs-attestation",
                    "reinstatement needs a passing attestation after the server was found "
                    "non-compliant",
                )
            if fact.iat - attestation["iat"] > self.policy_in_force(w).max_attestation_age:
                raise _refuse(
                    "compliance-stale-attestation",
                    "the server's latest passing attestation is older than the policy allows",
                )
        if to is _S.NON_COMPLIANT:
            since = fact.iat
        elif to in (_S.VERIFIED, _S.PRODUCTION):
            since = None
        w.put(
            "compliance",
            serial,
            {
                "state": to.value,
                "reason": change.reason,
                "entry": fact.entry,
                "iat": fact.iat,
                "noncompliant_since": since,
            },
        )

    def _policy_change(self, w: _Writer, fact: Fact, change: PolicyChange) -> None:
        # Versions one by one: two records made from the same one (two servers starting
        # with a new policy at once) cannot both apply, and none is applied twice.
        current = w.get("policy", POLICY_KEY)
        expected = 1 if current is None else current["version"] + 1
        if change.version != expected:
            raise _refuse(
                "policy-version",
                f"a policy record of version {change.version}, where the next is {expected}",
            )
        w.put(
            "policy",
            POLICY_KEY,
            {
                "version": change.version,
                "max_attestation_age": change.max_attestation_age,
                "min_security_version": dict(change.min_security_version),
                "entry": fact.entry,
                "iat": fact.iat,
            },
        )

    def stale_servers(self, servers: Sequence[str], now: int) -> list[str]:
        """Of ``servers``, those ``compliance sweep`` makes non-compliant: verified or in
        production, with no passing attestation within the policy's max age at ``now``
        (:func:`stale_reason`, which the sweep itself applies to the service's views)."""
        return [
            serial
            for serial in servers
            if stale_reason(
                self.compliance_state(serial),
                self.rows.get("attestation", serial),
                now=now,
                max_age=self.policy_in_force().max_attestation_age,
            )
            is not None
        ]
