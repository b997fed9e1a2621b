"""Keys: the :class:`Signer` / :class:`Verifier` seam, software keys and PKCS#11 HSM keys.

Everything that signs (the log's checkpoint key, the transparency service's receipt key,
witnesses in tests) goes through :class:`Signer`, so a software key and a key on an HSM are
interchangeable to the layers above. Verification raises
:class:`sealtrail.errors.InvalidSignature`; it never returns ``False``.

Algorithms (:data:`ALGORITHMS`): Ed25519, ES256 (P-256), ES384 (P-384), ML-DSA-65 and
ML-DSA-87 (the last two where :func:`mldsa_supported`). The safe recipes are
:func:`generate_signer`, :func:`load_signer` / :func:`write_private_key`,
:func:`verifier_for` (a key from a certificate) and :func:`verifier_from_bytes`;
:class:`Pkcs11Signer` opens a key on a token (``python-pkcs11``, optional, imported on first
use). See ``docs/keys.md``.

This package imports only :mod:`sealtrail.errors` of ours.
"""

from __future__ import annotations

from sealtrail.keys._ecdsa import EcdsaSigner, EcdsaVerifier
from sealtrail.keys._ed25519 import Ed25519Signer, Ed25519Verifier, verify_ed25519
from sealtrail.keys._files import (
    MAX_KEY_FILE_SIZE,
    MAX_PIN_SIZE,
    load_signer,
    read_pin,
    write_private_key,
)
from sealtrail.keys._mldsa import MlDsaSigner, MlDsaVerifier, mldsa_supported
from sealtrail.keys._pkcs11 import (
    PKCS11_ALGORITHMS,
    PKCS11_MODULE_ENV,
    Pkcs11Signer,
    find_pkcs11_module,
    pkcs11_supported,
)
from sealtrail.keys._protocols import (
    ALGORITHMS,
    ED25519,
    ES256,
    ES384,
    ML_DSA_65,
    ML_DSA_87,
    Signer,
    Verifier,
)
from sealtrail.keys._select import (
    SoftwareSigner,
    generate_signer,
    verifier_for,
    verifier_from_bytes,
)

__all__ = [
    "ALGORITHMS",
    "ED25519",
    "ES256",
    "ES384",
    "MAX_KEY_FILE_SIZE",
    "MAX_PIN_SIZE",
    "ML_DSA_65",
    "ML_DSA_87",
    "PKCS11_ALGORITHMS",
    "PKCS11_MODULE_ENV",
    "EcdsaSigner",
    "EcdsaVerifier",
    "Ed25519Signer",
    "Ed25519Verifier",
    "MlDsaSigner",
    "MlDsaVerifier",
    "Pkcs11Signer",
    "Signer",
    "SoftwareSigner",
    "Verifier",
    "find_pkcs11_module",
    "generate_signer",
    "load_signer",
    "mldsa_supported",
    "pkcs11_supported",
    "read_pin",
    "verifier_for",
    "verifier_from_bytes",
    "verify_ed25519",
    "write_private_key",
]
