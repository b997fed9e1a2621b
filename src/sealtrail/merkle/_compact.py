"""Compact ranges: the right border of a Merkle tree, and batch appends to it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import RequestError
from ._hash import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE

__all__ = ["CompactRange", "NodeID", "NodeRun", "check_size", "fold_right"]

NodeID = tuple[int, int]
"""``(level, index)``: the perfect subtree over leaves [index * 2**level, (index+1) * 2**level)."""

_sha256 = hashlib.sha256
# One bytes-formatting call builds the whole 65-byte node preimage (0x01 || left || right).
_node_preimage = b"\x01%b%b".__mod__


def check_size(name: str, value: int) -> None:
    """Raise :class:`RequestError` unless ``0 <= value <= MAX_TREE_SIZE``."""
    if not 0 <= value <= MAX_TREE_SIZE:
        raise RequestError(f"{name} must be in 0..2**64-1, got {value}")


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash a non-empty run of adjacent subtrees, largest (leftmost) first, into one node.

    This is the RFC 9162 MTH of the leaves they cover, provided each subtree is at least
    as large as everything to its right (true for every compact-range decomposition).
    """
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = _sha256(_node_preimage((h, acc))).digest()
    return acc


@dataclass(frozen=True, slots=True)
class NodeRun:
    """Consecutive new full nodes at one level: indices ``start .. start+len(hashes)-1``."""

    level: int
    start: int
    hashes: tuple[bytes, ...]


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    # set(map(len, ...)) runs in C: one pass, no per-hash Python frame.
    lengths = set(map(len, hashes))
    if lengths - {HASH_SIZE}:
        raise RequestError(f"{what} must all be {HASH_SIZE} bytes, got lengths {sorted(lengths)}")


class CompactRange:
    """The perfect subtrees of a tree of ``size`` leaves, largest (leftmost) first.

    Bit ``l`` of ``size`` set <=> the range holds node ``(l, (size >> l) - 1)``. This is all
    the state needed to append leaves and compute the root. Instances are immutable.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int, hashes: Sequence[bytes]) -> None:
        check_size("size", size)
        if len(hashes) != size.bit_count():
            raise RequestError(
                f"a compact range of size {size} has {size.bit_count()} hashes, got {len(hashes)}"
            )
        _check_hashes("compact range hashes", hashes)
        self._size = size
        self._hashes = tuple(hashes)

    @staticmethod
    def border_nodes(size: int) -> list[NodeID]:
        """Node ids a compact range of ``size`` consists of, largest (leftmost) first."""
        check_size("size", size)
        return [
            (lvl, (size >> lvl) - 1)
            for lvl in reversed(range(size.bit_length()))
            if size >> lvl & 1
        ]

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Hashes of :meth:`border_nodes`, in the same order."""
        return self._hashes

    def root(self) -> bytes:
        """RFC 9162 Merkle Tree Hash of the whole tree (:data:`EMPTY_ROOT` when empty)."""
        if not self._hashes:
            return EMPTY_ROOT
        return fold_right(self._hashes)

    def append(self, leaf_hashes: Sequence[bytes]) -> tuple[CompactRange, list[NodeRun]]:
        """Append leaves; return the new range and the new full nodes, one run per level.

        Runs are ordered by level from 0 upward; the level-0 run is ``leaf_hashes``. A level
        with no new node ends the list (no higher level can have one either).
        """
        count = len(leaf_hashes)
        old = self._size
        new = old + count
        check_size("new size", new)
        if count == 0:
            return self, []
        _check_hashes("leaf hashes", leaf_hashes)
        # Border hash by level, for the old range.
        by_level: dict[int, bytes] = {
            lvl: h for (lvl, _), h in zip(CompactRange.border_nodes(old), self._hashes, strict=True)
        }
        sha = _sha256
        fmt = _node_preimage
        runs: list[NodeRun] = []
        border: dict[int, bytes] = {}
        level = 0
        start = old
        run: list[bytes] = list(leaf_hashes)
        while run:
            runs.append(NodeRun(level, start, tuple(run)))
            # Invariant: `row` holds consecutive level-`level` nodes starting at an even index
            # and ending at index (new >> level) - 1.
            row = [by_level[level], *run] if start & 1 else run
            if len(row) & 1:
                # Odd length <=> bit `level` of `new` is set: the last node is a border node.
                border[level] = row[-1]
            pairs = iter(row)
            run = [sha(fmt(lr)).digest() for lr in zip(pairs, pairs, strict=False)]
            start >>= 1
            level += 1
        # Above the last level reached, nothing changed: (new >> level) == (old >> level).
        for lvl, h in by_level.items():
            if lvl >= level:
                border[lvl] = h
        hashes = [border[lvl] for lvl, _ in CompactRange.border_nodes(new)]
        result = CompactRange.__new__(CompactRange)
        result._size = new
        result._hashes = tuple(hashes)
        return result, runs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash((self._size, self._hashes))

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"
