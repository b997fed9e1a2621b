"""``sealtrail serve`` in a child process, as a user runs it, and what tests do with it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from sealtrail.client import Client
from sealtrail.scitt import sign_statement
from tests.integration.test_cli import sealtrail
from tests.unit.scitt._pki import Issuer
from tests.unit.scitt.conftest import ISSUER, org_record

__all__ = [
    "COSE",
    "allow_anonymous",
    "bearer",
    "free_port",
    "init_data",
    "onboard",
    "register",
    "serve_process",
    "served",
    "statement_for",
    "token_file",
    "user_token",
]

COSE = {"content-type": "application/cose"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def served(
    data: Path,
    *args: str,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
) -> Iterator[str]:
    """``sealtrail serve`` in a child process on a free loopback port; stopped with SIGINT.

    With TLS configured, ``scheme="https"`` and ``verify`` (trusting the server's CA)."""
    with serve_process(data, *args, env=env, scheme=scheme, verify=verify) as (url, _):
        yield url


def interrupt(proc: subprocess.Popen[Any]) -> None:
    """Stop ``proc`` with SIGINT (as Ctrl-C would), killing it after 30 s, and close its
    pipes. A process that leads its own group (``start_new_session``) is killed with the
    group: a server it started and could not stop does not outlive the test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def serve_process(
    data: Path,
    *args: str,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The server's URL and process (a test may kill it); stopped with SIGINT if alive."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealtrail", "serve", "-d", "d", "--port", str(port), *args],
        cwd=data,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"serve exited: {stderr}")
            try:
                httpx.get(url + "/log/v1/info", timeout=1.0, verify=verify)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        yield url, proc
    finally:
        interrupt(proc)


def init_data(tmp_path: Path) -> tuple[Path, str]:
    """``sealtrail init -d d`` under ``tmp_path``: the folder and the administrator token."""
    result = sealtrail("init", "-d", "d", "--origin", "serve.test/log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stderr.strip().splitlines()[-1].strip()
    assert len(token) >= 40
    assert token not in result.stdout  # shown once, on stderr only
    return tmp_path, token


def allow_anonymous(data_dir: Path) -> None:
    """``[auth] required = false`` in the data directory's ``sealtrail.toml`` (``sealtrail
    init`` writes ``true``): the service open the way SCITT allows, for a test about
    something other than access control."""
    config = data_dir / "sealtrail.toml"
    text = config.read_text()
    assert "\nrequired = true\n" in text, "init no longer writes [auth] required = true"
    config.write_text(text.replace("\nrequired = true\n", "\nrequired = false\n"))


def user_token(url: str, admin_token: str, name: str, persona: str, org: str | None = None) -> str:
    """Make user ``name`` (``org``'s ``persona``) with the administrator token, and return
    a new token of theirs, valid a day."""
    with Client(url) as client:
        client.put_user(name, persona, org, token=admin_token)
        return client.issue_token(name, 1, token=admin_token).token


def token_file(path: Path, token: str) -> Path:
    """``token`` in a file only its owner reads (what ``--token-file`` wants)."""
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``token`` (none for ``None``)."""
    return {} if token is None else {"authorization": f"Bearer {token}"}


def statement_for(issuer: Issuer, n: int) -> bytes:
    return sign_statement(
        issuer.leaf_key,
        issuer=ISSUER,
        subject=f"urn:maker:device-{n}",
        content_type="application/json",
        payload=b'{"n": %d}' % n,
        x5chain=issuer.chain,
    )


def onboard(url: str, token: str, issuer: Issuer) -> None:
    r = httpx.put(
        url + "/admin/organizations/maker",
        content=org_record(issuer),
        headers={"authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text


def register(url: str, statement: bytes, token: str | None = None) -> tuple[str, bytes]:
    """``statement`` registered (with a user's ``token``): its entry id and receipt."""
    r = httpx.post(
        url + "/entries", content=statement, headers={**COSE, **bearer(token)}, timeout=30
    )
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[1], r.content
