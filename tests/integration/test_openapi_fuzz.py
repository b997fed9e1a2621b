"""Every operation of the OpenAPI document, fuzzed by schemathesis, for several principals:
no answer is a server error, and every answer is one the document describes.

Two services: one with ``[auth] required`` (the access-control matrix's world: two
organizations, users with tokens), one open the way SCITT allows (the default). Each case
schemathesis generates is sent through the service's own running ``TestClient`` (in-process
ASGI, the service's lifespan and event loop), then validated by schemathesis's checks.

The document is read from the running service (``/openapi.json``) and loaded with
``schemathesis.openapi.from_dict``: schemathesis's ASGI loader would start the app's
lifespan a second time, on an event loop of its own, beside the one already running the
sequencer.

A bug raising in the open service is answered 500 (``not_a_server_error`` fails); in the
matrix's world, whose client raises server exceptions, the exception itself fails the case.
The routes read their bodies themselves; the document declares them (media type and
schema), and the cases send them: JSON objects here, COSE statements as mere bytes (they
are fuzzed as CBOR in test_scrapi_fuzz.py). Paths, queries, bodies and principals.

Bounded: a fixed number of examples per operation, mode and principal, ``derandomize`` and
no example database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner
from sealtrail.storage import MemoryStore
from tests.integration.conftest import (
    ADMIN_TOKEN,
    ORIGIN,
    make_maker,
    running,
    service_application,
    statement,
)
from tests.integration.test_auth_matrix import built_world

pytestmark = pytest.mark.slow

# A statement is bytes to the document (its CBOR is fuzzed in test_scrapi_fuzz.py).
schemathesis.serializer.alias("application/cose", "application/octet-stream")

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _document() -> dict[str, Any]:
    """The OpenAPI document of an app that is built but never started."""
    store = MemoryStore()
    app = service_application(
        store,
        checkpoint_signer=CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()),
        service_signer=generate_signer(ES256),
    )
    store.close()
    return app.openapi()


def _has_integer(parameter: dict[str, Any]) -> bool:
    schema = parameter["schema"]
    return "integer" in {s.get("type") for s in [schema, *schema.get("anyOf", ())]}


DOCUMENT = _document()
#: Every operation, with whether it takes an integer: only those can be sent data that is
#: not what the document says (any text in a path or a query is a valid string).
OPERATIONS = sorted(
    (method.upper(), path, any(_has_integer(p) for p in op.get("parameters", ())))
    for path, ops in DOCUMENT["paths"].items()
    for method, op in ops.items()
)


@dataclass
class Target:
    client: TestClient
    schema: BaseSchema
    tokens: dict[str, str]
    #: A registered statement's entry id, so that some cases reach past "no such entry".
    entry: str

    def headers(self, who: str) -> dict[str, str]:
        if who == "public":
            return {}
        token = ADMIN_TOKEN if who == "bootstrap-admin" else self.tokens[who]
        return {"Authorization": f"Bearer {token}"}


def _schema(client: TestClient) -> BaseSchema:
    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    return schemathesis.openapi.from_dict(r.json())


@pytest.fixture(scope="module")
def closed() -> Iterator[Target]:
    """The service with ``[auth] required``: the access-control matrix's world."""
    with built_world() as w:
        yield Target(w.client, _schema(w.client), w.tokens, w.entry)


@pytest.fixture(scope="module")
def open_service() -> Iterator[Target]:
    """The service open the way SCITT allows (``[auth] required`` left false)."""
    store = MemoryStore()
    with running(store, make_maker(), raise_server_exceptions=False) as svc:
        r = svc.post(statement(svc.maker.issuer))
        assert r.status_code == 201, r.text
        entry = r.headers["location"].rsplit("/", 1)[1]
        yield Target(svc.client, _schema(svc.client), {}, entry)
    store.close()


def fuzz(target: Target, method: str, path: str, who: str, mode: GenerationMode) -> None:
    operation = target.schema[path][method]
    headers = target.headers(who)
    # Known names where the path has them (random strings alone only ever reach a 404).
    # Never a token id: revoking the principals' own tokens would shut them out.
    known = {"entry_id": target.entry, "name": "alice" if "/users/" in path else "maker"}
    known = {k: v for k, v in known.items() if "{" + k + "}" in path}
    strategy = operation.as_strategy(mode)
    if known and mode is GenerationMode.POSITIVE:
        strategy = strategy | operation.as_strategy(mode, path_parameters=known)

    @FUZZ
    @given(case=strategy)
    def run(case: Case[Any]) -> None:
        kwargs: dict[str, Any] = case.as_transport_kwargs(base_url="", headers=headers)
        assert not kwargs.get("cookies"), "the document declares no cookie"
        body: dict[str, Any] = {}
        if "json" in kwargs:
            body["json"] = kwargs["json"]
        elif kwargs.get("data") is not None:
            body["content"] = kwargs["data"]
        response = target.client.request(
            kwargs["method"],
            kwargs["url"],
            params=kwargs["params"],
            headers=kwargs["headers"],
            **body,
        )
        checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS
        case.validate_response(response, checks=checks, headers=kwargs["headers"])

    run()


def test_the_document_names_every_route(closed: Target, open_service: Target) -> None:
    """The parametrization (read at collection) is what the running services serve."""
    for target in (closed, open_service):
        paths: dict[str, dict[str, Any]] = target.schema.raw_schema["paths"]
        served = {(method.upper(), path) for path, ops in paths.items() for method in ops}
        assert served == {(method, path) for method, path, _ in OPERATIONS}


CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, negatable in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if negatable or mode is GenerationMode.POSITIVE
]


@pytest.mark.parametrize("who", ["public", "supplier", "auditor", "bootstrap-admin"])
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_auth_required(
    closed: Target, method: str, path: str, mode: GenerationMode, who: str
) -> None:
    fuzz(closed, method, path, who, mode)


@pytest.mark.parametrize("who", ["public", "bootstrap-admin"])
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_open(open_service: Target, method: str, path: str, mode: GenerationMode, who: str) -> None:
    fuzz(open_service, method, path, who, mode)
