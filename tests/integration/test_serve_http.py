"""``sealtrail serve`` against clients that lie about themselves at the HTTP level, over
real sockets: a request head far over the bound (docs/limits.md, "HTTP requests") is
refused at once and the server goes on answering everyone else; a forwarding header
(``X-Forwarded-For``) buys no new rate budget, whoever sends it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sealtrail.service import MAX_REQUEST_HEAD
from tests._serve_proc import COSE, init_data, served

#: Longest a refused head may take to be answered, and the server to answer the next one.
QUICK = 2.0


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sealtrail serve`` (tokens required, as ``init`` writes) allowing each client one
    write a second, in bursts of two."""
    root, _ = init_data(tmp_path_factory.mktemp("serve-http"))
    config = root / "d" / "sealtrail.toml"
    text = config.read_text()
    assert "\nrate_limit_writes = " in text
    lines = [
        "rate_limit_writes = 1" if line.startswith("rate_limit_writes = ") else line
        for line in text.splitlines()
    ]
    config.write_text("\n".join(lines) + "\n")
    with served(Path(root)) as base:
        yield base


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _refused(url: str, first: bytes, last: bytes) -> tuple[float, bytes]:
    """Send ``first``, 64 MiB in 1 MiB pieces, then ``last``: the seconds until the server
    answered and closed, and its answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=30) as sock:
        try:
            sock.sendall(first)
            piece = b"a" * (1 << 20)
            for _ in range(64):
                sock.sendall(piece)
            sock.sendall(last)
        except OSError:  # the server refused and closed while this was still sending
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return time.monotonic() - started, answer


@pytest.mark.parametrize(
    ("first", "last", "status", "code"),
    [
        (b"GET /log/v1/info HTTP/1.1\r\nHost: x\r\nX-Big: ", b"\r\n\r\n", 431, "headers-too-large"),
        (b"GET /log/v1/info?", b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri-too-long"),
    ],
    ids=["64 MiB header", "64 MiB target"],
)
def test_a_huge_request_head_is_refused_at_once_and_the_server_goes_on(
    url: str, first: bytes, last: bytes, status: int, code: str
) -> None:
    took, answer = _refused(url, first, last)
    assert took < QUICK, f"{took:.1f} s to refuse a huge head"
    if answer:  # else the connection was reset under the client still sending: refused too
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), head
        assert json.loads(body)["code"] == code
    started = time.monotonic()
    assert httpx.get(url + "/log/v1/info", timeout=QUICK).status_code == 200
    assert time.monotonic() - started < QUICK


def test_a_head_just_over_the_bound_is_answered_431(url: str) -> None:
    big = b"X-Big: " + b"a" * MAX_REQUEST_HEAD + b"\r\n"
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=QUICK) as sock:
        sock.sendall(b"GET /log/v1/info HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["code"] == "headers-too-large"


def test_x_forwarded_for_buys_no_new_budget(url: str) -> None:
    """uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 unless told not to: a client on
    the server's host (or a proxy there passing the header on) would have named a new
    address, and got a new budget, with every request."""
    time.sleep(2.5)  # a full bucket
    statuses = [
        httpx.post(
            url + "/entries",
            content=b"\xa0",
            headers={
                "content-type": COSE["content-type"],
                "x-forwarded-for": f"192.0.2.{i}",
                "forwarded": f"for=192.0.2.{i}",
            },
            timeout=QUICK,
        ).status_code
        for i in range(4)
    ]
    # Tokens are required: the anonymous writes are refused (401) until the address's
    # budget (two at once) is spent, whatever address the header names.
    assert statuses[:2] == [401, 401], statuses
    assert statuses[2:] == [429, 429], statuses
