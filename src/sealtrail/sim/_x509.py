"""Keys and certificates for simulated devices and organizations.

Device keys are *derived*, as a DICE device derives them: from a device secret and a label
(and, for the layers above ROM, a compound device identifier that folds in the layer's
measurement), so the same firmware gives the same alias key and changed firmware another.
Certificates carry fixed validity dates (devices have no trusted clock; 9999-12-31 is
RFC 5280's "no well-defined expiration") and serial numbers derived from the subject key,
so everything but the key material is reproducible.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

try:  # ML-DSA (FIPS 204) is in recent cryptography releases only.
    from cryptography.hazmat.primitives.asymmetric import mldsa
except ImportError:  # pragma: no cover - depends on the installed cryptography
    mldsa = None  # type: ignore[assignment]

__all__ = [
    "DEVICE_NOT_AFTER",
    "DEVICE_NOT_BEFORE",
    "ML_DSA_SUPPORTED",
    "PrivateKey",
    "PublicKey",
    "cdi",
    "der",
    "derive_ec_key",
    "derive_mldsa_key",
    "dice_name",
    "distinguished_name",
    "hash_for",
    "issue",
    "serial_for",
    "spki",
]

PrivateKey: TypeAlias = "ec.EllipticCurvePrivateKey | mldsa.MLDSA87PrivateKey"
PublicKey: TypeAlias = "ec.EllipticCurvePublicKey | mldsa.MLDSA87PublicKey"

#: Device certificates' validity: fixed, since a device has no trusted clock.
DEVICE_NOT_BEFORE = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
DEVICE_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)

_ORDERS = {
    "secp256r1": int("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16),
    "secp384r1": int(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
        "581a0db248b0a77aecec196accc52973",
        16,
    ),
}


def _ml_dsa_supported() -> bool:
    """Whether this cryptography makes ML-DSA-87 keys and signs certificates with them
    (without ML-DSA, ``mldsa`` is ``None`` and the first line fails)."""
    try:
        key = mldsa.MLDSA87PrivateKey.from_seed_bytes(bytes(32))
        builder = (
            x509.CertificateBuilder()
            .subject_name(distinguished_name("probe"))
            .issuer_name(distinguished_name("probe"))
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(DEVICE_NOT_BEFORE)
            .not_valid_after(DEVICE_NOT_AFTER)
        )
        builder.sign(key, None)
    except Exception:
        return False
    return True


def _kdf(secret: bytes, label: str, size: int) -> bytes:
    return HKDF(hashes.SHA384(), length=size, salt=None, info=label.encode()).derive(secret)


def derive_ec_key(secret: bytes, label: str, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    """An ECDSA key derived from ``secret`` and ``label`` (HKDF-SHA-384, reduced mod n)."""
    order = _ORDERS[curve.name]
    okm = _kdf(secret, label, (order.bit_length() + 7) // 8 + 8)
    return ec.derive_private_key(int.from_bytes(okm, "big") % (order - 1) + 1, curve)


def derive_mldsa_key(secret: bytes, label: str) -> mldsa.MLDSA87PrivateKey:
    """An ML-DSA-87 key from its 32-byte seed (FIPS 204 ``xi``), derived from ``secret``."""
    if mldsa is None:  # pragma: no cover - checked by ML_DSA_SUPPORTED first
        raise RuntimeError("this cryptography has no ML-DSA")
    return mldsa.MLDSA87PrivateKey.from_seed_bytes(_kdf(secret, label, 32))


def cdi(previous: bytes, measurement: bytes) -> bytes:
    """The next layer's compound device identifier: HMAC-SHA-384(this CDI, measurement)."""
    return hmac.new(previous, measurement, hashlib.sha384).digest()


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def serial_for(key: PublicKey) -> int:
    """A certificate serial number derived from the subject key: 20 octets, positive."""
    return (int.from_bytes(hashlib.sha256(spki(key)).digest()[:20], "big") >> 1) | 1


def distinguished_name(
    common_name: str, *, serial: str | None = None, org: str | None = None
) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if serial is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attributes)


def dice_name(common_name: str, key: PublicKey) -> x509.Name:
    """A DICE layer's subject: its role and, as Caliptra does, the hex SHA-256 of its key."""
    return distinguished_name(common_name, serial=hashlib.sha256(spki(key)).hexdigest().upper())


def hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash a key signs certificates with (ML-DSA signs the message itself)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    return None


def issue(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    ca: bool,
    path_length: int | None = None,
    key_usage: str = "sign",
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    not_before: dt.datetime = DEVICE_NOT_BEFORE,
    not_after: dt.datetime = DEVICE_NOT_AFTER,
    authority_key: PublicKey | None = None,
) -> x509.Certificate:
    """A certificate for ``public_key`` signed by ``issuer_key``.

    ``key_usage``: ``"sign"`` (digitalSignature, plus keyCertSign for a CA), ``"ca"``
    (keyCertSign and cRLSign: a CA that signs nothing else) or ``"agree"`` (keyAgreement: a
    TPM endorsement key). ``authority_key`` (the issuer's public key) adds the authority key
    identifier.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial_for(public_key))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_usage, ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if authority_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hash_for(issuer_key))


def _key_usage(kind: str, *, ca: bool) -> x509.KeyUsage:
    sign, cert_sign, agree = kind == "sign", ca or kind == "ca", kind == "agree"
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=agree,
        key_cert_sign=cert_sign,
        crl_sign=kind == "ca",
        encipher_only=False,
        decipher_only=False,
    )


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


ML_DSA_SUPPORTED = _ml_dsa_supported()
