"""RFC 9162 §2.1.1 hashing with SHA-256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "MAX_TREE_SIZE", "leaf_hash", "leaf_hashes", "node_hash"]

HASH_SIZE = 32
"""Size in bytes of every hash in the tree."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the empty tree: SHA-256 of the empty string."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size accepted anywhere: tree sizes are uint64 in RFC 9162 §4.1 and §4.10."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return SHA-256(0x00 || data), the hash of a leaf holding ``data``."""
    return _sha256(b"\x00" + data).digest()


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """:func:`leaf_hash` of each entry (one loop, no call per entry)."""
    sha = _sha256
    return [sha(b"\x00" + data).digest() for data in entries]


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return SHA-256(0x01 || left || right), the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()
