"""Device identity chains: each must lead to one of its maker's registered device CAs.

A device's identity chain (leaf first: IDevID, or an EK certificate, then intermediates)
is walked link by link: the issuer's subject names the child's issuer, the issuer is a CA
(basicConstraints), and the child's signature verifies with the issuer's key. The walk
ends at a certificate issued by one of the maker's ``device_anchors``.

Not checked, on purpose: validity dates (device identities are long-lived, often "no
well-defined expiration" per RFC 5280, and a manifest records devices made in the past)
and key usages (DICE identity certificates are CAs themselves). A cloned identity is
caught by its device id, not here.

Verified links are cached by the SHA-256 of both certificates' DER: devices of one batch
share their intermediates, so a manifest costs about one signature check per device.
A manifest's chains are checked together (:meth:`DeviceChainValidator.validate_many`):
from :data:`PARALLEL_FROM` chains on, by worker processes on every core
(:mod:`sealtrail.keys.parallel`), since one P-384 check (~0.7 ms) is most of a device's cost.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID

from sealtrail.errors import InvalidInput, VerificationError
from sealtrail.keys import parallel as _parallel

from ._device import _element

__all__ = ["MAX_DEVICE_CHAIN", "PARALLEL_FROM", "DeviceChainValidator"]

#: Most certificates walked from a device's leaf to its maker's device CA.
MAX_DEVICE_CHAIN = 8
#: Chains still to check in one ``validate_many`` from which worker processes check them.
PARALLEL_FROM = 64
#: Chains per chunk handed to a worker (small enough to spread over the cores evenly).
CHUNK = 256
_DER = serialization.Encoding.DER
#: ECDSA signature algorithms, checked with the issuer's key directly (see
#: :func:`_signature_verifies`); any other algorithm goes through cryptography's own check.
_ECDSA_HASHES: dict[x509.ObjectIdentifier, type[hashes.HashAlgorithm]] = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: hashes.SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: hashes.SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: hashes.SHA512,
}
#: Their AlgorithmIdentifier DER without parameters (RFC 5758), as certificates carry it.
_ECDSA_IDS = {
    oid: bytes.fromhex("300a0608") + bytes.fromhex("2a8648ce3d0403") + bytes([last])
    for oid, last in (
        (SignatureAlgorithmOID.ECDSA_WITH_SHA256, 2),
        (SignatureAlgorithmOID.ECDSA_WITH_SHA384, 3),
        (SignatureAlgorithmOID.ECDSA_WITH_SHA512, 4),
    )
}
_NOT_A_CERTIFICATE = "holds something that is not a certificate"
_UNTRUSTED = "does not chain to a registered device CA of its maker"

_Parsed = tuple[bytes, x509.Certificate]
_Link = tuple[bytes, bytes]


class DeviceChainValidator:
    """Checks device identity chains against device CAs; thread-safe, links cached.

    ``parallel_from``: the number of chains a :meth:`validate_many` must still check (those
    not settled by the cache) for worker processes to check them; ``None``, never.
    """

    def __init__(self, *, cache: int = 1 << 16, parallel_from: int | None = PARALLEL_FROM) -> None:
        self._links: OrderedDict[_Link, None] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()
        self.parallel_from = parallel_from

    def validate(
        self, chain: Sequence[bytes], anchors: Sequence[x509.Certificate], *, where: str
    ) -> None:
        """Raise :class:`VerificationError` (``manifest-device-untrusted``) unless ``chain``
        (DER, leaf first) leads to one of ``anchors``. ``where`` names the device in the
        message (a position, never a value taken from the input)."""
        if not anchors:
            raise _no_device_ca()
        problem = self._walk(chain, _roots(anchors))
        if problem is not None:
            raise _untrusted(where, problem)

    def validate_many(
        self,
        chains: Sequence[Sequence[bytes]],
        anchors: Sequence[x509.Certificate],
        *,
        where: Callable[[int], str],
    ) -> None:
        """:meth:`validate` every chain; raise what it raises for the first that fails
        (``where(i)`` names chain ``i``).

        Chains whose every link is cached are settled at once; when at least
        ``parallel_from`` remain, worker processes check them (each from scratch), and the
        links they verified join the cache.
        """
        if not chains:
            return
        if not anchors:
            raise _no_device_ca()
        roots = _roots(anchors)
        root_ids = [hashlib.sha256(der).digest() for der, _ in roots]
        todo = [i for i, chain in enumerate(chains) if not self._cached(chain, root_ids)]
        if self.parallel_from is not None and len(todo) >= max(1, self.parallel_from):
            anchor_ders = tuple(der for der, _ in roots)
            jobs = [
                (anchor_ders, [tuple(chains[i]) for i in todo[pos : pos + CHUNK]])
                for pos in range(0, len(todo), CHUNK)
            ]
            results = _parallel.run(_check_chunk, jobs)
            if results is not None:
                for pos, (failed, what, links) in zip(
                    range(0, len(todo), CHUNK), results, strict=True
                ):
                    self._remember(links)
                    if failed >= 0:
                        raise _untrusted(where(todo[pos + failed]), what)
                return
        for i in todo:
            problem = self._walk(chains[i], roots)
            if problem is not None:
                raise _untrusted(where(i), problem)

    # -- the walk -------------------------------------------------------------------------

    def _walk(self, chain: Sequence[bytes], roots: Sequence[_Parsed]) -> str | None:
        """None if ``chain`` leads to one of ``roots``, else what is wrong with it."""
        try:
            certs = [(c, x509.load_der_x509_certificate(c)) for c in chain]
        except ValueError:
            return _NOT_A_CERTIFICATE
        pool = certs[1:]
        current = certs[0]
        for _ in range(MAX_DEVICE_CHAIN):
            if any(self._issued(current, root) for root in roots):
                return None
            parent = next((p for p in pool if self._issued(current, p)), None)
            if parent is None:
                break
            pool.remove(parent)
            current = parent
        return _UNTRUSTED

    def _cached(self, chain: Sequence[bytes], root_ids: Sequence[bytes]) -> bool:
        """Whether the cache alone shows that :meth:`_walk` accepts ``chain``.

        Follows the walk's own order, on cached links only: each certificate must be
        issued by the next one in the chain (the first one the walk tries), and the last
        by a root, every link cached. Then every certificate of the chain parsed before
        (links are only cached for parsed ones) and the walk would take these very links.
        Anything else (a root reached early, certificates out of order) is left to the
        walk. The links used count as used for the cache's eviction order.
        """
        ids = [hashlib.sha256(c).digest() for c in chain]
        if not ids or len(ids) > MAX_DEVICE_CHAIN:
            return False
        links = self._links
        path = list(itertools.pairwise(ids))
        with self._lock:
            if not all(link in links for link in path):
                return False
            last = next(((ids[-1], root) for root in root_ids if (ids[-1], root) in links), None)
            if last is None:
                return False
            # No root may be reached before the end: the walk would stop there, unchecked.
            if any((child, root) in links for child, _ in path for root in root_ids):
                return False
            for link in (*path, last):
                links.move_to_end(link)
        return True

    def _issued(self, child: _Parsed, parent: _Parsed) -> bool:
        child_der, child_cert = child
        parent_der, parent_cert = parent
        if child_cert.issuer != parent_cert.subject or not _is_ca(parent_cert):
            return False
        key = (hashlib.sha256(child_der).digest(), hashlib.sha256(parent_der).digest())
        with self._lock:
            if key in self._links:
                self._links.move_to_end(key)
                return True
        if not _signature_verifies(child_cert, parent_cert):
            return False
        self._remember([key])
        return True

    def _remember(self, links: Sequence[_Link]) -> None:
        with self._lock:
            for key in links:
                self._links[key] = None
                self._links.move_to_end(key)
            while len(self._links) > self._size:
                self._links.popitem(last=False)


def _roots(anchors: Sequence[x509.Certificate]) -> list[_Parsed]:
    return [(a.public_bytes(_DER), a) for a in anchors]


@functools.lru_cache(maxsize=16)
def _loaded_anchors(anchor_ders: tuple[bytes, ...]) -> list[_Parsed]:
    """Anchors in a worker process, parsed once per set (their keys then load once)."""
    return [(der, x509.load_der_x509_certificate(der)) for der in anchor_ders]


def _check_chunk(
    job: tuple[tuple[bytes, ...], list[tuple[bytes, ...]]],
) -> tuple[int, str, list[_Link]]:
    """In a worker process: walk a chunk's chains in order, stopping at the first that
    fails. Returns its position in the chunk (-1: none), what is wrong with it, and the
    links verified (for the caller's cache)."""
    anchor_ders, chains = job
    roots = _loaded_anchors(anchor_ders)
    validator = DeviceChainValidator(cache=len(chains) * MAX_DEVICE_CHAIN + 1, parallel_from=None)
    for position, chain in enumerate(chains):
        what = validator._walk(chain, roots)
        if what is not None:
            return position, what, list(validator._links)
    return -1, "", list(validator._links)


def _signature_verifies(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent``'s key verifies ``child``'s signature (names are checked apart).

    The usual case, ECDSA with the same algorithm identifier (no parameters) inside and
    outside the TBSCertificate, is checked with the parent's public key directly: the key
    object is loaded once per certificate object (an anchor's, once for good), where
    ``verify_directly_issued_by`` loads it on every call, which measured 15 to 25 % more per
    P-384 check. The signed bytes are the same (``tbs_certificate_bytes``). Anything else
    goes through ``verify_directly_issued_by``, whose checks this mirrors.
    """
    hash_type = _ECDSA_HASHES.get(child.signature_algorithm_oid)
    try:
        if hash_type is None or not _plain_ecdsa(child):
            child.verify_directly_issued_by(parent)
            return True
        key = parent.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(hash_type()))
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _plain_ecdsa(cert: x509.Certificate) -> bool:
    """Whether ``cert``'s outer signature algorithm and its TBSCertificate's are both the
    parameterless ECDSA identifier of its signature algorithm OID, byte for byte."""
    expected = _ECDSA_IDS[cert.signature_algorithm_oid]
    der = cert.public_bytes(_DER)
    tbs = cert.tbs_certificate_bytes
    try:
        _, start, _ = _element(der, 0)
        _, tbs_start, after = _element(tbs, 0)
        if der[start : start + len(tbs)] != tbs:
            return False
        pos = start + len(tbs)
        if der[pos : pos + len(expected)] != expected:
            return False
        tag, _, end = _element(tbs, tbs_start)
        if tag == 0xA0:  # [0] EXPLICIT version
            tag, _, end = _element(tbs, end)
        if tag != 0x02:  # serialNumber
            return False
        return tbs[end : end + len(expected)] == expected and end + len(expected) <= after
    except InvalidInput:
        return False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _no_device_ca() -> VerificationError:
    return VerificationError(
        "the issuer's organization has no registered device CA (device_anchors)",
        code="manifest-no-device-ca",
    )


def _untrusted(where: str, what: str) -> VerificationError:
    return VerificationError(
        f"{where}: the identity chain {what}", code="manifest-device-untrusted"
    )
