"""A claim row written into the index by hand holds nothing for longer than a real claim.

No process claims the index for longer than ``CLAIM_TTL``, so a stored claim that expires
further ahead than ``CLAIM_HORIZON`` (the TTL and a clock's slack) was forged: it is taken
as lapsed (not listed, in nobody's way) and the next claim deletes it. Without the bound,
one row with an expiry of 10^15 s blocked every server, rebuild and audit for ever.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sealtrail.errors import Conflict, InvalidInput
from sealtrail.storage import CLAIM_TTL, IndexStore, MemoryIndex, PostgresIndex, SQLiteIndex
from sealtrail.storage._index import CLAIM_HORIZON

SERVER = "sealtrail serve host/1 #aa"
REBUILD = "sealtrail index rebuild host/2 #bb"
FORGER = "sealtrail serve evil/1 #cc"

#: Inserts a claim row as an insider would: ``(holder, exclusive, expiry)``, the expiry
#: in seconds from the store's clock when a float, else as given.
Forge = Callable[[object, bool, object], None]


@dataclass
class Store:
    index: IndexStore
    forge: Forge
    #: how many claim rows are stored, lapsed and forged ones included
    stored: Callable[[], int]
    backend: str


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "provenance.db"
        index = SQLiteIndex(path)

        def forge_sqlite(holder: object, exclusive: bool, expires: object) -> None:
            if isinstance(expires, float):
                expires = time.time() + expires
            index.execute(
                "INSERT INTO idx_claims (holder, exclusive, expires) VALUES (?, ?, ?)",
                (holder, int(exclusive), expires),
            )

        def stored_sqlite() -> int:
            with closing(sqlite3.connect(path)) as conn:
                return int(conn.execute("SELECT count(*) FROM idx_claims").fetchone()[0])

        yield Store(index, forge_sqlite, stored_sqlite, "sqlite")
        index.close()
        return
    url = request.getfixturevalue("postgres_url")
    pg = PostgresIndex(url)

    def forge_pg(holder: object, exclusive: bool, expires: object) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            if isinstance(expires, float):
                conn.execute(
                    "INSERT INTO idx_claims (holder, exclusive, expires) VALUES"
                    " (%s, %s, extract(epoch FROM clock_timestamp()) + %s)",
                    (holder, exclusive, expires),
                )
            else:
                conn.execute(
                    "INSERT INTO idx_claims (holder, exclusive, expires) VALUES (%s, %s, %s)",
                    (holder, exclusive, expires),
                )

    def stored_pg() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            found = conn.execute("SELECT count(*) FROM idx_claims").fetchone()
            return 0 if found is None else int(found[0])

    yield Store(pg, forge_pg, stored_pg, "postgres")
    pg.close()


def test_a_claim_expiring_far_ahead_holds_nothing_and_is_dropped(store: Store) -> None:
    index, forge = store.index, store.forge
    forge(FORGER, True, 1e15)  # "lapses within 999998203338731 s"
    assert index.claims() == []  # not a claim: `index status` shows no holder
    assert store.stored() == 1  # reads leave it
    index.claim(SERVER)  # a server starts
    assert store.stored() == 1  # the server's own: the forged row was dropped
    index.release(SERVER)
    index.claim(REBUILD, exclusive=True)  # and a rebuild runs
    with pytest.raises(Conflict, match="being rebuilt by " + REBUILD):
        index.claim(SERVER)  # the rebuild's own claim is a real one
    index.release(REBUILD)
    forge(FORGER, False, 1e15)  # a forged server's claim stops no rebuild either
    index.claim(REBUILD, exclusive=True)
    assert [holder for holder, _, _ in index.claims()] == [REBUILD]
    index.release(REBUILD)
    assert index.claims() == []


def test_expiries_no_clock_reaches_hold_nothing(store: Store) -> None:
    index, forge = store.index, store.forge
    if store.backend == "sqlite":  # SQLite keeps a word or bytes where a number belongs
        forge(FORGER, True, "forever")
        forge(b"\xffevil", True, b"\xff")
        forge("sealtrail serve evil/2 #dd", True, float("inf"))
    else:
        forge(FORGER, True, "Infinity")
        forge("sealtrail serve evil/2 #dd", True, "NaN")
    assert index.claims() == []
    index.claim(REBUILD, exclusive=True)
    assert [holder for holder, _, _ in index.claims()] == [REBUILD]
    assert store.stored() == 1


def test_the_bound_is_the_ttl_and_the_clock_slack(store: Store) -> None:
    """A claim a little beyond the TTL (the clock set back while it runs) still stands;
    one beyond the horizon does not, and every refusal says a claim lapses soon."""
    index, forge = store.index, store.forge
    assert CLAIM_TTL < CLAIM_HORIZON <= CLAIM_TTL + 60
    forge(SERVER, False, CLAIM_TTL + (CLAIM_HORIZON - CLAIM_TTL) / 2)
    forge(FORGER, False, CLAIM_HORIZON + 60.0)
    assert [holder for holder, _, _ in index.claims()] == [SERVER]
    with pytest.raises(Conflict, match=f"in use by {SERVER}") as refused:
        index.claim(REBUILD, exclusive=True)
    assert refused.value.code == "index-in-use"
    assert re.search(r"lapses within \d\d s", refused.value.hint)  # 45 s, not 10^15


@pytest.mark.parametrize("ttl", [CLAIM_TTL + 0.5, 60.0, 3600.0])
def test_no_claim_is_taken_for_longer_than_the_ttl(tmp_path: Path, ttl: float) -> None:
    """What ``claim`` refuses is what the stores take for forged: a claim no process makes."""
    sqlite = SQLiteIndex(tmp_path / "provenance.db")
    try:
        for index in (MemoryIndex(), sqlite):
            with pytest.raises(InvalidInput) as refused:
                index.claim(SERVER, ttl=ttl)
            assert refused.value.code == "claim-invalid"
            index.claim(SERVER, ttl=CLAIM_TTL)
            assert [holder for holder, _, _ in index.claims()] == [SERVER]
    finally:
        sqlite.close()
