"""The bound on a request's head (``service._head``), over a real loopback socket: a head
over :data:`MAX_REQUEST_HEAD` is refused with problem details at once, however it arrives,
and the server goes on answering; a head within it, and requests around it on one
connection, are served as before."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from sealtrail.service import MAX_REQUEST_HEAD, server_config

#: Longest a refusal may take: a head of any size is refused within one read of the bound.
QUICK = 2.0


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = FastAPI()

    @app.api_route("/echo", methods=["GET", "POST"])
    async def echo(request: Request) -> dict[str, int]:
        return {"body": len(await request.body()), "headers": len(request.headers)}

    server = uvicorn.Server(
        server_config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(timeout=20)


def _exchange(port: int, *parts: bytes, repeat: tuple[bytes, int] = (b"", 0)) -> bytes:
    """Send ``parts`` (``repeat``'s piece that many times after the first part), then read
    until the server closes; what it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=QUICK * 5) as sock:
        try:
            sock.sendall(parts[0])
            piece, times = repeat
            for _ in range(times):
                sock.sendall(piece)
            for part in parts[1:]:
                sock.sendall(part)
        except OSError:  # refused mid-send: the answer is still there to read
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def _problem(answer: bytes, status: int, code: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["code"] == code
    assert b"aaaa" not in body  # nothing of the request echoed


def _get(target: bytes, *fields: bytes) -> bytes:
    return (
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: x\r\n"
        + b"".join(fields)
        + b"Connection: close\r\n\r\n"
    )


def test_a_head_within_the_bound_is_served(port: int) -> None:
    near = MAX_REQUEST_HEAD - 1024
    answer = _exchange(port, _get(b"/echo", b"X-Big: " + b"a" * near + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    answer = _exchange(port, _get(b"/echo?" + b"a" * near))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.mark.parametrize(
    ("request_head", "status", "code"),
    [
        (
            _get(b"/echo", b"X-Big: " + b"a" * (MAX_REQUEST_HEAD + 1024) + b"\r\n"),
            431,
            "headers-too-large",
        ),
        (_get(b"/echo", *(b"X-%d: aaaa\r\n" % i for i in range(8000))), 431, "headers-too-large"),
        (_get(b"/echo?" + b"a" * (MAX_REQUEST_HEAD + 1024)), 414, "uri-too-long"),
    ],
    ids=["one large header", "many headers", "long target"],
)
def test_a_head_over_the_bound_is_refused(
    port: int, request_head: bytes, status: int, code: str
) -> None:
    _problem(_exchange(port, request_head), status, code)


@pytest.mark.parametrize(
    ("first", "last", "status", "code"),
    [
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ", b"\r\n\r\n", 431, "headers-too-large"),
        (b"GET /echo?", b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri-too-long"),
    ],
    ids=["header", "target"],
)
def test_a_huge_head_sent_in_pieces_is_refused_at_once_and_the_server_goes_on(
    port: int, first: bytes, last: bytes, status: int, code: str
) -> None:
    """32 MiB in 64 KiB pieces: unbounded, each piece was appended to all the ones before it
    (seconds of the event loop's time, every other client stalled)."""
    started = time.monotonic()
    answer = _exchange(port, first, last, repeat=(b"a" * 65536, 512))
    assert time.monotonic() - started < QUICK
    _problem(answer, status, code)
    assert httpx.get(f"http://127.0.0.1:{port}/echo", timeout=QUICK).status_code == 200


def test_requests_on_one_connection_are_counted_each_from_its_own_start(port: int) -> None:
    """Keep-alive and pipelining: a large body followed by the next request's head in the
    same reads is not counted as that head."""
    body = b"z" * (4 * MAX_REQUEST_HEAD)
    post = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    near = b"X-Big: " + b"a" * (MAX_REQUEST_HEAD - 1024) + b"\r\n"
    answer = _exchange(port, post + body + post + body + _get(b"/echo", near))
    assert answer.count(b"HTTP/1.1 200 ") == 3, answer[:300]
    assert answer.count(b'"body":%d' % len(body)) == 2


def test_a_request_whose_body_arrives_with_its_head_is_answered(port: int) -> None:
    """A request whole in one read (a body past the bound included) is answered: its body
    is not counted as the next head's (it was, and the connection closed unanswered after
    the app had handled it)."""
    for size in (MAX_REQUEST_HEAD + 1, 70_000, 100_000, 2 * MAX_REQUEST_HEAD, 200_000):
        body = b"z" * size
        post = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % size
        )
        answer = _exchange(port, post + body)
        assert answer.startswith(b"HTTP/1.1 200 "), (size, answer[:200])
        assert b'"body":%d' % size in answer
