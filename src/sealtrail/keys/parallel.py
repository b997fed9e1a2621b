"""Signature checks spread over the machine's cores.

``cryptography`` lets go of the GIL while it verifies, but a thread that finished a check
must win the GIL back, and while another thread runs Python (the indexer, the sequencer,
the event loop) that takes up to a switch interval (5 ms) each time. Measured on the 2-core
development machine, checking 2,000 P-384 identity certificates: 690 µs per check on one
thread; 390 µs on two threads, but 3,700 µs beside a third thread busy in Python; 310 µs on
two worker processes, 510 µs beside that busy thread. Hence three mechanisms:

* :func:`run`: large batches (a device manifest's identity chains, up to 10,000) go to a
  pool of worker processes, which have interpreters of their own, in chunks;
* :func:`submit`: one chunk to the same pool without waiting, for an event loop to await
  (a transparency service's statement signatures, gathered a loop turn at a time, are
  checked by :func:`check_signatures` there while the loop goes on with other requests);
* :func:`in_threads`: a handful of checks whose caller waits for them (an attestation's
  devices) run on the caller's thread and helper threads, taking the items one at a time so
  that a helper stuck waiting for the GIL delays the caller by one check at most.

The pool is shared by the process, started on first use with the ``spawn`` method (forking a
process that runs threads is unsafe; a ``spawn`` worker imports the program's main module
again, so a script whose top level has no ``if __name__ == "__main__":`` guard gets no
workers at all: see :func:`main_is_guarded`) and stopped at exit; starting it takes about
0.7 s. It has one worker per core, none on a one-core machine; ``SEALTRAIL_VERIFY_WORKERS``
sets another number (``0``: always check in place, on this thread). A pool that breaks (a
worker killed) is dropped, the caller checks in place, and the next batch starts a new pool.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import itertools
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

from sealtrail.errors import InvalidSignature

from ._ecdsa import EcdsaVerifier
from ._ed25519 import Ed25519Verifier
from ._mldsa import MlDsaVerifier
from ._protocols import Verifier
from ._select import verifier_from_bytes

__all__ = [
    "SignatureJob",
    "broke",
    "check_signatures",
    "hash_holding_gil",
    "in_threads",
    "job",
    "main_is_guarded",
    "run",
    "shutdown",
    "submit",
    "warm",
    "workers",
]

log = logging.getLogger("sealtrail.keys")

#: A signature check a worker process can do: (algorithm, public key bytes, signature,
#: signed bytes or, if the last item is true, their hash). See :func:`job` and
#: :func:`check_signatures`.
SignatureJob = tuple[str, bytes, bytes, bytes, bool]
#: Keys a worker keeps loaded (an issuer's key is used for many statements in a row).
WORKER_KEY_CACHE = 1024

_A = TypeVar("_A")
_R = TypeVar("_R")

_disabled = False
_threads: ThreadPoolExecutor | None = None
_lock = threading.Lock()


#: The machine's cores, read once (``os.cpu_count`` reads a file on Linux; :func:`workers`
#: is asked on every registration).
_CORES = os.cpu_count() or 1


#: ``if __name__ == "__main__":``, as a program guards its top level.
_MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*(['"])__main__\1\s*:""", re.MULTILINE)


@functools.cache
def main_is_guarded() -> bool:
    """Whether the program's main module may be imported again by a worker process.

    A ``spawn`` worker imports the main module of the program that started it (as
    ``__mp_main__``): a script without an ``if __name__ == "__main__":`` guard would run its
    top level again in every worker — register its statements twice, say. Such a program
    gets no workers: every check is made in place. An interactive session or ``python -c``
    has no main module file to import. Read once.
    """
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is None:
        return True
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        source = ""
    if _MAIN_GUARD.search(source) is None:
        log.info(
            "signature checks stay in this process: the program's main module has no "
            'if __name__ == "__main__": guard, and worker processes would run it again'
        )
        return False
    return True


def workers() -> int:
    """How many worker processes the pool has (0: none, check in place)."""
    if not main_is_guarded():
        return 0
    configured = os.environ.get("SEALTRAIL_VERIFY_WORKERS")
    if configured is not None and configured.strip():
        try:
            return max(0, int(configured))
        except ValueError:
            log.warning("SEALTRAIL_VERIFY_WORKERS is not a number; using one worker per core")
    return _CORES if _CORES > 1 else 0


def signature_workers() -> int:
    """Workers of the pool :func:`submit` uses: one fewer than :func:`workers` (at least
    one, unless that is none), since its caller, an event loop, keeps a core busy itself.
    Measured on 2 cores, 20,000 ES256 registrations in one process: 9,300/s beside one
    worker, 8,300/s beside two."""
    count = workers()
    return count - 1 if count > 1 else count


class _Pool:
    """A process pool of ``size()`` workers, started on first use, restarted when the
    size asked for changes."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self.executor: ProcessPoolExecutor | None = None
        self._workers = 0
        #: Whether the current executor has finished a batch (one that breaks before it
        #: ever did cannot start its workers here, and is not tried again: see :func:`run`).
        self.proven = False

    def get(self) -> ProcessPoolExecutor | None:
        count = 0 if _disabled else self._size()
        with _lock:
            if self.executor is not None and self._workers != count:
                self.executor.shutdown(wait=False, cancel_futures=True)
                self.executor = None
            if self.executor is None and count > 0:
                self.executor = ProcessPoolExecutor(
                    max_workers=count,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_follow_parent,
                    initargs=(os.getpid(),),
                )
                self._workers, self.proven = count, False
            return self.executor

    def stop(self) -> ProcessPoolExecutor | None:
        with _lock:
            executor, self.executor = self.executor, None
        return executor


#: Seconds between a worker's looks at whether the process that started it still runs.
PARENT_CHECK = 1.0


def _follow_parent(parent: int) -> None:
    """A worker's initializer: exit once the process that started it is gone, and leave
    Ctrl-C to it.

    A worker holds both ends of its task queue's pipe, so a parent that dies without
    shutting the pool down (SIGKILL, a crash) would leave it waiting forever. SIGINT, sent
    to a terminal's whole process group, is ignored here: the parent stops gracefully and
    shuts the pool down (a worker interrupted mid-task would print a traceback, and break
    the pool under the work still in flight).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK)
        os._exit(0)

    threading.Thread(target=watch, name="sealtrail-parent-watch", daemon=True).start()


#: For :func:`run` (callers that wait: every core) and :func:`submit` (an event loop).
_checks = _Pool(workers)
_signatures = _Pool(signature_workers)


def run(fn: Callable[[_A], _R], chunks: Sequence[_A]) -> list[_R] | None:
    """``fn`` applied to every chunk by the pool's workers, results in order; ``None`` when
    there is no pool or it broke (the caller then does the work in place).

    ``fn`` must be a module-level function and the chunks picklable. An exception ``fn``
    raises in a worker is raised here. A pool that breaks is dropped and the next call
    starts another, unless it broke before finishing any batch: its workers cannot start
    in this process (with ``spawn`` they import the program's main module again, which
    must guard its top level with ``if __name__ == "__main__":``), so the pool stays off.
    """
    pool = _checks.get()
    if pool is None:
        return None
    try:
        results = list(pool.map(fn, chunks))
    except BrokenProcessPool:
        broke(pool)
        return None
    proven(pool)
    return results


def submit(fn: Callable[[_A], _R], chunk: _A) -> tuple[Future[_R], ProcessPoolExecutor] | None:
    """``fn(chunk)`` sent to a worker process (of :func:`signature_workers`) without
    waiting: the future and the pool it runs on, or ``None`` when there is no pool (the
    caller then does the work in place).

    A future that fails with :class:`BrokenProcessPool` means the caller must do the work
    in place and call :func:`broke` with the pool; :func:`proven` once a result came back.
    """
    pool = _signatures.get()
    if pool is None:
        return None
    try:
        return pool.submit(fn, chunk), pool
    except BrokenProcessPool:  # broke since the last result, and already knows it
        broke(pool)
        return None
    except RuntimeError:  # shut down meanwhile (the process is exiting)
        return None


def proven(pool: ProcessPoolExecutor) -> None:
    """A batch came back from ``pool``: its workers can start here."""
    for owner in (_checks, _signatures):
        if owner.executor is pool:
            owner.proven = True


def broke(pool: ProcessPoolExecutor) -> None:
    """Drop a pool that broke (a worker died); the next batch starts another, unless it
    broke before finishing any batch (its workers cannot start: the pools stay off)."""
    global _disabled  # noqa: PLW0603
    with _lock:
        owner = next((o for o in (_checks, _signatures) if o.executor is pool), None)
        if owner is None:
            return  # dropped already
        owner.executor = None
        if not owner.proven:
            _disabled = True
    log.warning(
        "the verification pool broke; checking in place%s",
        "" if owner.proven else " from now on (its workers could not start)",
    )
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)


def _ready(_: object) -> None:
    """A worker's first task: nothing (it proves the worker started)."""


def warm() -> Future[None] | None:
    """Start the pool's workers now rather than on the first batch (starting takes about
    0.7 s); the future resolves once one of them answered. ``None`` without a pool."""
    started = submit(_ready, None)
    return None if started is None else started[0]


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
    results: dict[int, _R] = {}
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
    return [results[position] for position in range(len(items))]


def shutdown() -> None:
    """Stop the pools and the helper threads (they start again on next use)."""
    global _threads
    pools = [_checks.stop(), _signatures.stop()]
    with _lock:
        threads, _threads = _threads, None
    for pool in pools:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if threads is not None:
        threads.shutdown(wait=True)


# -- statement signatures in a worker ----------------------------------------------------------

#: hashlib lets go of the GIL while it hashes an input of this many bytes or more.
_HASHLIB_GIL_MINSIZE = 2048


def hash_holding_gil(name: str, data: bytes) -> bytes:
    """``hashlib.new(name, data).digest()``, keeping the GIL for an input of a few KB.

    Hashing 2 KB takes ~1.5 µs, but a thread that let go of the GIL beside busy threads
    (an event loop's store writers) can wait a switch interval (5 ms) to win it back:
    measured, hashing a 2 KB statement cost 10 µs on average under load. Two halves each
    below hashlib's threshold keep the GIL; a large input is hashed in one go.
    """
    if len(data) >= 2 * _HASHLIB_GIL_MINSIZE - 1:
        return hashlib.new(name, data).digest()
    view = memoryview(data)
    half = len(data) // 2
    h = hashlib.new(name, view[:half])
    h.update(view[half:])
    return h.digest()


_worker_keys: dict[tuple[str, bytes], Verifier] = {}


def job(verifier: Verifier, *, signature: bytes, message: bytes) -> SignatureJob | None:
    """The check ``verifier.verify(signature=..., message=...)`` as a worker can redo it,
    or ``None`` for a verifier whose key cannot be rebuilt there from its bytes (anything
    but a software key of a known algorithm: check it in place).

    For ECDSA the worker is sent the message's hash, not the message (a statement is
    ~2 KB; its hash 32 or 48 bytes): less to copy between processes.
    """
    if isinstance(verifier, EcdsaVerifier):
        digest = hash_holding_gil(verifier.hash_name, message)
        return (verifier.algorithm, verifier.public_key_bytes(), signature, digest, True)
    if isinstance(verifier, Ed25519Verifier | MlDsaVerifier):
        return (verifier.algorithm, verifier.public_key_bytes(), signature, message, False)
    return None


def check_signatures(jobs: Sequence[SignatureJob]) -> list[str | None]:
    """Run in a worker: for each job, ``None`` if the signature verifies, else why not."""
    out: list[str | None] = []
    for algorithm, key, signature, data, prehashed in jobs:
        verifier = _worker_keys.get((algorithm, key))
        try:
            if verifier is None:
                if len(_worker_keys) >= WORKER_KEY_CACHE:
                    _worker_keys.clear()
                verifier = _worker_keys[algorithm, key] = verifier_from_bytes(algorithm, key)
            if prehashed:
                if not isinstance(verifier, EcdsaVerifier):
                    raise InvalidSignature(f"{algorithm} cannot be checked on a digest")
                verifier.verify_digest(signature=signature, digest=data)
            else:
                verifier.verify(signature=signature, message=data)
        except InvalidSignature as exc:
            out.append(exc.message)
        except Exception as exc:
            out.append(f"the key does not load: {type(exc).__name__}")
        else:
            out.append(None)
    return out


atexit.register(shutdown)
