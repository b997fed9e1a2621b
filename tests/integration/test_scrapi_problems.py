"""SCRAPI's error bodies and single keys: problem details negotiated between RFC 9457 JSON
and RFC 9290 Concise Problem Details (CBOR), and ``GET /.well-known/scitt-keys/{kid}``.

What a client that sends no Accept (or ``*/*``, or JSON) gets is unchanged; a SCRAPI client
(``Accept: application/cose``, ``application/cbor``) gets the CBOR its specification makes
the body of an error; a malformed Accept is read as none. Each CBOR answer is checked
against RFC 9290's CDDL (section 2) by :func:`assert_concise_problem`, written from the RFC.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import cbor2
import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient

from sealtrail.client._client import PROBLEM_CBOR, _accept, _problem, _Reply
from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner
from sealtrail.scitt import decode_key_set, key_id, verify_receipt
from sealtrail.service.app import RateLimits
from sealtrail.storage import MemoryStore, SQLiteStore

from .conftest import (
    ADMIN_TOKEN,
    COSE,
    ORIGIN,
    PROBLEM,
    AnyResponse,
    Maker,
    Service,
    assert_problem,
    running,
    service_application,
    statement,
)

CONCISE = "application/concise-problem-details+cbor"
UNKNOWN_ENTRY = "/entries/" + "ab" * 32
#: A registration refused before anything is parsed: an indefinite-length item.
BAD, BAD_CODE = b"\xff", "cbor-not-deterministic"


def assert_concise_problem(
    response: AnyResponse, status: int, code: str, *, vary: bool = True
) -> dict[Any, Any]:
    """``response`` is RFC 9290 Concise Problem Details of ``status`` with the stable
    ``code``: the headers every problem answer carries, and a body that is valid under the
    RFC's CDDL (section 2), deterministically encoded, with Sealtrail's members in the
    custom entry RFC 9290 appendix B registers for RFC 7807 (9457) problem details."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response.headers["content-type"] == CONCISE
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    if vary:
        assert "Accept" in response.headers["vary"]
    body = cbor2.loads(response.content)
    # problem-details = non-empty<{ ... }>: a map with at least one entry.
    assert isinstance(body, dict) and body
    assert cbor2.dumps(body, canonical=True) == response.content, "not deterministic"
    for key, value in body.items():
        if key in (-1, -2):  # title, detail: oltext (text here; no tag 38)
            assert isinstance(value, str) and value
        elif key == -4:  # response-code: a CoAP code, uint .size 1 (never an HTTP status)
            assert isinstance(value, int) and 0 <= value <= 255
        elif isinstance(key, int) and key < 0:  # standard-problem-detail-entries
            pytest.fail(f"a standard entry this service does not write: {key}")
        else:  # custom-problem-detail-entries: (uint / ~uri) => { + any => any }
            assert (isinstance(key, int) and not isinstance(key, bool)) or (
                isinstance(key, str) and ":" in key
            ), key
            assert isinstance(value, dict) and value
    assert -4 not in body
    tunnel = body[7807]
    # tunnel-7807 = { ? &(type: 0) => ~uri, ? &(status: 1) => 0..999, * text => any }
    assert set(tunnel) == {0, 1, "code"}
    assert tunnel[0] == f"urn:sealtrail:error:{code}"
    assert tunnel[1] == status
    assert tunnel["code"] == code
    assert body[-1] == code.replace("-", " ")
    return body


def _headers(accept: str | None, **more: str) -> dict[str, str]:
    return {**({} if accept is None else {"Accept": accept}), **more}


# -- negotiation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        COSE,
        "application/cbor",
        f"{COSE}, application/cbor",
        "application/cose; q=0.9, application/json;q=0",
        CONCISE,
    ],
)
def test_a_bad_registration_is_concise_problem_details_for_a_scrapi_client(
    service: Service, accept: str
) -> None:
    r = service.client.post(
        "/entries", content=BAD, headers=_headers(accept, **{"Content-Type": COSE})
    )
    body = assert_concise_problem(r, 400, BAD_CODE)
    assert isinstance(body[-2], str)


def test_scrapi_accept_fields_on_several_lines_are_one_list(service: Service) -> None:
    """SCRAPI's own example sends ``Accept: application/cbor`` and ``Accept:
    application/cose`` as two lines; HTTP reads them as one list."""
    lines = [("Accept", "application/cbor"), ("Accept", COSE), ("Content-Type", COSE)]
    r = service.client.post("/entries", content=BAD, headers=lines)
    assert_concise_problem(r, 400, BAD_CODE)
    lines = [("Accept", COSE), ("Accept", "application/problem+json;q=0.1")]
    assert_problem(service.client.get(UNKNOWN_ENTRY, headers=lines), 404, "entry-unknown")


def test_an_unknown_entry_asked_for_in_cbor_is_concise(service: Service) -> None:
    r = service.client.get(UNKNOWN_ENTRY, headers={"Accept": CONCISE})
    body = assert_concise_problem(r, 404, "entry-unknown")
    assert "ab" * 32 not in body[-2]
    r = service.client.get(UNKNOWN_ENTRY + "/statement", headers={"Accept": COSE})
    assert_concise_problem(r, 404, "entry-unknown")


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/json", PROBLEM, f"{COSE}, */*;q=0.1", f"{CONCISE};q=0.5, {PROBLEM}"],
)
def test_json_problems_are_unchanged_for_clients_that_take_json(
    service: Service, accept: str | None
) -> None:
    for r in (
        service.client.get(UNKNOWN_ENTRY, headers=_headers(accept)),
        service.client.post(
            "/entries", content=BAD, headers=_headers(accept, **{"Content-Type": COSE})
        ),
    ):
        assert_problem(r, r.status_code, r.json()["code"])
        assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "accept",
    [
        "application/cose;q=2",
        "*/cose",
        "application/cose junk",
        "application/cose;q=0.5x",
        'application/cose;a="unterminated',
        "application",
        "application/cbor;q=0.1234",
        "\u00e9/cose",
    ],
)
def test_a_malformed_accept_is_read_as_none(service: Service, accept: str) -> None:
    r = service.client.get(UNKNOWN_ENTRY, headers={b"Accept": accept.encode("latin-1")})
    assert_problem(r, 404, "entry-unknown")


def test_a_quoted_comma_or_semicolon_does_not_split_the_accept_field(service: Service) -> None:
    accept = f'{COSE};note="json, {PROBLEM}; x"'
    assert_concise_problem(
        service.client.get(UNKNOWN_ENTRY, headers={"Accept": accept}), 404, "entry-unknown"
    )


def test_other_routes_answer_cbor_only_when_it_is_preferred(service: Service) -> None:
    """Outside SCRAPI an Accept without JSON (a passport's type, say) still gets JSON; a
    preference for concise problem details gets CBOR there too."""
    assert_problem(
        service.client.get("/log/v1/entries/999", headers={"Accept": COSE}), 404, "not-found"
    )
    r = service.client.get("/log/v1/entries/999", headers={"Accept": CONCISE})
    assert_concise_problem(r, 404, "not-found")
    r = service.client.get("/no/such/route", headers={"Accept": f"{PROBLEM};q=0.2, {CONCISE}"})
    assert_concise_problem(r, 404, "not-found")
    r = service.client.delete(UNKNOWN_ENTRY, headers={"Accept": CONCISE})
    assert_concise_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"]
    r = service.client.get("/log/v1/proof/inclusion", headers={"Accept": CONCISE})
    assert_concise_problem(r, 400, "invalid-input")


def test_sealtrails_own_client_names_json_problems_and_reads_both(service: Service) -> None:
    """The client's Accept for COSE names JSON problems too, so this service answers it
    JSON; the client reads a CBOR problem (another SCITT service's) to the same code."""
    ours = {"Accept": _accept(COSE)}
    assert_problem(service.client.get(UNKNOWN_ENTRY, headers=ours), 404, "entry-unknown")
    r = service.client.post("/entries", content=BAD, headers={**ours, "Content-Type": COSE})
    assert_problem(r, 400, BAD_CODE)
    concise = service.client.get(UNKNOWN_ENTRY, headers={"Accept": COSE})
    assert_concise_problem(concise, 404, "entry-unknown")
    code, detail = _problem(_reply(concise.status_code, concise.content, concise.headers))
    assert code == "entry-unknown" and detail
    # Another service's problem, with no code of ours: its detail, then its title.
    for doc, expected in (({-1: "Bad", -2: "No such key"}, "No such key"), ({-1: "Bad"}, "Bad")):
        assert _problem(_reply(404, cbor2.dumps(doc))) == (None, expected)
    for junk in (b"", b"\xff", cbor2.dumps([1]), b"\x81" * 100_000):
        assert _problem(_reply(400, junk)) == (None, None)


def _reply(status: int, content: bytes, headers: Any = None) -> _Reply:
    given = headers if headers is not None else {"content-type": PROBLEM_CBOR}
    return _Reply(status, httpx.Headers(given), content, httpx.URL("http://127.0.0.1/"))


def test_a_registration_that_succeeds_is_untouched_by_the_negotiation(service: Service) -> None:
    r = service.client.post(
        "/entries",
        content=statement(service.maker.issuer),
        headers={"Content-Type": COSE, "Accept": COSE},
    )
    assert r.status_code == 201, r.content
    assert r.headers["content-type"] == COSE
    assert "vary" not in r.headers


# -- the answers with headers of their own: 429, 401 -----------------------------------------


def test_a_rate_limited_scrapi_request_is_concise_with_retry_after(maker: Maker) -> None:
    app = service_application(MemoryStore(), limits=RateLimits(reads=0.01, writes=0.01, burst=1))
    with TestClient(app) as client:
        headers = {"Accept": COSE, "Content-Type": COSE}
        first = client.post("/entries", content=BAD, headers=headers)
        assert_concise_problem(first, 400, BAD_CODE)
        r = client.post("/entries", content=BAD, headers=headers)
        assert_concise_problem(r, 429, "rate-limited")
        assert int(r.headers["retry-after"]) >= 1
        # Reads have their own budget; the JSON answer is as it always was.
        assert client.get(UNKNOWN_ENTRY).status_code == 404
        json_answer = client.get(UNKNOWN_ENTRY)
        assert_problem(json_answer, 429, "rate-limited")
        assert int(json_answer.headers["retry-after"]) >= 1


def test_a_401_is_concise_with_www_authenticate(maker: Maker) -> None:
    app = service_application(MemoryStore(), auth_required=True)
    with TestClient(app) as client:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        put = client.put("/admin/organizations/maker", content=maker.record(), headers=admin)
        assert put.status_code == 201, put.text
        r = client.post(
            "/entries",
            content=statement(maker.issuer),
            headers={"Accept": COSE, "Content-Type": COSE},
        )
        assert_concise_problem(r, 401, "token-required")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = client.get("/.well-known/scitt-keys", headers={"Accept": "application/cbor", **admin})
        assert r.status_code == 200
        bad = {"Accept": CONCISE, "Authorization": "Bearer made-up"}
        r = client.get("/admin/users", headers=bad)
        assert_concise_problem(r, 401, "token-unknown")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "made-up" not in r.content.decode("utf-8", "replace")
        assert_problem(
            client.get("/admin/users", headers={"Authorization": "Bearer made-up"}),
            401,
            "token-unknown",
        )


# -- one key: /.well-known/scitt-keys/{kid} --------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _assert_key(r: httpx2.Response, key_set: bytes, kid: bytes) -> None:
    """One COSE_Key, the key set's entry of ``kid``, as SCRAPI section 2.2 serves it."""
    assert r.status_code == 200, r.content
    assert r.headers["content-type"] == "application/cbor"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers["vary"] == "Accept"
    entries = [k for k in cbor2.loads(key_set) if k[2] == kid]
    assert len(entries) == 1
    assert cbor2.loads(r.content) == entries[0]
    assert r.content == cbor2.dumps(entries[0], canonical=True)
    assert list(decode_key_set(cbor2.dumps([cbor2.loads(r.content)]))) == [kid]


def test_one_key_by_hex_or_base64url_kid(service: Service) -> None:
    key_set = service.key_set()
    kid = key_id(service.service_signer.verifier())
    for spelled in (kid.hex(), _b64url(kid)):
        _assert_key(service.client.get(f"/.well-known/scitt-keys/{spelled}"), key_set, kid)
    r = service.client.get(
        f"/.well-known/scitt-keys/{_b64url(kid)}", headers={"Accept": "application/cose-key"}
    )
    assert r.headers["content-type"] == "application/cose-key"


def test_a_retired_key_is_served_and_verifies_its_old_receipts(
    maker: Maker, sqlite_path: Path
) -> None:
    """An independent reader (pycose) reads the retired key, and checks with it the
    signature of a receipt issued before the rotation."""
    from pycose.keys import CoseKey  # type: ignore[attr-defined]
    from pycose.messages import Sign1Message  # type: ignore[attr-defined]

    ckpt = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    old_key, new_key = generate_signer(ES256), generate_signer(ES256)
    data = statement(maker.issuer)
    store = SQLiteStore(sqlite_path)
    try:
        with running(store, maker, checkpoint_signer=ckpt, service_signer=old_key) as before:
            receipt = before.post(data).content
    finally:
        store.close()
    store = SQLiteStore(sqlite_path)
    try:
        with running(
            store,
            maker,
            checkpoint_signer=ckpt,
            service_signer=new_key,
            retired=[old_key.verifier()],
            onboard=False,
        ) as after:
            old = key_id(old_key.verifier())
            r = after.client.get(f"/.well-known/scitt-keys/{_b64url(old)}")
            _assert_key(r, after.key_set(), old)
            info = verify_receipt(
                receipt,
                leaf_entry=hashlib.sha256(data).digest(),
                keys=decode_key_set(cbor2.dumps([cbor2.loads(r.content)])),
            )
            assert info.kid == old
            theirs: Any = CoseKey.decode(r.content)
            assert theirs.kid == old
            parts = cbor2.loads(receipt).value
            message = Sign1Message.from_cose_obj(
                [parts[0], dict(parts[1]), parts[2], parts[3]], True
            )
            message.key = theirs
            assert message.verify_signature(detached_payload=info.root)
            new = key_id(new_key.verifier())
            _assert_key(
                after.client.get(f"/.well-known/scitt-keys/{new.hex()}"), after.key_set(), new
            )
    finally:
        store.close()


@pytest.mark.parametrize(
    "kid",
    [
        "00" * 32,  # hex, no such key
        "AA" * 32,  # uppercase hex: not how Sealtrail writes a kid, nor the right base64url
        "x",  # no base64url of anything
        "AAAA=",  # padded
        "abc%3D",  # padding, escaped
        "a+b",  # base64, not base64url
        "%00",
    ],
)
def test_an_unknown_or_malformed_kid_is_a_404_problem(service: Service, kid: str) -> None:
    r = service.client.get(f"/.well-known/scitt-keys/{kid}")
    body = assert_problem(r, 404, "key-unknown")
    assert len(kid) < 4 or kid not in body["detail"]
    r = service.client.get(f"/.well-known/scitt-keys/{kid}", headers={"Accept": "application/cbor"})
    assert_concise_problem(r, 404, "key-unknown")


def test_a_kid_spelled_with_stray_bits_is_not_the_kid(service: Service) -> None:
    """base64url of 32 bytes leaves 2 bits unused: one spelling per kid, the one whose
    unused bits are zero."""
    kid = key_id(service.service_signer.verifier())
    spelled = _b64url(kid)
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(spelled[-1])
    other = (
        spelled[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
    )
    assert other != spelled and base64.urlsafe_b64decode(other + "=") == kid
    assert_problem(service.client.get(f"/.well-known/scitt-keys/{other}"), 404, "key-unknown")


def test_the_key_routes_are_public_with_auth_required(maker: Maker) -> None:
    app = service_application(MemoryStore(), auth_required=True)
    with TestClient(app) as client:
        keys = client.get("/.well-known/scitt-keys")
        assert keys.status_code == 200
        kid = next(iter(decode_key_set(keys.content)))
        assert client.get(f"/.well-known/scitt-keys/{kid.hex()}").status_code == 200
