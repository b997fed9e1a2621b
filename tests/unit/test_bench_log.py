"""`sealtrail bench log`: PostgreSQL figures beside SQLite's in one run; the append rounds."""

from __future__ import annotations

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
    rounds = result["proof_rounds"]
    assert sorted(rounds) == ["1e3", "2000"]
    figures = result["figures"]
    for tag, rates in rounds.items():
        assert len(rates) == 3
        assert figures[f"inclusion_proofs_per_s_{tag}"] == sorted(rates)[1]
