"""The SQL stores' leaf index: sorted runs, merged by size (a small log-structured index).

A run is what one commit adds to the leaf index: its leaves' *keys* (the first four bytes
of each leaf hash as an unsigned integer), sorted, and beside them the leaves' indexes in
the same order, stored in pages of :data:`PAGE_ENTRIES`. Runs are written whole and never
changed; when the newest :data:`FANOUT` runs are of about one size they are merged into
one (so a log of ``n`` entries keeps a few runs per power of :data:`FANOUT`, and each entry
is rewritten about ``log4(n / run size)`` times over the log's life). Stored values are
big-endian (as SQL's own integer encodings are), whatever the machine.

Each store keeps two tables — runs ``(run, count, keys, first_page)`` and pages ``(page,
indexes)`` — and supplies a :class:`RunTable` over them for one transaction; the merging,
searching and caching are here, once.

numpy is imported where it is used, not with this module: every ``sealtrail`` command
imports the stores, and numpy's import (about 0.1 s here) would otherwise be paid by each
of them, most of which never touch a leaf index.

Why runs rather than one B-tree keyed by hash: each of the B-tree's rows goes to a random
page, so once the index outgrows the page cache a flush of 262,144 rows touches nearly
every page, and the flush grows with the log (0.32 s per flush at 262,144 entries, 0.96 s
at 3.9 million). A run is written in order, as two values of one row, in time that does
not depend on the log's size.

Lookups keep every run's keys in memory (4 bytes per entry) and binary-search them; only
the rare hit reads an index from disk. Four-byte keys are a *hint*, as the leaf index's
contract allows: two hashes sharing a key both come back as candidates, and callers
confirm candidates against the level-0 tiles.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple, Protocol

from sealtrail.errors import Corruption, InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Keys = npt.NDArray[np.uint32]
    Indexes = npt.NDArray[np.uint64]

__all__ = [
    "FANOUT",
    "PAGE_ENTRIES",
    "KeyCache",
    "Run",
    "RunRow",
    "RunTable",
    "add_run",
    "build_run",
    "candidates",
    "index_at",
    "indexes_from_bytes",
    "keys_from_bytes",
    "leaf_keys32",
    "merge_plan",
    "merge_runs",
    "search",
    "sorted_run",
    "wanted",
]

#: Runs merged at once, and the size ratio between one tier of runs and the next.
FANOUT = 4
#: Runs within this factor of each other's size count as one tier.
TIER_SPREAD = 2
#: Entries in the largest run a merge makes (12 bytes each on disk, 4 in memory): a merge
#: runs inside one commit, so this bounds the longest a commit waits for one (2.4-3.0 s
#: here, once per 16.8 million entries).
MAX_RUN = 1 << 24
#: Bytes in a leaf hash (SHA-256).
HASH_SIZE = 32
#: Indexes per stored page of a run (32 KiB). A key found in memory costs one page read
#: (~9 us here), and matches are rare; fewer, larger pages make a merge cheaper (four runs
#: of 2^22 entries: 2.4 s in all against 3.7 s with pages of 256).
PAGE_ENTRIES = 4096
#: Stored layouts (big-endian, whatever the machine's) and their sizes in bytes.
KEY, KEY_SIZE = ">u4", 4
INDEX, INDEX_SIZE = ">u8", 8


@dataclass(frozen=True, slots=True)
class Run:
    """One run: ``keys`` sorted, ``indexes[i]`` the log index of the leaf with ``keys[i]``."""

    keys: Keys
    indexes: Indexes

    def __post_init__(self) -> None:
        if self.keys.shape != self.indexes.shape or self.keys.ndim != 1:
            raise Corruption("a leaf-index run's keys and indexes differ in length")

    @property
    def count(self) -> int:
        return int(self.keys.shape[0])

    def key_bytes(self) -> bytes:
        return self.keys.astype(KEY, copy=False).tobytes()

    def index_bytes(self) -> bytes:
        return self.indexes.astype(INDEX, copy=False).tobytes()

    def pages(self) -> list[bytes]:
        """The run's indexes as stored, page by page."""
        data = self.index_bytes()
        step = PAGE_ENTRIES * INDEX_SIZE
        return [data[at : at + step] for at in range(0, len(data), step)]


class RunRow(NamedTuple):
    """A stored run's row without its keys: its number, size and first page."""

    run: int
    entries: int
    first_page: int

    @property
    def last_page(self) -> int:
        return self.first_page + -(-self.entries // PAGE_ENTRIES) - 1


class RunTable(Protocol):
    """A store's runs and pages, inside one of its write transactions."""

    def rows(self) -> list[RunRow]:
        """Every run, oldest first."""
        ...

    def read(self, row: RunRow) -> Run:
        """One run's keys and indexes."""
        ...

    def delete(self, row: RunRow) -> None:
        """One run and its pages."""
        ...

    def insert(self, run: Run) -> None:
        """A new run (numbered after every run there ever was) and its pages (numbered
        after every page there is)."""
        ...


def add_run(table: RunTable, run: Run) -> None:
    """Add ``run``, then merge the newest runs while a tier of them is full."""
    table.insert(run)
    while True:
        listed = table.rows()
        merge = merge_plan([r.entries for r in listed])
        if not merge:
            return
        merged = []
        for row in listed[-merge:]:
            merged.append(table.read(row))
            table.delete(row)
        table.insert(merge_runs(merged))


def keys_from_bytes(data: bytes) -> Keys:
    """A run's stored keys, in the machine's order."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    if len(data) % KEY_SIZE:
        raise Corruption("a leaf-index run's keys are not whole")
    return np.frombuffer(data, dtype=KEY).astype(np.uint32, copy=False)


def indexes_from_bytes(data: bytes) -> Indexes:
    """A run's stored indexes, in the machine's order."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    if len(data) % INDEX_SIZE:
        raise Corruption("a leaf-index run's indexes are not whole")
    return np.frombuffer(data, dtype=INDEX).astype(np.uint64, copy=False)


def leaf_keys32(leaf_hashes: Sequence[bytes]) -> Keys:
    """Each 32-byte hash's first four bytes as an unsigned integer, big-endian (a C pass)."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    if not set(map(len, leaf_hashes)) <= {HASH_SIZE}:
        raise InvalidInput(f"leaf hashes must be {HASH_SIZE} bytes each")
    words = np.frombuffer(b"".join(leaf_hashes), dtype=">u4")[0 :: HASH_SIZE // 4]
    return words.astype(np.uint32)


def build_run(leaves: Sequence[tuple[bytes, int]]) -> Run:
    """The run of one commit's ``(leaf hash, index)`` pairs."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    keys = leaf_keys32(list(map(itemgetter(0), leaves)))
    try:
        indexes = np.fromiter(map(itemgetter(1), leaves), dtype=np.uint64, count=len(leaves))
    except OverflowError as exc:
        raise InvalidInput("leaf indexes must be between 0 and 2**64 - 1") from exc
    return sorted_run(keys, indexes)


def merge_runs(runs: Sequence[Run]) -> Run:
    """One run holding every pair of ``runs``."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    keys = np.concatenate([r.keys for r in runs])
    return sorted_run(keys, np.concatenate([r.indexes for r in runs]))


def sorted_run(keys: Keys, indexes: Indexes) -> Run:
    """The run of ``keys[i]`` paired with ``indexes[i]``, in any order (Timsort: pieces that
    are sorted already, as runs being merged are, are merged in one pass)."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    # "stable" for its algorithm (Timsort), not its promise: the order among equal keys
    # does not matter.
    order = np.argsort(keys, kind="stable")
    return Run(keys[order], indexes[order])


def merge_plan(counts: Sequence[int]) -> int:
    """How many of the newest runs to merge now (0: none), given the runs' sizes, oldest first.

    The newest :data:`FANOUT` are merged once they are within :data:`TIER_SPREAD` of each
    other's size: one tier full, it becomes one run of the next.
    """
    if len(counts) < FANOUT:
        return 0
    newest = counts[-FANOUT:]
    if sum(newest) > MAX_RUN or max(newest) > TIER_SPREAD * min(newest):
        return 0
    return FANOUT


def search(keys: Keys, asked: Keys) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Where each of ``asked`` (sorted) occurs in ``keys``: ``(asked position, keys position)``
    pairs, every occurrence of a repeated key included."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    empty = np.empty(0, dtype=np.intp)
    count = keys.shape[0]
    if count == 0 or asked.shape[0] == 0:
        return empty, empty
    low = np.searchsorted(keys, asked, side="left")
    hit = np.nonzero(keys[np.minimum(low, count - 1)] == asked)[0]
    if hit.shape[0] == 0:  # the common case: one search, no match
        return empty, empty
    spans = np.searchsorted(keys, asked[hit], side="right") - low[hit]
    which = np.repeat(hit, spans)
    # Positions low, low + 1, ..., high - 1 of each hit, in one vector.
    firsts = np.repeat(low[hit] - (np.cumsum(spans) - spans), spans)
    where = firsts + np.arange(which.shape[0], dtype=np.intp)
    return which.astype(np.intp), where.astype(np.intp)


def wanted(
    asked: Sequence[bytes], runs: Sequence[tuple[RunRow, Keys]]
) -> list[tuple[int, int, int]]:
    """Where the indexes of ``asked`` hashes' key matches are: ``(position in asked, page,
    entry within the page)``, for every match in every run (most lookups match none)."""
    import numpy as np  # noqa: PLC0415 - loaded on first use (see the module docstring)

    if not asked or not runs:
        return []
    keys = leaf_keys32(asked)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    out: list[tuple[int, int, int]] = []
    for row, run_keys in runs:
        which, where = search(run_keys, ordered)
        for a, w in zip(order[which].tolist(), where.tolist(), strict=True):
            page, at = divmod(w, PAGE_ENTRIES)
            out.append((a, row.first_page + page, at))
    return out


def index_at(page: bytes, entry: int) -> int | None:
    """The index stored at ``entry`` of a page (``None``: the page is shorter)."""
    data = page[entry * INDEX_SIZE : (entry + 1) * INDEX_SIZE]
    return int.from_bytes(data, "big") if len(data) == INDEX_SIZE else None


def candidates(
    asked: Sequence[bytes], spots: Sequence[tuple[int, int, int]], pages: dict[int, bytes]
) -> dict[bytes, list[int]]:
    """``lookup_leaves``'s answer from :func:`wanted`'s spots and the pages read for them (a
    page missing or cut short, edited behind the store's back, only loses its hints)."""
    found: dict[bytes, list[int]] = {}
    for a, page, entry in spots:
        data = pages.get(page)
        index = None if data is None else index_at(data, entry)
        if index is not None:
            listed = found.setdefault(asked[a], [])
            if index not in listed:
                listed.append(index)
    return found


class KeyCache:
    """Runs' keys by run number, shared by a store's threads. A run never changes and its
    number is never reused, so a cached run stays right for as long as it exists."""

    def __init__(self) -> None:
        self._keys: dict[int, Keys] = {}
        self._lock = threading.Lock()

    def runs(
        self, rows: Sequence[RunRow], load: Callable[[Collection[int]], dict[int, bytes]]
    ) -> list[tuple[RunRow, Keys]]:
        """Each of ``rows`` (one snapshot's runs) with its keys; ``load`` reads the stored
        keys of the runs not cached yet, in the same snapshot. Runs gone are forgotten."""
        with self._lock:
            known = {r.run: self._keys[r.run] for r in rows if r.run in self._keys}
        missing = [r.run for r in rows if r.run not in known]
        if missing:
            loaded = load(missing)
            for run in missing:
                if run not in loaded:
                    raise Corruption(f"leaf-index run {run} vanished within one snapshot")
                known[run] = keys_from_bytes(loaded[run])
        with self._lock:
            self._keys = known
        return [(r, known[r.run]) for r in rows]
