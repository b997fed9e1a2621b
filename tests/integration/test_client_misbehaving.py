"""sealtrail.client against a server that misbehaves, and against a bad environment.

Whatever comes back — JSON nested past the interpreter's recursion limit, an integer of more
digits than Python converts, problem details that do not parse, a detail spread over lines —
the caller gets a :class:`ServiceError` (``service-error``) with a one-line message, and the
command line one line with its code, never a traceback. A bad ``$SSL_CERT_FILE`` stops only
the clients of an ``https`` service, with a ``config-error`` naming it; a URL with a port no
connection can name is ``url-invalid`` when the client is made.
"""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cbor2
import httpx
import pytest

from sealtrail.client import (
    AsyncClient,
    Client,
    RegisteredStatement,
    ServiceError,
    _client,
    client_tls,
)
from sealtrail.errors import ConfigError, Error, InvalidInput, RetryLater
from tests._cli_inproc import Cli, Result, in_process

#: JSON nested far past the recursion limit (200,000 levels), and an integer
#: past ``sys.get_int_max_str_digits()`` (4,300).
DEEP = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
DIGITS = b'{"servers": [], "size": ' + b"7" * 100_000 + b"}"
HOSTILE = {"deep": DEEP, "digits": DIGITS}

PROBLEM_JSON = "application/problem+json"
PROBLEM_CBOR = "application/concise-problem-details+cbor"

#: Each call, with the status its success is answered with.
CALLS: dict[str, tuple[int, Callable[[Client], object]]] = {
    "compliance": (200, lambda c: c.compliance()),
    "node": (200, lambda c: c.node("SRV-1")),
    "configuration": (200, lambda c: c.configuration()),
    "users": (200, lambda c: c.users(token="t")),
    "put_user": (201, lambda c: c.put_user("bob", "supplier", "maker", token="t")),
    "issue_token": (201, lambda c: c.issue_token("bob", token="t")),
    "revoke_token": (200, lambda c: c.revoke_token("bob", "00" * 8, token="t")),
    "put_organization": (201, lambda c: c.put_organization("maker", b"{}", token="t")),
    "challenge": (201, lambda c: c.challenge("SRV-1")),
}


def _mocked(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler))


def _one_line_service_error(caught: pytest.ExceptionInfo[Error]) -> None:
    assert type(caught.value) is ServiceError, caught.value
    assert caught.value.code == "service-error"
    assert "\n" not in caught.value.message
    assert len(caught.value.message) < 400


# -- JSON and CBOR a client will not read -------------------------------------------------


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("name", CALLS)
def test_an_answer_past_the_parsers_limits_is_a_service_error(name: str, body: bytes) -> None:
    status, call = CALLS[name]
    answer = httpx.Response(status, headers={"Content-Type": "application/json"}, content=body)
    with _mocked(lambda _: answer) as client, pytest.raises(Error) as caught:
        call(client)
    _one_line_service_error(caught)
    assert "is not JSON" in caught.value.message


@pytest.mark.parametrize("status", [400, 401, 404, 500])
@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_problem_details_past_the_parsers_limits_are_a_service_error(
    status: int, body: bytes
) -> None:
    answer = httpx.Response(status, headers={"Content-Type": PROBLEM_JSON}, content=body)
    for _, call in CALLS.values():
        with _mocked(lambda _: answer) as client, pytest.raises(Error) as caught:
            call(client)
        _one_line_service_error(caught)
        assert f"HTTP {status}" in caught.value.message
        assert "cannot be read" in caught.value.message


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("body", [*HOSTILE.values(), b"", b"<html>busy</html>"])
def test_a_busy_answer_is_retried_whatever_its_body(status: int, body: bytes) -> None:
    """429 and 503 ask to be retried: a body that cannot be read (a proxy's page under a
    JSON label) does not make them a ServiceError, which callers would not retry."""
    headers = {"Content-Type": PROBLEM_JSON, "Retry-After": "2"}
    answer = httpx.Response(status, headers=headers, content=body)
    for _, call in CALLS.values():
        with _mocked(lambda _: answer) as client, pytest.raises(RetryLater) as caught:
            call(client)
        assert caught.value.retry_after == 2
        assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff",
        b"\x81" * 100_000,  # nested past cbor2's own bound
        b"\x9f" * 100_000,
        b"\xc5\x82\x1a\x7f\xff\xff\xff\x01",  # a bigfloat cbor2 cannot build
        b"\xa1\x01",  # a map that ends early
    ],
    ids=["empty", "reserved", "deep", "deep-indefinite", "bigfloat", "truncated"],
)
def test_concise_problem_details_that_do_not_decode_are_a_service_error(body: bytes) -> None:
    answer = httpx.Response(400, headers={"Content-Type": PROBLEM_CBOR}, content=body)
    with _mocked(lambda _: answer) as client, pytest.raises(Error) as caught:
        client.register(b"statement")
    _one_line_service_error(caught)


def test_the_async_client_refuses_the_same_answers() -> None:
    async def run(answer: httpx.Response) -> ServiceError:
        transport = httpx.MockTransport(lambda _: answer)
        async with AsyncClient("http://127.0.0.1:9", transport=transport) as client:
            with pytest.raises(ServiceError) as caught:
                await client.compliance()
        return caught.value

    for content_type, status in (("application/json", 200), (PROBLEM_JSON, 400)):
        for body in HOSTILE.values():
            answer = httpx.Response(status, headers={"Content-Type": content_type}, content=body)
            error = asyncio.run(run(answer))
            assert error.code == "service-error" and "\n" not in error.message


def test_a_services_detail_is_one_line_of_printable_text() -> None:
    """A detail with newlines and terminal escapes, and a code that is not one word: the
    message stays one line (the command line's ``error (<code>): …``)."""
    answer = httpx.Response(
        404,
        headers={"Content-Type": PROBLEM_JSON},
        json={"code": "user-unknown\nerror (ok): fine", "detail": "no\nsuch\x1b[2J user\r\n" * 200},
    )
    with _mocked(lambda _: answer) as client, pytest.raises(Error) as caught:
        client.users(token="t")
    message = caught.value.message
    assert caught.value.code == "not-found"  # the class's: the service's is no code
    assert message.isprintable() and "\x1b" not in message
    assert message.startswith("no such [2J user no such [2J user")
    assert len(message) == 1000 and message.endswith("…")


@pytest.mark.parametrize(
    "length", [b"9" * 5000, "²".encode("latin-1")], ids=["thousands-of-digits", "superscript"]
)
def test_a_content_length_python_will_not_convert_is_handled(length: bytes) -> None:
    answer = httpx.Response(200, headers={b"Content-Length": length}, content=b"")
    with _mocked(lambda _: answer) as client, pytest.raises(Error) as caught:
        client.compliance()
    _one_line_service_error(caught)


def test_a_receipt_with_a_proof_that_does_not_decode_has_no_position() -> None:
    """The receipt's proof is read unverified for ``leaf_index``: bytes that are no CBOR
    (here an indefinite array left open) are no position, not a cbor2 error."""
    for proof in (b"\x9f", b"\x81" * 1000, b"\xc5\x82\x1a\x7f\xff\xff\xff\x01"):
        vdp = {396: {-1: [proof]}}
        receipt = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), vdp, b"", b"\0" * 64]))
        registered = RegisteredStatement("ab" * 32, b"statement", receipt)
        assert registered.leaf_index is None
        assert registered.tree_size is None


# -- the environment and the URL ----------------------------------------------------------


@pytest.fixture
def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pem"
    path.write_text("not a certificate\n")
    return path


def _bad_ca_files(tmp_path: Path, garbage: Path) -> list[str]:
    return [str(tmp_path / "nonexistent.pem"), str(garbage), str(tmp_path)]


def test_a_bad_ssl_cert_file_is_a_config_error_for_https(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, garbage: Path
) -> None:
    for bad in _bad_ca_files(tmp_path, garbage):
        monkeypatch.setenv("SSL_CERT_FILE", bad)
        for make in (Client, AsyncClient):
            with pytest.raises(ConfigError) as caught:
                make("https://ts.example")
            assert caught.value.code == "config-error"
            assert f"$SSL_CERT_FILE ({bad}) cannot be used" in caught.value.message
            assert "\n" not in caught.value.message
            assert "SSL_CERT_FILE" in caught.value.hint
        # client_tls() reads it the same way; a CA file given is the caller's input.
        with pytest.raises(ConfigError, match=r"\$SSL_CERT_FILE"):
            client_tls()
        with pytest.raises(InvalidInput, match=r"the CA file .* cannot be used") as given:
            client_tls(ca=bad)
        assert given.value.code == "tls-files-invalid"
    # Unset, the default CAs are trusted, as before.
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with Client("https://ts.example") as client:
        assert client.base_url.scheme == "https"


def test_a_plain_http_clients_context_trusts_nothing() -> None:
    """The context an http:// client hands httpx is never used for the service; if it ever
    were (a proxy), it would verify, against no CA at all."""
    context = _client._tls_for(httpx.URL("http://127.0.0.1:9"), None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs() == []


@pytest.mark.parametrize("port", [0, 65536, 99999, 10**30])
def test_a_port_out_of_range_is_refused_when_the_client_is_made(port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    for make in (Client, AsyncClient):
        with pytest.raises(InvalidInput) as caught:
            make(url)
        assert caught.value.code == "url-invalid"
        if port < 10**6:
            assert f"1..65535, not {port}" in caught.value.message
    for url in ("http://127.0.0.1:1", "http://127.0.0.1:65535", "https://[::1]:8443"):
        with Client(url) as client:
            assert client.base_url.port in (1, 65535, 8443)


# -- the command line, against a server on loopback ---------------------------------------


class _Hostile(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``answer`` (status, media type, body)."""

    answer: ClassVar[tuple[int, str, bytes]] = (200, "application/json", b"{}")

    def _reply(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, media, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _reply

    def log_message(self, *_args: object) -> None:
        pass


@dataclass
class Fake:
    url: str
    handler: type[_Hostile]

    def answers(self, status: int, media: str, body: bytes) -> None:
        self.handler.answer = (status, media, body)


@pytest.fixture
def fake() -> Iterator[Fake]:
    handler = type("Handler", (_Hostile,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Fake(f"http://127.0.0.1:{server.server_address[1]}", handler)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``sealtrail ARGS...`` in this process, with an administrator token and no other
    client settings from the environment."""
    unset = ("SEALTRAIL_URL", "SEALTRAIL_TOKEN", "SEALTRAIL_CLIENT_CERT", "SEALTRAIL_CLIENT_KEY")
    run = in_process(capsys, monkeypatch, tmp_path, unset=unset)
    monkeypatch.setenv("SEALTRAIL_ADMIN_TOKEN", "admin-token")
    return run


def _one_line_error(result: Result, code: str) -> str:
    assert result.code == 1, result
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 2, result.err  # the error and its hint
    assert lines[0].startswith(f"error ({code}): "), lines[0]
    return lines[0]


COMMANDS = [
    ("query", "compliance"),
    ("query", "node", "SRV-1"),
    ("users", "list"),
    ("challenge", "SRV-1"),
]


@pytest.mark.parametrize(
    ("status", "media", "body"),
    [
        (200, "application/json", DEEP),
        (201, "application/json", DEEP),
        (400, PROBLEM_JSON, DEEP),
        (400, PROBLEM_JSON, DIGITS),
    ],
    ids=["deep", "deep-201", "deep-problem", "digits-problem"],
)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_cli_reports_an_unreadable_answer_in_one_line(
    fake: Fake,
    cli: Cli,
    command: tuple[str, ...],
    status: int,
    media: str,
    body: bytes,
) -> None:
    fake.answers(status, media, body)
    _one_line_error(cli(*command, "--url", fake.url), "service-error")


def test_a_bad_ssl_cert_file_does_not_stop_a_plain_http_client(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, garbage: Path
) -> None:
    view = b'{"servers": [], "size": 0}'
    fake.answers(200, "application/json", view)
    for bad in _bad_ca_files(tmp_path, garbage):
        monkeypatch.setenv("SSL_CERT_FILE", bad)
        with Client(fake.url) as client:
            assert client.compliance() == {"servers": [], "size": 0}

        async def run() -> None:
            async with AsyncClient(fake.url) as client:
                assert await client.compliance() == {"servers": [], "size": 0}

        asyncio.run(run())


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_ssl_cert_file_leaves_plain_http_commands_alone(
    fake: Fake,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    garbage: Path,
    command: tuple[str, ...],
) -> None:
    """Over http the variable is not read: the command gets the server's answer (here a
    refusal, one line with the service's code)."""
    fake.answers(403, PROBLEM_JSON, b'{"code": "forbidden", "detail": "not yours"}')
    for bad in _bad_ca_files(tmp_path, garbage):
        monkeypatch.setenv("SSL_CERT_FILE", bad)
        line = _one_line_error(cli(*command, "--url", fake.url), "forbidden")
        assert "not yours" in line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_ssl_cert_file_is_one_line_for_https_commands(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    garbage: Path,
    command: tuple[str, ...],
) -> None:
    for bad in _bad_ca_files(tmp_path, garbage):
        monkeypatch.setenv("SSL_CERT_FILE", bad)
        line = _one_line_error(cli(*command, "--url", "https://127.0.0.1:9"), "config-error")
        assert f"$SSL_CERT_FILE ({bad})" in line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_port_out_of_range_is_one_line(cli: Cli, command: tuple[str, ...]) -> None:
    line = _one_line_error(cli(*command, "--url", "http://127.0.0.1:99999"), "url-invalid")
    assert "port must be 1..65535" in line


def test_passport_export_reads_a_hostile_problem_and_a_bad_ssl_cert_file_in_one_line(
    fake: Fake,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    garbage: Path,
) -> None:
    """``passport export --url`` has an HTTP client of its own: the same answers."""
    for body in (DEEP, DIGITS):
        fake.answers(400, PROBLEM_JSON, body)
        line = _one_line_error(
            cli("passport", "export", "SRV-1", "--url", fake.url), "invalid-input"
        )
        assert "HTTP 400" in line
    fake.answers(403, PROBLEM_JSON, b'{"code": "forbidden", "detail": "not yours"}')
    for bad in _bad_ca_files(tmp_path, garbage):
        monkeypatch.setenv("SSL_CERT_FILE", bad)
        _one_line_error(cli("passport", "export", "SRV-1", "--url", fake.url), "forbidden")
        https = cli("passport", "export", "SRV-1", "--url", "https://127.0.0.1:9")
        assert f"$SSL_CERT_FILE ({bad})" in _one_line_error(https, "config-error")
