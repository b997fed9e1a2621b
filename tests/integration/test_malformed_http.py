"""Requests the HTTP parser refuses, over real sockets: each is answered 400
``http-malformed`` as problem details (never the HTTP server's plain text), its connection
closed, nothing stored, no traceback logged, and the server goes on answering."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from sealtrail.storage import MemoryStore
from tests._server import serve_in_thread

from .conftest import service_application, snapshot

#: Longest the server may take to answer and close.
QUICK = 5.0


class _Records(logging.Handler):
    """Every record the HTTP server logs (its logger does not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, MemoryStore, _Records]]:
    """The full service over a memory store, on a free loopback port; what it logs."""
    store = MemoryStore()
    records = _Records()
    with serve_in_thread(service_application(store)) as base:
        logger = logging.getLogger("uvicorn.error")
        logger.addHandler(records)
        try:
            yield int(base.rsplit(":", 1)[1]), store, records
        finally:
            logger.removeHandler(records)
    store.close()


def _exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` (``pause`` seconds after each), then read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=QUICK) as sock:
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:  # closed while still sending: the answer is there to read
                break
            time.sleep(pause)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def _malformed(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 400 bad request", answer[:300]
    assert b"content-type: application/problem+json" in lines
    assert b"connection: close" in lines
    assert b"cache-control: no-store" in lines
    problem = json.loads(body)
    assert problem["code"] == "http-malformed"
    assert problem["type"] == "urn:sealtrail:error:http-malformed"
    assert problem["status"] == 400


def _quiet(records: _Records, since: int) -> None:
    """Nothing at ERROR, and no traceback, logged since record ``since``."""
    time.sleep(0.3)  # a route still running when its connection closed has ended
    bad = [r for r in records.records[since:] if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def _still_serving(port: int) -> None:
    assert httpx.get(f"http://127.0.0.1:{port}/log/v1/info", timeout=QUICK).status_code == 200


_POST = b"POST /entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/cose\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"HELLO WORLD\r\n\r\n",
        b"GET /log/v1/info HTTP/9.9\r\nHost: x\r\n\r\n",
        _POST + b"Content-Length: -1\r\n\r\n",
        _POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        _POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"GET /log/v1/info HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
        b"GET /log/v1/info HTTP/1.1\r\nHost: x\r\nIf-None-Match: a\x7fb\r\n\r\n",
        b"GET /log/v1/info HTTP/1.1\r\nHost: x\r\nX-Field: a\x01b\r\n\r\n",
        b"GET /log\x00/v1/info HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://[x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /log/v1/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=[
        "garbage request line",
        "HTTP/9.9",
        "Content-Length -1",
        "Content-Length and Transfer-Encoding",
        "bad chunk size",
        "space in a header name",
        "DEL in a header value",
        "control byte in a header value",
        "NUL in the path",
        "unparsable target",
        "non-ASCII path",
    ],
)
def test_a_malformed_request_is_a_problem(
    server: tuple[int, MemoryStore, _Records], request_bytes: bytes
) -> None:
    port, store, records = server
    before, since = snapshot(store), len(records.records)
    _malformed(_exchange(port, request_bytes))
    assert snapshot(store) == before
    _quiet(records, since)
    _still_serving(port)


def test_a_body_malformed_while_the_route_reads_it_is_a_problem(
    server: tuple[int, MemoryStore, _Records],
) -> None:
    """The route has the request and waits for its body when the bad chunk comes: it is
    told the client went away, and the 400 is the request's one answer."""
    port, store, records = server
    before, since = snapshot(store), len(records.records)
    answer = _exchange(
        port, _POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n\xd2\x84\r\n", b"zz\r\n", pause=0.3
    )
    _malformed(answer)
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert snapshot(store) == before
    _quiet(records, since)
    _still_serving(port)


def test_a_malformed_request_after_a_good_one_on_its_connection(
    server: tuple[int, MemoryStore, _Records],
) -> None:
    """The good one answered, then the bad one: the problem, and the connection closes."""
    port, _, records = server
    since = len(records.records)
    good = b"GET /log/v1/info HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _exchange(port, good, b"GET /log/v1/info HTTP/9.9\r\n\r\n", pause=0.3)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 "), answer[:300]
    length = int(
        next(
            line for line in first.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ).split(b":")[1]
    )
    _malformed(rest[length:])
    _quiet(records, since)


def test_a_malformed_request_pipelined_behind_an_unanswered_one_just_closes(
    server: tuple[int, MemoryStore, _Records],
) -> None:
    """No answer can be slipped in before the first one's: the connection closes, and
    nothing it sends is the HTTP server's plain text."""
    port, _, records = server
    since = len(records.records)
    answer = _exchange(port, b"GET /log/v1/info HTTP/1.1\r\nHost: x\r\n\r\nHELLO\r\n\r\n")
    assert b"text/plain" not in answer.lower(), answer[:300]
    assert b"400" not in answer.split(b"\r\n", 1)[0], answer[:300]
    _quiet(records, since)
    _still_serving(port)
