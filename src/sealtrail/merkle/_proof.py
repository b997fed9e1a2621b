"""Inclusion and consistency proof generation (RFC 9162 §2.1.3.1, §2.1.4.1).

Storage is not known here: a proof is first *planned* as a list of perfect-subtree node ids
(:class:`ProofPlan`), the caller reads those hashes in one round trip, and the plan assembles
them into the proof. A proof element that covers a non-perfect subtree at the right edge of
the tree is planned as that subtree's compact-range decomposition and folded on assembly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._compact import NodeID, check_size, fold_right
from ._errors import ReaderError, RequestError
from ._hash import HASH_SIZE

__all__ = [
    "NodeReader",
    "ProofPlan",
    "consistency_nodes",
    "consistency_proof",
    "inclusion_nodes",
    "inclusion_proof",
]

NodeReader = Callable[[Sequence[NodeID]], Sequence[bytes]]
"""Returns the hashes of the given perfect-subtree nodes, in request order."""


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """The perfect nodes a proof needs, and how to fold them into proof elements.

    ``groups[i]`` consecutive entries of ``nodes`` make proof element ``i``: one node for a
    perfect subtree, or the largest-first decomposition of a right-edge subtree.
    """

    nodes: tuple[NodeID, ...]
    groups: tuple[int, ...]

    def assemble(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Build the proof from the hashes of :attr:`nodes`, given in the same order."""
        if len(hashes) != len(self.nodes):
            raise ReaderError(f"expected {len(self.nodes)} node hashes, got {len(hashes)}")
        if set(map(len, hashes)) - {HASH_SIZE}:  # one pass in C
            node = next(n for n, h in zip(self.nodes, hashes, strict=True) if len(h) != HASH_SIZE)
            raise ReaderError(f"hash of node {node} is not {HASH_SIZE} bytes")
        if len(self.groups) == len(hashes):  # every element a single perfect node
            return list(hashes)
        proof: list[bytes] = []
        pos = 0
        for n in self.groups:
            proof.append(hashes[pos] if n == 1 else fold_right(hashes[pos : pos + n]))
            pos += n
        return proof

    def read(self, read_nodes: NodeReader) -> list[bytes]:
        """Read :attr:`nodes` with one call to ``read_nodes`` (none if empty) and assemble."""
        if not self.nodes:
            return []
        return self.assemble(read_nodes(self.nodes))


def _subtree_nodes(level: int, index: int, size: int) -> list[NodeID]:
    """Perfect nodes making up node ``(level, index)`` of a tree of ``size`` leaves.

    The node must start inside the tree. If it ends inside too it is perfect and returned
    alone; otherwise it is cut at ``size`` and returned as its decomposition, largest first.
    """
    begin = index << level
    end = (index + 1) << level
    if end <= size:
        return [(level, index)]
    out: list[NodeID] = []
    # [begin, size) with begin aligned to 2**level and size - begin < 2**level: one perfect
    # node per set bit of the length, highest first, each aligned by construction.
    pos = begin
    rest = size - begin
    for lvl in reversed(range(rest.bit_length())):
        if rest >> lvl & 1:
            out.append((lvl, pos >> lvl))
            pos += 1 << lvl
    return out


def _path_plan(level: int, index: int, size: int) -> tuple[list[NodeID], list[int]]:
    """Plan the audit path of perfect node ``(level, index)`` up to the root of ``size``."""
    nodes: list[NodeID] = []
    groups: list[int] = []
    last = (size - 1) >> level  # index of the rightmost (possibly partial) node at `level`
    # Below `inner` levels the paths to `index` and to `last` differ: siblings exist at
    # every level, and only the one at the top of that stretch can reach past `size`.
    inner = (index ^ last).bit_length()
    for j in range(inner):
        sibling = (index >> j) ^ 1
        if (sibling + 1) << (level + j) <= size:  # the common case: a perfect sibling
            nodes.append((level + j, sibling))
            groups.append(1)
        else:
            part = _subtree_nodes(level + j, sibling, size)
            nodes.extend(part)
            groups.append(len(part))
    # From `inner` up, the path runs along the right border: a sibling exists exactly where
    # the path node is a right child, and it is then a perfect left subtree.
    top = index >> inner
    j = inner
    while top:
        if top & 1:
            nodes.append((level + j, (index >> j) - 1))
            groups.append(1)
        top >>= 1
        j += 1
    return nodes, groups


def inclusion_nodes(index: int, size: int) -> ProofPlan:
    """Plan the inclusion proof of leaf ``index`` in a tree of ``size`` leaves."""
    check_size("size", size)
    if not 0 <= index < size:
        raise RequestError(f"leaf index {index} is not in a tree of size {size}")
    nodes, groups = _path_plan(0, index, size)
    return ProofPlan(tuple(nodes), tuple(groups))


def node_inclusion_nodes(level: int, index: int, size: int) -> ProofPlan:
    """Plan the audit path of the perfect node ``(level, index)`` up to the root of ``size``.

    For a leaf inside a perfect subtree, its inclusion proof is its path inside the subtree
    followed by this path of the subtree's root (RFC 9162 §2.1.3.1, PATH, applied level by
    level), so the upper part can be shared by every leaf under the node.
    """
    check_size("size", size)
    if level < 0 or index < 0 or (index + 1) << level > size:
        raise RequestError(f"node {level}/{index} is not a perfect node of a tree of size {size}")
    nodes, groups = _path_plan(level, index, size)
    return ProofPlan(tuple(nodes), tuple(groups))


def consistency_nodes(size1: int, size2: int) -> ProofPlan:
    """Plan the consistency proof from a tree of ``size1`` leaves to one of ``size2``.

    ``size1 == 0`` is refused: nothing is provable about the empty tree.
    """
    check_size("size1", size1)
    check_size("size2", size2)
    if size1 == 0:
        raise RequestError("no consistency proof exists from the empty tree (size1 == 0)")
    if size1 > size2:
        raise RequestError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == size2:
        return ProofPlan((), ())
    # The largest perfect subtree ending at size1; its hash is the first proof element
    # unless it is the whole old tree (size1 a power of two), whose root the verifier has.
    level = (size1 & -size1).bit_length() - 1
    index = (size1 >> level) - 1
    nodes, groups = _path_plan(level, index, size2)
    if index:
        nodes.insert(0, (level, index))
        groups.insert(0, 1)
    return ProofPlan(tuple(nodes), tuple(groups))


def inclusion_proof(index: int, size: int, read_nodes: NodeReader) -> list[bytes]:
    """Return the RFC 9162 inclusion proof of leaf ``index`` in a tree of ``size`` leaves."""
    return inclusion_nodes(index, size).read(read_nodes)


def consistency_proof(size1: int, size2: int, read_nodes: NodeReader) -> list[bytes]:
    """Return the RFC 9162 consistency proof from tree size ``size1`` to ``size2``."""
    return consistency_nodes(size1, size2).read(read_nodes)
