"""Checkpoint note text (C2SP tlog-checkpoint, https://c2sp.org/tlog-checkpoint).

::

    <origin>\\n
    <decimal tree size>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]

Only the note *text* is handled here; signatures belong to the signed-note layer.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ._errors import CheckpointFormatError
from ._hash import HASH_SIZE, MAX_TREE_SIZE

__all__ = ["MAX_CHECKPOINT_BYTES", "MAX_EXTENSION_LINES", "Checkpoint"]

# tlog-checkpoint sets no bound and C2SP signed-note says verifiers SHOULD bound a note's
# size. Ours: a body is three short lines, and extension lines are NOT RECOMMENDED by
# tlog-checkpoint, so these leave ample room while capping the work an input can cause.
MAX_CHECKPOINT_BYTES = 4096
"""Largest checkpoint text accepted by :meth:`Checkpoint.parse`, in UTF-8 bytes."""

MAX_EXTENSION_LINES = 16
"""Most extension lines accepted after the three mandatory lines."""

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


def _check_line(what: str, line: str, *, signing: bool = True) -> None:
    """C2SP signed-note: no ASCII control character below U+0020 (newline included: one
    line), valid UTF-8. A checkpoint built to be signed also has no DEL (U+007F), which the
    spec allows but a reader of the text would not see; one read from others may."""
    if not line:
        raise CheckpointFormatError(f"{what} is empty")
    if any(ord(c) < 0x20 or (signing and c == "\x7f") for c in line):
        raise CheckpointFormatError(f"{what} contains a control character or newline")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointFormatError(f"{what} is not valid UTF-8 text") from None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's claim about its tree: ``origin`` had ``size`` leaves with root ``root``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # What is built here is what Sealtrail signs: the stricter line rule. What is read
        # (:meth:`parse`) follows the spec, and is built by :func:`_read` instead.
        _check_line("origin", self.origin)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointFormatError(f"tree size {self.size} is out of range")
        if len(self.root) != HASH_SIZE:
            raise CheckpointFormatError(f"root hash has {len(self.root)} bytes, not {HASH_SIZE}")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise CheckpointFormatError(f"more than {MAX_EXTENSION_LINES} extension lines")
        for i, ext in enumerate(self.extensions):
            _check_line(f"extension line {i + 1}", ext)

    def to_text(self) -> str:
        """Return the checkpoint note text, every line ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        return "".join(f"{line}\n" for line in (*lines, *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text strictly; raise :class:`CheckpointFormatError`."""
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            raise CheckpointFormatError("checkpoint is not valid UTF-8 text") from None
        if len(encoded) > MAX_CHECKPOINT_BYTES:
            raise CheckpointFormatError(f"checkpoint is longer than {MAX_CHECKPOINT_BYTES} bytes")
        if not text.endswith("\n"):
            raise CheckpointFormatError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointFormatError(f"checkpoint has {len(lines)} lines, needs at least 3")
        if len(lines) > 3 + MAX_EXTENSION_LINES:
            raise CheckpointFormatError(f"more than {MAX_EXTENSION_LINES} extension lines")
        origin, size_line, root_line, *extensions = lines
        if not _SIZE_RE.fullmatch(size_line):
            raise CheckpointFormatError(
                f"tree size {size_line!r} is not a decimal number without leading zeros"
            )
        size = int(size_line)
        if size > MAX_TREE_SIZE:
            raise CheckpointFormatError(f"tree size {size_line} does not fit in 64 bits")
        try:
            root = base64.b64decode(root_line.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise CheckpointFormatError("root hash is not standard base64") from None
        # Canonical encoding only: b64decode ignores non-zero padding bits.
        if base64.b64encode(root).decode("ascii") != root_line:
            raise CheckpointFormatError("root hash is not canonical standard base64")
        if len(root) != HASH_SIZE:
            raise CheckpointFormatError(f"root hash has {len(root)} bytes, not {HASH_SIZE}")
        _check_line("origin", origin, signing=False)
        for i, ext in enumerate(extensions):
            _check_line(f"extension line {i + 1}", ext, signing=False)
        return _read(cls, origin, size, root, tuple(extensions))


def _read(
    cls: type[Checkpoint], origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> Checkpoint:
    """A checkpoint :meth:`Checkpoint.parse` has checked line by line, built without
    ``__post_init__``'s signing rule (a DEL another log signed is its own business)."""
    checkpoint = object.__new__(cls)
    fields: tuple[tuple[str, object], ...] = (
        ("origin", origin),
        ("size", size),
        ("root", root),
        ("extensions", extensions),
    )
    for name, value in fields:
        object.__setattr__(checkpoint, name, value)
    return checkpoint
