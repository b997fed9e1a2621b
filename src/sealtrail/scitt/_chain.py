"""Issuer certificate chains: validated to an organization's trust anchors.

``cryptography``'s X.509 path builder does the work for ECDSA and ML-DSA chains, with
extension policies fit for signing certificates (the web-PKI client defaults want a
clientAuth EKU and a SAN, which code- and statement-signing certificates do not carry):
CAs need basicConstraints CA=true and keyCertSign; the leaf needs the digitalSignature key
usage and must not be a CA. ``cryptography`` refuses Ed25519 keys inside chains, so those
chains are walked here with the same rules (validity window, CA constraints with critical
basicConstraints and keyCertSign, path length, each signature by its issuer), stricter
where the walk does not follow the library: name constraints and other critical CA
extensions are refused, and the x5chain may hold nothing but the path. Which way a chain
is checked depends on the keys on its path, never on a certificate merely sent along.

Validations are cached by the chain's bytes (and the anchors'), bounded in size, and only
while every certificate of the chain is valid and no anchor's validity begins or ends: a
chain is checked once, not per statement,
and so is the leaf's key made into a verifier (:meth:`ChainValidator.signing_key`).
Revocation is checked on every call, before the cache, against the organization's current
list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature as InvalidSignatureError
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification as xv

from sealtrail.errors import InvalidInput, VerificationError
from sealtrail.keys import Verifier, verifier_for

__all__ = ["ChainValidator", "fingerprint", "load_certificates", "load_der"]

#: Most intermediate certificates between the leaf and an anchor.
MAX_CHAIN_DEPTH = 6
#: Validated chains remembered.
CACHE_SIZE = 4096
#: Distinct anchor sets whose identity is remembered (one per organization in use).
ANCHOR_SETS = 1024

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


@dataclass
class _Validated:
    """A validated chain: when the validation holds, its leaf, and the leaf's key as a
    verifier per algorithm (made once: building an EC verifier checks the point)."""

    since: dt.datetime
    until: dt.datetime
    leaf: x509.Certificate
    keys: dict[str, Verifier] = field(default_factory=dict)


class ChainValidator:
    """Validates statement-signing chains; thread-safe, with a bounded cache."""

    def __init__(self, *, cache_size: int = CACHE_SIZE) -> None:
        # (chain DER, anchors id) -> a validated chain. Only validated chains are kept, so
        # the memory held is bounded by the chains of onboarded organizations in use.
        self._cache: OrderedDict[tuple[tuple[bytes, ...], bytes], _Validated] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()
        # Anchor sets -> the digest of their fingerprints (a certificate's fingerprint is
        # recomputed from its DER on every call; an organization's anchors rarely change).
        self._anchor_ids: dict[tuple[x509.Certificate, ...], bytes] = {}
        self._anchors_by_object: dict[int, tuple[tuple[x509.Certificate, ...], bytes]] = {}

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
        return self._validated(chain, anchors, now=now, revoked=revoked).leaf

    def signing_key(
        self,
        chain: Sequence[bytes],
        anchors: Sequence[x509.Certificate],
        *,
        alg: str,
        now: dt.datetime | None = None,
        revoked: frozenset[str] = frozenset(),
    ) -> Verifier:
        """The leaf's key, as a verifier of ``alg``, if ``chain`` leads to an anchor.

        The same checks and errors as :meth:`validate`; a leaf key that cannot verify
        ``alg`` is ``chain-invalid`` (or :class:`~sealtrail.errors.InvalidInput` when it is a
        supported key of another algorithm).
        """
        valid = self._validated(chain, anchors, now=now, revoked=revoked)
        key = valid.keys.get(alg)
        if key is None:
            try:
                key = verifier_for(valid.leaf.public_key(), alg)
            except (ValueError, UnsupportedAlgorithm):
                raise VerificationError(
                    "the signing certificate's key is unusable", code="chain-invalid"
                ) from None
            valid.keys[alg] = key  # one dict store: safe under concurrent readers
        return key

    def _anchors_id(self, anchors: Sequence[x509.Certificate]) -> bytes:
        """A digest naming this set of anchors (their fingerprints, in order)."""
        immutable = type(anchors) is tuple
        if immutable:
            # An organization holds its anchors in a tuple of immutable certificates, the
            # same object for every statement: known by identity. The entry keeps the
            # tuple alive, so its id cannot be reused by another object meanwhile.
            known = self._anchors_by_object.get(id(anchors))
            if known is not None and known[0] is anchors:
                return known[1]
        group = tuple(anchors)
        found = self._anchor_ids.get(group)
        if found is not None and not immutable:
            return found
        if found is None:
            found = hashlib.sha256(b"".join(a.fingerprint(_SHA256) for a in group)).digest()
        with self._lock:
            if len(self._anchor_ids) >= ANCHOR_SETS:
                self._anchor_ids.clear()
                self._anchors_by_object.clear()
            self._anchor_ids[group] = found
            if immutable:
                self._anchors_by_object[id(anchors)] = (group, found)
        return found

    def _validated(
        self,
        chain: Sequence[bytes],
        anchors: Sequence[x509.Certificate],
        *,
        now: dt.datetime | None,
        revoked: frozenset[str],
    ) -> _Validated:
        when = now or dt.datetime.now(dt.UTC)
        if not anchors:
            raise _reject("chain-untrusted", "the organization has no trust anchor registered")
        if revoked:
            # A certificate's fingerprint is the SHA-256 of its DER.
            bad = [f for f in (hashlib.sha256(c).hexdigest() for c in chain) if f in revoked]
            if bad:
                raise _reject("chain-revoked", f"certificate {bad[0][:16]}… has been revoked")
        # Up to the cache lookup everything works on the raw bytes: a chain seen before is
        # not parsed again.
        key = (tuple(chain), self._anchors_id(anchors))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.since <= when <= hit.until:
                self._cache.move_to_end(key)
                return hit
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
        try:
            _check_path(certs, anchors, when)
        except (ValueError, UnsupportedAlgorithm):
            raise _reject(
                "chain-invalid", "a certificate in the chain has a public key that cannot be used"
            ) from None
        since, until = _window(certs, anchors, when)
        valid = _Validated(since=since, until=until, leaf=certs[0])
        with self._lock:
            self._cache[key] = valid
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return valid


def _check_path(
    certs: list[x509.Certificate], anchors: Sequence[x509.Certificate], when: dt.datetime
) -> None:
    """The chain, by the library's path builder, or walked (:func:`_walk`) when a key on
    the path is Ed25519. An ECDSA chain under an organization with Ed25519 anchors may lead
    to either kind: the rules are the same, so both are tried."""
    ed_anchors = [a for a in anchors if _is_ed25519(a)]
    other_anchors = [a for a in anchors if not _is_ed25519(a)]
    if any(_is_ed25519(c) for c in certs):
        _walk(certs, anchors, when)
    elif not ed_anchors:
        _build(certs, anchors, when)
    elif not other_anchors:
        _walk(certs, ed_anchors, when)
    else:
        try:
            _build(certs, other_anchors, when)
        except VerificationError:
            _walk(certs, ed_anchors, when)


def _window(
    certs: list[x509.Certificate], anchors: Sequence[x509.Certificate], when: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """How long a chain validated at ``when`` stays validated: while every certificate of
    it is valid and no anchor's validity begins or ends (an anchor expired, or not valid
    yet, takes no part; one that becomes valid or expires calls for a fresh check)."""
    edges = [*(a.not_valid_before_utc for a in anchors), *(a.not_valid_after_utc for a in anchors)]
    since = max([c.not_valid_before_utc for c in certs] + [t for t in edges if t <= when])
    until = min([c.not_valid_after_utc for c in certs] + [t for t in edges if t > when])
    return since, until


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
    except xv.VerificationError:
        # The library's reason quotes certificate names: not echoed to the submitter.
        raise _reject(
            "chain-untrusted",
            "the chain does not lead to a trust anchor of the issuer's organization "
            "under the signing-certificate rules (docs/scitt.md)",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise _reject("chain-invalid", "a certificate in the chain cannot be used") from None


def _walk(
    certs: list[x509.Certificate], anchors: Sequence[x509.Certificate], when: dt.datetime
) -> None:
    """The rules of :func:`_build` by hand, for chains with Ed25519 keys: a signing leaf,
    CAs with critical basicConstraints and keyCertSign, path lengths, validity, and each
    signature by its issuer. Stricter where it cannot follow the library: every
    certificate of the x5chain must be on the path, and a CA with name constraints or
    another critical extension is refused."""
    leaf = certs[0]
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.digital_signature:
        raise _reject(
            "chain-invalid", "the signing certificate lacks the digitalSignature key usage"
        )
    try:
        leaf_is_ca = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        leaf_is_ca = False
    if leaf_is_ca:  # as _build's leaf policy: whatever the extension's criticality
        raise _reject("chain-invalid", "a CA certificate cannot sign statements")
    pool = list(certs[1:])
    current = leaf
    for depth in range(MAX_CHAIN_DEPTH + 1):
        for anchor in anchors:
            # The anchor's own rules hold as in _build: its path length, its validity.
            if (
                _issued(current, anchor)
                and _is_ca(anchor, depth=depth)
                and anchor.not_valid_before_utc <= when <= anchor.not_valid_after_utc
            ):
                if any(c not in anchors for c in pool):  # the anchor itself may be there
                    raise _reject(
                        "chain-invalid", "the x5chain holds certificates that are not on its path"
                    )
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


#: Critical extensions a CA may carry in a walked chain.
_CA_CRITICAL = (x509.BasicConstraints, x509.KeyUsage)


def _is_ed25519(cert: x509.Certificate) -> bool:
    return isinstance(cert.public_key(), Ed25519PublicKey)


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject or not _is_ca(issuer):
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignatureError, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate, *, depth: int = 0) -> bool:
    """A CA as the library's web-PKI CA policy has one: basicConstraints critical with CA
    set and a path length allowing ``depth`` certificates below, keyCertSign; and, by
    hand, no name constraints (not enforced here) nor another critical extension."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    if not bc.critical or not bc.value.ca or not ku.key_cert_sign:
        return False
    if bc.value.path_length is not None and bc.value.path_length < depth:
        return False
    return not any(
        isinstance(e.value, x509.NameConstraints)
        or (e.critical and not isinstance(e.value, _CA_CRITICAL))
        for e in cert.extensions
    )
