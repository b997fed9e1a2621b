"""``POST /entries`` is authorized against the organization the registration checks used.

On a shared store a server learns of an organization another server onboarded only when it
reads the stored records: the checks, which read the records again on ``issuer-unknown``,
learn it in the middle of a registration. The sender's organization and persona are checked
against the organization the checks found, so no statement is stored for an organization
its sender does not belong to, however late the server learned it. The race is played
deterministically: the server learns the organization at its read of the records, the one
the checks make.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from sealtrail.keys import ES256
from sealtrail.scitt import Organization, Registry, TransparencyService, sign_statement
from sealtrail.storage import MemoryStore
from tests.unit.scitt._pki import Issuer, make_issuer
from tests.unit.scitt.conftest import org_record

from .conftest import ADMIN_TOKEN, COSE, assert_problem, make_maker, service_application

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NEWCOMER_ISSUER = "https://newcomer.example/signing"


@dataclass
class Race:
    client: TestClient
    store: MemoryStore
    service: TransparencyService
    newcomer: Issuer
    tokens: dict[str, str]
    #: The reads of the stored records this server made (``refresh_orgs``).
    reads: list[int]

    def post(self, who: str, n: int) -> tuple[int, str]:
        data = sign_statement(
            self.newcomer.leaf_key,
            issuer=NEWCOMER_ISSUER,
            subject=f"urn:maker:item:{n}",
            content_type="application/json",
            payload=b'{"n": %d}' % n,
            x5chain=self.newcomer.chain,
        )
        headers = {"Content-Type": COSE, "Authorization": f"Bearer {self.tokens[who]}"}
        r = self.client.post("/entries", content=data, headers=headers)
        return r.status_code, r.text

    def stored(self) -> int:
        rows = self.store.statements_since(0, limit=1_000_000)
        return sum(record.issuer == NEWCOMER_ISSUER for _, record in rows)


def _user(client: TestClient, name: str, persona: str, org: str) -> str:
    body = json.dumps({"persona": persona, "org": org})
    assert client.put(f"/admin/users/{name}", content=body, headers=ADMIN).status_code == 201
    r = client.post(f"/admin/users/{name}/tokens", content=b"{}", headers=ADMIN)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


@pytest.fixture
def race(monkeypatch: pytest.MonkeyPatch) -> Iterator[Race]:
    """A server that knows organization ``newcomer`` only from its next read of the stored
    records on: onboarded through another server a moment ago."""
    store = MemoryStore()
    app = service_application(store, auth_required=True)
    maker, newcomer = make_maker(), make_issuer(ES256, cn="Newcomer")
    with TestClient(app) as client:
        assert client.put("/admin/organizations/maker", content=maker.record(), headers=ADMIN)
        doc = json.loads(org_record(newcomer))
        doc.update(org="newcomer", issuers=[NEWCOMER_ISSUER])
        r = client.put("/admin/organizations/newcomer", content=json.dumps(doc), headers=ADMIN)
        assert r.status_code == 201, r.text
        tokens = {
            "maker-supplier": _user(client, "alice", "supplier", "maker"),
            "newcomer-supplier": _user(client, "nina", "supplier", "newcomer"),
            "newcomer-carrier": _user(client, "cora", "carrier", "newcomer"),
        }
        service: TransparencyService = app.state.transparency_service
        onboarded = service.registry.get("newcomer")
        known = service.registry.get("maker")
        assert isinstance(onboarded, Organization) and isinstance(known, Organization)
        reads: list[int] = []

        def forget() -> None:
            registry = Registry()
            registry.apply(known)
            service.registry = registry

        async def read_records() -> None:
            reads.append(len(reads) + 1)
            if service.registry.get("newcomer") is None:
                service.registry.apply(onboarded)

        forget()
        monkeypatch.setattr(service, "refresh_orgs", read_records)
        monkeypatch.setattr(service, "shared", True)
        try:
            yield Race(client, store, service, newcomer, tokens, reads)
        finally:
            monkeypatch.undo()
    store.close()


def test_a_statement_for_an_organization_learned_during_the_checks_is_refused(
    race: Race,
) -> None:
    status, text = race.post("maker-supplier", 1)
    assert status == 403, text
    assert json.loads(text)["code"] == "org-forbidden"
    assert race.reads == [1], "the checks did not learn the organization at their read"
    assert race.stored() == 0
    # Known from then on: refused before any check.
    status, text = race.post("maker-supplier", 2)
    assert status == 403 and json.loads(text)["code"] == "org-forbidden"
    assert race.stored() == 0


def test_the_organizations_own_user_registers_in_the_same_race(race: Race) -> None:
    status, text = race.post("newcomer-supplier", 1)
    assert status == 201, text
    assert race.reads == [1]
    assert race.stored() == 1


def test_a_persona_that_does_not_issue_the_kind_is_refused_in_the_same_race(
    race: Race,
) -> None:
    status, text = race.post("newcomer-carrier", 1)
    assert status == 403, text
    assert json.loads(text)["code"] == "persona-forbidden"
    assert race.reads == [1]
    assert race.stored() == 0


def test_an_issuer_still_unknown_after_the_checks_read_is_refused_as_such(
    race: Race, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def read_nothing() -> None:
        race.reads.append(len(race.reads) + 1)

    monkeypatch.setattr(race.service, "refresh_orgs", read_nothing)
    status, text = race.post("maker-supplier", 1)
    assert status == 400, text
    assert json.loads(text)["code"] == "issuer-unknown"
    assert race.stored() == 0


def test_the_answer_is_a_problem(race: Race) -> None:
    data = sign_statement(
        race.newcomer.leaf_key,
        issuer=NEWCOMER_ISSUER,
        subject="urn:maker:item:9",
        content_type="application/json",
        payload=b"{}",
        x5chain=race.newcomer.chain,
    )
    headers = {"Content-Type": COSE, "Authorization": f"Bearer {race.tokens['maker-supplier']}"}
    assert_problem(
        race.client.post("/entries", content=data, headers=headers), 403, "org-forbidden"
    )
