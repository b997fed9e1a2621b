"""Device ids: derived from a device's identity public key, not from its certificate.

``device_id`` is the lowercase hex SHA-256 of the leaf identity certificate's
SubjectPublicKeyInfo, byte for byte as encoded in the certificate. A certificate re-issued
for the same key names the same device, and two "devices" sharing one key (a cloned
identity) collide on the same id, which is what lets the log catch a clone.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import PublicKeyAlgorithmOID

from sealtrail.errors import InvalidInput

__all__ = [
    "MAX_CERTIFICATE_SIZE",
    "Algorithm",
    "device_id",
    "identity_id",
    "leaf_algorithm_matches",
    "load_identity",
    "subject_public_key_info",
]

#: Largest identity certificate accepted, in bytes of DER (an ML-DSA-87 certificate, with
#: its 2,592-byte key and 4,627-byte signature, is about 7.5 KiB).
MAX_CERTIFICATE_SIZE = 16 * 1024

_ML_DSA_87 = x509.ObjectIdentifier("2.16.840.1.101.3.4.3.19")  # FIPS 204 id-ml-dsa-87


class Algorithm(StrEnum):
    """The identity key algorithm of a device."""

    ES384 = "ES384"  # ECDSA P-384 (Caliptra 1.x, Cerberus, TPM 2.0 EK)
    ML_DSA_87 = "ML-DSA-87"  # Caliptra 2.0
    ES256 = "ES256"  # ECDSA P-256


def _bad_certificate(message: str) -> InvalidInput:
    return InvalidInput(message, code="manifest-bad-certificate")


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """The DER element at ``pos``: (tag, start of its content, end of the element)."""
    if pos + 2 > len(der):
        raise _bad_certificate("a certificate is truncated")
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise _bad_certificate("a certificate has a bad DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise _bad_certificate("a certificate is truncated")
    return tag, pos, pos + length


def subject_public_key_info(certificate: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo DER exactly as the certificate encodes it.

    Read from the TBSCertificate (RFC 5280 §4.1) rather than re-encoded from a parsed key,
    so it works for any key algorithm, including ones the local library cannot load.
    """
    tbs = certificate.tbs_certificate_bytes
    tag, pos, end = _element(tbs, 0)
    if tag != 0x30:
        raise _bad_certificate("a certificate's TBSCertificate is not a SEQUENCE")
    here = pos
    tag, _, after = _element(tbs, here)
    if tag == 0xA0:  # [0] EXPLICIT version
        here = after
        tag, _, after = _element(tbs, here)
    # serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for expected in (0x02, 0x30, 0x30, 0x30, 0x30):
        if tag != expected:
            raise _bad_certificate("a certificate's TBSCertificate is malformed")
        here = after
        tag, _, after = _element(tbs, here)
    if tag != 0x30 or after > end:
        raise _bad_certificate("a certificate's public key info is malformed")
    return tbs[here:after]


def load_identity(der: bytes, where: str) -> x509.Certificate:
    """Parse one DER certificate of a device's chain (structure only, no validation)."""
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise InvalidInput(
            f"{where}: a certificate exceeds {MAX_CERTIFICATE_SIZE} bytes",
            code="manifest-bad-certificate",
        )
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise InvalidInput(
            f"{where}: not a DER X.509 certificate", code="manifest-bad-certificate"
        ) from None


def identity_id(leaf: x509.Certificate) -> str:
    """The device id of a parsed identity leaf certificate."""
    return hashlib.sha256(subject_public_key_info(leaf)).hexdigest()


def device_id(identity_leaf_der: bytes) -> str:
    """The device id: lowercase hex SHA-256 of the leaf certificate's SubjectPublicKeyInfo.

    Derived from the identity public key, so a re-issued certificate for the same key is the
    same device, and a cloned key is detectable (two devices, one id).
    """
    return identity_id(load_identity(identity_leaf_der, "identity certificate"))


def leaf_algorithm_matches(leaf: x509.Certificate, algorithm: Algorithm) -> bool:
    """Whether the leaf's public key is of ``algorithm`` (and curve, for ECDSA)."""
    oid = leaf.public_key_algorithm_oid
    if algorithm is Algorithm.ML_DSA_87:
        return oid == _ML_DSA_87
    if oid != PublicKeyAlgorithmOID.EC_PUBLIC_KEY:
        return False
    try:
        key = leaf.public_key()
    except ValueError:
        return False
    want = ec.SECP384R1 if algorithm is Algorithm.ES384 else ec.SECP256R1
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, want)
