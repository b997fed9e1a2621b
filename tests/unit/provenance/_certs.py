"""Test identity certificates: a device maker's CA and P-384 device leaves (real X.509)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
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
