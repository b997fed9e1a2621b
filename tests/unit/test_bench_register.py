"""`sealtrail bench register`: the capacity sweep and its peak figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from sealtrail.cli import main
from sealtrail.cli.bench import _bench_module, app
from sealtrail.service import MAX_REQUEST_HEAD


def _row(connections: int, rate: float, failed: int = 0, p99: float = 20.0) -> dict[str, Any]:
    return {
        "connections": connections,
        "registrations_per_s": rate,
        "p50_ms": 10.0,
        "p99_ms": p99,
        "failed": failed,
    }


def test_the_peak_is_the_best_level_that_registered_everything_in_time() -> None:
    module = _bench_module("register", None)
    sweep = {
        # Faster still at 512 connections, but past the latency target: not a peak.
        "sqlite": [_row(64, 2000.0), _row(128, 2400.0), _row(256, 2300.0), _row(512, 9e3, p99=251)],
        # The fastest level lost registrations: it is not a peak.
        "postgresql": [_row(64, 1600.0), _row(128, 2600.0), _row(256, 3000.0, failed=3)],
    }
    peaks = module._peaks(sweep)
    assert peaks["http_peak_registrations_per_s"] == 2400.0
    assert peaks["http_peak_connections"] == 128
    assert peaks["postgresql_http_peak_registrations_per_s"] == 2600.0
    assert peaks["postgresql_http_peak_connections"] == 128
    assert peaks["postgresql_peak_ratio"] == round(2600 / 2400, 3)


def test_no_peak_without_a_clean_level() -> None:
    module = _bench_module("register", None)
    peaks = module._peaks({"sqlite": [_row(64, 2000.0)], "postgresql": [_row(64, 1.0, 1)]})
    assert peaks == {"http_peak_registrations_per_s": 2000.0, "http_peak_connections": 64}


def test_each_http_figure_is_its_median_round_as_measured() -> None:
    module = _bench_module("register", None)

    def one(rate: float, p99: float) -> Any:
        return (None, {"registrations_per_s_http": rate, "http_p99_ms": p99}, {})

    rounds = [one(2100.0, 80.0), one(1900.0, 95.0), one(2300.0, 70.0)]
    assert module._median_round(rounds)[1] == {
        "registrations_per_s_http": 2100.0,
        "http_p99_ms": 80.0,
    }
    assert module._median_round(rounds[:2])[1]["registrations_per_s_http"] == 1900.0


@pytest.mark.parametrize("given", ["0", "abc", "64,-1", "4096", "1.5"])
def test_bad_connection_counts_are_refused(given: str) -> None:
    result = CliRunner().invoke(app, ["register", "--peak-connections", given])
    assert result.exit_code != 0
    assert getattr(result.exception, "code", None) == "bench-bad-connections"


def test_the_sweep_runs_both_deployments_at_each_level(postgres_url: str) -> None:
    module = _bench_module("register", None)
    server = postgres_url.split("?", 1)[0]
    result = module.run(
        statements=200,
        tasks=16,
        connections=4,
        store=server,
        api_processes=2,
        peak_connections=(8,),
        rounds=2,
        report=lambda *_: None,
    )
    sweep = result["sweep"]
    for backend in ("sqlite", "postgresql"):
        assert [row["connections"] for row in sweep[backend]] == [4, 8]
        assert all(row["failed"] == 0 and row["registrations_per_s"] > 0 for row in sweep[backend])
    figures = result["figures"]
    assert figures["postgresql_peak_ratio"] > 0
    rounds = result["rounds"]
    assert rounds["failed"] == [0, 0]
    mine, theirs = rounds["postgresql_registrations_per_s"], rounds["sqlite_registrations_per_s"]
    assert figures["postgresql_registrations_per_s_http"] == min(mine)  # the lower middle
    assert figures["registrations_per_s_http"] == min(theirs)
    ratios = [p / s for p, s in zip(mine, theirs, strict=True)]
    assert rounds["ratios"] == [round(r, 3) for r in ratios]
    assert figures["postgresql_http_ratio"] == round(sum(ratios) / 2, 3)
    assert figures["http_peak_connections"] in (4, 8)
    assert result["params"]["peak_connections"] == [4, 8]


def test_an_unreachable_postgresql_is_one_line_before_any_figure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Port 1 on loopback refuses at once: the URL is tried before the SQLite figures."""
    module = _bench_module("register", None)

    def started() -> None:
        raise AssertionError("the benchmark started before the store was reached")

    monkeypatch.setattr(module.Pki, "make", started)
    with pytest.raises(SystemExit) as exited:
        main(["bench", "register", "-q", "--store", "postgresql://alice:s3cret@127.0.0.1:1/x"])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and "s3cret" not in err
    assert "(config-error): cannot connect to PostgreSQL at postgresql://127.0.0.1:1/x" in err
    assert len(err.strip().splitlines()) == 2, err  # the error and its hint


def test_the_benchmark_server_runs_as_sealtrail_serve_does(tmp_path: Path) -> None:
    """bench/register.py's server is set up by ``server_config``: httptools with the request
    head bounded (a head over it is refused 431), as users' servers run."""
    module = _bench_module("register", None)
    keys = module._write_keys(tmp_path / "keys")
    server = module._start_server(str(tmp_path / "s.db"), keys, "a-token")
    try:
        assert server.settings["http"] == "httptools"
        url = f"http://127.0.0.1:{server.port}"
        assert httpx.get(url + "/.well-known/scitt-keys", timeout=10).status_code == 200
        big = httpx.get(
            url + "/.well-known/scitt-keys", headers={"x-big": "a" * MAX_REQUEST_HEAD}, timeout=10
        )
        assert big.status_code == 431
        assert big.json()["code"] == "headers-too-large"
    finally:
        server.stop()
    assert server.process.returncode == 0
