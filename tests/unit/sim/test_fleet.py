"""The fleet generator: deterministic for a seed (everything but key material), shaped as
documented, with progress reported; and the journey and attack catalogues."""

from __future__ import annotations

import re

import pytest

from sealtrail.provenance import KINDS, Algorithm, DeviceKind, parse_device_manifest
from sealtrail.sim import ATTACKS, ML_DSA_SUPPORTED, PHASES, Fleet, FleetSpec, generate_fleet
from sealtrail.sim._fleet import MANIFEST_BUDGET
from sealtrail.sim._journey import journey_steps


def _shape(fleet: Fleet) -> list[object]:
    """Everything about a fleet but its keys."""
    return [
        [a.name for a in fleet.actors],
        [a.issuer for a in fleet.actors],
        [
            (
                rack.serial,
                rack.shipment_id,
                rack.seals,
                rack.place,
                [
                    (
                        s.serial,
                        s.motherboard,
                        [(d.kind, d.serial, d.algorithm) for d in s.board_devices],
                        [(b, [(d.kind, d.serial) for d in devices]) for b, devices in s.blades],
                    )
                    for s in rack.servers
                ],
            )
            for rack in fleet.racks
        ],
        [
            (i.component, i.version, i.security_version, i.digest)
            for m in fleet.makers.values()
            for i in m.firmware
        ],
        [m.batch_id for _, m in fleet.manifests()],
    ]


def test_the_same_seed_gives_the_same_fleet_but_new_keys() -> None:
    spec = FleetSpec(racks=2, servers_per_rack=3, rots_per_server=5, seed=7)
    one, two = generate_fleet(spec), generate_fleet(spec)
    assert _shape(one) == _shape(two)
    assert {d.device_id for d in one.devices}.isdisjoint({d.device_id for d in two.devices})
    other = generate_fleet(FleetSpec(racks=2, servers_per_rack=3, rots_per_server=5, seed=8))
    assert _shape(other) != _shape(one)
    assert all(a.name.startswith("s8-") for a in other.actors)


def test_the_shape_is_as_documented() -> None:
    fleet = generate_fleet(FleetSpec(racks=1, servers_per_rack=4, rots_per_server=5, seed=3))
    assert [r.serial for r in fleet.racks] == ["s3-RACK-000"]
    server = fleet.servers[0]
    assert server.serial == "s3-R000-S000" and server.motherboard == "s3-R000-S000-MB"
    assert [d.kind for d in server.board_devices] == [DeviceKind.CALIPTRA, DeviceKind.TPM]
    assert [(b, [d.kind for d in ds]) for b, ds in server.blades] == [
        ("s3-R000-S000-B0", [DeviceKind.CERBERUS] * 2),
        ("s3-R000-S000-B1", [DeviceKind.CERBERUS]),
    ]
    assert len(fleet.devices) == 20 == len({d.serial for d in fleet.devices})
    algorithms = {s.board_devices[0].algorithm for s in fleet.servers}
    assert algorithms <= {Algorithm.ES384, Algorithm.ML_DSA_87}
    if not ML_DSA_SUPPORTED:
        assert algorithms == {Algorithm.ES384}
    one = generate_fleet(FleetSpec(racks=1, servers_per_rack=1, rots_per_server=1, seed=3))
    assert [d.kind for d in one.devices] == [DeviceKind.CALIPTRA] and one.servers[0].blades == ()


def test_progress_is_reported_up_to_the_total() -> None:
    calls: list[tuple[str, int, int]] = []
    spec = FleetSpec(racks=1, servers_per_rack=2, rots_per_server=3, seed=1)
    generate_fleet(spec, progress=lambda *a: calls.append(a))
    assert calls == [("devices", n, 6) for n in range(1, 7)]


@pytest.mark.parametrize(
    "kwargs", [{"racks": 0}, {"servers_per_rack": 1025}, {"rots_per_server": 65}, {"seed": -1}]
)
def test_a_spec_out_of_bounds_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FleetSpec(**kwargs)


def test_manifests_parse_and_stay_under_the_size_budget() -> None:
    fleet = generate_fleet(FleetSpec(racks=1, servers_per_rack=3, rots_per_server=4, seed=5))
    manifests = fleet.manifests()
    assert {maker.kind for maker, _ in manifests} == set(DeviceKind) - {DeviceKind.OTHER}
    listed = set()
    for _, manifest in manifests:
        data = manifest.to_json()
        assert len(data) < MANIFEST_BUDGET * 2
        listed |= {d.device_id for d in parse_device_manifest(data).devices}
    assert listed == {d.device_id for d in fleet.devices}


def test_the_journey_has_every_phase_and_each_org_only_states_its_roles_kinds() -> None:
    fleet = generate_fleet(FleetSpec(racks=2, servers_per_rack=2, rots_per_server=4, seed=2))
    steps = journey_steps(fleet)
    assert list(steps) == list(PHASES[1:])
    per_server = ("in-transit", "arrival", "arrived", "attestation", "verified", "production")
    assert all(len(steps[p]) == 4 for p in per_server)
    assert len(steps["boards"]) == 4 * 2 and len(steps["racks"]) == 2
    roles = {a.name: type(a).ROLE for a in fleet.actors}
    for phase in PHASES[1:]:
        for step in steps[phase]:
            assert step.actor.name in roles
    content_types = {k.role.value for k in KINDS.values()}
    assert set(roles.values()) == content_types


def test_each_attack_is_named_once_and_documents_what_sealtrail_must_report() -> None:
    names = [name for name, _ in ATTACKS]
    assert len(names) == len(set(names)) == 14
    for name, scenario in ATTACKS:
        doc = scenario.__doc__ or ""
        assert "must" in doc, name
        assert re.search(r"must [^.]*``[a-z][^`]+``", doc, re.DOTALL), f"{name} names no finding"
