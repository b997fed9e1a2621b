"""Issuer certificate chains: validated to an organization's trust anchors.

``cryptography``'s X.509 path builder does the work for ECDSA and ML-DSA chains, with
extension policies fit for signing certificates (the web-PKI client defaults want a
clientAuth EKU and a SAN, which code- and statement-signing certificates do not carry):
CAs need basicConstraints CA=true and keyCertSign; the leaf needs the digitalSignature key
usage and must not be a CA. ``cryptography`` refuses Ed25519 keys inside chains, so those
chains are walked here with the same rules (validity window, CA constraints, path length,
each signature by its issuer).

Validations are cached by the chain's bytes (and the anchors'), bounded in size, and only
until the earliest ``notAfter`` in the chain: a chain is checked once, not per statement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature as InvalidSignatureError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification as xv

from sealtrail.errors import InvalidInput, VerificationError

__all__ = ["ChainValidator", "fingerprint", "load_certificates", "load_der"]

#: Most intermediate certificates between the leaf and an anchor.
MAX_CHAIN_DEPTH = 6
#: Validated chains remembered.
CACHE_SIZE = 4096

_DER = Encoding.DER
_SHA256 = SHA256()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, hex."""
    return hashlib.sha256(cert.public_bytes(_DER)).hexdigest()


def load_der(data: bytes) -> x509.Certificate:
    """One DER certificate from untrusted input; :class:`InvalidInput` if it is not one.

    cryptography's deprecation warnings about malformed-but-parseable certificates (a
    negative serial number, say) are not allowed to escape as exceptions or noise: the
    certificate is judged by the chain validation that follows.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise InvalidInput(f"not an X.509 certificate: {exc}", code="bad-certificate") from None


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or more) or a single DER certificate."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise InvalidInput(f"not an X.509 certificate: {exc}", code="bad-certificate") from None


def _reject(code: str, message: str) -> VerificationError:
    return VerificationError(
        message,
        code=code,
        hint="Sign with a certificate that chains to your organization's anchor.",
    )


def _policies() -> tuple[xv.ExtensionPolicy, xv.ExtensionPolicy]:
    ca = xv.ExtensionPolicy.webpki_defaults_ca()
    ee = (
        xv.ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, xv.Criticality.AGNOSTIC, _leaf_key_usage)
        .may_be_present(x509.BasicConstraints, xv.Criticality.AGNOSTIC, _leaf_not_ca)
    )
    return ca, ee


def _leaf_key_usage(
    _policy: xv.Policy, _cert: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is None or not usage.digital_signature:
        raise ValueError("the signing certificate lacks the digitalSignature key usage")


def _leaf_not_ca(
    _policy: xv.Policy, _cert: x509.Certificate, bc: x509.BasicConstraints | None
) -> None:
    if bc is not None and bc.ca:
        raise ValueError("a CA certificate cannot sign statements")


class ChainValidator:
    """Validates statement-signing chains; thread-safe, with a bounded cache."""

    def __init__(self, *, cache_size: int = CACHE_SIZE) -> None:
        # key -> (valid from, valid until, leaf certificate) of a validated chain.
        self._cache: OrderedDict[bytes, tuple[dt.datetime, dt.datetime, x509.Certificate]] = (
            OrderedDict()
        )
        self._size = cache_size
        self._lock = threading.Lock()

    def validate(
        self,
        chain: Sequence[bytes],
        anchors: Sequence[x509.Certificate],
        *,
        now: dt.datetime | None = None,
        revoked: frozenset[str] = frozenset(),
    ) -> x509.Certificate:
        """Return the leaf certificate if ``chain`` (DER, leaf first) leads to an anchor.

        Raises :class:`~sealtrail.errors.VerificationError` with code
        ``chain-invalid``, ``chain-expired``, ``chain-untrusted`` or ``chain-revoked``.
        """
        when = now or dt.datetime.now(dt.UTC)
        if not anchors:
            raise _reject("chain-untrusted", "the organization has no trust anchor registered")
        # Everything up to the cache lookup works on the raw bytes: a cached chain is not
        # parsed again. A certificate's fingerprint is the SHA-256 of its DER.
        digests = [hashlib.sha256(c).digest() for c in chain]
        bad = [d.hex() for d in digests if d.hex() in revoked]
        if bad:
            raise _reject("chain-revoked", f"certificate {bad[0][:16]}… has been revoked")
        key = hashlib.sha256(
            b"".join(digests) + b"".join(a.fingerprint(_SHA256) for a in anchors)
        ).digest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] <= when <= hit[1]:
                self._cache.move_to_end(key)
                return hit[2]
        try:
            certs = [load_der(c) for c in chain]
        except InvalidInput:
            raise _reject(
                "chain-invalid", "x5chain holds something that is not a certificate"
            ) from None
        for cert in certs:
            if when < cert.not_valid_before_utc:
                raise _reject("chain-not-yet-valid", "a certificate in the chain is not valid yet")
            if when > cert.not_valid_after_utc:
                raise _reject("chain-expired", "a certificate in the chain has expired")
        if any(isinstance(c.public_key(), Ed25519PublicKey) for c in [*certs, *anchors]):
            _walk(certs, anchors, when)
        else:
            _build(certs, anchors, when)
        since = max(c.not_valid_before_utc for c in certs)
        until = min(c.not_valid_after_utc for c in certs)
        with self._lock:
            self._cache[key] = (since, until, certs[0])
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return certs[0]


def _build(
    certs: list[x509.Certificate], anchors: Sequence[x509.Certificate], when: dt.datetime
) -> None:
    ca, ee = _policies()
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(list(anchors)))
        .time(when)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ca, ee_policy=ee)
        .build_client_verifier()
    )
    try:
        verifier.verify(certs[0], certs[1:])
    except xv.VerificationError as exc:
        raise _reject(
            "chain-untrusted", f"the chain does not lead to a trust anchor: {exc}"
        ) from None


def _walk(
    certs: list[x509.Certificate], anchors: Sequence[x509.Certificate], when: dt.datetime
) -> None:
    """The same rules by hand, for chains with Ed25519 keys."""
    leaf = certs[0]
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.digital_signature:
        raise _reject(
            "chain-invalid", "the signing certificate lacks the digitalSignature key usage"
        )
    if _is_ca(leaf):
        raise _reject("chain-invalid", "a CA certificate cannot sign statements")
    pool = list(certs[1:])
    current = leaf
    for depth in range(MAX_CHAIN_DEPTH + 1):
        for anchor in anchors:
            if _issued(current, anchor):
                return
        parent = next((c for c in pool if _issued(current, c)), None)
        if parent is None:
            break
        if not _is_ca(parent, depth=depth):
            raise _reject("chain-invalid", "an intermediate is not allowed to issue certificates")
        if not parent.not_valid_before_utc <= when <= parent.not_valid_after_utc:
            raise _reject("chain-expired", "an intermediate certificate is outside its validity")
        pool.remove(parent)
        current = parent
    raise _reject("chain-untrusted", "the chain does not lead to a trust anchor")


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject or not _is_ca(issuer):
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignatureError):
        return False
    return True


def _is_ca(cert: x509.Certificate, *, depth: int = 0) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca or (bc.path_length is not None and bc.path_length < depth):
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ku.key_cert_sign
