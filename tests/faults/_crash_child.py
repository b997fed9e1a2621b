"""Child process for test_sigkill.py: append forever, print each acknowledged index.

argv: <store path> <key file> <origin> <round>. A line "<index> <entry hex>" is printed and
flushed only after the sequencer answered, i.e. after the entry is durable.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from sealtrail.keys import load_signer
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.storage import SQLiteStore


async def main(store_path: str, key_file: str, origin: str, round_no: int) -> None:
    store = SQLiteStore(Path(store_path))
    signer = CheckpointSigner(origin=origin, signer=load_signer(Path(key_file)))
    rng = random.Random(round_no)
    # A small leaf-index run size: most commits write a run, and every few merge a tier,
    # so that kills land inside those too.
    config = SequencerConfig(max_batch=64, max_delay=0.001, index_every=50)
    n = 0
    async with Sequencer(store, signer=signer, config=config) as seq:
        while True:
            batch = [
                f"round {round_no} entry {n + i} ".encode() + rng.randbytes(rng.randrange(0, 300))
                for i in range(rng.randrange(1, 100))
            ]
            n += len(batch)
            indexes = await seq.add_many(batch)
            sys.stdout.write(
                "".join(f"{i} {e.hex()}\n" for i, e in zip(indexes, batch, strict=True))
            )
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
