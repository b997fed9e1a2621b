"""A serial, shipment id or maker percent-encoded with bytes that are not UTF-8 is refused
with the name's own ``*-invalid`` code, as any other malformed name is: the ASGI server
decodes such bytes to U+FFFD, which must not be looked up (and answered "unknown") as if
the client had sent that name. A name that spells U+FFFD in UTF-8 is still a name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sealtrail.storage import SQLiteStore, open_index

from .conftest import assert_problem, service_application

P = "/provenance/v1"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("undecodable")
    store = SQLiteStore(tmp / "log.db")
    index = open_index(f"sqlite:///{tmp / 'provenance.db'}")
    app = service_application(store, index=index)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client
    store.close()


@pytest.mark.parametrize(
    ("path", "code", "spelled", "unknown"),
    [
        # U+FFFD spelled in UTF-8 is a name like any other: looked up, and unknown.
        ("/nodes/%ff%fe", "serial-invalid", "/nodes/%EF%BF%BD%EF%BF%BD", "node-unknown"),
        ("/nodes/%ff/tree", "serial-invalid", "/nodes/%EF%BF%BD/tree", "node-unknown"),
        ("/nodes/%ff/timeline", "serial-invalid", "/nodes/%EF%BF%BD/timeline", "node-unknown"),
        # a UTF-8 sequence cut short; an overlong "/"
        ("/nodes/RoT-%C3", "serial-invalid", "/nodes/RoT-%C3%A9", "node-unknown"),
        ("/nodes/%C0%AF", "serial-invalid", "/nodes/%EF%BF%BD%EF%BF%BD", "node-unknown"),
        ("/shipments/%ff", "shipment-id-invalid", "/shipments/%EF%BF%BD", "shipment-unknown"),
        (
            "/devices?maker=maker&serial=%ff",
            "serial-invalid",
            "/devices?maker=maker&serial=%EF%BF%BD",
            "device-unknown",
        ),
        (
            "/devices?maker=%fe&serial=RoT-0000",
            "maker-invalid",
            "/devices?maker=%EF%BF%BD&serial=RoT-0000&other=%ff",
            "device-unknown",
        ),
    ],
)
def test_undecodable_bytes_are_an_invalid_name(
    client: TestClient, path: str, code: str, spelled: str, unknown: str
) -> None:
    body = assert_problem(client.get(P + path), 400, code)
    assert "UTF-8" in body["detail"]
    assert "\ufffd" not in body["detail"]
    assert_problem(client.get(P + spelled), 404, unknown)
