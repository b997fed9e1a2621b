"""`sealtrail demo`: what `make demo` runs, end to end against a real server process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(data_dir: Path) -> dict[str, object]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealtrail",
            "demo",
            "--data-dir",
            str(data_dir),
            "--exit",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert isinstance(summary, dict)
    return summary


@pytest.mark.slow
def test_demo_twice_reuses_the_data_directory_and_proves_growth(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    first = _demo(data)
    assert first["ok"] is True
    assert first["size"] == 5000
    assert str(first["url"]).startswith("http://127.0.0.1:")
    assert (data / "keys" / "log.key").stat().st_mode & 0o077 == 0
    second = _demo(data)  # reuses the directory; checks consistency with the pinned checkpoint
    assert second["ok"] is True
    assert second["size"] == 10000
    assert b"\n10000\n" in (data / "demo-pinned.checkpoint").read_bytes()


@pytest.mark.slow
def test_a_log_rewritten_behind_the_clients_back_is_caught(tmp_path: Path) -> None:
    # The operator throws the store away and starts over with the same key (a fork).
    data = tmp_path / "demo"
    _demo(data)
    for db in data.glob("log.db*"):
        db.unlink()
    run = subprocess.run(
        [sys.executable, "-m", "sealtrail", "demo", "--data-dir", str(data), "--exit", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "invalid-proof" in run.stderr
