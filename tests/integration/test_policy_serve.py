"""``sealtrail serve`` makes its configured provenance policy a log entry: recorded once
when the log's differs, again when the configuration changes, checked by the audit and
rebuilt from the log. A policy a server could not record is refused when read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealtrail.client import Client
from sealtrail.provenance import MAX_POLICY_AGE, PolicyChange
from sealtrail.scitt import parse_statement
from sealtrail.storage import SQLiteIndex, SQLiteStore
from tests._serve_proc import bearer, init_data, served
from tests.integration.test_cli import sealtrail


def _configure(root: Path, age: int, floors: dict[str, int] | None = None) -> None:
    path = root / "d" / "sealtrail.toml"
    text = re.sub(
        r"(?m)^max_attestation_age = .*$", f"max_attestation_age = {age}", path.read_text()
    )
    text = text.split("\n[provenance.min_security_version]\n")[0]
    if floors:
        text += "\n[provenance.min_security_version]\n"
        text += "".join(f'"{name}" = {floor}\n' for name, floor in floors.items())
    path.write_text(text)


def _records(root: Path) -> list[dict[str, object]]:
    store = SQLiteStore(str(root / "d" / "log.db"))
    try:
        found = store.statements_of_type(PolicyChange.CONTENT_TYPE)
        return [json.loads(parse_statement(r.body).payload) for r in found]
    finally:
        store.close()


def _policy_row(root: Path) -> dict[str, Any] | None:
    index = SQLiteIndex(str(root / "d" / "provenance.db"))
    try:
        raw = index.row("policy", "provenance")
        return None if raw is None else json.loads(raw)
    finally:
        index.close()


def _audit_ok(root: Path) -> None:
    audited = sealtrail("audit", "-d", "d", "--json", cwd=root)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert json.loads(audited.stdout)["findings"] == []


def test_the_configured_policy_becomes_a_log_entry(tmp_path: Path) -> None:
    root, token = init_data(tmp_path)
    with served(root) as url:
        shown = httpx.get(url + "/provenance/v1/policy", headers=bearer(token)).json()
    assert _records(root) == [], "the defaults are in force: nothing recorded"
    status = sealtrail("index", "status", "-d", "d", cwd=root)
    assert "provenance policy: the defaults (max attestation age 86400 s" in status.stdout
    assert shown["version"] == 0 and shown["entry"] is None
    assert (shown["max_attestation_age"], shown["min_security_version"]) == (86400, {})

    _configure(root, 3600, {"caliptra-rt": 3})
    with served(root) as url, Client(url, token=token) as client:
        shown = client.policy()
    expected = {
        "version": 1,
        "max_attestation_age": 3600,
        "min_security_version": {"caliptra-rt": 3},
    }
    assert _records(root) == [expected]
    row = _policy_row(root)
    assert row is not None
    assert shown == {**row, "size": shown["size"]} and shown["version"] == 1
    with served(root):  # the same configuration: nothing new
        pass
    assert len(_records(root)) == 1

    _configure(root, 7200)
    with served(root):
        pass
    assert _records(root)[-1] == {
        "version": 2,
        "max_attestation_age": 7200,
        "min_security_version": {},
    }
    row = _policy_row(root)
    assert row is not None and row["version"] == 2 and row["max_attestation_age"] == 7200
    status = sealtrail("index", "status", "-d", "d", cwd=root)
    assert (
        "provenance policy version 2: max attestation age 7200 s, minimum security "
        f"versions none (entry {row['entry'][:16]}…)"
    ) in status.stdout, status.stdout
    _audit_ok(root)

    # Rebuilt from the log alone, the index holds the same policy, whatever the
    # configuration says now.
    _configure(root, 60)
    rebuilt = sealtrail("index", "rebuild", "-d", "d", cwd=root)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _policy_row(root) == row
    _audit_ok(root)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_attestation_age = 0", "max_attestation_age must be a positive number of seconds"),
        (f"max_attestation_age = {MAX_POLICY_AGE + 1}", "max_attestation_age: must be in 1.."),
        ('[provenance.min_security_version]\n"caliptra-rt" = 4294967296', "must be in 0.."),
        ('[provenance.min_security_version]\n" rt" = 1', "must not begin or end with a space"),
    ],
)
def test_a_policy_no_server_could_record_is_refused(
    tmp_path: Path, setting: str, message: str
) -> None:
    root, _ = init_data(tmp_path)
    path = root / "d" / "sealtrail.toml"
    text = path.read_text()
    if setting.startswith("max_attestation_age"):
        text = re.sub(r"(?m)^max_attestation_age = .*$", setting, text)
    else:
        text += "\n" + setting + "\n"
    path.write_text(text)
    result = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
