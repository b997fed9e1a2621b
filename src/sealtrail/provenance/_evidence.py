"""Attestation evidence: the bytes a device signs, and the ledger's own appraisal of them.

For an attestation, a device signs the verifier's fresh nonce together with its firmware
measurements (:func:`evidence_message`), with its identity key or with an alias key that
the identity key certified, directly or through a short chain of alias certificates
(Caliptra's DICE layers: IDevID -> LDevID -> FMC alias -> runtime alias). The operator
registers its result with that evidence, and :func:`appraise_device` appraises it again,
so that nothing is recorded as good that the evidence does not show:

* the alias chain leads to the device's identity key (:class:`AliasChains`; cached, since a
  device keeps its alias keys from one attestation to the next);
* the signature verifies over *this* attestation's nonce (checked every time, never cached:
  it is what makes the evidence fresh rather than replayed);
* every measurement is one of a registered firmware release, at or above the policy's
  minimum security version for its component.

Bad evidence is an outcome (a status and stable reason codes), never an exception. No I/O,
no clock: the caller supplies the registered releases and the policy as functions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from sealtrail.keys import parallel as _parallel

from ._device import MAX_CERTIFICATE_SIZE
from ._payloads import (
    MAX_CHAIN_LENGTH,
    MAX_NONCE_SIZE,
    MIN_NONCE_SIZE,
    ComponentMeasurement,
    DeviceEvidence,
    EarStatus,
)

try:  # ML-DSA (FIPS 204) is in recent cryptography releases only.
    from cryptography.hazmat.primitives.asymmetric import mldsa
except ImportError:  # pragma: no cover - depends on the installed cryptography
    mldsa = None  # type: ignore[assignment]

__all__ = [
    "EVIDENCE_CONTEXT",
    "ML_DSA_AVAILABLE",
    "AliasChains",
    "EvidenceReason",
    "SigningKey",
    "appraise_device",
    "appraise_devices",
    "evidence_message",
    "sign_evidence",
]

#: Domain separation: the first bytes of every signed evidence message (version 1).
EVIDENCE_CONTEXT = b"sealtrail-attestation-v1\x00"
#: Whether the installed cryptography signs and verifies ML-DSA-87.
ML_DSA_AVAILABLE = mldsa is not None

#: ECDSA curves a device may sign evidence with, and the hash each signs with.
_CURVES: dict[type[ec.EllipticCurve], hashes.HashAlgorithm] = {
    ec.SECP384R1: hashes.SHA384(),
    ec.SECP256R1: hashes.SHA256(),
}
_MISS = object()


class EvidenceReason(StrEnum):
    """Why evidence was not appraised as good; :func:`appraise_device` returns the values."""

    MISSING = "evidence-missing"
    BAD_CHAIN = "evidence-bad-chain"
    BAD_SIGNATURE = "evidence-bad-signature"
    MEASUREMENT_UNKNOWN = "measurement-unknown"
    SECURITY_VERSION_TOO_LOW = "security-version-too-low"


#: The one reason that only warns: the firmware is known, but older than policy wants.
_WARNINGS = frozenset({EvidenceReason.SECURITY_VERSION_TOO_LOW.value})


def evidence_message(nonce: bytes, measurements: Sequence[ComponentMeasurement]) -> bytes:
    """The exact bytes a device signs for one attestation::

        EVIDENCE_CONTEXT                 b"sealtrail-attestation-v1" and one 0x00 byte
        || uint16 big-endian len(nonce)  two bytes; the nonce is 16..64 bytes
        || nonce                         the attestation result's nonce, as bytes (not hex)
        || measurements JSON             UTF-8, below

    The measurements JSON is a list, in the evidence's order, of one object per measurement
    with exactly the keys ``alg``, ``component`` and ``digest`` in that (sorted) order, no
    whitespace, non-ASCII characters as UTF-8 and only ``"`` and ``\\`` escaped (a component
    name holds printable characters only), for example
    ``[{"alg":"sha-384","component":"caliptra-fmc","digest":"0f0f..."}]``. For such lists
    this is also their RFC 8785 (JCS) canonical form.

    The context keeps these signatures from being taken for any other message of the same
    key; the length prefix keeps the nonce and the measurements from running into each
    other. Raises ``ValueError`` for a nonce outside 16..64 bytes.
    """
    if not MIN_NONCE_SIZE <= len(nonce) <= MAX_NONCE_SIZE:
        raise ValueError(f"a nonce is {MIN_NONCE_SIZE}..{MAX_NONCE_SIZE} bytes")
    listed = [
        {"alg": m.alg.value, "component": m.component, "digest": m.digest} for m in measurements
    ]
    text = json.dumps(listed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b"".join((EVIDENCE_CONTEXT, len(nonce).to_bytes(2, "big"), nonce, text.encode("utf-8")))


def sign_evidence(
    key: ec.EllipticCurvePrivateKey | mldsa.MLDSA87PrivateKey,
    nonce: bytes,
    measurements: Sequence[ComponentMeasurement],
    chain: Sequence[bytes] = (),
) -> DeviceEvidence:
    """Evidence as a device produces it, for device simulators and tests.

    ``key`` is the key of ``chain[0]`` (or the identity key when ``chain`` is empty); it is
    only used to sign. ECDSA P-384 signs with SHA-384, P-256 with SHA-256, and the signature
    is ``r || s``, each big-endian and padded to the curve's size (as in COSE and SPDM);
    ML-DSA-87 signs the message itself with an empty context (FIPS 204). Raises
    ``ValueError`` for any other key or a nonce outside 16..64 bytes.
    """
    message = evidence_message(nonce, measurements)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = _CURVES.get(type(key.curve))
        if algorithm is None:
            raise ValueError("evidence is signed with ECDSA P-256 or P-384")
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(algorithm)))
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif mldsa is not None and isinstance(key, mldsa.MLDSA87PrivateKey):
        signature = key.sign(message)
    else:
        raise ValueError("evidence is signed with ECDSA P-256, P-384 or ML-DSA-87")
    return DeviceEvidence(chain=tuple(chain), measurements=tuple(measurements), signature=signature)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key a device may sign evidence with: ECDSA P-256 or P-384, or ML-DSA-87."""

    public_key: CertificatePublicKeyTypes

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` (as :func:`sign_evidence` makes it) is over ``message``."""
        key = self.public_key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                size = (key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                key.verify(encode_dss_signature(r, s), message, ec.ECDSA(_CURVES[type(key.curve)]))
            elif mldsa is not None and isinstance(key, mldsa.MLDSA87PublicKey):
                key.verify(signature, message)
            else:
                return False
        except (InvalidSignature, ValueError, KeyError):
            return False
        return True


def _signing_key(certificate: x509.Certificate) -> SigningKey | None:
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return SigningKey(key) if type(key.curve) in _CURVES else None
    if mldsa is not None and isinstance(key, mldsa.MLDSA87PublicKey):
        return SigningKey(key)
    return None


def _load(der: bytes) -> x509.Certificate | None:
    if len(der) > MAX_CERTIFICATE_SIZE:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


class AliasChains:
    """Finds a device's evidence signing key from its alias chain; thread-safe, cached.

    An alias chain (DER, leaf first) leads to the identity certificate when each certificate
    is directly issued by the next one (issuer name and signature) and the last one by the
    identity certificate. An alias certificate that issues another must be a CA
    (basicConstraints), so a layer's leaf alias key cannot extend the chain. The identity
    certificate is not held to that: its key is the device's own, and makers mark it either
    way. An empty chain means the identity key signs. The signing key (the first
    certificate's) must be ECDSA P-256/P-384 or ML-DSA-87.

    Not checked, on purpose: validity dates (a device's alias certificates carry whatever its
    clock or its firmware says, and freshness comes from the nonce) and key usages (DICE
    layers set them differently). A chain whose keys the installed cryptography cannot check
    counts as bad: nothing unverifiable is taken for good.

    Results, good or bad, are cached (LRU, ``cache`` entries) by the SHA-256 of the identity
    certificate and of each alias certificate, so an unchanged chain costs two hashes and a
    lookup.
    """

    def __init__(self, *, cache: int = 1 << 16) -> None:
        self._results: OrderedDict[tuple[bytes, ...], SigningKey | None] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()

    def signing_key(self, identity: bytes, chain: Sequence[bytes]) -> SigningKey | None:
        """The key that signs for the device of ``identity`` (its identity leaf, DER) through
        ``chain``, or ``None`` when the chain does not lead to the identity key."""
        if len(chain) > MAX_CHAIN_LENGTH:
            return None
        key = (hashlib.sha256(identity).digest(), *(hashlib.sha256(c).digest() for c in chain))
        with self._lock:
            found = self._results.get(key, _MISS)
            if found is not _MISS:
                self._results.move_to_end(key)
                return found  # type: ignore[return-value]
        result = _resolve(identity, chain)
        with self._lock:
            self._results[key] = result
            while len(self._results) > self._size:
                self._results.popitem(last=False)
        return result


def _resolve(identity: bytes, chain: Sequence[bytes]) -> SigningKey | None:
    certificates = [_load(der) for der in (*chain, identity)]
    if any(c is None for c in certificates):
        return None
    loaded = [c for c in certificates if c is not None]
    for position, (child, issuer) in enumerate(itertools.pairwise(loaded)):
        is_alias_issuer = position + 1 < len(chain)
        if (is_alias_issuer and not _is_ca(issuer)) or not _issued(child, issuer):
            return None
    return _signing_key(loaded[0])


def _no_minimum(component: str) -> int | None:
    """The default policy: no minimum security version for any component."""
    return None


def appraise_device(
    evidence: DeviceEvidence | None,
    *,
    nonce: bytes,
    identity: bytes,
    release_of: Callable[[ComponentMeasurement], int | None],
    min_security_version: Callable[[str], int | None] = _no_minimum,
    chains: AliasChains,
) -> tuple[EarStatus, tuple[str, ...]]:
    """Appraise one device's evidence for the attestation of ``nonce`` (bytes).

    ``identity`` is the DER of the device's identity leaf certificate (from its manifest);
    ``release_of`` gives the security version of the registered firmware release holding a
    measurement (component, algorithm and digest), or ``None``; ``min_security_version``
    gives the policy's floor for a component, or ``None``.

    Returns the status and the reasons (:class:`EvidenceReason` values, sorted):
    ``evidence-missing`` (none given, or it measures nothing), ``evidence-bad-chain``,
    ``evidence-bad-signature`` (including a signature over another nonce: a replay),
    ``measurement-unknown`` and ``security-version-too-low``. Measurements are only looked
    at once the signature verified: unauthenticated measurements say nothing. The status is
    ``affirming`` without a reason, ``warning`` when the only reason is
    ``security-version-too-low``, and ``contraindicated`` otherwise. Raises ``ValueError``
    only for a nonce outside 16..64 bytes (the caller's error, not the evidence's).
    """
    if not MIN_NONCE_SIZE <= len(nonce) <= MAX_NONCE_SIZE:
        raise ValueError(f"a nonce is {MIN_NONCE_SIZE}..{MAX_NONCE_SIZE} bytes")
    failure = _signed(evidence, nonce, identity, chains)
    if failure is not None or evidence is None:
        return _outcome({failure or EvidenceReason.MISSING})
    return _outcome(_measured(evidence, release_of, min_security_version))


def appraise_devices(
    items: Sequence[tuple[DeviceEvidence | None, bytes]],
    *,
    nonce: bytes,
    release_of: Callable[[ComponentMeasurement], int | None],
    min_security_version: Callable[[str], int | None] = _no_minimum,
    chains: AliasChains,
) -> list[tuple[EarStatus, tuple[str, ...]]]:
    """:func:`appraise_device` for every ``(evidence, identity)`` of one attestation, in
    order, with the same results.

    The alias chains and signatures (a P-384 check is ~0.7 ms, most of a device's cost) are
    checked on this thread and the helper threads of
    :func:`sealtrail.keys.parallel.in_threads` at once;
    ``release_of`` and ``min_security_version`` are only called from this thread, after.
    """
    if not items:
        return []
    if not MIN_NONCE_SIZE <= len(nonce) <= MAX_NONCE_SIZE:
        raise ValueError(f"a nonce is {MIN_NONCE_SIZE}..{MAX_NONCE_SIZE} bytes")
    failures = _parallel.in_threads(lambda item: _signed(item[0], nonce, item[1], chains), items)
    appraised = []
    for (evidence, _), failure in zip(items, failures, strict=True):
        if failure is not None or evidence is None:
            appraised.append(_outcome({failure or EvidenceReason.MISSING}))
        else:
            appraised.append(_outcome(_measured(evidence, release_of, min_security_version)))
    return appraised


def _signed(
    evidence: DeviceEvidence | None, nonce: bytes, identity: bytes, chains: AliasChains
) -> EvidenceReason | None:
    """Why ``evidence`` is not signed over ``nonce`` by the device of ``identity``, or None
    (thread-safe: :class:`AliasChains` is, and the rest reads only its arguments)."""
    if evidence is None or not evidence.measurements:
        return EvidenceReason.MISSING
    key = chains.signing_key(identity, evidence.chain)
    if key is None:
        return EvidenceReason.BAD_CHAIN
    if not key.verifies(evidence.signature, evidence_message(nonce, evidence.measurements)):
        return EvidenceReason.BAD_SIGNATURE
    return None


def _measured(
    evidence: DeviceEvidence,
    release_of: Callable[[ComponentMeasurement], int | None],
    min_security_version: Callable[[str], int | None],
) -> set[EvidenceReason]:
    """What signed ``evidence``'s measurements show against the releases and the policy."""
    reasons: set[EvidenceReason] = set()
    for measurement in evidence.measurements:
        security_version = release_of(measurement)
        if security_version is None:
            reasons.add(EvidenceReason.MEASUREMENT_UNKNOWN)
            continue
        floor = min_security_version(measurement.component)
        if floor is not None and security_version < floor:
            reasons.add(EvidenceReason.SECURITY_VERSION_TOO_LOW)
    return reasons


def _outcome(reasons: set[EvidenceReason]) -> tuple[EarStatus, tuple[str, ...]]:
    codes = tuple(sorted(r.value for r in reasons))
    if not codes:
        return EarStatus.AFFIRMING, codes
    if _WARNINGS.issuperset(codes):
        return EarStatus.WARNING, codes
    return EarStatus.CONTRAINDICATED, codes
