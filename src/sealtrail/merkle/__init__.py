"""Pure RFC 9162 Merkle tree core: hashing, compact ranges, proofs, tiles, checkpoint text.

Bytes in, bytes out: no files, databases, clocks, randomness or logging, and nothing
imported from the rest of Sealtrail. Storage is reached only through a :data:`NodeReader`
the caller passes in. This is the hazmat layer; :mod:`sealtrail.log` holds the recipes.
"""

from __future__ import annotations

from ._checkpoint import MAX_CHECKPOINT_BYTES, MAX_EXTENSION_LINES, Checkpoint
from ._compact import CompactRange, NodeID, NodeRun
from ._errors import (
    CheckpointFormatError,
    ConsistencyProofError,
    InclusionProofError,
    MerkleError,
    ProofError,
    ReaderError,
    RequestError,
)
from ._hash import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE, leaf_hash, leaf_hashes, node_hash
from ._proof import (
    NodeReader,
    ProofPlan,
    consistency_nodes,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    node_inclusion_nodes,
)
from ._tiles import (
    MAX_TILE_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileRead,
    border_tile_reads,
    compact_range_from_tiles,
    entries_path,
    node_from_tile_hashes,
    parse_tile_path,
    tile_for_node,
    tile_path,
    tiles_for_size,
)
from ._verify import (
    consistency_proof_length,
    inclusion_proof_length,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_CHECKPOINT_BYTES",
    "MAX_EXTENSION_LINES",
    "MAX_TILE_LEVEL",
    "MAX_TREE_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Checkpoint",
    "CheckpointFormatError",
    "CompactRange",
    "ConsistencyProofError",
    "InclusionProofError",
    "MerkleError",
    "NodeID",
    "NodeReader",
    "NodeRun",
    "ProofError",
    "ProofPlan",
    "ReaderError",
    "RequestError",
    "TileRead",
    "border_tile_reads",
    "compact_range_from_tiles",
    "consistency_nodes",
    "consistency_proof",
    "consistency_proof_length",
    "entries_path",
    "inclusion_nodes",
    "inclusion_proof",
    "inclusion_proof_length",
    "leaf_hash",
    "leaf_hashes",
    "node_from_tile_hashes",
    "node_hash",
    "node_inclusion_nodes",
    "parse_tile_path",
    "root_from_inclusion_proof",
    "tile_for_node",
    "tile_path",
    "tiles_for_size",
    "verify_consistency",
    "verify_inclusion",
]
