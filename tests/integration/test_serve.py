"""``sealtrail init`` + ``sealtrail serve`` as a user runs them: a real server process.

Registration over HTTP, the administrator token, tokens required by default, receipt key
rotation across a restart (old receipts keep verifying), read-only mode, and the data
directory's key handling.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sealtrail.config import load_config, rotate_service_key
from sealtrail.errors import ConfigError
from sealtrail.keys import ES256, EcdsaSigner, write_private_key
from sealtrail.scitt import (
    KEYS_RECORD_TYPE,
    ServiceKeys,
    add_receipts,
    decode_key_set,
    decode_sign1,
    parse_keys_record,
    parse_statement,
    verify_transparent_statement,
)
from tests._serve_proc import (
    COSE,
    bearer,
    init_data,
    onboard,
    register,
    served,
    statement_for,
    user_token,
)
from tests.integration.test_cli import assert_clean_error, sealtrail
from tests.unit.keys._softhsm import PIN, SoftHsm, hsm_skip_reason
from tests.unit.scitt._pki import make_issuer
from tests.unit.scitt.conftest import org_record

KID = 4


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, str]:
    return init_data(tmp_path)


def test_a_fresh_data_directory_requires_a_token(data: tuple[Path, str]) -> None:
    """``sealtrail init`` writes ``[auth] required = true``: an anonymous registration is
    refused (401 ``token-required``) and changes nothing; the organization's supplier gets
    in; the log itself stays public."""
    root, token = data
    assert "\n[auth]\n" in (root / "d" / "sealtrail.toml").read_text()
    assert load_config(root / "d").auth_required is True
    issuer = make_issuer(ES256, cn="Maker")
    with served(root) as url:
        onboard(url, token, issuer)
        size = httpx.get(url + "/log/v1/info").json()["size"]
        r = httpx.post(url + "/entries", content=statement_for(issuer, 1), headers=COSE)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "token-required"
        assert httpx.get(url + "/log/v1/info").json()["size"] == size
        r = httpx.get(url + "/provenance/v1/compliance")
        assert r.status_code == 401 and r.json()["code"] == "token-required"
        supplier = user_token(url, token, "maker-supplier", "supplier", "maker")
        entry, _ = register(url, statement_for(issuer, 1), supplier)
        assert httpx.get(f"{url}/entries/{entry}").status_code == 200  # receipts are public
        assert httpx.get(url + "/checkpoint").status_code == 200
        # The administrator administers; registering is for the organization's users.
        r = httpx.post(
            url + "/entries", content=statement_for(issuer, 2), headers={**COSE, **bearer(token)}
        )
        assert r.status_code == 403, r.text


def test_required_false_is_the_explicit_opt_out(data: tuple[Path, str]) -> None:
    root, _ = data
    config = root / "d" / "sealtrail.toml"
    text = config.read_text()
    assert "\nrequired = true\n" in text
    config.write_text(text.replace("\nrequired = true\n", "\nrequired = false\n"))
    assert load_config(root / "d").auth_required is False
    # Without the key (a data directory written before it existed), tokens are required.
    config.write_text(text.replace("\nrequired = true\n", "\n"))
    assert load_config(root / "d").auth_required is True


@pytest.mark.slow
def test_serve_registers_and_rotation_keeps_old_receipts_valid(data: tuple[Path, str]) -> None:
    root, token = data
    issuer = make_issuer(ES256, cn="Maker")
    first = statement_for(issuer, 1)
    with served(root) as url:
        # Administration needs the token printed by init; a wrong one changes nothing.
        size = httpx.get(url + "/log/v1/info").json()["size"]
        bad = httpx.put(
            url + "/admin/organizations/maker",
            content=org_record(issuer),
            headers={"authorization": "Bearer not-the-token"},
        )
        assert bad.status_code == 401
        assert bad.json()["code"] == "token-unknown"
        assert httpx.get(url + "/log/v1/info").json()["size"] == size
        onboard(url, token, issuer)
        supplier = user_token(url, token, "maker-supplier", "supplier", "maker")
        entry, old_receipt = register(url, first, supplier)
        old_keys = httpx.get(url + "/.well-known/scitt-keys").content
    old_transparent = add_receipts(first, [old_receipt])
    verify_transparent_statement(old_transparent, service_keys=old_keys)
    old_kid = decode_sign1(old_receipt).protected[KID]

    rotated = sealtrail("keys", "rotate", "-d", "d", cwd=root)
    assert rotated.returncode == 0, rotated.stderr
    assert old_kid.hex() in rotated.stdout

    with served(root) as url:
        keys = httpx.get(url + "/.well-known/scitt-keys").content
        assert len(decode_key_set(keys)) == 2
        # The receipt signed before the rotation verifies against the new key set.
        verify_transparent_statement(old_transparent, service_keys=keys)
        # A fresh receipt for the old entry, and new registrations, use the new key.
        fresh = httpx.get(f"{url}/entries/{entry}").content
        assert decode_sign1(fresh).protected[KID] != old_kid
        verify_transparent_statement(add_receipts(first, [fresh]), service_keys=keys)
        # The supplier's token outlives the restart: users are log entries too.
        _, new_receipt = register(url, statement_for(issuer, 2), supplier)
        assert decode_sign1(new_receipt).protected[KID] != old_kid
        # The registry (organization, user and policy) was rebuilt from the log at start:
        # the organization, the user and its token, two statements, and the rotation.
        assert httpx.get(url + "/log/v1/info").json()["size"] == 6
        new_kid = decode_sign1(new_receipt).protected[KID]
    with served(root) as url:  # the same keys again: nothing more to record
        assert httpx.get(url + "/log/v1/info").json()["size"] == 6

    # The rotation is on the record: signed by the new key, naming the old one retired.
    store = load_config(root / "d").open_store()
    try:
        (record,) = store.statements_of_type(KEYS_RECORD_TYPE)
    finally:
        store.close()
    statement = parse_statement(record.body)
    assert statement.kid == new_kid
    assert parse_keys_record(statement.payload) == ServiceKeys(new_kid, "ES256", (old_kid,))

    exported = root / "keys.cbor"
    r = sealtrail("keys", "export", "-d", "d", "-o", str(exported), cwd=root)
    assert r.returncode == 0, r.stderr
    assert sorted(k for k in decode_key_set(exported.read_bytes())) == sorted(decode_key_set(keys))
    # An existing file (the configuration, say) is replaced only with --force.
    config = (root / "d" / "sealtrail.toml").read_bytes()
    again = sealtrail("keys", "export", "-d", "d", "-o", "d/sealtrail.toml", cwd=root)
    assert_clean_error(again, "file-exists")
    assert (root / "d" / "sealtrail.toml").read_bytes() == config
    r = sealtrail("keys", "export", "-d", "d", "-o", str(exported), "--force", cwd=root)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_read_only_serve_reads_and_refuses_writes(data: tuple[Path, str]) -> None:
    root, token = data
    issuer = make_issuer(ES256, cn="Maker")
    with served(root) as url:
        onboard(url, token, issuer)
    with served(root, "--read-only") as url:
        assert httpx.get(url + "/log/v1/info").json()["size"] == 1
        assert httpx.get(url + "/checkpoint").status_code == 200
        r = httpx.post(url + "/entries", content=statement_for(issuer, 1), headers=COSE)
        assert (r.status_code, r.json()["code"]) == (501, "read-only-server")
        assert httpx.get(url + "/nowhere").json()["code"] == "not-found"
        # The command line says so in one line.
        keys = sealtrail("fetch-keys", "--url", url, "-o", "keys.cbor", cwd=root)
        assert_clean_error(keys, "read-only-server")
        assert "read-only" in keys.stderr and not (root / "keys.cbor").exists()


def test_serve_without_a_receipt_key_says_how_to_make_one(data: tuple[Path, str]) -> None:
    root, _ = data
    (root / "d" / "keys" / "service.key").unlink()
    result = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert_clean_error(result, "config-error")
    assert "keys generate" in result.stderr


def test_port_0_says_the_port_it_got_and_sigterm_stops_it_cleanly(
    data: tuple[Path, str],
) -> None:
    """The line saying where it serves comes once the port is bound, with that port; SIGTERM
    (what a service manager sends) stops it as Ctrl-C does: exit status 0, nothing leaked."""
    root, _ = data
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealtrail", "serve", "-d", "d", "--port", "0"],
        cwd=root,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]
        serving = next(line for line in lines if line.startswith("Serving"))
        port = int(serving.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/log/v1/info").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        rest = proc.stderr.read()
        assert "Traceback" not in rest and "leaked" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_start_that_fails_is_one_line_not_a_traceback(data: tuple[Path, str]) -> None:
    """The log's records were signed with a receipt key this host does not have (its keys
    were not copied from the other hosts, say): serve stops at start with the error."""
    root, token = data
    with served(root) as url:
        onboard(url, token, make_issuer(ES256, cn="Maker"))
    key = root / "d" / "keys" / "service.key"
    key.unlink()
    write_private_key(key, EcdsaSigner.generate())
    result = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert_clean_error(result, "org-record-untrusted")
    assert "unknown service key" in result.stderr and "keys/service.key" in result.stderr


def test_new_admin_token_replaces_the_old(data: tuple[Path, str]) -> None:
    root, token = data
    config = load_config(root / "d")
    old_hash = config.admin_token_hash()
    result = sealtrail("keys", "admin-token", "-d", "d", cwd=root)
    assert result.returncode == 0, result.stderr
    new_token = result.stdout.strip()
    assert new_token and new_token != token
    assert config.admin_token_hash() not in (None, old_hash)
    assert (root / "d" / "keys" / "admin-token.sha256").stat().st_mode & 0o077 == 0


def test_keys_show_lists_retired_keys(data: tuple[Path, str]) -> None:
    root, token = data
    config = load_config(root / "d")
    first = rotate_service_key(config)
    second = rotate_service_key(config, algorithm="ES384")
    assert second.retired_kid == first.current_kid
    result = sealtrail("keys", "show", "-d", "d", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout
    assert first.retired_kid.hex() in result.stdout
    assert second.retired_kid.hex() in result.stdout
    assert second.current_kid.hex() in result.stdout
    assert "ES384" in result.stdout
    assert len(config.retired_verifiers()) == 2


def test_a_broken_retired_key_file_is_named(data: tuple[Path, str]) -> None:
    root, _ = data
    retired = root / "d" / "keys" / "retired"
    retired.mkdir()
    (retired / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"junk\.pem"):
        load_config(root / "d").retired_verifiers()
    result = sealtrail("keys", "show", "-d", "d", cwd=root)
    assert_clean_error(result, "config-error")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('pin = "1234"\npin_file = "p"', "never goes in the configuration"),
        ('pin_file = "p"\npin_env = "X"', "exactly one of pin_file or pin_env"),
        ("", "exactly one of pin_file or pin_env"),
    ],
)
def test_pkcs11_settings_are_checked(data: tuple[Path, str], table: str, message: str) -> None:
    root, _ = data
    config_file = root / "d" / "sealtrail.toml"
    text = config_file.read_text()
    head, sep, tail = text.partition("[server]")
    config_file.write_text(
        head
        + '[service_key.pkcs11]\nmodule = "m.so"\ntoken_label = "t"\nkey_label = "k"\n'
        + table
        + "\n\n"
        + sep
        + tail
    )
    with pytest.raises(ConfigError, match=message):
        load_config(root / "d")
    result = sealtrail("keys", "show", "-d", "d", cwd=root)
    assert_clean_error(result, "config-error")
    assert "1234" not in result.stderr


@pytest.mark.skipif(hsm_skip_reason() is not None, reason=str(hsm_skip_reason()))
@pytest.mark.slow
def test_serve_signs_receipts_with_an_hsm_key(
    data: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, token = data
    hsm = SoftHsm.create(tmp_path_factory.mktemp("hsm"))
    hsm.init_token()
    service_key = root / "d" / "keys" / "service.key"
    hsm.import_key(service_key, label="receipts", key_id=b"\x01")
    service_key.unlink()  # from now on the key lives on the token only
    pin_file = root / "d" / "keys" / "hsm.pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    config_file = root / "d" / "sealtrail.toml"
    head, sep, tail = config_file.read_text().partition("[server]")
    config_file.write_text(
        head
        + f'[service_key.pkcs11]\nmodule = "{hsm.module}"\ntoken_label = "sealtrail-test"\n'
        + 'key_label = "receipts"\npin_file = "keys/hsm.pin"\n\n'
        + sep
        + tail
    )
    env = {"SOFTHSM2_CONF": str(hsm.config)}
    issuer = make_issuer(ES256, cn="Maker")
    with served(root, env=env) as url:
        onboard(url, token, issuer)
        supplier = user_token(url, token, "maker-supplier", "supplier", "maker")
        statement = statement_for(issuer, 1)
        _, receipt = register(url, statement, supplier)
        keys = httpx.get(url + "/.well-known/scitt-keys").content
    verify_transparent_statement(add_receipts(statement, [receipt]), service_keys=keys)
    rotate = subprocess.run(
        [sys.executable, "-m", "sealtrail", "keys", "rotate", "-d", "d"],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_clean_error(rotate, "config-error")
    assert PIN not in rotate.stderr
