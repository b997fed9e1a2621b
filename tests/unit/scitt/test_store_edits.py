"""An insider with the database but not the keys edits the statement store behind the log:
reordering the service's records (``seq``) or adding a copy of one under a re-encoded
signature. A restarting service folds its records in the log's order, and refuses to start
on a replayed copy; the audit names the copy."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import cbor2
import pytest

from sealtrail.errors import Corruption
from sealtrail.keys import ES256, Ed25519Signer, Signer, generate_signer
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.merkle import leaf_hash
from sealtrail.provenance import audit_log
from sealtrail.scitt import Grant, TransparencyService, User, key_id, new_token
from sealtrail.storage import SQLiteStore

from ._pki import make_issuer
from .conftest import SERVICE, org_record

pytestmark = pytest.mark.anyio

#: The order of the P-256 group: (r, s) and (r, N - s) are both valid ECDSA signatures.
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def _service(
    path: Path, keys: tuple[CheckpointSigner, Signer]
) -> AsyncIterator[TransparencyService]:
    store = SQLiteStore(path)
    sequencer = Sequencer(store, signer=keys[0], config=SequencerConfig(max_delay=0.001))
    service = TransparencyService(store=store, sequencer=sequencer, signer=keys[1], issuer=SERVICE)
    await sequencer.start()
    try:
        await service.start()
        try:
            yield service
        finally:
            await service.close()
    finally:
        await sequencer.close()
        store.close()


def _keys() -> tuple[CheckpointSigner, Signer]:
    checkpoints = CheckpointSigner(origin="edits.test/log", signer=Ed25519Signer.generate())
    return checkpoints, generate_signer(ES256)


def _running_beside(
    service: TransparencyService, keys: tuple[CheckpointSigner, Signer]
) -> TransparencyService:
    """Another process's service on the same store, serving: it folds what comes next."""
    other = TransparencyService(
        store=service.store, sequencer=service.sequencer, signer=keys[1], issuer=SERVICE
    )
    other.fold_records()
    other._started = True
    return other


def _edit(path: Path, statement: str, entry_id: str) -> None:
    """Run one SQL ``statement`` on the store behind the log, for one entry (hex)."""
    with sqlite3.connect(path) as db:
        db.execute(statement, (bytes.fromhex(entry_id),))
    db.close()


def _insert_reencoded_copy(path: Path, entry_id: str) -> bytes:
    """A copy of stored statement ``entry_id`` under its ES256 signature re-encoded as
    ``(r, N - s)`` (no key needed), inserted behind the log; its entry id."""
    with sqlite3.connect(path) as db:
        body, *columns = db.execute(
            "SELECT body, issuer, subject, content_type, registered_at FROM statements"
            " WHERE entry_id = ?",
            (bytes.fromhex(entry_id),),
        ).fetchone()
        parts = list(cbor2.loads(body).value)
        s = int.from_bytes(parts[3][32:], "big")
        parts[3] = parts[3][:32] + (N - s).to_bytes(32, "big")
        copy = cbor2.dumps(cbor2.CBORTag(18, parts))
        entry = hashlib.sha256(copy).digest()
        db.execute(
            "INSERT INTO statements (entry_id, body, issuer, subject, content_type,"
            " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
            (entry, copy, *columns),
        )
    db.close()
    return entry


async def test_a_revocation_moved_before_what_it_revokes_is_folded_in_log_order(
    tmp_path: Path,
) -> None:
    path, keys = tmp_path / "log.db", _keys()
    _, token = new_token(int(time.time()) + 86400)
    async with _service(path, keys) as service:
        await service.put_user(User("mallory", 1, "auditor", None, (token,)))
        revoked = await service.put_user(User("mallory", 2, "auditor", None, ()))
    # The revocation first in the store's order.
    _edit(path, "UPDATE statements SET seq = -seq WHERE entry_id = ?", revoked.entry_id)
    async with _service(path, keys) as service:
        user = service.users.get("mallory")
        assert user is not None and user.version == 2 and not user.tokens


async def test_a_service_record_replayed_under_a_re_encoded_signature_is_refused(
    tmp_path: Path,
) -> None:
    path, keys = tmp_path / "log.db", _keys()
    async with _service(path, keys) as service:
        issuer = make_issuer(ES256)
        await service.put_organization(org_record(issuer))
        shared = await service.put_organization(org_record(issuer, version=2))
        entry = bytes.fromhex(shared.entry_id)
        granted = await service.put_grant(Grant(entry, "maker", "admin"))
        await service.put_grant(Grant(entry, "maker", "admin", revoked=True))
    copy = _insert_reencoded_copy(path, granted.entry_id)
    with pytest.raises(Corruption, match="re-encoded signature"):
        async with _service(path, keys):
            pass

    # Appended to the log anyway (by a release without this check, say): the audit names it.
    store = SQLiteStore(path)
    async with Sequencer(store, signer=keys[0]) as sequencer:
        await sequencer.add(copy)
        report = audit_log(
            sequencer.reader,
            store.get_statement,
            None,
            issuer=SERVICE,
            service_keys={key_id(keys[1].verifier()): keys[1].verifier()},
        )
    store.close()
    assert [f.what for f in report.findings if "service-record-replayed" in f.what], report


async def test_the_audit_names_a_grant_by_someone_who_may_not_share_the_statement(
    tmp_path: Path,
) -> None:
    """The service grants on behalf of an administrator or a user of the statement's own
    organization; a grant by anyone else (made while the store's issuer column was edited,
    say) is named, whatever the store says now."""
    path, keys = tmp_path / "log.db", _keys()
    async with _service(path, keys) as service:
        issuer = make_issuer(ES256)
        record = await service.put_organization(org_record(issuer))
        await service.put_user(User("eve", 1, "auditor", None, ()))
        await service.put_grant(Grant(bytes.fromhex(record.entry_id), "maker", "admin"))
        await service.put_grant(Grant(bytes.fromhex(record.entry_id), "maker", "eve"))
        report = audit_log(
            service.reader,
            service.store.get_statement,
            None,
            issuer=SERVICE,
            service_keys={key_id(keys[1].verifier()): keys[1].verifier()},
        )
    assert [str(f) for f in report.findings] == [
        "entry 3: registration would refuse its statement: a grant by 'eve', neither an "
        "administrator nor a user of the statement's organization (none) (grant-forbidden)"
    ]


async def test_a_copy_found_while_running_is_not_applied_and_later_records_are(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process that reads another's records as they come (a shared store) and meets such
    a copy logs it and leaves it out; a revocation registered after it still takes
    effect there."""
    import logging

    path, keys = tmp_path / "log.db", _keys()
    _, token = new_token(int(time.time()) + 86400)
    async with _service(path, keys) as service:
        first = await service.put_user(User("mallory", 1, "auditor", None, (token,)))
        other = _running_beside(service, keys)
        _insert_reencoded_copy(path, first.entry_id)
        await service.put_user(User("mallory", 2, "auditor", None, ()))
        with caplog.at_level(logging.ERROR):
            other.fold_records()
        user = other.users.get("mallory")
        assert user is not None and user.version == 2 and not user.tokens
        assert "re-encoded signature" in caplog.text


async def test_a_row_deleted_while_running_hides_no_later_record(tmp_path: Path) -> None:
    """A process reading another's records as they come finds the new ones by their place
    after the last it read, not by counting: deleting an old row behind the log does not
    make it pass over the next one (a revocation, here)."""
    path, keys = tmp_path / "log.db", _keys()
    _, token = new_token(int(time.time()) + 86400)
    async with _service(path, keys) as service:
        old = await service.put_user(User("bob", 1, "auditor", None, ()))
        await service.put_user(User("mallory", 1, "auditor", None, (token,)))
        other = TransparencyService(
            store=service.store, sequencer=service.sequencer, signer=keys[1], issuer=SERVICE
        )
        other.fold_records()
        _edit(path, "DELETE FROM statements WHERE entry_id = ?", old.entry_id)
        await service.put_user(User("mallory", 2, "auditor", None, ()))
        other.fold_records()
        user = other.users.get("mallory")
        assert user is not None and user.version == 2 and not user.tokens


async def test_a_record_stored_but_not_yet_in_the_log_folds_after_those_that_are(
    tmp_path: Path,
) -> None:
    """A crash between storing a record and appending it leaves it past the log: a start
    folds it after every record the log holds, whatever their indexes, then appends it."""
    from sealtrail.scitt import USER_RECORD_TYPE, parse_statement, sign1, user_record
    from sealtrail.scitt._cose import Claim, Header
    from sealtrail.storage import StatementRecord

    path, keys = tmp_path / "log.db", _keys()
    async with _service(path, keys) as service:
        await service.sequencer.add_many([f"entry {n}".encode() for n in range(40)])
        await service.put_user(User("mallory", 1, "auditor", None, ()))
        data = sign1(
            keys[1],
            protected={
                Header.CONTENT_TYPE: USER_RECORD_TYPE,
                Header.KID: key_id(keys[1].verifier()),
                Header.CWT_CLAIMS: {Claim.ISS: SERVICE, Claim.SUB: "user:mallory"},
            },
            payload=user_record(User("mallory", 2, "auditor", None, ())),
        )
        statement = parse_statement(data)
        service.store.put_statements(
            [
                StatementRecord(
                    statement.leaf_entry, data, SERVICE, "user:mallory", USER_RECORD_TYPE, 0
                )
            ]
        )
    async with _service(path, keys) as service:
        user = service.users.get("mallory")
        assert user is not None and user.version == 2
        assert service.reader.index_of(leaf_hash(statement.leaf_entry)) == 41  # appended


async def test_an_old_grant_moved_to_a_new_seq_is_not_applied_again(tmp_path: Path) -> None:
    path, keys = tmp_path / "log.db", _keys()
    async with _service(path, keys) as service:
        record = await service.put_organization(org_record(make_issuer(ES256)))
        entry = bytes.fromhex(record.entry_id)
        granted = await service.put_grant(Grant(entry, "maker", "admin"))
        await service.put_grant(Grant(entry, "maker", "admin", revoked=True))
        other = _running_beside(service, keys)
        _edit(  # the grant's row moved past the revocation
            path,
            "UPDATE statements SET seq = (SELECT max(seq) + 1 FROM statements) WHERE entry_id = ?",
            granted.entry_id,
        )
        other.fold_records()
        assert not other.grants.allows(entry, "maker")


async def test_the_newest_row_deleted_hides_not_the_record_given_its_seq(
    tmp_path: Path,
) -> None:
    path, keys = tmp_path / "log.db", _keys()
    _, token = new_token(int(time.time()) + 86400)
    async with _service(path, keys) as service:
        await service.put_user(User("mallory", 1, "auditor", None, (token,)))
        newest = await service.put_user(User("bob", 1, "auditor", None, ()))
        other = _running_beside(service, keys)
        # Its seq goes to the next statement stored.
        _edit(path, "DELETE FROM statements WHERE entry_id = ?", newest.entry_id)
        await service.put_user(User("mallory", 2, "auditor", None, ()))
        other.fold_records()
        user = other.users.get("mallory")
        assert user is not None and user.version == 2 and not user.tokens


async def test_rows_posing_as_the_service_s_delay_no_later_record(tmp_path: Path) -> None:
    from sealtrail.scitt import ORG_RECORD_TYPE, sign1
    from sealtrail.scitt._cose import Claim, Header

    path, keys = tmp_path / "log.db", _keys()
    _, token = new_token(int(time.time()) + 86400)
    async with _service(path, keys) as service:
        await service.put_user(User("mallory", 1, "auditor", None, (token,)))
        other = _running_beside(service, keys)
        rogue = generate_signer(ES256)
        with sqlite3.connect(path) as db:  # the service's kid and issuer, another key
            for n in range(3):
                data = sign1(
                    rogue,
                    protected={
                        Header.CONTENT_TYPE: ORG_RECORD_TYPE,
                        Header.KID: key_id(keys[1].verifier()),
                        Header.CWT_CLAIMS: {Claim.ISS: SERVICE, Claim.SUB: f"org:x{n}"},
                    },
                    payload=b"{}",
                )
                db.execute(
                    "INSERT INTO statements (entry_id, body, issuer, subject, content_type,"
                    " registered_at) VALUES (?, ?, ?, ?, ?, 0)",
                    (hashlib.sha256(data).digest(), data, SERVICE, f"org:x{n}", ORG_RECORD_TYPE),
                )
        db.close()
        await service.put_user(User("mallory", 2, "auditor", None, ()))
        other.fold_records()  # one poll: the rows are logged and left out
        user = other.users.get("mallory")
        assert user is not None and user.version == 2 and not user.tokens
