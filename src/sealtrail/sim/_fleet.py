"""A fleet: racks of servers, each with its root-of-trust devices, and the organizations
that make, assemble, carry and run them.

Deterministic for a seed: every name, serial, batch, shipment, seal, firmware image,
which Caliptra devices register their ML-DSA-87 identity, and the shape of each server.
Key material is random (a device's secret is fused at manufacture), and so are the nonces
of challenges: those must never repeat.

A server (``rots_per_server`` = N devices):

* a motherboard with a Caliptra-like RoT (the platform root of trust) and, from N = 2,
  a TPM-like device;
* from N = 3, blades (accelerators, NICs) with two Cerberus-like devices each (the last
  one with one when N is odd);
* racks of ``servers_per_rack`` servers, each rack one shipment with two seals.

Names carry the seed's namespace (``s<seed>``), organizations too, so fleets of different
seeds share one ledger; a second fleet with the same seed on the same ledger is refused
by it (its organizations exist, its serials are taken).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sealtrail.provenance import Algorithm, DeviceIdentity, DeviceKind, DeviceManifest

from ._actors import Actor, Assembler, Carrier, DeviceMaker, Operator
from ._devices import CaliptraDevice, FirmwareImage, RotDevice

__all__ = [
    "MAX_RACKS",
    "MAX_ROTS_PER_SERVER",
    "MAX_SERVERS_PER_RACK",
    "Fleet",
    "FleetSpec",
    "Progress",
    "RackPlan",
    "ServerPlan",
    "build_server",
    "firmware_for",
    "generate_fleet",
    "organizations",
]

#: (stage, done, total): how far a long step has come.
Progress = Callable[[str, int, int], None]

#: Bounds of a fleet (a rack holds at most provenance's MAX_CHILDREN servers).
MAX_RACKS = 1000
MAX_SERVERS_PER_RACK = 1024
MAX_ROTS_PER_SERVER = 64
#: Bytes of identity certificates per manifest before a new one is started: a manifest
#: statement stays well under the organizations' 1 MiB statement limit.
MANIFEST_BUDGET = 512 * 1024
_SHORT = {DeviceKind.CALIPTRA: "CAL", DeviceKind.CERBERUS: "CER", DeviceKind.TPM: "TPM"}
_PLACES = ("Dock 1", "Dock 2", "Dock 3", "Dock 4", "Loading bay A", "Loading bay B")


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """The shape of a fleet, and the seed that makes it reproducible."""

    racks: int = 2
    servers_per_rack: int = 2
    rots_per_server: int = 4
    seed: int = 1

    def __post_init__(self) -> None:
        for field_name, value, high in (
            ("racks", self.racks, MAX_RACKS),
            ("servers_per_rack", self.servers_per_rack, MAX_SERVERS_PER_RACK),
            ("rots_per_server", self.rots_per_server, MAX_ROTS_PER_SERVER),
        ):
            if not 1 <= value <= high:
                raise ValueError(f"{field_name} is 1..{high}")
        if not 0 <= self.seed < 2**63:
            raise ValueError("seed is 0..2^63-1")

    @property
    def namespace(self) -> str:
        return f"s{self.seed}"

    @property
    def servers(self) -> int:
        return self.racks * self.servers_per_rack

    @property
    def devices(self) -> int:
        return self.servers * self.rots_per_server


@dataclass(frozen=True, slots=True)
class ServerPlan:
    """One server: its motherboard's devices and its blades' (serial, devices)."""

    serial: str
    rack: str
    motherboard: str
    board_devices: tuple[RotDevice, ...]
    blades: tuple[tuple[str, tuple[RotDevice, ...]], ...]

    @property
    def devices(self) -> tuple[RotDevice, ...]:
        return self.board_devices + tuple(d for _, devices in self.blades for d in devices)


@dataclass(frozen=True, slots=True)
class RackPlan:
    """One rack: its servers, and the shipment (with its seals) that carries it."""

    serial: str
    servers: tuple[ServerPlan, ...]
    shipment_id: str
    seals: tuple[str, ...]
    place: str


@dataclass(frozen=True)
class Fleet:
    """The organizations of a supply chain and the racks they make, carry and run."""

    spec: FleetSpec
    makers: Mapping[DeviceKind, DeviceMaker]
    assembler: Assembler
    carrier: Carrier
    operator: Operator
    racks: tuple[RackPlan, ...]

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def actors(self) -> tuple[Actor, ...]:
        """Every organization, in the order they are onboarded."""
        return (*self.makers.values(), self.assembler, self.carrier, self.operator)

    @property
    def servers(self) -> tuple[ServerPlan, ...]:
        return tuple(s for rack in self.racks for s in rack.servers)

    @property
    def devices(self) -> tuple[RotDevice, ...]:
        return tuple(d for s in self.servers for d in s.devices)

    def manifests(self) -> list[tuple[DeviceMaker, DeviceManifest]]:
        """Each maker's manifests: one batch per rack, split to stay under the size limit."""
        found = []
        for rack in self.racks:
            for kind, maker in self.makers.items():
                devices = [d for s in rack.servers for d in s.devices if d.kind is kind]
                for number, chunk in enumerate(_chunks([d.identity() for d in devices])):
                    batch = f"{rack.serial}-{_SHORT[kind]}-{number}"
                    found.append((maker, maker.manifest(batch, chunk)))
        return found


def _chunks(identities: list[DeviceIdentity]) -> list[list[DeviceIdentity]]:
    chunks: list[list[DeviceIdentity]] = []
    size = MANIFEST_BUDGET
    for identity in identities:
        weight = sum(len(c) for c in identity.chain) * 4 // 3 + 256
        if size + weight > MANIFEST_BUDGET:
            chunks.append([])
            size = 0
        chunks[-1].append(identity)
        size += weight
    return chunks


def firmware_for(namespace: str) -> dict[DeviceKind, tuple[FirmwareImage, ...]]:
    """Each device kind's firmware, in boot order (names carry the namespace: a component
    has one maker on a ledger)."""
    return {
        DeviceKind.CALIPTRA: (
            FirmwareImage.build(f"{namespace}-caliptra-fmc", "1.0.0", 1, "sha-384"),
            FirmwareImage.build(f"{namespace}-caliptra-rt", "1.2.0", 3, "sha-384"),
        ),
        DeviceKind.CERBERUS: (FirmwareImage.build(f"{namespace}-cerberus", "4.1.7", 2, "sha-256"),),
        DeviceKind.TPM: (FirmwareImage.build(f"{namespace}-tpm", "7.85", 1, "sha-256"),),
    }


def organizations(
    namespace: str,
) -> tuple[dict[DeviceKind, DeviceMaker], Assembler, Carrier, Operator]:
    firmware = firmware_for(namespace)
    makers = {
        DeviceKind.CALIPTRA: DeviceMaker(
            f"{namespace}-silicon", kind=DeviceKind.CALIPTRA, firmware=firmware[DeviceKind.CALIPTRA]
        ),
        DeviceKind.CERBERUS: DeviceMaker(
            f"{namespace}-rot", kind=DeviceKind.CERBERUS, firmware=firmware[DeviceKind.CERBERUS]
        ),
        DeviceKind.TPM: DeviceMaker(
            f"{namespace}-tpm", kind=DeviceKind.TPM, firmware=firmware[DeviceKind.TPM]
        ),
    }
    operator = Operator(f"{namespace}-dc")
    operator.trust(r for maker in makers.values() for r in maker.releases())
    return makers, Assembler(f"{namespace}-odm"), Carrier(f"{namespace}-freight"), operator


def generate_fleet(spec: FleetSpec, *, progress: Progress | None = None) -> Fleet:
    """Make the organizations, every device (identity certificates issued from their
    requests, firmware booted) and the plan of racks and servers."""
    ns = spec.namespace
    rng = random.Random(spec.seed)  # noqa: S311 - reproducible choices, not secrets
    makers, assembler, carrier, operator = organizations(ns)
    counters = dict.fromkeys(makers, 0)
    made = 0

    def make(kind: DeviceKind, algorithm: Algorithm | None) -> RotDevice:
        nonlocal made
        counters[kind] += 1
        device = makers[kind].manufacture(
            f"{ns}-{_SHORT[kind]}-{counters[kind]:06d}", algorithm=algorithm
        )
        made += 1
        if progress is not None:
            progress("devices", made, spec.devices)
        return device

    pqc = Algorithm.ML_DSA_87 in CaliptraDevice.identity_algorithms()
    racks = []
    for r in range(spec.racks):
        rack = f"{ns}-RACK-{r:03d}"
        servers = tuple(
            build_server(
                make,
                f"{ns}-R{r:03d}-S{s:03d}",
                rack=rack,
                rots=spec.rots_per_server,
                ml_dsa=pqc and rng.random() < 0.5,
            )
            for s in range(spec.servers_per_rack)
        )
        seals = tuple(f"{ns}-SEAL-{n:06d}" for n in sorted(rng.sample(range(10**6), 2)))
        racks.append(RackPlan(rack, servers, f"{ns}-SHIP-{r:03d}", seals, rng.choice(_PLACES)))
    return Fleet(spec, makers, assembler, carrier, operator, tuple(racks))


def build_server(
    make: Callable[[DeviceKind, Algorithm | None], RotDevice],
    serial: str,
    *,
    rack: str,
    rots: int,
    ml_dsa: bool = False,
) -> ServerPlan:
    """One server of ``rots`` devices, made by ``make(kind, algorithm)`` (see the module
    docs for its shape); its Caliptra-like RoT registers its ML-DSA-87 identity with
    ``ml_dsa``."""
    board = [make(DeviceKind.CALIPTRA, Algorithm.ML_DSA_87 if ml_dsa else None)]
    if rots >= 2:
        board.append(make(DeviceKind.TPM, None))
    cerberus = [make(DeviceKind.CERBERUS, None) for _ in range(rots - 2)]
    blades = tuple(
        (f"{serial}-B{b}", tuple(cerberus[2 * b : 2 * b + 2]))
        for b in range((len(cerberus) + 1) // 2)
    )
    return ServerPlan(serial, rack, f"{serial}-MB", tuple(board), blades)
