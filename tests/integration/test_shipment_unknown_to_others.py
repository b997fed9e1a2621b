"""A carrier whose organization is no party to a shipment gets, for it, exactly the answer
it gets for a shipment no record names: same status, code and body, now and as of every
``size``. So neither whether another carrier's shipment exists nor the log position at
which it was recorded can be learned from the shipment view (docs/auth.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from fastapi.testclient import TestClient

from sealtrail.storage import MemoryStore

from ._journey import CARRIER, SHIPMENT, Journey, run_with_writers, user_token
from .conftest import ADMIN_TOKEN, assert_problem, service_application

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UNKNOWN = "SHIP-404"


@dataclass
class World:
    client: TestClient
    tokens: dict[str, str]
    size: int

    def get(self, who: str, shipment: str, size: int | None = None) -> httpx2.Response:
        query = "" if size is None else f"?size={size}"
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return self.client.get(f"/provenance/v1/shipments/{shipment}{query}", headers=headers)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The journey (SHIP-1 carried by ``carrier`` from the assembler to the operator), and
    a carrier of a rival organization."""
    store = MemoryStore()
    app = service_application(store, auth_required=True)
    journey = Journey.new(devices=2)
    with TestClient(app) as client:
        writers = run_with_writers(client, journey, ADMIN)
        rival = json.loads(journey.orgs[CARRIER].record())
        rival.update(org="rival", issuers=["https://rival.example/signing"])
        r = client.put("/admin/organizations/rival", content=json.dumps(rival), headers=ADMIN)
        assert r.status_code == 201, r.text
        tokens = {
            "the carrier": writers[CARRIER],
            "a rival carrier": user_token(client, "c-rival", "carrier", "rival", ADMIN),
        }
        size = client.get("/log/v1/info").json()["size"]
        yield World(client, tokens, size)
    store.close()


def test_now_another_carriers_shipment_is_answered_as_an_unknown_one(world: World) -> None:
    unknown = world.get("a rival carrier", UNKNOWN)
    theirs = world.get("a rival carrier", SHIPMENT)
    assert_problem(unknown, 404, "shipment-unknown")
    assert_problem(theirs, 404, "shipment-unknown")
    assert theirs.json() == unknown.json()
    assert theirs.headers.items() == unknown.headers.items()
    # The shipment's own carrier sees it.
    assert world.get("the carrier", SHIPMENT).json()["carrier"] == CARRIER


def test_at_every_size_another_carriers_shipment_is_answered_as_an_unknown_one(
    world: World,
) -> None:
    """No ``size`` tells a shipment that exists from one that does not: the position at
    which it was recorded cannot be bisected."""
    mine_from = None
    for size in range(world.size + 2):
        unknown = world.get("a rival carrier", UNKNOWN, size)
        theirs = world.get("a rival carrier", SHIPMENT, size)
        assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json()), size
        if world.get("the carrier", SHIPMENT, size).status_code == 200 and mine_from is None:
            mine_from = size
    assert mine_from is not None and 0 < mine_from <= world.size
    # Beyond the log, both are the index's answer, not the shipment's.
    assert world.get("a rival carrier", SHIPMENT, world.size + 1).json()["code"] == (
        "index-size-unknown"
    )
