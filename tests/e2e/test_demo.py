"""`sealtrail demo`: what `make demo` runs — a fleet's journey, every attack and a passport,
end to end against a real `sealtrail serve` process on loopback."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._serve_proc import interrupt

#: What Sealtrail must report for each attack on the demo's fleet (seed 1), exactly.
EXPECTED = {
    "rogue-device": "assembly-unknown-device",
    "cloned-identity": "manifest-cloned-device",
    "unregistered-device-ca": "manifest-device-untrusted",
    "forged-manifest": "chain-untrusted",
    "swapped-blade": "attestation-result-mismatch (device-not-in-assembly)",
    "tampered-firmware": "attestation-result-mismatch (measurement-unknown)",
    "evidence-other-key": "attestation-result-mismatch (evidence-bad-signature)",
    "replayed-nonce": "attestation-nonce-replayed",
    "stale-attestation": "compliance-stale-attestation",
    "broken-seal": "arrival-contradicts-custody (seal-broken:s1-lab-sealed-seal-b)",
    "changed-contents": "arrival-contradicts-custody "
    "(contents-missing:s1-lab-boxed-rack, contents-extra:s1-lab-decoy)",
    "database-row-edited": "row compliance/s1-lab-sealed: edited behind the log",
    "receipt-edited": "receipt-bad-signature",
    "passport-edited": "passport-bad-seal",
}


def _demo(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sealtrail", "demo", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=data_dir.parent,
    )


def _lines(stdout: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    docs = [json.loads(line) for line in stdout.strip().splitlines()]
    *scenarios, last = docs
    assert set(last) == {"summary"}
    summary = last["summary"]
    assert isinstance(summary, dict)
    return scenarios, summary


@pytest.mark.slow
def test_the_demo_runs_the_journey_and_catches_every_attack(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    run = _demo(data, "--exit", "--json", "--port", "0")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Traceback" not in run.stderr
    scenarios, summary = _lines(run.stdout)
    for doc in scenarios:
        assert set(doc) == {"name", "expected", "reported", "caught"}
    found = {str(d["name"]): d for d in scenarios}
    assert list(found) == list(EXPECTED)
    for name, expected in EXPECTED.items():
        assert found[name]["expected"] == expected, name
        assert found[name]["reported"] == expected, name
        assert found[name]["caught"] is True, name
    assert summary["ok"] is True
    assert str(summary["url"]).startswith("http://127.0.0.1:")
    journey = summary["journey"]
    assert isinstance(journey, dict)
    # 2 racks x 2 servers x 4 RoTs: 4 releases, 6 manifests, 8 boards and blades, 4
    # servers, 2 racks, 4 custody records and 6 statements per server.
    assert journey["organizations"] == 6 and journey["statements"] == 52
    passport = summary["passport"]
    assert isinstance(passport, dict)
    assert passport["verified"] is True and passport["compliance"] == "production"
    assert Path(str(passport["file"])).is_file()
    assert summary["log"] == {
        "size": summary["log"]["size"],  # type: ignore[index]
        "before_attacks": summary["log"]["before_attacks"],  # type: ignore[index]
        "consistent": True,
    }
    assert float(summary["seconds"]) < 120  # type: ignore[arg-type]
    # The server was stopped and its state file removed; the secrets are private.
    assert not (data / "demo-server.json").exists()
    for secret in ("admin.token", "auditor.token", "keys/log.key", "keys/service.key"):
        assert (data / secret).stat().st_mode & 0o077 == 0, secret

    # A second run starts clean: a new ledger, the same findings.
    again = _demo(data, "--exit", "--json", "--port", "0")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Starting clean" in again.stderr
    scenarios, summary = _lines(again.stdout)
    assert {str(d["name"]): d["reported"] for d in scenarios} == EXPECTED
    assert summary["ok"] is True


def _try_lines(proc: subprocess.Popen[str]) -> list[str]:
    """The commands the demo prints under "Try:", read until it waits for Ctrl-C."""
    assert proc.stdout is not None
    lines: list[str] = []
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if "Press Ctrl-C" in line:
            return lines
        if line.rstrip().endswith("Try:"):
            lines = []
        elif line.startswith("  "):
            lines.append(line.strip())
    raise AssertionError("the demo ended without waiting: " + "".join(seen)[-4000:])


@pytest.mark.slow
def test_the_commands_the_demo_prints_work_as_printed(tmp_path: Path) -> None:
    """The demo's server requires tokens (as `sealtrail init` writes it): the queries it
    suggests carry the auditor's token file, and answer."""
    data = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("SEALTRAIL_URL", "SEALTRAIL_TOKEN", "SEALTRAIL_ADMIN_TOKEN"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealtrail", "demo", "--data-dir", str(data), "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # killed with its server, should it not stop (interrupt)
    )

    def run(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
        """A printed ``sealtrail`` command, as a user would run it against ``url``."""
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=tmp_path,
            env={**env, "SEALTRAIL_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    try:
        commands = _try_lines(proc)
        assert commands[0].startswith("export SEALTRAIL_URL=http://127.0.0.1:")
        url = commands[0].split("=", 1)[1]
        ran = 0
        for command in commands[1:]:
            args = shlex.split(command)
            if args[0] == "curl":
                assert httpx.get(args[-1]).status_code == 200, command
                continue
            assert args[0] == "sealtrail", command
            if args[1] == "sim":
                continue  # a fleet of 3,200 devices: minutes, and tested in test_sim_fleet
            result = run(args, url)
            assert result.returncode == 0, (command, result.stderr)
            ran += 1
        assert ran == 5, commands  # three queries, passport verify, audit
        queries = [c for c in commands if " query " in c]
        assert queries and all(f"--token-file {data / 'auditor.token'}" in c for c in queries)
        # Without the auditor's token, the same query is refused: tokens are required.
        args = shlex.split(queries[0])
        anonymous = run(args[: args.index("--token-file")], url)
        assert anonymous.returncode == 1 and "(token-required)" in anonymous.stderr
    finally:
        interrupt(proc)
    assert proc.returncode == 0


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def _listening() -> Iterator[int]:
    """Something answering HTTP on a loopback port, as a previous demo's server would."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_previous_demo_still_running_is_said_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    data.mkdir()
    (data / "sealtrail.toml").write_text("# the previous demo's\n")
    with _listening() as port:
        state = {"pid": os.getpid(), "url": f"http://127.0.0.1:{port}"}
        (data / "demo-server.json").write_text(json.dumps(state))
        run = _demo(data, "--exit", timeout=60)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "the previous demo's server is still running" in run.stderr
    assert f"kill {os.getpid()}" in run.stderr
    assert (data / "sealtrail.toml").exists()  # nothing deleted


def test_a_port_in_use_is_said_clearly(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        run = _demo(tmp_path / "demo", "--exit", "--port", str(port), timeout=60)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "port-in-use" in run.stderr and f"port {port}" in run.stderr


def test_a_directory_that_is_not_the_demos_is_never_deleted(tmp_path: Path) -> None:
    data = tmp_path / "precious"
    data.mkdir()
    (data / "thesis.txt").write_text("do not delete")
    run = _demo(data, "--exit", timeout=60)
    assert run.returncode == 1
    assert "not a demo data directory" in run.stderr
    assert (data / "thesis.txt").read_text() == "do not delete"
