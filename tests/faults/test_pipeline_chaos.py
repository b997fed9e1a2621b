"""The sequencer's pipeline under random store failures, with repeats everywhere.

Batches are prepared on top of uncommitted ones while commits fail at random points
(nothing written, written but no checkpoint, written and then reported failed) and leaf-index
lookups fail now and then. Whatever the order, an entry is given one index only, two entries
never share one, every acknowledged entry is where it was acknowledged, and the log verifies
from scratch.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Collection

import pytest

from sealtrail.errors import Error
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.merkle import leaf_hash
from sealtrail.storage import Commit, MemoryStore
from tests.conftest import reader_for

#: Small batches and a small leaf-index window: the pipeline fills, the index is flushed
#: often, and later batches ask it.
CONFIG = SequencerConfig(max_batch=23, max_delay=0, max_pending=4096, index_every=40)
POOL = [f"entry {i}".encode() for i in range(400)]
COMMIT_FAULTS = ("before_commit", "after_parts", "after_checkpoint")


class ChaosStore(MemoryStore):
    """Commits take a little while (so that batches queue up behind them) and fail at
    random; so do some leaf-index lookups."""

    def __init__(self, seed: int, rate: float) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.rate = rate

    def _roll(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def commit(self, commit: Commit) -> None:
        time.sleep(self._roll() * 0.002)
        if self._roll() < self.rate:
            self.faults.arm(COMMIT_FAULTS[int(self._roll() * len(COMMIT_FAULTS))])
        super().commit(commit)

    def lookup_leaves(self, leaf_hashes: Collection[bytes]) -> dict[bytes, list[int]]:
        if self._roll() < self.rate / 2:
            self.faults.arm("lookup_leaves")
        return super().lookup_leaves(leaf_hashes)


async def _chaos(store: ChaosStore, signer: CheckpointSigner, seed: int) -> dict[bytes, int]:
    """Rounds of concurrent groups drawn from POOL (repeats within and across groups);
    every answer must agree with every other. Returns entry -> index as acknowledged."""
    rng = random.Random(seed)
    acked: dict[bytes, int] = {}
    async with Sequencer(store, signer=signer, config=CONFIG) as seq:
        for _ in range(12):
            groups = [rng.choices(POOL, k=rng.randint(1, 60)) for _ in range(rng.randint(2, 8))]
            results = await asyncio.gather(
                *(seq.add_many(g) for g in groups), return_exceptions=True
            )
            for group, result in zip(groups, results, strict=True):
                if isinstance(result, BaseException):
                    assert isinstance(result, Error), repr(result)
                    continue
                for entry, index in zip(group, result, strict=True):
                    assert acked.setdefault(entry, index) == index, "an entry got two indexes"
        # Calm again: every entry once more, all answered, each where it was before.
        store.rate = 0.0
        store.faults.disarm()
        final = await seq.add_many(POOL)
    for entry, index in zip(POOL, final, strict=True):
        assert acked.setdefault(entry, index) == index, "an acknowledged entry moved"
    return acked


@pytest.mark.parametrize("seed", range(6))
def test_no_entry_gets_two_indexes_whatever_fails(signer: CheckpointSigner, seed: int) -> None:
    store = ChaosStore(seed, rate=0.25)
    acked = asyncio.run(_chaos(store, signer, seed))
    assert store.faults.fired, "no fault fired: the test tests nothing"
    # One entry per index, one index per entry, and nothing else in the log.
    assert sorted(acked.values()) == list(range(len(POOL)))
    reader = reader_for(store, signer)
    assert reader.size() == len(POOL)
    assert reader.audit() is not None
    by_index = {index: entry for entry, index in acked.items()}
    leaves = reader.leaf_hashes(0, len(POOL), size=len(POOL))
    assert leaves == [leaf_hash(by_index[i]) for i in range(len(POOL))]
