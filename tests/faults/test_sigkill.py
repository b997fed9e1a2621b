"""A real crash: a process appending to SQLite is killed with SIGKILL at random moments.

After each kill the store is reopened: every acknowledged entry is at its index, the tree
verifies from scratch against the signed checkpoint, and no index is ever given to two
entries across all rounds.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealtrail.keys import Ed25519Signer, write_private_key
from sealtrail.log import CheckpointSigner, LogReader, Sequencer
from sealtrail.merkle import leaf_hash
from sealtrail.storage import SQLiteStore
from sealtrail.storage.sqlite import _Runs

CHILD = Path(__file__).with_name("_crash_child.py")
ROUNDS = 6
ORIGIN = "crash.test/log"


def _append(store: SQLiteStore, signer: CheckpointSigner, entries: list[bytes]) -> list[int]:
    async def run() -> list[int]:
        async with Sequencer(store, signer=signer) as seq:
            return await seq.add_many(entries)

    return asyncio.run(run())


@pytest.mark.slow
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    key_file = tmp_path / "log.key"
    key = Ed25519Signer.generate()
    write_private_key(key_file, key)
    signer = CheckpointSigner(origin=ORIGIN, signer=key)
    db = tmp_path / "log.db"
    rng = random.Random(20261123)
    acked: dict[int, bytes] = {}
    total_killed_mid_batch = 0
    runs_seen = 0

    for round_no in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(key_file), ORIGIN, str(round_no)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.8, 2.0))  # includes interpreter start-up
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
        lines = out.decode().splitlines()
        if lines and not out.endswith(b"\n"):
            lines.pop()  # the kill cut the last line short: it was never fully acknowledged
            total_killed_mid_batch += 1
        for line in lines:
            index_text, entry_hex = line.split(" ")
            index, entry = int(index_text), bytes.fromhex(entry_hex)
            assert acked.setdefault(index, entry) == entry, f"index {index} given twice"

        store = SQLiteStore(db)
        try:
            reader = LogReader(store, origin=ORIGIN, verifiers=[signer.verifier])
            latest = reader.audit()
            assert latest is not None or not acked
            size = latest.size if latest else 0
            assert size >= len(acked)
            entries = reader.entries(0, size)
            for index, entry in acked.items():
                assert entries[index] == entry, f"acknowledged entry {index} lost or changed"
            # The leaf index (runs merged by size) finds every entry below its watermark.
            stored = store.read_checkpoint()
            indexed = {leaf_hash(e): i for i, e in acked.items() if stored and i < stored.indexed}
            found = store.lookup_leaves(list(indexed))
            missing = [i for h, i in indexed.items() if i not in found.get(h, [])]
            assert not missing, f"the leaf index lost entries {missing[:5]}"
            runs_seen = max(runs_seen, len(_Runs(store._conn()).rows()))
            # Submitted again, acknowledged entries get their indexes back (no second index).
            again = rng.sample(sorted(acked), min(20, len(acked)))
            assert _append(store, signer, [acked[i] for i in again]) == again
        finally:
            store.close()
    assert len(acked) > 100, "the child never got going: the test proved nothing"
    assert runs_seen > 0, "the leaf index was never written: the test proved less"
