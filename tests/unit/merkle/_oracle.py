"""Independent oracles for the Merkle tests, written from the RFC 9162 §2.1 definitions.

Deliberately naive (recursion over leaf lists, no compact ranges, no bit tricks) so that it
shares no code or structure with ``sealtrail.merkle``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence


def h_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def h_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than n (n > 1), by counting."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH over leaf *hashes*."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = split_point(n)
    return h_node(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = split_point(n)
    if m <= k:
        return [*subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def full_nodes(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree of the tree: (level, index) -> MTH of its leaves."""
    out: dict[tuple[int, int], bytes] = {}
    level = 0
    while (1 << level) <= len(leaves):
        w = 1 << level
        for i in range(len(leaves) // w):
            out[(level, i)] = mth(leaves[i * w : (i + 1) * w])
        level += 1
    return out


class SparseTree:
    """A consistent, lazily hashed tree of up to 2**63 leaves.

    Leaves inside the given windows are distinct; all others repeat with period 2**PERIOD,
    so any aligned subtree of level >= PERIOD outside the windows has a per-level constant
    hash. Node hashes are computed by plain recursion on demand, with memoisation.
    """

    PERIOD = 6

    def __init__(self, windows: list[tuple[int, int]]) -> None:
        self.windows = windows
        self._memo: dict[tuple[int, int], bytes] = {}
        self._periodic: dict[int, bytes] = {}

    def leaf(self, i: int) -> bytes:
        for lo, hi in self.windows:
            if lo <= i < hi:
                return h_leaf(b"distinct-" + str(i).encode())
        return h_leaf(b"periodic-" + str(i % (1 << self.PERIOD)).encode())

    def periodic(self, level: int) -> bytes:
        if level not in self._periodic:
            if level == self.PERIOD:
                block = [h_leaf(b"periodic-" + str(i).encode()) for i in range(1 << level)]
                self._periodic[level] = mth(block)
            else:
                p = self.periodic(level - 1)
                self._periodic[level] = h_node(p, p)
        return self._periodic[level]

    def node(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree (level, index)."""
        key = (level, index)
        if key not in self._memo:
            lo, hi = index << level, (index + 1) << level
            if level == 0:
                value = self.leaf(index)
            elif level >= self.PERIOD and not any(
                lo < whi and wlo < hi for wlo, whi in self.windows
            ):
                value = self.periodic(level)
            else:
                value = h_node(self.node(level - 1, 2 * index), self.node(level - 1, 2 * index + 1))
            self._memo[key] = value
        return self._memo[key]

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi) by the RFC split, using perfect nodes where aligned."""
        n = hi - lo
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n & (n - 1) == 0 and lo % n == 0:
            return self.node(n.bit_length() - 1, lo // n)
        k = split_point(n)
        return h_node(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """RFC PATH for absolute leaf m within leaves [lo, hi)."""
        n = hi - lo
        if n == 1:
            return []
        k = split_point(n)
        if m < lo + k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        """RFC SUBPROOF with m counted from lo, within leaves [lo, hi)."""
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = split_point(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


class RecordingReader:
    """A node reader over a node function that records calls and checks every id is perfect."""

    def __init__(self, node: Callable[[int, int], bytes], size: int) -> None:
        self.node = node
        self.size = size
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, ids: Sequence[tuple[int, int]]) -> list[bytes]:
        ids = list(ids)
        self.calls.append(ids)
        for level, index in ids:
            assert level >= 0
            assert index >= 0
            assert (index + 1) << level <= self.size, f"node {(level, index)} is not perfect"
        return [self.node(level, index) for level, index in ids]


def dict_node(nodes: dict[tuple[int, int], bytes]) -> Callable[[int, int], bytes]:
    return lambda level, index: nodes[(level, index)]


# --- symbolic trees: which (index, size) pairs a proof cannot tell apart ----------------------
#
# RFC 9162 verification uses index and sizes only to decide, level by level, how to combine
# the proof hashes. Two parameter sets with the same combination pattern accept the same
# proofs (the root still commits to the tree). `*_shape` computes that pattern from the RFC
# definitions over symbolic leaves, so a flipped size may be accepted only if shapes match.

Sym = object


def _sym_mth(lo: int, hi: int) -> Sym:
    n = hi - lo
    if n == 1:
        return ("L", lo)
    k = split_point(n)
    return (_sym_mth(lo, lo + k), _sym_mth(lo + k, hi))


def _sym_path(m: int, lo: int, hi: int) -> list[Sym]:
    n = hi - lo
    if n == 1:
        return []
    k = split_point(n)
    if m < lo + k:
        return [*_sym_path(m, lo, lo + k), _sym_mth(lo + k, hi)]
    return [*_sym_path(m, lo + k, hi), _sym_mth(lo, lo + k)]


def _sym_subproof(m: int, lo: int, hi: int, b: bool) -> list[Sym]:
    n = hi - lo
    if m == n:
        return [] if b else [_sym_mth(lo, hi)]
    k = split_point(n)
    if m <= k:
        return [*_sym_subproof(m, lo, lo + k, b), _sym_mth(lo + k, hi)]
    return [*_sym_subproof(m - k, lo + k, hi, False), _sym_mth(lo, lo + k)]


def _tokenize(expr: Sym, table: dict[Sym, str]) -> Sym:
    if expr in table:
        return table[expr]
    if isinstance(expr, tuple) and len(expr) == 2 and isinstance(expr[0], tuple):
        return (_tokenize(expr[0], table), _tokenize(expr[1], table))
    return expr


def inclusion_shape(index: int, size: int) -> Sym:
    table: dict[Sym, str] = {("L", index): "leaf"}
    for i, p in enumerate(_sym_path(index, 0, size)):
        table[p] = f"p{i}"
    return _tokenize(_sym_mth(0, size), table)


def consistency_shape(size1: int, size2: int) -> Sym:
    table: dict[Sym, str] = {}
    if size1 & (size1 - 1) == 0:
        table[_sym_mth(0, size1)] = "root1"
    for i, p in enumerate(_sym_subproof(size1, 0, size2, True)):
        table[p] = f"p{i}"
    return (_tokenize(_sym_mth(0, size1), table), _tokenize(_sym_mth(0, size2), table))
