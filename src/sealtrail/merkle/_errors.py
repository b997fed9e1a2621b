"""Exceptions of the pure Merkle core.

::

    MerkleError                   base of everything raised here
    ├── ProofError                a proof does not verify
    │   ├── InclusionProofError
    │   └── ConsistencyProofError
    ├── RequestError              bad index, size, node or tile coordinates
    ├── ReaderError               a node reader returned the wrong number or size of hashes
    └── CheckpointFormatError     checkpoint text (or field) is not well-formed

This package imports nothing else of Sealtrail; the layers above translate these.
"""

from __future__ import annotations

__all__ = [
    "CheckpointFormatError",
    "ConsistencyProofError",
    "InclusionProofError",
    "MerkleError",
    "ProofError",
    "ReaderError",
    "RequestError",
]


class MerkleError(Exception):
    """Base of every error raised by :mod:`sealtrail.merkle`."""


class ProofError(MerkleError):
    """A proof does not verify against the given root(s)."""


class InclusionProofError(ProofError):
    """An inclusion proof does not verify."""


class ConsistencyProofError(ProofError):
    """A consistency proof does not verify."""


class RequestError(MerkleError):
    """Arguments describe no valid node, tile, proof or tree size."""


class ReaderError(MerkleError):
    """A node reader returned the wrong number of hashes, or hashes of the wrong size."""


class CheckpointFormatError(MerkleError):
    """Checkpoint text, or a field of a checkpoint, is not well-formed."""
