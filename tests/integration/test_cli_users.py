"""``sealtrail users`` and a user's token on the command line, against ``sealtrail serve`` with
``[auth] required`` (docs/auth.md): an administrator adds a supplier and issues its token,
the supplier submits with it, the public is refused, a revoked token is refused; no token
is ever printed but by ``users token``, and every failure is one line."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sealtrail.keys import ES256
from tests._serve_proc import init_data, onboard, served, statement_for
from tests.unit.scitt._pki import Issuer, make_issuer

from .test_cli import assert_clean_error, sealtrail

ENV = ("SEALTRAIL_URL", "SEALTRAIL_TOKEN", "SEALTRAIL_ADMIN_TOKEN")


@dataclass
class Server:
    dir: Path
    url: str
    admin_token: str
    issuer: Issuer

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sealtrail(*args, cwd=self.dir)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sealtrail users ARGS`` with the administrator token file."""
        return self.run("users", *args, "--url", self.url, "--token-file", "admin.token")


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """``sealtrail serve`` on 127.0.0.1 with ``[auth] required``, the maker onboarded."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    root, admin_token = init_data(tmp_path)
    config = root / "d" / "sealtrail.toml"
    text, n = re.subn(r"(?m)^required = (true|false)$", "required = true", config.read_text())
    assert n == 1
    config.write_text(text)
    secret_file(root / "admin.token", admin_token)
    issuer = make_issuer(ES256, cn="Maker")
    with served(root) as url:
        onboard(url, admin_token, issuer)
        yield Server(root, url, admin_token, issuer)


def one_error_line(result: subprocess.CompletedProcess[str], code: str) -> str:
    """Exit 1, no traceback, exactly one ``error (<code>): ...`` line; returns it."""
    assert_clean_error(result, code)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error ({code}): "), result.stderr
    return lines[0]


def never_shown(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout
        assert secret not in result.stderr


def test_a_supplier_submits_with_its_token_until_it_is_revoked(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = server.admin("add", "alice", "--persona", "supplier", "--org", "maker")
    assert added.returncode == 0, added.stderr
    assert "user alice (supplier of maker) recorded: version 1" in added.stdout

    issued = server.admin("token", "alice", "--days", "7")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n"  # the token alone on stdout, for a script
    assert token.startswith("stk_")
    assert "shown once" in issued.stderr
    assert token not in issued.stderr
    token_id = token.split("_")[1]
    digest = hashlib.sha256(token.encode()).hexdigest()
    secrets = (token, token.split("_", 2)[2], digest, server.admin_token)

    listed = server.admin("list")
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout and token_id in listed.stdout
    never_shown(listed, *secrets)
    as_json = server.admin("list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (alice,) = json.loads(as_json.stdout)["users"]
    assert alice["persona"] == "supplier" and alice["org"] == "maker"
    assert [t["id"] for t in alice["tokens"]] == [token_id]
    never_shown(as_json, *secrets)

    for n in range(1, 5):
        (server.dir / f"s{n}.cose").write_bytes(statement_for(server.issuer, n))

    # The user's token from the environment...
    monkeypatch.setenv("SEALTRAIL_TOKEN", token)
    submitted = server.run("submit", "s1.cose", "--url", server.url)
    assert submitted.returncode == 0, submitted.stderr
    assert len(submitted.stdout.strip()) == 64
    never_shown(submitted, *secrets)
    monkeypatch.delenv("SEALTRAIL_TOKEN")

    # ...or from a file.
    secret_file(server.dir / "alice.token", token)
    from_file = server.run("submit", "s2.cose", "--url", server.url, "--token-file", "alice.token")
    assert from_file.returncode == 0, from_file.stderr
    never_shown(from_file, *secrets)

    # Without a token: one line, 401.
    public = server.run("submit", "s3.cose", "--url", server.url)
    assert "needs a token" in one_error_line(public, "token-required")
    assert not (server.dir / "s3.transparent.cose").exists()

    revoked = server.admin("revoke", "alice", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert f"token {token_id} revoked" in revoked.stdout
    never_shown(revoked, *secrets)

    monkeypatch.setenv("SEALTRAIL_TOKEN", token)
    refused = server.run("submit", "s3.cose", "--url", server.url)
    one_error_line(refused, "token-unknown")
    never_shown(refused, *secrets)
    monkeypatch.delenv("SEALTRAIL_TOKEN")
    again = server.run("submit", "s4.cose", "--url", server.url, "--token-file", "alice.token")
    one_error_line(again, "token-unknown")
    never_shown(again, *secrets)

    after = server.admin("list", "--json")
    assert json.loads(after.stdout)["users"][0]["tokens"] == []
    never_shown(after, *secrets)


def test_disable_shuts_a_user_out_and_add_lets_it_back(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.admin("add", "olga", "--persona", "operator", "--org", "maker").returncode == 0
    token = server.admin("token", "olga").stdout.strip()
    monkeypatch.setenv("SEALTRAIL_TOKEN", token)
    query = ("query", "compliance", "--url", server.url, "--json")
    assert server.run(*query).returncode == 0

    disabled = server.admin("disable", "olga")
    assert disabled.returncode == 0, disabled.stderr
    assert "user olga (operator of maker, disabled) disabled: version 3" in disabled.stdout
    one_error_line(server.run(*query), "user-disabled")

    assert server.admin("add", "olga", "--persona", "operator", "--org", "maker").returncode == 0
    assert server.run(*query).returncode == 0

    # A token for a persona the route does not allow: 403, the code kept.
    forbidden = server.run("users", "list", "--url", server.url, "--token-file", "olga.token")
    one_error_line(forbidden, "config-error")  # no such file: named, not read
    secret_file(server.dir / "olga.token", token)
    forbidden = server.run("users", "list", "--url", server.url, "--token-file", "olga.token")
    one_error_line(forbidden, "persona-forbidden")
    never_shown(forbidden, token)


def test_bad_input_is_one_line_and_never_shows_a_token(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.admin("add", "alice", "--persona", "supplier", "--org", "maker").returncode == 0
    url = ("--url", server.url)
    one_error_line(server.admin("add", "bob", "--persona", "wizard"), "admin-request-invalid")
    one_error_line(
        server.admin("add", "bob", "--persona", "supplier", "--org", "nowhere"), "org-unknown"
    )
    one_error_line(server.admin("token", "alice", "--days", "0"), "admin-request-invalid")
    one_error_line(server.admin("token", "nobody"), "user-unknown")
    one_error_line(server.admin("disable", "nobody"), "user-unknown")
    one_error_line(server.admin("revoke", "alice", "0123456789abcdef"), "token-unknown")
    one_error_line(server.run("users", "list", *url), "config-error")  # no admin token

    # A token file others can read, or with two tokens in it: refused, never shown.
    (server.dir / "x.cose").write_bytes(statement_for(server.issuer, 9))
    leaky = secret_file(server.dir / "leaky.token", "stk_leaky_secret")
    leaky.chmod(0o644)
    result = server.run("submit", "x.cose", *url, "--token-file", "leaky.token")
    one_error_line(result, "config-error")
    never_shown(result, "stk_leaky_secret")
    secret_file(server.dir / "two.token", "stk_first_secret\nstk_second_secret")
    result = server.run("submit", "x.cose", *url, "--token-file", "two.token")
    one_error_line(result, "token-malformed")
    never_shown(result, "stk_first_secret", "stk_second_secret")
    monkeypatch.setenv("SEALTRAIL_TOKEN", "stk_made_up secret")
    result = server.run("submit", "x.cose", *url)
    one_error_line(result, "token-malformed")
    never_shown(result, "stk_made_up")
    monkeypatch.setenv("SEALTRAIL_TOKEN", "stk_0123456789abcdef_made-up")
    result = server.run("query", "compliance", *url)
    one_error_line(result, "token-unknown")
    never_shown(result, "made-up")


def test_a_user_is_known_by_the_certificates_the_administrator_sets(
    server: Server, tmp_path: Path
) -> None:
    assert server.admin("add", "olivia", "--persona", "auditor").returncode == 0
    certificate = make_issuer(ES256, cn="Olivia").leaf
    pem = tmp_path / "olivia.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    der = tmp_path / "olivia.der"
    der.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    sha256 = hashlib.sha256(der.read_bytes()).hexdigest()

    added = server.admin("cert", "olivia", "--add", str(pem), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["certificates"] == [sha256]
    again = server.admin("cert", "olivia", "--add", str(der))  # the same one, as DER
    assert again.returncode == 0, again.stderr
    listed = server.admin("cert", "olivia")
    assert listed.stdout.split() == [sha256]
    users = json.loads(server.admin("list", "--json").stdout)["users"]
    assert next(u for u in users if u["user"] == "olivia")["certificates"] == [sha256]

    taken = server.admin("add", "mallory", "--persona", "auditor")
    assert taken.returncode == 0
    assert_clean_error(server.admin("cert", "mallory", "--add", str(pem)), "certificate-taken")
    assert_clean_error(server.admin("cert", "olivia", "--remove", "ab" * 32), "certificate-unknown")
    assert_clean_error(server.admin("cert", "nobody", "--add", str(pem)), "user-unknown")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert_clean_error(server.admin("cert", "olivia", "--add", str(bad)), "certificate-invalid")

    removed = server.admin("cert", "olivia", "--remove", sha256, "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["certificates"] == []
