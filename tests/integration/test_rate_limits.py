"""Per-client request budgets over HTTP: 429 problem details with Retry-After, nothing
changed by a refused write, and separate budgets per client and per known token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sealtrail.log import CheckpointSigner, Sequencer
from sealtrail.service import create_app
from sealtrail.service.app import RateLimits
from sealtrail.storage import MemoryStore
from tests.conftest import reader_for
from tests.integration.conftest import (
    ADMIN_TOKEN,
    AnyResponse,
    Maker,
    assert_problem,
    service_application,
    snapshot,
    statement,
)

#: One request, then one more every 100 s: a second request in a test is always refused.
SLOW = 0.01
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
COSE = {"Content-Type": "application/cose"}


def assert_rate_limited(response: AnyResponse) -> None:
    body = assert_problem(response, 429, "rate-limited")
    assert "per second" in body["detail"]
    assert response.headers["retry-after"] == "100"


@pytest.fixture
def read_app(signer: CheckpointSigner) -> Iterator[FastAPI]:
    store = MemoryStore()

    async def fill() -> None:
        async with Sequencer(store, signer=signer) as seq:
            await seq.add_many([b"one", b"two"])

    asyncio.run(fill())
    yield create_app(
        reader_for(store, signer),
        verifier_key=signer.verifier_key(),
        limits=RateLimits(reads=SLOW, writes=SLOW, burst=1),
    )
    store.close()


def test_each_address_has_its_own_read_budget(read_app: FastAPI) -> None:
    first = TestClient(read_app, client=("192.0.2.1", 4000))
    second = TestClient(read_app, client=("192.0.2.2", 4000))
    assert first.get("/checkpoint").status_code == 200
    assert_rate_limited(first.get("/checkpoint"))
    assert_rate_limited(first.get("/log/v1/info"))  # any read route, one budget
    # Another port of the same address is the same client; another address is not.
    same = TestClient(read_app, client=("192.0.2.1", 4001))
    assert_rate_limited(same.get("/checkpoint"))
    assert second.get("/checkpoint").status_code == 200


def test_without_limits_nothing_is_refused(signer: CheckpointSigner) -> None:
    store = MemoryStore()
    asyncio.run(_append(store, signer))
    client = TestClient(create_app(reader_for(store, signer), verifier_key=signer.verifier_key()))
    assert all(client.get("/checkpoint").status_code == 200 for _ in range(50))


async def _append(store: MemoryStore, signer: CheckpointSigner) -> None:
    async with Sequencer(store, signer=signer) as seq:
        await seq.add_many([b"entry"])


def test_a_refused_write_changes_nothing(maker: Maker) -> None:
    store = MemoryStore()
    app = service_application(store, limits=RateLimits(reads=1000, writes=SLOW, burst=1))
    with TestClient(app, follow_redirects=False) as client:
        # The administrator's token is a client of its own: onboarding spends its budget.
        put = client.put("/admin/organizations/maker", content=maker.record(), headers=ADMIN)
        assert put.status_code == 201, put.text
        assert client.post("/entries", content=statement(maker.issuer), headers=COSE).is_success
        size = client.get("/log/v1/info").json()["size"]
        before = snapshot(store)

        other = statement(maker.issuer, subject="urn:maker:device:2")
        assert_rate_limited(client.post("/entries", content=other, headers=COSE))
        # A made-up token is no new client: it is charged to the address.
        fake = {**COSE, "Authorization": "Bearer made-up-token"}
        assert_rate_limited(client.post("/entries", content=other, headers=fake))
        assert_rate_limited(
            client.put("/admin/organizations/maker", content=maker.record(version=2), headers=ADMIN)
        )
        assert snapshot(store) == before
        assert client.get("/log/v1/info").json()["size"] == size
        # Reads have their own budget, untouched by the writes.
        assert client.get("/checkpoint").status_code == 200
    store.close()


@pytest.mark.parametrize(
    "around", [b"\xa0", b"\x85", b"\xe2\x80\x83"], ids=["nbsp", "nel", "em space"]
)
def test_a_token_is_read_the_same_way_by_the_access_check_and_the_limiter(
    maker: Maker, around: bytes
) -> None:
    """Only spaces and tabs surround a token. With another character beside it the token is
    no token of ours: refused (401 ``token-unknown``) and charged to the address, not
    accepted by the access check while the limiter charged the address for it."""
    app = service_application(MemoryStore(), limits=RateLimits(reads=SLOW, writes=SLOW, burst=1))
    with TestClient(app) as client:
        padded = {b"Authorization": b"Bearer " + ADMIN_TOKEN.encode() + around}
        assert_problem(client.get("/admin/users", headers=padded), 401, "token-unknown")
        # The address's one read is spent; the administrator's own budget is untouched.
        assert_rate_limited(client.get("/checkpoint"))
        spaced = {"Authorization": f"Bearer \t{ADMIN_TOKEN} \t"}
        assert client.get("/admin/users", headers=spaced).status_code == 200
        assert_rate_limited(client.get("/admin/users", headers=ADMIN))
