"""Benchmark of the verifiable log on SQLite, with pymerkle's SQLite tree as the peer.

Run with ``sealtrail bench log [--json|--table]``. Every figure comes from this one process
run, on fresh stores in a temporary directory; every round's append rates are listed
under ``append_rounds``, every round's inclusion-proof rates under ``proof_rounds``.
pymerkle (GPL) is imported here only: the ``sealtrail`` package never imports it.

Figures (name -> number):
  append_entries_per_s                    256-byte entries, batches of 16384, each batch durable
                                          (committed with its signed checkpoint) before the next;
                                          the median of --rounds rounds (default 3)
  peer_pymerkle_append_entries_per_s      the same entries, pymerkle SqliteTree.append_entries
                                          in batches of 16384 (one transaction each); in each
                                          round ours and pymerkle's run on fresh stores, first
                                          one then the other in turn, each on a settled disk
  inclusion_proofs_per_s_1e3              random-index proofs from a cold reader, 10^3 entries;
                                          the median of --rounds rounds, alternating with 10^6
  inclusion_proofs_per_s_1e6              the same at 10^6 entries (default --entries)
  inclusion_proofs_per_s_1e3_warm         then as many again from that reader, at fresh random
  inclusion_proofs_per_s_1e6_warm         indexes: its tile cache holds what the cold proofs
                                          read (the steady state of a server); every round's
                                          rates under ``warm_proof_rounds``
  peer_pymerkle_inclusion_proofs_per_s_1e6  pymerkle prove_inclusion on its 10^6 tree
  consistency_proofs_per_s_1e6            random older size -> latest, 10^6 entries
  proof_verifications_per_s               inclusion proofs verified (RFC 9162 check), 10^6
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sealtrail.cli.bench import bench_module
from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, LogReader, Sequencer, SequencerConfig
from sealtrail.storage import PostgresStore, SQLiteStore

ENTRY_SIZE = 256
BATCH = 16384
#: Submitted batches awaiting durability at once (lets the loop cut full batches back to back).
IN_FLIGHT = 3
#: Rounds of the append comparison (ours, then pymerkle's, in turn); each figure is the
#: median of its rounds, as single runs on a shared disk vary by 10-20% either way.
APPEND_ROUNDS = 3
#: Bytes written and freed before each timed append, per entry appended (see _settle_disk):
#: about twice what either store writes for an entry of ENTRY_SIZE bytes.
SETTLE_PER_ENTRY = 768

Report = Callable[[str, int, int], None]


def _entries(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(ENTRY_SIZE) for _ in range(count)]


SIGNER = CheckpointSigner(origin="bench.sealtrail.localhost/log", signer=Ed25519Signer.generate())


AnyStore = SQLiteStore | PostgresStore


#: Fresh schemas and redacted URLs, shared with bench/register.py.
_POSTGRES = bench_module(Path(__file__).with_name("_postgres.py"))
_redacted = _POSTGRES.redacted


def _cold_reader(store: AnyStore) -> LogReader:
    """A reader with an empty tile cache, as a freshly started server has."""
    return LogReader(store, origin=SIGNER.origin, verifiers=[SIGNER.verifier])


def _append_sealtrail(
    path: Path | str, entries: list[bytes], report: Report, synchronous: str = "FULL"
) -> tuple[float, AnyStore]:
    """Append ``entries`` to a fresh store: a SQLite file at ``path``, or the PostgreSQL
    schema a ``postgresql://`` URL names."""
    store: AnyStore = (
        PostgresStore(path) if isinstance(path, str) else SQLiteStore(path, synchronous=synchronous)
    )
    signer = SIGNER
    config = SequencerConfig(max_batch=BATCH, max_delay=0.005, max_pending=BATCH * (IN_FLIGHT + 1))

    async def run() -> float:
        async with Sequencer(store, signer=signer, config=config) as seq:
            pending: list[asyncio.Future[list[int]]] = []
            start = time.perf_counter()
            for pos in range(0, len(entries), BATCH):
                chunk = entries[pos : pos + BATCH]
                pending.append(asyncio.ensure_future(seq.add_many(chunk)))
                if len(pending) >= IN_FLIGHT:
                    await pending.pop(0)
                report("sealtrail append", pos + len(chunk), len(entries))
            for fut in pending:
                await fut
            return time.perf_counter() - start

    return asyncio.run(run()), store


def _append_pymerkle(path: Path, entries: list[bytes], report: Report) -> tuple[float, Any]:
    from pymerkle import SqliteTree  # benchmark-only peer (GPL), never imported by the package

    tree = SqliteTree(str(path))
    start = time.perf_counter()
    for pos in range(0, len(entries), BATCH):
        tree.append_entries(entries[pos : pos + BATCH])
        report("pymerkle append", pos + BATCH, len(entries))
    return time.perf_counter() - start, tree


def _quiet(_what: str, _done: int, _total: int) -> None:
    pass


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def _time(fn: Callable[[], object], count: int) -> float:
    gc.collect()  # every timed section starts from a collected heap, ours and the peer's alike
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return time.perf_counter() - start


def _settle_disk(root: Path, size: int) -> bool:
    """Write ``size`` bytes to a scratch file, make them durable, and delete it; False if
    the disk had no room for them.

    Run before every timed append, ours and the peer's alike, so that each writes onto
    blocks the file system has just freed. On the development machine's virtual disk, writes
    onto blocks just freed went markedly faster than writes onto others, and without this
    step the two sides did not write alike: with ours always first, pymerkle's rate
    measured ~240,000/s where on a settled disk it made ~300,000/s.
    """
    scratch = root / "settle.tmp"
    block = os.urandom(1 << 20)
    try:
        with scratch.open("wb") as f:
            for _ in range(max(1, size >> 20)):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # a disk without room for it (ENOSPC): measure unsettled, and say so
        return False
    finally:
        scratch.unlink(missing_ok=True)
    return True


def _append_rounds(
    root: Path, data: list[bytes], rounds: int, synchronous: str, report: Report
) -> tuple[list[float], list[float], SQLiteStore, Any, bool]:
    """Append ``data`` to fresh stores, ours and pymerkle's, ``rounds`` times: the rates of
    each round, and the last round's two stores (the proofs are taken from them).

    Which side goes first alternates from round to round, and before each timed append the
    disk is settled (:func:`_settle_disk`): neither side writes in the other's wake. The
    last item says whether every settling went through.
    """
    ours: list[float] = []
    peers: list[float] = []
    settle = len(data) * SETTLE_PER_ENTRY
    settled = True
    for r in range(rounds):
        for side in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
            settled = _settle_disk(root, settle) and settled
            if side == "ours":
                elapsed, big = _append_sealtrail(root / f"log-{r}.db", data, report, synchronous)
                ours.append(_rate(len(data), elapsed))
            else:
                peer_elapsed, peer_tree = _append_pymerkle(root / f"pymerkle-{r}.db", data, report)
                peers.append(_rate(len(data), peer_elapsed))
        if r < rounds - 1:  # only the last round's stores are kept
            big.close()
            peer_tree.close()
            for path in root.glob(f"*-{r}.db*"):
                path.unlink()
    assert isinstance(big, SQLiteStore)
    return ours, peers, big, peer_tree, settled


def run(
    *,
    entries: int = 1_000_000,
    proofs: int = 20_000,
    append_rounds: int = APPEND_ROUNDS,
    seed: int = 1,
    synchronous: str = "FULL",
    store: str | None = None,
    report: Report,
) -> dict[str, Any]:
    if store is not None:
        _POSTGRES.check(store)  # a server that cannot be reached fails now, not minutes on
    figures: dict[str, float] = {}
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sealtrail-bench-") as tmp:
        root = Path(tmp)
        data = _entries(entries, seed)

        ours, peers, big, peer_tree, settled = _append_rounds(
            root, data, append_rounds, synchronous, report
        )
        figures["append_entries_per_s"] = statistics.median(ours)
        figures["peer_pymerkle_append_entries_per_s"] = statistics.median(peers)
        del data

        _, small_store = _append_sealtrail(root / "small.db", _entries(1000, seed + 1), _quiet)
        report("inclusion proofs", 0, proofs)
        proof_rounds, warm_rounds, cold = _proof_rounds(
            {1000: small_store, entries: big}, proofs, append_rounds, rng
        )
        for size, rates in proof_rounds.items():
            figures[f"inclusion_proofs_per_s_{_tag(size)}"] = statistics.median(rates)
        for size, rates in warm_rounds.items():
            figures[f"inclusion_proofs_per_s_{_tag(size)}_warm"] = statistics.median(rates)

        peer_count = max(1, proofs // 10)
        it = iter(rng.randrange(entries) for _ in range(peer_count))
        report("pymerkle proofs", 0, peer_count)
        figures[f"peer_pymerkle_inclusion_proofs_per_s_{_tag(entries)}"] = _rate(
            peer_count, _time(lambda: peer_tree.prove_inclusion(next(it) + 1, entries), peer_count)
        )
        peer_tree.close()

        sizes = iter(rng.randrange(1, entries) for _ in range(proofs))
        report("consistency proofs", 0, proofs)
        figures[f"consistency_proofs_per_s_{_tag(entries)}"] = _rate(
            proofs, _time(lambda: cold.consistency_proof(next(sizes), entries), proofs)
        )

        latest = cold.checkpoint()
        assert latest is not None
        sample = [cold.inclusion_proof(rng.randrange(entries), size=entries) for _ in range(2000)]
        rounds = max(1, proofs // len(sample))
        gc.collect()
        start = time.perf_counter()
        for _ in range(rounds):
            for proof in sample:
                proof.verify(latest.root)
        figures["proof_verifications_per_s"] = _rate(
            rounds * len(sample), time.perf_counter() - start
        )
        big.close()
        small_store.close()
        if store is not None:
            figures.update(_postgres_figures(store, entries, proofs, seed, report))
    return {
        "benchmark": "log",
        "params": {
            "entries": entries,
            "entry_size": ENTRY_SIZE,
            "batch": BATCH,
            "sqlite_synchronous": synchronous,
            "postgresql": None if store is None else _redacted(store),
            "proofs": proofs,
            "append_rounds": append_rounds,
            "append_order": "alternating; disk settled before each timed append",
            "settle_bytes_per_entry": SETTLE_PER_ENTRY,
            "disk_settled": settled,
            "seed": seed,
        },
        "machine": {"cpus": os.cpu_count()},
        "figures": figures,
        "append_rounds": {"sealtrail": ours, "pymerkle": peers},
        "proof_rounds": {_tag(size): rates for size, rates in proof_rounds.items()},
        "warm_proof_rounds": {_tag(size): rates for size, rates in warm_rounds.items()},
    }


def _proof_rounds(
    stores: dict[int, AnyStore], proofs: int, rounds: int, rng: random.Random
) -> tuple[dict[int, list[float]], dict[int, list[float]], LogReader]:
    """Inclusion proofs at each size (its store), ``rounds`` times in turn, each round from
    a cold reader and at fresh random indexes, then as many again from that reader, warm:
    the cold and the warm rates by size, and the last round's reader of the largest store."""
    rates: dict[int, list[float]] = {size: [] for size in stores}
    warm: dict[int, list[float]] = {size: [] for size in stores}
    cold = None
    for _ in range(rounds):
        for size, store in stores.items():
            cold = _cold_reader(store)
            for out in (rates, warm):
                indexes = iter([rng.randrange(size) for _ in range(proofs)])

                def prove(
                    reader: LogReader = cold, n: int = size, at: Iterator[int] = indexes
                ) -> object:
                    return reader.inclusion_proof(next(at), size=n)

                out[size].append(_rate(proofs, _time(prove, proofs)))
    assert cold is not None
    return rates, warm, cold


def _tag(n: int) -> str:
    exp = len(str(n)) - 1
    return f"1e{exp}" if n == 10**exp else str(n)


def _postgres_figures(
    url: str, entries: int, proofs: int, seed: int, report: Report
) -> dict[str, float]:
    """The append and proof figures again, on PostgreSQL (``postgresql_`` + their names)."""
    rng = random.Random(seed)
    figures: dict[str, float] = {}
    with _POSTGRES.fresh_schema(url) as schema_url:
        elapsed, big = _append_sealtrail(schema_url, _entries(entries, seed), report)
        try:
            figures["postgresql_append_entries_per_s"] = _rate(entries, elapsed)
            cold = _cold_reader(big)
            it = iter([rng.randrange(entries) for _ in range(proofs)])
            report("postgresql inclusion proofs", 0, proofs)
            figures[f"postgresql_inclusion_proofs_per_s_{_tag(entries)}"] = _rate(
                proofs, _time(lambda: cold.inclusion_proof(next(it), size=entries), proofs)
            )
            sizes = iter(rng.randrange(1, entries) for _ in range(proofs))
            figures[f"postgresql_consistency_proofs_per_s_{_tag(entries)}"] = _rate(
                proofs, _time(lambda: cold.consistency_proof(next(sizes), entries), proofs)
            )
        finally:
            big.close()
    return figures
