"""Every route against every persona, with ``[auth] required`` (docs/auth.md).

The principals: the public, the bootstrap administrator, an admin user, a supplier of the
statements' organization and one of another organization, a carrier and an operator of the
statements' organization, an auditor — and three that must never get in: a revoked token,
an expired token and a made-up one. Each request is answered as the route table and the
route's own checks say, and a refused write changes nothing in the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx2
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from sealtrail.keys import ES256
from sealtrail.scitt import (
    GRANT_RECORD_TYPE,
    Token,
    TransparencyService,
    User,
    key_id,
    parse_grant_record,
    parse_statement,
)
from sealtrail.service._auth import ROUTES
from sealtrail.storage import MemoryStore
from tests.integration._journey import (
    ASSEMBLER,
    CARRIER,
    OPERATOR,
    SERVER,
    SHIPMENT,
    Journey,
    run_with_writers,
)
from tests.integration.conftest import (
    ADMIN_TOKEN,
    COSE,
    make_maker,
    service_application,
    statement,
)
from tests.unit.scitt._pki import make_issuer
from tests.unit.scitt.conftest import org_record

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OTHER_ISSUER = "https://other.example/signing"


@dataclass
class World:
    client: TestClient
    store: MemoryStore
    service: TransparencyService
    tokens: dict[str, str]
    entry: str
    maker_statement: Callable[[], bytes]
    #: A second statement of the maker's, the one the matrix shares (grants) around.
    shared_entry: str

    def headers(self, who: str) -> dict[str, str]:
        if who == "public":
            return {}
        if who == "bootstrap-admin":
            return dict(ADMIN)
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def snapshot(self) -> tuple[int, int]:
        checkpoint = self.store.read_checkpoint()
        stored = len(self.store.statements_since(0, limit=1_000_000))
        return (0 if checkpoint is None else checkpoint.size, stored)


def _user(client: TestClient, name: str, persona: str, org: str | None) -> str:
    body: dict[str, object] = {"persona": persona}
    if org is not None:
        body["org"] = org
    r = client.put(f"/admin/users/{name}", content=json.dumps(body), headers=ADMIN)
    assert r.status_code == 201, r.text
    r = client.post(f"/admin/users/{name}/tokens", content=b'{"days": 7}', headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    token: str = r.json()["token"]
    return token


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with built_world() as w:
        yield w


@contextmanager
def built_world() -> Iterator[World]:
    """The service with ``[auth] required``, two organizations, a user per principal, and
    one statement the maker's supplier registered."""
    store = MemoryStore()
    app = service_application(store, auth_required=True)
    maker = make_maker()
    other = make_issuer(ES256, cn="Other")
    with TestClient(app) as client:
        assert client.put("/admin/organizations/maker", content=maker.record(), headers=ADMIN)
        doc = json.loads(org_record(other))
        doc.update(org="other", issuers=[OTHER_ISSUER])
        r = client.put("/admin/organizations/other", content=json.dumps(doc), headers=ADMIN)
        assert r.status_code == 201, r.text
        tokens = {
            "admin-user": _user(client, "adam", "admin", None),
            "supplier": _user(client, "alice", "supplier", "maker"),
            "other-supplier": _user(client, "sam", "supplier", "other"),
            "carrier": _user(client, "carl", "carrier", "maker"),
            "operator": _user(client, "olga", "operator", "maker"),
            "auditor": _user(client, "audrey", "auditor", None),
            "revoked": _user(client, "rex", "supplier", "maker"),
            "made-up": "stk_0123456789abcdef_" + "x" * 43,
        }
        service: TransparencyService = app.state.transparency_service
        rex = service.users.get("rex")
        assert rex is not None
        r = client.delete(f"/admin/users/rex/tokens/{rex.tokens[0].id}", headers=ADMIN)
        assert r.status_code == 200, r.text
        # A token that expired an hour ago (issued directly: the API gives at least a day).
        expired = "stk_fedcba9876543210_" + "e" * 43

        async def add_expired() -> None:
            await service.put_user(
                User(
                    "eve",
                    1,
                    "supplier",
                    "maker",
                    (
                        Token(
                            "fedcba9876543210",
                            hashlib.sha256(expired.encode()).digest(),
                            int(time.time()) - 3600,
                        ),
                    ),
                )
            )

        assert client.portal is not None
        client.portal.call(add_expired)  # on the app's own event loop
        tokens["expired"] = expired
        counter = iter(range(10**6))

        def maker_statement() -> bytes:
            return statement(maker.issuer, payload=b'{"n": %d}' % next(counter))

        entries = []
        for _ in range(2):
            r = client.post(
                "/entries",
                content=maker_statement(),
                headers={"Content-Type": COSE, "Authorization": f"Bearer {tokens['supplier']}"},
            )
            assert r.status_code == 201, r.text
            entries.append(r.headers["location"].rsplit("/", 1)[1])
        yield World(client, store, service, tokens, entries[0], maker_statement, entries[1])


PRINCIPALS = [
    "public",
    "bootstrap-admin",
    "admin-user",
    "supplier",
    "other-supplier",
    "carrier",
    "operator",
    "auditor",
    "revoked",
    "expired",
    "made-up",
]
PERSONA = {
    "public": "public",
    "bootstrap-admin": "admin",
    "admin-user": "admin",
    "supplier": "supplier",
    "other-supplier": "supplier",
    "carrier": "carrier",
    "operator": "operator",
    "auditor": "auditor",
}
BAD_TOKENS = {"revoked", "expired", "made-up"}


@dataclass(frozen=True)
class Call:
    method: str
    route: str
    path: Callable[[World], str]
    body: Callable[[World], bytes] = lambda w: b""
    content_type: str | None = None
    #: principal -> expected status when the route table lets its persona in (route checks).
    inside: Callable[[str], int | None] = lambda who: None
    write: bool = False


def _next_version(w: World) -> bytes:
    """The maker's current record again, as its next version."""
    org = w.service.registry.get("maker")
    assert org is not None
    records = w.store.statements_of_type("application/vnd.sealtrail.organization+json")
    payloads = [json.loads(parse_statement(r.body).payload) for r in records]
    doc = next(d for d in reversed(payloads) if d["org"] == "maker")
    doc["version"] = org.version + 1
    return json.dumps(doc).encode()


def _shared_with(w: World) -> str:
    """An organization the shared statement is shared with (shared first if need be)."""
    entry = bytes.fromhex(w.shared_entry)
    if not w.service.grants.allows(entry, "other"):
        r = w.client.post(
            f"/entries/{w.shared_entry}/grants", content=b'{"org": "other"}', headers=ADMIN
        )
        assert r.status_code == 201, r.text
    return "other"


def _token_id(w: World) -> str:
    """A token of a throwaway user, made for a revocation attempt."""
    if w.service.users.get("tmp") is None:
        _user(w.client, "tmp", "supplier", "maker")
    user = w.service.users.get("tmp")
    assert user is not None
    if not user.tokens:
        r = w.client.post("/admin/users/tmp/tokens", content=b"{}", headers=ADMIN)
        assert r.status_code == 201, r.text
        user = w.service.users.get("tmp")
        assert user is not None
    return user.tokens[0].id


CALLS = [
    # The API's description: public, yet a bad credential is refused here too.
    Call("GET", "/openapi.json", lambda w: "/openapi.json"),
    Call("GET", "/docs", lambda w: "/docs"),
    Call("GET", "/redoc", lambda w: "/redoc"),
    Call("GET", "/checkpoint", lambda w: "/checkpoint"),
    Call("HEAD", "/checkpoint", lambda w: "/checkpoint"),
    Call("GET", "/tile/{path:path}", lambda w: "/tile/0/000.p/1"),
    Call("HEAD", "/tile/{path:path}", lambda w: "/tile/0/000.p/1"),
    Call("GET", "/log/v1/info", lambda w: "/log/v1/info"),
    Call("GET", "/log/v1/entries/{index}", lambda w: "/log/v1/entries/0"),
    Call("GET", "/log/v1/proof/inclusion", lambda w: "/log/v1/proof/inclusion?index=0"),
    Call("GET", "/log/v1/proof/consistency", lambda w: "/log/v1/proof/consistency?size1=1"),
    Call(
        "GET",
        "/.well-known/transparency-configuration",
        lambda w: "/.well-known/transparency-configuration",
    ),
    Call("GET", "/.well-known/scitt-keys", lambda w: "/.well-known/scitt-keys"),
    Call(
        "GET",
        "/.well-known/scitt-keys/{kid}",
        lambda w: f"/.well-known/scitt-keys/{key_id(w.service.signer.verifier()).hex()}",
        inside=lambda who: 200,
    ),
    Call("GET", "/entries/{entry_id}", lambda w: f"/entries/{w.entry}"),
    Call(
        "POST",
        "/entries",
        lambda w: "/entries",
        lambda w: w.maker_statement(),
        COSE,
        inside=lambda who: 201 if who == "supplier" else 403,
        write=True,
    ),
    Call(
        "GET",
        "/entries/{entry_id}/statement",
        lambda w: f"/entries/{w.entry}/statement",
        inside=lambda who: 403 if who == "other-supplier" else 200,
    ),
    Call(
        "GET",
        "/entries/{entry_id}/transparent-statement",
        lambda w: f"/entries/{w.entry}/transparent-statement",
        inside=lambda who: 403 if who == "other-supplier" else 200,
    ),
    Call(
        "POST",
        "/entries/{entry_id}/grants",
        lambda w: f"/entries/{w.shared_entry}/grants",
        lambda w: b'{"org": "other"}',
        "application/json",
        inside=lambda who: 403 if who == "other-supplier" else 201,
        write=True,
    ),
    Call(
        "DELETE",
        "/entries/{entry_id}/grants/{org}",
        lambda w: f"/entries/{w.shared_entry}/grants/{_shared_with(w)}",
        inside=lambda who: 403 if who == "other-supplier" else 200,
        write=True,
    ),
    Call(
        "PUT",
        "/admin/organizations/{name}",
        lambda w: "/admin/organizations/maker",
        _next_version,
        "application/json",
        inside=lambda who: 201,
        write=True,
    ),
    Call("GET", "/admin/users", lambda w: "/admin/users", inside=lambda who: 200),
    Call(
        "PUT",
        "/admin/users/{name}",
        lambda w: "/admin/users/newcomer",
        lambda w: b'{"persona": "auditor"}',
        "application/json",
        inside=lambda who: None,
        write=True,
    ),
    Call(
        "POST",
        "/admin/users/{name}/tokens",
        lambda w: "/admin/users/alice/tokens",
        lambda w: b"{}",
        "application/json",
        inside=lambda who: 201,
        write=True,
    ),
    Call(
        "DELETE",
        "/admin/users/{name}/tokens/{token_id}",
        lambda w: f"/admin/users/tmp/tokens/{_token_id(w)}",
        inside=lambda who: 200,
        write=True,
    ),
    Call(
        "POST",
        "/provenance/v1/challenges",
        lambda w: "/provenance/v1/challenges",
        lambda w: b'{"server_serial": "srv-none", "count": 1}',
        "application/json",
        inside=lambda who: 404,
    ),
    Call("GET", "/provenance/v1/devices", lambda w: "/provenance/v1/devices?serial=x"),
    Call("GET", "/provenance/v1/devices/{device_id}", lambda w: "/provenance/v1/devices/x"),
    Call(
        "GET",
        "/provenance/v1/devices/{device_id}/timeline",
        lambda w: "/provenance/v1/devices/x/timeline",
    ),
    Call("GET", "/provenance/v1/nodes/{serial}", lambda w: "/provenance/v1/nodes/x"),
    Call("GET", "/provenance/v1/nodes/{serial}/tree", lambda w: "/provenance/v1/nodes/x/tree"),
    Call(
        "GET",
        "/provenance/v1/nodes/{serial}/timeline",
        lambda w: "/provenance/v1/nodes/x/timeline",
    ),
    Call("GET", "/provenance/v1/shipments/{shipment_id}", lambda w: "/provenance/v1/shipments/x"),
    Call("GET", "/provenance/v1/compliance", lambda w: "/provenance/v1/compliance"),
    Call("GET", "/provenance/v1/policy", lambda w: "/provenance/v1/policy"),
    Call("GET", "/provenance/v1/passports/{serial}", lambda w: "/provenance/v1/passports/x"),
    Call(
        "GET",
        "/provenance/v1/device-passports/{device_id}",
        lambda w: "/provenance/v1/device-passports/x",
    ),
    Call(
        "GET",
        "/provenance/v1/device-passports",
        lambda w: "/provenance/v1/device-passports?serial=x",
    ),
]


def test_every_route_is_in_the_table_and_the_matrix(world: World) -> None:
    """Fail closed, and tested: no route the table forgets, none the matrix skips."""
    app_routes = {
        (method, r.path)
        for r in world.client.app.routes  # type: ignore[attr-defined]
        if isinstance(r, APIRoute)
        for method in r.methods or ()
    }
    assert app_routes <= set(ROUTES), app_routes - set(ROUTES)
    assert {(c.method, c.route) for c in CALLS} == app_routes


def _request(w: World, call: Call, who: str) -> tuple[httpx2.Response, tuple[int, int]]:
    """The call's answer, and the store as it was just before it (after any set-up)."""
    headers = w.headers(who)
    if call.content_type is not None:
        headers["Content-Type"] = call.content_type
    path, body = call.path(w), call.body(w)
    before = w.snapshot()
    return w.client.request(call.method, path, content=body, headers=headers), before


@pytest.mark.parametrize("who", PRINCIPALS)
@pytest.mark.parametrize("call", CALLS, ids=[f"{c.method} {c.route}" for c in CALLS])
def test_the_matrix(world: World, call: Call, who: str) -> None:
    r, before = _request(world, call, who)
    persona = PERSONA.get(who)
    if who in BAD_TOKENS:
        expected: int | None = 401
    elif persona not in ROUTES[(call.method, call.route)]:
        expected = 401 if persona == "public" else 403
    else:
        expected = call.inside(who)
    if expected is None:
        assert r.status_code not in (401, 403), (r.status_code, r.text)
    else:
        assert r.status_code == expected, (r.status_code, r.text)
    if r.status_code in (401, 403) and call.method != "HEAD":  # a HEAD answer has no body
        problem = r.json()
        assert problem["status"] == r.status_code
        assert problem["code"]
        if call.write:
            assert world.snapshot() == before, "a refused write changed the store"
    if r.status_code == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    for token in world.tokens.values():
        assert token not in r.text, "a token echoed back"


def test_no_token_key_or_statement_content_reaches_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Everything the matrix does once more, with every logger at DEBUG: the logs name
    codes and counts, never a token, a key or what a statement says."""
    caplog.set_level(logging.DEBUG)
    with built_world() as w:
        for call in CALLS:
            for who in PRINCIPALS:
                _request(w, call, who)
        record = w.store.get_statement(bytes.fromhex(w.entry))
        assert record is not None
        secrets = [ADMIN_TOKEN, *w.tokens.values(), '"n": 0', "PRIVATE KEY"]
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert caplog.records, "nothing was logged at all: the check would prove nothing"
    for secret in secrets:
        assert secret not in text, f"{secret[:12]}... in the logs"


def test_a_statement_shared_with_another_organization_is_readable_there() -> None:
    with built_world() as w:
        sam = w.headers("other-supplier")
        path = f"/entries/{w.shared_entry}/statement"
        assert w.client.get(path, headers=sam).status_code == 403
        # Only the statement's organization (or an administrator) shares it.
        grant = f"/entries/{w.shared_entry}/grants"
        r = w.client.post(grant, content=b'{"org": "other"}', headers=sam)
        assert r.status_code == 403
        assert r.json()["code"] == "grant-forbidden"
        before = len(w.store.statements_of_type(GRANT_RECORD_TYPE))
        r = w.client.post(grant, content=b'{"org": "other"}', headers=w.headers("supplier"))
        assert r.status_code == 201, r.text
        assert w.client.get(path, headers=sam).status_code == 200
        # The grant is in the log, signed by the service, naming who shared with whom.
        records = w.store.statements_of_type(GRANT_RECORD_TYPE)
        assert len(records) == before + 1
        recorded = parse_grant_record(parse_statement(records[-1].body).payload)
        assert (recorded.entry.hex(), recorded.to, recorded.by) == (
            w.shared_entry,
            "other",
            "alice",
        )
        # The other statement stays the maker's own.
        assert w.client.get(f"/entries/{w.entry}/statement", headers=sam).status_code == 403
        # Taken back: recorded too, and the other organization reads it no more.
        r = w.client.delete(f"{grant}/other", headers=w.headers("supplier"))
        assert r.status_code == 200, r.text
        assert w.client.get(path, headers=sam).status_code == 403
        records = w.store.statements_of_type(GRANT_RECORD_TYPE)
        assert parse_grant_record(parse_statement(records[-1].body).payload).revoked
        r = w.client.delete(f"{grant}/other", headers=w.headers("supplier"))
        assert r.status_code == 404


def test_disabling_a_user_changes_only_that_and_shuts_every_token_out() -> None:
    with built_world() as w:
        alice = w.headers("supplier")
        path = f"/entries/{w.entry}/statement"
        assert w.client.get(path, headers=alice).status_code == 200
        r = w.client.put("/admin/users/alice", content=b'{"disabled": true}', headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (r.json()["persona"], r.json()["org"], r.json()["disabled"]) == (
            "supplier",
            "maker",
            True,
        )
        r = w.client.get(path, headers=alice)
        assert r.status_code == 401
        assert r.json()["code"] == "user-disabled"
        r = w.client.put("/admin/users/alice", content=b'{"disabled": false}', headers=ADMIN)
        assert r.status_code == 200, r.text
        assert w.client.get(path, headers=alice).status_code == 200
        # A new persona without an organization drops it; one that needs it is refused
        # by the record's own rules.
        r = w.client.put("/admin/users/alice", content=b'{"persona": "auditor"}', headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["org"] is None
        r = w.client.put("/admin/users/alice", content=b'{"persona": "carrier"}', headers=ADMIN)
        assert r.status_code == 400
        assert r.json()["code"] == "user-record-invalid"


def test_a_carrier_sees_only_the_shipments_of_its_organization() -> None:
    """A shipment's view names its parties, contents and seals: a carrier sees it when its
    organization carries, sends or receives it; a carrier of any other organization is
    answered as for an unknown shipment (404 ``shipment-unknown``); operators, auditors and
    administrators see every shipment, as the route table says."""
    store = MemoryStore()
    app = service_application(store, auth_required=True)
    journey = Journey.new(devices=2)
    with TestClient(app) as client:
        run_with_writers(client, journey, ADMIN)
        rival = json.loads(journey.orgs[CARRIER].record())
        rival.update(org="rival", issuers=["https://rival.example/signing"])
        _created(client.put("/admin/organizations/rival", content=json.dumps(rival), headers=ADMIN))
        readers = {
            "the carrier": (_user(client, "c-own", "carrier", CARRIER), 200),
            "a carrier of the sender": (_user(client, "c-from", "carrier", ASSEMBLER), 200),
            "a carrier of the receiver": (_user(client, "c-to", "carrier", OPERATOR), 200),
            "a rival carrier": (_user(client, "c-rival", "carrier", "rival"), 404),
            "an operator of another organization": (
                _user(client, "o-rival", "operator", "rival"),
                200,
            ),
            "an auditor": (_user(client, "aud", "auditor", None), 200),
        }
        path = f"/provenance/v1/shipments/{SHIPMENT}"
        for who, (token, status) in readers.items():
            r = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, (who, r.status_code, r.text)
            if status == 404:
                assert r.json()["code"] == "shipment-unknown"
                assert "seal-1" not in r.text and SERVER not in r.text
            else:
                assert r.json()["carrier"] == CARRIER
        assert client.get(path, headers=ADMIN).status_code == 200
        # As of an earlier size too: the view's own parties decide.
        token = readers["a rival carrier"][0]
        size = client.get("/log/v1/info").json()["size"]
        r = client.get(f"{path}?size={size}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404, r.text
    store.close()


def _created(r: httpx2.Response) -> None:
    assert r.status_code == 201, r.text
