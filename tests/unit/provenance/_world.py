"""A small supply chain for model tests: devices with real P-384 keys, and the facts that
move them from a maker's manifest to production, applied to a :class:`ProvenanceState`."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import ec

from sealtrail.provenance import (
    Algorithm,
    Arrival,
    Assembly,
    AttestationResult,
    Challenge,
    ChildRef,
    Compliance,
    ComplianceState,
    Custody,
    CustodyEvent,
    DeviceIdentity,
    DeviceKind,
    DeviceManifest,
    DeviceRef,
    DeviceResult,
    DigestAlgorithm,
    EarStatus,
    Fact,
    FirmwareRelease,
    Measurement,
    Node,
    NodeType,
    Outcome,
    ProvenancePolicy,
    ProvenanceState,
    Verdict,
)
from sealtrail.provenance._evidence import sign_evidence
from sealtrail.provenance._payloads import ComponentMeasurement, parse_time

from ._certs import identity, new_key

MAKER, ASSEMBLER, CARRIER, OPERATOR = "maker", "assembler", "carrier", "operator"
FIRMWARE = "caliptra-rt"
T0 = 1_800_000_000


def digest(text: str) -> str:
    return hashlib.sha384(text.encode()).hexdigest()


GOOD = ComponentMeasurement(FIRMWARE, DigestAlgorithm.SHA384, digest("rt 1.2"))


class World:
    """Facts about one supply chain, applied in order; every outcome is kept."""

    def __init__(self, policy: ProvenancePolicy | None = None) -> None:
        self.state = ProvenanceState(policy=policy)
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.facts: list[Fact] = []
        self.now = T0
        self._ids = itertools.count(1)

    def apply(self, org: str, payload: object, *, iat: int | None = None) -> Outcome:
        self.now = iat if iat is not None else self.now + 60
        fact = Fact(
            hashlib.sha256(f"entry {next(self._ids)}".encode()).digest(),
            org,
            self.now,
            payload,  # type: ignore[arg-type]
        )
        outcome = self.state.apply(fact)
        if outcome.applied:
            self.facts.append(fact)
        return outcome

    def ok(self, org: str, payload: object, **kw: int) -> Outcome:
        outcome = self.apply(org, payload, **kw)
        assert outcome.applied, (outcome.code, outcome.message)
        return outcome

    # -- makers -----------------------------------------------------------------------------

    def devices(self, count: int, *, prefix: str = "rot") -> list[DeviceIdentity]:
        made = []
        for _ in range(count):
            serial = f"{prefix}-{next(self._ids)}"
            key = new_key()
            device = DeviceIdentity(
                kind=DeviceKind.CALIPTRA,
                serial=serial,
                chain=(identity(key, serial),),
                algorithm=Algorithm.ES384,
            )
            self.keys[device.device_id] = key
            made.append(device)
        return made

    def manifest(self, devices: Sequence[DeviceIdentity], *, org: str = MAKER) -> Outcome:
        return self.apply(org, DeviceManifest(f"batch-{next(self._ids)}", tuple(devices)))

    def release(self, *, version: str = "1.2", measurement: ComponentMeasurement = GOOD) -> Outcome:
        return self.apply(
            MAKER,
            FirmwareRelease(
                component=measurement.component,
                version=version,
                security_version=3,
                measurements=(Measurement(measurement.alg, measurement.digest),),
            ),
        )

    # -- assemblers, carriers, operators ----------------------------------------------------

    def assemble(
        self,
        parent: Node,
        children: Sequence[ChildRef | DeviceIdentity],
        *,
        removed: Sequence[ChildRef | DeviceIdentity] = (),
        org: str = ASSEMBLER,
    ) -> Outcome:
        return self.apply(
            org, Assembly(parent, tuple(map(_ref, children)), tuple(map(_ref, removed)))
        )

    def custody(
        self,
        shipment: str,
        event: CustodyEvent,
        contents: Sequence[str],
        seals: Sequence[str] = ("seal-1", "seal-2"),
        org: str = CARRIER,
        parties: tuple[str, str] = (ASSEMBLER, OPERATOR),
    ) -> Outcome:
        return self.apply(
            org,
            Custody(
                shipment_id=shipment,
                event=event,
                from_org=parties[0],
                to_org=parties[1],
                contents=tuple(contents),
                seals=tuple(seals),
                time=parse_time("2027-01-01T00:00:00Z", "time"),
                place="dock 4",
            ),
        )

    def arrival(
        self,
        shipment: str,
        server: str,
        *,
        devices: Sequence[str] | None = None,
        org: str = OPERATOR,
    ) -> Outcome:
        ids = self.state.devices_of(server) if devices is None else list(devices)
        challenges = tuple(Challenge(d, f"{next(self._ids):040x}", True) for d in ids)
        return self.apply(
            org,
            Arrival(
                shipment_id=shipment,
                server_serial=server,
                seals_intact=True,
                devices_challenged=challenges,
                result=Verdict.PASS,
            ),
        )

    def evidence_result(
        self,
        server: str,
        *,
        nonce: bytes | None = None,
        devices: Sequence[str] | None = None,
        measurement: ComponentMeasurement = GOOD,
        signer: dict[str, ec.EllipticCurvePrivateKey] | None = None,
        status: EarStatus = EarStatus.AFFIRMING,
    ) -> AttestationResult:
        nonce = (
            nonce if nonce is not None else hashlib.sha256(f"n{next(self._ids)}".encode()).digest()
        )
        ids = self.state.devices_of(server) if devices is None else list(devices)
        keys = {**self.keys, **(signer or {})}
        results = tuple(
            DeviceResult(
                device_id=d,
                status=status,
                reasons=(),
                evidence=sign_evidence(keys[d], nonce, (measurement,)),
            )
            for d in ids
        )
        return AttestationResult(
            server_serial=server,
            nonce=nonce.hex(),
            status=status,
            trustworthiness=(),
            devices=results,
        )

    def attest(self, server: str, *, org: str = OPERATOR, **kw: object) -> Outcome:
        return self.apply(org, self.evidence_result(server, **kw))  # type: ignore[arg-type]

    def comply(
        self, server: str, to: ComplianceState, *, iat: int | None = None, org: str = OPERATOR
    ) -> Outcome:
        current = self.state.compliance_state(server)
        return self.apply(org, Compliance(server, current, to, f"moved to {to.value}"), iat=iat)

    # -- a whole server ---------------------------------------------------------------------

    def build_server(self, serial: str, *, blades: int = 2, per_blade: int = 2) -> list[str]:
        """Manifest, blades and the server; returns the server's device ids."""
        devices = self.devices(blades * per_blade)
        self.ok(MAKER, DeviceManifest(f"batch-{serial}", tuple(devices)))
        blade_nodes = []
        for b in range(blades):
            blade = Node(NodeType.BLADE, f"{serial}-blade-{b}")
            self.ok(
                ASSEMBLER,
                Assembly(
                    blade, tuple(_ref(d) for d in devices[b * per_blade : (b + 1) * per_blade])
                ),
            )
            blade_nodes.append(blade)
        self.ok(ASSEMBLER, Assembly(Node(NodeType.SERVER, serial), tuple(blade_nodes)))
        return sorted(d.device_id for d in devices)

    def to_production(self, serial: str, shipment: str) -> None:
        self.ok(CARRIER, self._custody_payload(shipment, CustodyEvent.SHIPPED, [serial]))
        self.ok(
            OPERATOR,
            Compliance(serial, ComplianceState.REGISTERED, ComplianceState.IN_TRANSIT, "shipped"),
        )
        self.ok(CARRIER, self._custody_payload(shipment, CustodyEvent.RECEIVED, [serial]))
        assert self.arrival(shipment, serial).applied
        self.ok(
            OPERATOR,
            Compliance(serial, ComplianceState.IN_TRANSIT, ComplianceState.ARRIVED, "arrived"),
        )
        assert self.attest(serial).applied
        self.ok(
            OPERATOR,
            Compliance(serial, ComplianceState.ARRIVED, ComplianceState.VERIFIED, "attested"),
        )
        self.ok(
            OPERATOR,
            Compliance(serial, ComplianceState.VERIFIED, ComplianceState.PRODUCTION, "in service"),
        )

    def _custody_payload(
        self,
        shipment: str,
        event: CustodyEvent,
        contents: list[str],
        parties: tuple[str, str] = (ASSEMBLER, OPERATOR),
    ) -> Custody:
        return Custody(
            shipment_id=shipment,
            event=event,
            from_org=parties[0],
            to_org=parties[1],
            contents=tuple(contents),
            seals=("seal-1", "seal-2"),
            time=parse_time("2027-01-01T00:00:00Z", "time"),
            place="dock 4",
        )


def _ref(child: ChildRef | DeviceIdentity) -> ChildRef:
    return DeviceRef(child.device_id) if isinstance(child, DeviceIdentity) else child
