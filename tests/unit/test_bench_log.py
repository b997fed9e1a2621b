"""`sealtrail bench log`: PostgreSQL figures beside SQLite's in one run; the append rounds."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sealtrail.cli import bench as bench_cli
from sealtrail.cli import main
from sealtrail.cli.bench import _bench_module, app


def test_a_store_that_is_not_postgresql_is_refused() -> None:
    result = CliRunner().invoke(app, ["log", "--store", "sqlite:///x.db"])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception)
    assert getattr(result.exception, "code", None) == "bench-bad-store"


def test_an_unreachable_postgresql_is_one_line_before_any_figure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Port 1 on loopback refuses at once: the URL is tried before the SQLite figures."""
    module = _bench_module("log", None)

    def started(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the benchmark started before the store was reached")

    monkeypatch.setattr(module, "_append_rounds", started)
    with pytest.raises(SystemExit) as exited:
        main(["bench", "log", "-q", "--store", "postgresql://alice:s3cret@127.0.0.1:1/x"])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and "s3cret" not in err
    assert "(config-error): cannot connect to PostgreSQL at postgresql://127.0.0.1:1/x" in err
    assert "password@" not in err  # the hint puts no password on a command line
    assert len(err.strip().splitlines()) == 2, err  # the error and its hint


@pytest.mark.parametrize("benchmark", ["log", "register", "provenance"])
def test_json_and_table_together_are_a_usage_error(
    benchmark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before the benchmark is even loaded, with exit status 2."""

    def loaded(*_args: object) -> None:
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(bench_cli, "_bench_module", loaded)
    result = CliRunner().invoke(app, [benchmark, "--json", "--table"])
    assert result.exit_code == 2, result.output
    assert "--table" in result.output and "with --json" in result.output


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
