"""Registration end to end in one process: accepted statements get receipts that verify;
every hostile statement is refused with a stable code and changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable

import cbor2
import pytest
from cryptography import x509

from sealtrail.errors import Error, NotFound, VerificationError
from sealtrail.keys import ES256, ES384, Signer, generate_signer
from sealtrail.scitt import (
    MAX_IAT,
    Header,
    add_receipts,
    decode_key_set,
    decode_sign1,
    sign1,
    sign_statement,
    split_transparent,
    verify_receipt,
    verify_transparent_statement,
)

from ._pki import Issuer, make_ca, make_leaf
from .conftest import ISSUER, SERVICE, Running, org_record

pytestmark = pytest.mark.anyio

JSON = "application/json"


def good(who: Issuer, **kw: object) -> bytes:
    args: dict[str, object] = {
        "issuer": ISSUER,
        "subject": "urn:maker:device:1",
        "content_type": JSON,
        "payload": b'{"serial": "A1"}',
        "x5chain": who.chain,
    }
    args.update(kw)
    return sign_statement(who.leaf_key, **args)  # type: ignore[arg-type]


async def test_a_registered_statement_gets_a_receipt_that_verifies(running: Running) -> None:
    statement = good(running.issuer)
    reg = await running.service.register(statement)
    assert reg.entry_id == hashlib.sha256(statement).hexdigest()
    receipt = running.service.receipt(reg.entry_id)
    keys = decode_key_set(running.service.key_set())
    info = verify_receipt(receipt, leaf_entry=hashlib.sha256(statement).digest(), keys=keys)
    assert info.leaf_index == reg.index
    ts = running.service.transparent_statement(reg.entry_id)
    verified = verify_transparent_statement(ts, service_keys=running.service.key_set())
    assert verified.entry_id == reg.entry_id
    assert verified.signature_check == "x5chain"
    assert split_transparent(ts)[0] == statement


async def test_a_given_issuer_key_binds_a_statement_with_an_x5chain(running: Running) -> None:
    """A relying party pinning the issuer's key refuses a registered statement signed under
    a certificate for another key, whether or not it also gives trust anchors."""
    reg = await running.service.register(good(running.issuer))
    ts = running.service.transparent_statement(reg.entry_id)
    keys = running.service.key_set()
    own = running.issuer.leaf_key.verifier()
    assert verify_transparent_statement(ts, service_keys=keys, issuer_key=own).signature_check
    pinned = generate_signer(ES256).verifier()
    for anchors in ([], [running.issuer.ca]):
        with pytest.raises(VerificationError) as refused:
            verify_transparent_statement(
                ts, service_keys=keys, issuer_key=pinned, trust_anchors=anchors
            )
        assert refused.value.code == "statement-wrong-key"


async def test_registering_twice_gives_the_same_index(running: Running) -> None:
    statement = good(running.issuer)
    first = await running.service.register(statement)
    again = await running.service.register(statement)
    assert first == again


async def test_receipts_refresh_against_newer_checkpoints(running: Running) -> None:
    reg = await running.service.register(good(running.issuer))
    keys = decode_key_set(running.service.key_set())
    leaf = bytes.fromhex(reg.entry_id)
    old = verify_receipt(running.service.receipt(reg.entry_id), leaf_entry=leaf, keys=keys)
    await running.service.register(good(running.issuer, subject="urn:maker:device:2"))
    new = verify_receipt(running.service.receipt(reg.entry_id), leaf_entry=leaf, keys=keys)
    assert new.tree_size > old.tree_size
    assert new.leaf_index == old.leaf_index


def _swap_payload(data: bytes) -> bytes:
    parts = list(cbor2.loads(data).value)
    parts[2] = b'{"serial": "B2"}'
    return cbor2.dumps(cbor2.CBORTag(18, parts))


def _unprotected_alg(data: bytes) -> bytes:
    parts = list(cbor2.loads(data).value)
    parts[1] = {1: -7}
    return cbor2.dumps(cbor2.CBORTag(18, parts))


def _flip_signature(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _deep(_: Issuer) -> bytes:
    return b"\x81" * 40 + b"\x01"


def _huge(_: Issuer) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"x" * (1 << 20), b"s" * 64]))


def _signed_by_leaf(ca_key: Signer, ca: x509.Certificate, *, days_from_now: int = 0) -> bytes:
    """A statement signed by a new leaf of ``ca``, valid for one day from ``days_from_now``."""
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=days_from_now, hours=-1)
    key, leaf = make_leaf(ca_key, ca, not_before=start, not_after=start + dt.timedelta(days=1))
    return good(Issuer(ca_key, ca, key, leaf), subject="urn:maker:x", payload=b"{}")


def _other_ca(_: Issuer) -> bytes:
    return _signed_by_leaf(*make_ca(cn="Rogue CA"))


def _expired(issuer: Issuer) -> bytes:
    return _signed_by_leaf(issuer.ca_key, issuer.ca, days_from_now=-10)


def _not_yet_valid(issuer: Issuer) -> bytes:
    return _signed_by_leaf(issuer.ca_key, issuer.ca, days_from_now=10)


def _unknown_alg(issuer: Issuer) -> bytes:
    parts = list(cbor2.loads(good(issuer)).value)
    protected = dict(cbor2.loads(parts[0]))
    protected[1] = -65535
    parts[0] = cbor2.dumps(protected)
    return cbor2.dumps(cbor2.CBORTag(18, parts))


def _in(seconds: int) -> int:
    return int(time.time()) + seconds


HOSTILE: list[tuple[str, Callable[[Issuer], bytes], str]] = [
    ("not CBOR", lambda i: b"hello, world", "cbor-malformed"),
    ("truncated CBOR", lambda i: good(i)[:-10], "cbor-malformed"),
    (
        "wrong COSE tag",
        lambda i: cbor2.dumps(cbor2.CBORTag(17, cbor2.loads(good(i)).value)),
        "cose-not-sign1",
    ),
    ("unprotected alg", lambda i: _unprotected_alg(good(i)), "cose-unprotected-alg"),
    ("unknown alg", _unknown_alg, "cose-unknown-alg"),
    ("bad signature", lambda i: _flip_signature(good(i)), "cose-bad-signature"),
    ("payload swapped", lambda i: _swap_payload(good(i)), "cose-bad-signature"),
    ("chain not to the org's anchor", _other_ca, "chain-untrusted"),
    ("expired certificate", _expired, "chain-expired"),
    ("not-yet-valid certificate", _not_yet_valid, "chain-not-yet-valid"),
    (
        "content type not allowed",
        lambda i: good(i, content_type="text/plain"),
        "policy-content-type",
    ),
    ("subject not allowed", lambda i: good(i, subject="urn:other:1"), "policy-subject"),
    ("unknown issuer", lambda i: good(i, issuer="https://nobody.example"), "issuer-unknown"),
    ("over the org's size limit", lambda i: good(i, payload=b"x" * 20000), "policy-too-large"),
    ("iat past year 9999", lambda i: good(i, issued_at=MAX_IAT + 1), "statement-bad-claims"),
    ("iat an hour ahead", lambda i: good(i, issued_at=_in(3600)), "statement-iat-future"),
    (
        "iat before the signing certificate",
        lambda i: good(i, issued_at=_in(-2 * 86400)),
        "chain-not-yet-valid",
    ),
    ("deep CBOR nesting", _deep, "cbor-too-complex"),
    ("over the service size limit", _huge, "statement-too-large"),
    (
        "kid of no registered key",
        lambda i: sign_statement(
            generate_signer(ES256),
            issuer=ISSUER,
            subject="urn:maker:1",
            content_type=JSON,
            payload=b"{}",
        ),
        "issuer-key-unknown",
    ),
]


@pytest.mark.parametrize(("name", "make", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_statements_are_refused_and_nothing_is_stored(
    running: Running, name: str, make: Callable[[Issuer], bytes], code: str
) -> None:
    data = make(running.issuer)
    size = running.service.reader.size()
    stored = len(running.store.statements_since(0, limit=1000))
    with pytest.raises(Error) as caught:
        await running.service.register(data)
    assert caught.value.code == code, (name, caught.value.code, caught.value.message)
    assert running.service.reader.size() == size
    assert len(running.store.statements_since(0, limit=1000)) == stored


async def test_a_revoked_certificate_is_refused(running: Running) -> None:
    from sealtrail.scitt import fingerprint

    record = org_record(running.issuer, version=2)
    import json

    doc = json.loads(record)
    doc["revoked_certificates"] = [fingerprint(running.issuer.leaf)]
    await running.service.put_organization(json.dumps(doc).encode())
    with pytest.raises(VerificationError) as caught:
        await running.service.register(good(running.issuer))
    assert caught.value.code == "chain-revoked"


async def test_a_statement_checked_as_its_organization_changes_lands_only_if_the_change_admits_it(
    running: Running,
) -> None:
    """A statement checked against an organization's record while a new version (revoking
    its certificate) is being registered must not land after that version in the log:
    the audit and passports judge each statement by the record in force at its position."""
    import json

    from sealtrail.provenance import audit_log
    from sealtrail.scitt import fingerprint

    doc = json.loads(org_record(running.issuer, version=2))
    doc["revoked_certificates"] = [fingerprint(running.issuer.leaf)]
    change = asyncio.create_task(running.service.put_organization(json.dumps(doc).encode()))
    await asyncio.sleep(0)  # the change is under way: signed and queued, not yet durable
    registering = asyncio.create_task(running.service.register(good(running.issuer)))
    await change
    with pytest.raises(VerificationError) as refused:
        await registering
    assert refused.value.code == "chain-revoked"
    report = audit_log(
        running.service.reader,
        running.store.get_statement,
        None,
        issuer=SERVICE,
        service_keys=decode_key_set(running.service.key_set()),
    )
    assert report.ok, report.findings


async def test_a_policy_change_is_a_log_entry_and_cannot_be_replayed(running: Running) -> None:
    size = running.service.reader.size()
    await running.service.put_organization(
        org_record(running.issuer, version=2, content_types=[JSON])
    )
    assert running.service.reader.size() == size + 1
    with pytest.raises(Error) as caught:
        await running.service.put_organization(org_record(running.issuer, version=2))
    assert caught.value.code == "org-version"


async def test_concurrent_changes_of_one_version_log_only_one(running: Running) -> None:
    import asyncio

    size = running.service.reader.size()
    results = await asyncio.gather(
        running.service.put_organization(org_record(running.issuer, version=2)),
        running.service.put_organization(org_record(running.issuer, version=2)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, Error)]
    assert len(errors) == 1
    assert errors[0].code == "org-version"
    assert running.service.reader.size() == size + 1


async def test_es384_and_hash_envelope_statements_register(running: Running) -> None:
    from ._pki import make_issuer

    other = make_issuer(ES384, cn="Maker 384")
    import json

    doc = json.loads(org_record(running.issuer, version=2))
    doc["anchors"].append(other.anchor_pem)
    await running.service.put_organization(json.dumps(doc).encode())
    statement = good(other, hash_envelope="sha-256", payload=b"x" * 100000)
    reg = await running.service.register(statement)
    ts = running.service.transparent_statement(reg.entry_id)
    verified = verify_transparent_statement(ts, service_keys=running.service.key_set())
    assert verified.statement.payload_hash_alg == -16
    assert verified.statement.payload == hashlib.sha256(b"x" * 100000).digest()


# -- tampering with a transparent statement: every byte matters ---------------------------


async def test_any_changed_byte_of_a_transparent_statement_fails_verification(
    running: Running,
) -> None:
    reg = await running.service.register(good(running.issuer))
    ts = running.service.transparent_statement(reg.entry_id)
    keys = running.service.key_set()
    failures: dict[str, int] = {}
    for pos in range(len(ts)):
        for flip in (0x01, 0x80):
            bad = ts[:pos] + bytes([ts[pos] ^ flip]) + ts[pos + 1 :]
            try:
                verify_transparent_statement(bad, service_keys=keys)
            except VerificationError as exc:
                failures[exc.code] = failures.get(exc.code, 0) + 1
                continue
            except Error as exc:  # pragma: no cover - the message says which
                pytest.fail(f"byte {pos}: {exc.code} is not a VerificationError")
            pytest.fail(f"byte {pos} ^ {flip:#x} was not caught")
    # The reasons name what failed: the statement, its signature, or the receipt.
    assert {"statement-bad-signature", "receipt-bad-signature"} <= set(failures)


async def test_a_receipt_moved_to_another_statement_fails(running: Running) -> None:
    one = await running.service.register(good(running.issuer))
    two = await running.service.register(good(running.issuer, subject="urn:maker:device:9"))
    receipt_one = running.service.receipt(one.entry_id)
    moved = add_receipts(running.service.statement(two.entry_id), [receipt_one])
    with pytest.raises(VerificationError) as caught:
        verify_transparent_statement(moved, service_keys=running.service.key_set())
    assert caught.value.code == "receipt-bad-signature"


async def test_the_log_s_first_entry_has_its_receipt_once_a_second_one_follows(
    running: Running,
) -> None:
    """RFC 9942 section 5.2 has no empty inclusion path (``[ + bstr ]``), and a tree of one
    entry has nothing else: its entry is pending, as one not yet in a checkpoint is."""
    service = running.service
    checkpoint = service.reader.checkpoint()
    assert checkpoint is not None and checkpoint.size == 1
    first = service.reader.entries(0, 1)[0]  # the organization record
    for ask in (service.receipt, service.transparent_statement):
        with pytest.raises(NotFound) as pending:
            ask(first.hex())
        assert pending.value.code == "entry-pending"
    with pytest.raises(NotFound) as pending:
        service.receipt_at(checkpoint, first, 0)
    assert pending.value.code == "entry-pending"
    await service.register(good(running.issuer))
    receipt = service.receipt(first.hex())
    info = verify_receipt(receipt, leaf_entry=first, keys=decode_key_set(service.key_set()))
    assert (info.tree_size, info.leaf_index) == (2, 0)
    assert cbor2.loads(decode_sign1(receipt).unprotected[Header.VDP][-1][0])[2]  # a path


async def test_a_receipt_signed_by_another_key_is_refused(running: Running) -> None:
    reg = await running.service.register(good(running.issuer))
    ts = running.service.transparent_statement(reg.entry_id)
    from sealtrail.scitt import encode_key_set

    other = encode_key_set([generate_signer(ES256).verifier()])
    with pytest.raises(VerificationError) as caught:
        verify_transparent_statement(ts, service_keys=other)
    assert caught.value.code == "receipt-unknown-key"


def test_sign1_headers_are_protected(issuer: Issuer) -> None:
    data = sign1(issuer.leaf_key, protected={Header.CONTENT_TYPE: JSON}, payload=b"{}")
    tag = cbor2.loads(data)
    assert cbor2.loads(tag.value[0])[1] == -7
    assert tag.value[1] == {}


async def test_the_sequenced_watermark_is_persisted_while_registrations_flow(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recovery after a crash starts near the end, not from the first statement ever."""
    from sealtrail.scitt import _service

    monkeypatch.setattr(_service, "WATERMARK_EVERY", 0.0)
    for n in range(4):
        await running.service.register(good(running.issuer, subject=f"urn:maker:device:{n}"))
    # Written with the next group's statements: the org record and three of the four.
    assert running.store.read_sequenced() >= 4


async def test_a_submission_is_stored_before_it_is_announced(running: Running) -> None:
    submission = running.service.submit_checked(running.service.check(good(running.issuer))[0])
    await submission.stored
    stored = running.store.statements_since(0, limit=100)
    assert len(stored) == 2  # the organization record and this statement
    assert await submission.index == 1


async def test_back_pressure_refuses_before_anything_is_stored(running: Running) -> None:
    from sealtrail.errors import RetryLater
    from sealtrail.log import SequencerConfig

    service = running.service
    service.sequencer.config = SequencerConfig(max_batch=1, max_pending=1, max_delay=0.001)
    first = service.submit_checked(service.check(good(running.issuer))[0])
    refused = service.check(good(running.issuer, subject="urn:maker:device:2"))[0]
    with pytest.raises(RetryLater):
        service.submit_checked(refused)
    await first.index
    stored = {record.entry_id for _, record in running.store.statements_since(0, limit=100)}
    assert refused.leaf_entry not in stored
    assert len(stored) == 2  # the organization record and the first statement
