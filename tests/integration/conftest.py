"""The transparency service over HTTP, for the SCRAPI tests: a writing app over a store,
an onboarded organization, signed statements, and a look at everything the store holds."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sealtrail.keys import ES256, Ed25519Signer, Signer, Verifier, generate_signer
from sealtrail.log import CheckpointSigner, SequencerConfig
from sealtrail.scitt import fingerprint, key_id, sign_statement
from sealtrail.service import ServiceStore, service_app
from sealtrail.storage import MemoryStore, SQLiteStore
from tests.unit.scitt._pki import Issuer, make_issuer, make_leaf
from tests.unit.scitt.conftest import ISSUER, SERVICE, org_record

ADMIN_TOKEN = "integration-admin-token"
ORIGIN = "ts.sealtrail.localhost/http"
COSE = "application/cose"
JSON = "application/json"
PROBLEM = "application/problem+json"
ORG = "maker"

#: What the TestClient (httpx2) and a real-socket client (httpx) answer with.
AnyResponse = httpx.Response | httpx2.Response


@dataclass
class Maker:
    """The organization's signing material: a good leaf, a revoked leaf under the same CA,
    and a registered key that is retired."""

    issuer: Issuer
    revoked: Issuer
    retired_key: Signer

    def record(self, *, version: int = 1, **changes: Any) -> bytes:
        """Its organization record: the anchor, the retired key, the revoked certificate."""
        doc = json.loads(org_record(self.issuer, version=version))
        doc["keys"] = [
            {
                "alg": ES256,
                "public_key": base64.b64encode(self.retired_key.public_key_bytes()).decode(),
            }
        ]
        doc["retired_keys"] = [key_id(self.retired_key.verifier()).hex()]
        doc["revoked_certificates"] = [fingerprint(self.revoked.leaf)]
        doc.update(changes)
        return json.dumps(doc).encode()


def make_maker() -> Maker:
    issuer = make_issuer(ES256, cn="Maker")
    key, leaf = make_leaf(issuer.ca_key, issuer.ca, cn="Maker revoked signer")
    return Maker(issuer, Issuer(issuer.ca_key, issuer.ca, key, leaf), generate_signer(ES256))


def statement(signer: Issuer, **changes: object) -> bytes:
    """A signed statement the maker's policy accepts, with ``changes`` to its arguments."""
    args: dict[str, Any] = {
        "issuer": ISSUER,
        "subject": "urn:maker:device:1",
        "content_type": JSON,
        "payload": b'{"serial": "A1"}',
        "x5chain": signer.chain,
    }
    args.update(changes)
    return sign_statement(signer.leaf_key, **args)


def service_application(
    store: ServiceStore,
    *,
    checkpoint_signer: CheckpointSigner | None = None,
    service_signer: Signer | None = None,
    retired: Sequence[Verifier] = (),
    max_delay: float = 0.001,
    **options: Any,
) -> FastAPI:
    """``service_app`` over ``store`` as the integration tests run it: the test issuer and
    administrator token, fresh keys unless given, a 1 ms batch delay; ``options`` go to
    ``service_app`` as they are (``auth_required``, ``index``, ``limits`` …)."""
    return service_app(
        store,
        checkpoint_signer=checkpoint_signer
        or CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()),
        service_signer=service_signer or generate_signer(ES256),
        issuer=SERVICE,
        retired=retired,
        admin_token_hash=hashlib.sha256(ADMIN_TOKEN.encode()).digest(),
        sequencer_config=SequencerConfig(max_delay=max_delay),
        **options,
    )


@dataclass
class Service:
    """A running service and what it was built with."""

    client: TestClient
    store: ServiceStore
    maker: Maker
    service_signer: Signer
    checkpoint_signer: CheckpointSigner

    def post(self, data: bytes, *, content_type: str | None = COSE) -> httpx2.Response:
        headers = {} if content_type is None else {"Content-Type": content_type}
        return self.client.post("/entries", content=data, headers=headers)

    def put_org(
        self, record: bytes, *, name: str = ORG, authorization: str | None = None
    ) -> httpx2.Response:
        auth = f"Bearer {ADMIN_TOKEN}" if authorization is None else authorization
        headers = {"Authorization": auth} if auth else {}
        return self.client.put(f"/admin/organizations/{name}", content=record, headers=headers)

    def log_size(self) -> int:
        response = self.client.get("/log/v1/info")
        assert response.status_code == 200, response.text
        size = response.json()["size"]
        assert isinstance(size, int)
        return size

    def key_set(self) -> bytes:
        response = self.client.get("/.well-known/scitt-keys")
        assert response.status_code == 200, response.text
        return response.content


@contextmanager
def running(
    store: ServiceStore,
    maker: Maker,
    *,
    checkpoint_signer: CheckpointSigner | None = None,
    service_signer: Signer | None = None,
    retired: Sequence[Verifier] = (),
    max_delay: float = 0.001,
    onboard: bool = True,
    raise_server_exceptions: bool = True,
) -> Iterator[Service]:
    """The service over ``store`` (lifespan running), with the maker onboarded.

    With ``raise_server_exceptions=False`` a bug is seen as the client would see it (a 500
    answer) instead of as the exception.
    """
    checkpoint_signer = checkpoint_signer or CheckpointSigner(
        origin=ORIGIN, signer=Ed25519Signer.generate()
    )
    service_signer = service_signer or generate_signer(ES256)
    app = service_application(
        store,
        checkpoint_signer=checkpoint_signer,
        service_signer=service_signer,
        retired=retired,
        max_delay=max_delay,
    )
    with TestClient(
        app, follow_redirects=False, raise_server_exceptions=raise_server_exceptions
    ) as client:
        service = Service(client, store, maker, service_signer, checkpoint_signer)
        if onboard:
            response = service.put_org(maker.record())
            assert response.status_code == 201, response.text
        yield service


def assert_problem(response: AnyResponse, status: int, code: str) -> dict[str, Any]:
    """``response`` is RFC 9457 problem details of ``status`` with the stable ``code``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM
    assert response.headers.get("cache-control") == "no-store"
    body = response.json()
    assert isinstance(body, dict)
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == f"urn:sealtrail:error:{code}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def snapshot(store: ServiceStore) -> dict[str, Any]:
    """Everything the store holds that a refused request could have changed.

    Through the storage protocols for every backend; for SQLite also every row of every
    table, read over a connection of its own.
    """
    checkpoint = store.read_checkpoint()
    state: dict[str, Any] = {
        "checkpoint": None if checkpoint is None else (checkpoint.size, checkpoint.note),
        "statements": store.statements_since(0, limit=1_000_000),
        "sequenced": store.read_sequenced(),
    }
    if isinstance(store, SQLiteStore):
        state["tables"] = sqlite_rows(store.path)
    return state


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
            for name in names
        }
    finally:
        conn.close()


@pytest.fixture
def maker() -> Maker:
    return make_maker()


@pytest.fixture
def service(maker: Maker) -> Iterator[Service]:
    """The service over a fresh MemoryStore, the maker onboarded."""
    store = MemoryStore()
    with running(store, maker) as svc:
        yield svc
    store.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "log.db"
