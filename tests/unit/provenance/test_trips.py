"""A server's trips and the organizations that may speak for it.

Each shipment starts a trip: the server arrives and attests anew, and only the organization
it was shipped to records that. An assembly change makes its server attest again, only the
node's assembler changes a node, and only the shipment's carrier or recipient receives it.
Each attack is refused and changes nothing (``refused``), or leaves the server unable to
reach production.
"""

from __future__ import annotations

import time

import pytest

from sealtrail.errors import InvalidInput
from sealtrail.provenance import (
    Compliance,
    ComplianceState,
    CustodyEvent,
    EarStatus,
    Node,
    NodeType,
)

from ._signed import signed_chain
from ._world import ASSEMBLER, OPERATOR, World
from .test_state import refused

S = ComplianceState
OTHER_OPERATOR, OTHER_CARRIER, OTHER_ASSEMBLER = "operator-b", "carrier-b", "assembler-b"
SERVER = Node(NodeType.SERVER, "srv-1")


@pytest.fixture
def world() -> World:
    w = World()
    assert w.release().applied
    w.build_server("srv-1")
    w.to_production("srv-1", "ship-1")
    return w


#: A second trip: from the data center, to another of its sites.
AGAIN = (OPERATOR, OPERATOR)


def _ship_again(world: World, shipment: str = "ship-2") -> None:
    world.ok("carrier", world._custody_payload(shipment, CustodyEvent.SHIPPED, ["srv-1"], AGAIN))
    assert world.comply("srv-1", S.IN_TRANSIT).applied


# -- trips ------------------------------------------------------------------------------


def test_a_new_shipment_clears_the_arrival_and_the_attestation(world: World) -> None:
    assert world.state.rows.get("arrival", "srv-1") is not None
    _ship_again(world)
    assert world.state.rows.get("arrival", "srv-1") is None
    assert world.state.rows.get("attestation", "srv-1") is None
    assert world.state.rows.get("trip", "srv-1") == {
        "shipment": "ship-2",
        "to": OPERATOR,
        "received": None,
    }
    # The first trip's arrival no longer moves it: nothing arrived yet.
    refused(world, "compliance-needs-arrival", lambda: world.comply("srv-1", S.ARRIVED))


def test_no_arrival_or_attestation_while_the_server_is_on_the_truck(world: World) -> None:
    _ship_again(world)
    refused(world, "arrival-in-transit", lambda: world.arrival("ship-1", "srv-1"))
    refused(world, "attestation-in-transit", lambda: world.attest("srv-1"))


def test_an_arrival_must_cite_the_servers_latest_shipment(world: World) -> None:
    _ship_again(world)
    world.ok("carrier", world._custody_payload("ship-2", CustodyEvent.RECEIVED, ["srv-1"], AGAIN))
    assert world.state.rows.get("trip", "srv-1")["received"] is not None  # type: ignore[index]
    refused(world, "arrival-not-latest-shipment", lambda: world.arrival("ship-1", "srv-1"))
    assert world.arrival("ship-2", "srv-1").applied
    assert world.comply("srv-1", S.ARRIVED).applied


def test_a_broken_seal_on_the_second_trip_keeps_the_server_out_of_production(
    world: World,
) -> None:
    _ship_again(world)
    assert world.custody(
        "ship-2", CustodyEvent.RECEIVED, ["srv-1"], seals=["seal-1"], parties=AGAIN
    ).applied
    refused(world, "arrival-contradicts-custody", lambda: world.arrival("ship-2", "srv-1"))
    refused(world, "arrival-not-latest-shipment", lambda: world.arrival("ship-1", "srv-1"))
    refused(world, "compliance-needs-arrival", lambda: world.comply("srv-1", S.ARRIVED))


def test_an_attestation_made_before_the_trip_does_not_verify_the_server() -> None:
    w = World()
    assert w.release().applied
    w.build_server("srv-1")
    assert w.attest("srv-1").applied  # at the factory
    w.ok("carrier", w._custody_payload("ship-1", CustodyEvent.SHIPPED, ["srv-1"]))
    assert w.comply("srv-1", S.IN_TRANSIT).applied
    w.ok("carrier", w._custody_payload("ship-1", CustodyEvent.RECEIVED, ["srv-1"]))
    assert w.arrival("ship-1", "srv-1").applied
    assert w.comply("srv-1", S.ARRIVED).applied
    refused(w, "compliance-needs-attestation", lambda: w.comply("srv-1", S.VERIFIED))
    assert w.attest("srv-1").applied
    assert w.comply("srv-1", S.VERIFIED).applied


def test_a_shipped_server_reaches_production_through_no_detour_without_an_arrival(
    world: World,
) -> None:
    """Received with a broken seal, a server in production cannot be attested good, nor
    reinstated through an investigation, until an arrival on this trip passes."""
    _ship_again(world)
    assert world.custody(
        "ship-2", CustodyEvent.RECEIVED, ["srv-1"], seals=["seal-1"], parties=AGAIN
    ).applied
    refused(world, "attestation-needs-arrival", lambda: world.attest("srv-1"))
    # A failing attestation is still a fact worth keeping.
    assert world.attest("srv-1", status=EarStatus.CONTRAINDICATED).applied
    assert world.comply("srv-1", S.NON_COMPLIANT).applied
    assert world.comply("srv-1", S.UNDER_INVESTIGATION).applied
    refused(world, "compliance-needs-arrival", lambda: world.comply("srv-1", S.VERIFIED))


def test_a_server_never_shipped_has_no_arrival(world: World) -> None:
    """An arrival cites the server's own latest shipment: a server installed into a rack
    after the rack was received did not travel in it."""
    late = world.build_server("srv-late")
    assert late
    rack = Node(NodeType.RACK, "rack-9")
    assert world.assemble(rack, [Node(NodeType.SERVER, "srv-late")]).applied
    world.ok("carrier", world._custody_payload("ship-r", CustodyEvent.SHIPPED, ["rack-9"]))
    world.ok("carrier", world._custody_payload("ship-r", CustodyEvent.RECEIVED, ["rack-9"]))
    world.build_server("srv-later")
    assert world.assemble(rack, [Node(NodeType.SERVER, "srv-later")]).applied
    refused(world, "arrival-not-latest-shipment", lambda: world.arrival("ship-r", "srv-later"))
    assert world.arrival("ship-r", "srv-late").applied


def test_only_the_holder_of_a_server_sends_it(world: World) -> None:
    """A carrier cannot take a server from its data center by naming another sender."""
    for sender in ("nobody", ASSEMBLER):
        refused(
            world,
            "custody-not-holder",
            lambda sender=sender: world.apply(
                OTHER_CARRIER,
                world._custody_payload(
                    "grab-1", CustodyEvent.SHIPPED, ["srv-1"], (sender, "mallory")
                ),
            ),
        )
    # Never shipped, a node is held by its assembler.
    world.build_server("srv-2")
    refused(
        world,
        "custody-not-holder",
        lambda: world.apply(
            "carrier",
            world._custody_payload("s-2", CustodyEvent.SHIPPED, ["srv-2"], ("x", OPERATOR)),
        ),
    )


# -- assembly changes -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["server", "blade"])
def test_an_assembly_change_makes_its_server_attest_again(world: World, where: str) -> None:
    spare = world.devices(1)
    assert world.manifest(spare).applied
    if where == "server":
        donor = Node(NodeType.BLADE, "spare-blade")
        assert world.assemble(donor, spare).applied
        old = Node(NodeType.BLADE, "srv-1-blade-0")
        assert world.assemble(SERVER, [donor], removed=[old]).applied
    else:
        assert world.assemble(Node(NodeType.BLADE, "srv-1-blade-1"), spare).applied
    assert world.state.rows.get("attestation", "srv-1") is None
    # Still in production, but the sweep now finds it, and it cannot be reinstated
    # without attesting its new contents.
    assert world.state.stale_servers(["srv-1"], now=world.now) == ["srv-1"]
    assert world.comply("srv-1", S.NON_COMPLIANT).applied
    assert world.comply("srv-1", S.IN_REMEDIATION).applied
    refused(world, "compliance-needs-attestation", lambda: world.comply("srv-1", S.VERIFIED))
    assert world.attest("srv-1").applied
    assert world.comply("srv-1", S.VERIFIED).applied


def test_a_node_in_a_shipment_cannot_be_installed_or_shipped_twice() -> None:
    w = World()
    assert w.release().applied
    w.build_server("srv-1")
    rack = Node(NodeType.RACK, "rack-1")
    w.build_server("srv-2")
    assert w.assemble(rack, [Node(NodeType.SERVER, "srv-2")]).applied
    w.ok("carrier", w._custody_payload("ship-a", CustodyEvent.SHIPPED, ["srv-1"]))
    refused(
        w,
        "assembly-in-transit",
        lambda: w.assemble(rack, [Node(NodeType.SERVER, "srv-1")]),
    )
    w.ok("carrier", w._custody_payload("ship-b", CustodyEvent.SHIPPED, ["srv-2"]))
    # The rack holds srv-2, which is on a truck of its own.
    refused(
        w,
        "custody-already-in-transit",
        lambda: w.apply("carrier", w._custody_payload("ship-c", CustodyEvent.SHIPPED, ["rack-1"])),
    )


# -- who may speak for what -------------------------------------------------------------


def test_only_a_nodes_assembler_changes_it(world: World) -> None:
    blade = Node(NodeType.BLADE, "srv-1-blade-0")
    refused(
        world,
        "assembly-not-assembler",
        lambda: world.assemble(SERVER, [], removed=[blade], org=OTHER_ASSEMBLER),
    )
    # An integrator builds its own node from another assembler's loose parts.
    devices = world.devices(1)
    assert world.manifest(devices).applied
    loose = Node(NodeType.BLADE, "odm-blade")
    assert world.assemble(loose, devices).applied
    assert world.assemble(Node(NodeType.SERVER, "int-1"), [loose], org=OTHER_ASSEMBLER).applied
    assert world.state.rows.get("node", "int-1")["assembler"] == OTHER_ASSEMBLER  # type: ignore[index]
    assert world.state.rows.get("node", "odm-blade")["assembler"] == ASSEMBLER  # type: ignore[index]


def test_only_the_carrier_or_the_recipient_receives_a_shipment(world: World) -> None:
    """Another organization is answered as for an unknown shipment: the refusal tells it
    neither that the shipment exists nor who its parties are."""
    _ship_again(world)
    unknown = world.custody("ship-404", CustodyEvent.RECEIVED, ["srv-1"], org=OTHER_CARRIER)
    assert unknown.code == "custody-not-shipped"
    refused(
        world,
        "custody-not-shipped",
        lambda: world.custody(
            "ship-2", CustodyEvent.RECEIVED, ["srv-1"], org=OTHER_CARRIER, parties=AGAIN
        ),
    )
    assert world.custody(
        "ship-2", CustodyEvent.RECEIVED, ["srv-1"], org=OPERATOR, parties=AGAIN
    ).applied


def test_only_the_organization_a_server_was_shipped_to_speaks_for_it(world: World) -> None:
    for to in (S.NON_COMPLIANT, S.IN_TRANSIT):
        refused(
            world,
            "compliance-wrong-operator",
            lambda to=to: world.comply("srv-1", to, org=OTHER_OPERATOR),
        )
    refused(world, "attestation-wrong-operator", lambda: world.attest("srv-1", org=OTHER_OPERATOR))
    refused(
        world,
        "arrival-wrong-operator",
        lambda: world.arrival("ship-1", "srv-1", org=OTHER_OPERATOR),
    )
    assert world.state.compliance_state("srv-1") is S.PRODUCTION


# -- time --------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_backdated_compliance_statement_is_refused_at_registration() -> None:
    async with signed_chain() as chain:
        await chain.journey()
        size = chain.sequencer.reader.size()
        change = Compliance("srv-1", S.PRODUCTION, S.NON_COMPLIANT, "backdated")
        late = chain.sign(OPERATOR, change, iat=int(time.time()) - 3600)
        with pytest.raises(InvalidInput) as caught:
            await chain.service.register(late)
        assert caught.value.code == "compliance-iat-past"
        assert chain.sequencer.reader.size() == size
        # Signed now, the same change registers.
        await chain.register(OPERATOR, change)
