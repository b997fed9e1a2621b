"""Commands stopped while they start: Ctrl-C while the command line's modules load is quiet
(status 130, no traceback), and ``sealtrail demo`` stopped while its server starts stops
that server too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: Longest a command may take to end once signalled.
STOP_WAIT = 60.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")


def _env() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SEALTRAIL_DATA_DIR", None)
    return env


@pytest.mark.parametrize("delay", [0.2, 0.5])
def test_ctrl_c_while_the_command_loads_is_quiet(tmp_path: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealtrail", "--help"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=STOP_WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if b"Usage" in stdout:  # loaded and run (or ending) before the signal: nothing to see
        pytest.skip(f"the command had run within {delay} s")
    assert "Traceback" not in stderr.decode(), stderr.decode()
    assert proc.returncode == 130, (proc.returncode, stderr.decode())


def _servers(data_dir: Path) -> list[int]:
    """The processes serving ``data_dir`` (``sealtrail serve --data-dir data_dir``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if b"serve" in args and os.fsencode(data_dir) in args:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_stopped_while_its_server_starts_stops_the_server(
    tmp_path: Path, signum: signal.Signals
) -> None:
    data_dir = tmp_path / "demo"
    with (tmp_path / "demo.err").open("wb") as stderr:
        demo = subprocess.Popen(
            [sys.executable, "-m", "sealtrail", "demo", "-d", str(data_dir), "--port", "0"],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STOP_WAIT
        while not _servers(data_dir):
            assert demo.poll() is None, (tmp_path / "demo.err").read_text()
            assert time.monotonic() < deadline, "the demo started no server"
            time.sleep(0.02)
        # Past the interpreter's own start (a signal then is CPython's fatal error, whatever
        # the program does), well before the server answers (it loads for a second or more).
        time.sleep(0.5)
        demo.send_signal(signum)  # to the demo alone
        demo.wait(timeout=STOP_WAIT)
        said = (tmp_path / "demo.err").read_text()
        assert demo.returncode == 130, (demo.returncode, said)
        assert "Traceback" not in said, said
        # The demo waited for its server to end before it exited.
        assert _servers(data_dir) == [], "the demo left its server running"
        log = data_dir / "server.log"
        assert "Traceback" not in (log.read_text() if log.exists() else ""), log.read_text()
    finally:
        for pid in _servers(data_dir):
            os.kill(pid, signal.SIGKILL)
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
