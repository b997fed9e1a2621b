"""Sequencing a log that several processes share: one sequencer at a time, fenced.

Every process runs a :class:`SharedSequencer`. Each bids for the store's sequencer role
(:class:`~sealtrail.storage.SequencerRoles`) every :data:`ROLE_CHECK` seconds; the one that
holds it runs a :class:`Sequencer` fenced with the role's epoch, so that once the role has
passed on, nothing it prepared can be committed. Processes hand their entries over through a
*backlog*, a durable queue in the same database (the transparency service's statement
store): an entry is stored there first, then

* in the holder, submitted to its sequencer at once (the fast path);
* in every process, waited for with a :class:`LogFollower`, which resolves the entry's index
  once a checkpoint covers it — whoever sequenced it;

and the holder's *feeder* appends everything the backlog holds above its sequenced
watermark, a step at a time (entries appended twice keep their first index), except what
the holder's own sequencer was handed directly: for those it waits on their group, and
appends them itself only if that group fails. A backlog may refuse a row (the statement
store's rows carry an authentication tag, and one written behind the service has none
that verifies): the feeder appends nothing for it and moves its watermark past it. So an
entry accepted anywhere is appended by whichever process holds the role, now or after a
fail-over, and its submitter learns its index either way; a holder that dies takes nothing
with it but time.

How long the log goes without a sequencer after its holder dies: the store's release of
the role (PostgreSQL: at once for a process that dies, ~11 s for a host that goes silent,
5 s for a process that stops without dying), then up to :data:`ROLE_CHECK` until the next
bid, then the load of the tree.

The role's calls to the store (bids, the holder's checks, the release) run on a thread of
their own, not among the store reads and writes of the default executor: a store may end a
role whose holder stops checking for a few seconds (PostgreSQL's ``ROLE_LEASE``), and the
checks must not wait behind writes that a stalled database holds up. While the role loop
is busy with something longer (loading the tree, draining the sequencer on the way out),
the lease is checked beside it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sealtrail.errors import Error, Fenced, RetryLater, StorageError
from sealtrail.storage import Lease, LogStore, SequencerRoles

from ._checkpoints import CheckpointSigner, SignedCheckpoint
from ._follower import LogFollower
from ._reader import LogReader
from ._sequencer import Sequencer, SequencerConfig
from ._tasks import cancel_and_wait

__all__ = ["SHARED_MAX_DELAY", "Backlog", "RoleStore", "SharedSequencer"]

log = logging.getLogger("sealtrail.log")

_T = TypeVar("_T")

#: The shared sequencer's default ``max_delay``: about one commit's time on PostgreSQL
#: (4-6 ms under load). Measured with 2 API processes: 1,087 and 1,167 registrations/s at
#: 5 ms, 1,032 and 1,036 at the one-process default of 1 ms (smaller batches, each paying
#: a whole commit).
SHARED_MAX_DELAY = 0.005
#: Seconds between bids for the role (and between checks that it is still held).
ROLE_CHECK = 0.25
#: Seconds between looks at the backlog while it is empty.
FEED_POLL = 0.01
#: Backlog entries appended per step, at most.
FEED_STEP = 4096
#: Feeder steps queued in the sequencer and not yet durable, at most.
FEED_IN_FLIGHT = 4
#: Seconds between writes of the sequenced watermark while the backlog moves.
WATERMARK_EVERY = 1.0
#: Seconds a sequencer that lost its role may take to fail what it still holds.
STEP_DOWN_WAIT = 15.0


class Backlog(Protocol):
    """Where entries wait to be sequenced, in a durable order (seq numbers from 1)."""

    def entries_since(self, seq: int, *, limit: int) -> Sequence[tuple[int, bytes | None]]:
        """Entries with seq numbers above ``seq``, in order, at most ``limit``. An entry of
        ``None`` is a row the backlog refuses: it is never appended, and the watermark
        moves past it like past any other."""
        ...

    def read_sequenced(self) -> int:
        """The watermark: every entry at or below it is in the log."""
        ...

    def write_sequenced(self, seq: int) -> None:
        """Raise the watermark (never lowers it)."""
        ...


class RoleStore(LogStore, SequencerRoles, Protocol):
    """A log store shared by processes that take turns sequencing it."""


class SharedSequencer:
    """One process's part in sequencing a shared log; see the module docstring.

    Offers what the transparency service uses of a :class:`Sequencer` (``submit_many``,
    ``check_admission``, ``reader``, ``signer``, ``config``); ``feeds_backlog`` tells it that
    recovery and the watermark are this object's business.
    """

    feeds_backlog = True

    def __init__(
        self,
        store: RoleStore,
        *,
        signer: CheckpointSigner,
        backlog: Backlog,
        holder: str,
        config: SequencerConfig | None = None,
        role_check: float = ROLE_CHECK,
    ) -> None:
        self.store = store
        self.signer = signer
        self.backlog = backlog
        self.holder = holder
        self.config = config or SequencerConfig(max_delay=SHARED_MAX_DELAY)
        self.role_check = role_check
        self.reader = LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
        self.follower = LogFollower(self.reader)
        #: The sequencer while this process holds the role, else None.
        self.sequencer: Sequencer | None = None
        #: Epochs of the roles this process has held, in order.
        self.epochs: list[int] = []
        self._lease: Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self._feeder: asyncio.Task[None] | None = None
        #: Backlog entries this process's sequencer was handed directly, by seq number, with
        #: the future of their group: the feeder waits for those rather than appending them
        #: again. Should the group fail, so does the feeder's step, and the feeder starts
        #: again from its durable watermark: it then appends them itself.
        self._direct: dict[int, asyncio.Future[list[int]]] = {}
        #: Runs the role's calls to the store (see the module docstring).
        self._role_thread: ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._role_thread = ThreadPoolExecutor(1, thread_name_prefix="sealtrail-role")
        await self.follower.start()
        with contextlib.suppress(Error):
            await self._bid()  # a lone process sequences from its first request on
        self._task = asyncio.create_task(self._roles(), name="sealtrail-sequencer-role")

    async def close(self) -> None:
        """Stop bidding; hand the role back after sequencing what was accepted here."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._step_down("shutting down")
        await self.follower.close()
        if self._role_thread is not None:
            self._role_thread.shutdown(wait=False)
            self._role_thread = None

    async def __aenter__(self) -> SharedSequencer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def holds_role(self) -> bool:
        return self.sequencer is not None and not self.sequencer.fenced

    @property
    def latest(self) -> SignedCheckpoint | None:
        """The newest checkpoint this process committed or read."""
        mine = self.sequencer.latest if self.sequencer is not None else None
        read = self.reader.latest
        if mine is None or (read is not None and read.size > mine.size):
            return read
        return mine

    # -- submitting ---------------------------------------------------------------------------

    def check_admission(self, count: int, size: int) -> None:
        sequencer = self.sequencer
        if sequencer is not None and not sequencer.fenced:
            sequencer.check_admission(count, size)
        self.follower.check_admission(count)

    def submit_many(
        self, entries: Sequence[bytes], seqs: Sequence[int] | None = None
    ) -> list[asyncio.Future[list[int]]]:
        """Futures of the entries' indexes (one per ``max_batch`` group), once durable.

        The entries MUST already be in the backlog (``seqs``: their seq numbers there, when
        known): if this process's sequencer cannot append them (it lost the role, or the
        store failed), they are waited for instead, and the next holder's feeder appends
        them.
        """
        entries = list(entries)
        step = self.config.max_batch
        chunks = [entries[i : i + step] for i in range(0, len(entries), step)]
        sequencer = self.sequencer
        if sequencer is not None and not sequencer.fenced:
            try:
                direct = sequencer.submit_many(entries)
            except (RetryLater, Fenced):
                pass
            else:
                if seqs is not None:
                    seqs = list(seqs)
                    for k, group in enumerate(direct):
                        self._direct.update(dict.fromkeys(seqs[k * step : (k + 1) * step], group))
                return [self._or_wait(f, c) for f, c in zip(direct, chunks, strict=True)]
        return [self.follower.wait_entries(c) for c in chunks]

    async def add_many(self, entries: Sequence[bytes]) -> list[int]:
        """Append entries already in the backlog; their indexes once durable."""
        out: list[int] = []
        for result in await asyncio.gather(*self.submit_many(entries)):
            out += result
        return out

    def _or_wait(
        self, direct: asyncio.Future[list[int]], entries: list[bytes]
    ) -> asyncio.Future[list[int]]:
        out: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

        def relay(done: asyncio.Future[list[int]]) -> None:
            if out.done():
                return
            if done.cancelled() or done.exception() is not None:
                # Not appended here: the entries are in the backlog, so whoever holds the
                # role appends them; learn their indexes from the log.
                try:
                    waited = self.follower.wait_entries(entries)
                except RetryLater as exc:
                    out.set_exception(exc)
                    return
                waited.add_done_callback(lambda w: _copy(w, out))
                out.add_done_callback(lambda o: waited.cancel() if o.cancelled() else None)
            else:
                out.set_result(done.result())

        direct.add_done_callback(relay)
        return out

    # -- the role -----------------------------------------------------------------------------

    async def _roles(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.role_check)
            try:
                if self._lease is None:
                    await self._bid()
                else:
                    lease, sequencer = self._lease, self.sequencer
                    alive = await self._role_call(lease.alive)
                    if not alive or sequencer is None or sequencer.fenced:
                        await self._step_down("lost the sequencer role")
                failing = False
            except Exception as exc:  # the loop must outlive any failure: it is the fail-over
                if not failing:
                    error = _as_error(exc)
                    log.warning("sequencer role: %s (%s); retrying", error, error.code)
                failing = True

    async def _role_call(self, call: Callable[[], _T]) -> _T:
        """``call`` (a role call to the store) on the role's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._role_thread, call)

    @contextlib.asynccontextmanager
    async def _checked(self, lease: Lease | None) -> AsyncIterator[None]:
        """Check ``lease`` every :data:`ROLE_CHECK` while the body runs, as the role loop
        would: a store that ends a lease left unchecked (PostgreSQL's ``ROLE_LEASE``) must
        not take the role from a holder busy loading its tree or draining its sequencer."""

        async def check(lease: Lease) -> None:
            with contextlib.suppress(Exception):  # the role loop's own check reports
                while True:
                    await asyncio.sleep(self.role_check)
                    if not await self._role_call(lease.alive):
                        return

        task = None if lease is None else asyncio.create_task(check(lease))
        try:
            yield
        finally:
            await cancel_and_wait(task)

    async def _bid(self) -> None:
        holder = self.holder
        lease = await self._role_call(lambda: self.store.acquire_role(holder))
        if lease is None:
            return
        sequencer = Sequencer(
            self.store,
            signer=self.signer,
            config=self.config,
            fence=lease.epoch,
            reader=self.reader,
        )
        try:
            async with self._checked(lease):
                await sequencer.start()
        except BaseException:
            await asyncio.shield(self._role_call(lease.release))
            raise
        self._lease, self.sequencer = lease, sequencer
        self.epochs.append(lease.epoch)
        self._feeder = asyncio.create_task(self._feed(sequencer), name="sealtrail-feeder")
        log.info("%s holds the sequencer role (epoch %d)", self.holder, lease.epoch)

    async def _step_down(self, why: str) -> None:
        lease, sequencer, feeder = self._lease, self.sequencer, self._feeder
        self._lease, self.sequencer, self._feeder = None, None, None
        await cancel_and_wait(feeder)
        if sequencer is not None:
            # Sequence (or, once fenced, fail over to waiting) what was accepted; bounded,
            # as a store that went away may take its time to say so.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STEP_DOWN_WAIT), self._checked(lease):
                    await sequencer.close()
        # A feeder of a later epoch reads those entries again: it appends them (keeping
        # their first index) rather than wait on groups of a sequencer that is gone.
        self._direct.clear()
        if lease is not None:
            await self._role_call(lease.release)
            log.info("%s gave up the sequencer role (epoch %d): %s", self.holder, lease.epoch, why)

    # -- the feeder ---------------------------------------------------------------------------

    async def _feed(self, sequencer: Sequencer) -> None:
        """Append the backlog above the watermark, for as long as this process sequences.

        Steps overlap: the next rows are read and queued while earlier ones are being
        sequenced (at most :data:`FEED_IN_FLIGHT` steps out), so an entry another process
        stored waits for one read, not for the previous step's commit as well. The
        watermark only ever covers steps that are durable, in order.
        """
        backlog = self.backlog
        fed = durable = written = -1
        written_at = 0.0
        failing = False
        #: Steps queued and not known durable yet: (last seq of the step, its indexes).
        steps: _Steps = deque()
        try:
            while not sequencer.fenced:
                rows: Sequence[tuple[int, bytes | None]] = []
                try:
                    if fed < 0:
                        fed = durable = written = await asyncio.to_thread(backlog.read_sequenced)
                    durable = _settle(steps, durable)
                    if len(steps) < FEED_IN_FLIGHT:
                        rows = await asyncio.to_thread(backlog.entries_since, fed, limit=FEED_STEP)
                    if rows:
                        steps.append((rows[-1][0], self._step(sequencer, rows)))
                        fed = rows[-1][0]
                        # Handed over after the feeder had read them already: it will not.
                        for seq in [s for s in self._direct if s <= fed]:
                            del self._direct[seq]
                    now = time.monotonic()
                    if durable != written and (not steps or now - written_at >= WATERMARK_EVERY):
                        await asyncio.to_thread(backlog.write_sequenced, durable)
                        written, written_at = durable, now
                    failing = False
                except Fenced:
                    return  # the role loop notices and steps down
                except RetryLater as exc:
                    await asyncio.sleep(min(exc.retry_after, 0.1))
                    continue
                except Exception as exc:
                    if not failing:
                        error = _as_error(exc)
                        log.warning("feeder: %s (%s); retrying", error, error.code)
                    failing = True
                    # Start again from what is known durable (entries appended twice keep
                    # their first index).
                    _drop(steps)
                    fed = durable
                    await asyncio.sleep(0.5)
                    continue
                if len(rows) < FEED_STEP:
                    # Caught up: look again after a poll, or as soon as a step is durable.
                    await _poll(steps)
        finally:
            _drop(steps)

    def _step(
        self, sequencer: Sequencer, rows: Sequence[tuple[int, bytes | None]]
    ) -> asyncio.Future[list[list[int]]]:
        """One feeder step: the rows the sequencer was not handed directly are submitted,
        but those the backlog refused, and the step is durable once those and the groups
        of the others are. Each row is taken off the handed ones as it is read: read
        again, it is appended. A handed row is waited for even if the backlog refused it
        (edited in the store since): what was handed is what this process checked."""
        handed = self._direct
        waits: dict[asyncio.Future[list[int]], None] = {}
        fresh: list[bytes] = []
        for seq, entry in rows:
            group = handed.pop(seq, None)
            if group is not None:
                waits[group] = None
            elif entry is not None:
                fresh.append(entry)
        futures = sequencer.submit_many(fresh) if fresh else []
        return asyncio.gather(*waits, *futures)


_Steps = deque[tuple[int, "asyncio.Future[list[list[int]]]"]]


async def _poll(steps: _Steps) -> None:
    """Wait :data:`FEED_POLL`, or less if the oldest step becomes durable meanwhile."""
    if steps:
        await asyncio.wait([steps[0][1]], timeout=FEED_POLL)
    else:
        await asyncio.sleep(FEED_POLL)


class _StepFailed(Exception):
    """A feeder step failed (its error is the cause): the feeder starts again from its
    durable watermark, whatever the error, even one that would otherwise only pause it."""


def _settle(steps: _Steps, durable: int) -> int:
    """The watermark once the steps that finished are taken off, in order; a step that
    failed raises :class:`_StepFailed` (:class:`Fenced` as it is)."""
    while steps and steps[0][1].done():
        last, step = steps.popleft()
        try:
            step.result()
        except Fenced:
            raise
        except Exception as exc:
            raise _StepFailed from exc
        durable = last
    return durable


def _drop(steps: _Steps) -> None:
    """Forget queued steps: their outcome is no longer awaited (a failure is marked seen)."""
    while steps:
        steps.popleft()[1].add_done_callback(_seen)


def _seen(future: asyncio.Future[list[list[int]]]) -> None:
    if not future.cancelled():
        future.exception()


def _copy(source: asyncio.Future[list[int]], target: asyncio.Future[list[int]]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


def _as_error(exc: BaseException) -> Error:
    """Ours as is; a driver's own exception as a :class:`StorageError` (its type only); a
    failed feeder step as its cause."""
    if isinstance(exc, _StepFailed) and exc.__cause__ is not None:
        return _as_error(exc.__cause__)
    return exc if isinstance(exc, Error) else StorageError(type(exc).__name__)
