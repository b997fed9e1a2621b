"""``sealtrail bench provenance`` at tiny sizes: the document's shape, and that the run did
what its figures claim (every statement applied by the index, the audit clean)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from sealtrail.cli.bench import _bench_module, app

BENCH = Path(__file__).resolve().parents[2] / "bench"

FIGURES = {
    "ceiling_p384_verifications_per_s",
    "ceiling_statement_verifications_per_s",
    "identities_ingested_per_s",
    "attestations_per_s",
    "rots_per_server",
    "attestation_rots_per_s",
    "audit_entries_per_s",
    "audit_signatures_per_s",
    "fsck_entries_per_s",
    "identities_vs_p384",
    "attestation_rots_vs_p384",
    "audit_vs_statement_ceiling",
    "audit_signatures_vs_p384",
}
TARGETS = {
    "identities_vs_p384",
    "attestation_rots_vs_p384",
    "audit_vs_statement_ceiling",
    "fsck_entries_per_s",
}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _bench_module("provenance", BENCH)


@pytest.fixture(scope="module")
def result(bench: ModuleType) -> dict[str, Any]:
    # Two manifests of 12 devices; 2 servers of 8 roots of trust attest 3 times each.
    out: dict[str, Any] = bench.run(
        manifests=2,
        devices=12,
        servers=2,
        rounds=3,
        fsck_entries=1000,
        p384_checks=20,
        workers=1,
        report=lambda *_: None,
    )
    return out


def test_the_document_has_the_shape_of_every_benchmark(result: dict[str, Any]) -> None:
    assert result["benchmark"] == "provenance"
    assert set(result) >= {"params", "machine", "figures", "targets", "targets_met", "limits"}
    assert set(result["figures"]) == FIGURES
    assert all(isinstance(v, int | float) for v in result["figures"].values())
    assert all(v > 0 for v in result["figures"].values())
    assert result["figures"]["rots_per_server"] == 8
    assert set(result["targets"]) == set(result["targets_met"]) == TARGETS
    assert all(isinstance(v, bool) for v in result["targets_met"].values())
    json.dumps(result)  # JSON all the way down


def test_the_ratios_are_computed_from_the_figures(result: dict[str, Any]) -> None:
    f = result["figures"]
    p384 = f["ceiling_p384_verifications_per_s"]
    assert f["attestation_rots_per_s"] == pytest.approx(f["attestations_per_s"] * 8, rel=1e-3)
    assert f["identities_vs_p384"] == pytest.approx(f["identities_ingested_per_s"] / p384, 1e-2)
    assert f["attestation_rots_vs_p384"] == pytest.approx(f["attestation_rots_per_s"] / p384, 1e-2)
    assert f["audit_vs_statement_ceiling"] == pytest.approx(
        f["audit_entries_per_s"] / f["ceiling_statement_verifications_per_s"], rel=1e-2, abs=1e-3
    )
    met = result["targets_met"]
    for name, target in result["targets"].items():
        assert met[name] == (f[name] >= target)


def test_the_limits_are_reported(result: dict[str, Any]) -> None:
    limits = result["limits"]
    assert limits["max_statement_size"] == limits["default_max_statement_size"] == 16 << 20
    assert limits["maker_policy_max_size"] == limits["max_statement_size"]


def test_everything_registered_was_applied_by_the_index(result: dict[str, Any]) -> None:
    checks, params = result["checks"], result["params"]
    assert checks["manifests_applied"] == params["manifests"] == 2
    assert checks["devices_indexed"] == 2 * 12
    assert checks["setup_applied"] == 1 + 2  # the firmware release and one assembly per server
    assert checks["attestations_applied"] == params["attestations"] == 2 * 3
    assert checks["servers_affirming"] == 2


def test_the_audit_checked_the_whole_log_and_found_nothing(result: dict[str, Any]) -> None:
    checks = result["checks"]
    # 3 organization records, 2 manifests, 1 release, 2 assemblies, 6 attestations.
    assert checks["log_size"] == result["params"]["statements"]["log_entries"] == 14
    assert checks["audit_entries"] == checks["audit_statements_verified"] == 14
    assert checks["audit_findings"] == 0, checks["audit_first_findings"]


def test_the_statement_limits_are_the_services_own(result: dict[str, Any]) -> None:
    from sealtrail.config import DEFAULT_MAX_STATEMENT_SIZE

    assert result["limits"]["max_statement_size"] <= DEFAULT_MAX_STATEMENT_SIZE


def test_too_few_devices_for_the_servers_is_refused(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="devices"):
        bench.run(manifests=1, devices=8, servers=2, report=lambda *_: None)


def test_the_command_is_registered_with_its_options() -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["provenance", "--help"], env={"COLUMNS": "200"}).output
    for option in (
        "--manifests",
        "--devices",
        "--servers",
        "--rounds",
        "--fsck-entries",
        "--p384-checks",
        "--json",
        "--table",
        "--quiet",
    ):
        assert option in help_text


def test_the_command_prints_the_document_as_json() -> None:
    runner = CliRunner()
    args = ["provenance", "--json", "-q", "--bench-dir", str(BENCH)]
    args += ["--manifests", "1", "--devices", "8", "--servers", "1", "--rounds", "1"]
    args += ["--fsck-entries", "1000", "--p384-checks", "100"]
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    doc = json.loads(outcome.stdout)
    assert doc["benchmark"] == "provenance"
    assert doc["checks"]["audit_findings"] == 0
    assert doc["checks"]["attestations_applied"] == 1
