"""The newest checkpoint a server saw is handed over while the log grows, not only at stop:
a crash loses at most a period of it. A failure to keep it never stops the service."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from sealtrail.errors import ConfigError
from sealtrail.log import CheckpointSigner, SignedCheckpoint
from sealtrail.service import _runtime


@dataclass
class _Reader:
    latest: SignedCheckpoint | None = None


def test_the_newest_checkpoint_is_handed_over_as_the_log_grows(
    signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_runtime, "SEEN_PERIOD", 0.01)
    told: list[int] = []
    reader = _Reader()

    async def go() -> None:
        seen = _runtime._Seen(lambda c: told.append(c.size), reader)
        seen.start()
        for size in (1, 2, 3):
            reader.latest = signer.sign(size=size, root=bytes(32))
            for _ in range(500):
                await asyncio.sleep(0.01)
                if told and told[-1] == size:
                    break
        await asyncio.sleep(0.05)  # no growth: nothing handed over again
        await seen.close()
        reader.latest = signer.sign(size=4, root=bytes(32))
        await seen.tell()  # as the server stops

    asyncio.run(go())
    assert told == [1, 2, 3, 4]


def test_a_failure_to_keep_it_is_logged_and_tried_again(
    signer: CheckpointSigner, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def full_disk(checkpoint: SignedCheckpoint) -> None:
        calls.append(checkpoint.size)
        if len(calls) == 1:
            raise ConfigError("cannot write seen-checkpoint: No space left on device")

    reader = _Reader(signer.sign(size=7, root=bytes(32)))
    seen = _runtime._Seen(full_disk, reader)
    asyncio.run(seen.tell())
    asyncio.run(seen.tell())
    assert calls == [7, 7]
    assert "cannot keep the newest checkpoint" in caplog.text
