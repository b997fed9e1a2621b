"""Test identity certificates: a device maker's CA, P-384 device leaves and alias certificates
(real X.509)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_CA_KEY = ec.generate_private_key(ec.SECP384R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    subject: str, key: ec.EllipticCurvePublicKey, *, ca: bool = False, serial: int | None = None
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name("Test Device CA"))
        .public_key(key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(_CA_KEY, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


CA_DER = _certificate("Test Device CA", _CA_KEY.public_key(), ca=True)


def new_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP384R1())


def identity(key: ec.EllipticCurvePrivateKey, serial: str) -> bytes:
    """A device identity leaf (DER) for ``key``, issued by the test CA; new on every call."""
    return _certificate(f"IDevID {serial}", key.public_key())


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def identity_for(public_key: CertificatePublicKeyTypes, serial: str) -> bytes:
    """A device identity leaf (DER) for a key of any type (ML-DSA-87, Ed25519), by the test CA."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"IDevID {serial}"))
        .issuer_name(_name("Test Device CA"))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    return builder.sign(_CA_KEY, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def alias(
    issuer_key: CertificateIssuerPrivateKeyTypes,
    issuer_der: bytes,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    name: str = "Runtime Alias",
    ca: bool = False,
) -> bytes:
    """An alias certificate (DER) for ``key``, issued by ``issuer_key`` in the name of the
    subject of ``issuer_der`` (an identity or another alias certificate), as a DICE layer
    certifies the next one's key. ``ca`` for a layer that certifies a further alias."""
    issuer = x509.load_der_x509_certificate(issuer_der)
    algorithm = hashes.SHA384() if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else None
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, algorithm).public_bytes(serialization.Encoding.DER)
