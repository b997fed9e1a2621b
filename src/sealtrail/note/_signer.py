"""Signing keys for notes: a log's Ed25519 key and (for tests and tools) a witness key."""

from __future__ import annotations

from sealtrail.errors import InvalidInput
from sealtrail.keys import ED25519, Ed25519Signer, Signer
from sealtrail.note._format import (
    ED25519_KEY_SIZE,
    EM_DASH_PREFIX,
    MAX_TIMESTAMP,
    SIGNATURE_TYPE_COSIGNATURE_V1,
    SIGNATURE_TYPE_ED25519,
    b64decode_strict,
    b64encode,
    check_key_name,
    compute_key_id,
    cosignature_message,
    encode_text,
    parse_key_hash,
)
from sealtrail.note._verifier import CosignatureVerifier, NoteVerifier

__all__ = ["CosignatureSigner", "NoteSigner"]

_PRIVATE_PREFIX = "PRIVATE+KEY+"
_SKEY_SHAPE = "PRIVATE+KEY+<name>+<8 hex digits>+<base64(0x01 || 32-byte seed)>"


def _public_ed25519(signer: Signer) -> bytes:
    if signer.algorithm != ED25519:
        raise InvalidInput(f"signed notes support Ed25519 keys only, not {signer.algorithm}")
    public_key = signer.public_key_bytes()
    if len(public_key) != ED25519_KEY_SIZE:
        raise InvalidInput(f"an Ed25519 public key is {ED25519_KEY_SIZE} bytes")
    return public_key


class NoteSigner:
    """Signs note text as ``name`` with an Ed25519 :class:`~sealtrail.keys.Signer` (type 0x01).

    The key stays behind the ``Signer`` (software or, later, an HSM). ``repr`` shows the
    name and key ID only.
    """

    __slots__ = ("_key_id", "_name", "_public_key", "_signer")

    def __init__(self, name: str, signer: Signer) -> None:
        self._name = check_key_name(name)
        self._public_key = _public_ed25519(signer)
        self._signer = signer
        self._key_id = compute_key_id(name, SIGNATURE_TYPE_ED25519, self._public_key)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A new software key named ``name``."""
        return cls(name, Ed25519Signer.generate())

    @classmethod
    def from_private_key_string(cls, skey: str) -> NoteSigner:
        """Read Go x/mod/sumdb/note's private key format: ``PRIVATE+KEY+<name>+<hash>+<key>``.

        ``<key>`` is base64 of 0x01 || the 32-byte Ed25519 seed; ``<hash>`` must be the key
        ID of the derived public key. Error messages never contain the string.
        """
        if not isinstance(skey, str) or not skey.startswith(_PRIVATE_PREFIX):
            raise InvalidInput(f"a signer key must look like {_SKEY_SHAPE}")
        parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise InvalidInput(f"a signer key must look like {_SKEY_SHAPE}")
        name, hash_hex, key_b64 = parts
        # Nothing parsed is repeated in an error: a malformed string may put key material
        # where the name goes.
        check_key_name(name, what="a signer key's name")
        key_hash = parse_key_hash(hash_hex)
        material = b64decode_strict(key_b64)
        if key_hash is None or material is None:
            raise InvalidInput("a signer key's key ID or key encoding is malformed")
        if not material or material[0] != SIGNATURE_TYPE_ED25519:
            raise InvalidInput("a signer key's algorithm is not supported (only 0x01 Ed25519)")
        if len(material) != 1 + ED25519_KEY_SIZE:
            raise InvalidInput(f"a signer key's Ed25519 seed is not {ED25519_KEY_SIZE} bytes")
        signer = cls(name, Ed25519Signer.from_private_bytes(material[1:]))
        if signer.key_id != key_hash:
            raise InvalidInput("a signer key's key ID does not match its key")
        return signer

    def private_key_string(self) -> str:
        """SECRET: this key as ``PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>``.

        Only for software keys. Never log or print the result.
        """
        if not isinstance(self._signer, Ed25519Signer):
            raise InvalidInput("only software Ed25519 keys can be exported as a signer key")
        material = bytes([SIGNATURE_TYPE_ED25519]) + self._signer.private_bytes_raw()
        return f"{_PRIVATE_PREFIX}{self._name}+{self._key_id.hex()}+{b64encode(material)}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self._name, self._public_key)

    def verifier_key(self) -> str:
        """The public verifier key to publish, ``<name>+<hex key ID>+<base64>``."""
        return self.verifier().verifier_key()

    def signature_line(self, text: str) -> str:
        """The line ``"— <name> <base64(key ID || signature)>\\n"`` signing ``text``."""
        signature = self._signer.sign(encode_text(text))
        return f"{EM_DASH_PREFIX}{self._name} {b64encode(self._key_id + signature)}\n"

    def __repr__(self) -> str:
        return f"NoteSigner(name={self._name!r}, key_id={self._key_id.hex()})"


class CosignatureSigner:
    """A witness key producing Ed25519 cosignature/v1 lines (type 0x04, tlog-cosignature).

    Sealtrail only verifies cosignatures in production; this exists for tests and tools.
    The caller supplies the timestamp: this layer has no clock.
    """

    __slots__ = ("_key_id", "_name", "_public_key", "_signer")

    def __init__(self, name: str, signer: Signer) -> None:
        self._name = check_key_name(name)
        self._public_key = _public_ed25519(signer)
        self._signer = signer
        self._key_id = compute_key_id(name, SIGNATURE_TYPE_COSIGNATURE_V1, self._public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self._name, self._public_key)

    def verifier_key(self) -> str:
        return self.verifier().verifier_key()

    def signature_line(self, text: str, *, timestamp: int) -> str:
        """A cosignature line over the checkpoint ``text`` at POSIX time ``timestamp``."""
        encode_text(text)
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise InvalidInput("a cosignature timestamp is an int")
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise InvalidInput("a cosignature timestamp must be between 0 and 2^63 - 1")
        signature = self._signer.sign(cosignature_message(text, timestamp))
        payload = self._key_id + timestamp.to_bytes(8, "big") + signature
        return f"{EM_DASH_PREFIX}{self._name} {b64encode(payload)}\n"

    def __repr__(self) -> str:
        return f"CosignatureSigner(name={self._name!r}, key_id={self._key_id.hex()})"
