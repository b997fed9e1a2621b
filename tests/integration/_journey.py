"""One server's journey as real signed statements, for the HTTP and CLI query tests.

Four organizations, each with its role (a device maker with its device CA, an assembler, a
carrier, an operator), and the statements that take server ``SRV-1`` from the maker's
manifest to ``verified``: manifest, firmware release, two blades, the server, shipped,
in-transit, received, arrival, arrived, attestation (with evidence), verified. Transport
agnostic: the caller gives the functions that onboard an organization and register a
statement (returning its log index).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from sealtrail.keys import ES256
from sealtrail.provenance import (
    KINDS,
    Algorithm,
    Arrival,
    Assembly,
    AttestationResult,
    Challenge,
    Compliance,
    ComplianceState,
    Custody,
    CustodyEvent,
    DeviceIdentity,
    DeviceKind,
    DeviceManifest,
    DeviceRef,
    DeviceResult,
    EarStatus,
    FirmwareRelease,
    Measurement,
    Node,
    NodeType,
    Payload,
    Verdict,
)
from sealtrail.provenance._evidence import sign_evidence
from sealtrail.provenance._payloads import parse_time
from sealtrail.scitt import decode_key_set, parse_statement, sign_statement, verify_receipt
from tests.unit.provenance._certs import CA_DER, identity, new_key
from tests.unit.provenance._world import FIRMWARE, GOOD
from tests.unit.scitt._pki import Issuer, make_issuer

MAKER, ASSEMBLER, CARRIER, OPERATOR = "maker", "assembler", "carrier", "operator"
ROLES = {MAKER: "device-maker", ASSEMBLER: "assembler", CARRIER: "carrier", OPERATOR: "operator"}
SERVER = "SRV-1"
BLADES = ("SRV-1-blade-0", "SRV-1-blade-1")
SHIPMENT = "SHIP-1"
#: The steps, in the order they are registered.
STEPS = (
    "manifest",
    "release",
    "blade-0",
    "blade-1",
    "server",
    "shipped",
    "in-transit",
    "received",
    "arrival",
    "arrived",
    "attestation",
    "verified",
)

#: (organization name, record JSON) -> None
PutOrg = Callable[[str, bytes], None]
#: statement bytes -> its log index
Register = Callable[[bytes], int]


@dataclass
class Org:
    """An organization: its name, role and statement-signing certificate."""

    name: str
    signer: Issuer

    @property
    def iss(self) -> str:
        return f"https://{self.name}.example/signing"

    def record(self, *, version: int = 1) -> bytes:
        role = ROLES[self.name]
        doc: dict[str, object] = {
            "org": self.name,
            "version": version,
            "roles": [role],
            "issuers": [self.iss],
            "anchors": [self.signer.anchor_pem],
            "policy": {
                "content_types": [ct for ct, kind in KINDS.items() if kind.role == role],
                "subjects": ["urn:sealtrail:*"],
                "algorithms": [ES256],
                "max_size": 65536,
            },
        }
        if role == "device-maker":
            ca = x509.load_der_x509_certificate(CA_DER)
            doc["device_anchors"] = [ca.public_bytes(serialization.Encoding.PEM).decode()]
        return json.dumps(doc).encode()

    def sign(self, payload: Payload, subject: str) -> bytes:
        return sign_statement(
            self.signer.leaf_key,
            issuer=self.iss,
            subject=subject,
            content_type=type(payload).CONTENT_TYPE,
            payload=payload.to_json(),
            x5chain=self.signer.chain,
        )


def _custody(event: CustodyEvent) -> Custody:
    return Custody(
        shipment_id=SHIPMENT,
        event=event,
        from_org=ASSEMBLER,
        to_org=OPERATOR,
        contents=(SERVER,),
        seals=("seal-1", "seal-2"),
        time=parse_time("2027-01-01T00:00:00Z", "time"),
        place="dock 4",
    )


def _comply(start: ComplianceState, to: ComplianceState) -> Compliance:
    return Compliance(SERVER, start, to, f"moved to {to.value}")


Challenger = Callable[[str, int], list[bytes]]


@dataclass
class Journey:
    """The organizations, the devices, and — once :meth:`run` — each step's statement and
    log index."""

    orgs: dict[str, Org] = field(default_factory=dict)
    devices: list[DeviceIdentity] = field(default_factory=list)
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    statements: dict[str, bytes] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def new(cls, *, devices: int = 4) -> Journey:
        journey = cls({name: Org(name, make_issuer(ES256, cn=name)) for name in ROLES})
        for i in range(devices):
            serial = f"RoT-{i:04d}"
            key = new_key()
            device = DeviceIdentity(
                kind=DeviceKind.CALIPTRA,
                serial=serial,
                chain=(identity(key, serial),),
                algorithm=Algorithm.ES384,
            )
            journey.devices.append(device)
            journey.keys[device.device_id] = key
        return journey

    @property
    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.devices]

    def onboard(self, put_org: PutOrg) -> None:
        for org in self.orgs.values():
            put_org(org.name, org.record())

    def payloads(self) -> dict[str, tuple[str, Payload]]:
        """Each step's (organization, payload); the attestation's with fresh evidence."""
        half = len(self.devices) // 2
        groups = (self.devices[:half], self.devices[half:])
        nonce = secrets.token_bytes(32)
        return {
            "manifest": (MAKER, DeviceManifest("batch-1", tuple(self.devices))),
            "release": (
                MAKER,
                FirmwareRelease(FIRMWARE, "1.2", 3, (Measurement(GOOD.alg, GOOD.digest),)),
            ),
            **{
                f"blade-{b}": (
                    ASSEMBLER,
                    Assembly(
                        Node(NodeType.BLADE, BLADES[b]),
                        tuple(DeviceRef(d.device_id) for d in groups[b]),
                    ),
                )
                for b in (0, 1)
            },
            "server": (
                ASSEMBLER,
                Assembly(
                    Node(NodeType.SERVER, SERVER),
                    tuple(Node(NodeType.BLADE, b) for b in BLADES),
                ),
            ),
            "shipped": (CARRIER, _custody(CustodyEvent.SHIPPED)),
            "in-transit": (
                OPERATOR,
                _comply(ComplianceState.REGISTERED, ComplianceState.IN_TRANSIT),
            ),
            "received": (CARRIER, _custody(CustodyEvent.RECEIVED)),
            "arrival": (
                OPERATOR,
                self.arrival([secrets.token_bytes(16) for _ in self.device_ids]),
            ),
            "arrived": (OPERATOR, _comply(ComplianceState.IN_TRANSIT, ComplianceState.ARRIVED)),
            "attestation": (OPERATOR, self.attestation(nonce)),
            "verified": (OPERATOR, _comply(ComplianceState.ARRIVED, ComplianceState.VERIFIED)),
        }

    def arrival(self, nonces: list[bytes]) -> Arrival:
        """The server's arrival, each device answering one of ``nonces``."""
        return Arrival(
            shipment_id=SHIPMENT,
            server_serial=SERVER,
            seals_intact=True,
            devices_challenged=tuple(
                Challenge(d, n.hex(), True)
                for d, n in zip(sorted(self.device_ids), nonces, strict=True)
            ),
            result=Verdict.PASS,
        )

    def attestation(self, nonce: bytes) -> AttestationResult:
        """The server's attestation, every device's evidence over ``nonce``."""
        return AttestationResult(
            server_serial=SERVER,
            nonce=nonce.hex(),
            status=EarStatus.AFFIRMING,
            trustworthiness=(),
            devices=tuple(
                DeviceResult(
                    d, EarStatus.AFFIRMING, (), evidence=sign_evidence(self.keys[d], nonce, (GOOD,))
                )
                for d in sorted(self.device_ids)
            ),
        )

    def run(self, register: Register, challenge: Challenger | None = None) -> None:
        """Register every step's statement, in order; with ``challenge(serial, count)``,
        the arrival and the attestation answer the service's nonces."""
        payloads = self.payloads()
        for step in STEPS:
            org, payload = payloads[step]
            if challenge is not None and step == "arrival":
                payload = self.arrival(challenge(SERVER, len(self.device_ids)))
            if challenge is not None and step == "attestation":
                payload = self.attestation(challenge(SERVER, 1)[0])
            data = self.orgs[org].sign(payload, f"urn:sealtrail:{step}")
            self.statements[step] = data
            self.indexes[step] = register(data)


def run_over_http(
    client: httpx.Client | TestClient,
    journey: Journey,
    admin_token: str,
    challenge: Challenger | None = None,
) -> None:
    """Onboard the journey's organizations with ``admin_token`` and register its statements
    through ``client`` (``POST /entries``; a TestClient or an ``httpx.Client`` with the
    server's ``base_url``), each answered at once with a receipt that verifies against the
    service's keys; ``challenge`` as for :meth:`Journey.run`."""
    keys = decode_key_set(client.get("/.well-known/scitt-keys").content)

    def put_org(name: str, record: bytes) -> None:
        r = client.put(
            f"/admin/organizations/{name}",
            content=record,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert r.status_code == 201, r.text

    def register(data: bytes) -> int:
        r = client.post("/entries", content=data, headers={"Content-Type": "application/cose"})
        assert r.status_code == 201, r.text
        leaf = hashlib.sha256(data).digest()
        return verify_receipt(r.content, leaf_entry=leaf, keys=keys).leaf_index

    journey.onboard(put_org)
    journey.run(register, challenge)


#: The persona of each organization's writer (docs/auth.md).
WRITERS = {MAKER: "supplier", ASSEMBLER: "supplier", CARRIER: "carrier", OPERATOR: "operator"}


def user_token(
    client: TestClient, name: str, persona: str, org: str | None, admin: dict[str, str]
) -> str:
    """Make user ``name`` (``org``'s ``persona``; ``admin``: the administrator's headers)
    and return a new token of theirs."""
    body: dict[str, object] = {"persona": persona}
    if org is not None:
        body["org"] = org
    r = client.put(f"/admin/users/{name}", content=json.dumps(body), headers=admin)
    assert r.status_code == 201, r.text
    r = client.post(f"/admin/users/{name}/tokens", content=b"{}", headers=admin)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def run_with_writers(client: TestClient, journey: Journey, admin: dict[str, str]) -> dict[str, str]:
    """Onboard the journey's organizations, make a writer of each (user ``w-<org>``, of the
    persona that issues its statements) and register every step with its writer's token
    (``auth required``). The writers' tokens, by organization."""
    journey.onboard(
        lambda name, record: _created(
            client.put(f"/admin/organizations/{name}", content=record, headers=admin)
        )
    )
    writers = {
        org: user_token(client, f"w-{org}", persona, org, admin) for org, persona in WRITERS.items()
    }
    issuer_org = {org.iss: name for name, org in journey.orgs.items()}

    def register(data: bytes) -> int:
        org = issuer_org[str(parse_statement(data).issuer)]
        headers = {"Content-Type": "application/cose", "Authorization": f"Bearer {writers[org]}"}
        r = client.post("/entries", content=data, headers=headers)
        assert r.status_code == 201, r.text
        return 0

    journey.run(register)
    return writers


def _created(r: httpx2.Response) -> None:
    assert r.status_code == 201, r.text
