"""``sealtrail serve`` over TLS: ``[server] tls_cert`` / ``tls_key`` (and ``tls_client_ca``),
checked before the port is bound, and a real HTTPS server verified against its CA."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import re
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealtrail.client import Client, client_tls
from sealtrail.keys import ES256
from sealtrail.log import verify_checkpoint
from sealtrail.note import NoteVerifier
from tests._serve_proc import init_data, serve_process, served
from tests.integration.test_cli import assert_clean_error, sealtrail
from tests.unit.scitt._pki import make_issuer
from tests.unit.scitt.conftest import org_record

ORIGIN = "serve.test/log"
NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Pki:
    """A CA and a certificate it issued for 127.0.0.1, as PEM."""

    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def ca_pem(self) -> bytes:
        return self.ca.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def trust(self) -> ssl.SSLContext:
        """A client context trusting this CA only."""
        return ssl.create_default_context(cadata=self.ca_pem().decode())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(cn: str, *, server: bool = True) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{cn} CA"))
        .issuer_name(_name(f"{cn} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return Pki(ca_key, ca, key, builder.sign(ca_key, hashes.SHA256()))


def configure(root: Path, pki: Pki, *, settings: str | None = None) -> None:
    """Write the server's certificate and key into the data directory and name them in
    ``[server]`` (or write ``settings`` there instead)."""
    keys = root / "d" / "keys"
    (keys / "tls.crt").write_bytes(pki.cert_pem())
    (keys / "tls.crt").chmod(0o640)
    (keys / "tls.key").write_bytes(pki.key_pem())
    (keys / "tls.key").chmod(0o600)
    if settings is None:
        settings = 'tls_cert = "keys/tls.crt"\ntls_key = "keys/tls.key"'
    config = root / "d" / "sealtrail.toml"
    text = config.read_text()
    assert text.count("[server]\n") == 1
    config.write_text(text.replace("[server]\n", f"[server]\n{settings}\n"))


def client_context(root: Path, server: Pki, who: Pki) -> ssl.SSLContext:
    """A client context trusting ``server``'s CA and presenting ``who``'s certificate."""
    ctx = server.trust()
    (root / "client.crt").write_bytes(who.cert_pem())
    (root / "client.key").write_bytes(who.key_pem())
    ctx.load_cert_chain(root / "client.crt", root / "client.key")
    return ctx


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, str]:
    return init_data(tmp_path)


@pytest.mark.slow
def test_serve_over_https_verified_against_the_ca(data: tuple[Path, str]) -> None:
    root, token = data
    pki = make_pki("Sealtrail test server")
    configure(root, pki)
    vkey = (root / "d" / "log.vkey").read_text().strip()
    with serve_process(root, scheme="https", verify=pki.trust()) as (url, proc):
        assert url.startswith("https://127.0.0.1:")
        # Onboarding over TLS gives the log its first entry, so a checkpoint to fetch.
        put = httpx.put(
            url + "/admin/organizations/maker",
            content=org_record(make_issuer(ES256, cn="Maker")),
            headers={"authorization": f"Bearer {token}"},
            verify=pki.trust(),
        )
        assert put.status_code == 201, put.text
        r = httpx.get(url + "/checkpoint", verify=pki.trust())
        assert r.status_code == 200, r.text
        signed = verify_checkpoint(r.content, origin=ORIGIN, verifiers=[NoteVerifier.parse(vkey)])
        assert signed.size == 1
        # Not trusted without the CA, and no plain HTTP on the same port.
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/checkpoint")
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/checkpoint")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        startup = proc.stderr.read().decode()
    assert f"on {url}/" in startup
    assert "http://" not in startup


@pytest.mark.slow
def test_client_certificates_are_verified_when_sent(data: tuple[Path, str]) -> None:
    root, _ = data
    pki = make_pki("Sealtrail test server")
    clients = make_pki("Operator", server=False)
    stranger = make_pki("Stranger", server=False)
    (root / "d" / "keys" / "clients-ca.pem").write_bytes(clients.ca_pem())
    configure(
        root,
        pki,
        settings='tls_cert = "keys/tls.crt"\ntls_key = "keys/tls.key"\n'
        'tls_client_ca = "keys/clients-ca.pem"',
    )

    def context(who: Pki) -> ssl.SSLContext:
        return client_context(root, pki, who)

    with served(root, scheme="https", verify=pki.trust()) as url:
        # Anonymous reads keep working (CERT_OPTIONAL); a client the CA issued gets through
        # the handshake, and is told its certificate is no user's (as a bad token would be).
        assert httpx.get(url + "/log/v1/info", verify=pki.trust()).status_code == 200
        r = httpx.get(url + "/log/v1/info", verify=context(clients))
        assert r.status_code == 401 and r.json()["code"] == "certificate-unknown"
        # A certificate from another CA is refused during the handshake.
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/log/v1/info", verify=context(stranger))
        assert httpx.get(url + "/log/v1/info", verify=pki.trust()).status_code == 200


@pytest.mark.slow
def test_a_client_certificate_is_the_user_whose_record_lists_it(
    data: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutual TLS as an alternative to tokens: a verified client certificate is the user
    whose record holds its SHA-256; one no user holds, or a disabled user's, is refused."""
    root, token = data
    pki = make_pki("Sealtrail test server")
    operator, nobody = make_pki("Operator", server=False), make_pki("Nobody", server=False)
    keys = root / "d" / "keys"
    (keys / "clients-ca.pem").write_bytes(operator.ca_pem() + nobody.ca_pem())
    configure(
        root,
        pki,
        settings='tls_cert = "keys/tls.crt"\ntls_key = "keys/tls.key"\n'
        'tls_client_ca = "keys/clients-ca.pem"',
    )
    config = root / "d" / "sealtrail.toml"
    text = re.sub(r"(?m)^required = (true|false)$", "required = true", config.read_text())
    config.write_text(text)
    fingerprint = hashlib.sha256(operator.cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    admin = {"authorization": f"Bearer {token}"}

    def context(who: Pki) -> ssl.SSLContext:
        return client_context(root, pki, who)

    with served(root, scheme="https", verify=pki.trust()) as url:
        with httpx.Client(base_url=url, verify=pki.trust(), headers=admin) as http:
            r = http.put(
                "/admin/organizations/maker", content=org_record(make_issuer(ES256, cn="Maker"))
            )
            assert r.status_code == 201, r.text
            body = {"persona": "operator", "org": "maker", "certificates": [fingerprint]}
            r = http.put("/admin/users/olivia", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["certificates"] == [fingerprint]
            # A certificate names one user.
            r = http.put("/admin/users/mallory", json={**body, "persona": "auditor", "org": None})
            assert r.status_code == 400 and r.json()["code"] == "certificate-taken", r.text
            for bad in (["ab"], [fingerprint.upper()], [fingerprint, fingerprint], "x"):
                r = http.put("/admin/users/olivia", json={"certificates": bad})
                assert r.status_code == 400 and r.json()["code"] == "admin-request-invalid"

        compliance = url + "/provenance/v1/compliance"
        r = httpx.get(compliance, verify=context(operator))
        assert r.status_code == 200, r.text
        # The Python client, as docs/auth.md shows it.
        with Client(url, transport=httpx.HTTPTransport(verify=context(operator))) as client:
            assert client.compliance()["servers"] == []
        (root / "server-ca.pem").write_bytes(pki.ca_pem())
        with Client(
            url, tls=client_tls(root / "client.crt", root / "client.key", ca=root / "server-ca.pem")
        ) as client:
            assert client.compliance()["servers"] == []
        # The command line: the CA from $SSL_CERT_FILE, the certificate from the environment.
        monkeypatch.setenv("SSL_CERT_FILE", str(root / "server-ca.pem"))
        for name in ("SEALTRAIL_TOKEN", "SEALTRAIL_CLIENT_CERT", "SEALTRAIL_CLIENT_KEY"):
            monkeypatch.delenv(name, raising=False)
        query = ("query", "compliance", "--url", url)
        assert_clean_error(sealtrail(*query, cwd=root), "token-required")
        monkeypatch.setenv("SEALTRAIL_CLIENT_CERT", str(root / "client.crt"))
        assert_clean_error(sealtrail(*query, cwd=root), "config-error")  # the key, too
        monkeypatch.setenv("SEALTRAIL_CLIENT_KEY", str(root / "client.key"))
        (root / "client.key").chmod(0o644)
        refused = sealtrail(*query, cwd=root)
        assert_clean_error(refused, "config-error")
        assert "client key" in refused.stderr
        (root / "client.key").chmod(0o600)
        answered = sealtrail(*query, "--json", cwd=root)
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["servers"] == []
        monkeypatch.delenv("SEALTRAIL_CLIENT_CERT")
        monkeypatch.delenv("SEALTRAIL_CLIENT_KEY")
        # An operator may ask for challenges; an administrator's route stays closed.
        r = httpx.post(
            url + "/provenance/v1/challenges",
            json={"server_serial": "none"},
            verify=context(operator),
        )
        assert r.status_code == 404 and r.json()["code"] == "node-unknown", r.text
        r = httpx.get(url + "/admin/users", verify=context(operator))
        assert r.status_code in (401, 403)
        # No certificate: the public; a certificate of the trusted CA that no user holds.
        r = httpx.get(compliance, verify=pki.trust())
        assert r.status_code == 401 and r.json()["code"] == "token-required"
        r = httpx.get(compliance, verify=context(nobody))
        assert r.status_code == 401 and r.json()["code"] == "certificate-unknown"
        # Disabled, then known by no certificate at all.
        with httpx.Client(base_url=url, verify=pki.trust(), headers=admin) as http:
            assert http.put("/admin/users/olivia", json={"disabled": True}).status_code == 200
            r = httpx.get(compliance, verify=context(operator))
            assert r.status_code == 401 and r.json()["code"] == "user-disabled"
            r = http.put("/admin/users/olivia", json={"disabled": False, "certificates": []})
            assert r.status_code == 200 and r.json()["certificates"] == []
            r = httpx.get(compliance, verify=context(operator))
            assert r.status_code == 401 and r.json()["code"] == "certificate-unknown"


def test_a_missing_key_file_is_named(data: tuple[Path, str]) -> None:
    root, _ = data
    configure(root, make_pki("Server"))
    (root / "d" / "keys" / "tls.key").unlink()
    result = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert_clean_error(result, "config-error")
    assert "tls_key (keys/tls.key): no such file" in result.stderr


def test_a_certificate_for_another_key_is_refused(data: tuple[Path, str]) -> None:
    root, _ = data
    configure(root, make_pki("Server"))
    (root / "d" / "keys" / "tls.key").write_bytes(make_pki("Other").key_pem())
    result = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert_clean_error(result, "config-error")
    assert "tls_cert and tls_key do not match" in result.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('tls_cert = "keys/tls.crt"', "tls_key is missing"),
        ('tls_key = "keys/tls.key"', "tls_cert is missing"),
        ('tls_client_ca = "keys/tls.crt"', "tls_client_ca needs tls_cert and tls_key"),
        ('tls_cert = "keys/tls.key"\ntls_key = "keys/tls.key"', "tls_cert (keys/tls.key) is not"),
        ('tls_cert = "keys/tls.crt"\ntls_key = "keys/tls.crt"', "tls_key (keys/tls.crt) is not"),
    ],
)
def test_tls_settings_are_checked(data: tuple[Path, str], settings: str, message: str) -> None:
    root, _ = data
    configure(root, make_pki("Server"), settings=settings)
    result = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert_clean_error(result, "config-error")
    assert message in result.stderr


def test_a_key_others_can_read_is_refused(data: tuple[Path, str]) -> None:
    root, _ = data
    configure(root, make_pki("Server"))
    (root / "d" / "keys" / "tls.key").chmod(0o644)
    result = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert_clean_error(result, "config-error")
    assert "accessible by others" in result.stderr
