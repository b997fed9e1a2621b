"""Reads of what other processes stored, on demand, shared by the callers waiting for one.

A caller asks at the moment its lookup failed and needs a read that began at or after that
moment: such a read holds everything stored before the lookup. A flood of such callers
(unknown credentials, refusals on organization records) costs one read per spacing at most,
not one each (``TransparencyService.refresh_orgs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable

from sealtrail.errors import RetryLater

__all__ = ["Refresher"]


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a read's failure as seen: its callers were answered with it, or went away."""
    if not task.cancelled():
        task.exception()


class Refresher:
    """Runs ``read`` for the callers that ask for one, coalesced.

    A caller asks at a moment (``asked``, the event loop's clock) and returns once a read
    that began at or after it has ended. A read running that began before is waited out
    (it may have missed what the caller looks for) and the next one is the caller's; every
    caller waiting at once shares that next read, and a read is launched ``spacing``
    seconds after the previous one at the earliest. A read begins once it holds ``lock``
    (when given): a read waiting for it still serves whoever asks meanwhile.

    A read runs as a task of its own: a caller cancelled leaves it running for the others.
    A read that fails raises its error to every caller that shared it; the next caller
    launches a new one. A read itself cancelled serves no one: its callers take the next.
    Never ask holding ``lock``: the read waits for it.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[None]],
        *,
        spacing: float,
        lock: asyncio.Lock | None = None,
        name: str = "sealtrail-refresh",
    ) -> None:
        self._read = read
        self._spacing = spacing
        self._lock = lock
        self._name = name
        #: When the latest read was launched (the loop's clock), and that read.
        self._launched = -math.inf
        self._running: asyncio.Task[None] | None = None
        #: When the running read began (it holds ``lock``): infinity until it has.
        self._began = math.inf
        #: Set by :meth:`close`: no read is launched from then on.
        self._closed = False

    async def after(self, asked: float | None = None) -> None:
        """Return once a read that began at or after ``asked`` (default: now) has ended;
        raises what that read raised."""
        loop = asyncio.get_running_loop()
        if asked is None:
            asked = loop.time()
        while True:
            if self._closed:
                raise RetryLater("the service is stopping", retry_after=1.0)
            running = self._running
            if running is not None and not running.done():
                if self._began < asked:
                    await asyncio.wait([running])  # began too early: the next one
                    continue
                try:
                    await asyncio.shield(running)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if running.cancelled() and task is not None and not task.cancelling():
                        continue  # the read was cancelled, not this caller
                    raise
                return
            delay = self._launched + self._spacing - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._launched, self._began = loop.time(), math.inf
            self._running = loop.create_task(self._run(), name=self._name)
            self._running.add_done_callback(_retrieve)

    async def close(self) -> None:
        """Cancel the read running, if any, and wait for it to end; launch no more (the
        callers still waiting get :class:`~sealtrail.errors.RetryLater`). A read already in
        a worker thread finishes there, its result unused."""
        self._closed = True
        running, self._running = self._running, None
        if running is not None and not running.done():
            running.cancel()
            # Not awaited under a suppressed CancelledError: a close() itself cancelled
            # meanwhile must end as cancelled (its error, if any, is marked seen).
            await asyncio.wait([running])

    async def _run(self) -> None:
        async with self._lock or contextlib.nullcontext():
            self._began = asyncio.get_running_loop().time()
            await self._read()
