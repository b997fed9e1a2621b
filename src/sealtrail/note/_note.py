"""Signed notes (C2SP signed-note): sign, open and verify, merge cosignatures."""

from __future__ import annotations

import base64
import string
from collections.abc import Sequence
from dataclasses import dataclass

from sealtrail.errors import InvalidInput, InvalidSignature, MalformedNote, TooLarge
from sealtrail.note._format import (
    EM_DASH_PREFIX,
    KEY_ID_SIZE,
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    b64decode_strict,
    b64encode,
    encode_text,
    has_forbidden_control,
    is_note_name,
)
from sealtrail.note._signer import NoteSigner
from sealtrail.note._verifier import NoteVerifier

__all__ = ["NoteSignature", "VerifiedNote", "add_signatures", "open_note", "sign_note"]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: ``— <name> base64(key_id || signature)``.

    ``timestamp`` is set only for a *verified* cosignature/v1.
    """

    name: str
    key_id: bytes
    signature: bytes
    timestamp: int | None = None

    def line(self) -> str:
        """The signature line, newline included."""
        return f"{EM_DASH_PREFIX}{self.name} {b64encode(self.key_id + self.signature)}\n"


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note whose signatures from the given verifiers all verified.

    ``verified`` holds one signature per trusted key, in note order. ``unverified`` holds
    the signatures from keys the caller did not pass, unchecked and not to be trusted (those
    whose lines parse: an unknown key's line need not be canonical base64, and is then
    left out).
    """

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]

    def verified_by(self, verifier: NoteVerifier) -> NoteSignature | None:
        """The verified signature from ``verifier``'s key, or ``None`` if it did not sign."""
        for signature in self.verified:
            if signature.name == verifier.name and signature.key_id == verifier.key_id:
                return signature
        return None


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """Sign ``text`` (ending in a newline) with each signer, in order; return the note bytes.

    Raises :class:`~sealtrail.errors.InvalidInput` for text a verifier would reject, no
    signers, or two signers with the same name and key ID; :class:`~sealtrail.errors.TooLarge`
    beyond :data:`MAX_SIGNATURES` or :data:`MAX_NOTE_SIZE`.
    """
    encode_text(text)
    if not signers:
        raise InvalidInput("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise TooLarge(f"a note carries at most {MAX_SIGNATURES} signatures")
    keys = {(signer.name, signer.key_id) for signer in signers}
    if len(keys) != len(signers):
        raise InvalidInput("two signers share the same name and key ID")
    note = (text + "\n" + "".join(signer.signature_line(text) for signer in signers)).encode()
    if len(note) > MAX_NOTE_SIZE:
        raise TooLarge(f"the signed note would exceed {MAX_NOTE_SIZE} bytes")
    return note


def open_note(note: bytes, *, verifiers: Sequence[NoteVerifier]) -> VerifiedNote:
    """Parse a signed note and verify it against the trusted ``verifiers``.

    Follows C2SP signed-note: a signature whose name and key ID both match a verifier MUST
    verify, or the whole note is rejected; signatures from other keys are ignored. Those
    that parse are kept, unverified, in :attr:`VerifiedNote.unverified`; those that do not
    (not canonical base64, too short: another signer's business) are left out. Only a
    line naming a trusted key is held to the format: canonical standard base64 of a key ID
    and a signature. Pass :class:`CosignatureVerifier` keys to accept and check witness
    cosignatures; how many are required is the caller's policy.

    Raises :class:`~sealtrail.errors.MalformedNote` if the note is not well-formed (including
    more than :data:`MAX_SIGNATURES` signature lines or :data:`MAX_NOTE_SIZE` bytes, a line
    that is not ``— <name> <signature>`` with a valid name and a signature without spaces,
    and a trusted key's line that is not canonical) and
    :class:`~sealtrail.errors.InvalidSignature` if a trusted key's signature does not verify
    or no trusted key signed.
    """
    known = _index_verifiers(verifiers)
    names = {name for name, _ in known}
    text, lines = _parse_note(note)
    verified: dict[tuple[str, bytes], NoteSignature] = {}
    unverified: dict[str, NoteSignature] = {}
    for number, line in enumerate(lines, start=1):
        try:
            name, encoded = _split_signature_line(line)
            key_id = _key_id_of(encoded) if name in names else None
            if name not in names or (key_id is not None and (name, key_id) not in known):
                # Unknown key (even if it shares a name or a key ID with a known one):
                # ignored, whatever its signature looks like.
                signature = _signature_or_none(name, encoded)
                if signature is not None:
                    unverified.setdefault(signature.line(), signature)
                continue
            # A trusted key's name, and its key ID or one that cannot be read: its line.
            signature = _signature(name, encoded)
        except MalformedNote as exc:
            raise MalformedNote(f"signature line {number}: {exc.message}") from None
        key = (signature.name, signature.key_id)
        verifier = known.get(key)
        if verifier is None:
            unverified.setdefault(signature.line(), signature)
            continue
        try:
            timestamp = verifier._check(text, signature.signature)
        except InvalidSignature as exc:
            raise InvalidSignature(
                f"signature by {signature.name}+{signature.key_id.hex()} does not verify: "
                f"{exc.message}"
            ) from None
        if key not in verified:
            verified[key] = NoteSignature(
                signature.name, signature.key_id, signature.signature, timestamp
            )
    if not verified:
        raise InvalidSignature(
            f"none of the note's {len(lines)} signature(s) is from the {len(known)} trusted key(s)"
        )
    return VerifiedNote(text, tuple(verified.values()), tuple(unverified.values()))


def add_signatures(note: bytes, lines: Sequence[str]) -> bytes:
    """Return ``note`` with the signature ``lines`` (e.g. witness cosignatures) appended.

    Each line is ``"— <name> <base64>\\n"``. A new line replaces an existing signature with
    the same name and key ID. Nothing is verified here: open the result with
    :func:`open_note`. Raises :class:`~sealtrail.errors.MalformedNote` for a bad ``note``,
    :class:`~sealtrail.errors.InvalidInput` for a bad line, and
    :class:`~sealtrail.errors.TooLarge` if the result would break a limit.
    """
    text, signature_lines = _parse_note(note)
    existing = []
    for number, existing_line in enumerate(signature_lines, start=1):
        try:
            existing.append(_parse_signature_line(existing_line))
        except MalformedNote as exc:
            raise MalformedNote(f"signature line {number}: {exc.message}") from None
    added: dict[tuple[str, bytes], NoteSignature] = {}
    for index, line in enumerate(lines):
        if not isinstance(line, str) or not line.endswith("\n") or "\n" in line[:-1]:
            raise InvalidInput(f"signature line {index} must be one line ending in a newline")
        try:
            signature = _parse_signature_line(line[:-1])
        except MalformedNote as exc:
            raise InvalidInput(f"signature line {index}: {exc.message}") from None
        key = (signature.name, signature.key_id)
        if key in added:
            raise InvalidInput(f"signature line {index} repeats the key of an earlier line")
        added[key] = signature
    kept = [s for s in existing if (s.name, s.key_id) not in added]
    merged = [*kept, *added.values()]
    if len(merged) > MAX_SIGNATURES:
        raise TooLarge(f"a note carries at most {MAX_SIGNATURES} signatures")
    result = (text + "\n" + "".join(s.line() for s in merged)).encode()
    if len(result) > MAX_NOTE_SIZE:
        raise TooLarge(f"the signed note would exceed {MAX_NOTE_SIZE} bytes")
    return result


def _index_verifiers(verifiers: Sequence[NoteVerifier]) -> dict[tuple[str, bytes], NoteVerifier]:
    if not verifiers:
        raise InvalidInput("open_note needs at least one trusted verifier key")
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        if not isinstance(verifier, NoteVerifier):
            raise InvalidInput("verifiers must be NoteVerifier instances")
        key = (verifier.name, verifier.key_id)
        if key in known and known[key] != verifier:
            raise InvalidInput(
                f"two different verifier keys share the name {verifier.name} "
                f"and key ID {verifier.key_id.hex()}"
            )
        known[key] = verifier
    return known


def _parse_note(note: bytes) -> tuple[str, list[str]]:
    """Split a note into its text and signature lines (without their newlines), checking
    the note's framing only: each line is read by whoever trusts its key."""
    if not isinstance(note, bytes):
        raise InvalidInput("a signed note is bytes")
    if len(note) > MAX_NOTE_SIZE:
        raise MalformedNote(f"note is larger than {MAX_NOTE_SIZE} bytes")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNote("note is not valid UTF-8") from None
    if has_forbidden_control(decoded):
        raise MalformedNote("note contains a control character other than newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNote("note has no blank line between its text and its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block or not block.endswith("\n"):
        raise MalformedNote("note must end with newline-terminated signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"note has more than {MAX_SIGNATURES} signature lines")
    for number, line in enumerate(lines, start=1):
        if not line.startswith(EM_DASH_PREFIX):
            raise MalformedNote(
                f"signature line {number}: does not start with an em dash (U+2014) and a space"
            )
    return text, lines


def _split_signature_line(line: str) -> tuple[str, str]:
    """``— <name> <signature>`` as its name and its signature's text (not yet decoded)."""
    if has_forbidden_control(line) or "\n" in line:
        raise MalformedNote("contains a control character")
    if not line.startswith(EM_DASH_PREFIX):
        raise MalformedNote("does not start with an em dash (U+2014) and a space")
    name, space, encoded = line[len(EM_DASH_PREFIX) :].partition(" ")
    if not space or not is_note_name(name):
        raise MalformedNote("has no valid key name")
    if not encoded or any(ch.isspace() for ch in encoded):
        raise MalformedNote("is not a key name and one signature, separated by a space")
    return name, encoded


def _signature(name: str, encoded: str) -> NoteSignature:
    """A signature line's signature: canonical standard base64 of a key ID and more."""
    raw = b64decode_strict(encoded)
    if raw is None:
        raise MalformedNote("signature is not canonical standard base64")
    if len(raw) <= KEY_ID_SIZE:
        raise MalformedNote("signature is shorter than a key ID and one byte")
    return NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def _signature_or_none(name: str, encoded: str) -> NoteSignature | None:
    try:
        return _signature(name, encoded)
    except MalformedNote:
        return None


def _key_id_of(encoded: str) -> bytes | None:
    """The key ID a signature's base64 starts with (its first 8 characters give 6 bytes),
    whether or not the rest is canonical; ``None`` if those characters are not base64."""
    head = encoded[:8]
    if len(head) < 8 or not all(c in _BASE64_ALPHABET for c in head):
        return None
    return base64.b64decode(head)[:KEY_ID_SIZE]


def _parse_signature_line(line: str) -> NoteSignature:
    """``— <name> <base64>`` without its newline, held to the format whoever signed it."""
    return _signature(*_split_signature_line(line))


_BASE64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")
