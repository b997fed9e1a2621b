"""Verifier keys (vkeys): the public half of a signed-note key, and how to check its lines."""

from __future__ import annotations

from typing import ClassVar

from sealtrail.errors import InvalidInput, InvalidSignature, MalformedNote
from sealtrail.keys import Ed25519Verifier
from sealtrail.note._format import (
    COSIGNATURE_V1_SIZE,
    ED25519_KEY_SIZE,
    MAX_TIMESTAMP,
    SIGNATURE_TYPE_COSIGNATURE_V1,
    SIGNATURE_TYPE_ED25519,
    b64decode_strict,
    b64encode,
    check_key_name,
    compute_key_id,
    cosignature_message,
    parse_key_hash,
)

__all__ = [
    "CosignatureVerifier",
    "NoteVerifier",
    "cosignature_timestamp",
    "verify_cosignature",
]

_VKEY_SHAPE = "<name>+<8 hex digits>+<base64(type byte || public key)>"
_VKEY_HINT = (
    "A verifier key is one line, name+keyhash+base64: a log's is log.vkey in its data directory."
)
_PRIVATE_KEY_HINT = (
    "Give the verifier key (a log's is log.vkey in its data directory), not a key file from "
    "keys/; keep the private key secret."
)


class NoteVerifier:
    """A trusted key for signed notes: a name, a 4-byte key ID and an Ed25519 public key.

    ``NoteVerifier(name, public_key)`` is a plain Ed25519 (type 0x01) key. Build one from a
    published verifier key with :meth:`parse`; a type 0x04 vkey gives a
    :class:`CosignatureVerifier`. Instances are immutable and compare by type, name and key.
    """

    signature_type: ClassVar[int] = SIGNATURE_TYPE_ED25519
    __slots__ = ("_ed25519", "_key_id", "_name", "_public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        self._name = check_key_name(name)
        if not isinstance(public_key, bytes) or len(public_key) != ED25519_KEY_SIZE:
            raise InvalidInput(f"an Ed25519 public key is {ED25519_KEY_SIZE} bytes")
        self._public_key = public_key
        self._ed25519 = Ed25519Verifier(public_key)
        self._key_id = compute_key_id(name, self.signature_type, public_key)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key ID>+<base64(type || public key)>``.

        Supports type 0x01 (Ed25519) and 0x04 (Ed25519 cosignature/v1, returned as a
        :class:`CosignatureVerifier`). Raises :class:`~sealtrail.errors.InvalidInput` for a
        bad name, a key ID that does not match the key, an unknown type, a key of the wrong
        length or bad base64.
        """
        name, signature_type, public_key = _parse_vkey(vkey)
        if signature_type == SIGNATURE_TYPE_COSIGNATURE_V1:
            return CosignatureVerifier(name, public_key)
        return NoteVerifier(name, public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID: ``SHA-256(name || "\\n" || type || public key)[:4]``."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public_key

    def verifier_key(self) -> str:
        """This key in the vkey format that :meth:`parse` reads."""
        material = bytes([self.signature_type]) + self._public_key
        return f"{self._name}+{self._key_id.hex()}+{b64encode(material)}"

    def _check(self, text: str, signature: bytes) -> int | None:
        """Verify ``signature`` (the bytes after the key ID) over note ``text``.

        Returns the cosignature timestamp, or ``None`` for a plain signature.
        Raises :class:`~sealtrail.errors.InvalidSignature`.
        """
        self._ed25519.verify(signature=signature, message=text.encode("utf-8"))
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoteVerifier):
            return NotImplemented
        return (self.signature_type, self._name, self._public_key) == (
            other.signature_type,
            other._name,
            other._public_key,
        )

    def __hash__(self) -> int:
        return hash((self.signature_type, self._name, self._public_key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.verifier_key()!r})"


class CosignatureVerifier(NoteVerifier):
    """A witness's Ed25519 cosignature/v1 key (signature type 0x04, C2SP tlog-cosignature).

    Its signatures are ``u64 big-endian timestamp || Ed25519 signature`` over
    ``"cosignature/v1\\ntime <timestamp>\\n" || note text``.
    """

    signature_type: ClassVar[int] = SIGNATURE_TYPE_COSIGNATURE_V1
    __slots__ = ()

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        """Parse a type 0x04 vkey.

        A type 0x01 vkey is also accepted and read as the same name and Ed25519 key used
        for cosignature/v1 (its key ID is recomputed with type 0x04), as
        transparency-dev/formats does for witnesses published with plain Ed25519 vkeys.
        """
        name, _signature_type, public_key = _parse_vkey(vkey)
        return CosignatureVerifier(name, public_key)

    def _check(self, text: str, signature: bytes) -> int:
        return verify_cosignature(verifier=self, text=text, signature=signature)


def _parse_vkey(vkey: str) -> tuple[str, int, bytes]:
    # Never echo the input, nor any part of it (the name included): a private key pasted or
    # passed as a file by mistake must not end up on a terminal or in logs. Each message
    # says only what is wrong.
    if not isinstance(vkey, str):
        raise InvalidInput("a verifier key must be a str")
    if vkey.startswith("PRIVATE+KEY+"):
        raise InvalidInput(
            "this is a private signer key, not a verifier key",
            hint="Keep it secret; publish the verifier key derived from it instead.",
        )
    if "PRIVATE KEY" in vkey:
        raise InvalidInput(
            "a private key was given where a verifier key is expected",
            hint=_PRIVATE_KEY_HINT,
        )
    if "-----BEGIN" in vkey:
        raise InvalidInput(
            "a PEM file was given where a verifier key is expected",
            hint=_VKEY_HINT,
        )
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise InvalidInput(f"a verifier key must look like {_VKEY_SHAPE}")
    name, hash_hex, key_b64 = parts
    check_key_name(name, what="a verifier key's name")
    key_hash = parse_key_hash(hash_hex)
    if key_hash is None:
        raise InvalidInput("verifier key: the key ID must be 8 hex digits")
    material = b64decode_strict(key_b64)
    if material is None:
        raise InvalidInput("verifier key: the key is not canonical standard base64")
    if not material:
        raise InvalidInput("verifier key: the key is empty")
    signature_type, public_key = material[0], material[1:]
    if compute_key_id(name, signature_type, public_key) != key_hash:
        raise InvalidInput("verifier key: the key ID does not match the key")
    if signature_type not in (SIGNATURE_TYPE_ED25519, SIGNATURE_TYPE_COSIGNATURE_V1):
        raise InvalidInput(
            f"verifier key: unsupported signature type 0x{signature_type:02x} "
            "(supported: 0x01 Ed25519, 0x04 Ed25519 cosignature/v1)"
        )
    if len(public_key) != ED25519_KEY_SIZE:
        raise InvalidInput(
            f"verifier key: an Ed25519 key is {ED25519_KEY_SIZE} bytes, not {len(public_key)}"
        )
    return name, signature_type, public_key


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp inside a cosignature/v1 signature, WITHOUT verifying it.

    ``signature`` is what follows the 4-byte key ID (:attr:`NoteSignature.signature`).
    Raises :class:`~sealtrail.errors.MalformedNote` unless it is 72 bytes with a timestamp
    of at most 2^63 - 1. Do not act on the value before :func:`verify_cosignature`.
    """
    if len(signature) != COSIGNATURE_V1_SIZE:
        raise MalformedNote(
            f"a cosignature/v1 signature is {COSIGNATURE_V1_SIZE} bytes, not {len(signature)}"
        )
    timestamp = int.from_bytes(signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise MalformedNote("cosignature timestamp exceeds 2^63 - 1")
    return timestamp


def verify_cosignature(*, verifier: CosignatureVerifier, text: str, signature: bytes) -> int:
    """Verify a cosignature/v1 over the note ``text`` (a checkpoint body) and return its time.

    ``signature`` is what follows the key ID in the signature line. Returns the POSIX
    timestamp the witness signed. Raises :class:`~sealtrail.errors.InvalidSignature` if it
    does not verify (including a wrong length or an out-of-range timestamp) and
    :class:`~sealtrail.errors.MalformedNote` if ``text`` does not end in a newline or is not
    valid Unicode; whether the time is acceptable (e.g. not in the future) is the caller's
    policy.
    """
    if not isinstance(verifier, CosignatureVerifier):
        raise InvalidInput("verify_cosignature needs a CosignatureVerifier (type 0x04 key)")
    if not text.endswith("\n"):
        raise MalformedNote("a cosigned note text must end with a newline")
    try:
        timestamp = cosignature_timestamp(signature)
    except MalformedNote as exc:
        raise InvalidSignature(f"cosignature by {verifier.name}: {exc.message}") from None
    try:
        message = cosignature_message(text, timestamp)
    except UnicodeEncodeError:
        raise MalformedNote("a cosigned note text is not valid Unicode (lone surrogate)") from None
    verifier._ed25519.verify(signature=signature[8:], message=message)
    return timestamp
