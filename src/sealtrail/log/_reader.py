"""The read side: checkpoint, tiles, bundles, entries and proofs, straight from the store.

Any number of readers (threads, processes) may serve one store while a sequencer writes it.
Everything a reader serves is bounded by a checkpoint it has verified, so data beyond the
checkpoint (an in-flight batch, a leftover of a failed write) is never served.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sealtrail.errors import Corruption, InvalidInput, InvalidProof, NotFound
from sealtrail.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    CompactRange,
    MerkleError,
    NodeID,
    NodeRun,
    consistency_proof,
    inclusion_proof,
    leaf_hashes,
    node_hash,
    node_inclusion_nodes,
    tile_for_node,
    verify_consistency,
    verify_inclusion,
)
from sealtrail.note import NoteVerifier
from sealtrail.storage import ENTRY_BUNDLES, LogStore, TilePart

from ._checkpoints import SignedCheckpoint, check_not_behind, verify_checkpoint
from ._tiles import (
    INTERIOR_SIZE,
    assemble,
    bundle_entries,
    inner_levels,
    tile_interior,
    tile_name,
    tile_width,
)

__all__ = ["ConsistencyProof", "InclusionProof", "LogReader", "Progress"]

#: Expanded tiles kept in memory per reader (each ~16 KiB: 511 hashes). Tiles are immutable
#: for a given width, so the cache never needs invalidation.
DEFAULT_TILE_CACHE = 4096

#: Hashes of nodes at Merkle level 8 and above kept per reader (there are 256 times fewer
#: of them than entries; proofs for any index share the ones near the top).
HIGH_NODE_CACHE = 1 << 16
#: Upper proof paths (from a full leaf tile's root to the root of a tree size) per reader.
UPPER_PATH_CACHE = 1 << 14
#: Entries whose leaf-index rows the audit looks up at once.
LEAF_CHECK_BATCH = 1 << 16

#: Called with (done, total) while a long operation runs.
Progress = Callable[[int, int], None]

#: The code of :meth:`LogReader.check_extends`'s refusal of a log behind a checkpoint.
ROLLED_BACK = "log-rolled-back"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("sizes and indexes must be non-negative integers")
    return value


def _hashes(values: object) -> list[bytes]:
    if not isinstance(values, list):
        raise TypeError("hashes must be a list")
    out = []
    for value in values:
        try:
            raw = base64.b64decode(str(value), validate=True)
        except binascii.Error as exc:
            raise ValueError("proof hashes must be standard base64") from exc
        if len(raw) != HASH_SIZE:
            raise ValueError("proof hashes must be 32 bytes")
        out.append(raw)
    return out


@dataclass(frozen=True, slots=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    hashes: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        """The JSON proof document (hashes in standard base64, leaf hash in hex)."""
        return {
            "index": self.index,
            "size": self.size,
            "leaf_hash": self.leaf_hash.hex(),
            "hashes": [_b64(h) for h in self.hashes],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> InclusionProof:
        try:
            leaf = bytes.fromhex(str(doc["leaf_hash"]))
            return cls(_int(doc["index"]), _int(doc["size"]), leaf, _hashes(doc["hashes"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput(f"not an inclusion proof document: {exc}") from exc

    def verify(self, root: bytes) -> None:
        """Raise :class:`InvalidProof` unless this proof puts the leaf in the tree ``root``."""
        try:
            verify_inclusion(
                leaf_hash=self.leaf_hash,
                index=self.index,
                size=self.size,
                proof=self.hashes,
                root=root,
            )
        except MerkleError as exc:
            raise InvalidProof(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    size1: int
    size2: int
    hashes: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {"size1": self.size1, "size2": self.size2, "hashes": [_b64(h) for h in self.hashes]}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ConsistencyProof:
        try:
            return cls(_int(doc["size1"]), _int(doc["size2"]), _hashes(doc["hashes"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput(f"not a consistency proof document: {exc}") from exc

    def verify(self, root1: bytes, root2: bytes) -> None:
        """Raise :class:`InvalidProof` unless tree ``root2`` extends tree ``root1``."""
        if self.size1 == 0:
            # Every tree extends the empty tree; the proof must then be empty.
            if self.hashes or root1 != EMPTY_ROOT:
                raise InvalidProof("a proof from the empty tree must be empty")
            return
        try:
            verify_consistency(
                size1=self.size1, size2=self.size2, proof=self.hashes, root1=root1, root2=root2
            )
        except MerkleError as exc:
            raise InvalidProof(str(exc)) from exc


def _tile_spans(level: int, start: int, end: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    """Walk positions ``start .. end-1`` tile by tile: ``(index, width, first, last)``.

    ``width`` is the tile's width in a tree of ``size``; positions ``first .. last-1`` of the
    tile are the ones asked for.
    """
    pos = start
    while pos < end:
        index, first = divmod(pos, TILE_WIDTH)
        width = tile_width(level, index, size)
        last = min(width, first + end - pos)
        yield index, width, first, last
        pos += last - first


def _interior_offsets() -> tuple[int, ...]:
    """Where each level of a full tile begins: level 0 in its hashes, levels 1..7 in its
    stored interior (128, 64, ... 2 hashes, level by level)."""
    offsets, pos, width = [0], 0, TILE_WIDTH // 2
    while width >= 2:
        offsets.append(pos)
        pos, width = pos + width * HASH_SIZE, width // 2
    return tuple(offsets)


_INTERIOR_OFFSETS = _interior_offsets()


class _Expanded:
    """The perfect subtree hashes inside one tile, one byte string per level.

    ``node(k, j)`` is the node at Merkle level ``8T + k`` whose level-``8T`` leaves are
    positions ``j*2^k .. (j+1)*2^k - 1`` of the tile. A stored interior is used in place;
    without one the levels are computed once, here (tiles are immutable for a width).
    """

    __slots__ = ("_levels", "_offsets")

    def __init__(
        self, hashes: bytes, interior: bytes = b"", *, known: Sequence[bytes] = ()
    ) -> None:
        # Level k is levels[k][offsets[k]:]. Only a full tile comes with its interior;
        # ``known``: the inner levels of a tile ``hashes`` begins with (see inner_levels).
        if interior:
            self._levels = [hashes, *(interior,) * (TILE_HEIGHT - 1)]
            self._offsets = _INTERIOR_OFFSETS
        else:
            self._levels = [hashes, *inner_levels(hashes, known)]
            self._offsets = (0,) * len(self._levels)

    def grown(self, data: bytes) -> _Expanded:
        """This partial tile with ``data``, the hashes after its own: the nodes it has
        complete already are kept, only those the new hashes complete are computed."""
        if any(self._offsets):  # a full tile's stored interior; never grows
            return _Expanded(self.hashes + data)
        return _Expanded(self.hashes + data, known=self._levels[1:])

    def node(self, k: int, j: int) -> bytes:
        start = self._offsets[k] + j * HASH_SIZE
        return self._levels[k][start : start + HASH_SIZE]

    def siblings(self, pos: int) -> list[bytes]:
        """The audit path of position ``pos`` inside a full tile, lowest level first: the
        hash beside it at each of the tile's levels."""
        out = []
        for level, offset in zip(self._levels, self._offsets, strict=True):
            start = offset + (pos ^ 1) * HASH_SIZE
            out.append(level[start : start + HASH_SIZE])
            pos >>= 1
        return out

    @property
    def hashes(self) -> bytes:
        """The tile's own hashes (its first level)."""
        return self._levels[0]


class LogReader:
    """Serve one log from its store, verifying every checkpoint it reads."""

    def __init__(
        self,
        store: LogStore,
        *,
        origin: str,
        verifiers: Sequence[NoteVerifier],
        tile_cache: int = DEFAULT_TILE_CACHE,
    ) -> None:
        self.store = store
        self.origin = origin
        self._verifiers = list(verifiers)
        self._cache: OrderedDict[tuple[int, int, int], _Expanded] = OrderedDict()
        self._cache_size = tile_cache
        self._lock = threading.Lock()
        self._last: SignedCheckpoint | None = None
        self._high: dict[NodeID, bytes] = {}
        self._upper: dict[tuple[int, int, int], tuple[bytes, ...]] = {}
        self._tail: tuple[int, int, dict[bytes, int]] = (0, 0, {})
        self._tail_lock = threading.Lock()

    @property
    def verifiers(self) -> tuple[NoteVerifier, ...]:
        """The keys this reader verifies the log's checkpoints with."""
        return tuple(self._verifiers)

    # -- checkpoint -------------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint | None:
        """The latest committed checkpoint, signature verified; ``None`` for an empty log."""
        # What this reader saw before the read is committed, so the read must cover it;
        # taken first, as another thread may see (or the sequencer adopt) a newer one
        # while the read is on its way.
        last = self._last
        stored = self.store.read_checkpoint()
        if stored is None:
            check_not_behind(last, None)
            return None
        if last is not None and last.note == stored.note:
            return last
        signed = verify_checkpoint(stored.note, origin=self.origin, verifiers=self._verifiers)
        if signed.size != stored.size:
            raise Corruption(
                f"stored size {stored.size} disagrees with the signed checkpoint ({signed.size})"
            )
        check_not_behind(last, signed)
        newest = self._last
        if newest is None or signed.size >= newest.size:
            self._last = signed
        return signed

    @property
    def latest(self) -> SignedCheckpoint | None:
        """The newest checkpoint this reader has read and verified (no store read)."""
        return self._last

    def size(self) -> int:
        latest = self.checkpoint()
        return 0 if latest is None else latest.size

    def _bound(self, size: int | None) -> int:
        last = self._last
        if size is not None and last is not None and 0 <= size <= last.size:
            # A size once covered by a verified checkpoint stays covered: the log only grows.
            return size
        latest = self.size()
        if size is None:
            return latest
        if size < 0 or size > latest:
            raise NotFound(f"tree size {size} is beyond the latest checkpoint ({latest})")
        return size

    # -- tiles and entries --------------------------------------------------------------------

    def tile(
        self, level: int, index: int, width: int | None = None, *, size: int | None = None
    ) -> bytes:
        """Tile bytes per C2SP tlog-tiles; ``width`` ``None`` asks for the full tile."""
        want = TILE_WIDTH if width is None else width
        if level < 0 and level != ENTRY_BUNDLES:
            raise InvalidInput(f"no tile level {level}")
        if not 1 <= want <= TILE_WIDTH or index < 0:
            raise InvalidInput("tile width must be 1..256 and the index non-negative")
        have = tile_width(level, index, self._bound(size))
        if have < want:
            raise NotFound(f"{tile_name(level, index)} of width {want} is not in the log (yet)")
        return assemble(self.store.read_parts(level, index), want, level, index)

    def entry_bundle(self, index: int, width: int | None = None) -> bytes:
        return self.tile(ENTRY_BUNDLES, index, width)

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``start .. end-1`` (read bundle by bundle)."""
        size = self.size()
        if not 0 <= start <= end <= size:
            raise NotFound(f"entries {start}..{end - 1} are not all in the log of size {size}")
        out: list[bytes] = []
        for index, width, first, last in _tile_spans(ENTRY_BUNDLES, start, end, size):
            out += bundle_entries(self.tile(ENTRY_BUNDLES, index, width, size=size))[first:last]
        return out

    def entry(self, index: int) -> bytes:
        return self.entries(index, index + 1)[0]

    # -- nodes and proofs ---------------------------------------------------------------------

    def _expanded(self, level: int, index: int, width: int) -> _Expanded:
        key = (level, index, width)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        parts = self.store.read_parts(level, index)
        full = len(parts) == 1 and parts[0].start == 0 and parts[0].count == width == TILE_WIDTH
        if full and len(parts[0].interior) == INTERIOR_SIZE:
            if len(parts[0].data) != TILE_WIDTH * HASH_SIZE:
                raise Corruption(f"{tile_name(level, index)}: part of the wrong length")
            expanded = _Expanded(parts[0].data, parts[0].interior)
        else:
            hashes = assemble(parts, width, level, index)
            expanded = self._grown(level, index, parts, hashes) or _Expanded(hashes)
        with self._lock:
            self._cache[key] = expanded
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return expanded

    def _grown(
        self, level: int, index: int, parts: Sequence[TilePart], hashes: bytes
    ) -> _Expanded | None:
        """The tile of ``hashes`` out of the same tile at a narrower width, cached and
        agreeing with them (the width where one of ``parts`` starts): a reader following a
        growing log reads its right-edge tiles again at every step, and hashes only what
        they gained."""
        width = len(hashes) // HASH_SIZE
        with self._lock:
            for part in reversed(parts):
                if 0 < part.start < width:
                    before = self._cache.get((level, index, part.start))
                    if before is not None:
                        break
            else:
                return None
        if not hashes.startswith(before.hashes):
            return None
        return before.grown(hashes[len(before.hashes) :])

    def absorb(self, parts: Sequence[TilePart]) -> None:
        """Extend the cached tiles with the hash-tile parts of a commit that is durable, so
        that the proofs of its entries read nothing from the store.

        The sequencer that committed them calls this (the service's receipts are built on
        the event loop, where a read of a server store would hold everything else up). A
        part extends the cached tile it continues, or starts a tile; any other is left to
        be read when asked for. MUST be given committed parts only: the cache is trusted as
        the store is.
        """
        with self._lock:
            for part in parts:
                if part.level < 0 or len(part.data) != part.count * HASH_SIZE:
                    continue
                if part.start == 0:
                    full = part.count == TILE_WIDTH and len(part.interior) == INTERIOR_SIZE
                    expanded = _Expanded(part.data, part.interior if full else b"")
                else:
                    before = self._cache.get((part.level, part.index, part.start))
                    if before is None:
                        continue
                    expanded = before.grown(part.data)
                self._cache[(part.level, part.index, part.start + part.count)] = expanded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def adopt(self, signed: SignedCheckpoint) -> None:
        """Take a checkpoint the sequencer has just committed as the newest this reader
        knows, so that proofs up to its size read no checkpoint back (on the event loop, a
        store read and a signature check for every batch).

        The sequencer that signed and committed it calls this, after :meth:`absorb`. MUST
        be given a committed checkpoint of this log: it is trusted as the store is. An older
        one than the reader has is ignored (the log only grows).
        """
        last = self._last
        if last is None or signed.size > last.size:
            self._last = signed

    def read_nodes(self, ids: Sequence[NodeID], *, size: int) -> list[bytes]:
        """Hashes of perfect subtrees of a tree of ``size`` leaves (a merkle ``NodeReader``)."""
        out: list[bytes] = []
        tiles: dict[tuple[int, int], tuple[_Expanded, int]] = {}
        high = self._high
        for level, index in ids:
            if level >= TILE_HEIGHT:
                cached = high.get((level, index))
                if cached is not None:
                    # A complete node's hash never changes, whatever the size asked for.
                    if (index + 1) << level > size:
                        raise Corruption(
                            f"node {level}/{index} is not complete in a tree of {size}"
                        )
                    out.append(cached)
                    continue
            tile_level, tile_index, pos, count = tile_for_node(level, index)
            key = (tile_level, tile_index)
            got = tiles.get(key)
            if got is None:
                width = tile_width(tile_level, tile_index, size)
                got = tiles[key] = (self._expanded(tile_level, tile_index, width), width)
            expanded, width = got
            if pos + count > width:
                raise Corruption(f"node {level}/{index} is not complete in a tree of size {size}")
            h = expanded.node(level % TILE_HEIGHT, pos // count)
            if level >= TILE_HEIGHT:
                if len(high) >= HIGH_NODE_CACHE:
                    high.clear()
                high[(level, index)] = h
            out.append(h)
        return out

    def _reader_for(self, size: int) -> Callable[[Sequence[NodeID]], Sequence[bytes]]:
        return lambda ids: self.read_nodes(ids, size=size)

    def leaf_hash_at(self, index: int, *, size: int | None = None) -> bytes:
        bound = self._bound(size)
        if not 0 <= index < bound:
            raise NotFound(f"index {index} is not in a tree of size {bound}")
        return self.read_nodes([(0, index)], size=bound)[0]

    def leaf_hashes(self, start: int, end: int, *, size: int | None = None) -> list[bytes]:
        """Leaf hashes of entries ``start .. end-1``, read from the level-0 tiles."""
        bound = self._bound(size)
        if not 0 <= start <= end <= bound:
            raise NotFound(f"leaves {start}..{end - 1} are not all in a tree of size {bound}")
        out: list[bytes] = []
        for index, width, first, last in _tile_spans(0, start, end, bound):
            # Through the tile cache: the proofs of these leaves need the same tiles.
            data = self._expanded(0, index, width).hashes
            out += [
                data[i : i + HASH_SIZE]
                for i in range(first * HASH_SIZE, last * HASH_SIZE, HASH_SIZE)
            ]
        return out

    def warm(self, size: int) -> None:
        """Read into the cache the tiles along the right edge of the tree of ``size``
        leaves: the ones every proof of its newest entries needs.

        A process that follows a log another process sequences calls this from a worker
        thread with each new checkpoint, so that the receipts it then builds on its event
        loop read nothing from the store (as :meth:`absorb` does for the sequencer's own).
        """
        bound = self._bound(size)
        if bound:
            self.inclusion_proof(bound - 1, size=bound)

    def _tail_index(self, bound: int) -> dict[bytes, int]:
        """Leaf hash -> index above the store's leaf-index watermark, up to ``bound``."""
        stored = self.store.read_checkpoint()
        indexed = 0 if stored is None else min(stored.indexed, bound)
        with self._tail_lock:  # one thread extends the table; it only ever grows in place
            start, end, table = self._tail
            if start != indexed or end > bound:
                start, end, table = indexed, indexed, {}
            for offset, h in enumerate(self.leaf_hashes(end, bound, size=bound)):
                table.setdefault(h, end + offset)
            self._tail = (start, max(end, bound), table)
            return table

    def index_of(self, leaf: bytes, *, size: int | None = None) -> int:
        """The index of the entry with this leaf hash, confirmed against the hash tile."""
        found = self.indexes_of([leaf], size=size).get(leaf)
        if found is None:
            raise NotFound("no entry with this leaf hash in the tree")
        return found

    def indexes_of(self, leaves: Sequence[bytes], *, size: int | None = None) -> dict[bytes, int]:
        """:meth:`index_of` for many leaf hashes at once (one lookup in the store): those of
        ``leaves`` in the tree, each with its first index."""
        bound = self._bound(size)
        out: dict[bytes, int] = {}
        for leaf, hits in self.store.lookup_leaves(leaves).items():
            for hit in sorted(hits):
                if hit < bound and self.leaf_hash_at(hit, size=bound) == leaf:
                    out[leaf] = hit
                    break
        missing = [leaf for leaf in leaves if leaf not in out]
        if missing:
            tail = self._tail_index(bound)
            out.update((leaf, tail[leaf]) for leaf in missing if leaf in tail)
        return out

    def inclusion_proof(self, index: int, *, size: int | None = None) -> InclusionProof:
        bound = self._bound(size)
        if not 0 <= index < bound:
            raise NotFound(f"index {index} is not in a tree of size {bound}")
        tile_index, pos = divmod(index, TILE_WIDTH)
        if tile_index >= bound >> TILE_HEIGHT:  # the partial right edge: the general plan
            hashes = inclusion_proof(index, bound, self._reader_for(bound))
            leaf = self.read_nodes([(0, index)], size=bound)[0]
            return InclusionProof(index, bound, leaf, hashes)
        # A full leaf tile: the path inside it, then the path of the tile's root, which
        # every leaf of the tile shares.
        tile = self._expanded(0, tile_index, TILE_WIDTH)
        upper = self._upper_path(0, tile_index, bound)
        return InclusionProof(index, bound, tile.node(0, pos), [*tile.siblings(pos), *upper])

    def _upper_path(self, level: int, index: int, bound: int) -> tuple[bytes, ...]:
        """The audit path of the root of full tile ``(level, index)`` in the tree ``bound``.

        That root is node ``(8(level+1), index)``. When the tile above it is full too, the
        path is the node's siblings inside that tile followed by the tile's own upper path
        (RFC 9162 PATH, level by level), so each is computed once per tile and size.
        """
        key = (bound, level, index)
        cached = self._upper.get(key)
        if cached is not None:
            return cached
        parent, pos = divmod(index, TILE_WIDTH)
        if parent < bound >> (TILE_HEIGHT * (level + 2)):
            tile = self._expanded(level + 1, parent, TILE_WIDTH)
            path = (*tile.siblings(pos), *self._upper_path(level + 1, parent, bound))
        else:
            plan = node_inclusion_nodes(TILE_HEIGHT * (level + 1), index, bound)
            path = tuple(plan.read(self._reader_for(bound)))
        if len(self._upper) >= UPPER_PATH_CACHE:
            self._upper.clear()
        self._upper[key] = path
        return path

    def inclusion_proof_by_hash(self, leaf: bytes, *, size: int | None = None) -> InclusionProof:
        bound = self._bound(size)
        return self.inclusion_proof(self.index_of(leaf, size=bound), size=bound)

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        bound = self._bound(size2)
        if not 0 <= size1 <= bound:
            raise NotFound(f"size {size1} is not at most {bound}")
        if size1 in (0, bound):
            return ConsistencyProof(size1, bound, [])
        return ConsistencyProof(
            size1, bound, consistency_proof(size1, bound, self._reader_for(bound))
        )

    def check_extends(self, earlier: SignedCheckpoint, latest: SignedCheckpoint | None) -> None:
        """Raise unless this log at ``latest`` is the log of ``earlier``, grown or not:
        :class:`Corruption` with code ``log-rolled-back`` when it is behind it,
        :class:`InvalidProof` when no consistency proof leads from it (a fork). The proof
        is computed from the tiles, not taken from anyone."""
        size = 0 if latest is None else latest.size
        if size < earlier.size:
            raise Corruption(
                f"the log went back from size {earlier.size} to {size}: it was rolled back",
                code=ROLLED_BACK,
            )
        assert latest is not None
        self.consistency_proof(earlier.size, size).verify(earlier.root, latest.root)

    def root(self, size: int) -> bytes:
        """The root of the tree of ``size`` leaves (any size up to the latest checkpoint)."""
        bound = self._bound(size)
        border = CompactRange.border_nodes(bound)
        return CompactRange(bound, self.read_nodes(border, size=bound)).root()

    # -- audit --------------------------------------------------------------------------------

    def audit(self, *, progress: Progress | None = None) -> SignedCheckpoint | None:
        """Verify the whole log from scratch against its signed checkpoint.

        Rehashes every entry, checks every level-0 and higher tile (and every stored tile
        interior) against the hashes the entries imply, and the resulting root against the
        checkpoint. Raises :class:`Corruption` at the first disagreement.

        Each full entry bundle is hashed once: its leaf hashes are compared with the
        level-0 tile in one comparison, its inner levels computed once serve both the
        stored interior's check and the bundle's level-8 node, and only those level-8 nodes
        go on into a compact range (the tree above the tiles). The last, partial bundle
        goes through a compact range of leaves.
        """
        latest = self.checkpoint()
        if latest is None:
            return None
        size = latest.size
        stored = self.store.read_checkpoint()
        if stored is not None and not 0 <= stored.indexed <= stored.size:
            raise Corruption(f"leaf-index watermark {stored.indexed} is outside the tree")
        # Read after the checkpoint: a live store may have committed (and indexed) more since.
        indexed = 0 if stored is None else min(stored.indexed, size)
        leaf_index = LeafIndexCheck(self.store, indexed)
        full = size - size % TILE_WIDTH
        upper = CompactRange(0, [])  # over the level-8 nodes: Merkle level 8 + its level
        for start in range(0, full, TILE_WIDTH):
            index = start // TILE_WIDTH
            hashes = self._audit_bundle(index, TILE_WIDTH, size)
            leaf_index.add(start, hashes)
            levels = inner_levels(hashes)
            self._check_interior(0, index, b"".join(levels))
            top = levels[-1]
            upper, runs = upper.append([node_hash(top[:HASH_SIZE], top[HASH_SIZE:])])
            self._audit_runs(runs, size, base_level=TILE_HEIGHT)
            if progress is not None:
                progress(start + TILE_WIDTH, size)
        tree = CompactRange(full, upper.hashes)
        if size > full:
            index = full // TILE_WIDTH
            hashes = self._audit_bundle(index, size - full, size)
            leaf_index.add(full, hashes)
            tree, _ = tree.append(
                [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
            )
            if progress is not None:
                progress(size, size)
        leaf_index.flush()
        if tree.root() != latest.root:
            raise Corruption("the entries do not hash to the signed checkpoint's root")
        return latest

    def _audit_bundle(self, index: int, width: int, size: int) -> bytes:
        """Entry bundle ``index``'s leaf hashes, checked against the level-0 tile."""
        entries = bundle_entries(self.tile(ENTRY_BUNDLES, index, width, size=size))
        if len(entries) != width:
            raise Corruption(f"entry bundle {index} holds {len(entries)} entries, not {width}")
        hashes = b"".join(leaf_hashes(entries))
        stored = self.tile(0, index, width, size=size)
        if stored != hashes:
            pos = next(
                i
                for i in range(width)
                if stored[i * HASH_SIZE : (i + 1) * HASH_SIZE]
                != hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE]
            )
            raise Corruption(
                f"tile 0/{index} position {pos} does not match the entries (first bad leaf "
                f"near index {index * TILE_WIDTH + pos})"
            )
        return hashes

    def _audit_runs(self, runs: Sequence[NodeRun], size: int, *, base_level: int) -> None:
        """New nodes of the tree above the tiles, checked against the stored hash tiles."""
        for run in runs:
            level = base_level + run.level
            if level % TILE_HEIGHT:
                continue
            tile_level = level // TILE_HEIGHT
            for offset, expected in enumerate(run.hashes):
                node = run.start + offset
                t_index, pos = divmod(node, TILE_WIDTH)
                if pos == 0 or offset == 0:
                    stored = self.tile(
                        tile_level, t_index, tile_width(tile_level, t_index, size), size=size
                    )
                if stored[pos * HASH_SIZE : (pos + 1) * HASH_SIZE] != expected:
                    near = node << (TILE_HEIGHT * tile_level)
                    raise Corruption(
                        f"{tile_name(tile_level, t_index)} position {pos} does not match the "
                        f"entries (first bad leaf near index {near})"
                    )
                if pos == TILE_WIDTH - 1:
                    self._check_interior(tile_level, t_index)

    def _check_interior(self, level: int, index: int, interior: bytes | None = None) -> None:
        """A full tile's stored interior, if any, must be ``interior`` (computed by us from
        the entries) or, when not given, what the tile's stored hashes imply."""
        parts = self.store.read_parts(level, index)
        full = [p for p in parts if p.start == 0 and p.count == TILE_WIDTH]
        if not full or not full[0].interior:
            return
        if full[0].interior != (tile_interior(full[0].data) if interior is None else interior):
            raise Corruption(
                f"{tile_name(level, index)}: stored inner nodes do not match its hashes"
            )


class LeafIndexCheck:
    """That the store's leaf index holds the entries added below its watermark (the audit
    adds every one, a sequencer's start the last): the sequencer takes an entry it finds
    neither there nor above it for a new one, and a registration sent again would be given
    a second index. Looked up in batches of :data:`LEAF_CHECK_BATCH` (an index run is read
    once per batch, not once per tile)."""

    def __init__(self, store: LogStore, indexed: int) -> None:
        self.store = store
        self.indexed = indexed
        self.first = 0
        self.leaves: list[bytes] = []

    def add(self, first: int, hashes: bytes) -> None:
        count = min(len(hashes) // HASH_SIZE, self.indexed - first)
        if count <= 0:
            return
        if not self.leaves:
            self.first = first
        self.leaves += [hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(count)]
        if len(self.leaves) >= LEAF_CHECK_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.leaves:
            return
        found = self.store.lookup_leaves(self.leaves)
        for offset, leaf in enumerate(self.leaves):
            if self.first + offset not in found.get(leaf, ()):
                raise Corruption(
                    f"the leaf index does not hold entry {self.first + offset}, below its "
                    f"watermark {self.indexed}: a registration sent again would get a second "
                    "index"
                )
        self.leaves = []
