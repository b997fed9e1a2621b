"""sealtrail.client against a real service on loopback: registration (201 and 303 + polling),
reads, administration, and every failure as the right sealtrail error with its code."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator

import cbor2
import httpx
import pytest
from fastapi import FastAPI, Request

import sealtrail.service._scrapi as scrapi
from sealtrail.client import (
    MAX_RESPONSE_SIZE,
    AsyncClient,
    Client,
    RegistrationTimeout,
    ServiceError,
    ServiceUnreachable,
    Unauthorized,
)
from sealtrail.errors import (
    Error,
    InvalidInput,
    NotFound,
    RetryLater,
    TooLarge,
    VerificationError,
)
from sealtrail.log import verify_checkpoint
from sealtrail.scitt import (
    MAX_STATEMENT_SIZE,
    decode_key_set,
    entry_id,
    verify_receipt,
    verify_transparent_statement,
)
from sealtrail.service import MAX_REQUEST_HEAD
from tests._server import serve_in_thread
from tests.unit.scitt._pki import Issuer

from ._scitt_live import (
    ADMIN_TOKEN,
    ORG,
    ORIGIN,
    SERVICE,
    LiveService,
    closed_port_url,
    live_service,
    record_with_keys,
    signed,
)

#: The sequencer's batch delay for the slow-registration tests: longer than the service's
#: Retry-After (1 s), so the first poll finds the entry still pending.
SLOW_BATCH = 2.0


class Recorder(httpx.HTTPTransport):
    """A real transport that remembers (method, path, status) of every exchange."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append((request.method, request.url.path, response.status_code))
        return response


@pytest.fixture(scope="module")
def live() -> Iterator[LiveService]:
    with live_service() as service:
        yield service


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveService]:
    """A service that answers every POST /entries with 303 and sequences slowly."""
    monkeypatch.setattr(scrapi, "REGISTER_WAIT", 0.0)
    with live_service(max_delay=SLOW_BATCH) as service:
        yield service


def test_register_201_gives_a_receipt_that_verifies_offline(live: LiveService) -> None:
    statement = signed(live.issuer, subject="urn:maker:device:201")
    recorder = Recorder()
    with Client(live.url, transport=recorder) as client:
        registered = client.register(statement)
        keys = client.service_keys()
        assert recorder.seen[0] == ("POST", "/entries", 201)
        assert registered.entry_id == hashlib.sha256(statement).hexdigest()
        verified = verify_transparent_statement(
            registered.transparent_statement(), service_keys=keys, trust_anchors=[live.issuer.ca]
        )
        assert verified.signature_check == "x5chain+anchors"
        assert verified.receipts[0].leaf_index == registered.leaf_index
        assert verified.receipts[0].tree_size == registered.tree_size

        # Reads by entry id (case-insensitive), each checked against the id.
        assert client.statement(registered.entry_id.upper()) == statement
        fresh = client.transparent_statement(registered.entry_id)
        assert verify_transparent_statement(fresh, service_keys=keys).entry_id == (
            registered.entry_id
        )
        info = verify_receipt(
            client.receipt(registered.entry_id),
            leaf_entry=bytes.fromhex(registered.entry_id),
            keys=decode_key_set(keys),
        )
        assert info.leaf_index == registered.leaf_index

        config = client.configuration()
        assert config["issuer"] == SERVICE
        assert config["log_origin"] == ORIGIN
        checkpoint = verify_checkpoint(
            client.checkpoint(), origin=ORIGIN, verifiers=[live.checkpoint_signer.verifier]
        )
        assert checkpoint.size >= info.tree_size

        # Registering again is idempotent: same entry, same index.
        again = client.register(statement)
        assert (again.entry_id, again.leaf_index) == (registered.entry_id, registered.leaf_index)


def test_303_is_followed_by_polling_until_the_receipt(slow: LiveService) -> None:
    statement = signed(slow.issuer, subject="urn:maker:device:303")
    entry = entry_id(statement)
    recorder = Recorder()
    with Client(slow.url, transport=recorder) as client:
        registered = client.register(statement, timeout=20)
        keys = client.service_keys()
    assert recorder.seen[0] == ("POST", "/entries", 303)
    polls = [status for method, path, status in recorder.seen[1:-1] if path == f"/entries/{entry}"]
    assert 302 in polls, recorder.seen  # still pending at the first poll: Retry-After honoured
    assert ("GET", f"/entries/{entry}", 200) in recorder.seen
    verify_transparent_statement(registered.transparent_statement(), service_keys=keys)


def test_a_slow_registration_times_out_naming_the_entry_and_can_be_resumed(
    slow: LiveService,
) -> None:
    statement = signed(slow.issuer, subject="urn:maker:device:timeout")
    entry = entry_id(statement)
    with Client(slow.url) as client:
        with pytest.raises(RegistrationTimeout) as caught:
            client.register(statement, timeout=0.2)
        assert caught.value.code == "registration-timeout"
        assert caught.value.entry_id == entry
        assert entry in caught.value.message
        # The service carried on; submitting the same statement again picks it up.
        registered = client.register(statement, timeout=20)
    assert registered.entry_id == entry


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


REFUSED: list[tuple[str, Callable[[Issuer], bytes], type[Error], str]] = [
    (
        "bad signature",
        lambda i: _flip_last_byte(signed(i)),
        VerificationError,
        "cose-bad-signature",
    ),
    (
        "unknown issuer",
        lambda i: signed(i, issuer="https://nobody.example"),
        VerificationError,
        "issuer-unknown",
    ),
    (
        "over the organization's size limit",
        lambda i: signed(i, payload=b"x" * 20_000),
        VerificationError,
        "policy-too-large",
    ),
    ("not CBOR", lambda i: b"hello, world", InvalidInput, "cbor-malformed"),
    (
        "over the service's body limit",
        lambda i: b"\0" * (MAX_STATEMENT_SIZE + 1),
        TooLarge,
        "body-too-large",
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "cls", "code"), REFUSED, ids=[case[0] for case in REFUSED]
)
def test_problem_details_come_back_as_the_error_class_with_its_code(
    live: LiveService, name: str, make: Callable[[Issuer], bytes], cls: type[Error], code: str
) -> None:
    with Client(live.url) as client, pytest.raises(Error) as caught:
        client.register(make(live.issuer))
    assert type(caught.value) is cls, (name, type(caught.value), caught.value.message)
    assert caught.value.code == code
    assert "\n" not in caught.value.message


def test_unknown_and_malformed_entry_ids(live: LiveService) -> None:
    with Client(live.url) as client:
        with pytest.raises(NotFound) as unknown:
            client.receipt("ab" * 32)
        assert unknown.value.code == "entry-unknown"
        with pytest.raises(NotFound):
            client.statement("ab" * 32)
        with pytest.raises(InvalidInput) as malformed:
            client.transparent_statement("../checkpoint")
        assert malformed.value.code == "entry-id-invalid"


def test_put_organization_with_a_wrong_token_never_shows_the_token(live: LiveService) -> None:
    secret = "wrong-token-d34db33fc0ffee"
    record = record_with_keys(live.issuer, live.kid_keys, version=2)
    with Client(live.url) as client:
        with pytest.raises(Unauthorized) as caught:
            client.put_organization(ORG, record, token=secret)
        assert caught.value.code == "token-unknown"
        # A token that could never be sent is refused before it is, and not echoed either.
        with pytest.raises(InvalidInput) as malformed:
            client.put_organization(ORG, record, token=f"{secret}\r\nX-Evil: 1")
        assert malformed.value.code == "token-malformed"
        # The right token still works: the organization moves to version 2.
        registration = client.put_organization(ORG, record, token=ADMIN_TOKEN)
        assert len(registration.entry_id) == 64 and registration.index > 0
    for error in (caught.value, malformed.value):
        text = f"{error.diagnostics()} {error!r} {error.args}"
        assert "d34db33f" not in text
        assert ADMIN_TOKEN not in text


def test_an_unreachable_service_is_one_clear_error_naming_the_url() -> None:
    url = closed_port_url()
    with Client(url, timeout=5) as client:
        with pytest.raises(ServiceUnreachable) as caught:
            client.register(b"anything")
        assert caught.value.code == "service-unreachable"
        assert url in caught.value.message
        with pytest.raises(ServiceUnreachable):
            client.service_keys()
    with pytest.raises(InvalidInput) as bad_url:
        Client("ftp://127.0.0.1/")
    assert bad_url.value.code == "url-invalid"


def test_the_async_client_behaves_the_same(live: LiveService) -> None:
    good = signed(live.issuer, subject="urn:maker:device:async")
    bad = _flip_last_byte(signed(live.issuer, subject="urn:maker:device:async-bad"))

    async def scenario() -> None:
        async with AsyncClient(live.url) as client:
            registered = await client.register(good)
            keys = await client.service_keys()
            verify_transparent_statement(registered.transparent_statement(), service_keys=keys)
            assert await client.statement(registered.entry_id) == good
            with pytest.raises(VerificationError) as caught:
                await client.register(bad)
            assert caught.value.code == "cose-bad-signature"
        async with AsyncClient(closed_port_url()) as nowhere:
            with pytest.raises(ServiceUnreachable):
                await nowhere.checkpoint()

    asyncio.run(scenario())


# -- answers a healthy service never gives: a mock transport ----------------------------------

STATEMENT = b"\xd2\x84"  # never decoded by these cases


def _mocked(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler))


def test_an_entry_unknown_while_polling_is_sent_again() -> None:
    """303, then 404 for the entry (its row lost or edited behind the service): the client
    sends the statement again rather than poll for ever, and gets its receipt."""
    entry = hashlib.sha256(STATEMENT).hexdigest()
    seen: list[tuple[str, str]] = []

    def service(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        posts = sum(1 for method, _ in seen if method == "POST")
        if request.method == "POST":
            assert request.content == STATEMENT
            if posts == 1:
                headers = {"Location": f"/entries/{entry}", "Retry-After": "0"}
                return httpx.Response(303, headers=headers)
            receipt = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, b"", b"\0" * 64]))
            return httpx.Response(201, content=receipt)  # any COSE_Sign1 stands in
        return _problem_reply(404, "entry-unknown")

    with _mocked(service) as client:
        registered = client.register(STATEMENT, timeout=10)
    assert registered.entry_id == entry
    assert seen == [("POST", "/entries"), ("GET", f"/entries/{entry}"), ("POST", "/entries")]


@pytest.mark.parametrize(
    "not_found",
    [
        pytest.param(lambda: _problem_reply(404, "entry-unknown"), id="entry-unknown"),
        pytest.param(lambda: httpx.Response(404, text="<html>not here</html>"), id="a proxy"),
    ],
)
def test_a_registration_sends_its_statement_again_at_most_once(
    not_found: Callable[[], httpx.Response],
) -> None:
    """A service that keeps answering 303 then 404: the statement is sent again once, and
    only for Sealtrail's ``entry-unknown``; otherwise the client polls until its deadline."""
    entry = hashlib.sha256(STATEMENT).hexdigest()
    posts = 0

    def service(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            headers = {"Location": f"/entries/{entry}", "Retry-After": "0"}
            return httpx.Response(303, headers=headers)
        return not_found()

    with _mocked(service) as client, pytest.raises(RegistrationTimeout):
        client.register(STATEMENT, timeout=1)
    assert posts == (
        2 if not_found().headers.get("content-type", "").startswith("application/problem") else 1
    )


def test_back_pressure_is_retry_later_with_the_servers_delay() -> None:
    def busy(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503,
            headers={"Retry-After": "7", "Content-Type": "application/problem+json"},
            json={"code": "retry-later", "detail": "the log is busy"},
        )

    with _mocked(busy) as client, pytest.raises(RetryLater) as caught:
        client.register(STATEMENT)
    assert caught.value.retry_after == 7
    assert caught.value.code == "retry-later"
    assert caught.value.message == "the log is busy"


@pytest.mark.parametrize(
    ("name", "response", "code"),
    [
        ("a proxy's HTML error page", httpx.Response(502, text="<html>bad gateway</html>"), None),
        ("201 with a body that is not COSE", httpx.Response(201, content=b"receipt?"), None),
        (
            "303 to another origin",
            httpx.Response(303, headers={"Location": "http://evil.example/entries/x"}),
            None,
        ),
        ("303 without Location", httpx.Response(303), None),
        (
            "an answer over the size limit",
            httpx.Response(201, headers={"Content-Length": str(MAX_RESPONSE_SIZE + 1)}),
            None,
        ),
        (
            "500 problem details",
            httpx.Response(
                500,
                headers={"Content-Type": "application/problem+json"},
                json={"code": "corruption", "detail": "stored data contradicts the checkpoint"},
            ),
            "corruption",
        ),
    ],
)
def test_unexpected_answers_are_service_errors(
    name: str, response: httpx.Response, code: str | None
) -> None:
    with _mocked(lambda _: response) as client, pytest.raises(ServiceError) as caught:
        client.register(STATEMENT)
    assert caught.value.code == (code or "service-error"), name
    assert "\n" not in caught.value.message


def test_a_statement_that_does_not_hash_to_its_id_is_refused() -> None:
    answer = httpx.Response(200, content=b"some other statement")
    with _mocked(lambda _: answer) as client, pytest.raises(VerificationError) as caught:
        client.statement("ab" * 32)
    assert caught.value.code == "entry-mismatch"


def _problem_reply(status: int, code: str) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"Content-Type": "application/problem+json"},
        json={"code": code, "detail": f"refused: {code}"},
    )


@pytest.mark.parametrize(
    ("status", "code", "call", "says"),
    [
        (404, "user-unknown", lambda c: c.revoke_token("bob", "00" * 8, token="t"), "users list"),
        (404, "token-unknown", lambda c: c.revoke_token("bob", "00" * 8, token="t"), "users list"),
        (404, "node-unknown", lambda c: c.challenge("srv-9"), "serial"),
        (400, "policy-subject", lambda c: c.register(STATEMENT), "policy"),
        (400, "chain-untrusted", lambda c: c.register(STATEMENT), "anchors"),
        (401, "certificate-unknown", lambda c: c.compliance(), "users cert"),
        (400, "assembly-unknown-device", lambda c: c.register(STATEMENT), "docs/provenance.md"),
        (400, "provenance-unknown-field", lambda c: c.register(STATEMENT), "Correct the record"),
        (400, "compliance-needs-arrival", lambda c: c.register(STATEMENT), "what the rule asks"),
        (400, "arrival-nonce-replayed", lambda c: c.register(STATEMENT), "sealtrail challenge"),
        (400, "nonce-expired", lambda c: c.register(STATEMENT), "challenge_ttl"),
        (400, "custody-not-shipped", lambda c: c.receipt("ab" * 32), "docs/provenance.md"),
        (404, "entry-unknown", lambda c: c.statement("ab" * 32), "entry id"),
        (404, "entry-pending", lambda c: c.transparent_statement("ab" * 32), "in a moment"),
    ],
)
def test_a_refusal_gets_a_hint_about_what_was_asked(
    status: int, code: str, call: Callable[[Client], object], says: str
) -> None:
    """Not the class's own hint, which is about proofs (404), tampered data (400) or the
    administrator token (401)."""
    with _mocked(lambda _: _problem_reply(status, code)) as client, pytest.raises(Error) as caught:
        call(client)
    assert caught.value.code == code
    hint = caught.value.hint
    assert says in hint, hint
    for elsewhere in (
        "latest checkpoint",
        "Do not trust the data",
        "administrator token",
        "documented format",
    ):
        assert elsewhere not in hint, hint


#: A 404 with no code of ours: a proxy's page, and the generic code of a missing route.
_CODELESS_404 = {
    "a proxy's page": lambda: httpx.Response(404, text="<html>Not Found</html>"),
    "not-found": lambda: _problem_reply(404, "not-found"),
}


@pytest.mark.parametrize("answer", _CODELESS_404.values(), ids=_CODELESS_404.keys())
@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda c: c.put_user("nobody", None, disabled=True, token="t"), "users list"),
        (lambda c: c.put_certificates("nobody", [], token="t"), "users list"),
        (lambda c: c.issue_token("nobody", token="t"), "users list"),
        (lambda c: c.revoke_token("bob", "zz", token="t"), "token ids"),
        (lambda c: c.challenge("SRV-9"), "serial"),
        (lambda c: c.node("SRV-9"), "serial"),
        (lambda c: c.tree("SRV-9"), "serial"),
        (lambda c: c.timeline("SRV-9"), "serial"),
        (lambda c: c.device("ab" * 32), "device"),
        (lambda c: c.device_timeline("ab" * 32), "device"),
        (lambda c: c.shipment("SHIP-9"), "shipment"),
        (lambda c: c.statement("ab" * 32), "entry id"),
        (lambda c: c.receipt("ab" * 32), "entry id"),
        (lambda c: c.put_organization("nobody", b"{}", token="t"), "sealtrail org put"),
    ],
)
def test_a_404_without_a_code_of_ours_gets_the_hint_of_what_was_asked(
    call: Callable[[Client], object], says: str, answer: Callable[[], httpx.Response]
) -> None:
    """Not the class's hint (about log indexes and checkpoints) for a user, a token, a node,
    a device, a shipment, an entry or an organization that is not there."""
    with _mocked(lambda _: answer()) as client, pytest.raises(NotFound) as caught:
        call(client)
    assert says in caught.value.hint, caught.value.hint
    assert "latest checkpoint" not in caught.value.hint


def test_a_404_with_a_code_of_its_own_keeps_its_hint() -> None:
    """What was asked for gives the hint only when the service's code does not: a size
    beyond the index is about the log (the class's hint), not about the node."""
    for code, says in (("index-size-unknown", "latest checkpoint"), ("not-found", "serial")):

        def answer(_: httpx.Request, code: str = code) -> httpx.Response:
            return _problem_reply(404, code)

        with _mocked(answer) as client, pytest.raises(NotFound) as caught:
            client.node("SRV-9", size=10**6)
        assert caught.value.code == code
        assert says in caught.value.hint, caught.value.hint


def test_an_entry_not_registered_yet_gets_a_hint_to_ask_again() -> None:
    pending = httpx.Response(302, headers={"Location": "/entries/" + "ab" * 32})
    with _mocked(lambda _: pending) as client, pytest.raises(NotFound) as caught:
        client.receipt("ab" * 32)
    assert caught.value.code == "entry-pending"
    assert "ask again in a moment" in caught.value.hint


def test_the_test_server_runs_as_sealtrail_serve_does() -> None:
    """tests/_server.py serves with ``server_config``: a forwarding header names no other
    client, and a request head over the bound is refused, as users' servers do."""
    app = FastAPI()

    @app.get("/peer")
    def peer(request: Request) -> dict[str, str | None]:
        return {"host": request.client.host if request.client else None}

    with serve_in_thread(app) as url:
        forwarded = httpx.get(url + "/peer", headers={"x-forwarded-for": "192.0.2.7"})
        assert forwarded.json() == {"host": "127.0.0.1"}
        big = httpx.get(url + "/peer", headers={"x-big": "a" * MAX_REQUEST_HEAD})
        assert big.status_code == 431
        assert big.json()["code"] == "headers-too-large"
