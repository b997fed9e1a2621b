"""The log as static files: the C2SP tlog-tiles layout in a directory, for any web server.

``tile/<L>/<N>[.p/<W>]``, ``tile/entries/<N>[.p/<W>]`` and ``checkpoint``, byte for byte what
``sealtrail serve`` answers at the same paths, so that a plain web server or a CDN in
front of the directory serves the log's read API without the database.

Tiles are written before the checkpoint that covers them, each by a rename from a
temporary file, so that a reader of the directory never sees a checkpoint whose tiles are
missing, nor half a file. Full tiles and partial tiles of a given width never change
(C2SP tlog-tiles), so a file already there is kept: exporting again writes what the log
gained. Partial tiles of earlier checkpoints stay, as the spec allows clients holding an
older checkpoint to ask for them. A directory whose checkpoint is another log's, or one the
log does not extend, is refused: the tiles it keeps would not be this log's.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sealtrail.errors import Corruption, InvalidInput, InvalidProof, VerificationError
from sealtrail.merkle import TILE_WIDTH, entries_path, tile_path
from sealtrail.note import MAX_NOTE_SIZE
from sealtrail.storage import ENTRY_BUNDLES

from ._checkpoints import SignedCheckpoint, verify_checkpoint
from ._reader import LogReader, Progress
from ._tiles import tile_width

__all__ = ["Exported", "export_tiles", "write_public_file"]

#: The name of the checkpoint file (``/checkpoint`` in tlog-tiles).
CHECKPOINT_FILE = "checkpoint"


@dataclass(frozen=True, slots=True)
class Exported:
    """What one export did: the checkpoint it wrote (``None``: the log is empty) and how
    many tile files it wrote and found already there."""

    checkpoint: SignedCheckpoint | None
    written: int
    kept: int


def export_tiles(
    reader: LogReader, directory: Path, *, progress: Progress | None = None
) -> Exported:
    """Write the log's tiles, entry bundles and latest checkpoint under ``directory``.

    ``progress(done, total)`` is called as tiles are considered. Raises
    :class:`InvalidInput` (``output-unwritable``) when ``directory`` cannot be written.
    """
    latest = reader.checkpoint()
    if latest is None:
        return Exported(None, 0, 0)
    _check_extends(directory, reader, latest)
    size = latest.size
    wanted = list(_tiles(size))
    written = kept = 0
    for done, (level, index, width) in enumerate(wanted, start=1):
        name = (
            entries_path(index, width) if level == ENTRY_BUNDLES else tile_path(level, index, width)
        )
        target = directory / name
        if target.exists():
            kept += 1
        else:
            write_public_file(target, reader.tile(level, index, width, size=size))
            written += 1
        if progress is not None:
            progress(done, len(wanted))
    write_public_file(directory / CHECKPOINT_FILE, latest.note)
    return Exported(latest, written, kept)


def _check_extends(directory: Path, reader: LogReader, latest: SignedCheckpoint) -> None:
    """Refuse a directory whose checkpoint is another log's, or one the log does not
    extend: the tiles kept there would not be this log's."""
    path = directory / CHECKPOINT_FILE
    try:
        with path.open("rb") as handle:
            note = handle.read(MAX_NOTE_SIZE + 1)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path}: {exc.strerror}", code="output-unwritable"
        ) from None
    try:
        there = verify_checkpoint(note, origin=reader.origin, verifiers=reader.verifiers)
    except VerificationError as exc:
        raise InvalidInput(
            f"{directory} holds a checkpoint that is not this log's: {exc.message}",
            hint="Export into an empty directory, or into this log's own.",
            code="export-foreign",
        ) from None
    try:
        reader.check_extends(there, latest)
    except InvalidProof:
        raise Corruption(
            f"the log at size {latest.size} does not extend the checkpoint of size "
            f"{there.size} in {directory}: a fork"
        ) from None


def _tiles(size: int) -> list[tuple[int, int, int | None]]:
    """Every tile of a tree of ``size`` leaves: ``(level, index, width)``, ``None`` for a
    full one; entry bundles first, then hash tiles level by level."""
    tiles: list[tuple[int, int, int | None]] = []
    level = ENTRY_BUNDLES
    while True:
        index = 0
        while (width := tile_width(level, index, size)) > 0:
            tiles.append((level, index, None if width == TILE_WIDTH else width))
            index += 1
        if index == 0 and level >= 0:
            return tiles
        level = 0 if level == ENTRY_BUNDLES else level + 1


def write_public_file(path: Path, data: bytes) -> None:
    """``data`` to ``path`` (mode 0644, its folders made) by a rename, so that no reader
    sees a part of it; ``output-unwritable`` when it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)  # served as they are: public, like the API
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InvalidInput(
            f"cannot write {path}: {exc.strerror}",
            hint="Give a directory this user may write to.",
            code="output-unwritable",
        ) from None
