"""Signed notes and witness cosignatures, as C2SP specifies them.

* https://c2sp.org/signed-note — text signed by one or more named keys; verifier keys
  (``<name>+<hex key ID>+<base64>``); signature types 0x01 (Ed25519) and 0x04
  (Ed25519 cosignature/v1). Go's x/mod/sumdb/note private key strings are read and written
  for software keys.
* https://c2sp.org/tlog-cosignature — timestamped Ed25519 witness cosignatures (verified;
  a signing helper exists for tests).

The text of a note (e.g. a checkpoint body) is opaque here; :mod:`sealtrail.log` gives it
meaning. Verification raises :class:`sealtrail.errors.MalformedNote` or
:class:`sealtrail.errors.InvalidSignature`; it never returns ``False``.

This package imports only :mod:`sealtrail.errors` and :mod:`sealtrail.keys` of ours.
"""

from __future__ import annotations

from sealtrail.note._format import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    SIGNATURE_TYPE_COSIGNATURE_V1,
    SIGNATURE_TYPE_ED25519,
)
from sealtrail.note._note import (
    NoteSignature,
    VerifiedNote,
    add_signatures,
    open_note,
    sign_note,
)
from sealtrail.note._signer import CosignatureSigner, NoteSigner
from sealtrail.note._verifier import (
    CosignatureVerifier,
    NoteVerifier,
    cosignature_timestamp,
    verify_cosignature,
)

__all__ = [
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "SIGNATURE_TYPE_COSIGNATURE_V1",
    "SIGNATURE_TYPE_ED25519",
    "CosignatureSigner",
    "CosignatureVerifier",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "VerifiedNote",
    "add_signatures",
    "cosignature_timestamp",
    "open_note",
    "sign_note",
    "verify_cosignature",
]
