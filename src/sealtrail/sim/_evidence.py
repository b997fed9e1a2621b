"""Attestation evidence as a simulated device produces it and a verifier checks it.

The signed bytes are the project's evidence format (docs/provenance.md, "Evidence and its
appraisal"), written here from its specification rather than imported, as any device
vendor would: a context string, the nonce with its length, and the measurements as
canonical JSON. ECDSA signatures are ``r || s`` (as COSE and SPDM); ML-DSA-87 signs the
message itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ._x509 import PrivateKey, PublicKey

try:  # ML-DSA (FIPS 204) is in recent cryptography releases only.
    from cryptography.hazmat.primitives.asymmetric import mldsa
except ImportError:  # pragma: no cover - depends on the installed cryptography
    mldsa = None  # type: ignore[assignment]

__all__ = [
    "EVIDENCE_CONTEXT",
    "Evidence",
    "ReportedMeasurement",
    "evidence_message",
    "sign_message",
    "signature_verifies",
]

#: The first bytes of every evidence message (docs/provenance.md).
EVIDENCE_CONTEXT = b"sealtrail-attestation-v1\x00"


@dataclass(frozen=True, slots=True)
class ReportedMeasurement:
    """A device's measurement of one firmware component: ``sha-384`` and lowercase hex."""

    component: str
    alg: str
    digest: str

    def to_doc(self) -> dict[str, str]:
        return {"alg": self.alg, "component": self.component, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a device answers a challenge with: its signature over the verifier's nonce and
    its measurements, and the alias certificates (DER, leaf first) that lead from the
    signing key to its identity key (empty when the identity key signed)."""

    chain: tuple[bytes, ...]
    measurements: tuple[ReportedMeasurement, ...]
    signature: bytes

    def to_doc(self) -> dict[str, Any]:
        """The ``evidence`` object of an attestation result (docs/provenance.md)."""
        return {
            "chain": [base64.b64encode(c).decode("ascii") for c in self.chain],
            "measurements": [m.to_doc() for m in self.measurements],
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }


def evidence_message(nonce: bytes, measurements: Sequence[ReportedMeasurement]) -> bytes:
    """``EVIDENCE_CONTEXT || uint16-be len(nonce) || nonce || measurements JSON``."""
    if not 16 <= len(nonce) <= 64:
        raise ValueError("a nonce is 16..64 bytes")
    listed = [m.to_doc() for m in measurements]
    text = json.dumps(listed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return EVIDENCE_CONTEXT + len(nonce).to_bytes(2, "big") + nonce + text.encode("utf-8")


def _ecdsa_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    return hashes.SHA384() if curve.key_size >= 384 else hashes.SHA256()


def sign_message(key: PrivateKey, message: bytes) -> bytes:
    """``r || s`` (each padded to the curve size) for ECDSA, the FIPS 204 signature for
    ML-DSA-87 (empty context)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(_ecdsa_hash(key.curve))))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(message)


def signature_verifies(key: PublicKey | object, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` (as :func:`sign_message` makes it) is ``key``'s over ``message``."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(_ecdsa_hash(key.curve)))
            return True
        if mldsa is not None and isinstance(key, mldsa.MLDSA87PublicKey):
            key.verify(signature, message)
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
