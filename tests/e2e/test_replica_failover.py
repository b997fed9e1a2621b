"""The database's own fail-over (docs/deploy.md, failure modes): the primary is lost under
load, and its streaming replica is promoted in its place.

The servers name both nodes in one multi-host URL with ``target_session_attrs=read-write``,
as docs/deploy.md asks, so they find the new primary by themselves. Replication is
synchronous (``synchronous_standby_names``; the servers commit with ``synchronous_commit =
on``): every registration answered was flushed on the replica first, so nothing
acknowledged may be missing from the promoted one, and the log on it must extend every
checkpoint the servers published.

With asynchronous replication, as docs/deploy.md warns, a replica that fell behind loses
what it had not received: the promoted log is shorter than checkpoints already published.
That must be caught — by the servers, which sign nothing over it, by every command of the
data directory, and by anyone holding a published checkpoint — never served as the log.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from sealtrail.errors import Corruption
from sealtrail.log import verify_checkpoint
from sealtrail.service._runtime import SEEN_PERIOD
from tests.conftest import report_figure
from tests.e2e._pgcluster import PrivatePostgres, private_postgres, private_standby
from tests.e2e.test_failover import (
    _grows,
    _size,
    loaded,
    only_retryable_errors,
    stopped_and_verified,
)
from tests.integration.test_cli import assert_clean_error, sealtrail

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STANDBY = "sealtrail_standby"


def _both(primary: PrivatePostgres, standby: PrivatePostgres) -> str:
    """The URL docs/deploy.md gives: both nodes, connecting to whichever accepts writes."""
    return (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
        "/postgres?target_session_attrs=read-write"
    )


def test_the_primary_lost_and_its_synchronous_replica_promoted_mid_load_loses_nothing(
    tmp_path: Path,
) -> None:
    with private_postgres() as primary, private_standby(primary, STANDBY) as standby:
        primary.replicate_synchronously(STANDBY)
        with loaded(tmp_path, _both(primary, standby), 2) as (cluster, load):
            with load.running():
                time.sleep(2.0)
                before = len(load.acked)
                size = _size(cluster)
                primary.crash()
                lost = time.monotonic()
                standby.promote()
                promoted = time.monotonic() - lost
                recovered = _grows(cluster, lost, size)
                time.sleep(2.0)
            figures = stopped_and_verified(cluster, load)  # read from the promoted replica
    only_retryable_errors(load, before)
    report_figure(
        "replica fail-over",
        f"primary lost under load, its synchronous replica promoted ({promoted:.2f} s): the log "
        f"grew again {recovered:.2f} s after the loss; {len(load.acked)} acknowledged, "
        f"{int(figures['entries'])} entries, {int(figures['receipts'])} receipts verified; "
        f"client retries {load.errors}",
    )


def test_a_lagging_replica_promoted_is_caught_and_nothing_is_signed_over_it(
    tmp_path: Path,
) -> None:
    with (
        private_postgres() as primary,
        private_standby(primary, STANDBY) as standby,
        loaded(tmp_path, _both(primary, standby), 2) as (cluster, load),
    ):
        with load.running():
            time.sleep(1.0)
            standby.stop_receiving()  # from here on, only the primary has the log
            time.sleep(SEEN_PERIOD + 2.0)  # the servers publish, and keep, newer ones
            published = load.checkpoints[-1]
            primary.crash()
            standby.promote()
            time.sleep(3.0)
            store, reader = cluster.reader()  # the promoted replica
            try:
                promoted = store.read_checkpoint()
                time.sleep(3.0)  # the load goes on against it meanwhile
                later = store.read_checkpoint()
            finally:
                store.close()
            # The servers refuse to serve it, by name: it went back from what they saw.
            for server in cluster.live():
                answer = httpx.get(server.url + "/checkpoint", timeout=5.0)
                assert answer.status_code == 500, answer.text
                assert answer.json()["code"] == "store-log-rolled-back", answer.text
        cluster.stop()
        # Every command of the data directory refuses the shorter log: its servers kept
        # the newest checkpoint they saw (seen-checkpoint).
        verified = sealtrail("log", "verify", "-d", "d", cwd=tmp_path)
        assert_clean_error(verified, "store-log-rolled-back")
        served = sealtrail("serve", "-d", "d", "--port", "0", cwd=tmp_path)
        assert_clean_error(served, "store-log-rolled-back")
    assert promoted is not None and later is not None
    newest = verify_checkpoint(published, origin=reader.origin, verifiers=reader.verifiers)
    assert promoted.size < newest.size, "the replica lost nothing: the test proves nothing"
    # No server signed a checkpoint over the shorter log: its sizes are ones clients saw.
    assert later.note == promoted.note, (promoted.size, later.size)
    # Anyone holding a published checkpoint finds the promoted log behind it.
    shorter = verify_checkpoint(promoted.note, origin=reader.origin, verifiers=reader.verifiers)
    with pytest.raises(Corruption) as behind:
        reader.check_extends(newest, shorter)
    assert behind.value.code == "log-rolled-back"
    report_figure(
        "lagging replica",
        f"asynchronous replica promoted {newest.size - promoted.size} entries behind the "
        f"newest published checkpoint (size {newest.size}): refused by the servers, log "
        "verify, serve and a consistency check",
    )
