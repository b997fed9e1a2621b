"""Signature checks spread over the machine's cores.

``cryptography`` lets go of the GIL while it verifies, but a thread that finished a check
must win the GIL back, and while another thread runs Python (the indexer, the sequencer,
the event loop) that takes up to a switch interval (5 ms) each time. Measured on the 2-core
development machine, checking 2,000 P-384 identity certificates: 690 µs per check on one
thread; 390 µs on two threads, but 3,700 µs beside a third thread busy in Python; 310 µs on
two worker processes, 510 µs beside that busy thread. Hence two mechanisms:

* :func:`run`: large batches (a device manifest's identity chains, up to 10,000) go to a
  pool of worker processes, which have interpreters of their own, in chunks;
* :func:`in_threads`: a handful of checks whose caller waits for them (an attestation's
  devices) run on the caller's thread and helper threads, taking the items one at a time so
  that a helper stuck waiting for the GIL delays the caller by one check at most.

The pool is shared by the process, started on first use with the ``spawn`` method (forking a
process that runs threads is unsafe; a program that starts the ledger from a script must
guard the script's top level with ``if __name__ == "__main__":``, as with any use of
``spawn``) and stopped at exit; starting it takes about 0.7 s. It has one worker per core,
none on a one-core machine; ``SEALTRAIL_VERIFY_WORKERS`` sets another number (``0``: always
check in place, on this thread). A pool that breaks (a worker killed) is dropped, the caller
checks in place, and the next batch starts a new pool.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

__all__ = ["in_threads", "run", "shutdown", "workers"]

log = logging.getLogger("sealtrail.provenance")

_A = TypeVar("_A")
_R = TypeVar("_R")

_pool: ProcessPoolExecutor | None = None
_pool_workers = 0
#: Whether the current pool has finished a batch (a pool that breaks before it ever did
#: cannot start its workers here, and is not tried again: see :func:`run`).
_pool_proven = False
_disabled = False
_threads: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def workers() -> int:
    """How many worker processes the pool has (0: none, check in place)."""
    configured = os.environ.get("SEALTRAIL_VERIFY_WORKERS", "").strip()
    if configured:
        try:
            return max(0, int(configured))
        except ValueError:
            log.warning("SEALTRAIL_VERIFY_WORKERS is not a number; using one worker per core")
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


def _get() -> ProcessPoolExecutor | None:
    global _pool, _pool_workers, _pool_proven  # noqa: PLW0603 - one pool per process
    count = 0 if _disabled else workers()
    with _lock:
        if _pool is not None and _pool_workers != count:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        if _pool is None and count > 0:
            _pool = ProcessPoolExecutor(
                max_workers=count, mp_context=multiprocessing.get_context("spawn")
            )
            _pool_workers, _pool_proven = count, False
        return _pool


def run(fn: Callable[[_A], _R], chunks: Sequence[_A]) -> list[_R] | None:
    """``fn`` applied to every chunk by the pool's workers, results in order; ``None`` when
    there is no pool or it broke (the caller then does the work in place).

    ``fn`` must be a module-level function and the chunks picklable. An exception ``fn``
    raises in a worker is raised here. A pool that breaks is dropped and the next call
    starts another, unless it broke before finishing any batch: its workers cannot start
    in this process (with ``spawn`` they import the program's main module again, which
    must guard its top level with ``if __name__ == "__main__":``), so the pool stays off.
    """
    global _pool, _pool_proven, _disabled  # noqa: PLW0603
    pool = _get()
    if pool is None:
        return None
    try:
        results = list(pool.map(fn, chunks))
    except BrokenProcessPool:
        with _lock:
            if _pool is pool:
                _pool = None
                if not _pool_proven:
                    _disabled = True
        log.warning(
            "provenance: the verification pool broke; checking in place%s",
            "" if _pool_proven else " from now on (its workers could not start)",
        )
        with contextlib.suppress(Exception):
            pool.shutdown(wait=False, cancel_futures=True)
        return None
    _pool_proven = True
    return results


def in_threads(fn: Callable[[_A], _R], items: Sequence[_A]) -> list[_R]:
    """``fn`` applied to every item, results in order: this thread and one helper thread
    per further worker (see :func:`workers`) take the items one at a time.

    For a handful of signature checks whose caller waits for them (an attestation's
    devices): too few to pay a trip to a worker process. ``cryptography`` lets go of the
    GIL while it verifies, so the checks overlap; but a helper that finished one must win
    the GIL back, which takes up to a switch interval when another thread is busy in
    Python. Taking items one at a time bounds that: the caller, which holds no GIL while it
    verifies, goes on with the next items, and waits at most for the helper's last one.
    """
    helpers = min(workers(), len(items)) - 1
    if helpers < 1:
        return [fn(item) for item in items]
    global _threads  # noqa: PLW0603
    with _lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(
                max_workers=max(1, workers() - 1), thread_name_prefix="sealtrail-verify"
            )
        threads = _threads
    results: list[_R] = [None] * len(items)  # type: ignore[list-item]
    positions = itertools.count()  # next() on a count is atomic under the GIL

    def drain() -> None:
        for position in positions:
            if position >= len(items):
                return
            results[position] = fn(items[position])

    futures = [threads.submit(drain) for _ in range(helpers)]
    drain()
    for future in futures:
        future.result()
    return results


def shutdown() -> None:
    """Stop the pool and the helper threads (they start again on next use)."""
    global _pool, _threads
    with _lock:
        pool, _pool = _pool, None
        threads, _threads = _threads, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    if threads is not None:
        threads.shutdown(wait=True)


atexit.register(shutdown)
