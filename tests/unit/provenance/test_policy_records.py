"""The service's provenance policy as log entries: policy records, versions one by one,
in force from their place in the log on."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sealtrail.provenance._ledger as ledger_module
from sealtrail.errors import Error, StorageError
from sealtrail.keys import ES256, generate_signer
from sealtrail.provenance import (
    KINDS,
    AuditReport,
    Compliance,
    ComplianceState,
    EarStatus,
    PolicyChange,
    ProvenancePolicy,
    audit_log,
    parse_policy_change,
)
from sealtrail.provenance._payloads import MAX_POLICY_AGE, MAX_POLICY_COMPONENTS
from sealtrail.scitt import key_id, parse_statement
from sealtrail.scitt._cose import Claim, Header, sign1
from sealtrail.storage import SQLiteIndex

from ._signed import SERVICE as SERVICE_ISSUER
from ._signed import SignedChain, journey, org_record, signed_chain
from ._world import FIRMWARE, MAKER, World

S = ComplianceState
SERVICE = ""  # a policy record's fact names no organization


def _policy(version: int, age: int = 24 * 3600, **floors: int) -> PolicyChange:
    return PolicyChange(version, age, tuple(sorted(floors.items())))


def _refused(outcome: object, code: str) -> None:
    assert getattr(outcome, "code", None) == code, outcome


# -- the record ---------------------------------------------------------------------------


def test_a_policy_record_reads_back_as_written() -> None:
    change = PolicyChange(3, 3600, (("caliptra-fmc", 2), ("caliptra-rt", 5)))
    assert parse_policy_change(change.to_json()) == change
    assert json.loads(change.to_json()) == {
        "version": 3,
        "max_attestation_age": 3600,
        "min_security_version": {"caliptra-fmc": 2, "caliptra-rt": 5},
    }


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ({"version": 1, "max_attestation_age": 60}, "provenance-missing-field"),
        (
            {"version": 1, "max_attestation_age": 60, "min_security_version": {}, "extra": 1},
            "provenance-unknown-field",
        ),
        ({"version": 0, "max_attestation_age": 60, "min_security_version": {}}, None),
        ({"version": True, "max_attestation_age": 60, "min_security_version": {}}, None),
        ({"version": 1, "max_attestation_age": 0, "min_security_version": {}}, None),
        (
            {"version": 1, "max_attestation_age": MAX_POLICY_AGE + 1, "min_security_version": {}},
            None,
        ),
        ({"version": 1, "max_attestation_age": 60, "min_security_version": []}, None),
        ({"version": 1, "max_attestation_age": 60, "min_security_version": {"rt": -1}}, None),
        ({"version": 1, "max_attestation_age": 60, "min_security_version": {"rt": 1.5}}, None),
        ({"version": 1, "max_attestation_age": 60, "min_security_version": {" rt": 1}}, None),
        (
            {
                "version": 1,
                "max_attestation_age": 60,
                "min_security_version": {f"c{i}": 1 for i in range(MAX_POLICY_COMPONENTS + 1)},
            },
            "provenance-too-large",
        ),
    ],
)
def test_a_malformed_policy_record_is_refused(doc: dict[str, object], code: str | None) -> None:
    with pytest.raises(Error) as caught:
        parse_policy_change(json.dumps(doc).encode())
    assert caught.value.code == (code or "provenance-invalid")


def test_a_policy_record_with_a_duplicate_component_is_refused() -> None:
    raw = b'{"version":1,"max_attestation_age":60,"min_security_version":{"rt":1,"rt":2}}'
    with pytest.raises(Error):
        parse_policy_change(raw)


@given(
    version=st.integers(1, 2**31 - 1),
    age=st.integers(1, MAX_POLICY_AGE),
    floors=st.dictionaries(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16),
        st.integers(0, 2**32 - 1),
        max_size=8,
    ),
)
def test_any_valid_policy_record_round_trips(
    version: int, age: int, floors: dict[str, int]
) -> None:
    change = PolicyChange(version, age, tuple(sorted(floors.items())))
    assert parse_policy_change(change.to_json()) == change


# -- versions -------------------------------------------------------------------------------


def test_policy_versions_go_one_by_one() -> None:
    world = World()
    assert world.state.policy_in_force() == ProvenancePolicy()
    _refused(world.apply(SERVICE, _policy(2)), "policy-version")
    assert world.apply(SERVICE, _policy(1, 3600)).applied
    # The same version again (a second server that started with the same new policy at the
    # same moment, or a copy): refused, and the first one stays in force.
    _refused(world.apply(SERVICE, _policy(1, 60)), "policy-version")
    assert world.state.policy_in_force().max_attestation_age == 3600
    assert world.apply(SERVICE, _policy(2, 7200, **{FIRMWARE: 4})).applied
    in_force = world.state.policy_in_force()
    assert in_force.max_attestation_age == 7200
    assert dict(in_force.min_security_version) == {FIRMWARE: 4}
    row = world.state.rows.get("policy", "provenance")
    assert row is not None and row["version"] == 2 and row["iat"] == world.now


def test_the_challenge_settings_are_never_the_records() -> None:
    world = World(ProvenancePolicy(require_challenge=True, challenge_ttl=42))
    assert world.apply(SERVICE, _policy(1, 3600)).applied
    in_force = world.state.policy_in_force()
    assert (in_force.require_challenge, in_force.challenge_ttl) == (True, 42)


def test_initial_keeps_only_the_challenge_settings() -> None:
    configured = ProvenancePolicy(
        min_security_version={FIRMWARE: 9},
        max_attestation_age=60,
        require_challenge=True,
        challenge_ttl=30,
    )
    assert configured.initial() == ProvenancePolicy(require_challenge=True, challenge_ttl=30)


# -- in force from its place in the log on ---------------------------------------------------


def test_a_shorter_attestation_age_applies_to_moves_after_the_record_only() -> None:
    world = World()
    assert world.release().applied
    world.build_server("srv-1")
    world.to_production("srv-1", "ship-1")
    assert world.comply("srv-1", S.NON_COMPLIANT).applied
    assert world.comply("srv-1", S.UNDER_INVESTIGATION).applied
    assert world.attest("srv-1").applied
    attested = world.state.rows.get("attestation", "srv-1")
    assert attested is not None
    later = attested["iat"] + 7200  # two hours: fresh under the default policy (a day)
    assert world.apply(SERVICE, _policy(1, 3600), iat=later).applied
    _refused(world.comply("srv-1", S.VERIFIED, iat=later + 1), "compliance-stale-attestation")
    # Widened again by a later record: the same move applies.
    assert world.apply(SERVICE, _policy(2, 3 * 3600), iat=later + 2).applied
    assert world.comply("srv-1", S.VERIFIED, iat=later + 3).applied


def test_the_sweep_looks_with_the_policy_in_force() -> None:
    world = World()
    assert world.release().applied
    world.build_server("srv-1")
    world.to_production("srv-1", "ship-1")
    later = world.now + 7200
    assert world.state.stale_servers(["srv-1"], now=later) == []
    assert world.apply(SERVICE, _policy(1, 3600), iat=later).applied
    assert world.state.stale_servers(["srv-1"], now=later) == ["srv-1"]


def test_a_minimum_security_version_applies_to_attestations_after_the_record() -> None:
    world = World()
    assert world.release().applied  # security version 3
    world.build_server("srv-1")
    world.to_production("srv-1", "ship-1")
    assert world.attest("srv-1").applied  # affirming under no minimum
    assert world.apply(SERVICE, _policy(1, **{FIRMWARE: 4})).applied
    # The same evidence now falls below the minimum: an affirming claim is refused, a
    # warning (as the ledger appraises it) applies.
    _refused(world.attest("srv-1"), "attestation-result-mismatch")
    assert world.attest("srv-1", status=EarStatus.WARNING).applied
    row = world.state.rows.get("attestation", "srv-1")
    assert row is not None and "security-version-too-low" in row["reasons"]


def _move(serial: str, a: ComplianceState, b: ComplianceState) -> object:
    return Compliance(serial, a, b, "because")


# -- recorded by the service, applied by the ledger, checked by the audit -------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _audit(chain: SignedChain) -> AuditReport:
    return audit_log(
        chain.sequencer.reader,
        chain.store.get_statement,
        chain.index,
        issuer=SERVICE_ISSUER,
        service_keys=dict(chain.service.keys),
    )


def _records(chain: SignedChain) -> list[bytes]:
    return [r.body for r in chain.store.statements_of_type(PolicyChange.CONTENT_TYPE)]


STRICT = ProvenancePolicy(max_attestation_age=10, min_security_version={FIRMWARE: 2})


@pytest.mark.anyio
async def test_the_configured_policy_is_recorded_once_and_the_audit_agrees() -> None:
    async with signed_chain() as chain:
        await chain.journey()
        assert not await chain.ledger.record_policy(ProvenancePolicy(), chain.service)
        assert _records(chain) == [], "the defaults are in force: nothing to record"
        assert await chain.ledger.record_policy(STRICT, chain.service)
        assert not await chain.ledger.record_policy(STRICT, chain.service)
        assert len(_records(chain)) == 1
        statement = parse_statement(_records(chain)[0])
        assert statement.issuer == SERVICE_ISSUER
        assert json.loads(statement.payload)["version"] == 1
        in_force = chain.ledger.policy_in_force()
        assert in_force.max_attestation_age == 10
        assert dict(in_force.min_security_version) == {FIRMWARE: 2}
        # Back to the defaults: a second record, version 2.
        assert await chain.ledger.record_policy(ProvenancePolicy(), chain.service)
        row = chain.ledger.policy_row()
        assert row is not None and row["version"] == 2
        await chain.indexed()
        report = _audit(chain)
        assert report.ok, report.findings


@pytest.mark.anyio
async def test_registration_applies_a_new_policy_at_once() -> None:
    async with signed_chain() as chain:
        *before, (org, production) = list(journey(chain.world, "srv-1", "ship-1"))
        for who, payload in before:
            await chain.register(who, payload)
        assert await chain.ledger.record_policy(STRICT, chain.service)
        # The attestation is seconds old; signed 30 s ahead (within the allowed clock skew)
        # the move says it was made when the attestation is older than the new 10 s.
        late = chain.sign(org, production, iat=int(time.time()) + 30)
        with pytest.raises(Error) as caught:
            await chain.service.register(late)
        assert caught.value.code == "compliance-stale-attestation"
        await chain.service.register(chain.sign(org, production))  # now: fresh enough
        await chain.indexed()
        assert _audit(chain).ok


@pytest.mark.anyio
async def test_an_organization_cannot_submit_a_policy_record() -> None:
    async with signed_chain() as chain:
        maker = chain.issuers[MAKER]
        widened = org_record(
            MAKER,
            maker,
            version=2,
            policy={
                "content_types": [*sorted(KINDS), PolicyChange.CONTENT_TYPE],
                "subjects": [f"urn:{MAKER}:*"],
                "algorithms": ["ES256"],
                "max_size": 1 << 20,
            },
        )
        await chain.service.put_organization(widened)
        with pytest.raises(Error) as caught:
            await chain.register(MAKER, PolicyChange(1, 10))
        assert caught.value.code == "policy-record-reserved"
        assert _records(chain) == []


@pytest.mark.anyio
async def test_a_policy_record_the_service_did_not_sign_changes_nothing() -> None:
    """An insider who gets a policy record of its own making into the log (past
    registration): the index skips it, the policy stays, and the audit names the entry."""
    async with signed_chain() as chain:
        await chain.journey()
        forged = sign1(
            generate_signer(ES256),
            protected={
                Header.CONTENT_TYPE: PolicyChange.CONTENT_TYPE,
                Header.KID: key_id(chain.service.signer.verifier()),  # claims the service's
                Header.CWT_CLAIMS: {
                    Claim.ISS: SERVICE_ISSUER,
                    Claim.SUB: "urn:sealtrail:provenance-policy",
                    Claim.IAT: int(time.time()),
                },
            },
            payload=PolicyChange(1, 365 * 24 * 3600).to_json(),
        )
        registration = await chain.service.register_checked(parse_statement(forged))
        await chain.indexed()
        assert chain.ledger.policy_row() is None
        assert chain.ledger.policy_in_force() == ProvenancePolicy()
        (entry,) = chain.index.entries(registration.index, registration.index + 1)
        assert (entry.outcome, entry.code) == ("skipped", "policy-record-untrusted")
        report = _audit(chain)
        assert not report.ok
        assert any(f.where == f"entry {registration.index}" for f in report.findings)


@pytest.mark.anyio
async def test_an_edited_policy_row_is_found_by_the_audit(tmp_path: Path) -> None:
    """An insider widens the policy in force by editing the index's row: the audit,
    which replays the log's policy records, names the row."""
    path = tmp_path / "provenance.db"
    async with signed_chain(index=SQLiteIndex(str(path))) as chain:
        await chain.journey()
        assert await chain.ledger.record_policy(STRICT, chain.service)
        await chain.indexed()
        assert _audit(chain).ok
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            (value,) = db.execute(
                "SELECT value FROM idx_rows WHERE tbl = 'policy' AND key = 'provenance'"
            ).fetchone()
            widened = json.loads(value) | {"max_attestation_age": MAX_POLICY_AGE}
            db.execute(
                "UPDATE idx_rows SET value = ? WHERE tbl = 'policy' AND key = 'provenance'",
                (json.dumps(widened, sort_keys=True, separators=(",", ":")),),
            )
        report = _audit(chain)
        assert not report.ok
        assert any("policy" in f.where for f in report.findings), report.findings


@pytest.mark.anyio
async def test_a_record_that_failed_is_not_in_force_for_registration() -> None:
    """The log's policy is 10 s; a restart with a day fails to append its record. Until the
    record is in the log, registration judges by the log's policy, as the index does: a move
    the log's policy refuses is refused, one it allows is applied alike by both."""
    async with signed_chain() as chain:
        *before, (org, verified), _ = list(journey(chain.world, "srv-1", "ship-1"))
        for who, payload in before:
            await chain.register(who, payload)
        assert await chain.ledger.record_policy(STRICT, chain.service)
        commit = chain.store.commit
        failed: list[bool] = []

        def fails_once(*args: Any, **kwargs: Any) -> Any:
            if not failed:
                failed.append(True)
                raise StorageError("a commit that fails once")
            return commit(*args, **kwargs)

        chain.store.commit = fails_once  # type: ignore[method-assign]
        with pytest.raises(Error):
            await chain.ledger.record_policy(ProvenancePolicy(), chain.service)
        stale = chain.sign(org, verified, iat=int(time.time()) + 30)
        with pytest.raises(Error) as caught:
            await chain.service.register(stale)
        assert caught.value.code == "compliance-stale-attestation"
        registration = await chain.service.register(chain.sign(org, verified))
        await chain.indexed()
        (entry,) = chain.index.entries(registration.index, registration.index + 1)
        assert entry.outcome == "applied"
        assert not chain.ledger._queue, "nothing left behind in the ledger's queue"
        assert _audit(chain).ok


@pytest.mark.anyio
async def test_an_index_behind_is_not_taken_for_another_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is in the log, but the index is away longer than a wait for it: the
    recorder says so, and does not blame another process's record."""
    monkeypatch.setattr(ledger_module, "INDEX_WAIT", 0.3)
    async with signed_chain() as chain:
        apply = chain.index.apply
        until = time.monotonic() + 1.0

        def away(batch: Any, **kwargs: Any) -> None:
            if any(entry.kind == "policy" for entry, _ in batch) and time.monotonic() < until:
                raise StorageError("the index is away for a moment")
            apply(batch, **kwargs)

        chain.index.apply = away  # type: ignore[method-assign]
        with caplog.at_level("WARNING", logger="sealtrail.provenance"):
            assert await chain.ledger.record_policy(STRICT, chain.service)
        assert "another process" not in caplog.text
        assert "the index has not applied it yet" in caplog.text
        await chain.indexed()
        row = chain.ledger.policy_row()
        assert row is not None and row["version"] == 1
