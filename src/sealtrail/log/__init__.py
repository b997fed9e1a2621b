"""The verifiable log: sequencer (write side) and reader (read side) over a LogStore.

Safe recipes first: :class:`Sequencer` to append, :class:`LogReader` to read and prove,
:func:`verify_checkpoint` and the proofs' ``verify`` methods to check what a log says.
The raw Merkle operations live in :mod:`sealtrail.merkle` (hazmat).
"""

from __future__ import annotations

from ._checkpoints import (
    MAX_ORIGIN_SIZE,
    CheckpointSigner,
    SignedCheckpoint,
    check_origin,
    verify_checkpoint,
)
from ._export import Exported, export_tiles, write_public_file
from ._follower import LogFollower
from ._reader import ROLLED_BACK, ConsistencyProof, InclusionProof, LogReader, Progress
from ._sequencer import SWITCH_INTERVAL, Sequencer, SequencerConfig
from ._shared import SHARED_MAX_DELAY, Backlog, RoleStore, SharedSequencer
from ._tasks import cancel_and_wait
from ._tiles import MAX_ENTRY_SIZE, bundle_entries, encode_bundle, tile_width

__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_ORIGIN_SIZE",
    "ROLLED_BACK",
    "SHARED_MAX_DELAY",
    "SWITCH_INTERVAL",
    "Backlog",
    "CheckpointSigner",
    "ConsistencyProof",
    "Exported",
    "InclusionProof",
    "LogFollower",
    "LogReader",
    "Progress",
    "RoleStore",
    "Sequencer",
    "SequencerConfig",
    "SharedSequencer",
    "SignedCheckpoint",
    "bundle_entries",
    "cancel_and_wait",
    "check_origin",
    "encode_bundle",
    "export_tiles",
    "tile_width",
    "verify_checkpoint",
    "write_public_file",
]
