"""``sealtrail serve`` where it cannot listen: a port in use, a host that does not resolve,
an address not of this machine. Each is one ``error (<code>): ...`` line (and its hint),
exit status 1, before the server starts anything, and the data directory is unchanged."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._serve_proc import init_data
from tests.integration.test_cli import sealtrail


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder, _ = init_data(tmp_path_factory.mktemp("serve-bind"))
    return folder


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _files(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _one_line(result: subprocess.CompletedProcess[str], code: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "ERROR" not in result.stderr, result.stderr  # uvicorn's own line
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error (")]
    assert len(errors) == 1 and errors[0].startswith(f"error ({code}): "), result.stderr
    assert lines[-1].startswith("hint: "), result.stderr


@pytest.mark.parametrize(
    ("where", "code"),
    [
        (("--port", "taken"), "port-in-use"),
        (("--host", "nohost.invalid", "--port", "0"), "host-unknown"),
        (("--host", "a b", "--port", "0"), "host-unknown"),
        (("--host", "192.0.2.1", "--port", "0"), "bind-failed"),
    ],
    ids=["port in use", "host unknown", "host with a space", "address not of this machine"],
)
def test_serve_where_it_cannot_listen_is_one_line(
    root: Path, taken: int, where: tuple[str, ...], code: str
) -> None:
    args = [str(taken) if arg == "taken" else arg for arg in where]
    before = _files(root / "d")
    result = sealtrail("serve", "-d", "d", *args, cwd=root)
    _one_line(result, code)
    assert "Serving" not in result.stderr and "Receipts signed" not in result.stderr
    assert _files(root / "d") == before


def test_a_port_taken_after_the_check_is_one_line_too(root: Path, taken: int) -> None:
    """The port taken while the server starts (here: not checked before) is uvicorn's
    failure to bind, said as the same one line."""
    program = (
        "import sealtrail.cli.serve as serve\n"
        "serve._check_address = lambda host, port: None\n"
        "from sealtrail.cli import main\n"
        f"main(['serve', '-d', 'd', '--port', '{taken}'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=root,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _one_line(result, "port-in-use")
