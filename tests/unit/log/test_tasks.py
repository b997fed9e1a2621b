"""cancel_and_wait: a stopper's own cancellation is never taken for the stopped task's."""

from __future__ import annotations

import asyncio

import pytest

from sealtrail.log import cancel_and_wait


async def _slow_to_stop() -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(0.05)


def test_a_stopper_cancelled_while_it_waits_is_cancelled() -> None:
    async def go() -> tuple[bool, bool]:
        helper = asyncio.create_task(_slow_to_stop())
        await asyncio.sleep(0)
        went_on = False

        async def stopper() -> None:
            nonlocal went_on
            await cancel_and_wait(helper)
            went_on = True  # must not be reached: the stopper was cancelled meanwhile

        task = asyncio.create_task(stopper())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait([task])
        return task.cancelled(), went_on

    assert asyncio.run(go()) == (True, False)


def test_the_stopped_tasks_failure_is_raised_and_a_missing_task_is_fine() -> None:
    async def broken() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise ValueError("failed while stopping")

    async def go() -> None:
        await cancel_and_wait(None)
        task = asyncio.create_task(broken())
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="while stopping"):
            await cancel_and_wait(task)
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await cancel_and_wait(done)

    asyncio.run(go())
