"""`sealtrail bench log`: PostgreSQL figures beside SQLite's in one run; the append rounds."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sealtrail.cli.bench import _bench_module, app


def test_a_store_that_is_not_postgresql_is_refused() -> None:
    result = CliRunner().invoke(app, ["log", "--store", "sqlite:///x.db"])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception)
    assert getattr(result.exception, "code", None) == "bench-bad-store"


def test_the_report_never_shows_the_password() -> None:
    module = _bench_module("log", None)
    shown = module._redacted("postgresql://alice:s3cret@db.example:5433/ledger?sslmode=require")
    assert "s3cret" not in shown
    assert shown == "postgresql://alice:***@db.example:5433/ledger?sslmode=require"
    assert module._redacted("postgresql://127.0.0.1/test") == "postgresql://127.0.0.1/test"


def test_postgresql_figures_come_in_the_same_run(postgres_url: str) -> None:
    module = _bench_module("log", None)
    server = postgres_url.split("?", 1)[0]
    result = module.run(entries=2000, proofs=200, store=server, report=lambda *_: None)
    figures = result["figures"]
    assert figures["postgresql_append_entries_per_s"] > 0
    assert figures["append_entries_per_s"] > 0
    assert result["params"]["postgresql"] == server


def test_the_append_figures_are_medians_of_alternating_rounds() -> None:
    module = _bench_module("log", None)
    result = module.run(entries=2000, proofs=200, append_rounds=3, report=lambda *_: None)
    rounds = result["append_rounds"]
    assert len(rounds["sealtrail"]) == len(rounds["pymerkle"]) == 3
    figures = result["figures"]
    assert figures["append_entries_per_s"] == sorted(rounds["sealtrail"])[1]
    assert figures["peer_pymerkle_append_entries_per_s"] == sorted(rounds["pymerkle"])[1]
    assert result["params"]["append_rounds"] == 3


def test_the_inclusion_proof_figures_are_medians_of_alternating_rounds() -> None:
    module = _bench_module("log", None)
    result = module.run(entries=2000, proofs=200, append_rounds=3, report=lambda *_: None)
    figures = result["figures"]
    for key, suffix in (("proof_rounds", ""), ("warm_proof_rounds", "_warm")):
        rounds = result[key]
        assert sorted(rounds) == ["1e3", "2000"]
        for tag, rates in rounds.items():
            assert len(rates) == 3
            assert figures[f"inclusion_proofs_per_s_{tag}{suffix}"] == sorted(rates)[1]


def test_append_rounds_alternate_sides_each_on_a_settled_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _bench_module("log", None)
    calls: list[str] = []
    ours, peer, settle = module._append_sealtrail, module._append_pymerkle, module._settle_disk

    def traced(name: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(module, "_append_sealtrail", traced("ours", ours))
    monkeypatch.setattr(module, "_append_pymerkle", traced("peer", peer))
    monkeypatch.setattr(module, "_settle_disk", traced("settle", settle))
    with tempfile.TemporaryDirectory() as tmp:
        rates = module._append_rounds(Path(tmp), module._entries(300, 1), 3, "FULL", module._quiet)
        rates[2].close()
        rates[3].close()
        assert rates[4] is True
        left = sorted(p.name for p in Path(tmp).iterdir())
        assert left == ["log-2.db", "pymerkle-2.db"], "the last round's stores, nothing else"
    timed = [c for c in calls if c != "settle"]
    assert timed == ["ours", "peer", "peer", "ours", "ours", "peer"]
    assert calls == [x for c in timed for x in ("settle", c)]


def test_a_disk_without_room_to_settle_is_measured_anyway_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _bench_module("log", None)
    real_open = Path.open

    def full(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "settle.tmp":
            raise OSError(28, "No space left on device")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full)
    result = module.run(entries=500, proofs=50, append_rounds=1, report=lambda *_: None)
    assert result["params"]["disk_settled"] is False
    assert result["figures"]["append_entries_per_s"] > 0
