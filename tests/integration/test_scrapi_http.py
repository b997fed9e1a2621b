"""The SCITT API (SCRAPI) over HTTP: registration, receipts, keys, administration, and
every hostile request refused with problem details and nothing stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cbor2
import httpx
import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

import sealtrail.service._scrapi as scrapi
from sealtrail.errors import VerificationError
from sealtrail.keys import ES256, Ed25519Signer, Signer, generate_signer
from sealtrail.log import CheckpointSigner
from sealtrail.scitt import (
    MAX_STATEMENT_SIZE,
    ORG_RECORD_TYPE,
    ReceiptInfo,
    TransparencyService,
    add_receipts,
    decode_key_set,
    fingerprint,
    key_id,
    sign1,
    sign_statement,
    split_transparent,
    verify_receipt,
    verify_transparent_statement,
)
from sealtrail.service import ServiceStore, service_app
from sealtrail.service.app import STORE_RETRY_AFTER, STORE_UNAVAILABLE
from sealtrail.storage import MemoryStore, SQLiteStore, StatementRecord
from tests._server import serve_in_thread
from tests.unit.scitt._pki import Issuer, make_ca, make_leaf
from tests.unit.scitt.conftest import ISSUER as STATEMENT_ISSUER
from tests.unit.scitt.conftest import SERVICE as SERVICE_ISSUER

from .conftest import (
    ADMIN_TOKEN,
    COSE,
    JSON,
    ORG,
    ORIGIN,
    Maker,
    Service,
    assert_problem,
    running,
    service_application,
    snapshot,
    statement,
)

#: Longest a test waits for a registration to be sequenced after a 303.
POLL_LIMIT = 15.0


def _pem(signer: Signer) -> bytes:
    return signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _verify(receipt: bytes, data: bytes, key_set: bytes) -> ReceiptInfo:
    return verify_receipt(
        receipt, leaf_entry=hashlib.sha256(data).digest(), keys=decode_key_set(key_set)
    )


# -- registration: 201 with a receipt that verifies offline --------------------------------


def test_a_registration_answers_201_with_a_receipt_that_verifies_offline(
    service: Service,
) -> None:
    data = statement(service.maker.issuer)
    size = service.log_size()
    r = service.post(data)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == COSE
    assert r.headers["location"] == f"/entries/{hashlib.sha256(data).hexdigest()}"
    assert r.headers["cache-control"] == "no-store"
    info = _verify(r.content, data, service.key_set())
    assert info.leaf_index == size
    assert info.tree_size == size + 1 == service.log_size()
    assert info.issuer == SERVICE_ISSUER
    assert info.subject == ORIGIN
    assert info.kid == key_id(service.service_signer.verifier())


def test_the_receipt_and_statement_verify_with_an_independent_cose_library(
    service: Service,
) -> None:
    receipts = pytest.importorskip("scitt_cose.receipt")
    cose_sign1 = pytest.importorskip("scitt_cose.cose_sign1")
    data = statement(service.maker.issuer)
    r = service.post(data)
    assert r.status_code == 201, r.text
    result = receipts.verify_receipt(
        r.content,
        leaf_entry_hex=hashlib.sha256(data).hexdigest(),
        log_public_key_pem=_pem(service.service_signer),
    )
    assert result.ok, result.errors
    other = receipts.verify_receipt(
        r.content,
        leaf_entry_hex=hashlib.sha256(data + b"x").hexdigest(),
        log_public_key_pem=_pem(service.service_signer),
    )
    assert not other.ok
    cose_sign1.verify_sign1(data, public_key_pem=_pem(service.maker.issuer.leaf_key))


def test_registering_the_same_statement_again_answers_the_same_entry(service: Service) -> None:
    data = statement(service.maker.issuer)
    first = service.post(data)
    size = service.log_size()
    again = service.post(data)
    assert again.status_code == 201, again.text
    assert again.headers["location"] == first.headers["location"]
    keys = service.key_set()
    assert (
        _verify(again.content, data, keys).leaf_index
        == _verify(first.content, data, keys).leaf_index
    )
    assert service.log_size() == size


def test_media_type_parameters_and_case_are_accepted(service: Service) -> None:
    r = service.post(statement(service.maker.issuer), content_type="Application/COSE; cose-type=x")
    assert r.status_code == 201, r.text


def test_receipts_are_refreshed_against_the_latest_checkpoint(service: Service) -> None:
    data = statement(service.maker.issuer)
    first = _verify(service.post(data).content, data, service.key_set())
    assert service.post(statement(service.maker.issuer, subject="urn:maker:2")).status_code == 201
    r = service.client.get(f"/entries/{hashlib.sha256(data).hexdigest()}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == COSE
    assert r.headers["cache-control"] == "no-store"
    later = _verify(r.content, data, service.key_set())
    assert later.leaf_index == first.leaf_index
    assert later.tree_size == first.tree_size + 1


def test_registration_over_real_sockets(maker: Maker) -> None:
    store = MemoryStore()
    app = service_application(
        store,
        checkpoint_signer=CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()),
        service_signer=generate_signer(ES256),
    )
    data = statement(maker.issuer)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        put = client.put(f"/admin/organizations/{ORG}", content=maker.record(), headers=auth)
        assert put.status_code == 201, put.text
        r = client.post("/entries", content=data, headers={"Content-Type": COSE})
        assert r.status_code == 201, r.text
        _verify(r.content, data, client.get("/.well-known/scitt-keys").content)
        ts = client.get(f"{r.headers['location']}/transparent-statement")
        keys = client.get("/.well-known/scitt-keys").content
        assert verify_transparent_statement(ts.content, service_keys=keys).entry_id == (
            hashlib.sha256(data).hexdigest()
        )


# -- registration: 303 while it takes longer, then 302 and 200 -----------------------------


def _poll(client: TestClient, location: str) -> tuple[list[int], httpx2.Response]:
    """GET ``location`` until it stops answering 302; the statuses seen and the last answer."""
    seen: list[int] = []
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        r = client.get(location)
        seen.append(r.status_code)
        if r.status_code != 302:
            return seen, r
        assert r.headers["location"] == location
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["cache-control"] == "no-store"
        assert time.monotonic() < deadline, f"still pending after {POLL_LIMIT} s"
        time.sleep(0.02)


@pytest.fixture
def slow_service(maker: Maker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """POST /entries answers at once, and a batch waits a second to be sequenced."""
    monkeypatch.setattr(scrapi, "REGISTER_WAIT", 0.0)
    store = MemoryStore()
    with running(store, maker, max_delay=1.0) as svc:
        yield svc


def test_a_slow_registration_answers_303_then_302_until_the_receipt_is_ready(
    slow_service: Service,
) -> None:
    data = statement(slow_service.maker.issuer)
    entry = hashlib.sha256(data).hexdigest()
    r = slow_service.post(data)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/entries/{entry}"
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["cache-control"] == "no-store"
    # A 303 is sent only once the statement is stored: it can be read at once.
    assert slow_service.client.get(f"/entries/{entry}/statement").content == data
    seen, final = _poll(slow_service.client, f"/entries/{entry}")
    assert seen[0] == 302
    assert final.status_code == 200, final.text
    assert final.headers["content-type"] == COSE
    _verify(final.content, data, slow_service.key_set())


class _HeldStatementStore(MemoryStore):
    """A store whose statement writes wait while ``held`` (a busy disk), for at most
    :data:`HOLD_LIMIT` seconds."""

    HOLD_LIMIT = 3.0

    def __init__(self) -> None:
        super().__init__()
        self._released = threading.Event()
        self._released.set()

    @contextmanager
    def held(self) -> Iterator[None]:
        self._released.clear()
        try:
            yield
        finally:
            self._released.set()

    def put_statements(self, records: Sequence[StatementRecord]) -> list[int]:
        self._released.wait(self.HOLD_LIMIT)
        return super().put_statements(records)


def test_the_location_of_a_303_is_never_unknown(
    maker: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scrapi, "REGISTER_WAIT", 0.0)
    store = _HeldStatementStore()
    with running(store, maker) as svc:
        data = statement(maker.issuer)
        with store.held():
            r = svc.post(data)
            assert r.status_code == 303, r.text
            pending = svc.client.get(r.headers["location"])
        # Let the registration finish, then the pending answer is checked.
        deadline = time.monotonic() + POLL_LIMIT
        while svc.client.get(r.headers["location"]).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert pending.status_code in (302, 200), pending.text


# -- reading entries -----------------------------------------------------------------------


def test_the_statement_route_serves_the_exact_bytes_and_the_transparent_one_verifies(
    service: Service,
) -> None:
    data = statement(service.maker.issuer, payload=b'{"serial": "exact bytes"}')
    location = service.post(data).headers["location"]
    r = service.client.get(f"{location}/statement")
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"] == COSE
    assert "immutable" in r.headers["cache-control"]
    r = service.client.get(f"{location}/transparent-statement")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == COSE
    assert r.headers["cache-control"] == "no-store"
    verified = verify_transparent_statement(r.content, service_keys=service.key_set())
    assert verified.entry_id == hashlib.sha256(data).hexdigest()
    assert verified.signature_check == "x5chain"
    assert split_transparent(r.content)[0] == data


@pytest.mark.parametrize("suffix", ["", "/statement", "/transparent-statement"])
@pytest.mark.parametrize(
    "entry",
    [
        "00" * 32,  # well-formed, never registered
        "ab",
        "zz" * 32,
        "0" * 63,
        "00" * 33,
        "%20" + "00" * 31,
        "statement",
    ],
)
def test_unknown_or_malformed_entry_ids_are_404_problems(
    service: Service, entry: str, suffix: str
) -> None:
    r = service.client.get(f"/entries/{entry}{suffix}")
    assert_problem(r, 404, "entry-unknown")


# -- configuration and keys ----------------------------------------------------------------


def test_the_transparency_configuration_is_served_as_json_and_as_cbor(service: Service) -> None:
    r = service.client.get("/.well-known/transparency-configuration")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    config = r.json()
    assert config["issuer"] == SERVICE_ISSUER
    assert config["log_origin"] == ORIGIN
    assert config["registration_endpoint"] == "/entries"
    assert config["jwks_uri"] == "/.well-known/scitt-keys"
    assert config["verifiable_data_structure"] == "RFC9162_SHA256"
    assert config["max_statement_size"] == MAX_STATEMENT_SIZE
    assert config["supported_signature_algorithms"] == ["ES256", "ES384", "Ed25519"]
    r = service.client.get(
        "/.well-known/transparency-configuration", headers={"Accept": "application/cbor"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/cbor"
    assert cbor2.loads(r.content) == config


def test_the_key_set_holds_the_key_of_the_receipts(service: Service) -> None:
    data = statement(service.maker.issuer)
    receipt = service.post(data).content
    r = service.client.get("/.well-known/scitt-keys")
    assert r.status_code == 200, r.text
    # SCRAPI section 2.1: "a COSE Key Set [...] serialized as application/cbor".
    assert r.headers["content-type"] == "application/cbor"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers["vary"] == "Accept"
    keys = decode_key_set(r.content)
    info = _verify(receipt, data, r.content)
    assert list(keys) == [info.kid]
    # RFC 9052's registered type, for a client that asks for it by name (Sealtrail's own).
    for accept in ("application/cose-key-set", "application/cbor;q=0.5, application/cose-key-set"):
        named = service.client.get("/.well-known/scitt-keys", headers={"Accept": accept})
        assert named.headers["content-type"] == "application/cose-key-set"
        assert named.content == r.content
    for accept in ("application/cbor", "*/*", "application/cose", "application/cose-key-set;q=x"):
        other = service.client.get("/.well-known/scitt-keys", headers={"Accept": accept})
        assert other.headers["content-type"] == "application/cbor", accept


def test_key_rotation_keeps_old_receipts_verifiable(maker: Maker, sqlite_path: Path) -> None:
    ckpt = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    old_key, new_key = generate_signer(ES256), generate_signer(ES256)
    data = statement(maker.issuer)
    store = SQLiteStore(sqlite_path)
    try:
        with running(store, maker, checkpoint_signer=ckpt, service_signer=old_key) as before:
            old_receipt = before.post(data).content
            old_keys = before.key_set()
    finally:
        store.close()
    store = SQLiteStore(sqlite_path)  # a restart with a new service key
    try:
        with running(
            store,
            maker,
            checkpoint_signer=ckpt,
            service_signer=new_key,
            retired=[old_key.verifier()],
            onboard=False,
        ) as after:
            new_keys = after.key_set()
            assert list(decode_key_set(new_keys)) == [
                key_id(new_key.verifier()),
                key_id(old_key.verifier()),
            ]
            # The old receipt, kept by its holder, verifies against the new key set...
            assert _verify(old_receipt, data, new_keys).kid == key_id(old_key.verifier())
            # ...and a fresh one is signed with the new key, for the same entry.
            location = f"/entries/{hashlib.sha256(data).hexdigest()}"
            fresh = after.client.get(location)
            assert fresh.status_code == 200, fresh.text
            info = _verify(fresh.content, data, new_keys)
            assert info.kid == key_id(new_key.verifier())
            assert info.leaf_index == _verify(old_receipt, data, old_keys).leaf_index
            with pytest.raises(VerificationError) as caught:
                _verify(fresh.content, data, old_keys)
            assert caught.value.code == "receipt-unknown-key"
            # The organization, onboarded under the old key, still registers statements.
            r = after.post(statement(maker.issuer, subject="urn:maker:after-rotation"))
            assert r.status_code == 201, r.text
            transparent = add_receipts(data, [old_receipt])
            verify_transparent_statement(transparent, service_keys=new_keys)
    finally:
        store.close()


# -- administration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("", "unauthorized"),
        (f"Bearer {ADMIN_TOKEN}x", "token-unknown"),
        ("Bearer ", "auth-malformed"),
        (f"Basic {ADMIN_TOKEN}", "auth-malformed"),
        (f"Token {ADMIN_TOKEN}", "auth-malformed"),
        (ADMIN_TOKEN, "auth-malformed"),
    ],
    ids=["none", "wrong token", "empty token", "basic", "other scheme", "no scheme"],
)
def test_administration_without_the_token_is_401_and_stores_nothing(
    service: Service, authorization: str, code: str
) -> None:
    before, size = snapshot(service.store), service.log_size()
    r = service.put_org(service.maker.record(version=2), authorization=authorization)
    body = assert_problem(r, 401, code)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert ADMIN_TOKEN not in body["detail"]
    assert snapshot(service.store) == before
    assert service.log_size() == size


def test_administration_is_refused_when_no_token_is_configured(maker: Maker) -> None:
    app = service_app(
        MemoryStore(),
        checkpoint_signer=CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()),
        service_signer=generate_signer(ES256),
        issuer=SERVICE_ISSUER,
    )
    with TestClient(app) as client:
        r = client.put(
            f"/admin/organizations/{ORG}",
            content=maker.record(),
        )
        body = assert_problem(r, 401, "unauthorized")
        assert "disabled" in body["detail"]
        assert client.get("/log/v1/info").json()["size"] == 0


#: (name, organization record from the maker, status, code)
ORG_REFUSALS: list[tuple[str, Callable[[Maker], bytes], int, str]] = [
    (
        "name not the path's",
        lambda m: m.record(version=2, org="other"),
        400,
        "org-record-invalid",
    ),
    ("version replayed", lambda m: m.record(version=1), 400, "org-version"),
    ("version skipped", lambda m: m.record(version=3), 400, "org-version"),
    ("not JSON", lambda m: b"\xff{", 400, "org-record-invalid"),
    ("not an object", lambda m: b"[]", 400, "org-record-invalid"),
    ("bad anchor", lambda m: m.record(version=2, anchors=["nope"]), 400, "bad-certificate"),
    ("too large", lambda m: b" " * (256 * 1024 + 1), 413, "body-too-large"),
]


@pytest.mark.parametrize(
    ("name", "make", "status", "code"), ORG_REFUSALS, ids=[o[0] for o in ORG_REFUSALS]
)
def test_bad_organization_records_are_refused_and_store_nothing(
    service: Service, name: str, make: Callable[[Maker], bytes], status: int, code: str
) -> None:
    before, size = snapshot(service.store), service.log_size()
    r = service.put_org(make(service.maker))
    assert_problem(r, status, code)
    assert snapshot(service.store) == before, name
    assert service.log_size() == size


def test_an_organization_change_is_a_log_entry_with_a_receipt(service: Service) -> None:
    size = service.log_size()
    r = service.put_org(service.maker.record(version=2))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["index"] == size
    assert service.log_size() == size + 1
    ts = service.client.get(f"/entries/{body['entry_id']}/transparent-statement")
    assert ts.status_code == 200, ts.text
    verified = verify_transparent_statement(
        ts.content,
        service_keys=service.key_set(),
        issuer_key=service.service_signer.verifier(),
    )
    assert verified.signature_check == "issuer-key"
    assert verified.statement.content_type == ORG_RECORD_TYPE
    assert verified.statement.issuer == SERVICE_ISSUER
    assert json.loads(verified.statement.payload)["version"] == 2


def test_a_policy_change_applies_to_the_next_registration(service: Service) -> None:
    record = json.loads(service.maker.record(version=2))
    record["policy"]["content_types"] = ["application/vnd.sealtrail.test+cbor"]
    assert service.put_org(json.dumps(record).encode()).status_code == 201
    r = service.post(statement(service.maker.issuer))
    assert_problem(r, 400, "policy-content-type")


def test_revoking_a_certificate_refuses_its_new_statements_and_keeps_old_entries(
    service: Service,
) -> None:
    data = statement(service.maker.issuer)
    location = service.post(data).headers["location"]
    record = json.loads(service.maker.record(version=2))
    record["revoked_certificates"].append(fingerprint(service.maker.issuer.leaf))
    assert service.put_org(json.dumps(record).encode()).status_code == 201
    before, size = snapshot(service.store), service.log_size()
    r = service.post(statement(service.maker.issuer, subject="urn:maker:after-revocation"))
    assert_problem(r, 400, "chain-revoked")
    assert snapshot(service.store) == before
    assert service.log_size() == size
    old = service.client.get(location)
    assert old.status_code == 200
    _verify(old.content, data, service.key_set())


# -- hostile statements: problem details with a stable code, and nothing stored ------------


def _parts(data: bytes) -> list[object]:
    return list(cbor2.loads(data).value)


def _encode(parts: list[object], tag: int = 18) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, parts), canonical=True)


def _swap_payload(m: Maker) -> bytes:
    parts = _parts(statement(m.issuer))
    parts[2] = b'{"serial": "B2"}'
    return _encode(parts)


def _unprotected(m: Maker, header: dict[int, object]) -> bytes:
    parts = _parts(statement(m.issuer))
    parts[1] = header
    return _encode(parts)


def _detached(m: Maker) -> bytes:
    parts = _parts(statement(m.issuer))
    parts[2] = None
    return _encode(parts)


def _flip_signature(m: Maker) -> bytes:
    data = statement(m.issuer)
    return data[:-1] + bytes([data[-1] ^ 1])


def _unknown_alg(m: Maker) -> bytes:
    parts = _parts(statement(m.issuer))
    assert isinstance(parts[0], bytes)
    protected = dict(cbor2.loads(parts[0]))
    protected[1] = -65535
    parts[0] = cbor2.dumps(protected, canonical=True)
    return _encode(parts)


def _by_leaf(ca_key: Signer, ca: x509.Certificate, *, days_from_now: int = 0) -> bytes:
    """A statement signed by a new leaf of ``ca``, valid for one day from ``days_from_now``."""
    begin = dt.datetime.now(dt.UTC) + dt.timedelta(days=days_from_now, hours=-1)
    key, leaf = make_leaf(ca_key, ca, not_before=begin, not_after=begin + dt.timedelta(days=1))
    return statement(Issuer(ca_key, ca, key, leaf), subject="urn:maker:x", payload=b"{}")


def _kid_signed(signer: Signer) -> bytes:
    return sign_statement(
        signer, issuer=STATEMENT_ISSUER, subject="urn:maker:1", content_type=JSON, payload=b"{}"
    )


def _transparent(m: Maker) -> bytes:
    """A transparent statement: its receipts are not part of the statement to register."""
    return add_receipts(statement(m.issuer), [b"\xd2\x84\x40\xa0\xf6\x40"])


#: (name, request body from the maker, Content-Type, status, code)
HOSTILE: list[tuple[str, Callable[[Maker], bytes], str | None, int, str]] = [
    ("empty body", lambda m: b"", COSE, 400, "cbor-malformed"),
    ("not CBOR", lambda m: b"hello, world", COSE, 400, "cbor-malformed"),
    ("truncated CBOR", lambda m: statement(m.issuer)[:-10], COSE, 400, "cbor-malformed"),
    ("trailing bytes", lambda m: statement(m.issuer) + b"\x00", COSE, 400, "cbor-malformed"),
    (
        "indefinite length",
        lambda m: b"\xd2\x9f" + statement(m.issuer)[2:] + b"\xff",
        COSE,
        400,
        "cbor-not-deterministic",
    ),
    (
        "duplicate map key",
        lambda m: b"\xd2\x84\x40\xa2\x01\x01\x01\x01\xf6\x40",
        COSE,
        400,
        "cbor-duplicate-key",
    ),
    (
        "wrong COSE tag",
        lambda m: _encode(_parts(statement(m.issuer)), tag=17),
        COSE,
        400,
        "cose-not-sign1",
    ),
    (
        "alg in the unprotected header",
        lambda m: _unprotected(m, {1: -7}),
        COSE,
        400,
        "cose-unprotected-alg",
    ),
    ("unknown alg", _unknown_alg, COSE, 400, "cose-unknown-alg"),
    ("bad signature", _flip_signature, COSE, 400, "cose-bad-signature"),
    ("payload swapped", _swap_payload, COSE, 400, "cose-bad-signature"),
    (
        "unprotected header not empty",
        lambda m: _unprotected(m, {4: b"kid"}),
        COSE,
        400,
        "statement-unprotected-header",
    ),
    ("receipt left in", _transparent, COSE, 400, "statement-unprotected-header"),
    ("detached payload", _detached, COSE, 400, "statement-detached-payload"),
    (
        "chain not to the org's anchor",
        lambda m: _by_leaf(*make_ca(cn="Rogue CA")),
        COSE,
        400,
        "chain-untrusted",
    ),
    (
        "expired certificate",
        lambda m: _by_leaf(m.issuer.ca_key, m.issuer.ca, days_from_now=-10),
        COSE,
        400,
        "chain-expired",
    ),
    (
        "not-yet-valid certificate",
        lambda m: _by_leaf(m.issuer.ca_key, m.issuer.ca, days_from_now=10),
        COSE,
        400,
        "chain-not-yet-valid",
    ),
    ("revoked issuer certificate", lambda m: statement(m.revoked), COSE, 400, "chain-revoked"),
    ("retired issuer key", lambda m: _kid_signed(m.retired_key), COSE, 400, "issuer-key-retired"),
    (
        "unregistered issuer key",
        lambda m: _kid_signed(generate_signer(ES256)),
        COSE,
        400,
        "issuer-key-unknown",
    ),
    (
        "unknown issuer",
        lambda m: statement(m.issuer, issuer="https://nobody.example"),
        COSE,
        400,
        "issuer-unknown",
    ),
    (
        "content type not allowed",
        lambda m: statement(m.issuer, content_type="text/plain"),
        COSE,
        400,
        "policy-content-type",
    ),
    (
        "subject not allowed",
        lambda m: statement(m.issuer, subject="urn:other:1"),
        COSE,
        400,
        "policy-subject",
    ),
    (
        "over the org's size limit",
        lambda m: statement(m.issuer, payload=b"x" * 20000),
        COSE,
        400,
        "policy-too-large",
    ),
    (
        "over the service's size limit",
        lambda m: b"\x00" * (MAX_STATEMENT_SIZE + 1),
        COSE,
        413,
        "body-too-large",
    ),
    ("deep CBOR nesting", lambda m: b"\x81" * 40 + b"\x01", COSE, 400, "cbor-too-complex"),
    (
        "deep nesting inside the protected header",
        lambda m: _encode([b"\x81" * 20 + b"\x01", {}, b"{}", b"s" * 64]),
        COSE,
        400,
        "cbor-too-complex",
    ),
    (
        "huge CBOR item count",
        lambda m: b"\x99\x13\x88" + b"\x00" * 5000,
        COSE,
        400,
        "cbor-too-complex",
    ),
    (
        "array claiming 2^63 items",
        lambda m: b"\x9b" + (1 << 63).to_bytes(8, "big"),
        COSE,
        400,
        "cbor-malformed",
    ),
    (
        "byte string claiming 2^62 bytes",
        lambda m: b"\x5b" + (1 << 62).to_bytes(8, "big") + b"x",
        COSE,
        400,
        "cbor-malformed",
    ),
    ("text/plain", lambda m: statement(m.issuer), "text/plain", 415, "unsupported-media-type"),
    ("application/json", lambda m: statement(m.issuer), JSON, 415, "unsupported-media-type"),
    (
        "cbor, not cose",
        lambda m: statement(m.issuer),
        "application/cbor",
        415,
        "unsupported-media-type",
    ),
    ("no media type", lambda m: statement(m.issuer), None, 415, "unsupported-media-type"),
    (
        "cose as a parameter",
        lambda m: statement(m.issuer),
        "text/plain; type=application/cose",
        415,
        "unsupported-media-type",
    ),
]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceStore]:
    store: ServiceStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "log.db")
    )
    yield store
    store.close()


@pytest.mark.parametrize(
    ("name", "make", "content_type", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_requests_are_refused_and_nothing_is_stored(
    store: ServiceStore,
    maker: Maker,
    name: str,
    make: Callable[[Maker], bytes],
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    data = make(maker)
    with running(store, maker) as svc:
        before, size = snapshot(store), svc.log_size()
        r = svc.post(data, content_type=content_type)
        body = assert_problem(r, status, code)
        assert set(body) == {"type", "title", "status", "detail", "code"}
        assert svc.log_size() == size
        assert snapshot(store) == before, name
        # The service is unharmed: a good statement still registers.
        assert svc.post(statement(maker.issuer)).status_code == 201


def _chunks(total: int, size: int = 65536) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b"\x00" * min(size, total - sent)
        sent += len(chunk)
        yield chunk


def test_a_declared_length_over_the_limit_is_refused_before_reading(service: Service) -> None:
    before = snapshot(service.store)
    r = service.client.post(
        "/entries",
        content=b"\xa0",
        headers={"Content-Type": COSE, "Content-Length": str(MAX_STATEMENT_SIZE + 1)},
    )
    assert_problem(r, 413, "body-too-large")
    assert snapshot(service.store) == before


def test_a_chunked_body_growing_past_the_limit_is_413(service: Service) -> None:
    before, size = snapshot(service.store), service.log_size()
    r = service.client.post(
        "/entries", content=_chunks(2 * MAX_STATEMENT_SIZE), headers={"Content-Type": COSE}
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "body-too-large")
    assert snapshot(service.store) == before
    assert service.log_size() == size


def test_a_chunked_body_growing_past_the_limit_is_413_over_real_sockets(
    maker: Maker, sqlite_path: Path
) -> None:
    store = SQLiteStore(sqlite_path)
    app = service_application(
        store,
        checkpoint_signer=CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()),
        service_signer=generate_signer(ES256),
    )
    try:
        with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=20) as client:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            put = client.put(f"/admin/organizations/{ORG}", content=maker.record(), headers=auth)
            assert put.status_code == 201, put.text
            before = snapshot(store)
            r = client.post(
                "/entries",
                content=_chunks(3 * MAX_STATEMENT_SIZE),
                headers={"Content-Type": COSE},
            )
            assert_problem(r, 413, "body-too-large")
            assert snapshot(store) == before
            # The connection is still usable, and the log unchanged.
            assert client.get("/log/v1/info").json()["size"] == 1
    finally:
        store.close()


# -- problem details -----------------------------------------------------------------------

MARKER = "Marker-7c1e-do-not-echo"


@pytest.mark.parametrize(
    "make",
    [
        lambda m: MARKER.encode(),
        lambda m: cbor2.dumps(MARKER),
        lambda m: statement(m.issuer, payload=MARKER.encode() * 2000),
        lambda m: _flip_signature(m)[:-1] + MARKER.encode(),
        lambda m: statement(m.issuer, subject=f"urn:other:{MARKER}"),
        lambda m: statement(m.issuer, issuer=f"https://{MARKER}.example"),
        lambda m: _encode([b"", {}, MARKER.encode(), b""]),
    ],
    ids=["text", "cbor text", "payload", "after the signature", "subject", "issuer", "raw parts"],
)
def test_problem_details_never_echo_the_request_body(
    service: Service, make: Callable[[Maker], bytes]
) -> None:
    r = service.post(make(service.maker))
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert MARKER not in r.text
    assert MARKER.lower() not in r.text.lower()


def _resigned(m: Maker, changes: dict[int, object], *, drop: tuple[int, ...] = ()) -> bytes:
    """The maker's statement with protected header ``changes``, validly signed again."""
    parts = _parts(statement(m.issuer))
    assert isinstance(parts[0], bytes)
    protected = {k: v for k, v in cbor2.loads(parts[0]).items() if k != 1 and k not in drop}
    protected.update(changes)
    return sign1(m.issuer.leaf_key, protected=protected, payload=b'{"serial": "A1"}')


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda m: _resigned(m, {1: MARKER}),
            id="alg",
        ),
        pytest.param(
            lambda m: _resigned(m, {2: [MARKER]}),
            id="crit",
        ),
        pytest.param(
            lambda m: statement(m.issuer, content_type=f"text/{MARKER}"),
            id="content type",
        ),
        pytest.param(
            lambda m: _resigned(m, {258: MARKER, 259: JSON}, drop=(3,)),
            id="payload hash alg",
        ),
    ],
)
def test_problem_details_never_echo_header_values(
    service: Service, make: Callable[[Maker], bytes]
) -> None:
    r = service.post(make(service.maker))
    assert 400 <= r.status_code < 500, r.text
    assert MARKER not in r.text


def test_an_admin_problem_never_echoes_the_record(service: Service) -> None:
    for record in (
        json.dumps({"org": ORG, "version": MARKER}).encode(),
        json.dumps({"org": MARKER, "version": 1}).encode(),
        MARKER.encode(),
    ):
        r = service.put_org(record)
        assert 400 <= r.status_code < 500, r.text
        assert MARKER not in r.text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not-found"),
        ("GET", "/entries", 405, "method-not-allowed"),
        ("DELETE", "/entries/" + "00" * 32, 405, "method-not-allowed"),
        ("GET", "/admin/organizations/maker", 405, "method-not-allowed"),
        ("POST", "/.well-known/scitt-keys", 405, "method-not-allowed"),
    ],
)
def test_routing_errors_are_problem_details_too(
    service: Service, method: str, path: str, status: int, code: str
) -> None:
    r = service.client.request(method, path)
    assert_problem(r, status, code)
    if status == 405:
        assert r.headers["allow"]


def test_a_registered_statement_always_has_a_verifiable_transparent_statement(
    service: Service,
) -> None:
    data = _resigned(service.maker, {394: []})
    r = service.post(data)
    if r.status_code == 201:
        ts = service.client.get(f"{r.headers['location']}/transparent-statement")
        assert ts.status_code == 200, ts.text
        verify_transparent_statement(ts.content, service_keys=service.key_set())
    else:
        assert_problem(r, 400, r.json()["code"])


def _leaf_key_changed(m: Maker, old: bytes, new: bytes) -> bytes:
    """The maker's statement with bytes of its leaf certificate's public key changed (the
    certificate still parses; its signature and the statement's no longer verify)."""
    data = statement(m.issuer)
    at = data.index(old)
    return data[:at] + new + data[at + len(old) :]


_P256 = bytes.fromhex("2a8648ce3d030107")  # the OID 1.2.840.10045.3.1.7, DER content


#: Requests that once made the service answer 500 (found by test_scrapi_fuzz.py).
KNOWN_SERVER_ERRORS: list[tuple[str, Callable[[Maker], bytes]]] = [
    ("alg is an array", lambda m: _encode([cbor2.dumps({1: []}), {}, b"", b"\0" * 64])),
    ("alg is a map", lambda m: _encode([cbor2.dumps({1: {}}), {}, b"", b"\0" * 64])),
    ("crit holds an array", lambda m: _resigned(m, {2: [[1]]})),
    ("crit holds a map", lambda m: _resigned(m, {2: [{}]})),
    ("leaf key on an unknown curve", lambda m: _leaf_key_changed(m, _P256, b"+" + _P256[1:])),
    (
        "leaf key not on its curve",
        lambda m: _leaf_key_changed(
            m, m.issuer.leaf_key.public_key_bytes(), b"\x04" + b"\x01" * 64
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "make"), KNOWN_SERVER_ERRORS, ids=[k[0] for k in KNOWN_SERVER_ERRORS]
)
def test_malformed_headers_and_certificate_keys_are_400_not_500(
    maker: Maker, name: str, make: Callable[[Maker], bytes]
) -> None:
    store = MemoryStore()
    with running(store, maker, raise_server_exceptions=False) as svc:
        before = snapshot(store)
        r = svc.post(make(maker))
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert snapshot(store) == before


def test_an_absurd_content_length_is_a_client_error(maker: Maker) -> None:
    with running(MemoryStore(), maker, raise_server_exceptions=False) as svc:
        r = svc.client.post(
            "/entries",
            content=b"\xa0",
            headers={"Content-Type": COSE, "Content-Length": "9" * 5000},
        )
        assert 400 <= r.status_code < 500, r.text


def test_a_store_failure_is_503_and_the_next_request_succeeds(maker: Maker) -> None:
    store = MemoryStore()
    with running(store, maker) as svc:
        before, size = snapshot(store), svc.log_size()
        store.faults.arm("before_commit")
        r = svc.post(statement(maker.issuer))
        assert_problem(r, 503, "storage-error")
        # Where the store is and what it said stay in the server's log.
        assert r.json()["detail"] == STORE_UNAVAILABLE
        assert r.headers["retry-after"] == str(STORE_RETRY_AFTER)
        assert snapshot(store) == before
        assert svc.log_size() == size
        assert svc.post(statement(maker.issuer)).status_code == 201


# -- POST /entries served past the framework's router (service.app.DirectRoute) -------------


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the routes the framework's router hands requests to, in order."""
    from fastapi.routing import APIRoute
    from starlette.types import Receive, Scope, Send

    handled: list[str] = []
    handle = APIRoute.handle

    async def counted(self: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        handled.append(self.path)
        await handle(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counted)
    return handled


def test_registrations_skip_the_router_and_every_other_request_takes_it(
    service: Service, routed: list[str]
) -> None:
    handled = routed
    r = service.post(statement(service.maker.issuer))
    assert r.status_code == 201
    assert handled == []
    assert service.client.get(r.headers["location"]).status_code == 200
    assert handled == ["/entries/{entry_id}"]
    assert_problem(service.client.request("PUT", "/entries"), 405, "method-not-allowed")
    # Anything else the route does not match is the router's, as before: its redirect.
    assert service.client.post("/entries/", follow_redirects=False).status_code == 307


def test_registrations_skip_compression_and_every_other_request_takes_it(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receipt is hashes and signatures: compressing it saves nothing, and merely passing
    through the compression costs a registration ~19 µs, ~4% of its time on the event loop."""
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.types import Receive, Scope, Send

    compressed: list[str] = []
    call = GZipMiddleware.__call__

    async def counted(self: GZipMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        compressed.append(scope["path"])
        await call(self, scope, receive, send)

    monkeypatch.setattr(GZipMiddleware, "__call__", counted)
    r = service.post(statement(service.maker.issuer))
    assert r.status_code == 201
    assert compressed == []
    assert service.client.get(r.headers["location"]).status_code == 200
    assert compressed == [r.headers["location"]]


def test_a_registration_behind_a_root_path_is_served_the_same(
    maker: Maker, routed: list[str]
) -> None:
    """Behind a proxy that strips a prefix (``root_path``), the registration route is still
    matched by its own rules, as the router matches every other route."""
    app = service_application(MemoryStore())
    with TestClient(app, follow_redirects=False, root_path="/ledger") as client:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        r = client.put(f"/ledger/admin/organizations/{ORG}", content=maker.record(), headers=admin)
        assert r.status_code == 201, r.text
        data = statement(maker.issuer)
        r = client.post("/ledger/entries", content=data, headers={"Content-Type": COSE})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/entries/" + hashlib.sha256(data).hexdigest()
        assert "/entries" not in routed
        _verify(r.content, data, client.get("/ledger/.well-known/scitt-keys").content)


def test_an_unexpected_failure_of_a_registration_is_a_500_problem(
    maker: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the router, a bug still ends as the app's own 500 problem details, with nothing
    of the exception in it."""

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret detail of a bug")

    with running(MemoryStore(), maker, raise_server_exceptions=False) as svc:
        monkeypatch.setattr(TransparencyService, "check_current", broken)
        r = svc.post(statement(maker.issuer))
        assert_problem(r, 500, "internal-error")
        assert "secret" not in r.text


# -- hostile JSON bodies: 400 with the route's code, never a 500 ---------------------------

#: Nested deeper than the interpreter's recursion limit, in 4,000 bytes: under every limit.
DEEP_JSON = b"[" * 4000
DEEP_OBJECT = b'{"":' * 1000


@pytest.mark.parametrize("body", [DEEP_JSON, DEEP_OBJECT], ids=["arrays", "objects"])
@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", "/provenance/v1/challenges", "challenge-request-invalid"),
        ("POST", "/entries/{entry}/grants", "admin-request-invalid"),
        ("PUT", "/admin/users/bob", "admin-request-invalid"),
        ("POST", "/admin/users/bob/tokens", "admin-request-invalid"),
        ("PUT", f"/admin/organizations/{ORG}", "org-record-invalid"),
    ],
)
def test_deeply_nested_json_is_a_400_and_changes_nothing(
    maker: Maker, method: str, path: str, code: str, body: bytes
) -> None:
    store = MemoryStore()
    with running(store, maker, raise_server_exceptions=False) as svc:
        entry = svc.post(statement(maker.issuer)).headers["location"].rsplit("/", 1)[1]
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": JSON}
        r = svc.client.put("/admin/users/bob", content=b'{"persona": "auditor"}', headers=admin)
        assert r.status_code == 201, r.text
        before, size = snapshot(store), svc.log_size()
        r = svc.client.request(method, path.format(entry=entry), content=body, headers=admin)
        assert_problem(r, 400, code)
        assert snapshot(store) == before
        assert svc.log_size() == size
    store.close()


def test_names_sent_are_never_echoed(service: Service) -> None:
    """A path or a body naming an organization, a user or a token: the problem details say
    what was wrong with fixed words, never the client's text (it may be markup)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": JSON}
    entry = service.post(statement(service.maker.issuer)).headers["location"]
    markup = "<script>alert(1)</script>"
    answers = [
        service.client.get(f"/tile/{markup}"),
        service.client.get(f"/tile/0/{markup}"),
        service.client.post(f"{entry}/grants", json={"org": markup}, headers=admin),
        service.client.put(
            "/admin/users/bob", json={"persona": "supplier", "org": markup}, headers=admin
        ),
        service.client.post(f"/admin/users/{markup}/tokens", content=b"{}", headers=admin),
        service.client.delete(f"/admin/users/{markup}/tokens/{markup}", headers=admin),
        service.client.delete(f"{entry}/grants/{markup}", headers=admin),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "script" not in r.text, r.text
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_configuration_varies_by_accept_and_says_so(service: Service) -> None:
    for accept, media in [
        ("application/json", "application/json"),
        ("application/cbor", "application/cbor"),
        ("application/cbor;q=0", "application/json"),  # refused, not asked for
        ("application/json;q=0.5, application/cbor", "application/cbor"),
        ("*/*", "application/json"),
    ]:
        r = service.client.get(
            "/.well-known/transparency-configuration", headers={"Accept": accept}
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(media)
        assert r.headers["vary"] == "Accept"
        assert r.headers["cache-control"] == "public, max-age=300"


def test_the_openapi_document_declares_bodies_tokens_and_binary_answers(service: Service) -> None:
    doc = service.client.get("/openapi.json").json()
    bodies = {
        (method.upper(), path): next(iter(op["requestBody"]["content"]))
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    }
    assert bodies == {
        ("POST", "/entries"): COSE,
        ("POST", "/entries/{entry_id}/grants"): JSON,
        ("PUT", "/admin/organizations/{name}"): JSON,
        ("PUT", "/admin/users/{name}"): JSON,
        ("POST", "/admin/users/{name}/tokens"): JSON,
        ("POST", "/provenance/v1/challenges"): JSON,
    }
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {} in doc["security"] and {"bearer": []} in doc["security"]

    def media(method: str, path: str, status: str = "200") -> set[str]:
        return set(doc["paths"][path][method]["responses"][status]["content"])

    assert media("get", "/tile/{path}") == {"application/octet-stream"}
    assert media("head", "/tile/{path}") == {"application/octet-stream"}
    assert media("get", "/log/v1/entries/{index}") == {"application/octet-stream"}
    assert media("post", "/entries", "201") == {COSE}
    assert media("get", "/entries/{entry_id}") == {COSE}
    assert media("get", "/entries/{entry_id}/statement") == {COSE}
    assert media("get", "/.well-known/scitt-keys") == {
        "application/cbor",
        "application/cose-key-set",
    }
    assert media("get", "/.well-known/scitt-keys/{kid}") == {
        "application/cbor",
        "application/cose-key",
    }
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert set(op["responses"]["4XX"]["content"]) == {
                "application/problem+json",
                "application/concise-problem-details+cbor",
            }, (method, path)
    assert media("get", "/.well-known/transparency-configuration") == {
        "application/json",
        "application/cbor",
    }


def test_a_client_gone_mid_body_leaves_no_traceback(
    maker: Maker, sqlite_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A registration or a grant whose client disconnects before the end of its body ends
    quietly: a DEBUG line, no ERROR with a traceback, nothing stored."""
    import socket

    store = SQLiteStore(sqlite_path)
    app = service_application(store)
    try:
        with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=20) as client:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            assert (
                client.put(
                    f"/admin/organizations/{ORG}", content=maker.record(), headers=auth
                ).status_code
                == 201
            )
            r = client.post(
                "/entries", content=statement(maker.issuer), headers={"Content-Type": COSE}
            )
            grants = r.headers["location"] + "/grants"
            before = snapshot(store)
            caplog.clear()
            caplog.set_level(logging.DEBUG)
            port = int(base.rsplit(":", 1)[1])
            for head in (
                b"POST /entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/cose\r\n",
                b"POST "
                + grants.encode()
                + b" HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\n",
            ):
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    sock.sendall(head + b"Content-Length: 1000\r\n\r\n" + b"\xd2\x84" + b"{" * 10)
                    time.sleep(0.3)  # the route is reading the body
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if sum("disconnected" in r.getMessage() for r in caplog.records) >= 2:
                    break
                time.sleep(0.05)
            assert sum("disconnected" in r.getMessage() for r in caplog.records) == 2
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
            assert snapshot(store) == before
            assert client.get("/log/v1/info").json()["size"] == 2
    finally:
        store.close()
