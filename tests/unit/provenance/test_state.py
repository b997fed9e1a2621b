"""The provenance model: the journey to production, and each attack on it caught and named.

Every refused fact must change nothing, and every accepted fact that records a problem must
record it as a problem (nothing wrongly recorded as good).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.provenance import (
    ComplianceState,
    CustodyEvent,
    DeviceRef,
    EarStatus,
    MemoryRows,
    Node,
    NodeType,
    ProvenancePolicy,
    ProvenanceState,
)
from sealtrail.provenance._payloads import ComponentMeasurement, DigestAlgorithm

from ._certs import new_key
from ._world import ASSEMBLER, GOOD, World, digest

S = ComplianceState


@pytest.fixture
def world() -> World:
    w = World()
    assert w.release().applied
    return w


def _snapshot(world: World) -> list[tuple[str, str, str]]:
    rows = world.state.rows
    assert isinstance(rows, MemoryRows)
    return list(rows.dump())


def refused(world: World, outcome_code: str, action: object) -> None:
    """``action`` (a callable giving an Outcome) is refused with the code and changes nothing."""
    before = _snapshot(world)
    outcome = action()  # type: ignore[operator]
    assert outcome.code == outcome_code, (outcome.code, outcome.message)
    assert outcome.changes == ()
    assert _snapshot(world) == before


def test_the_journey_from_manifest_to_production(world: World) -> None:
    devices = world.build_server("srv-1")
    assert world.state.devices_of("srv-1") == devices
    world.to_production("srv-1", "ship-1")
    assert world.state.compliance_state("srv-1") is S.PRODUCTION
    attestation = world.state.rows.get("attestation", "srv-1")
    assert attestation is not None and attestation["status"] == "affirming"


def test_a_rack_of_servers_reaches_production(world: World) -> None:
    servers = [f"srv-{i}" for i in range(3)]
    for serial in servers:
        world.build_server(serial, blades=2, per_blade=4)
    world.ok(
        ASSEMBLER,
        _assembly(Node(NodeType.RACK, "rack-1"), [Node(NodeType.SERVER, s) for s in servers]),
    )
    for i, serial in enumerate(servers):
        world.to_production(serial, f"ship-{i}")
    assert all(world.state.compliance_state(s) is S.PRODUCTION for s in servers)
    assert len(world.state.devices_of("rack-1")) == 24


def _assembly(parent: Node, children: list[Node]) -> object:
    from sealtrail.provenance import Assembly

    return Assembly(parent, tuple(children))


# -- attacks ---------------------------------------------------------------------------------


def test_a_rogue_device_not_in_any_manifest(world: World) -> None:
    rogue = world.devices(1)[0]  # has a key and a certificate, but no manifest holds it
    refused(
        world,
        "assembly-unknown-device",
        lambda: world.assemble(Node(NodeType.BLADE, "b-rogue"), [rogue]),
    )


def test_a_cloned_identity_in_a_second_manifest(world: World) -> None:
    devices = world.devices(2)
    assert world.manifest(devices).applied
    (clone,) = world.devices(1)
    # The same identity key under another serial: the device id collides.
    from sealtrail.provenance import DeviceIdentity

    copied = DeviceIdentity(clone.kind, "rot-other", devices[1].chain, clone.algorithm)
    refused(world, "manifest-cloned-device", lambda: world.manifest([clone, copied]))


def test_a_serial_registered_twice_by_one_maker(world: World) -> None:
    (first,) = world.devices(1)
    assert world.manifest([first]).applied
    from sealtrail.provenance import DeviceIdentity

    (other,) = world.devices(1)
    again = DeviceIdentity(other.kind, first.serial, other.chain, other.algorithm)
    refused(world, "manifest-duplicate-serial", lambda: world.manifest([again]))


def test_a_child_claimed_by_two_parents(world: World) -> None:
    world.build_server("srv-1")
    blade = Node(NodeType.BLADE, "srv-1-blade-0")
    refused(
        world,
        "assembly-child-elsewhere",
        lambda: world.assemble(Node(NodeType.SERVER, "srv-2"), [blade]),
    )
    device = world.state.devices_of("srv-1-blade-0")[0]
    refused(
        world,
        "assembly-child-elsewhere",
        lambda: world.assemble(Node(NodeType.BLADE, "b-9"), [DeviceRef(device)]),
    )


def test_a_replacement_is_an_explicit_delta(world: World) -> None:
    world.build_server("srv-1")
    world.build_server("srv-2")
    blade = Node(NodeType.BLADE, "srv-1-blade-0")
    world.ok(ASSEMBLER, _delta(Node(NodeType.SERVER, "srv-1"), [], [blade]))
    world.ok(ASSEMBLER, _delta(Node(NodeType.SERVER, "srv-2"), [blade], []))
    assert set(world.state.devices_of("srv-1-blade-0")) <= set(world.state.devices_of("srv-2"))
    refused(
        world,
        "assembly-not-installed",
        lambda: world.apply(ASSEMBLER, _delta(Node(NodeType.SERVER, "srv-1"), [], [blade])),
    )


def _delta(parent: Node, children: list[Node], removed: list[Node]) -> object:
    from sealtrail.provenance import Assembly

    return Assembly(parent, tuple(children), tuple(removed))


def test_unknown_nodes_cycles_and_type_changes_are_refused(world: World) -> None:
    world.build_server("srv-1")
    refused(
        world,
        "assembly-unknown-node",
        lambda: world.assemble(Node(NodeType.SERVER, "srv-9"), [Node(NodeType.BLADE, "ghost")]),
    )
    refused(
        world,
        "assembly-parent-type",
        lambda: world.assemble(Node(NodeType.RACK, "srv-1"), [Node(NodeType.SERVER, "x")]),
    )


def test_a_blade_swapped_between_servers_after_assembly(world: World) -> None:
    """Physically swapped, no records: attestation sees devices of the other server."""
    world.build_server("srv-1")
    world.build_server("srv-2")
    devices_of = world.state.devices_of
    # srv-1's first blade slot now holds srv-2's first blade.
    seen = sorted([*devices_of("srv-1-blade-1"), *devices_of("srv-2-blade-0")])
    refused(world, "attestation-result-mismatch", lambda: world.attest("srv-1", devices=seen))
    # Recorded honestly, it is recorded as contraindicated, naming the devices.
    outcome = world.attest("srv-1", devices=seen, status=EarStatus.CONTRAINDICATED)
    assert outcome.applied
    row = world.state.rows.get("attestation", "srv-1")
    assert row is not None and row["status"] == "contraindicated"
    assert {"device-not-in-assembly", "device-missing"} <= set(row["reasons"])


def test_a_shipment_received_with_other_contents_or_a_broken_seal(world: World) -> None:
    world.build_server("srv-1")
    world.build_server("srv-2")
    assert world.custody("ship-1", CustodyEvent.SHIPPED, ["srv-1", "srv-2"]).applied
    outcome = world.custody("ship-1", CustodyEvent.RECEIVED, ["srv-1"], seals=["seal-1"])
    assert outcome.applied  # what the carrier found is itself a fact worth keeping
    shipment = world.state.rows.get("shipment", "ship-1")
    assert shipment is not None
    assert shipment["findings"] == ["contents-missing:srv-2", "seal-broken:seal-2"]
    refused(world, "arrival-contradicts-custody", lambda: world.arrival("ship-1", "srv-1"))


def test_custody_hand_offs_must_chain(world: World) -> None:
    world.build_server("srv-1")
    refused(
        world,
        "custody-not-shipped",
        lambda: world.custody("ship-9", CustodyEvent.RECEIVED, ["srv-1"]),
    )
    refused(
        world,
        "custody-unknown-contents",
        lambda: world.custody("ship-1", CustodyEvent.SHIPPED, ["nope"]),
    )
    assert world.custody("ship-1", CustodyEvent.SHIPPED, ["srv-1"]).applied
    refused(
        world,
        "custody-already-in-transit",
        lambda: world.custody("ship-2", CustodyEvent.SHIPPED, ["srv-1"]),
    )
    refused(
        world,
        "assembly-in-transit",
        lambda: world.assemble(
            Node(NodeType.SERVER, "srv-1"), [], removed=[Node(NodeType.BLADE, "srv-1-blade-0")]
        ),
    )
    assert world.custody("ship-1", CustodyEvent.RECEIVED, ["srv-1"]).applied
    refused(
        world,
        "custody-already-received",
        lambda: world.custody("ship-1", CustodyEvent.RECEIVED, ["srv-1"]),
    )


def test_firmware_that_matches_no_release(world: World) -> None:
    world.build_server("srv-1")
    tampered = ComponentMeasurement(GOOD.component, DigestAlgorithm.SHA384, digest("implant"))
    refused(
        world, "attestation-result-mismatch", lambda: world.attest("srv-1", measurement=tampered)
    )
    assert world.attest("srv-1", measurement=tampered, status=EarStatus.CONTRAINDICATED).applied
    row = world.state.rows.get("attestation", "srv-1")
    assert row is not None and row["reasons"] == ["measurement-unknown"]


def test_a_replayed_attestation_nonce(world: World) -> None:
    world.build_server("srv-1")
    nonce = b"\x07" * 32
    assert world.attest("srv-1", nonce=nonce).applied
    refused(world, "attestation-nonce-replayed", lambda: world.attest("srv-1", nonce=nonce))


def test_evidence_signed_by_a_key_other_than_the_devices(world: World) -> None:
    devices = world.build_server("srv-1")
    impostor = {devices[0]: new_key()}
    refused(world, "attestation-result-mismatch", lambda: world.attest("srv-1", signer=impostor))
    assert world.attest("srv-1", signer=impostor, status=EarStatus.CONTRAINDICATED).applied
    row = world.state.rows.get("attestation", "srv-1")
    assert row is not None and row["reasons"] == ["evidence-bad-signature"]


def test_a_stale_attestation_after_the_policys_max_age() -> None:
    world = World(ProvenancePolicy(max_attestation_age=3600))
    assert world.release().applied
    world.build_server("srv-1")
    world.to_production("srv-1", "ship-1")
    assert world.state.stale_servers(["srv-1"], now=world.now + 60) == []
    later = world.now + 7200
    assert world.state.stale_servers(["srv-1"], now=later) == ["srv-1"]
    outcome = world.comply("srv-1", S.NON_COMPLIANT, iat=later)
    assert outcome.applied
    # Reinstated only after a passing attestation made after it was found non-compliant.
    world.ok(
        "operator", _compliance("srv-1", S.NON_COMPLIANT, S.UNDER_INVESTIGATION), iat=later + 1
    )
    refused(
        world,
        "compliance-needs-attestation",
        lambda: world.comply("srv-1", S.VERIFIED, iat=later + 2),
    )
    assert world.attest("srv-1").applied
    assert world.comply("srv-1", S.VERIFIED).applied


def _compliance(serial: str, a: ComplianceState, b: ComplianceState) -> object:
    from sealtrail.provenance import Compliance

    return Compliance(serial, a, b, "because")


def test_compliance_starts_from_the_current_state_and_is_earned(world: World) -> None:
    world.build_server("srv-1")
    refused(
        world,
        "compliance-stale-state",
        lambda: world.apply("operator", _compliance("srv-1", S.ARRIVED, S.VERIFIED)),
    )
    refused(world, "compliance-not-shipped", lambda: world.comply("srv-1", S.IN_TRANSIT))
    refused(world, "compliance-unknown-server", lambda: world.comply("srv-9", S.IN_TRANSIT))


def test_a_device_maker_cannot_release_another_makers_component(world: World) -> None:
    from sealtrail.provenance import FirmwareRelease, Measurement

    other = FirmwareRelease(
        GOOD.component, "9.9", 9, (Measurement(DigestAlgorithm.SHA384, digest("x")),)
    )
    refused(world, "firmware-component-owner", lambda: world.apply("other-maker", other))
    refused(world, "firmware-duplicate-release", world.release)


# -- determinism -------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=1, max_value=3), st.integers(min_value=1, max_value=3))
def test_replaying_the_facts_gives_the_same_rows(servers: int, per_blade: int) -> None:
    world = World()
    assert world.release().applied
    for i in range(servers):
        world.build_server(f"srv-{i}", per_blade=per_blade)
    world.to_production("srv-0", "ship-0")
    replay = ProvenanceState()
    changes = [replay.apply(fact).changes for fact in world.facts]
    assert list(_dump(replay)) == _snapshot(world)
    again = ProvenanceState()
    assert [again.apply(fact).changes for fact in world.facts] == changes


def _dump(state: ProvenanceState) -> list[tuple[str, str, str]]:
    assert isinstance(state.rows, MemoryRows)
    return list(state.rows.dump())
