"""Statement signatures checked off the event loop, a loop turn's worth at a time.

A registration's largest single cost is its signature check (an ES256 check is ~65 µs of
the ~140 µs a registration takes in one process). ``cryptography`` lets go of the GIL while
it checks, but a thread that finished one must win the GIL back from the busy event loop,
which takes up to a switch interval each time (see :mod:`sealtrail.keys.parallel`). So the
checks asked for during one turn of the loop go together, in chunks, to the worker
processes of :mod:`sealtrail.keys.parallel`, and the loop goes on meanwhile: parsing,
policy and storing the next statements overlap with the checks of these.

A lone check (nothing else asked for in the same turn) is made in place: a trip to a
worker costs more than the check. So is a check whose key a worker cannot rebuild, and
every check when there are no workers (``SEALTRAIL_VERIFY_WORKERS=0``, a one-core machine)
or the pool broke.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from functools import partial

from sealtrail.errors import InvalidSignature
from sealtrail.keys import Verifier, parallel

__all__ = ["SignatureChecks"]

#: Most checks sent to a worker at once. Each chunk costs the loop's process a trip beyond
#: its checks (pickling, the pool's feeder and result threads, waking the loop), ~0.9 ms
#: under load: measured on 2 cores, 20,000 ES256 registrations in one process from 1,024
#: tasks made 6,500 / 7,400 / 8,300 / 9,000 / 9,700 / 9,800 per second at 16 / 32 / 64 /
#: 128 / 256 / 512 checks per chunk. 256 ES256 checks take ~20 ms in a worker. Only a
#: loaded loop fills a chunk: a turn's checks go out as they are (over HTTP, a turn has
#: about one check per busy connection).
CHUNK = 256
#: Chunks out per worker process at a time (4 x 256: more than a loop turn's checks, and a
#: worker never waits for the next chunk).
IN_FLIGHT_PER_WORKER = 4

_Pending = tuple[Verifier, bytes, bytes, "asyncio.Future[str | None]"]


class SignatureChecks:
    """Check signatures for one event loop; ``await verify(...)`` raises as
    :meth:`Verifier.verify` would.

    At most :data:`IN_FLIGHT_PER_WORKER` chunks per worker are out at a time (queued behind
    the one being checked, so a worker never waits for the loop); checks asked for beyond
    that wait, and go out together as the next chunk. A chunk holding a key a worker
    cannot rebuild is checked in place as a whole.
    """

    def __init__(self, *, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._scheduled = False

    async def verify(self, verifier: Verifier, *, signature: bytes, message: bytes) -> None:
        """Raise :class:`~sealtrail.errors.InvalidSignature` unless ``signature`` over
        ``message`` verifies with ``verifier``."""
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[str | None] = loop.create_future()
        self._queue.append((verifier, signature, message, verdict))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        reason = await verdict
        if reason is not None:
            raise InvalidSignature(reason)

    def _flush(self) -> None:
        """The end of a loop turn: a lone check with no worker busy is made in place (the
        trip costs more than the check); anything more goes to the workers."""
        self._scheduled = False
        workers = parallel.signature_workers()
        if not workers or (len(self._queue) == 1 and not self._in_flight):
            checks = list(self._queue)
            self._queue.clear()
            _in_place(checks)
            return
        self._send(workers)

    def _send(self, workers: int) -> None:
        limit = IN_FLIGHT_PER_WORKER * workers
        while self._queue and self._in_flight < limit:
            chunk = [self._queue.popleft() for _ in range(min(self._chunk, len(self._queue)))]
            jobs: list[parallel.SignatureJob] = []
            for verifier, signature, message, _ in chunk:
                job = parallel.job(verifier, signature=signature, message=message)
                if job is None:
                    break
                jobs.append(job)
            sent = None
            if len(jobs) == len(chunk):
                sent = parallel.submit(parallel.check_signatures, jobs)
            if sent is None:
                _in_place(chunk)
                continue
            future, pool = sent
            self._in_flight += 1
            asyncio.wrap_future(future).add_done_callback(
                partial(self._settle, checks=chunk, pool=pool)
            )

    def _settle(
        self,
        done: asyncio.Future[list[str | None]],
        *,
        checks: Sequence[_Pending],
        pool: ProcessPoolExecutor,
    ) -> None:
        """A chunk came back: hand out its verdicts (or check in place if it could not
        run), then send the next one."""
        self._in_flight -= 1
        error = None if done.cancelled() else done.exception()
        if done.cancelled() or error is not None:
            if isinstance(error, BrokenProcessPool):
                parallel.broke(pool)
            _in_place(checks)
        else:
            parallel.proven(pool)
            for (_, _, _, verdict), reason in zip(checks, done.result(), strict=True):
                if not verdict.done():
                    verdict.set_result(reason)
        if self._queue:
            self._send(max(1, parallel.signature_workers()))


def _in_place(checks: Sequence[_Pending]) -> None:
    for verifier, signature, message, verdict in checks:
        if verdict.done():  # the waiting registration was cancelled
            continue
        try:
            verifier.verify(signature=signature, message=message)
        except InvalidSignature as exc:
            verdict.set_result(exc.message)
        except Exception as exc:
            verdict.set_exception(exc)
        else:
            verdict.set_result(None)
