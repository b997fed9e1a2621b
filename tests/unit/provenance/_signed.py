"""A supply chain's facts as real signed statements, registered with an in-process service.

Four organizations (maker, assembler, carrier, operator), each with its own CA and signing
certificate, onboarded with their roles; :class:`World` builds the payloads, and
:class:`SignedChain` signs each with its organization's key and registers it with a
:class:`TransparencyService` whose payload rules are a :class:`ProvenanceLedger`'s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealtrail.keys import ES256, Ed25519Signer, Verifier, generate_signer
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.provenance import (
    KINDS,
    Arrival,
    Assembly,
    Challenge,
    Compliance,
    ComplianceState,
    CustodyEvent,
    DeviceManifest,
    DeviceRef,
    FirmwareRelease,
    Measurement,
    Node,
    NodeType,
    ProvenanceLedger,
    ProvenancePolicy,
    Verdict,
    service_signed,
)
from sealtrail.scitt import StatementRows, TransparencyService, sign_statement
from sealtrail.storage import IndexStore, MemoryIndex, MemoryStore, PostgresStore, SQLiteStore
from tests.unit.scitt._pki import Issuer, make_issuer

from ._certs import CA_DER
from ._world import ASSEMBLER, CARRIER, GOOD, MAKER, OPERATOR, World

ORIGIN = "ledger.sealtrail.localhost/test"
#: What a chain's log and statements may live in.
ChainStore = MemoryStore | SQLiteStore | PostgresStore
SERVICE = "https://ledger.sealtrail.localhost"
ROLES = {
    MAKER: ["device-maker"],
    ASSEMBLER: ["assembler"],
    CARRIER: ["carrier"],
    OPERATOR: ["operator"],
}
DEVICE_CA_PEM = (
    x509.load_der_x509_certificate(CA_DER).public_bytes(serialization.Encoding.PEM).decode()
)


def issuer_name(org: str) -> str:
    return f"https://{org}.example/signing"


def org_record(org: str, issuer: Issuer, *, version: int = 1, **changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "org": org,
        "version": version,
        "roles": ROLES.get(org, []),
        "issuers": [issuer_name(org)],
        "anchors": [issuer.anchor_pem],
        "policy": {
            "content_types": sorted(KINDS),
            "subjects": [f"urn:{org}:*"],
            "algorithms": ["ES256"],
            "max_size": 1 << 20,
        },
    }
    if org == MAKER:
        doc["device_anchors"] = [DEVICE_CA_PEM]
    doc.update(changes)
    return json.dumps(doc).encode()


@dataclass
class SignedChain:
    """A running service and the organizations that write to it."""

    service: TransparencyService
    sequencer: Sequencer
    ledger: ProvenanceLedger
    store: ChainStore
    index: IndexStore
    issuers: dict[str, Issuer]
    world: World = field(default_factory=World)
    registered: list[bytes] = field(default_factory=list)

    def sign(self, org: str, payload: Any, *, iat: int | None = None) -> bytes:
        return sign_statement(
            self.issuers[org].leaf_key,
            issuer=issuer_name(org),
            subject=f"urn:{org}:{type(payload).KIND}",
            content_type=type(payload).CONTENT_TYPE,
            payload=payload.to_json(),
            x5chain=self.issuers[org].chain,
            issued_at=iat if iat is not None else int(time.time()),
        )

    async def register(self, org: str, payload: Any) -> int:
        data = self.sign(org, payload)
        registration = await self.service.register(data)
        self.registered.append(data)
        return registration.index

    async def record(self, org: str, payload: Any) -> int:
        """Apply to the world's model and register; both must accept it."""
        outcome = self.world.apply(org, payload)
        assert outcome.applied, (outcome.code, outcome.message)
        return await self.register(org, payload)

    async def journey(
        self,
        serial: str = "srv-1",
        shipment: str = "ship-1",
        *,
        blades: int = 2,
        per_blade: int = 2,
    ) -> None:
        """A server from its devices' manifest to production, every fact registered."""
        facts = journey(self.world, serial, shipment, blades=blades, per_blade=per_blade)
        for org, payload in facts:
            await self.register(org, payload)

    async def indexed(self, timeout: float = 10.0) -> None:
        """Wait until the index has applied the whole log."""
        deadline = time.monotonic() + timeout
        while self.index.applied_size() < self.sequencer.reader.size():
            assert time.monotonic() < deadline, "the index did not catch up"
            self.ledger.poke()
            await asyncio.sleep(0.01)


def sign_fact(
    issuers: dict[str, Issuer],
    org: str,
    payload: Any,
    *,
    iat: int | None = None,
) -> bytes:
    """``payload`` as a statement signed by ``org``'s certificate."""
    return sign_statement(
        issuers[org].leaf_key,
        issuer=issuer_name(org),
        subject=f"urn:{org}:{type(payload).KIND}",
        content_type=type(payload).CONTENT_TYPE,
        payload=payload.to_json(),
        x5chain=issuers[org].chain,
        issued_at=iat if iat is not None else int(time.time()),
    )


Challenger = Callable[[str, int], list[bytes]]


def local_nonces(serial: str, count: int) -> list[bytes]:
    """Nonces made here (for a service that does not require its own challenges)."""
    return [
        hashlib.sha256(f"{serial} {time.monotonic_ns()} {i}".encode()).digest()
        for i in range(count)
    ]


def journey(
    world: World,
    serial: str,
    shipment: str,
    *,
    blades: int = 2,
    per_blade: int = 2,
    challenge: Challenger = local_nonces,
) -> Iterator[tuple[str, Any]]:
    """The facts that take one server to production, each applied to ``world`` as it is
    yielded (so the next one can be built from its state). Arrival and attestation answer
    nonces from ``challenge(serial, count)`` (the service's, when it requires them)."""

    def fact(org: str, payload: Any) -> tuple[str, Any]:
        world.ok(org, payload)
        return org, payload

    s = ComplianceState
    if world.state.rows.get("component", GOOD.component) is None:
        yield fact(
            MAKER,
            FirmwareRelease(GOOD.component, "1.2", 3, (Measurement(GOOD.alg, GOOD.digest),)),
        )
    devices = world.devices(blades * per_blade)
    yield fact(MAKER, DeviceManifest(f"batch-{serial}", tuple(devices)))
    nodes = []
    for b in range(blades):
        blade = Node(NodeType.BLADE, f"{serial}-blade-{b}")
        part = devices[b * per_blade : (b + 1) * per_blade]
        yield fact(ASSEMBLER, Assembly(blade, tuple(DeviceRef(d.device_id) for d in part)))
        nodes.append(blade)
    yield fact(ASSEMBLER, Assembly(Node(NodeType.SERVER, serial), tuple(nodes)))
    yield fact(CARRIER, world._custody_payload(shipment, CustodyEvent.SHIPPED, [serial]))
    yield fact(OPERATOR, Compliance(serial, s.REGISTERED, s.IN_TRANSIT, "shipped"))
    yield fact(CARRIER, world._custody_payload(shipment, CustodyEvent.RECEIVED, [serial]))
    ids = world.state.devices_of(serial)
    challenges = tuple(
        Challenge(d, n.hex(), True) for d, n in zip(ids, challenge(serial, len(ids)), strict=True)
    )
    yield fact(OPERATOR, Arrival(shipment, serial, True, challenges, Verdict.PASS))
    yield fact(OPERATOR, Compliance(serial, s.IN_TRANSIT, s.ARRIVED, "arrived"))
    yield fact(OPERATOR, world.evidence_result(serial, nonce=challenge(serial, 1)[0]))
    yield fact(OPERATOR, Compliance(serial, s.ARRIVED, s.VERIFIED, "attested"))
    yield fact(OPERATOR, Compliance(serial, s.VERIFIED, s.PRODUCTION, "in service"))


def make_issuers() -> dict[str, Issuer]:
    return {org: make_issuer(ES256, cn=org.title()) for org in ROLES}


@asynccontextmanager
async def signed_chain(
    *,
    store: ChainStore | None = None,
    index: IndexStore | None = None,
    issuers: dict[str, Issuer] | None = None,
    checkpoint_key: Ed25519Signer | None = None,
    service_key: Any = None,
    retired: Sequence[Verifier] = (),
    policy: ProvenancePolicy | None = None,
    onboard: bool = True,
    before_start: Callable[[TransparencyService], None] | None = None,
    statement_rows: StatementRows | None = None,
) -> AsyncIterator[SignedChain]:
    """A service with the ledger's rules over ``store`` and ``index``, organizations onboarded."""
    store = store if store is not None else MemoryStore()
    index = index if index is not None else MemoryIndex()
    issuers = issuers or make_issuers()
    signer = CheckpointSigner(origin=ORIGIN, signer=checkpoint_key or Ed25519Signer.generate())
    sequencer = Sequencer(store, signer=signer, config=SequencerConfig(max_delay=0.001))
    holder: dict[str, TransparencyService] = {}

    def org_of(issuer: str) -> str | None:
        return holder["service"].registry.name_of(issuer)

    ledger = ProvenanceLedger(index, statement=store.get_statement, org_of=org_of, policy=policy)
    service = TransparencyService(
        store=store,
        sequencer=sequencer,
        signer=service_key or generate_signer(ES256),
        issuer=SERVICE,
        retired=retired,
        payload_rules=ledger.rules(),
        statement_rows=statement_rows,
    )
    holder["service"] = service
    service.withdraw = ledger.withdraw  # as service_app wires it
    ledger.service_record = service_signed(SERVICE, service.keys)
    if before_start is not None:
        before_start(service)
    await sequencer.start()
    await service.start()
    await ledger.start(sequencer.reader)
    chain = SignedChain(service, sequencer, ledger, store, index, issuers)
    try:
        if onboard:
            for org, issuer in issuers.items():
                await service.put_organization(org_record(org, issuer))
        yield chain
    finally:
        await service.close()
        await ledger.close(sequencer.reader)
        await sequencer.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
