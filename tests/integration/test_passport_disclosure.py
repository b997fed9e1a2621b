"""Who may export a passport, which holds every signed statement of its subject's journey,
whichever organization issued it (docs/auth.md, "Selective disclosure").

Auditors and administrators export any. An operator exports the passport of a server a
shipment addressed to its organization (one it holds or held), and of a device or blade
that sits or sat in one — the receiving operator's journey — or any passport whose
statements it may all read one by one (its own, and those shared with it). An operator of
any other organization, refused each statement at ``/entries/{id}/statement``, is refused
the passport as well (403 ``contents-forbidden``), by device id and by maker and serial too.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx2
import pytest
from fastapi.testclient import TestClient

from sealtrail.provenance import (
    Assembly,
    Custody,
    CustodyEvent,
    Node,
    NodeType,
    verify_passport,
)
from sealtrail.provenance._payloads import parse_time
from sealtrail.scitt import split_transparent
from sealtrail.storage import MemoryStore

from ._journey import (
    ASSEMBLER,
    BLADES,
    CARRIER,
    MAKER,
    OPERATOR,
    SERVER,
    STEPS,
    Journey,
    Org,
    run_with_writers,
    user_token,
)
from .conftest import ADMIN_TOKEN, COSE, assert_problem, service_application

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: The organization a server is shipped on to, from the operator that received it first.
NEXT = "next-dc"


@dataclass
class World:
    client: TestClient
    journey: Journey
    tokens: dict[str, str]
    register: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return ADMIN if who == "admin" else {"Authorization": f"Bearer {self.tokens[who]}"}

    def paths(self) -> dict[str, str]:
        """Every passport route, about the journey's server or one of its parts."""
        device = self.journey.devices[0]
        return {
            "server": f"/provenance/v1/passports/{SERVER}",
            "blade": f"/provenance/v1/passports/{BLADES[0]}",
            "device": f"/provenance/v1/device-passports/{device.device_id}",
            "device by serial": (
                f"/provenance/v1/device-passports?maker={MAKER}&serial={device.serial}"
            ),
        }

    def get(self, who: str, path: str) -> httpx2.Response:
        return self.client.get(path, headers=self.headers(who))

    def post(self, org: str, data: bytes) -> int:
        """Register ``data`` with a token of organization ``org``'s (its index unread: 0)."""
        headers = {"Content-Type": COSE, "Authorization": f"Bearer {self.register[org]}"}
        r = self.client.post("/entries", content=data, headers=headers)
        assert r.status_code == 201, r.text
        return 0


def _user(client: TestClient, name: str, persona: str, org: str | None) -> str:
    body: dict[str, object] = {"persona": persona}
    if org is not None:
        body["org"] = org
    r = client.put(f"/admin/users/{name}", content=json.dumps(body), headers=ADMIN)
    assert r.status_code == 201, r.text
    r = client.post(f"/admin/users/{name}/tokens", content=b"{}", headers=ADMIN)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def _like(journey: Journey, base: str, name: str) -> bytes:
    """An organization record of ``base``'s role and anchor, for organization ``name``."""
    doc = json.loads(journey.orgs[base].record())
    doc.update(org=name, issuers=[f"https://{name}.example/signing"])
    return json.dumps(doc).encode()


@contextmanager
def built_world() -> Iterator[World]:
    """The journey (server SRV-1 shipped to ``operator``) registered with users' tokens, and
    an operator of each of ``operator``, a rival, the next data center and the maker."""
    store = MemoryStore()
    app = service_application(store, auth_required=True)
    journey = Journey.new(devices=2)
    with TestClient(app) as client:
        register = run_with_writers(client, journey, ADMIN)
        for name in ("rival", NEXT):
            r = client.put(
                f"/admin/organizations/{name}",
                content=_like(journey, OPERATOR, name),
                headers=ADMIN,
            )
            assert r.status_code == 201, r.text

        def user(name: str, org: str | None, persona: str = "operator") -> str:
            return user_token(client, name, persona, org, ADMIN)

        tokens = {
            "the receiving operator": register[OPERATOR],
            "a rival operator": user("o-rival", "rival"),
            "the next operator": user("o-next", NEXT),
            "an operator of the maker": user("o-maker", MAKER),
            "an auditor": user("aud", None, "auditor"),
        }
        world = World(client, journey, tokens, register)
        yield world
    store.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with built_world() as w:
        yield w


def _entries(passport: bytes) -> list[str]:
    """The entry ids of a passport's statements."""
    found = []
    for item in json.loads(passport)["statements"]:
        body, _ = split_transparent(base64.b64decode(item["statement"]))
        found.append(hashlib.sha256(body).hexdigest())
    return found


def _refused(r: httpx2.Response) -> None:
    body = assert_problem(r, 403, "contents-forbidden")
    assert "passport" in body["detail"]
    assert len(r.content) < 1024  # a problem, nothing of the passport


@pytest.mark.parametrize("who", ["a rival operator", "an operator of the maker"])
def test_an_operator_of_another_organization_is_refused_every_passport(
    world: World, who: str
) -> None:
    """The statements it is refused one by one, it is refused inside a passport too."""
    for step in ("manifest", "shipped", "arrival", "attestation"):
        entry = hashlib.sha256(world.journey.statements[step]).hexdigest()
        if step == "manifest" and who == "an operator of the maker":
            continue  # the maker's own statement
        r = world.get(who, f"/entries/{entry}/statement")
        assert_problem(r, 403, "contents-forbidden")
    for path in world.paths().values():
        _refused(world.get(who, path))


def test_the_receiving_operator_exports_its_servers_passports(world: World) -> None:
    """The journey the receiving operator checks and keeps: its server's, its blades' and
    its devices' passports, every statement of them included."""
    for what, path in world.paths().items():
        r = world.get("the receiving operator", path)
        assert r.status_code == 200, (what, r.text)
        report = verify_passport(r.content)
        assert report.stages, what
    r = world.get("the receiving operator", world.paths()["server"])
    registered = {hashlib.sha256(world.journey.statements[s]).hexdigest() for s in STEPS}
    assert registered <= set(_entries(r.content))


@pytest.mark.parametrize("who", ["an auditor", "admin"])
def test_auditors_and_administrators_export_any_passport(world: World, who: str) -> None:
    for what, path in world.paths().items():
        assert world.get(who, path).status_code == 200, what


def test_an_unknown_subject_is_not_found_before_it_is_refused(world: World) -> None:
    for who in ("the receiving operator", "a rival operator"):
        assert_problem(world.get(who, "/provenance/v1/passports/SRV-404"), 404, "node-unknown")
        r = world.get(who, "/provenance/v1/device-passports/" + "ab" * 32)
        assert_problem(r, 404, "device-unknown")


def _ship(w: World, shipment: str, from_org: str, to_org: str, *, receive: bool = True) -> None:
    """SERVER shipped (and received) by the journey's carrier."""
    events = (CustodyEvent.SHIPPED, CustodyEvent.RECEIVED) if receive else (CustodyEvent.SHIPPED,)
    for event in events:
        custody = Custody(
            shipment_id=shipment,
            event=event,
            from_org=from_org,
            to_org=to_org,
            contents=(SERVER,),
            seals=("seal-3",),
            time=parse_time("2027-02-01T00:00:00Z", "time"),
            place="dock 9",
        )
        w.post(CARRIER, w.journey.orgs[CARRIER].sign(custody, f"urn:sealtrail:{shipment}"))


def _attest_as(w: World, who: str, org: str, shipment: str) -> None:
    """``org`` (an operator like the journey's) checks SERVER on arrival and attests it,
    its devices answering fresh nonces: it has the server in its hands."""
    signer = Org(org, w.journey.orgs[OPERATOR].signer)
    arrival = dataclasses.replace(
        w.journey.arrival([secrets.token_bytes(16) for _ in w.journey.device_ids]),
        shipment_id=shipment,
    )
    attestation = w.journey.attestation(secrets.token_bytes(32))
    for step, payload in (("arrival", arrival), ("attestation", attestation)):
        headers = {"Content-Type": COSE, **w.headers(who)}
        data = signer.sign(payload, f"urn:sealtrail:{org}-{step}")
        r = w.client.post("/entries", content=data, headers=headers)
        assert r.status_code == 201, r.text


def test_a_server_shipped_on_goes_to_the_organization_that_held_it_and_the_next() -> None:
    with built_world() as w:
        for who in ("the next operator", "a rival operator"):
            _refused(w.get(who, w.paths()["server"]))
        _ship(w, "SHIP-2", OPERATOR, NEXT)
        r = w.get("an auditor", "/provenance/v1/shipments/SHIP-2")
        assert r.status_code == 200 and r.json()["received"] is not None, r.text
        # Shipped to it on a carrier's word: not yet.
        _refused(w.get("the next operator", w.paths()["server"]))
        _attest_as(w, "the next operator", NEXT, "SHIP-2")
        for what, path in w.paths().items():
            for who in ("the receiving operator", "the next operator"):
                assert w.get(who, path).status_code == 200, (who, what)
            _refused(w.get("a rival operator", path))


def test_a_carriers_word_alone_gives_no_passport() -> None:
    """A carrier (rogue, or colluding) records the server shipped to a rival and received:
    the rival has not had the server in its hands (no attestation its devices signed), and
    is refused as before."""
    with built_world() as w:
        _ship(w, "ROGUE-1", OPERATOR, "rival")
        for path in w.paths().values():
            _refused(w.get("a rival operator", path))


def test_a_parts_passport_is_for_those_that_had_every_server_it_sat_in() -> None:
    """blade-0 moved from SRV-1 into SRV-2: its passport (and its devices') holds both
    servers' journeys, so it is for an organization that has had both in its hands. The
    operator that attested SRV-1 keeps SRV-1's passport, not the blade's; the organization
    that would attest SRV-2 alone would not get SRV-1's journey through the blade either."""
    with built_world() as w:
        other = Node(NodeType.SERVER, "SRV-2")
        moves = (
            Assembly(Node(NodeType.SERVER, SERVER), (), removed=(Node(NodeType.BLADE, BLADES[0]),)),
            Assembly(other, (Node(NodeType.BLADE, BLADES[0]),)),
        )
        for n, move in enumerate(moves):
            w.post(ASSEMBLER, w.journey.orgs[ASSEMBLER].sign(move, f"urn:sealtrail:move-{n}"))
        assert w.get("the receiving operator", w.paths()["server"]).status_code == 200
        for what in ("blade", "device", "device by serial"):
            _refused(w.get("the receiving operator", w.paths()[what]))
            assert w.get("an auditor", w.paths()[what]).status_code == 200, what


def test_an_operator_that_may_read_every_statement_exports_the_passport() -> None:
    """Shared with its organization one by one, the statements are the operator's to read,
    and so is their passport — only once every one of them is."""
    with built_world() as w:
        path = w.paths()["server"]
        entries = _entries(w.get("an auditor", path).content)
        for n, entry in enumerate(entries):
            _refused(w.get("a rival operator", path))
            r = w.client.post(
                f"/entries/{entry}/grants", content=b'{"org": "rival"}', headers=ADMIN
            )
            assert r.status_code == 201, (n, r.text)
        r = w.get("a rival operator", path)
        assert r.status_code == 200, r.text
        assert _entries(r.content) == entries
        # Taken back: refused again.
        r = w.client.delete(f"/entries/{entries[0]}/grants/rival", headers=ADMIN)
        assert r.status_code == 200, r.text
        _refused(w.get("a rival operator", path))
