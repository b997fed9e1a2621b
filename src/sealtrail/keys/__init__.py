"""Keys: the :class:`Signer` / :class:`Verifier` seam and software Ed25519 keys.

Everything that signs (the log's checkpoint key, witnesses in tests) goes through
:class:`Signer`, so a PKCS#11 HSM key or another algorithm (ES256, ES384, ML-DSA) can slot
in later without touching the layers above. Verification raises
:class:`sealtrail.errors.InvalidSignature`; it never returns ``False``.

This package imports only :mod:`sealtrail.errors` of ours.
"""

from __future__ import annotations

from sealtrail.keys._ed25519 import Ed25519Signer, Ed25519Verifier, verify_ed25519
from sealtrail.keys._files import MAX_KEY_FILE_SIZE, load_signer, write_private_key
from sealtrail.keys._protocols import ED25519, Signer, Verifier

__all__ = [
    "ED25519",
    "MAX_KEY_FILE_SIZE",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Signer",
    "Verifier",
    "load_signer",
    "verify_ed25519",
    "write_private_key",
]
