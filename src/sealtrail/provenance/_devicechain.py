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
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from sealtrail.errors import VerificationError

__all__ = ["MAX_DEVICE_CHAIN", "DeviceChainValidator"]

#: Most certificates walked from a device's leaf to its maker's device CA.
MAX_DEVICE_CHAIN = 8
_DER = serialization.Encoding.DER


class DeviceChainValidator:
    """Checks device identity chains against device CAs; thread-safe, links cached."""

    def __init__(self, *, cache: int = 1 << 16) -> None:
        self._links: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()

    def validate(
        self, chain: Sequence[bytes], anchors: Sequence[x509.Certificate], *, where: str
    ) -> None:
        """Raise :class:`VerificationError` (``manifest-device-untrusted``) unless ``chain``
        (DER, leaf first) leads to one of ``anchors``. ``where`` names the device in the
        message (a position, never a value taken from the input)."""
        if not anchors:
            raise VerificationError(
                "the issuer's organization has no registered device CA (device_anchors)",
                code="manifest-no-device-ca",
            )
        try:
            certs = [(c, x509.load_der_x509_certificate(c)) for c in chain]
        except ValueError:
            raise _untrusted(where, "holds something that is not a certificate") from None
        roots = [(a.public_bytes(_DER), a) for a in anchors]
        pool = certs[1:]
        current = certs[0]
        for _ in range(MAX_DEVICE_CHAIN):
            if any(self._issued(current, root) for root in roots):
                return
            parent = next((p for p in pool if self._issued(current, p)), None)
            if parent is None:
                break
            pool.remove(parent)
            current = parent
        raise _untrusted(where, "does not chain to a registered device CA of its maker")

    def _issued(
        self, child: tuple[bytes, x509.Certificate], parent: tuple[bytes, x509.Certificate]
    ) -> bool:
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
        with self._lock:
            self._links[key] = None
            while len(self._links) > self._size:
                self._links.popitem(last=False)
        return True


def _signature_verifies(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _untrusted(where: str, what: str) -> VerificationError:
    return VerificationError(
        f"{where}: the identity chain {what}", code="manifest-device-untrusted"
    )
