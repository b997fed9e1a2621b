"""What the service answers for a statement row no server stored: an insider with write
access to the database (not to the servers' keys) plants rows, or re-tags or deletes a
registered row before it is sequenced. The sequencer never appends such a row, so the
service answers for it as for an entry never stored (404 ``entry-unknown``) on the receipt
route and both statement routes, rather than "pending" for ever or the planted bytes; a
client that registers its statement again gets a receipt. A row the log holds is answered
as before, whatever its tag (a row stored before the tags).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from sealtrail.client import Client
from sealtrail.errors import NotFound
from sealtrail.scitt import StatementRows, decode_key_set, verify_receipt
from sealtrail.service import ServiceStore
from sealtrail.storage import MemoryStore, PostgresStore, SQLiteStore, StatementRecord
from tests._serve_proc import statement_for
from tests._server import serve_in_thread
from tests.conformance.test_statement_rows import ROWS, _plant, _record, _reencoded
from tests.integration.conftest import (
    ADMIN_TOKEN,
    ORG,
    Maker,
    assert_problem,
    make_maker,
    service_application,
)

#: The challenge key the servers hold: the one ``ROWS`` tags under.
SECRET = b"\x5a" * 32
ROUTES = ("", "/statement", "/transparent-statement")


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> ServiceStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "log.db")
    return PostgresStore(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceStore]:
    opened = _open(request.param, request, tmp_path)
    yield opened
    opened.close()


@dataclass
class Live:
    url: str
    store: ServiceStore
    maker: Maker

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    @property
    def shared(self) -> bool:
        """Several processes may share the store: its feeder appends what any stored."""
        return isinstance(self.store, PostgresStore)

    def register(self, body: bytes) -> str:
        """``body`` registered by the client, its receipt verified: its entry id."""
        with Client(self.url, timeout=30) as client:
            registered = client.register(body)
            keys = decode_key_set(client.service_keys())
        verify_receipt(registered.receipt, leaf_entry=hashlib.sha256(body).digest(), keys=keys)
        return registered.entry_id


@contextmanager
def _live(store: ServiceStore) -> Iterator[Live]:
    """A service over ``store`` on a loopback socket, its rows tagged under ``SECRET``."""
    assert StatementRows(SECRET).check == ROWS.check
    maker = make_maker()
    with serve_in_thread(service_application(store, challenge_key=SECRET)) as url:
        r = httpx.put(
            f"{url}/admin/organizations/{ORG}",
            content=maker.record(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 201, r.text
        yield Live(url, store, maker)


def _retag(store: ServiceStore, entry_id: bytes) -> None:
    """A stored row's tag overwritten behind the service."""
    garbage = b"\x07" * 32
    if isinstance(store, MemoryStore):
        store.tamper_statement(entry_id, tag=garbage)
    elif isinstance(store, SQLiteStore):
        store.execute("UPDATE statements SET tag = ? WHERE entry_id = ?", (garbage, entry_id))
    else:
        assert isinstance(store, PostgresStore)
        store.execute("UPDATE statements SET tag = %s WHERE entry_id = %s", (garbage, entry_id))


def _delete(store: ServiceStore, entry_id: bytes) -> None:
    if isinstance(store, SQLiteStore):
        store.execute("DELETE FROM statements WHERE entry_id = ?", (entry_id,))
    else:
        assert isinstance(store, PostgresStore)
        store.execute("DELETE FROM statements WHERE entry_id = %s", (entry_id,))


def _assert_unknown(live: Live, entry: str) -> None:
    for route in ROUTES:
        assert_problem(live.get(f"/entries/{entry}{route}"), 404, "entry-unknown")


def test_a_row_no_server_stored_is_unknown_on_every_entry_route(
    store: ServiceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _live(store) as live:
        issuer = live.maker.issuer
        registered = live.register(statement_for(issuer, 1))
        original = store.get_statement(bytes.fromhex(registered))
        assert original is not None
        # A registered statement's signature re-encoded (it verifies, and is another entry),
        # with the original's columns and tag; a statement never sent, untagged; another
        # under a made-up tag. Each is a signed statement the policy would accept.
        copy = _reencoded(original.body)
        sent = [statement_for(issuer, n) for n in (2, 3, 4)]
        planted = [
            replace(original, entry_id=hashlib.sha256(copy).digest(), body=copy),
            _record(sent[0], tag=False),
            replace(_record(sent[1]), tag=b"\x07" * 32),
        ]
        swapped = None
        if not live.shared:
            # Tagged by a server, then its body swapped before it was sequenced: appended
            # under its entry id all the same (the statement's hash), so its receipt is
            # pending until then; its body is served by no route.
            swapped = replace(_record(sent[2]), body=b"not the statement")
            planted.append(swapped)
        for record in planted:
            _plant(store, record)
        for record in planted:
            if record is swapped:
                entry = record.entry_id.hex()
                assert live.get(f"/entries/{entry}").status_code == 302
                for route in ROUTES[1:]:
                    assert_problem(live.get(f"/entries/{entry}{route}"), 404, "entry-unknown")
            else:
                _assert_unknown(live, record.entry_id.hex())
        # Registered again, the statement gets its receipt: the server's row takes the
        # planted one's place.
        for record, body in zip(planted[1:], sent, strict=False):
            entry = record.entry_id.hex()
            assert live.register(body) == entry
            assert live.get(f"/entries/{entry}").status_code == 200
            assert live.get(f"/entries/{entry}/statement").content == body
        # A row the log holds is answered whatever its tag (stored before the tags, say),
        # and no body is hashed for a tag's sake (the statement routes check the body all
        # the same: they serve it).
        _retag(store, original.entry_id)
        held: list[bytes] = []
        holds = StatementRows.holds

        def counted(self: StatementRows, record: StatementRecord) -> bool:
            held.append(record.entry_id)
            return holds(self, record)

        monkeypatch.setattr(StatementRows, "holds", counted)
        for route in ROUTES:
            r = live.get(f"/entries/{registered}{route}")
            assert r.status_code == 200, (route, r.text)
        assert held == []
        assert live.get(f"/entries/{planted[0].entry_id.hex()}").status_code == 404
        assert held == []  # the receipt route reads a row's tag, never its body
        assert live.get(f"/entries/{registered}/statement").content == original.body


def _pending_row(live: Live, n: int) -> StatementRecord:
    """A row as a server stores it, not yet in the log (stored behind a running service
    that owns its sequencer: nothing appends it before a restart)."""
    record = _record(statement_for(live.maker.issuer, n))
    live.store.put_statements([record])
    entry = record.entry_id.hex()
    r = live.get(f"/entries/{entry}")
    assert r.status_code == 302, r.text
    assert r.headers["location"] == f"/entries/{entry}"
    assert live.get(f"/entries/{entry}/statement").content == record.body
    assert_problem(live.get(f"/entries/{entry}/transparent-statement"), 404, "entry-pending")
    return record


#: Where a row stays pending (a store of one process: nothing appends a row stored behind
#: it before a restart; PostgreSQL's feeder would append it at once, and the first test
#: covers a row planted there with a tag that does not verify), and what can be done to it
#: (the memory store deletes no row behind the service).
@pytest.mark.parametrize(
    ("kind", "tamper"), [("memory", "retag"), ("sqlite", "retag"), ("sqlite", "delete")]
)
def test_a_pending_row_retagged_or_deleted_is_unknown_and_registers_again(
    kind: str, tamper: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = _open(kind, request, tmp_path)
    with contextlib.closing(store), _live(store) as live:
        record = _pending_row(live, 7)
        entry = record.entry_id.hex()
        (_retag if tamper == "retag" else _delete)(store, record.entry_id)
        _assert_unknown(live, entry)
        with Client(live.url, timeout=30) as client, pytest.raises(NotFound) as caught:
            client.receipt(entry)
        assert caught.value.code == "entry-unknown"
        assert live.register(record.body) == entry
        assert live.get(f"/entries/{entry}").status_code == 200
        assert live.get(f"/entries/{entry}/statement").content == record.body
