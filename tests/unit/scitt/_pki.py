"""Test certificates: an organization CA and statement-signing leaves (real X.509 chains)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from sealtrail.keys import ED25519, ES256, ES384, Signer, generate_signer

NOW = dt.datetime.now(dt.UTC)
DER = serialization.Encoding.DER


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key: object) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA256()


@dataclass
class Issuer:
    """A CA and one signing leaf under it."""

    ca_key: Signer
    ca: x509.Certificate
    leaf_key: Signer
    leaf: x509.Certificate

    @property
    def chain(self) -> list[bytes]:
        return [self.leaf.public_bytes(DER)]

    @property
    def anchor_pem(self) -> str:
        return self.ca.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(alg: str = ES256, *, cn: str = "Test Org CA") -> tuple[Signer, x509.Certificate]:
    key = generate_signer(alg)
    private = key.private_key()  # type: ignore[attr-defined]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(private, _hash_for(private))
    )
    return key, cert


def make_leaf(
    ca_key: Signer,
    ca: x509.Certificate,
    alg: str = ES256,
    *,
    cn: str = "Signer",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    ca_flag: bool = False,
) -> tuple[Signer, x509.Certificate]:
    key = generate_signer(alg)
    ca_private = ca_key.private_key()  # type: ignore[attr-defined]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, ca_flag, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_private, _hash_for(ca_private))
    )
    return key, cert


def make_issuer(alg: str = ES256, *, ca_alg: str | None = None, cn: str = "Test Org") -> Issuer:
    ca_key, ca = make_ca(ca_alg or (ES384 if alg == ES384 else alg), cn=f"{cn} CA")
    leaf_key, leaf = make_leaf(ca_key, ca, alg, cn=f"{cn} signer")
    return Issuer(ca_key, ca, leaf_key, leaf)


__all__ = ["ED25519", "ES256", "ES384", "Issuer", "make_ca", "make_issuer", "make_leaf"]
