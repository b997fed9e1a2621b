"""The provenance query routes (``/provenance/v1``) over HTTP, on a service whose log holds
one server's whole journey as real signed statements (tests/integration/_journey.py).

Every view is checked against what was registered; every timeline entry's receipt verifies
offline against the log's signed checkpoint; views as of an earlier tree size leave out the
later facts; bad input is refused with its exact code, and nothing changes.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sealtrail.errors import VerificationError
from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, verify_checkpoint
from sealtrail.merkle import MerkleError, verify_consistency
from sealtrail.provenance import ProvenanceLedger
from sealtrail.scitt import (
    add_receipts,
    decode_key_set,
    verify_receipt,
    verify_transparent_statement,
)
from sealtrail.service import create_app
from sealtrail.service._provenance import ProvenanceQueries
from sealtrail.storage import SQLiteIndex, SQLiteStore, open_index
from tests.conftest import reader_for

from ._journey import (
    ASSEMBLER,
    BLADES,
    CARRIER,
    MAKER,
    OPERATOR,
    SERVER,
    SHIPMENT,
    STEPS,
    Journey,
    run_over_http,
)
from .conftest import (
    ADMIN_TOKEN,
    ORIGIN,
    assert_problem,
    service_application,
    snapshot,
    sqlite_rows,
)

P = "/provenance/v1"
#: Longest wait for the index to catch up with the log.
INDEX_WAIT = 15.0
#: Who registered each step.
ORG_OF = {
    "manifest": MAKER,
    "release": MAKER,
    "blade-0": ASSEMBLER,
    "blade-1": ASSEMBLER,
    "server": ASSEMBLER,
    "shipped": CARRIER,
    "received": CARRIER,
}
KIND_OF = {
    "manifest": "device-manifest",
    "release": "firmware-release",
    "blade-0": "assembly",
    "blade-1": "assembly",
    "server": "assembly",
    "shipped": "custody",
    "received": "custody",
    "arrival": "arrival",
    "attestation": "attestation-result",
}


@dataclass
class World:
    app: FastAPI
    client: TestClient
    journey: Journey
    store: SQLiteStore
    index: SQLiteIndex
    index_path: Path
    ledger: ProvenanceLedger
    signer: CheckpointSigner

    def get(self, path: str, **params: str | int) -> Any:
        r = self.client.get(P + path, params=params)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-store"
        return r.json()

    def entry(self, step: str) -> str:
        return hashlib.sha256(self.journey.statements[step]).hexdigest()

    def index_of(self, step: str) -> int:
        return self.journey.indexes[step]


def _wait_for_index(client: TestClient, ledger: ProvenanceLedger) -> int:
    deadline = time.monotonic() + INDEX_WAIT
    while True:
        size = client.get("/log/v1/info").json()["size"]
        if ledger.index.applied_size() == size:
            return int(size)
        assert time.monotonic() < deadline, "the index did not catch up with the log"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A service over SQLite (log and index) with every organization onboarded and the
    journey registered through POST /entries; the index caught up."""
    tmp = tmp_path_factory.mktemp("provenance-http")
    store = SQLiteStore(tmp / "log.db")
    index = open_index(f"sqlite:///{tmp / 'provenance.db'}")
    assert isinstance(index, SQLiteIndex)
    signer = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    app = service_application(store, checkpoint_signer=signer, index=index)
    journey = Journey.new()
    with TestClient(app, follow_redirects=False) as client:
        run_over_http(client, journey, ADMIN_TOKEN)
        ledger = app.state.ledger
        _wait_for_index(client, ledger)
        yield World(app, client, journey, store, index, tmp / "provenance.db", ledger, signer)
    store.close()


# -- the views ----------------------------------------------------------------------------


def test_a_device_names_its_manifest_maker_and_where_it_is_installed(world: World) -> None:
    first = world.journey.devices[0]
    doc = world.get(f"/devices/{first.device_id}")
    assert doc == {
        "device_id": first.device_id,
        "serial": "RoT-0000",
        "kind": "caliptra",
        "algorithm": "ES384",
        "maker": MAKER,
        "batch": "batch-1",
        "manifest": world.entry("manifest"),
        "installed_in": [BLADES[0], SERVER],
        "size": world.ledger.index.applied_size(),
    }


def test_a_device_is_found_by_maker_and_serial(world: World) -> None:
    last = world.journey.devices[-1]
    doc = world.get("/devices", maker=MAKER, serial=last.serial)
    assert doc == world.get(f"/devices/{last.device_id}")
    assert doc["installed_in"] == [BLADES[1], SERVER]


def test_a_server_node_has_its_devices_compliance_arrival_and_attestation(world: World) -> None:
    doc = world.get(f"/nodes/{SERVER}")
    assert doc["serial"] == SERVER
    assert doc["type"] == "server"
    assert doc["assembler"] == ASSEMBLER
    assert doc["children"] == [f"node:{b}" for b in BLADES]
    assert doc["devices"] == sorted(world.journey.device_ids)
    assert doc["installed_in"] == []
    assert doc["in_transit"] is None
    assert doc["compliance"]["state"] == "verified"
    assert doc["compliance"]["entry"] == world.entry("verified")
    assert doc["arrival"]["result"] == "pass"
    assert doc["arrival"]["shipment"] == SHIPMENT
    assert doc["arrival"]["entry"] == world.entry("arrival")
    assert doc["attestation"]["status"] == "affirming"
    assert doc["attestation"]["entry"] == world.entry("attestation")
    assert doc["size"] == world.ledger.index.applied_size()


def test_a_blade_node_has_no_server_fields(world: World) -> None:
    doc = world.get(f"/nodes/{BLADES[0]}")
    assert doc["type"] == "blade"
    assert doc["installed_in"] == [SERVER]
    assert doc["devices"] == sorted(d.device_id for d in world.journey.devices[:2])
    assert not {"compliance", "arrival", "attestation"} & set(doc)


def test_the_tree_nests_blades_and_devices(world: World) -> None:
    doc = world.get(f"/nodes/{SERVER}/tree")
    devices = world.journey.device_ids
    assert doc == {
        "serial": SERVER,
        "type": "server",
        "children": [
            {
                "serial": BLADES[b],
                "type": "blade",
                "children": [{"device_id": d} for d in sorted(devices[2 * b : 2 * b + 2])],
            }
            for b in (0, 1)
        ],
        "size": world.ledger.index.applied_size(),
    }


def test_the_shipment_has_both_custody_records(world: World) -> None:
    doc = world.get(f"/shipments/{SHIPMENT}")
    assert doc == {
        "shipment_id": SHIPMENT,
        "carrier": CARRIER,
        "from": ASSEMBLER,
        "to": OPERATOR,
        "contents": [SERVER],
        "seals": ["seal-1", "seal-2"],
        "shipped": world.entry("shipped"),
        "received": world.entry("received"),
        "findings": [],
        "size": world.ledger.index.applied_size(),
    }


def test_compliance_lists_servers_and_filters_by_state(world: World) -> None:
    doc = world.get("/compliance")
    assert doc["state"] is None
    assert [s["server_serial"] for s in doc["servers"]] == [SERVER]
    assert doc["servers"][0]["state"] == "verified"
    assert doc["servers"][0]["entry"] == world.entry("verified")
    assert world.get("/compliance", state="verified")["servers"] == doc["servers"]
    assert world.get("/compliance", state="production")["servers"] == []


# -- timelines and their receipts ---------------------------------------------------------


def _verify_timeline(world: World, doc: dict[str, Any]) -> None:
    """Every entry's receipt verifies offline, alone and as a transparent statement, and
    proves the entry against the root of the log's signed checkpoint."""
    keys = decode_key_set(world.client.get("/.well-known/scitt-keys").content)
    note = world.client.get("/checkpoint").content
    checkpoint = verify_checkpoint(note, origin=ORIGIN, verifiers=[world.signer.verifier])
    assert doc["checkpoint"] == checkpoint.size
    for entry in doc["entries"]:
        receipt = base64.b64decode(entry["receipt"], validate=True)
        info = verify_receipt(receipt, leaf_entry=bytes.fromhex(entry["entry_id"]), keys=keys)
        assert info.leaf_index == entry["index"]
        assert info.tree_size == checkpoint.size
        assert info.root == checkpoint.root
        statement = world.client.get(f"/entries/{entry['entry_id']}/statement")
        assert statement.status_code == 200
        verified = verify_transparent_statement(
            add_receipts(statement.content, [receipt]), service_keys=keys
        )
        assert verified.entry_id == entry["entry_id"]


def _expected(world: World, steps: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "index": world.index_of(step),
            "entry_id": world.entry(step),
            "kind": KIND_OF.get(step, "compliance"),
            "org": ORG_OF.get(step, OPERATOR),
            "outcome": "applied",
        }
        for step in sorted(steps, key=world.index_of)
    ]


def test_the_node_timeline_holds_every_fact_about_it_with_receipts(world: World) -> None:
    doc = world.get(f"/nodes/{SERVER}/timeline")
    assert doc["serial"] == SERVER
    assert doc["size"] == world.ledger.index.applied_size()
    assert doc["truncated"] is False
    assert doc["subjects"] == sorted(
        [
            *(f"device:{d}" for d in world.journey.device_ids),
            f"node:{SERVER}",
            *(f"node:{b}" for b in BLADES),
            f"shipment:{SHIPMENT}",
        ]
    )
    # Everything but the firmware release, which is about its component.
    steps = [s for s in STEPS if s != "release"]
    assert [{k: v for k, v in e.items() if k != "receipt"} for e in doc["entries"]] == _expected(
        world, steps
    )
    _verify_timeline(world, doc)


def test_the_device_timeline_holds_its_manifest_assembly_and_attestation(world: World) -> None:
    device = world.journey.devices[2]  # in blade 1
    doc = world.get(f"/devices/{device.device_id}/timeline")
    assert doc["device_id"] == device.device_id
    assert [{k: v for k, v in e.items() if k != "receipt"} for e in doc["entries"]] == _expected(
        world, ["manifest", "blade-1", "attestation"]
    )
    _verify_timeline(world, doc)


def test_a_tampered_receipt_does_not_verify_for_another_entry(world: World) -> None:
    doc = world.get(f"/nodes/{SERVER}/timeline")
    keys = decode_key_set(world.client.get("/.well-known/scitt-keys").content)
    first, second = doc["entries"][:2]
    receipt = base64.b64decode(first["receipt"])
    with pytest.raises(VerificationError):
        verify_receipt(receipt, leaf_entry=bytes.fromhex(second["entry_id"]), keys=keys)


# -- point in time ------------------------------------------------------------------------


def test_before_the_server_was_assembled_it_is_unknown(world: World) -> None:
    size = world.index_of("server")  # entries [0, server): its assembly not yet
    for path in (f"/nodes/{SERVER}", f"/nodes/{SERVER}/tree", f"/nodes/{SERVER}/timeline"):
        assert_problem(world.client.get(P + path, params={"size": size}), 404, "node-unknown")
    assert world.get(f"/nodes/{BLADES[0]}", size=size)["installed_in"] == []


def test_just_after_assembly_the_server_has_none_of_the_later_facts(world: World) -> None:
    size = world.index_of("server") + 1
    doc = world.get(f"/nodes/{SERVER}", size=size)
    assert doc["size"] == size
    assert doc["devices"] == sorted(world.journey.device_ids)
    assert doc["compliance"] == {"state": "registered"}
    assert doc["arrival"] is None
    assert doc["attestation"] is None
    assert doc["in_transit"] is None
    timeline = world.get(f"/nodes/{SERVER}/timeline", size=size)
    assert timeline["size"] == size
    assert [e["index"] for e in timeline["entries"]] == sorted(
        world.index_of(s) for s in ("manifest", "blade-0", "blade-1", "server")
    )
    # The receipts are still against the latest checkpoint.
    _verify_timeline(world, timeline)
    assert world.get(f"/nodes/{SERVER}/tree", size=size)["size"] == size


def test_while_shipped_the_server_is_in_transit(world: World) -> None:
    size = world.index_of("in-transit") + 1
    doc = world.get(f"/nodes/{SERVER}", size=size)
    assert doc["in_transit"] == {"shipment": SHIPMENT}
    assert doc["compliance"]["state"] == "in-transit"
    shipment = world.get(f"/shipments/{SHIPMENT}", size=size)
    assert shipment["received"] is None
    assert shipment["shipped"] == world.entry("shipped")
    servers = world.get("/compliance", size=size)["servers"]
    assert [(s["server_serial"], s["state"]) for s in servers] == [(SERVER, "in-transit")]
    assert world.get("/compliance", state="verified", size=size)["servers"] == []
    assert_problem(
        world.client.get(P + f"/shipments/{SHIPMENT}", params={"size": world.index_of("shipped")}),
        404,
        "shipment-unknown",
    )


def test_a_device_before_and_after_its_manifest(world: World) -> None:
    device = world.journey.devices[0]
    before = world.index_of("manifest")
    for path in (f"/devices/{device.device_id}", f"/devices/{device.device_id}/timeline"):
        assert_problem(world.client.get(P + path, params={"size": before}), 404, "device-unknown")
    r = world.client.get(P + "/devices", params={"maker": MAKER, "serial": "RoT-0000", "size": 0})
    assert_problem(r, 404, "device-unknown")
    doc = world.get(f"/devices/{device.device_id}", size=before + 1)
    assert doc["installed_in"] == []
    assert doc["size"] == before + 1
    timeline = world.get(f"/devices/{device.device_id}/timeline", size=before + 1)
    assert [e["index"] for e in timeline["entries"]] == [before]


def test_the_view_at_the_index_size_is_the_view_now(world: World) -> None:
    applied = world.ledger.index.applied_size()
    paths = (f"/nodes/{SERVER}", f"/nodes/{SERVER}/tree", f"/shipments/{SHIPMENT}", "/compliance")
    for path in paths:
        past = world.get(path, size=applied)
        assert past.pop("tree")["size"] == applied  # and the proof of its tree
        assert past == world.get(path)


ALL_ROUTES = [
    "/devices/{device}",
    "/devices/{device}/timeline",
    f"/nodes/{SERVER}",
    f"/nodes/{SERVER}/tree",
    f"/nodes/{SERVER}/timeline",
    f"/shipments/{SHIPMENT}",
    "/compliance",
]


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_a_size_beyond_the_index_is_404_index_size_unknown(world: World, route: str) -> None:
    path = route.format(device=world.journey.device_ids[0])
    applied = world.ledger.index.applied_size()
    for size in (applied + 1, 10**18):
        r = world.client.get(P + path, params={"size": size})
        assert_problem(r, 404, "index-size-unknown")


@pytest.mark.parametrize("route", ALL_ROUTES)
@pytest.mark.parametrize("size", ["-1", "abc", "1.5", "", "+3", "0x10", "\uff11", "9" * 20])
def test_a_size_that_is_not_a_tree_size_is_400(world: World, route: str, size: str) -> None:
    path = route.format(device=world.journey.device_ids[0])
    assert_problem(world.client.get(P + path, params={"size": size}), 400, "size-invalid")


# -- bad input: exact codes, nothing changed ----------------------------------------------

UNKNOWN_DEVICE = "ab" * 32
BAD_INPUT = [
    ("/devices/abc", {}, 400, "device-id-invalid"),
    ("/devices/" + "AB" * 32, {}, 400, "device-id-invalid"),
    ("/devices/" + "a" * 63, {}, 400, "device-id-invalid"),
    ("/devices/" + "a" * 65, {}, 400, "device-id-invalid"),
    ("/devices/" + "g" * 64 + "/timeline", {}, 400, "device-id-invalid"),
    (f"/devices/{UNKNOWN_DEVICE}", {}, 404, "device-unknown"),
    (f"/devices/{UNKNOWN_DEVICE}/timeline", {}, 404, "device-unknown"),
    ("/devices", {}, 400, "device-lookup-invalid"),
    ("/devices", {"maker": MAKER}, 400, "device-lookup-invalid"),
    ("/devices", {"serial": "RoT-0000"}, 400, "device-lookup-invalid"),
    ("/devices", {"maker": MAKER, "serial": "nope"}, 404, "device-unknown"),
    ("/devices", {"maker": "carrier", "serial": "RoT-0000"}, 404, "device-unknown"),
    ("/devices", {"maker": MAKER, "serial": "a\nb"}, 400, "serial-invalid"),
    ("/devices", {"maker": MAKER, "serial": ""}, 400, "serial-invalid"),
    ("/devices", {"maker": "m" * 129, "serial": "RoT-0000"}, 400, "maker-invalid"),
    ("/nodes/NOPE", {}, 404, "node-unknown"),
    ("/nodes/NOPE/tree", {}, 404, "node-unknown"),
    ("/nodes/NOPE/timeline", {}, 404, "node-unknown"),
    ("/nodes/" + "s" * 129, {}, 400, "serial-invalid"),
    ("/nodes/" + "s" * 129 + "/tree", {}, 400, "serial-invalid"),
    ("/nodes/" + "s" * 129 + "/timeline", {}, 400, "serial-invalid"),
    ("/nodes/a%09b", {}, 400, "serial-invalid"),
    ("/nodes/a%00b", {}, 400, "serial-invalid"),
    ("/nodes/%E2%80%A8", {}, 400, "serial-invalid"),  # U+2028, a line separator
    ("/shipments/NOPE", {}, 404, "shipment-unknown"),
    ("/shipments/" + "x" * 129, {}, 400, "shipment-id-invalid"),
    ("/shipments/a%0Db", {}, 400, "shipment-id-invalid"),
    ("/compliance", {"state": "bogus"}, 400, "compliance-state-invalid"),
    ("/compliance", {"state": "Verified"}, 400, "compliance-state-invalid"),
    ("/compliance", {"state": ""}, 400, "compliance-state-invalid"),
    ("/nodes", {}, 404, "not-found"),
    ("/nope", {}, 404, "not-found"),
]


def _everything(world: World) -> dict[str, Any]:
    return {
        "store": snapshot(world.store),
        "index": sqlite_rows(world.index_path),
        "applied": world.ledger.index.applied_size(),
    }


def test_bad_input_gets_its_exact_code_and_changes_nothing(world: World) -> None:
    before = _everything(world)
    for path, params, status, code in BAD_INPUT:
        r = world.client.get(P + path, params=params)
        body = assert_problem(r, status, code)
        assert "nope" not in body["detail"].lower() or code == "not-found", (path, body)
    for method in ("POST", "PUT", "DELETE"):
        r = world.client.request(method, P + f"/nodes/{SERVER}")
        assert_problem(r, 405, "method-not-allowed")
    assert _everything(world) == before


def test_the_views_do_not_change_when_read_again(world: World) -> None:
    before = _everything(world)
    paths = [p.format(device=world.journey.device_ids[0]) for p in ALL_ROUTES]
    first = [world.get(p) for p in paths]
    assert [world.get(p) for p in paths] == first
    assert _everything(world) == before


# -- wiring ---------------------------------------------------------------------------------


def test_the_read_only_app_has_no_provenance_routes(world: World) -> None:
    app = create_app(reader_for(world.store, world.signer), verifier_key="unused")
    with TestClient(app) as client:
        assert client.get("/log/v1/info").status_code == 200
        # Answered, as every service path there, with what the server is.
        assert_problem(client.get(P + f"/nodes/{SERVER}"), 501, "read-only-server")
        assert_problem(client.get(P + "/compliance"), 501, "read-only-server")


def test_a_ledger_without_a_transparency_service_is_a_wiring_error(world: World) -> None:
    with pytest.raises(TypeError, match="transparency service"):
        create_app(
            reader_for(world.store, world.signer), verifier_key="unused", ledger=world.ledger
        )


def test_the_routes_are_in_the_openapi_document(world: World) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]
    assert {
        P + "/devices",
        P + "/devices/{device_id}",
        P + "/devices/{device_id}/timeline",
        P + "/nodes/{serial}",
        P + "/nodes/{serial}/tree",
        P + "/nodes/{serial}/timeline",
        P + "/shipments/{shipment_id}",
        P + "/compliance",
    } <= set(paths)


class _MovingIndex:
    """The real index, but the first ``applied_size`` answer is older: as if an entry was
    indexed while a view was being read."""

    def __init__(self, index: SQLiteIndex) -> None:
        self.index = index
        self.calls = 0

    def applied_size(self) -> int:
        self.calls += 1
        return self.index.applied_size() - (1 if self.calls == 1 else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)


def test_a_view_read_while_the_index_moved_is_read_again_at_the_new_size(world: World) -> None:
    queries = ProvenanceQueries(world.ledger, world.app.state.transparency_service)
    moving = _MovingIndex(world.index)
    queries.index = moving
    doc = queries.node(SERVER, None)
    assert moving.calls == 2
    assert doc == world.get(f"/nodes/{SERVER}")  # as of the newer size, which is now


# -- challenges ---------------------------------------------------------------------------------

BLADES_0 = BLADES[0].encode()


def test_challenges_are_fresh_nonces_for_a_known_server(world: World) -> None:
    before = time.time()
    r = world.client.post("/provenance/v1/challenges", json={"server_serial": SERVER, "count": 3})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert doc["server_serial"] == SERVER
    assert len(set(doc["nonces"])) == 3
    assert all(len(bytes.fromhex(n)) == 32 for n in doc["nonces"])
    assert doc["expires"] >= before + 60


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"server_serial": "srv-unknown"}', 404, "node-unknown"),
        (b'{"server_serial": "' + BLADES_0 + b'"}', 404, "node-unknown"),
        (b'{"server_serial": "x", "count": 0}', 400, "challenge-bad-count"),
        (b'{"server_serial": "x", "count": 1025}', 400, "challenge-bad-count"),
        (b'{"server_serial": "x", "count": true}', 400, "challenge-request-invalid"),
        (b'{"server_serial": 7}', 400, "challenge-request-invalid"),
        (b'{"server_serial": "x", "extra": 1}', 400, "challenge-request-invalid"),
        (b"[]", 400, "challenge-request-invalid"),
        (b"not json", 400, "challenge-request-invalid"),
        (b'{"server_serial": "' + b"x" * 5000 + b'"}', 413, "body-too-large"),
    ],
)
def test_bad_challenge_requests_are_named(
    world: World, body: bytes, status: int, code: str
) -> None:
    r = world.client.post(
        "/provenance/v1/challenges", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(r, status, code)


def test_a_view_in_the_past_proves_its_tree_is_a_prefix_of_the_signed_log(world: World) -> None:
    at = world.index_of("server") + 1
    doc = world.get(f"/nodes/{SERVER}", size=at)
    tree = doc["tree"]
    assert tree["size"] == at
    signed = verify_checkpoint(
        tree["checkpoint"].encode(), origin=ORIGIN, verifiers=[world.signer.verifier]
    )
    hashes = [base64.b64decode(h) for h in tree["consistency"]]
    root = base64.b64decode(tree["root"])
    verify_consistency(size1=at, size2=signed.size, proof=hashes, root1=root, root2=signed.root)
    # A root that is not the log's at that size does not verify.
    with pytest.raises(MerkleError):
        verify_consistency(
            size1=at, size2=signed.size, proof=hashes, root1=bytes(32), root2=signed.root
        )
    assert "tree" not in world.get(f"/nodes/{SERVER}")
