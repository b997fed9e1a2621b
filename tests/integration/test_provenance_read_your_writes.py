"""A client holding a receipt sees its entry in the provenance views at once.

The views answer from the provenance index, which follows the log; a query waits (at most
``INDEX_WAIT``) for the index to reach the log's signed size before it answers. The
indexer here never wakes by itself (its idle poll is an hour), so every view below is up to
date only because the query waited for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sealtrail.provenance import _ledger
from sealtrail.storage import open_index
from sealtrail.storage.memory import MemoryStore

from ._journey import SERVER, Journey, run_over_http
from .conftest import ADMIN_TOKEN, service_application

P = "/provenance/v1"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(_ledger, "INDEX_POLL", 3600.0)
    app = service_application(MemoryStore(), index=open_index("memory:"))
    with TestClient(app, follow_redirects=False) as client:
        yield client


def _journey(client: TestClient) -> int:
    """Onboard the organizations and register the journey; the last receipt's index."""
    journey = Journey.new()
    run_over_http(client, journey, ADMIN_TOKEN)
    return max(journey.indexes.values())


def test_every_view_holds_what_was_just_registered(client: TestClient) -> None:
    last = _journey(client)
    doc = client.get(P + "/compliance").json()
    assert [s["server_serial"] for s in doc["servers"]] == [SERVER]
    assert doc["size"] > last
    timeline = client.get(P + f"/nodes/{SERVER}/timeline").json()
    assert timeline["entries"][-1]["index"] == last


def test_a_view_as_of_a_size_the_log_reached_waits_for_the_index(client: TestClient) -> None:
    last = _journey(client)
    r = client.get(P + f"/nodes/{SERVER}", params={"size": last + 1})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == last + 1


def test_an_index_that_cannot_catch_up_answers_with_the_size_it_reflects(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = client.app.state.ledger  # type: ignore[attr-defined]
    monkeypatch.setattr(ledger, "catch_up", lambda *_, **__: 0)  # a stuck indexer
    monkeypatch.setattr(_ledger, "INDEX_WAIT", 0.1)
    last = _journey(client)
    doc = client.get(P + "/compliance").json()
    assert doc["servers"] == [] and doc["size"] <= last
    r = client.get(P + f"/nodes/{SERVER}", params={"size": last + 1})
    assert r.status_code == 404 and r.json()["code"] == "index-size-unknown"
