"""A log read from its tiles alone: a directory (``sealtrail log export-tiles``) or the
tlog-tiles read API of a server or a static mirror, over HTTP.

:class:`TileSource` is the read side of a :class:`~sealtrail.storage.LogStore`, so that a
:class:`~sealtrail.log.LogReader` over it audits, proves and reads the log exactly as it
does a store of its own, trusting nothing but the log's key: every checkpoint's signature
is checked, every tile against the entries and the signed root. It reads the log as of the
first checkpoint it fetched, so that every tile it fetches is of one tree.

Every file is read no further than its limit (a tile 8 KiB, a bundle of 256 largest
entries, a checkpoint :data:`~sealtrail.note.MAX_NOTE_SIZE`), so a hostile source cannot
make it hold more. A partial tile or bundle the source no longer has (C2SP tlog-tiles lets
a log delete one once the full tile exists) is read from the full one's first positions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path
from typing import Final

import httpx

from sealtrail.errors import Error, InvalidInput, NotFound
from sealtrail.log import MAX_ENTRY_SIZE, tile_width
from sealtrail.merkle import HASH_SIZE, TILE_WIDTH, entries_path, tile_path
from sealtrail.note import MAX_NOTE_SIZE
from sealtrail.storage import ENTRY_BUNDLES, Commit, StoredCheckpoint, TilePart

from ._client import DEFAULT_TIMEOUT, ServiceError, ServiceUnreachable

__all__ = ["MAX_BUNDLE_SIZE", "TileSource"]

#: Tiles kept after they are fetched (a few: an audit reads each one twice in a row).
RECENT_TILES: Final = 8

#: The largest entry bundle read: 256 entries of the largest size, each with its length.
MAX_BUNDLE_SIZE: Final = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)


class TileSource:
    """The read side of a log store over tlog-tiles files: ``source`` is a directory or an
    ``http(s)://`` URL under which ``checkpoint`` and ``tile/…`` are found.

    Only reads: :meth:`commit` is refused, and :meth:`lookup_leaves` finds nothing (a
    reader then looks leaves up in the tiles)."""

    def __init__(self, source: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        text = str(source)
        self._http: httpx.Client | None = None
        self._base: str | Path
        if text.startswith(("http://", "https://")):
            self._base = text.rstrip("/") + "/"
            # Redirects are followed (a CDN, http to https): nothing fetched is trusted.
            self._http = httpx.Client(timeout=timeout, follow_redirects=True)
            self._timeout = timeout
        else:
            path = Path(source)
            if not path.is_dir():
                raise InvalidInput(
                    f"{source} is neither a directory nor an http(s):// URL",
                    hint="Give the directory `sealtrail log export-tiles` wrote, or the log's URL.",
                    code="tiles-source-invalid",
                )
            self._base = path
        self._checkpoint: StoredCheckpoint | None = None
        # The last tiles fetched: a reader's audit asks for a tile's parts twice (its
        # hashes, then whether it stores inner nodes), and a tile never changes.
        self._recent: OrderedDict[tuple[int, int], list[TilePart]] = OrderedDict()

    def describe(self) -> str:
        return str(self._base)

    # -- LogStore, read side -----------------------------------------------------------------

    def read_checkpoint(self) -> StoredCheckpoint:
        """The source's checkpoint, fetched once: the log is read as of it (its size read,
        not verified: the reader verifies the note). A source without one is no log's:
        :class:`NotFound` (a log's tiles always come with a checkpoint, of size 0 at
        least)."""
        if self._checkpoint is None:
            note = self._get("checkpoint", MAX_NOTE_SIZE)
            if note is None:
                raise NotFound(
                    f"{self.describe()} has no checkpoint: not a log's tiles",
                    hint="Give the directory `sealtrail log export-tiles` wrote, or the URL "
                    "the log's /checkpoint is under.",
                    code="tile-missing",
                )
            self._checkpoint = StoredCheckpoint(_size_of(note), note)
        return self._checkpoint

    def read_parts(self, level: int, index: int) -> list[TilePart]:
        """The tile as of the source's checkpoint, as one part (none if the tree has no
        such tile)."""
        size = self.read_checkpoint().size
        width = tile_width(level, index, size)
        if width == 0:
            return []
        recent = self._recent.get((level, index))
        if recent is not None:
            return recent
        partial = None if width == TILE_WIDTH else width
        data = self._fetch(level, index, partial)
        if data is None and partial is not None:
            # C2SP tlog-tiles: a log MAY delete a partial tile once the full one exists, and
            # a client MAY fetch the full one instead. Its first positions are the partial
            # tile's (a tile only grows), and the reader checks them like any other bytes.
            data = self._fetch(level, index, None)
            if data is not None:
                data = _prefix(level, data, width)
        if data is None:
            raise NotFound(
                f"{self.describe()} has no tile for "
                f"{'entry bundle' if level == ENTRY_BUNDLES else f'level {level}'} {index} of "
                f"its checkpoint (size {size})",
                code="tile-missing",
            )
        parts = [TilePart(level, index, 0, width, data, b"")]
        self._recent[(level, index)] = parts
        if len(self._recent) > RECENT_TILES:
            self._recent.popitem(last=False)
        return parts

    def _fetch(self, level: int, index: int, partial: int | None) -> bytes | None:
        """Tile or bundle ``index`` of ``level``, partial of width ``partial`` or full."""
        if level == ENTRY_BUNDLES:
            return self._get(entries_path(index, partial), MAX_BUNDLE_SIZE)
        return self._get(tile_path(level, index, partial), (partial or TILE_WIDTH) * HASH_SIZE)

    def lookup_leaves(self, leaf_hashes: Collection[bytes]) -> dict[bytes, list[int]]:
        return {}

    def commit(self, commit: Commit) -> None:
        raise InvalidInput("a log read from its tiles cannot be written to")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> TileSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- fetching ------------------------------------------------------------------------------

    def _get(self, name: str, limit: int) -> bytes | None:
        """File ``name`` of the source, at most ``limit`` bytes; ``None`` if there is none."""
        if isinstance(self._base, Path):
            return _read_file(self._base / name, limit)
        assert self._http is not None, "closed"
        url = self._base + name
        try:
            with self._http.stream("GET", url) as answer:
                if answer.status_code == 404:
                    return None
                if answer.status_code != 200:
                    raise ServiceError(f"{url} answered {answer.status_code}")
                data = bytearray()
                for chunk in answer.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise _too_large(url, limit)
                return bytes(data)
        except httpx.TimeoutException:
            raise ServiceUnreachable(f"no answer from {url} within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(f"cannot read {url}: {type(exc).__name__}") from None


def _prefix(level: int, data: bytes, width: int) -> bytes:
    """The first ``width`` hashes of a full tile, or entries of a full bundle: the partial
    tile of that width. A full file too short to hold them is returned whole, for the
    reader to refuse as it would the partial one."""
    if level != ENTRY_BUNDLES:
        return data[: width * HASH_SIZE] if len(data) >= width * HASH_SIZE else data
    at = 0
    for _ in range(width):
        if at + 2 > len(data):
            return data
        at += 2 + int.from_bytes(data[at : at + 2], "big")
    return data[:at] if at <= len(data) else data


def _read_file(path: Path, limit: int) -> bytes | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path}: {exc.strerror}", code="tiles-source-invalid"
        ) from None
    if len(data) > limit:
        raise _too_large(str(path), limit)
    return data


def _too_large(where: str, limit: int) -> Error:
    return InvalidInput(
        f"{where} is larger than {limit} bytes: not a tile of this log",
        code="tiles-source-invalid",
    )


def _size_of(note: bytes) -> int:
    """The tree size a checkpoint names (its second line), or an error naming the file."""
    try:
        return int(note.split(b"\n", 2)[1])
    except (IndexError, ValueError):
        raise InvalidInput(
            "the source's checkpoint is not a checkpoint", code="tiles-source-invalid"
        ) from None
