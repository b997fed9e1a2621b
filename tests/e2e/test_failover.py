"""Three ``sealtrail serve`` processes on one PostgreSQL database, under load, while the
sequencer is killed with SIGKILL again and again, or stopped with SIGSTOP and let run again.

Afterwards every acknowledged statement is in the log exactly once (at the index its receipt
gave), every receipt a server gave out verifies offline against the log's root at its size,
the tree verifies from entry 0, every checkpoint any server published is consistent with the
next, and every stored statement reached the log. The time the log went without a
sequencer after each kill is measured and reported in the test summary.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from sealtrail.log._shared import ROLE_CHECK
from sealtrail.storage.postgres import ROLE_LEASE, ROLE_TAKEOVER_WAIT
from tests._serve_proc import allow_anonymous, onboard
from tests.conftest import report_figure
from tests.e2e._cluster import Cluster, Load, verify_history
from tests.e2e._pgcluster import private_postgres
from tests.integration.test_cli import sealtrail
from tests.unit.scitt._pki import make_issuer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KILLS = 3
#: The documented bound: a dead holder's lock goes with its connection, the next bid comes
#: within 0.25 s, then the tree is loaded (small here).
TAKEOVER_LIMIT = 5.0
#: The documented bound for a holder that stops: the server ends its lock session once it
#: has been idle for ROLE_LEASE, the next bid comes within ROLE_CHECK; stopped inside a
#: commit, the holder keeps the checkpoint row until the new one has waited
#: ROLE_TAKEOVER_WAIT for it; then the tree is loaded (small here) and the backlog fed.
#: Two seconds for a loaded machine (6.96 s measured during a full test run).
FROZEN_TAKEOVER_LIMIT = ROLE_LEASE + ROLE_CHECK + ROLE_TAKEOVER_WAIT + 2.0
#: Seconds the stopped holder stays stopped after another took over.
STOPPED_AFTER_TAKEOVER = 2.0


def _init(tmp_path: Path, url: str) -> str:
    """``sealtrail init -d d`` on the store ``url``: the administrator token."""
    result = sealtrail(
        "init", "-d", "d", "--origin", "failover.test/log", "--store", url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.strip().splitlines()[-1].strip()


def _init_open(tmp_path: Path, url: str) -> str:
    """:func:`_init`, the service open to anonymous writers: these tests are about
    fail-over and crash recovery, not access control, and their load registers without a
    token."""
    token = _init(tmp_path, url)
    allow_anonymous(tmp_path / "d")
    return token


@contextlib.contextmanager
def loaded(tmp_path: Path, url: str, servers: int) -> Iterator[tuple[Cluster, Load]]:
    """``servers`` servers of a new data directory on the store ``url``, an organization
    onboarded, and a load of 8 clients ready to run against them; stopped afterwards."""
    token = _init_open(tmp_path, url)
    cluster = Cluster(tmp_path, "d", servers)
    try:
        issuer = make_issuer()
        onboard(cluster.servers[0].url, token, issuer)
        yield cluster, Load(cluster, issuer, clients=8)
    finally:
        cluster.stop()


def stopped_and_verified(cluster: Cluster, load: Load, *, clean: bool = True) -> dict[str, float]:
    """Stop the servers once the last holder's feeder took in what was stored just before
    the load ended, then :func:`verify_history`. ``clean``: every server exited 0."""
    time.sleep(1.0)
    cluster.stop()
    if clean:
        assert all(s.proc.returncode == 0 for s in cluster.servers), "a server died"
    return verify_history(cluster, load)


def only_retryable_errors(load: Load, before: int) -> None:
    """The load went on past the outage, and its clients saw only 503s (retry later)."""
    assert before > 50 and len(load.acked) > before, (before, len(load.acked))
    unexpected = {k: v for k, v in load.errors.items() if not k.startswith("http 503")}
    assert not unexpected, f"clients saw errors other than 503 (retry later): {load.errors}"


def _grows(cluster: Cluster, since: float, size: int) -> float:
    """Seconds from ``since`` until some server's checkpoint is larger than ``size``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for server in cluster.live():
            try:
                r = httpx.get(server.url + "/checkpoint", timeout=2.0)
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and int(r.content.split(b"\n")[1]) > size:
                return time.monotonic() - since
        time.sleep(0.01)
    raise AssertionError("the log did not grow within 30 s of the kill")


def _stored(cluster: Cluster) -> tuple[int, int]:
    """The stored checkpoint's size and the role's epoch (servers may answer older sizes)."""
    with psycopg.connect(cluster.config.store_url, autocommit=True) as conn:
        row = conn.execute("SELECT size, epoch FROM log_checkpoint WHERE id = 0").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _size(cluster: Cluster) -> int:
    for server in cluster.live():
        try:
            r = httpx.get(server.url + "/checkpoint", timeout=2.0)
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            return int(r.content.split(b"\n")[1])
    return 0


def test_sigkill_of_the_sequencer_under_load_loses_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    gaps: list[float] = []
    with loaded(tmp_path, postgres_url, 3) as (cluster, load):
        with load.running():
            time.sleep(1.5)
            for _ in range(KILLS):
                holder = cluster.holder()
                assert holder is not None, "nobody holds the sequencer role"
                size = _size(cluster)
                os.kill(holder.proc.pid, signal.SIGKILL)
                killed = time.monotonic()
                holder.proc.wait()
                gaps.append(_grows(cluster, killed, size))
                cluster.start_one()  # keep three running
                time.sleep(1.5)
        figures = stopped_and_verified(cluster, load, clean=False)  # three were killed
    assert len(load.acked) > 100, f"too little load to mean anything: {len(load.acked)}"
    assert figures["receipts"] > 100, "too few receipts to check"
    refused = {k: v for k, v in load.errors.items() if k.startswith("http 4")}
    assert not refused, f"statements refused while servers changed hands: {refused}"
    assert max(gaps) < TAKEOVER_LIMIT, gaps
    report_figure(
        "fail-over",
        f"{KILLS} SIGKILLs of the sequencer among 3 servers: log grew again after "
        + ", ".join(f"{g:.2f}" for g in gaps)
        + f" s; {len(load.acked)} acknowledged, {int(figures['entries'])} entries, "
        f"{int(figures['checkpoints'])} checkpoints checked, {int(figures['receipts'])} "
        f"receipts verified, {load.retries} client retries {load.errors}",
    )


def test_a_stopped_sequencer_loses_the_role_and_is_fenced_when_it_runs_again(
    tmp_path: Path, postgres_url: str
) -> None:
    """The holder is stopped with SIGSTOP under load (a paused VM or container, a stuck
    event loop): its sessions stay open, and its kernel answers TCP keepalives. The server
    ends its lock session after ROLE_LEASE, another process takes the role, and when the
    stopped one runs again it has lost the role: what it was committing is fenced or rolled
    back, what it had accepted is appended by the new holder, and nothing is lost or
    appended twice."""
    with loaded(tmp_path, postgres_url, 3) as (cluster, load):
        with load.running():
            time.sleep(1.5)
            stopped = cluster.holder()
            assert stopped is not None, "nobody holds the sequencer role"
            cluster.pause(stopped)
            paused = time.monotonic()
            # What it had committed; nothing it sent before it stopped commits later (the
            # COMMIT of a batch goes after the answers to its writes).
            size, epoch = _stored(cluster)
            gap = _grows(cluster, paused, size)
            taker = cluster.holder()
            assert taker is not None and taker is not stopped, "the role did not pass on"
            assert _stored(cluster)[1] > epoch
            time.sleep(STOPPED_AFTER_TAKEOVER)
            size = _size(cluster)
            cluster.resume(stopped)
            # Running again, it follows the log as any other server: it answers a
            # checkpoint beyond the size the others had reached while it was stopped.
            deadline = time.monotonic() + 30
            while True:
                r = httpx.get(stopped.url + "/checkpoint", timeout=5.0)
                if r.status_code == 200 and int(r.content.split(b"\n")[1]) > size:
                    break
                assert time.monotonic() < deadline, "the resumed server does not follow"
                time.sleep(0.05)
            time.sleep(1.5)  # registrations through it again, in the load
            assert cluster.holder() is taker, "the resumed server took the role back"
            # One hand-over in all: no holder under this load lost the role spuriously.
            assert _stored(cluster)[1] == epoch + 1
        figures = stopped_and_verified(cluster, load)
    assert len(load.acked) > 100, f"too little load to mean anything: {len(load.acked)}"
    refused = {k: v for k, v in load.errors.items() if k.startswith("http 4")}
    assert not refused, f"statements refused while servers changed hands: {refused}"
    assert gap < FROZEN_TAKEOVER_LIMIT, gap
    report_figure(
        "stopped sequencer",
        f"SIGSTOP of the sequencer among 3 servers: log grew again after {gap:.2f} s "
        f"(lease {ROLE_LEASE:g} s); resumed {STOPPED_AFTER_TAKEOVER:g} s after the takeover; "
        f"{len(load.acked)} acknowledged, {int(figures['entries'])} entries, "
        f"{int(figures['checkpoints'])} checkpoints checked, {int(figures['receipts'])} "
        f"receipts verified, {load.retries} client retries {load.errors}",
    )


def test_a_postgresql_crash_and_restart_mid_load_loses_nothing(tmp_path: Path) -> None:
    """The database itself goes away (an immediate stop: no shutdown checkpoint, crash
    recovery at start) and comes back: the servers recover on their own, clients see only
    errors they can retry, and nothing acknowledged is lost."""
    with private_postgres() as pg, loaded(tmp_path, pg.url, 2) as (cluster, load):
        with load.running():
            time.sleep(2.0)
            before = len(load.acked)
            pg.crash()
            down = time.monotonic()
            time.sleep(2.0)
            pg.start()
            size = _size(cluster)
            recovered = _grows(cluster, down, size)
            time.sleep(2.0)
        figures = stopped_and_verified(cluster, load)
    only_retryable_errors(load, before)
    report_figure(
        "postgresql restart",
        f"crash + restart of PostgreSQL under load: log grew again {recovered:.2f} s after the "
        f"crash (2 s down); {len(load.acked)} acknowledged, {int(figures['entries'])} entries, "
        f"{int(figures['receipts'])} receipts verified; client retries {load.errors}",
    )
