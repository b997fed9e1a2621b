"""An insider with administrator rights tries to change history through the API.

Deleting an entry, writing one at an index that is taken, replaying an old organization
record, and narrowing a policy "retroactively" are each either impossible (no route does
it, or the request is refused and nothing is stored) or recorded as a new entry that leaves
every earlier entry, its index and its receipt as they were.
"""

from __future__ import annotations

import json
from typing import Any

from sealtrail.log import ConsistencyProof, SignedCheckpoint, verify_checkpoint
from sealtrail.note import NoteVerifier
from sealtrail.scitt import ORG_RECORD_TYPE, USER_RECORD_TYPE, parse_statement
from tests.integration.conftest import COSE
from tests.integration.test_auth_matrix import ADMIN, OTHER_ISSUER, World, built_world


def _entries(w: World) -> list[bytes]:
    size = w.client.get("/log/v1/info").json()["size"]
    return [w.client.get(f"/log/v1/entries/{i}").content for i in range(size)]


def _maker_record(w: World) -> dict[str, Any]:
    records = w.store.statements_of_type(ORG_RECORD_TYPE)
    payloads = [json.loads(parse_statement(r.body).payload) for r in records]
    doc: dict[str, Any] = next(d for d in reversed(payloads) if d["org"] == "maker")
    return doc


def test_an_administrator_cannot_rewrite_history_through_the_api() -> None:
    with built_world() as w:
        history = _entries(w)
        index = history.index(bytes.fromhex(w.entry))
        info = w.client.get("/log/v1/info").json()
        verifier = NoteVerifier.parse(info["verifier_key"])

        def checkpoint() -> SignedCheckpoint:
            note = w.client.get("/checkpoint").content
            return verify_checkpoint(note, origin=info["origin"], verifiers=[verifier])

        before = checkpoint()

        # Delete or overwrite an entry: no route does.
        for method in ("DELETE", "PUT", "PATCH"):
            r = w.client.request(method, f"/entries/{w.entry}", headers=ADMIN)
            assert r.status_code == 405, (method, r.status_code)
            r = w.client.request(method, f"/log/v1/entries/{index}", headers=ADMIN)
            assert r.status_code == 405, (method, r.status_code)
        assert _entries(w) == history

        # Append it again, hoping for a second index: it keeps its first.
        statement = w.client.get(f"/entries/{w.entry}/statement", headers=ADMIN).content
        r = w.client.post(
            "/entries",
            content=statement,
            headers={"Content-Type": COSE, "Authorization": f"Bearer {w.tokens['supplier']}"},
        )
        assert r.status_code == 201, r.text
        assert _entries(w) == history, "registering it again appended nothing"

        # Replay the organization's current record (or an older one): refused, not stored.
        current = _maker_record(w)
        for version in (current["version"], 1):
            replay = dict(current, version=version)
            r = w.client.put(
                "/admin/organizations/maker", content=json.dumps(replay), headers=ADMIN
            )
            assert r.status_code == 400, r.text
            assert r.json()["code"] == "org-version"
        assert _entries(w) == history

        # Narrow the policy: a new entry after the others; the old ones, their indexes and
        # their receipts are untouched.
        narrowed = dict(current, version=current["version"] + 1)
        narrowed["policy"] = dict(narrowed["policy"], content_types=["text/plain"])
        r = w.client.put("/admin/organizations/maker", content=json.dumps(narrowed), headers=ADMIN)
        assert r.status_code == 201, r.text
        after = _entries(w)
        assert after[: len(history)] == history
        assert len(after) == len(history) + 1
        assert w.client.get(f"/entries/{w.entry}").status_code == 200

        # The log only grew: the checkpoint from before is consistent with the one now.
        now = checkpoint()
        proof = w.client.get(f"/log/v1/proof/consistency?size1={before.size}&size2={now.size}")
        ConsistencyProof.from_dict(proof.json()).verify(before.root, now.root)

        # Every administrative act is itself an entry, signed by the service.
        users_before = len(w.store.statements_of_type(USER_RECORD_TYPE))
        r = w.client.put(
            "/admin/users/alice",
            content=json.dumps({"persona": "supplier", "org": "maker", "disabled": True}),
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        assert len(w.store.statements_of_type(USER_RECORD_TYPE)) == users_before + 1
        assert _entries(w)[: len(history)] == history


def test_a_column_edited_in_the_database_decides_nothing_on_a_live_server() -> None:
    """Who may read or share a statement follows its issuer's organization. An edit of the
    stored issuer column (an insider with the database, not the keys) must not hand another
    organization the statement, nor let it share it on: the server refuses to serve a
    record whose columns are not its body's, and grants nothing."""
    with built_world() as w:
        other = w.headers("other-supplier")
        url = f"/entries/{w.shared_entry}/statement"
        assert w.client.get(url, headers=other).status_code == 403
        w.store.tamper_statement(bytes.fromhex(w.shared_entry), issuer=OTHER_ISSUER)
        before = w.snapshot()
        r = w.client.get(url, headers=other)
        assert r.status_code == 500 and r.json()["code"] == "corruption", r.text
        assert "edited behind the log" in r.json()["detail"]
        r = w.client.post(
            f"/entries/{w.shared_entry}/grants",
            content=json.dumps({"org": "maker"}),
            headers={**other, "Content-Type": "application/json"},
        )
        assert r.status_code == 500 and r.json()["code"] == "corruption", r.text
        assert w.snapshot() == before  # nothing granted, nothing stored
        body = w.client.get(url, headers=ADMIN)
        assert body.status_code == 500  # not even to an administrator: the store is wrong
