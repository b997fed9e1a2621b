"""The sequencer: batches entries, integrates them into the tree, commits, then answers.

Life of a batch (one at a time; the store's compare-and-swap keeps a second sequencer out):

1. entries wait in a bounded queue (full queue -> :class:`RetryLater`, never unbounded memory);
2. a batch is cut when ``max_batch`` entries wait or ``max_delay`` has passed;
3. duplicates are answered with their existing index (leaf-hash index, confirmed on the tile);
4. new leaves are appended to the in-memory compact range, yielding the new tiles' parts;
5. the new checkpoint is signed and ``store.commit`` writes parts, leaves and checkpoint
   atomically, if the log is still where this sequencer left it;
6. only then are the waiters' futures resolved.

Recovery is the same path: :meth:`Sequencer._load` rebuilds the compact range from the
stored checkpoint and tiles, and is called at start, after a lost compare-and-swap and
after any storage failure. State in memory is never trusted past a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sealtrail.errors import (
    CheckpointConflict,
    Corruption,
    Error,
    Fenced,
    InvalidInput,
    RetryLater,
    StorageError,
    TooLarge,
)
from sealtrail.merkle import HASH_SIZE, TILE_HEIGHT, TILE_WIDTH, CompactRange, NodeRun, leaf_hashes
from sealtrail.storage import ENTRY_BUNDLES, Commit, LogStore, TilePart

from ._checkpoints import CheckpointSigner, SignedCheckpoint, check_not_behind, verify_checkpoint
from ._reader import LeafIndexCheck, LogReader
from ._tiles import MAX_ENTRY_SIZE, assemble, split_run, tile_interior

__all__ = ["SWITCH_INTERVAL", "Sequencer", "SequencerConfig"]

log = logging.getLogger("sealtrail.log")

#: How often one batch is retried after losing the checkpoint compare-and-swap. Each
#: retry first waits a random, growing pause so that two contending sequencers drift apart.
CONFLICT_RETRIES = 12
CONFLICT_BACKOFF = 0.002
#: The interpreter's thread switch interval (``sys.setswitchinterval``) for a process that
#: runs a sequencer; the ``sealtrail`` command sets it. The pipeline's writer and leaf-index
#: threads take the GIL back after every SQLite call while the preparing thread hashes, and
#: each such return waits for up to one interval: 5 ms by default, against a commit of
#: about 8 statements. Measured on 10^6 appends: 221,000/s at 5 ms, 239,000/s at 1 ms
#: (three runs each). Registration, four runs each, alternated: over HTTP 1,503-1,773/s at
#: 1 ms and 1,321-1,640/s at 5 ms; in process 0.60-0.70 of the ceiling at 1 ms, 0.50-0.63
#: at 5 ms.
SWITCH_INTERVAL = 0.001
#: Most batches in the pipeline: the one being written, those prepared and waiting for
#: their turn, and the one being prepared on top of them all. Preparing (Python, under the
#: GIL) and writing (the store, mostly outside it) can so each run back to back.
PIPELINE_DEPTH = 3


#: The longest batch delay a sequencer accepts, in seconds: far beyond any useful one (a
#: few milliseconds), yet finite (an endless one would never cut a batch).
MAX_DELAY_LIMIT = 10.0


@dataclass(frozen=True, slots=True)
class SequencerConfig:
    """Batching and back-pressure limits (documented in ARCHITECTURE.md)."""

    #: Most entries integrated and committed as one batch.
    max_batch: int = 16384
    #: Longest an entry waits for others to join its batch, in seconds: about one commit's
    #: time (a SQLite commit ~1 ms; the shared sequencer's default is SHARED_MAX_DELAY).
    max_delay: float = 0.001
    #: Most entries waiting to be sequenced; beyond it submitters get RetryLater.
    max_pending: int = 65536
    #: Most bytes of entries waiting to be sequenced; beyond it submitters get RetryLater.
    max_pending_bytes: int = 256 * 1024 * 1024
    #: Leaf hashes are added to the store's leaf index in sorted runs of at least this many
    #: (1: with every batch). Until then they are deduplicated from memory, rebuilt from the
    #: level-0 tiles on load.
    index_every: int = 1 << 18

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_pending < self.max_batch:
            raise InvalidInput("need max_batch >= 1 and max_pending >= max_batch")
        if not 0 <= self.max_delay <= MAX_DELAY_LIMIT:  # also refuses NaN
            raise InvalidInput(f"max_delay must be a number of seconds from 0 to {MAX_DELAY_LIMIT}")
        if self.index_every < 1:
            raise InvalidInput("index_every must be at least 1")
        if self.max_pending_bytes < MAX_ENTRY_SIZE:
            raise InvalidInput(f"max_pending_bytes must be at least {MAX_ENTRY_SIZE}")


class Sequencer:
    """The single writer of one log. Use ``async with Sequencer(...) as seq``."""

    def __init__(
        self,
        store: LogStore,
        *,
        signer: CheckpointSigner,
        config: SequencerConfig | None = None,
        fence: int | None = None,
        reader: LogReader | None = None,
    ) -> None:
        """``fence`` is the epoch of the sequencer role this sequencer runs under (a store
        shared by several processes): every commit carries it, and once the store refuses
        it (:class:`~sealtrail.errors.Fenced`), this sequencer fails its waiters and takes
        no more entries (:attr:`fenced`). ``reader``: the reader of ``store`` to use (and
        to hand each commit's tiles, see :meth:`LogReader.absorb`), when the caller has
        one."""
        self.store = store
        self.fence = fence
        #: Set once the store refused a commit of this sequencer's epoch.
        self.fenced = False
        self.signer = signer
        self.config = config or SequencerConfig()
        self.reader = reader or LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
        self._queue: deque[tuple[list[bytes], asyncio.Future[list[int]]]] = deque()
        self._pending = 0
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._range = CompactRange(0, [])
        # Leaf hash -> index for the entries above the store's leaf-index watermark.
        self._recent: dict[bytes, int] = {}
        self._indexed = 0
        self._latest: SignedCheckpoint | None = None
        #: Each level's partial right-edge tile as committed, by level: (index, positions,
        #: its parts' data from position 0). The batch that completes the tile restates it
        #: whole (a full part) from here rather than reading it back: for entry bundles, up
        #: to 255 entries (~0.5 MB of 2 KB statements, at most ~16 MB), every 256 entries.
        self._tails: dict[int, _Tail] = {}
        self._stale = True
        #: Batches whose commit failed so far: a batch prepared across a change of it was
        #: built on one that failed.
        self._failures = 0
        #: Runs leaf-index lookups beside the preparation that needs them (while running).
        self._lookups: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._lookups = ThreadPoolExecutor(1, thread_name_prefix="sealtrail-leaf-lookup")
        self._task = asyncio.create_task(self._run(), name="sealtrail-sequencer")

    async def close(self) -> None:
        """Sequence everything already accepted, then stop."""
        self._closing = True
        self._wakeup.set()
        self._full.set()
        try:
            if self._task is not None:
                await self._task
                self._task = None
        finally:
            if self._lookups is not None:
                self._lookups.shutdown(wait=False)
                self._lookups = None

    async def __aenter__(self) -> Sequencer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def latest(self) -> SignedCheckpoint | None:
        """The last checkpoint this sequencer committed or loaded."""
        return self._latest

    # -- submitting -----------------------------------------------------------------------------

    def submit(self, entry: bytes) -> asyncio.Future[int]:
        """Queue one entry; the future resolves to its index once it is durable.

        The future MUST NOT resolve before the entry and a checkpoint covering it are
        committed. Raises :class:`RetryLater` at once when the queue is full.
        """
        group = self._enqueue([entry])
        single: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def relay(done: asyncio.Future[list[int]]) -> None:
            if single.done():
                return
            if done.cancelled():
                single.cancel()
            elif (exc := done.exception()) is not None:
                single.set_exception(exc)
            else:
                single.set_result(done.result()[0])

        group.add_done_callback(relay)
        return single

    def submit_many(self, entries: Sequence[bytes]) -> list[asyncio.Future[list[int]]]:
        """Queue entries as groups of at most ``max_batch``; all or none are accepted.

        Each future resolves to its group's indexes, in order, once they are durable.
        """
        entries = list(entries)
        step = self.config.max_batch
        self._admit(entries)
        return [
            self._enqueue(entries[i : i + step], checked=True) for i in range(0, len(entries), step)
        ]

    async def add(self, entry: bytes) -> int:
        """Append one entry (or find it) and return its index once durable."""
        return await self.submit(entry)

    async def add_many(self, entries: Iterable[bytes]) -> list[int]:
        """Append entries (or find them); their indexes, in order, once all are durable."""
        results = await asyncio.gather(*self.submit_many(list(entries)), return_exceptions=True)
        out: list[int] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            out += result
        return out

    def check_admission(self, count: int, size: int) -> None:
        """Raise :class:`RetryLater` unless ``count`` more entries of ``size`` bytes in all
        would be accepted now (the sequencer is running and below its queue limits).

        For callers that must do durable work before submitting (the transparency service
        stores a statement before appending its leaf): ask first, so that back-pressure
        refuses a request before anything is written rather than after.
        """
        if self.fenced:
            raise Fenced("this sequencer lost its role to another process")
        if self._closing or self._task is None or self._task.done():
            raise RetryLater("the sequencer is not running", retry_after=1.0)
        if self._pending + count > self.config.max_pending:
            raise RetryLater(
                f"{self._pending} entries are waiting to be sequenced", retry_after=0.5
            )
        if self._pending_bytes + size > self.config.max_pending_bytes:
            raise RetryLater(
                f"{self._pending_bytes} bytes of entries are waiting to be sequenced",
                retry_after=0.5,
            )

    def _admit(self, entries: Sequence[bytes]) -> None:
        longest = max(map(len, entries), default=0)  # one pass in C
        if longest > MAX_ENTRY_SIZE and not (self._closing or self._task is None):
            raise TooLarge(f"entry of {longest} bytes exceeds the {MAX_ENTRY_SIZE}-byte limit")
        self.check_admission(len(entries), sum(map(len, entries)))

    def _enqueue(self, entries: list[bytes], *, checked: bool = False) -> asyncio.Future[list[int]]:
        if not checked:
            self._admit(entries)
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((list(map(bytes, entries)), future))
        self._pending += len(entries)
        self._pending_bytes += sum(map(len, entries))
        self._wakeup.set()
        if self._pending >= self.config.max_batch:
            self._full.set()
        return future

    # -- the loop -------------------------------------------------------------------------------

    def _cut(self) -> list[_Group]:
        """Take whole groups from the queue, up to ``max_batch`` entries (at least one group)."""
        batch = [self._queue.popleft()]
        count = len(batch[0][0])
        while self._queue and count + len(self._queue[0][0]) <= self.config.max_batch:
            group = self._queue.popleft()
            batch.append(group)
            count += len(group[0])
        self._pending -= count
        self._pending_bytes -= sum(len(e) for entries, _ in batch for e in entries)
        return batch

    async def _run(self) -> None:
        """Cut batches and sequence them as a pipeline: batches are prepared one after the
        other, each on top of those before it that are not yet committed (up to
        :data:`PIPELINE_DEPTH` batches in all), while the oldest is being written to the
        store (a worker thread, mostly outside the GIL). Commits run one at a time, in log
        order, and a batch's waiters are answered only once its own commit returned. A batch
        built on one that failed is redone the plain way, which reloads from the store first.

        Should this loop end before it has drained its queue (a close bounded in time
        cancelled it, or it broke), every waiter it still holds gets :class:`RetryLater`:
        a waiter is answered, one way or the other, whatever becomes of the loop.
        """
        chain: deque[_Stage] = deque()
        preparing: _Stage | None = None
        try:
            while True:
                if chain and chain[0].task is None:
                    head = chain[0]
                    if head.prepared is None:
                        # Off the chain only once answered: a loop cancelled meanwhile
                        # still answers its waiters (finally, below).
                        await self._plain(head.batch, head.flat)
                        chain.popleft()
                        continue
                    head.task = asyncio.create_task(asyncio.to_thread(self._commit, head.prepared))
                if preparing is None and not chain:
                    # Idle: wait for entries, and let a batch fill for up to max_delay.
                    work = await self._next_work()
                    if work is None:
                        return
                    if not work:
                        continue
                if preparing is None and self._queue and self._may_prepare(chain):
                    preparing = self._start_preparing(chain)
                await self._wait_stages(chain, preparing)
                if preparing is not None and preparing.task is not None and preparing.task.done():
                    self._prepared(chain, preparing)
                    preparing = None
                if chain and chain[0].task is not None and chain[0].task.done():
                    committed = await self._finish(chain[0])
                    chain.popleft()
                    if not committed:
                        # Built on a batch that failed: each is redone the plain way.
                        for stage in chain:
                            stage.prepared = None
        finally:
            held = [
                *(g for stage in chain for g in stage.batch),
                *(preparing.batch if preparing is not None else ()),
                *self._queue,
            ]
            self._abandon(held)

    def _start_preparing(self, chain: deque[_Stage]) -> _Stage:
        """Cut the next batch and prepare it (a worker thread) on top of the ``chain``."""
        batch = self._cut()
        if self._pending < self.config.max_batch and not self._closing:
            self._full.clear()
        flat = [entry for entries, _ in batch for entry in entries]
        bases = tuple(s.prepared for s in chain if s.prepared is not None)
        stage = _Stage(batch, flat, None, self._failures, on_top=bool(bases))
        stage.task = asyncio.create_task(asyncio.to_thread(self._prepare, flat, bases))
        return stage

    def _may_prepare(self, chain: deque[_Stage]) -> bool:
        """Whether the next batch may be prepared now: the pipeline has room for it, and
        none of the uncommitted batches it would be built on is to be redone."""
        return len(chain) < PIPELINE_DEPTH and all(s.prepared is not None for s in chain)

    async def _wait_stages(self, chain: deque[_Stage], preparing: _Stage | None) -> None:
        """Wait until the commit in flight or the batch being prepared is done, or entries
        arrive that could be prepared meanwhile."""
        waits: set[asyncio.Future[Any]] = set()
        if chain and chain[0].task is not None:
            waits.add(chain[0].task)
        if preparing is not None and preparing.task is not None:
            waits.add(preparing.task)
        arrival: asyncio.Future[Any] | None = None
        if preparing is None and not self._closing and self._may_prepare(chain):
            # close() may have set the wakeup already; a cleared one cannot lose entries
            # queued before it (they are in the queue, and the loop looks there first).
            self._wakeup.clear()
            arrival = asyncio.ensure_future(self._wakeup.wait())
            waits.add(arrival)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if arrival is not None:
                arrival.cancel()

    def _prepared(self, chain: deque[_Stage], stage: _Stage) -> None:
        """Queue a prepared batch for its commit, or for a plain redo: when it was built on
        a batch that failed since, or its preparation on top of uncommitted batches failed
        (the redo reloads first, and reports the batch's own fault if it has one). A batch
        prepared on the committed state alone whose preparation failed is failed."""
        task, stage.task = stage.task, None
        assert task is not None
        rebased = stage.failures != self._failures
        try:
            stage.prepared = task.result()
        except Exception as exc:
            if not (stage.on_top or rebased):
                # Prepared on the committed state alone: the failure is the batch's own.
                self._stale = True
                self._fail(stage.batch, _as_error(exc))
                return
            stage.prepared = None
        if rebased:
            stage.prepared = None
        chain.append(stage)

    async def _next_work(self) -> bool | None:
        """Idle until entries arrive, then let a batch fill for up to ``max_delay``.

        True: entries are queued. False: woken with nothing to do. None: closed and drained.
        """
        # close() may have set the wakeup while a batch was in flight, and the wait in _run
        # cleared it: check before sleeping, or the last close() would hang.
        if not self._closing:
            await self._wakeup.wait()
        if not self._queue:
            if self._closing:
                return None
            self._wakeup.clear()
            return False
        cfg = self.config
        if self._pending < cfg.max_batch and not self._closing and cfg.max_delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.max_delay):
                    await self._full.wait()
        return True

    async def _finish(self, stage: _Stage) -> bool:
        """Wait for a stage's commit; answer its waiters. False if it failed."""
        assert stage.task is not None
        assert stage.prepared is not None
        try:
            await stage.task
        except CheckpointConflict:
            # Nothing of it was written: redo it the plain way (reload, bounded retries).
            self._failures += 1
            self._stale = True
            await self._plain(stage.batch, stage.flat)
            return False
        except Exception as exc:
            self._failures += 1
            self._stale = True
            self._fail(stage.batch, _as_error(exc))
            return False
        self._apply(stage.prepared)
        self._answer(stage.batch, stage.prepared.indexes)
        return True

    async def _plain(self, batch: list[_Group], flat: list[bytes]) -> None:
        """Sequence one batch on its own: reload if needed, retry lost races, answer."""
        try:
            indexes = await asyncio.to_thread(self._sequence, flat)
        except Error as exc:
            self._fail(batch, exc)
            return
        self._answer(batch, indexes)

    @staticmethod
    def _answer(batch: list[_Group], indexes: list[int]) -> None:
        pos = 0
        for entries, future in batch:
            if not future.done():
                future.set_result(indexes[pos : pos + len(entries)])
            pos += len(entries)

    def _abandon(self, groups: list[_Group]) -> None:
        # The batch in flight may also be the one last cut: each future once.
        left = list(dict.fromkeys(f for _, f in groups if not f.done()))
        if left:
            log.warning("sequencer stopped with %d waiters unanswered; they retry", len(left))
        for future in left:
            future.set_exception(RetryLater("the sequencer stopped; submit again", retry_after=1.0))

    def _fail(self, batch: list[_Group], exc: Error) -> None:
        # A bad batch fails only its own waiters; they may retry (dedup makes it safe).
        if isinstance(exc, Fenced):
            self.fenced = True
        log.warning("batch of %d entries failed: %s", sum(len(e) for e, _ in batch), exc.code)
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    # -- integration (runs in a worker thread, one batch at a time) -----------------------------

    def _load(self) -> None:
        """(Re)build the in-memory tree from the store. The one recovery path. Refuses a
        store whose checkpoint is behind one this sequencer or its reader saw."""
        seen = self._latest if self._latest is not None else self.reader.latest
        stored = self.store.read_checkpoint()
        if stored is None:
            check_not_behind(seen, None)
            self._range, self._latest = CompactRange(0, []), None
        else:
            signed = verify_checkpoint(
                stored.note, origin=self.signer.origin, verifiers=[self.signer.verifier]
            )
            if signed.size != stored.size:
                raise Corruption("stored checkpoint size disagrees with its signed text")
            check_not_behind(seen, signed)
            border = CompactRange.border_nodes(signed.size)
            tree = CompactRange(signed.size, self.reader.read_nodes(border, size=signed.size))
            if tree.root() != signed.root:
                raise Corruption("stored tiles do not hash to the signed checkpoint's root")
            if not 0 <= stored.indexed <= signed.size:
                raise Corruption(f"leaf-index watermark {stored.indexed} is outside the tree")
            if stored.indexed:
                # The index holds the entries below its watermark, the tail above it is
                # read from the tiles: a watermark raised behind the log would hide entries
                # from both. The audit checks them all; a start, the last one.
                last = stored.indexed - 1
                check = LeafIndexCheck(self.store, stored.indexed)
                check.add(last, self.reader.leaf_hash_at(last, size=signed.size))
                check.flush()
            self._range, self._latest = tree, signed
        indexed = 0 if stored is None else stored.indexed
        size = self._range.size
        recent: dict[bytes, int] = {}
        for offset, h in enumerate(self.reader.leaf_hashes(indexed, size, size=size)):
            recent.setdefault(h, indexed + offset)
        self._recent, self._indexed = recent, indexed
        self._tails = {}
        self._stale = False

    def _sequence(self, entries: Sequence[bytes]) -> list[int]:
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                if self._stale:
                    self._load()
                return self._integrate(entries)
            except CheckpointConflict:
                # Someone else advanced the log: nothing of ours was written. Reload and retry.
                self._stale = True
                if attempt == CONFLICT_RETRIES:
                    raise
                time.sleep(random.uniform(0, CONFLICT_BACKOFF * (attempt + 1)))  # noqa: S311
            except Error:
                self._stale = True
                raise
            except Exception as exc:
                self._stale = True
                raise StorageError(f"sequencing failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def _integrate(self, entries: Sequence[bytes]) -> list[int]:
        """Prepare, commit and apply one batch on top of the committed state."""
        prepared = self._prepare(entries, ())
        self._commit(prepared)
        self._apply(prepared)
        return prepared.indexes

    def _prepare(self, entries: Sequence[bytes], bases: tuple[_Prepared, ...]) -> _Prepared:
        """Everything up to the store write: dedup, integrate, tile parts, signed checkpoint.

        ``bases`` are the batches prepared but not yet committed, in log order: this one is
        built on top of them (the pipeline), and is thrown away if one of them fails. Reads
        only the store's committed state and ``bases``; changes nothing.

        Runs in a worker thread while the event loop may apply the commit of a base: the
        sequencer's own state is read once, up front, and any base it may already include
        is still taken from ``bases`` (the same indexes, the same positions).
        """
        if not bases and self._stale:
            self._load()
        committed = self._range.size
        recent = self._recent
        watermark = self._indexed  # read after ``recent``: see _known
        hashes = leaf_hashes(entries)
        distinct = dict.fromkeys(hashes)
        unique = len(distinct) == len(hashes)
        known, unknown = self._known(distinct, bases, recent)
        if not unknown or watermark == 0:
            return self._build(entries, hashes, known, bases, recent, unique=unique)
        # Ask the leaf index for the rest, and meanwhile build the batch as if it knew none
        # of them (it almost never does): the lookup runs in the store, mostly outside the
        # GIL, while the tree is hashed. A batch with stored duplicates is built again.
        pool = self._lookups
        if pool is None:  # not running (called directly): ask first, then build once
            stored = self._confirmed(self.store.lookup_leaves(unknown), committed)
            return self._build(entries, hashes, known | stored, bases, recent, unique=unique)
        lookup = pool.submit(self.store.lookup_leaves, unknown)
        prepared = self._build(entries, hashes, known, bases, recent, unique=unique)
        stored = self._confirmed(lookup.result(), committed)
        if not stored:
            return prepared
        return self._build(entries, hashes, known | stored, bases, recent, unique=unique)

    def _build(
        self,
        entries: Sequence[bytes],
        hashes: list[bytes],
        known: dict[bytes, int],
        bases: tuple[_Prepared, ...],
        recent: dict[bytes, int],
        *,
        unique: bool,
    ) -> _Prepared:
        """The batch built on top of ``bases`` (or the committed tree), given the indexes
        ``known`` of those of its leaves already in the log (``unique``: no hash repeats)."""
        base = bases[-1] if bases else None
        old = base.tree if base is not None else self._range
        size = old.size
        if not known and unique:
            # The common case: every entry is new and distinct.
            indexes = list(range(size, size + len(hashes)))
            new_entries, new_hashes = list(entries), hashes
            assigned = dict(zip(hashes, indexes, strict=True))
        else:
            indexes, new_entries, new_hashes, assigned = [], [], [], {}
            for entry, h in zip(entries, hashes, strict=True):
                index = known.get(h)
                if index is None:
                    index = assigned.get(h)
                if index is None:
                    index = size + len(new_hashes)
                    assigned[h] = index
                    new_entries.append(entry)
                    new_hashes.append(h)
                indexes.append(index)
        indexed = base.indexed if base is not None else self._indexed
        if not new_hashes:
            return _Prepared(indexes, old, None, None, assigned, [], indexed, flush=False)

        tree, runs = old.append(new_hashes)
        parts: list[TilePart] = []
        for run in runs:
            if run.level % TILE_HEIGHT == 0:
                parts += split_run(run.level // TILE_HEIGHT, run.start, run.hashes)
        parts += split_run(0, size, new_entries, bundle=True)
        by_level = {run.level: run for run in runs}
        parts = [self._completed(p, by_level, bases) for p in parts]
        signed = self.signer.sign(size=tree.size, root=tree.root())

        # The leaf index is written in large sorted runs: the entries since the watermark
        # go in together once there are enough of them.
        flush = tree.size - indexed >= self.config.index_every
        leaves: list[tuple[bytes, int]] = []
        if flush:
            # Every entry from the watermark on: those of the bases since the last one that
            # flushed, and, if none did, the committed ones above the watermark (``recent``
            # may hold some of the bases' too by now: the same pairs, written once).
            last = max((k for k, b in enumerate(bases) if b.flush), default=-1)
            if last < 0:
                leaves += recent.items()
            for b in bases[last + 1 :]:
                leaves += b.assigned.items()
            leaves += assigned.items()
        commit = Commit(
            old_size=size,
            new_size=tree.size,
            checkpoint=signed.note,
            parts=parts,
            leaves=leaves,
            indexed=tree.size if flush else indexed,
            fence=self.fence,
        )
        return _Prepared(
            indexes, tree, signed, commit, assigned, parts, commit.watermark, flush=flush
        )

    @staticmethod
    def _known(
        distinct: dict[bytes, None], bases: tuple[_Prepared, ...], recent: dict[bytes, int]
    ) -> tuple[dict[bytes, int], list[bytes]]:
        """Indexes of the batch's hashes known in memory (the uncommitted ``bases``, then the
        committed entries above the leaf-index watermark), and the hashes left to ask the
        index for. Hits of the index are confirmed on the committed level-0 tiles
        (:meth:`_confirmed`). While the watermark is 0 every entry of the log is in memory,
        and the index is not asked (a log's first :attr:`SequencerConfig.index_every`
        entries cost no lookups).

        ``recent`` is read before the watermark: should a base that flushes be applied in
        between, ``recent`` still holds everything below the new watermark, and the index
        is asked as well; either way no entry of the log is missed.
        """
        known: dict[bytes, int] = {}
        for source in (*(b.assigned for b in reversed(bases)), recent):
            if source:  # set intersection runs in C, over the smaller side
                for h in distinct.keys() & source.keys():
                    known.setdefault(h, source[h])
        unknown = [h for h in distinct if h not in known] if known else list(distinct)
        return known, unknown

    def _commit(self, prepared: _Prepared) -> None:
        """The store write (a worker thread). Nothing to write for an all-duplicates batch."""
        if prepared.commit is not None:
            self.store.commit(prepared.commit)

    def _apply(self, prepared: _Prepared) -> None:
        """Make a committed batch the sequencer's state. Only after ``_commit`` returned."""
        if prepared.commit is None or prepared.signed is None:
            return
        # Durable from here: if we crash now, recovery finds this batch and its checkpoint
        # (and rebuilds the unindexed tail from the level-0 tiles).
        self._range, self._latest = prepared.tree, prepared.signed
        # The receipts of the batch, built right after on the event loop, read no tile and
        # no checkpoint.
        self.reader.absorb(prepared.commit.stored_parts())
        self.reader.adopt(prepared.signed)
        self._tails = _tails_after(self._tails, prepared.parts)
        if prepared.flush:
            self._recent, self._indexed = {}, prepared.indexed
        else:
            self._recent.update(prepared.assigned)

    def _confirmed(self, hits: dict[bytes, list[int]], size: int) -> dict[bytes, int]:
        """Keep only leaf-index hints that the committed level-0 tiles agree with."""
        ok: dict[bytes, int] = {}
        for h, candidates in hits.items():
            for index in sorted(candidates):
                if index < size and self.reader.read_nodes([(0, index)], size=size)[0] == h:
                    ok[h] = index
                    break
        return ok

    def _completed(
        self, part: TilePart, runs: dict[int, NodeRun], bases: tuple[_Prepared, ...]
    ) -> TilePart:
        """Restate a tile this batch completes as one full part (a full tile reads as one row).

        A full hash tile also carries its interior nodes: taken from the nodes this batch
        computed anyway when the whole tile is new, else computed here.
        """
        if part.start + part.count != TILE_WIDTH:
            return part
        if part.start == 0:
            if part.level == ENTRY_BUNDLES:
                return part
            interior = _interior_from_runs(part.level, part.index, runs)
            if interior is None:
                interior = tile_interior(part.data)
            return TilePart(part.level, part.index, 0, TILE_WIDTH, part.data, interior)
        data = self._prefix(part.level, part.index, part.start, bases) + part.data
        interior = tile_interior(data) if part.level != ENTRY_BUNDLES else b""
        return TilePart(part.level, part.index, 0, TILE_WIDTH, data, interior)

    def _prefix(self, level: int, index: int, upto: int, bases: tuple[_Prepared, ...]) -> bytes:
        """Positions ``0 .. upto-1`` of a tile: written by the uncommitted ``bases`` (the
        newest that wrote into the tile ends at ``upto``), and below them, committed."""
        for k in range(len(bases) - 1, -1, -1):
            for part in bases[k].parts:
                if (part.level, part.index) == (level, index) and part.start + part.count == upto:
                    head = self._prefix(level, index, part.start, bases[:k]) if part.start else b""
                    return head + part.data
        tail = self._tails.get(level)  # replaced whole by _apply, never changed in place
        if tail is not None and tail[:2] == (index, upto):
            return b"".join(tail[2])
        return assemble(self.store.read_parts(level, index), upto, level, index)


_Group = tuple[list[bytes], "asyncio.Future[list[int]]"]


@dataclass(slots=True)
class _Prepared:
    """A batch ready to commit: its answers, its tree and its store write."""

    indexes: list[int]
    tree: CompactRange
    signed: SignedCheckpoint | None
    commit: Commit | None
    assigned: dict[bytes, int]
    parts: list[TilePart]
    #: The leaf-index watermark once this batch is committed.
    indexed: int
    flush: bool


@dataclass(slots=True)
class _Stage:
    """A batch in the pipeline: being prepared, prepared, or being committed."""

    batch: list[_Group]
    flat: list[bytes]
    #: None while it is being prepared, and for a batch to be redone the plain way.
    prepared: _Prepared | None
    #: The sequencer's failure count when its preparation began: if that changed by the
    #: time it is prepared, it was built on a batch that failed.
    failures: int
    #: Whether it was prepared on top of uncommitted batches.
    on_top: bool = False
    #: Its preparation, then its commit.
    task: asyncio.Task[Any] | None = None


def _as_error(exc: Exception) -> Error:
    """Ours as is; anything else (a driver's own exception) as a StorageError."""
    return (
        exc if isinstance(exc, Error) else StorageError(f"sequencing failed: {type(exc).__name__}")
    )


#: A partial right-edge tile: its index, its positions, its parts' data in order.
_Tail = tuple[int, int, tuple[bytes, ...]]


def _tails_after(tails: dict[int, _Tail], parts: Sequence[TilePart]) -> dict[int, _Tail]:
    """The partial right-edge tiles once a batch's ``parts`` are committed (see
    ``Sequencer._tails``). A level whose tile is not known from position 0 on is left out:
    its completion reads the store, as after a start."""
    out = dict(tails)
    for part in parts:  # each level's parts come in position order
        held = out.pop(part.level, None)
        if part.start == 0:
            data: tuple[bytes, ...] = (part.data,)
        elif held is not None and held[:2] == (part.index, part.start):
            data = (*held[2], part.data)
        else:
            continue
        end = part.start + part.count
        if end < TILE_WIDTH:
            out[part.level] = (part.index, end, data)
    return out


def _interior_from_runs(level: int, index: int, runs: dict[int, NodeRun]) -> bytes | None:
    """Tile ``(level, index)``'s inner nodes out of a batch's new nodes, if all are there."""
    out: list[bytes] = []
    for k in range(1, TILE_HEIGHT):
        run = runs.get(level * TILE_HEIGHT + k)
        width = TILE_WIDTH >> k
        first = index * width
        if run is None or first < run.start or first + width > run.start + len(run.hashes):
            return None
        out += run.hashes[first - run.start : first - run.start + width]
    joined = b"".join(out)
    return joined if len(joined) == (TILE_WIDTH - 2) * HASH_SIZE else None
