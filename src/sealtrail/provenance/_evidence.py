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
* every firmware measurement a DICE layer certified for the next one (the FWIDs of a TCG
  ``DiceTcbInfo`` in an alias certificate, which the running firmware cannot forge) is
  among the measurements the device reports (:func:`tcb_info_fwids`);
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
from typing import ClassVar

from asn1crypto import core
from asn1crypto import parser as asn1_parser
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
    DigestAlgorithm,
    EarStatus,
)

try:  # ML-DSA (FIPS 204) is in recent cryptography releases only.
    from cryptography.hazmat.primitives.asymmetric import mldsa
except ImportError:  # pragma: no cover - depends on the installed cryptography
    mldsa = None  # type: ignore[assignment]

__all__ = [
    "EVIDENCE_CONTEXT",
    "ML_DSA_AVAILABLE",
    "TCB_INFO_OID",
    "AliasChain",
    "AliasChains",
    "EvidenceReason",
    "Fwid",
    "SigningKey",
    "appraise_device",
    "appraise_devices",
    "evidence_message",
    "sign_evidence",
    "tcb_info_fwids",
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
    TCB_MISMATCH = "evidence-tcb-mismatch"
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


def _extensions(certificate: x509.Certificate) -> x509.Extensions | None:
    """The certificate's extensions, or ``None`` when cryptography cannot read them (one
    that is not the DER of its type, the same extension twice, a name form it lacks)."""
    try:
        return certificate.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return None


def _is_ca(certificate: x509.Certificate) -> bool:
    extensions = _extensions(certificate)
    if extensions is None:
        return False
    try:
        return bool(extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# -- DICE TcbInfo ----------------------------------------------------------------------------

#: The TCG DICE ``DiceTcbInfo`` certificate extension (tcg-dice-TcbInfo): what the DICE layer
#: that issued an alias certificate measured of the layer that holds the alias key.
TCB_INFO_OID = x509.ObjectIdentifier("2.23.133.5.4.1")

#: The hash algorithms an FWID may name (NIST CSOR OIDs) that evidence measures with, and
#: the size of their digests.
_FWID_HASHES = {
    "2.16.840.1.101.3.4.2.1": (DigestAlgorithm.SHA256, 32),
    "2.16.840.1.101.3.4.2.2": (DigestAlgorithm.SHA384, 48),
    "2.16.840.1.101.3.4.2.3": (DigestAlgorithm.SHA512, 64),
}


class _FWID(core.Sequence):  # type: ignore[misc]  # asn1crypto has no type hints
    _fields: ClassVar[list[tuple[object, ...]]] = [
        ("hashAlg", core.ObjectIdentifier),
        ("digest", core.OctetString),
    ]


class _FWIDLIST(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _FWID


class _OperationalFlags(core.BitString):  # type: ignore[misc]
    """Its named bits are not read, so none are declared (the bit string is kept as is)."""


class _DiceTcbInfo(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[tuple[object, ...]]] = [
        ("vendor", core.UTF8String, {"implicit": 0, "optional": True}),
        ("model", core.UTF8String, {"implicit": 1, "optional": True}),
        ("version", core.UTF8String, {"implicit": 2, "optional": True}),
        ("svn", core.Integer, {"implicit": 3, "optional": True}),
        ("layer", core.Integer, {"implicit": 4, "optional": True}),
        ("index", core.Integer, {"implicit": 5, "optional": True}),
        ("fwids", _FWIDLIST, {"implicit": 6, "optional": True}),
        ("flags", _OperationalFlags, {"implicit": 7, "optional": True}),
        ("vendorInfo", core.OctetString, {"implicit": 8, "optional": True}),
        ("type", core.OctetString, {"implicit": 9, "optional": True}),
    ]


#: What asn1crypto raises for input it cannot read (UnicodeDecodeError is a ValueError; an
#: empty BIT STRING is an IndexError).
_ASN1_ERRORS = (ValueError, TypeError, IndexError)
#: asn1crypto's numbers for the context class and for a constructed SEQUENCE.
_CONTEXT_CLASS, _CONSTRUCTED, _SEQUENCE = 2, 1, 16
#: The tag numbers of the fields of later versions read past: after ``type``, and at most 30
#: (DER allows higher ones, in a multi-octet form; refused as the first reader did).
_LAST_FIELD, _MAX_FIELD = 9, 30


@dataclass(frozen=True, slots=True)
class Fwid:
    """One firmware measurement of a ``DiceTcbInfo``: ``alg`` is a :class:`DigestAlgorithm`
    value, or the dotted OID of a hash evidence cannot name (which no reported measurement
    can then match); ``digest`` is lowercase hex."""

    alg: str
    digest: str


def tcb_info_fwids(value: bytes) -> tuple[Fwid, ...]:
    """The FWIDs, in order, of a ``DiceTcbInfo`` (the extension's value, DER).

    From the TCG DICE Attestation Architecture (version 1.1)::

        DiceTcbInfo ::= SEQUENCE {
            vendor     [0] IMPLICIT UTF8String OPTIONAL,
            model      [1] IMPLICIT UTF8String OPTIONAL,
            version    [2] IMPLICIT UTF8String OPTIONAL,
            svn        [3] IMPLICIT INTEGER OPTIONAL,
            layer      [4] IMPLICIT INTEGER OPTIONAL,
            index      [5] IMPLICIT INTEGER OPTIONAL,
            fwids      [6] IMPLICIT FWIDLIST OPTIONAL,
            flags      [7] IMPLICIT OperationalFlags OPTIONAL,  -- a BIT STRING
            vendorInfo [8] IMPLICIT OCTET STRING OPTIONAL,
            type       [9] IMPLICIT OCTET STRING OPTIONAL,
            ... }
        FWIDLIST ::= SEQUENCE SIZE (1..MAX) OF FWID
        FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING }

    Read with asn1crypto (:class:`_DiceTcbInfo`), every field decoded though only the
    FWIDs are kept, and held to DER: one SEQUENCE and nothing after it, each field the DER
    that asn1crypto writes again for the value it read (asn1crypto reads BER, and leniently).
    Fields after ``type`` (added by later versions) are read past, undecoded, when
    context-tagged, in ascending order and numbered up to 30. An FWIDLIST holds at least one
    FWID; an FWID of SHA-256, SHA-384 or SHA-512 has that hash's size. Raises
    ``ValueError`` for anything else.
    """
    try:
        info = _DiceTcbInfo.load(value, strict=True)
        _check_der(info, value)
        fwids = info["fwids"]
        if isinstance(fwids, core.Void):
            return ()
        if not len(fwids):
            raise ValueError("an FWIDLIST holds at least one FWID")
        return tuple(_fwid(entry) for entry in fwids)
    except _ASN1_ERRORS as error:
        raise ValueError(f"a malformed DiceTcbInfo: {error}") from error


def _check_der(info: _DiceTcbInfo, value: bytes) -> None:
    """``ValueError`` unless ``value``, which asn1crypto read as ``info``, is DER: each
    declared field as asn1crypto encodes again the value it decoded (decoding every field),
    then the fields of later versions, each in a DER header (its content is not read)."""
    if asn1_parser.emit(0, _CONSTRUCTED, _SEQUENCE, info.contents) != value:
        raise ValueError("a DiceTcbInfo is DER: definite lengths in their shortest form")
    # b"" for an absent field. When these are a prefix of the contents, each is the field's
    # own encoding: the same header means the same length, so the same content.
    fields = range(len(_DiceTcbInfo._fields))
    declared = b"".join(info[position].dump(force=True) for position in fields)
    if not info.contents.startswith(declared):
        raise ValueError("DiceTcbInfo fields are DER")
    # What asn1crypto's Sequence left after the declared fields: a later version's, or one
    # out of order, twice or not context-tagged. It would decode them as the universal type
    # of their tag number, which is not theirs: so they are only walked, not decoded.
    rest, last = info.contents[len(declared) :], _LAST_FIELD
    while rest:
        size = asn1_parser.peek(rest)
        element, rest = rest[:size], rest[size:]
        class_, method, tag, _, content, _ = asn1_parser.parse(element, strict=True)
        if class_ != _CONTEXT_CLASS or not last < tag <= _MAX_FIELD:
            raise ValueError("DiceTcbInfo fields are context-tagged, in ascending order")
        if asn1_parser.emit(class_, method, tag, content) != element:
            raise ValueError("a DiceTcbInfo field is DER")
        last = tag


def _fwid(entry: _FWID) -> Fwid:
    if len(entry) != len(_FWID._fields):
        raise ValueError("an FWID is SEQUENCE { OBJECT IDENTIFIER, OCTET STRING }")
    oid, digest = str(entry["hashAlg"].dotted), bytes(entry["digest"].native)
    known = _FWID_HASHES.get(oid)
    if known is None:
        if not digest:
            raise ValueError("an FWID digest has at least one octet")
        return Fwid(oid, digest.hex())
    alg, size = known
    if len(digest) != size:
        raise ValueError(f"a {alg.value} FWID digest is {size} bytes")
    return Fwid(alg.value, digest.hex())


def _chain_fwids(aliases: Sequence[x509.Certificate]) -> frozenset[Fwid] | None:
    """Every FWID of the alias certificates' ``DiceTcbInfo`` extensions, or ``None`` when a
    certificate's extensions, or a ``DiceTcbInfo``, cannot be read."""
    fwids: set[Fwid] = set()
    for certificate in aliases:
        extensions = _extensions(certificate)
        if extensions is None:
            return None
        try:
            extension = extensions.get_extension_for_oid(TCB_INFO_OID)
            fwids.update(tcb_info_fwids(extension.value.public_bytes()))
        except x509.ExtensionNotFound:
            continue
        except ValueError:
            return None
    return frozenset(fwids)


# -- alias chains ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AliasChain:
    """An alias chain that leads to a device's identity key: the key that signs its evidence
    and the FWIDs its certificates' ``DiceTcbInfo`` extensions carry (empty when none does)."""

    signing_key: SigningKey
    fwids: frozenset[Fwid] = frozenset()


class AliasChains:
    """Finds a device's evidence signing key from its alias chain; thread-safe, cached.

    An alias chain (DER, leaf first) leads to the identity certificate when each certificate
    is directly issued by the next one (issuer name and signature) and the last one by the
    identity certificate. An alias certificate that issues another must be a CA
    (basicConstraints), so a layer's leaf alias key cannot extend the chain. The identity
    certificate is not held to that: its key is the device's own, and makers mark it either
    way. An empty chain means the identity key signs. The signing key (the first
    certificate's) must be ECDSA P-256/P-384 or ML-DSA-87. Every alias certificate's
    extensions must be readable, and a ``DiceTcbInfo`` among them well-formed
    (:func:`tcb_info_fwids`): its FWIDs are kept with the key, for the appraisal to compare
    with the reported measurements.

    Not checked, on purpose: validity dates (a device's alias certificates carry whatever its
    clock or its firmware says, and freshness comes from the nonce) and key usages (DICE
    layers set them differently). A chain whose keys the installed cryptography cannot check
    counts as bad: nothing unverifiable is taken for good.

    Results, good or bad, are cached (LRU, ``cache`` entries) by the SHA-256 of the identity
    certificate and of each alias certificate, so an unchanged chain costs two hashes and a
    lookup, its ``DiceTcbInfo`` extensions included.
    """

    def __init__(self, *, cache: int = 1 << 16) -> None:
        self._results: OrderedDict[tuple[bytes, ...], AliasChain | None] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()

    def resolve(self, identity: bytes, chain: Sequence[bytes]) -> AliasChain | None:
        """How ``chain`` leads to the identity key of the device of ``identity`` (its
        identity leaf, DER), or ``None`` when it does not."""
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

    def signing_key(self, identity: bytes, chain: Sequence[bytes]) -> SigningKey | None:
        """The key that signs for the device of ``identity`` (its identity leaf, DER) through
        ``chain``, or ``None`` when the chain does not lead to the identity key."""
        resolved = self.resolve(identity, chain)
        return None if resolved is None else resolved.signing_key


def _resolve(identity: bytes, chain: Sequence[bytes]) -> AliasChain | None:
    certificates = [_load(der) for der in (*chain, identity)]
    if any(c is None for c in certificates):
        return None
    loaded = [c for c in certificates if c is not None]
    for position, (child, issuer) in enumerate(itertools.pairwise(loaded)):
        is_alias_issuer = position + 1 < len(chain)
        if (is_alias_issuer and not _is_ca(issuer)) or not _issued(child, issuer):
            return None
    key = _signing_key(loaded[0])
    fwids = _chain_fwids(loaded[: len(chain)])
    if key is None or fwids is None:
        return None
    return AliasChain(key, fwids)


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
    ``evidence-missing`` (none given, or it measures nothing), ``evidence-bad-chain``
    (including an alias certificate whose ``DiceTcbInfo`` is malformed),
    ``evidence-bad-signature`` (including a signature over another nonce: a replay),
    ``evidence-tcb-mismatch`` (an FWID of the alias certificates' ``DiceTcbInfo`` that is
    not among the reported measurements), ``measurement-unknown`` and
    ``security-version-too-low``. Measurements are only looked at once the signature
    verified: unauthenticated measurements say nothing. The status is ``affirming`` without a
    reason, ``warning`` when the only reason is ``security-version-too-low``, and
    ``contraindicated`` otherwise. Raises ``ValueError`` only for a nonce outside 16..64
    bytes (the caller's error, not the evidence's).
    """
    if not MIN_NONCE_SIZE <= len(nonce) <= MAX_NONCE_SIZE:
        raise ValueError(f"a nonce is {MIN_NONCE_SIZE}..{MAX_NONCE_SIZE} bytes")
    signed = _signed(evidence, nonce, identity, chains)
    return _appraisal(evidence, signed, release_of, min_security_version)


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
    signed = _parallel.in_threads(lambda item: _signed(item[0], nonce, item[1], chains), items)
    return [
        _appraisal(evidence, checked, release_of, min_security_version)
        for (evidence, _), checked in zip(items, signed, strict=True)
    ]


def _signed(
    evidence: DeviceEvidence | None, nonce: bytes, identity: bytes, chains: AliasChains
) -> AliasChain | EvidenceReason:
    """The alias chain through which ``evidence`` is signed over ``nonce`` by the device of
    ``identity``, or why it is not (thread-safe: :class:`AliasChains` is, and the rest reads
    only its arguments)."""
    if evidence is None or not evidence.measurements:
        return EvidenceReason.MISSING
    chain = chains.resolve(identity, evidence.chain)
    if chain is None:
        return EvidenceReason.BAD_CHAIN
    message = evidence_message(nonce, evidence.measurements)
    if not chain.signing_key.verifies(evidence.signature, message):
        return EvidenceReason.BAD_SIGNATURE
    return chain


def _appraisal(
    evidence: DeviceEvidence | None,
    signed: AliasChain | EvidenceReason,
    release_of: Callable[[ComponentMeasurement], int | None],
    min_security_version: Callable[[str], int | None],
) -> tuple[EarStatus, tuple[str, ...]]:
    """The outcome for ``evidence``, once :func:`_signed` found ``signed``."""
    if isinstance(signed, EvidenceReason):
        return _outcome({signed})
    assert evidence is not None  # no evidence is EvidenceReason.MISSING
    return _outcome(_measured(evidence, signed.fwids, release_of, min_security_version))


def _measured(
    evidence: DeviceEvidence,
    fwids: frozenset[Fwid],
    release_of: Callable[[ComponentMeasurement], int | None],
    min_security_version: Callable[[str], int | None],
) -> set[EvidenceReason]:
    """What signed ``evidence``'s measurements show against the FWIDs its alias chain
    certified, the releases and the policy."""
    reasons: set[EvidenceReason] = set()
    # Each FWID must be reported, same algorithm and digest: a compromised layer holds its
    # alias key and signs what it likes, but the FWID is the layer below's measurement of it.
    # Reported measurements no FWID holds are a layer's own (what it loaded and measured),
    # as good as that layer, which an FWID pins; the releases judge every one of them.
    if fwids and not fwids <= {Fwid(m.alg.value, m.digest) for m in evidence.measurements}:
        reasons.add(EvidenceReason.TCB_MISMATCH)
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
