"""`sealtrail sim fleet`: a fleet's whole journey through a real server's HTTP API, on a
data directory as `sealtrail init` makes it (tokens required)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sealtrail.client import Client
from tests._serve_proc import bearer, init_data, served, token_file, user_token


def _sim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SEALTRAIL_ADMIN_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "sealtrail", "sim", "fleet", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.mark.slow
def test_a_fleet_goes_to_production_through_http_and_a_seed_is_one_fleet(tmp_path: Path) -> None:
    root, token = init_data(tmp_path)
    assert "\nrequired = true\n" in (root / "d" / "sealtrail.toml").read_text()
    admin = token_file(root / "admin.token", token)
    shape = ("--racks", "2", "--servers-per-rack", "3", "--rots-per-server", "3", "--seed", "5")
    with served(root) as url:
        run = _sim(*shape, "--url", url, "--token-file", str(admin), "--json", cwd=root)
        assert run.returncode == 0, run.stderr[-3000:]
        doc = json.loads(run.stdout)
        assert doc["fleet"]["devices"] == 18 and doc["fleet"]["servers"] == 6
        journey = doc["journey"]
        phases = {p["name"]: p["statements"] for p in journey["phases"]}
        assert phases["organizations"] == 6
        assert journey["users"] == 6 and phases["users"] == 6 * 2  # each user, its token
        assert phases["arrival"] == phases["attestation"] == phases["production"] == 6
        assert phases["boards"] == 6 * 2  # a motherboard and one blade each
        assert journey["statements"] == sum(phases.values()) - 6 - 12
        assert journey["entries"] == sum(phases.values())
        # Each organization registered as its own user, with the persona its role needs.
        with Client(url) as client:
            users = {u.name: (u.persona, u.org, len(u.tokens)) for u in client.users(token=token)}
        assert users == {
            "s5-silicon-supplier": ("supplier", "s5-silicon", 1),
            "s5-rot-supplier": ("supplier", "s5-rot", 1),
            "s5-tpm-supplier": ("supplier", "s5-tpm", 1),
            "s5-odm-supplier": ("supplier", "s5-odm", 1),
            "s5-freight-carrier": ("carrier", "s5-freight", 1),
            "s5-dc-operator": ("operator", "s5-dc", 1),
        }
        # The views are for operators, auditors and administrators.
        production = f"{url}/provenance/v1/compliance"
        anonymous = httpx.get(production, params={"state": "production"})
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "token-required"
        auditor = user_token(url, token, "auditor", "auditor")
        servers = httpx.get(production, params={"state": "production"}, headers=bearer(auditor))
        serials = sorted(s["server_serial"] for s in servers.json()["servers"])
        assert serials == [f"s5-R00{r}-S00{s}" for r in range(2) for s in range(3)]
        # The same seed again: its organizations exist, and the ledger says so.
        again = _sim(*shape, "--url", url, "--token-file", str(admin), cwd=root)
        assert again.returncode == 1
        assert "Traceback" not in again.stderr
        assert "org-version" in again.stderr and "another --seed" in again.stderr


def test_fleet_needs_the_administrator_token(tmp_path: Path) -> None:
    run = _sim("--racks", "1", "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert run.returncode == 1
    assert "administrator token" in run.stderr


def test_a_data_directory_that_is_not_one_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """Nothing is registered (no server is even asked) when --data-dir is wrong."""
    admin = token_file(tmp_path / "admin.token", "x" * 43)
    for extra in (["--attacks", "-d", "nonexist"], ["-d", str(tmp_path)]):
        run = _sim("--racks", "1", "--url", "http://127.0.0.1:9", "--token-file", str(admin),
                   *extra, cwd=tmp_path)  # fmt: skip
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert "(config-error)" in run.stderr or "(invalid-input)" in run.stderr, run.stderr
        assert "connect" not in run.stderr.lower()
