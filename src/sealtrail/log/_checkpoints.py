"""Signed checkpoints: the log's commitment, as a C2SP tlog-checkpoint in a signed note."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sealtrail.errors import Corruption, InvalidInput, InvalidSignature, MalformedNote
from sealtrail.keys import Signer
from sealtrail.merkle import Checkpoint, MerkleError
from sealtrail.note import CosignatureVerifier, NoteSigner, NoteVerifier, open_note, sign_note
from sealtrail.note._format import check_key_name

__all__ = [
    "MAX_ORIGIN_SIZE",
    "CheckpointSigner",
    "SignedCheckpoint",
    "check_not_behind",
    "check_origin",
    "verify_checkpoint",
]

#: Longest origin a log of ours may have, in UTF-8 bytes. The origin is the first line of
#: every checkpoint (at most ``merkle.MAX_CHECKPOINT_BYTES``, 4 KiB) and the name of the log's
#: key in ``log.vkey`` (a ``--vkey`` file is read up to 4 KiB; a passport holds a verifier key
#: of at most 1,024 characters): 255 bytes leaves every one of those ample room.
MAX_ORIGIN_SIZE = 255


def check_origin(origin: str, *, new: bool = False) -> str:
    """``origin`` if a log of ours can have it, else :class:`InvalidInput` (``origin-invalid``):
    a key name (C2SP signed-note, printable: no space and no ``+``), which makes it one line
    of a checkpoint; for a ``new`` log (``sealtrail init``), also of at most
    :data:`MAX_ORIGIN_SIZE` bytes, a limit that came after logs with longer origins, which
    keep working. Messages do not repeat it."""
    try:
        check_key_name(origin, what="the origin")
    except InvalidInput as exc:
        raise InvalidInput(
            exc.message,
            code="origin-invalid",
            hint="An origin is the log's scheme-less URL prefix, such as example.com/log.",
        ) from None
    size = len(origin.encode("utf-8"))
    if new and size > MAX_ORIGIN_SIZE:
        raise InvalidInput(
            f"the origin is {size} bytes long; at most {MAX_ORIGIN_SIZE} are allowed",
            code="origin-invalid",
            hint="An origin is the log's scheme-less URL prefix, such as example.com/log.",
        )
    return origin


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint together with the exact signed-note bytes it was read from."""

    checkpoint: Checkpoint
    note: bytes

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


def check_not_behind(seen: SignedCheckpoint | None, stored: SignedCheckpoint | None) -> None:
    """Raise :class:`Corruption` if the store's checkpoint ``stored`` is behind one already
    ``seen`` from it (smaller, gone, or of the same size with another root): the store was
    rolled back or rewritten under a running process, which must not sign over it."""
    if seen is None or (stored is not None and stored.size > seen.size):
        return
    if stored is None or stored.size < seen.size:
        raise Corruption(
            f"the store's checkpoint went back from size {seen.size} to "
            f"{0 if stored is None else stored.size}: the store was rolled back",
            code="store-log-rolled-back",
        )
    if stored.root != seen.root:
        raise Corruption(
            f"the store's checkpoint of size {seen.size} changed its root: a fork",
            code="store-log-forked",
        )


class CheckpointSigner:
    """Signs checkpoints for one log origin. The key name is the origin, as is customary."""

    def __init__(self, *, origin: str, signer: Signer) -> None:
        self.origin = check_origin(origin)
        self._note_signer = NoteSigner(origin, signer)
        self.verifier = NoteVerifier.parse(self._note_signer.verifier_key())

    def verifier_key(self) -> str:
        """The public verifier-key string (``name+keyhash+base64``) clients pin."""
        return self._note_signer.verifier_key()

    def sign(self, *, size: int, root: bytes) -> SignedCheckpoint:
        checkpoint = Checkpoint(self.origin, size, root)
        return SignedCheckpoint(checkpoint, sign_note(checkpoint.to_text(), [self._note_signer]))


def verify_checkpoint(
    note: bytes,
    *,
    origin: str,
    verifiers: Sequence[NoteVerifier],
    key_name: str | None = None,
) -> SignedCheckpoint:
    """Open a signed checkpoint: the log's own signature must verify and the origin match.

    The log's key is the verifier named ``key_name``. C2SP tlog-checkpoint says the log's
    key name SHOULD match the origin, not that it must, so by default it is the verifier
    named like the origin or, when none is, the one plain signed-note key given (a
    witness's cosignature key never stands in for the log's). Other verifiers (witnesses)
    may be passed and their cosignatures are checked too, but a note signed only by
    witnesses is refused. Raises :class:`MalformedNote` for anything that is not a
    well-formed checkpoint note and :class:`InvalidSignature` when the log's key did not
    sign it or the checkpoint is for another origin.
    """
    log_key = key_name if key_name is not None else _log_key_name(origin, verifiers)
    opened = open_note(note, verifiers=verifiers)
    try:
        checkpoint = Checkpoint.parse(opened.text)
    except MerkleError as exc:
        raise MalformedNote(f"not a checkpoint: {exc}") from exc
    if checkpoint.origin != origin:
        raise InvalidSignature(
            f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}",
            hint="You are talking to a different log than the one whose key you pinned "
            "(or, if its key is named otherwise than its origin, give the origin).",
        )
    if not any(signature.name == log_key for signature in opened.verified):
        raise InvalidSignature(
            f"no signature by the log's own key ({log_key!r}) verified",
            hint="Pass the log's verifier key among the verifiers (and its name, if it is "
            "not the log's origin).",
        )
    return SignedCheckpoint(checkpoint, note)


def _log_key_name(origin: str, verifiers: Sequence[NoteVerifier]) -> str:
    """The log's key name when the caller did not say: the origin if a key has that name,
    else the name of the only plain signed-note key given, else the origin."""
    names = {v.name for v in verifiers if not isinstance(v, CosignatureVerifier)}
    if origin in names or len(names) != 1:
        return origin
    return next(iter(names))
