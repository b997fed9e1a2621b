"""A server process puts what it built at start-up out of the garbage collector's way."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sealtrail.cli.serve as serve_cli
from sealtrail.cli import app
from sealtrail.service import settle_heap
from sealtrail.service._runtime import SERVER_GC_THRESHOLD
from tests._serve_proc import init_data


def test_settle_heap_freezes_what_exists_and_collects_young_objects_less_often() -> None:
    before, threshold = gc.get_freeze_count(), gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > before
        assert gc.get_threshold() == (SERVER_GC_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_serve_settles_the_heap_just_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = init_data(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(serve_cli, "settle_heap", lambda: calls.append("settle"))

    def run(_app: Any, **_kwargs: Any) -> None:
        calls.append("serve")

    monkeypatch.setattr(serve_cli, "run_server", run)
    result = CliRunner().invoke(app, ["serve", "-d", str(root / "d")])
    assert result.exit_code == 0, result.output
    assert calls == ["settle", "serve"]
