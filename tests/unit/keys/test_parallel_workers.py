"""The verification pool's workers do not outlive the process that started them, and a
script that does not guard its top level gets none (they would run it again)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

CHILD = """
import sys, time
from sealtrail.keys import parallel

if __name__ == "__main__":
    parallel.warm().result(timeout=30)
    pids = [p for pool in (parallel._signatures.executor,) for p in pool._processes]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie, waiting for an init that may not reap it, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _ignores(pid: int, sig: signal.Signals) -> bool:
    """Whether the process ignores ``sig`` (its SigIgn mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    raise AssertionError("no SigIgn line")


@contextlib.contextmanager
def _child_with_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """A process that started its signature workers, and their pids; killed afterwards."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={"SEALTRAIL_VERIFY_WORKERS": "2", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert pids, "the child started no worker"
        yield child, pids
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def test_workers_leave_ctrl_c_to_their_parent(tmp_path: Path) -> None:
    """Ctrl-C reaches a terminal's whole process group: the workers ignore it, and the
    parent shuts them down (no traceback from each, no pool broken under work)."""
    with _child_with_workers(tmp_path) as (child, pids):
        assert all(_ignores(pid, signal.SIGINT) for pid in pids)
        assert not _ignores(child.pid, signal.SIGINT)


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    with _child_with_workers(tmp_path) as (child, pids):
        assert all(_alive(pid) for pid in pids)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), "a worker outlived its parent"


UNGUARDED = """
from pathlib import Path
from sealtrail.keys import parallel

with Path(__file__).with_name("ran").open("a") as out:
    out.write("top level ran\\n")
print(parallel.warm(), parallel.workers(), parallel.main_is_guarded(), flush=True)
"""


def test_a_script_without_a_main_guard_gets_no_workers_and_runs_once(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SEALTRAIL_VERIFY_WORKERS": "2", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert done.stdout.split() == ["None", "0", "False"]
    assert (tmp_path / "ran").read_text() == "top level ran\n"  # once: no worker re-ran it
