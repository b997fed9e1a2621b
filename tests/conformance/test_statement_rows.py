"""Statement rows no server stored never become log entries, on every backend.

The attacker can write to the database (SQL into SQLite or PostgreSQL, a tamper call into
memory) but cannot read the servers' key files. They slip rows into the statement store:
garbage, a signed statement copied from another registration (its signature re-encoded, so
it verifies, with the original's columns and tag), a row with a made-up tag, a registered
row whose issuer they edit before it is sequenced, and a registered row deleted and
inserted again at a new number (a replay). Every path that turns stored rows into log
entries — the backlog a shared sequencer's feeder reads, recovery at start-up, and the
feeder of a new holder after a takeover — appends the registered rows, each once, and none
of the others; the backlog and its watermark move past them; each is logged once at error
level by its number, never by its content.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

import cbor2
import pytest

from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner, LogReader, Sequencer, SequencerConfig, SharedSequencer
from sealtrail.provenance import audit_log
from sealtrail.scitt import (
    StatementBacklog,
    StatementRows,
    TransparencyService,
    parse_statement,
)
from sealtrail.storage import (
    LogStore,
    MemoryStore,
    PostgresStore,
    SequencerRoles,
    SharedMemoryStore,
    SQLiteStore,
    StatementRecord,
    StatementStore,
)
from tests._serve_proc import statement_for
from tests.conformance.conftest import StoreFactory
from tests.unit.scitt._pki import Issuer, make_issuer
from tests.unit.scitt.conftest import ISSUER, SERVICE

#: The deployment's challenge key, which the servers hold and the attacker does not.
ROWS = StatementRows(b"\x5a" * 32)
#: The order of the P-256 group: (r, s) and (r, N - s) are both valid ECDSA signatures.
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
#: Seconds a condition is waited for.
WAIT = 20.0


class Store(LogStore, StatementStore, Protocol):
    """What the tests open: a log and its statements in one store."""


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return make_issuer(ES256, cn="Rows")


def _record(body: bytes, *, tag: bool = True) -> StatementRecord:
    """The row a server stores for ``body`` (with its tag), as the registrar builds it."""
    statement = parse_statement(body)
    record = StatementRecord(
        hashlib.sha256(body).digest(),
        body,
        statement.issuer,
        statement.subject,
        str(statement.content_type),
        int(time.time()),
    )
    return ROWS.tagged(record) if tag else record


def _reencoded(body: bytes) -> bytes:
    """``body`` under its ES256 signature re-encoded as ``(r, N - s)``: it still verifies,
    with no key needed, and it is another entry."""
    parts = list(cbor2.loads(body).value)
    s = int.from_bytes(parts[3][32:], "big")
    parts[3] = parts[3][:32] + (N - s).to_bytes(32, "big")
    return bytes(cbor2.dumps(cbor2.CBORTag(18, parts)))


# -- the attacker's hands on each backend ---------------------------------------------------


def _plant(store: Store, record: StatementRecord) -> int:
    """``record`` inserted behind the service (next number, its tag as given); its number."""
    tag = record.tag or None
    columns = (record.entry_id, record.body, record.issuer, record.subject)
    values = (*columns, record.content_type, record.registered_at, tag)
    if isinstance(store, MemoryStore):
        return store.tamper_insert(record)
    if isinstance(store, SQLiteStore):
        store.execute(
            "INSERT INTO statements (entry_id, body, issuer, subject, content_type,"
            " registered_at, tag) VALUES (?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    else:
        assert isinstance(store, PostgresStore)
        store.execute(
            "INSERT INTO statements SELECT coalesce(max(seq), 0) + 1, %s, %s, %s, %s, %s, %s,"
            " %s FROM statements",
            values,
        )
    return _seq_of(store, record.entry_id)


def _edit_issuer(store: Store, entry_id: bytes, issuer: str) -> None:
    if isinstance(store, MemoryStore):
        store.tamper_statement(entry_id, issuer=issuer)
    elif isinstance(store, SQLiteStore):
        store.execute("UPDATE statements SET issuer = ? WHERE entry_id = ?", (issuer, entry_id))
    else:
        assert isinstance(store, PostgresStore)
        store.execute("UPDATE statements SET issuer = %s WHERE entry_id = %s", (issuer, entry_id))


def _replay(store: Store, entry_id: bytes) -> int:
    """A stored row deleted and inserted again, tag and all, at a new number."""
    record = store.get_statement(entry_id)
    assert record is not None
    if isinstance(store, SQLiteStore):
        store.execute("DELETE FROM statements WHERE entry_id = ?", (entry_id,))
    elif isinstance(store, PostgresStore):
        store.execute("DELETE FROM statements WHERE entry_id = %s", (entry_id,))
    return _plant(store, record)


def _seq_of(store: StatementStore, entry_id: bytes) -> int:
    return max(r.seq for r in store.backlog_since(-1, limit=1 << 20) if r.entry_id == entry_id)


# -- a store the attacker has been at ------------------------------------------------------


@dataclass
class Planted:
    """The rows of :func:`_tampered`: the registered entries, in store order, and the
    numbers of the rows that must be refused."""

    registered: list[bytes]
    refused: list[int]
    bodies: list[bytes]


def _tampered(store: Store, issuer: Issuer, first: int = 0) -> Planted:
    """Registered rows with forgeries between them (none of them sequenced yet)."""
    legit = [_record(statement_for(issuer, first + n)) for n in range(4)]
    garbage = b"not a signed statement %d" % first
    planted = Planted([], [], [])

    def put(record: StatementRecord) -> None:
        store.put_statements([record])
        planted.registered.append(record.entry_id)

    put(legit[0])
    # A real registration's body, its signature re-encoded: it verifies, and it is another
    # entry; the original's columns and tag copied along.
    copy = _reencoded(legit[0].body)
    copied = replace(legit[0], entry_id=hashlib.sha256(copy).digest(), body=copy)
    planted.refused.append(_plant(store, copied))
    planted.bodies.append(copy)
    put(legit[1])
    junk = StatementRecord(
        hashlib.sha256(garbage).digest(), garbage, ISSUER, "x", "application/json", 0
    )
    planted.refused.append(_plant(store, junk))  # no tag at all
    made_up = replace(junk, entry_id=bytes([first + 1]) * 32, tag=b"\7" * 32)
    planted.refused.append(_plant(store, made_up))
    planted.bodies.append(garbage)
    # Registered, then its issuer edited before it is sequenced.
    store.put_statements([legit[2]])
    _edit_issuer(store, legit[2].entry_id, "https://someone-else.example/signing")
    planted.refused.append(_seq_of(store, legit[2].entry_id))
    # A registered row deleted and inserted again at a new number.
    _replay(store, legit[1].entry_id)
    put(legit[3])
    return planted


def _store(store_factory: StoreFactory) -> Store:
    store = store_factory.open()
    assert isinstance(store, LogStore) and isinstance(store, StatementStore)
    return store


def _checkpoints() -> CheckpointSigner:
    return CheckpointSigner(origin="rows.test/log", signer=Ed25519Signer.generate())


def _entries(store: LogStore, signer: CheckpointSigner) -> list[bytes]:
    reader = LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    return reader.entries(0, reader.size())


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT
    while not await condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


# -- the tag ---------------------------------------------------------------------------------


def test_a_row_keeps_the_tag_it_was_stored_with(
    store_factory: StoreFactory, issuer: Issuer
) -> None:
    store = _store(store_factory)
    tagged, untagged = (
        _record(statement_for(issuer, 1)),
        _record(statement_for(issuer, 2), tag=False),
    )
    assert len(tagged.tag) == 32 and untagged.tag == b""
    assert store.put_statements([tagged, untagged]) == [1, 2]
    assert store.get_statement(tagged.entry_id) == tagged
    assert store.get_statement(untagged.entry_id) == untagged
    assert [r for _, r in store.statements_since(0, limit=10)] == [tagged, untagged]
    rows = store.backlog_since(0, limit=10)
    assert [(r.seq, r.entry_id, r.tag) for r in rows] == [
        (1, tagged.entry_id, tagged.tag),
        (2, untagged.entry_id, b""),
    ]
    assert ROWS.valid(rows[0]) and not ROWS.valid(rows[1])
    assert rows[0].issuer == tagged.issuer and rows[0].registered_at == tagged.registered_at


# -- the backlog -----------------------------------------------------------------------------


def test_the_backlog_gives_only_the_rows_a_server_stored(
    store_factory: StoreFactory, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(store_factory)
    planted = _tampered(store, issuer)
    signer = _checkpoints()
    backlog = StatementBacklog(
        store, ROWS, LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    )
    with caplog.at_level(logging.INFO, logger="sealtrail"):
        given = backlog.entries_since(0, limit=100)
        assert [s for s, e in given if e is None] == planted.refused
        # The registered rows, the replayed one at its new number too: appended again, it
        # keeps its first index (the sequencer's deduplication; see the tests below).
        kept = [e for _, e in given if e is not None]
        assert list(dict.fromkeys(kept)) == planted.registered
        assert _seq_of(store, planted.registered[1]) in [s for s, e in given if e is not None]
        assert backlog.entries_since(0, limit=100) == given  # read again: not logged again
    refusals = _refusals(caplog)
    assert len(refusals) == len(planted.refused) == backlog.refused
    for seq, line in zip(planted.refused, refusals, strict=True):
        assert f"statement row seq {seq} " in line
    text = "\n".join(refusals)
    assert "no authentication tag" in text and "does not verify" in text
    for secret in (*planted.bodies, b"\7" * 32):  # neither content nor tag in a log line
        assert secret.hex() not in text and repr(secret)[2:-1] not in text


def test_recovery_at_start_appends_only_the_rows_a_server_stored(
    store_factory: StoreFactory, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that starts on the store (after a crash, or a takeover on SQLite's one
    process) re-appends the rows above its watermark: the registered ones, each once."""
    store = _store(store_factory)
    signer = _checkpoints()
    planted = _tampered(store, issuer)

    async def start_and_stop() -> None:
        sequencer = Sequencer(store, signer=signer, config=SequencerConfig(max_delay=0.001))
        service = TransparencyService(
            store=store,
            sequencer=sequencer,
            signer=generate_signer(ES256),
            issuer=SERVICE,
            statement_rows=ROWS,
        )
        await sequencer.start()
        try:
            await service.start()
            await service.close()
        finally:
            await sequencer.close()

    with caplog.at_level(logging.ERROR, logger="sealtrail"):
        asyncio.run(start_and_stop())
    assert _entries(store, signer) == list(dict.fromkeys(planted.registered))
    assert len(_refusals(caplog)) == len(planted.refused)
    last = store.backlog_since(0, limit=100)[-1].seq
    assert store.read_sequenced() == last, "the watermark passed the refused rows"
    # More of both; started again, then again: the new registered rows once, nothing else.
    more = _tampered(store, issuer, first=10)
    asyncio.run(start_and_stop())
    asyncio.run(start_and_stop())
    registered = list(dict.fromkeys(planted.registered + more.registered))
    assert _entries(store, signer) == registered
    assert len(_refusals(caplog)) == len(planted.refused) + len(more.refused)


def _shared(store_factory: StoreFactory) -> Store:
    if store_factory.name == "memory":
        return SharedMemoryStore()  # the memory backend's variant with roles
    store = _store(store_factory)
    if not isinstance(store, SequencerRoles):
        pytest.skip(f"{store_factory.name} has no sequencer role (recovery is its only path)")
    return store


def test_the_feeder_and_the_next_holder_append_only_the_rows_a_server_stored(
    store_factory: StoreFactory, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    store = _shared(store_factory)
    assert isinstance(store, SequencerRoles)
    signer = _checkpoints()

    def holder(name: str) -> SharedSequencer:
        sequencer = SharedSequencer(
            store,
            signer=signer,
            backlog=store,
            holder=name,
            config=SequencerConfig(max_delay=0.001),
            role_check=0.02,
        )
        sequencer.backlog = StatementBacklog(store, ROWS, sequencer.reader)
        return sequencer

    def caught_up(registered: list[bytes]) -> Callable[[], Awaitable[bool]]:
        last = store.backlog_since(0, limit=1000)[-1].seq

        async def done() -> bool:
            entries = await asyncio.to_thread(_entries, store, signer)
            sequenced = await asyncio.to_thread(store.read_sequenced)
            return sequenced >= last and len(entries) >= len(set(registered))

        return done

    async def run() -> list[bytes]:
        first = _tampered(store, issuer)
        registered = list(first.registered)
        a = holder("a")
        await a.start()
        try:
            await _until(caught_up(registered))
            # The backlog keeps moving: more of both while a holds the role.
            more = _tampered(store, issuer, first=10)
            registered += more.registered
            await _until(caught_up(registered))
        finally:
            await a.close()
        # Taken over: b starts from the watermark a left.
        late = _tampered(store, issuer, first=20)
        registered += late.registered
        # The newest row forged too: the watermark passes it all the same.
        last = b"not a signed statement, last"
        _plant(store, StatementRecord(hashlib.sha256(last).digest(), last, ISSUER, "x", "t", 0))
        b = holder("b")
        await b.start()
        try:
            assert b.holds_role
            await _until(caught_up(registered))
            await asyncio.sleep(0.1)  # a few more feeder polls: nothing else is appended
        finally:
            await b.close()
        return registered

    with caplog.at_level(logging.ERROR, logger="sealtrail"):
        registered = asyncio.run(run())
    assert _entries(store, signer) == list(dict.fromkeys(registered))
    assert len(_refusals(caplog)) == 3 * 4 + 1, "each forged row logged once, by its holder"


def test_a_row_a_server_stored_before_a_key_change_is_not_reported_once_in_the_log(
    store_factory: StoreFactory, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows above a lagging watermark that a server appended already (stored before the
    upgrade that brought the tags, or under a challenge key since replaced) are nothing
    to append and nothing to report."""
    store = _store(store_factory)
    signer = _checkpoints()
    old = [_record(statement_for(issuer, n), tag=False) for n in range(3)]
    store.put_statements(old)

    async def append() -> None:
        async with Sequencer(store, signer=signer) as sequencer:
            await sequencer.add_many([r.entry_id for r in old[:2]])

    asyncio.run(append())
    backlog = StatementBacklog(
        store, ROWS, LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    )
    with caplog.at_level(logging.INFO, logger="sealtrail"):
        assert backlog.entries_since(0, limit=10) == [(1, None), (2, None), (3, None)]
    assert _refusals(caplog) == [
        f"statement row seq 3 (entry {old[2].entry_id.hex()[:16]}…) refused: it carries no "
        "authentication tag; not appended to the log, left in the store (written behind "
        "the service? `sealtrail audit` names it)"
    ]
    assert any("2 statement rows without a valid tag are in the log" in r for r in caplog.messages)


# -- the key ---------------------------------------------------------------------------------


def test_the_row_key_is_derived_not_the_challenge_key_itself(issuer: Issuer) -> None:
    import hmac

    from sealtrail.scitt._rows import row_message

    secret = b"\x5a" * 32
    record = _record(statement_for(issuer, 1))
    message = row_message(record.entry_id, record.issuer, record.subject, record.content_type)
    assert record.tag != hmac.new(secret, message, hashlib.sha256).digest()
    assert StatementRows(b"\x5b" * 32).tag(record) != record.tag
    assert "5a5a" not in repr(ROWS)
    with pytest.raises(TypeError):
        pickle.dumps(ROWS)
    # Unambiguous: moving bytes from one field to the next changes the tag.
    shifted = replace(record, issuer=record.issuer + record.subject[:1], subject=record.subject[1:])
    assert ROWS.tag(shifted) != record.tag
    for edit in (
        {"entry_id": bytes(32)},
        {"subject": "urn:maker:device-2"},
        {"content_type": "text/plain"},
    ):
        assert not ROWS.valid(replace(record, **edit))
    # Not the time: a statement has one tag whenever it is registered, so that a store
    # tells its row from another by comparing.
    assert ROWS.valid(replace(record, registered_at=record.registered_at + 1))


# -- the audit -------------------------------------------------------------------------------


def test_the_audit_names_a_row_no_server_stored_in_the_log_or_out_of_it(
    store_factory: StoreFactory,
) -> None:
    """One hand-written row reached the log (a server of a release before the tags, or
    one given no key, appended it): the replay names it, as it always did. The other is
    outside the log: its tag names it."""
    store = _store(store_factory)
    signer = _checkpoints()
    rows = []
    for n in (1, 2):
        body = b"not a signed statement %d" % n
        record = StatementRecord(hashlib.sha256(body).digest(), body, ISSUER, "x", "t", 0)
        rows.append((_plant(store, record), record))

    async def append() -> None:
        async with Sequencer(store, signer=signer) as sequencer:
            await sequencer.add_many([rows[0][1].entry_id])

    asyncio.run(append())
    reader = LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    report = audit_log(
        reader,
        store.get_statement,
        None,
        issuer=SERVICE,
        service_keys={},
        stored_rows=lambda seq, limit: store.backlog_since(seq, limit=limit),
        statement_rows=ROWS,
    )
    assert [(f.where, f.what.split(":")[0]) for f in report.findings] == [
        ("entry 0", "registration would refuse its statement"),
        (
            f"statement row {rows[1][0]}",
            f"entry id {rows[1][1].entry_id.hex()[:16]}… is not in the log, and it carries "
            "no authentication tag",
        ),
    ]
    assert report.outside == 1 and report.tags_checked
    unkeyed = audit_log(
        reader,
        store.get_statement,
        None,
        issuer=SERVICE,
        service_keys={},
        stored_rows=lambda seq, limit: store.backlog_since(seq, limit=limit),
    )
    assert [f.where for f in unkeyed.findings] == ["entry 0"]
    assert unkeyed.outside == 1 and not unkeyed.tags_checked


# -- a row planted before its statement is registered ----------------------------------------


def test_a_row_planted_under_an_entry_id_gives_way_to_the_statements_own(
    store_factory: StoreFactory, issuer: Issuer
) -> None:
    store = store_factory.open()
    assert isinstance(store, StatementStore)
    first = _record(statement_for(issuer, 100))
    (first_seq,) = store.put_statements([first])
    # Sent again later: the same row but for its time, which keeps its number.
    assert store.put_statements([replace(first, registered_at=first.registered_at + 5)]) == [
        first_seq
    ]
    assert store.get_statement(first.entry_id) == first

    # Planted ahead of the statement: untagged, and tagged right over a garbage body.
    untagged = _record(statement_for(issuer, 101))
    garbage = _record(statement_for(issuer, 102))
    planted = [
        _plant(store, replace(untagged, tag=b"")),
        _plant(store, replace(garbage, body=b"not the statement")),
    ]
    assert store.put_statements([untagged, garbage]) == [planted[1] + 1, planted[1] + 2]
    assert store.get_statement(untagged.entry_id) == untagged
    assert store.get_statement(garbage.entry_id) == garbage
    # Read again by a backlog above the numbers it had passed; and again, nothing moves.
    assert [r.entry_id for r in store.backlog_since(planted[1], limit=10)] == [
        untagged.entry_id,
        garbage.entry_id,
    ]
    assert store.put_statements([garbage, untagged]) == [planted[1] + 2, planted[1] + 1]
