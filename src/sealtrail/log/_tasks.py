"""Stopping background tasks without losing the stopper's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and return once it has ended; raise what it failed with, if anything
    but its cancellation.

    Waiting with ``asyncio.wait`` rather than awaiting the task under a suppressed
    ``CancelledError``: if the caller is itself cancelled meanwhile, that cancellation
    reaches the task it is waiting on first, and ends as the task's ``CancelledError`` —
    suppressing it would leave the caller running on as if it had never been cancelled
    (a ``close()`` that cancels a loop stopping its own helper would wait forever).
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()
