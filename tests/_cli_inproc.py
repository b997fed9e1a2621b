"""``sealtrail`` run in the test's own process (fast, no subprocess), and the shape of a
clean one-line error, for the tests of the command line."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealtrail.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


def in_process(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: Path,
    *,
    unset: Iterable[str] = ("SEALTRAIL_URL", "SEALTRAIL_DATA_DIR", "SEALTRAIL_TOKEN"),
) -> Cli:
    """``sealtrail ARGS...`` in this process, run from ``where``, with ``unset`` left out of
    the environment."""
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(where)

    def run(*args: str | Path) -> Result:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (1 if exc.code else 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def assert_clean_error(result: Result, code: str) -> str:
    """Exit 1, no traceback, and exactly one ``error (<code>): ...`` line; returns it."""
    assert result.code == 1, result
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.startswith("error ")]
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"error ({code}): "), result.err
    return lines[0]
