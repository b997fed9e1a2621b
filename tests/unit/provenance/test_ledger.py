"""The ledger over a real service: registration refuses what the history refuses, the index
follows the log, and the audit names every row edited, deleted or inserted behind its back.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import psycopg
import pytest

from sealtrail.errors import Error, InvalidInput, NotFound, StorageError, VerificationError
from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.merkle import leaf_hash
from sealtrail.provenance import (
    Assembly,
    AuditReport,
    ComplianceState,
    MemoryRows,
    Node,
    NodeType,
    ProvenanceLedger,
    ProvenancePolicy,
    ProvenanceViews,
    audit_log,
    check_index_of_log,
    open_nonce,
    seal_nonce,
)
from sealtrail.scitt import (
    KEYS_RECORD_TYPE,
    Grant,
    ServiceKeys,
    User,
    key_id,
    keys_record,
    new_token,
    parse_statement,
)
from sealtrail.scitt._cose import Claim, Header, sign1
from sealtrail.storage import (
    IndexStore,
    MemoryIndex,
    MemoryStore,
    PostgresIndex,
    PostgresStore,
    SQLiteIndex,
    StatementRecord,
)

from ._certs import new_key
from ._signed import SERVICE, SignedChain, signed_chain
from ._signed import journey as facts
from ._world import ASSEMBLER, MAKER, OPERATOR

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def journey(chain: SignedChain, serial: str = "srv-1", shipment: str = "ship-1") -> None:
    await chain.journey(serial, shipment)


def audit(chain: SignedChain, index: IndexStore | None = None) -> AuditReport:
    keys = dict(chain.service.keys)
    return audit_log(
        chain.sequencer.reader,
        chain.store.get_statement,
        chain.index if index is None else index,
        issuer=SERVICE,
        service_keys=keys,
    )


async def test_the_index_follows_the_log_and_the_audit_agrees() -> None:
    async with signed_chain() as chain:
        await journey(chain)
        await chain.indexed()
        rows = chain.world.state.rows
        assert isinstance(rows, MemoryRows)
        assert json.loads(chain.index.row("compliance", "srv-1") or "{}")["state"] == "production"
        # The index holds what the model gives for the same facts (entry ids differ).
        strip = {"entry", "manifest", "shipped", "received", "iat", "noncompliant_since"}
        assert _shape(chain.index.dump_rows(), strip) == _shape(rows.dump(), strip)
        report = audit(chain)
        assert report.ok, report.findings
        assert report.applied == len(chain.registered)
        assert report.refused == 0


async def test_the_audit_checks_user_and_grant_records_and_expects_them_skipped() -> None:
    """Users, their tokens and shared statements (docs/auth.md) are the service's own
    records, in the log like organizations: the audit checks their signature and shape,
    and expects the index to skip them (they state no provenance fact)."""
    async with signed_chain() as chain:
        await chain.service.put_user(User("ana", 1, "supplier", MAKER))
        _, token = new_token(int(time.time()) + 3600)
        await chain.service.put_user(User("ana", 2, "supplier", MAKER, tokens=(token,)))
        await journey(chain)
        entry = hashlib.sha256(chain.registered[0]).digest()
        await chain.service.put_grant(Grant(entry, OPERATOR, "ana"))
        await chain.indexed()
        report = audit(chain)
        assert report.ok, report.findings
        assert report.applied == len(chain.registered)
        assert report.refused == 0
        assert report.entries == len(chain.registered) + 4 + 3  # 4 organizations


async def test_a_rotation_is_recorded_and_the_audit_checks_who_signed_it() -> None:
    """A service started with a retired receipt key records its key set (signed by the
    current key); a key set record signed by a key it does not name current is caught."""
    old = generate_signer(ES256)
    async with signed_chain(retired=[old.verifier()]) as chain:
        keys = chain.service.receipt_keys
        assert chain.service.recorded_keys == keys
        assert keys.retired == (key_id(old.verifier()),)
        await journey(chain)
        await chain.indexed()
        report = audit(chain)
        assert report.ok, report.findings
        assert report.entries == len(chain.registered) + 4 + 1

        # The current key signs a record naming the retired one as current.
        forged = ServiceKeys(key_id(old.verifier()), "ES256", (keys.current,))
        data = sign1(
            chain.service.signer,
            protected={
                Header.CONTENT_TYPE: KEYS_RECORD_TYPE,
                Header.KID: keys.current,
                Header.CWT_CLAIMS: {Claim.ISS: SERVICE, Claim.SUB: "service-keys", Claim.IAT: 1},
            },
            payload=keys_record(forged),
        )
        await chain.service.register_checked(parse_statement(data))
        await chain.indexed()
        report = audit(chain)
        (finding,) = report.findings
        assert "keys-record-untrusted" in str(finding), finding


def _shape(rows: Iterable[tuple[str, str, str]], strip: set[str]) -> list[tuple[str, str, object]]:
    shaped = []
    for table, key, value in rows:
        doc = json.loads(value)
        shaped.append((table, key, {k: v for k, v in doc.items() if k not in strip}))
    return [r for r in shaped if r[0] not in ("nonce", "parent")]


async def test_a_rack_of_servers_with_eight_rots_each_reaches_production() -> None:
    async with signed_chain() as chain:
        servers = [f"srv-{i}" for i in range(3)]
        for serial in servers:
            await chain.journey(serial, f"ship-{serial}", blades=4, per_blade=2)
        rack = Assembly(
            Node(NodeType.RACK, "rack-1"), tuple(Node(NodeType.SERVER, s) for s in servers)
        )
        await chain.record(ASSEMBLER, rack)
        await chain.indexed()
        views = ProvenanceViews(chain.index)
        for serial in servers:
            node = views.node(serial)
            assert node["compliance"]["state"] == "production"
            assert node["attestation"]["status"] == "affirming"
            assert len(node["devices"]) == 8
            assert node["installed_in"] == ["rack-1"]
        assert len(views.node("rack-1")["devices"]) == 24
        report = audit(chain)
        assert report.ok, report.findings
        assert report.refused == 0


async def test_the_indexer_reuses_what_registration_computed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with signed_chain() as chain:
        judged: list[bytes] = []
        original = ProvenanceLedger._judge

        def spy(self: ProvenanceLedger, leaf: bytes) -> object:
            judged.append(leaf)
            return original(self, leaf)

        monkeypatch.setattr(ProvenanceLedger, "_judge", spy)
        await journey(chain)
        await chain.indexed()
        provenance = {e.entry_id for e in chain.index.dump_entries() if e.kind}
        assert provenance and not provenance & set(judged)


async def test_registration_refuses_what_the_history_refuses_and_stores_nothing() -> None:
    async with signed_chain() as chain:
        await journey(chain)
        await chain.indexed()
        size = chain.sequencer.reader.size()
        w = chain.world
        # A replayed attestation nonce, a child claimed by a second parent, a stale state.
        replay = w.evidence_result("srv-1")
        await chain.register(OPERATOR, replay)
        from sealtrail.provenance import Assembly, Compliance

        cases = [
            (OPERATOR, replay, "attestation-nonce-replayed"),
            (
                ASSEMBLER,
                Assembly(Node(NodeType.SERVER, "srv-2"), (Node(NodeType.BLADE, "srv-1-blade-0"),)),
                "assembly-child-elsewhere",
            ),
            (
                OPERATOR,
                Compliance("srv-1", ComplianceState.ARRIVED, ComplianceState.VERIFIED, "again"),
                "compliance-stale-state",
            ),
            (
                OPERATOR,
                w.evidence_result("srv-1", signer={w.state.devices_of("srv-1")[0]: new_key()}),
                "attestation-result-mismatch",
            ),
        ]
        for org, payload, code in cases:
            with pytest.raises(VerificationError) as caught:
                await chain.register(org, payload)
            assert caught.value.code == code
        await chain.indexed()
        assert chain.sequencer.reader.size() == size + 1  # only the first attestation
        assert audit(chain).ok


async def test_a_restart_catches_the_index_up_and_keeps_refusing_clones(tmp_path: Path) -> None:
    store = MemoryStore()
    index = SQLiteIndex(tmp_path / "provenance.db")
    checkpoint_key, service_key = Ed25519Signer.generate(), generate_signer(ES256)
    async with signed_chain(
        store=store, index=index, checkpoint_key=checkpoint_key, service_key=service_key
    ) as chain:
        await journey(chain)
        await chain.indexed()
        issuers, world = chain.issuers, chain.world
        devices = world.devices(1)
    index.reset()  # lost: the restart rebuilds it from the log
    async with signed_chain(
        store=store,
        index=index,
        issuers=issuers,
        checkpoint_key=checkpoint_key,
        service_key=service_key,
        onboard=False,
    ) as chain:
        chain.world = world
        assert index.applied_size() == chain.sequencer.reader.size()
        from sealtrail.provenance import DeviceIdentity, DeviceManifest

        taken = world.state.rows.get("device", world.state.devices_of("srv-1")[0])
        assert taken is not None
        clone = DeviceIdentity(
            devices[0].kind,
            "rot-clone",
            (base64.b64decode(taken["identity"]),),
            devices[0].algorithm,
        )
        with pytest.raises(VerificationError) as caught:
            await chain.register(MAKER, DeviceManifest("batch-clone", (clone,)))
        assert caught.value.code == "manifest-cloned-device"
        assert audit(chain).ok
    index.close()


async def test_an_acceptance_whose_store_failed_does_not_hold_its_devices() -> None:
    store = MemoryStore()
    async with signed_chain(store=store) as chain:
        from sealtrail.provenance import DeviceManifest

        devices = chain.world.devices(2)
        manifest = DeviceManifest("batch-lost", tuple(devices))
        put = store.put_statements

        def fail_once(records: Sequence[StatementRecord]) -> list[int]:
            store.put_statements = put  # type: ignore[method-assign]
            raise StorageError("injected: the statement store failed")

        store.put_statements = fail_once  # type: ignore[method-assign]
        with pytest.raises(Error):
            await chain.register(MAKER, manifest)
        # The retry is not a clone of the lost acceptance.
        await chain.register(MAKER, manifest)
        await chain.indexed()
        assert audit(chain).ok


# -- tampering with the index --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "where", "what"),
    [
        (
            "UPDATE idx_rows SET value = replace(value, 'production', 'verified') "
            "WHERE tbl = 'compliance'",
            "row compliance/srv-1",
            "edited behind the log",
        ),
        (
            "DELETE FROM idx_rows WHERE tbl = 'nonce' "
            "AND key = (SELECT min(key) FROM idx_rows WHERE tbl = 'nonce')",
            "row nonce/",
            "deleted behind the log",
        ),
        (
            "INSERT INTO idx_rows (tbl, key, value) VALUES ('device', '"
            + "ab" * 32
            + '\', \'{"serial":"rogue"}\')',
            "row device/" + "ab" * 32,
            "inserted behind the log",
        ),
        (
            "UPDATE idx_entries SET outcome = 'refused', code = 'x' WHERE idx = 3",
            "entry 3",
            "edited",
        ),
        (
            "DELETE FROM idx_changes WHERE idx = 6 AND pos = 0",
            "change 6/0",
            "deleted behind the log",
        ),
    ],
)
async def test_the_audit_names_every_edit_behind_the_log_and_a_rebuild_restores_it(
    tmp_path: Path, sql: str, where: str, what: str
) -> None:
    index = SQLiteIndex(tmp_path / "provenance.db")
    async with signed_chain(index=index) as chain:
        await journey(chain)
        await chain.indexed()
        assert audit(chain).ok
        index.execute(sql)
        report = audit(chain)
        assert not report.ok
        assert any(f.where.startswith(where) and what in f.what for f in report.findings), [
            str(f) for f in report.findings
        ]
        # The truth comes back from the log.
        await chain.ledger.close()
        index.reset()
        chain.ledger.catch_up(chain.sequencer.reader)
        assert audit(chain).ok
    index.close()


async def test_the_audit_catches_a_statement_edited_in_the_store() -> None:
    async with signed_chain() as chain:
        await journey(chain)
        await chain.indexed()
        store = chain.store
        assert isinstance(store, MemoryStore)
        record = store.get_statement(next(iter(chain.index.dump_entries())).entry_id)
        assert record is not None
        seq, _ = store._statements[record.entry_id]
        edited = dataclasses.replace(record, body=record.body[:-1] + bytes([record.body[-1] ^ 1]))
        store._statements[record.entry_id] = (seq, edited)
        report = audit(chain)
        assert any("does not hash" in f.what for f in report.findings)


async def test_a_raw_entry_in_the_log_never_stops_the_index(tmp_path: Path) -> None:
    """An entry that is not a statement id (appended by other means than registration) is
    indexed as skipped, under its leaf hash; a rebuild gets past it too, and the audit
    names it."""
    index = SQLiteIndex(tmp_path / "provenance.db")
    async with signed_chain(index=index) as chain:
        await journey(chain, "srv-1", "ship-1")
        raw = [b"", b"x", bytes(33), b"a raw line"]
        first = (await chain.sequencer.add_many(raw))[0]
        await chain.indexed()
        # The index's last entry is a raw one: still recognized as the log's.
        check_index_of_log(index, chain.sequencer.reader)
        await journey(chain, "srv-2", "ship-2")
        await chain.indexed()
        assert index.applied_size() == chain.sequencer.reader.size()
        entries = {e.index: e for e in index.dump_entries()}
        for offset, entry in enumerate(raw):
            recorded = entries[first + offset]
            assert recorded.entry_id == leaf_hash(entry)
            assert (recorded.outcome, recorded.kind) == ("skipped", "")
        assert json.loads(index.row("compliance", "srv-2") or "{}")["state"] == "production"
        report = audit(chain)
        assert {f.where for f in report.findings} == {f"entry {first + k}" for k in range(4)}
        await chain.ledger.close()
        index.reset()
        chain.ledger.catch_up(chain.sequencer.reader)
        assert index.applied_size() == chain.sequencer.reader.size()
    index.close()


async def test_a_fresh_memory_index_is_the_same_as_the_sqlite_one(tmp_path: Path) -> None:
    index = SQLiteIndex(tmp_path / "p.db")
    async with signed_chain(index=index) as chain:
        await journey(chain)
        await chain.indexed()
        other = MemoryIndex()
        assert audit(chain, other).findings  # an empty index is behind
        ProvenanceLedger(
            other,
            statement=chain.store.get_statement,
            org_of=lambda issuer: chain.service.registry.for_issuer(issuer).name,
        ).catch_up(chain.sequencer.reader)
        assert list(other.dump_rows()) == list(index.dump_rows())
        assert list(other.dump_changes()) == list(index.dump_changes())
        assert list(other.dump_entries()) == list(index.dump_entries())
    index.close()


# -- fresh nonces ----------------------------------------------------------------------------


async def test_attestations_must_answer_fresh_nonces_the_service_issued() -> None:
    policy = ProvenancePolicy(require_challenge=True, challenge_ttl=60)
    async with signed_chain(policy=policy) as chain:
        ledger = chain.ledger

        def issued(serial: str, count: int) -> list[bytes]:
            return [bytes.fromhex(n) for n in ledger.challenge(serial, count).nonces]

        for org, payload in facts(chain.world, "srv-1", "ship-1", challenge=issued):
            await chain.register(org, payload)
        w = chain.world
        cases = [
            (w.evidence_result("srv-1"), "nonce-not-issued"),  # made up by the verifier
        ]
        used = w.evidence_result("srv-1", nonce=issued("srv-1", 1)[0])
        await chain.register(OPERATOR, used)
        cases.append((used, "attestation-nonce-replayed"))  # answered once: not again
        forged = bytearray(issued("srv-1", 1)[0])
        forged[0] ^= 1  # any bit of a sealed nonce changed
        cases.append((w.evidence_result("srv-1", nonce=bytes(forged)), "nonce-not-issued"))
        old = ledger.challenge("srv-1", 1, now=time.time() - 120).nonces[0]
        cases.append((w.evidence_result("srv-1", nonce=bytes.fromhex(old)), "nonce-expired"))
        for payload, code in cases:
            size = chain.sequencer.reader.size()
            with pytest.raises(VerificationError) as caught:
                await chain.register(OPERATOR, payload)
            assert caught.value.code == code
            assert chain.sequencer.reader.size() == size
        with pytest.raises(NotFound):
            ledger.challenge("srv-9")
        with pytest.raises(InvalidInput):
            ledger.challenge("srv-1", 0)


async def test_a_nonce_issued_for_another_server_is_refused_and_stays_open() -> None:
    policy = ProvenancePolicy(require_challenge=True)
    async with signed_chain(policy=policy) as chain:
        ledger = chain.ledger

        def issued(serial: str, count: int) -> list[bytes]:
            return [bytes.fromhex(n) for n in ledger.challenge(serial, count).nonces]

        for serial in ("srv-1", "srv-2"):
            for org, payload in facts(chain.world, serial, f"ship-{serial}", challenge=issued):
                await chain.register(org, payload)
        nonce = issued("srv-2", 1)[0]
        with pytest.raises(VerificationError) as caught:
            await chain.register(OPERATOR, chain.world.evidence_result("srv-1", nonce=nonce))
        assert caught.value.code == "nonce-other-server"
        await chain.register(OPERATOR, chain.world.evidence_result("srv-2", nonce=nonce))


def test_nonces_are_sealed_with_the_challenge_key() -> None:
    """Every process with the key recognizes a nonce (no state: a restart or another
    process of the deployment keeps it valid); any other key or any changed bit does not."""
    key, other = b"k" * 32, b"o" * 32
    nonce = seal_nonce(key, "srv-1", 2_000_000_000)
    assert len(bytes.fromhex(nonce)) == 32
    opened = open_nonce(key, nonce)
    assert opened is not None
    assert opened[1] == 2_000_000_000
    assert open_nonce(other, nonce) is None
    raw = bytes.fromhex(nonce)
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x80
        assert open_nonce(key, changed.hex()) is None, f"byte {i}"
    assert open_nonce(key, "zz") is None
    assert open_nonce(key, nonce[:-2]) is None
    assert seal_nonce(key, "srv-1", 1) != seal_nonce(key, "srv-1", 1), "fresh randomness"


async def test_a_nonce_issued_by_one_process_is_answered_on_another() -> None:
    policy = ProvenancePolicy(require_challenge=True)
    async with signed_chain(policy=policy) as chain:
        # Another process of the deployment: its own ledger, the same challenge key.
        elsewhere = ProvenanceLedger(
            MemoryIndex(),
            statement=chain.store.get_statement,
            org_of=lambda _: None,
            policy=policy,
            challenge_key=chain.ledger._challenge_key,
        )

        def issued(serial: str, count: int) -> list[bytes]:
            elsewhere.tentative = chain.ledger.tentative  # it knows the same servers
            return [bytes.fromhex(n) for n in elsewhere.challenge(serial, count).nonces]

        for org, payload in facts(chain.world, "srv-1", "ship-1", challenge=issued):
            await chain.register(org, payload)
        nonce = issued("srv-1", 1)[0]
        await chain.register(OPERATOR, chain.world.evidence_result("srv-1", nonce=nonce))


async def test_a_shared_ledger_takes_in_what_another_process_registered_by_its_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every entry another process registers makes a shared ledger rebuild its tentative
    state; the rebuild reads the index's changes since its copy, never the whole index."""
    async with signed_chain() as chain:
        await journey(chain, "srv-1", "ship-1")
        await chain.indexed()
        other = ProvenanceLedger(
            chain.index,
            statement=chain.store.get_statement,
            org_of=chain.service.registry.name_of,
            shared=True,
        )
        await other.start(chain.sequencer.reader)
        try:
            assert list(other._base.dump()) == list(chain.index.dump_rows())
            before = chain.index.applied_size()
            await journey(chain, "srv-2", "ship-2")  # registered by the first process
            await chain.indexed()
            with monkeypatch.context() as patched:
                patched.setattr(chain.index, "dump_rows", _never)
                with pytest.raises(NotFound):
                    other.challenge("srv-3")
                other.challenge("srv-2")  # the other process's server is known here now
            assert other._base_size == chain.index.applied_size() > before
            assert list(other._base.dump()) == list(chain.index.dump_rows())
            assert not other._overlay.writes
        finally:
            await other.close()


async def test_the_tentative_state_folds_its_writes_into_its_copy_of_the_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sealtrail.provenance._ledger.OVERLAY_MAX", 8)
    async with signed_chain() as chain:
        for k in range(4):
            await journey(chain, f"srv-{k}", f"ship-{k}")
            await chain.indexed()
            assert len(chain.ledger._overlay.writes) <= 8 + 64, "bounded by the fold"
        assert chain.ledger._base_size > 0
        # srv-0's first blade, installed long ago: known from the copy, not the writes.
        taken = Assembly(Node(NodeType.SERVER, "srv-9"), (Node(NodeType.BLADE, "srv-0-blade-0"),))
        with pytest.raises(VerificationError) as refused:
            await chain.register(ASSEMBLER, taken)
        assert refused.value.code == "assembly-child-elsewhere"
        await chain.indexed()
        assert audit(chain).ok


def _never() -> Iterable[tuple[str, str, str]]:
    raise AssertionError("the whole index was read")


# -- on PostgreSQL -------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_the_journey_and_the_audit_on_postgresql(postgres_url: str) -> None:
    """The log, the statements and the provenance index all in PostgreSQL: a rack's journey
    to production, the index caught up, the audit clean; an edit behind the log is named."""
    store, index = PostgresStore(postgres_url), PostgresIndex(postgres_url)
    try:
        async with signed_chain(store=store, index=index) as chain:
            for serial in ("srv-1", "srv-2"):
                await chain.journey(serial, f"ship-{serial}", blades=2, per_blade=4)
            await chain.indexed()
            assert json.loads(index.row("compliance", "srv-2") or "{}")["state"] == "production"
            report = audit(chain)
            assert report.ok, report.findings
            assert report.applied == len(chain.registered)
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE idx_rows SET value = convert_to(replace(convert_from(value, 'UTF8'),"
                    " 'production', 'verified'), 'UTF8') WHERE key = convert_to('srv-1', 'UTF8')"
                )
            findings = [str(f) for f in audit(chain).findings]
            assert any(
                f.startswith("row compliance/srv-1: edited behind the log") for f in findings
            )
    finally:
        index.close()
        store.close()
