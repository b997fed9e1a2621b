"""Waiting for entries another process sequences: the log's growth, watched from its store.

When several processes share one store, only the holder of the sequencer role appends. The
others store what they accept where the holder will find it (the transparency service's
statement store) and then wait here: :class:`LogFollower` reads the store's checkpoint while
anyone waits, reads the leaf hashes of each new stretch of the log from its level-0 tiles,
and resolves the waiters whose leaves appear. A leaf that was already in the log before its
waiter arrived (a statement registered twice, or one sequenced between being stored and
being waited for) is looked up by hash once the waiter has waited :data:`LOOKUP_AFTER`.

Nothing here writes, and nothing here is trusted more than the checkpoint it read: the
reader verifies every checkpoint's signature, and an index is given out only once a verified
checkpoint covers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sealtrail.errors import Error, NotFound, RetryLater
from sealtrail.merkle import leaf_hash

from ._reader import LogReader
from ._tasks import cancel_and_wait

__all__ = ["LogFollower"]

log = logging.getLogger("sealtrail.log")

#: Seconds between looks at the checkpoint while someone waits.
FOLLOW_POLL = 0.01
#: Seconds a waiter waits before its leaves are also looked up by hash.
LOOKUP_AFTER = 1.0
#: Most entries read back at once when the follower catches up after a quiet spell; anything
#: older than that is found by the lookup.
CATCH_UP = 65_536
#: Most entries waited for at once (back-pressure, as the sequencer's queue).
MAX_WAITING = 65_536
#: Seconds after which a waiter gives up with :class:`RetryLater` (its entry may still be
#: sequenced later: the submitter asks again).
MAX_WAIT = 120.0


@dataclass(eq=False)
class _Waiter:
    leaves: list[bytes]
    future: asyncio.Future[list[int]]
    since: float
    found: dict[int, int] = field(default_factory=dict)  # position -> index
    looked_up: bool = False


class LogFollower:
    """Resolves futures with the indexes of entries as they appear in a log.

    Use ``async with LogFollower(reader) as follower`` or :meth:`start` / :meth:`close`.
    """

    def __init__(self, reader: LogReader, *, poll: float = FOLLOW_POLL) -> None:
        self.reader = reader
        self.poll = poll
        self._known = 0
        self._by_leaf: dict[bytes, list[_Waiter]] = {}
        #: Oldest first (insertion order): the ones due a lookup or a time-out are a prefix.
        self._waiters: dict[_Waiter, None] = {}
        self._waiting = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._known = await asyncio.to_thread(self.reader.size)
        self._task = asyncio.create_task(self._run(), name="sealtrail-log-follower")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for waiter in list(self._waiters):
            self._drop(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(RetryLater("the service is stopping"))

    async def __aenter__(self) -> LogFollower:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def waiting(self) -> int:
        """Entries waited for now."""
        return self._waiting

    def check_admission(self, count: int) -> None:
        """Raise :class:`RetryLater` unless ``count`` more entries may be waited for."""
        if self._task is None:
            raise RetryLater("the log follower is not running", retry_after=1.0)
        if self._waiting + count > MAX_WAITING:
            raise RetryLater(f"{self._waiting} entries are waiting to be sequenced")

    def wait_entries(self, entries: Sequence[bytes]) -> asyncio.Future[list[int]]:
        """A future of the entries' indexes, in order, once a checkpoint covers them all.

        Cancel it to stop waiting. Raises :class:`RetryLater` under back-pressure.
        """
        return self.wait_leaves([leaf_hash(e) for e in entries])

    def wait_leaves(self, leaves: Sequence[bytes]) -> asyncio.Future[list[int]]:
        """As :meth:`wait_entries`, given the entries' leaf hashes."""
        self.check_admission(len(leaves))
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if not leaves:
            future.set_result([])
            return future
        waiter = _Waiter(list(leaves), future, time.monotonic())
        self._waiters[waiter] = None
        self._waiting += len(leaves)
        for leaf in dict.fromkeys(leaves):
            self._by_leaf.setdefault(leaf, []).append(waiter)
        future.add_done_callback(lambda _: self._drop(waiter))
        self._wakeup.set()
        return future

    def _drop(self, waiter: _Waiter) -> None:
        if self._waiters.pop(waiter, False) is False:
            return
        self._waiting -= len(waiter.leaves)
        for leaf in dict.fromkeys(waiter.leaves):
            waiting = self._by_leaf.get(leaf)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(waiter)
                if not waiting:
                    del self._by_leaf[leaf]

    def _found(self, leaf: bytes, index: int) -> None:
        for waiter in list(self._by_leaf.get(leaf, ())):
            for position, mine in enumerate(waiter.leaves):
                if mine == leaf:
                    waiter.found.setdefault(position, index)
            if len(waiter.found) == len(waiter.leaves) and not waiter.future.done():
                waiter.future.set_result([waiter.found[i] for i in range(len(waiter.leaves))])

    # -- the loop ---------------------------------------------------------------------------

    def _read_growth(self, known: int) -> tuple[int, int, list[bytes]]:
        """The log's size, and the leaf hashes it holds from ``known`` on (at most
        :data:`CATCH_UP` of the newest), with where they start, the tiles their proofs need
        read into the reader's cache: one trip to a worker thread, as every return to a busy
        event loop waits its turn."""
        size = self.reader.size()
        if size <= known:
            return size, size, []
        start = max(known, size - CATCH_UP)
        hashes = self.reader.leaf_hashes(start, size, size=size)
        # The waiters' receipts are built on the event loop. Should a tile fail to read
        # here, the waiters still learn their indexes; a receipt then reads it and reports.
        with contextlib.suppress(Error):
            self.reader.warm(size)
        return size, start, hashes

    async def _run(self) -> None:
        failing = False
        while True:
            if not self._waiters:
                self._wakeup.clear()
                await self._wakeup.wait()
            try:
                await self._step()
                if failing:
                    log.info("log follower: the store answers again")
                failing = False
            except Error as exc:
                if not failing:
                    log.warning("log follower: %s (%s); retrying", exc, exc.code)
                failing = True
                await asyncio.sleep(max(self.poll, 0.5))
                continue
            await asyncio.sleep(self.poll)

    async def _step(self) -> None:
        size, start, hashes = await asyncio.to_thread(self._read_growth, self._known)
        if size > self._known:
            for offset, leaf in enumerate(hashes):
                if leaf in self._by_leaf:
                    self._found(leaf, start + offset)
            self._known = size
        now = time.monotonic()
        late: list[_Waiter] = []
        # Iterated in place: a future's done callbacks (which drop its waiter) run later.
        for waiter in self._waiters:
            age = now - waiter.since
            if age < LOOKUP_AFTER:
                break  # the rest are younger still
            if age >= MAX_WAIT:
                if not waiter.future.done():
                    waiter.future.set_exception(
                        RetryLater(f"not sequenced within {MAX_WAIT:.0f} s; ask again later")
                    )
            elif not waiter.looked_up:
                late.append(waiter)
        for waiter in late:
            waiter.looked_up = True
            for position, leaf in enumerate(waiter.leaves):
                if position in waiter.found:
                    continue
                try:
                    index = await asyncio.to_thread(self.reader.index_of, leaf, size=size)
                except NotFound:
                    continue
                self._found(leaf, index)
