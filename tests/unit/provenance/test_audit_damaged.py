"""The audit over an index holding values it could not have written: each is named as an
edit of its row or entry, and every other edit is still named. One undecodable byte used to
stop the whole audit (a storage error on SQLite, corruption on PostgreSQL) and hide the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from sealtrail.provenance import AuditReport, audit_log
from sealtrail.storage import IndexStore, PostgresIndex, SQLiteIndex

from ._signed import SERVICE, SignedChain, signed_chain

pytestmark = pytest.mark.anyio

#: Runs one SQL statement on the index behind its back.
Edit = Callable[[str], None]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def audit(chain: SignedChain) -> AuditReport:
    return audit_log(
        chain.sequencer.reader,
        chain.store.get_statement,
        chain.index,
        issuer=SERVICE,
        service_keys=dict(chain.service.keys),
    )


@asynccontextmanager
async def journeyed(index: IndexStore) -> AsyncIterator[SignedChain]:
    async with signed_chain(index=index) as chain:
        await chain.journey("srv-1", "ship-1")
        await chain.indexed()
        assert audit(chain).ok
        yield chain


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def damaged(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[IndexStore, Edit, str]]:
    """An index, a way to edit it behind its back, and how to write bytes (``{0}`` their
    hex) as a value of its text columns."""
    if request.param == "sqlite":
        sqlite = SQLiteIndex(tmp_path / "provenance.db")
        yield sqlite, sqlite.execute, "CAST(x'{0}' AS TEXT)"
        sqlite.close()
        return
    url = request.getfixturevalue("postgres_url")
    pg = PostgresIndex(url)

    def edit(sql: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.encode())

    yield pg, edit, "'\\x{0}'::bytea"
    pg.close()


def _literal(text: str, raw: str) -> str:
    return raw.format(text.encode().hex())


async def test_an_undecodable_row_is_named_and_the_rest_compared(
    damaged: tuple[IndexStore, Edit, str],
) -> None:
    index, edit, raw = damaged
    async with journeyed(index) as chain:
        rows = list(index.dump_rows())
        (t1, k1, _), (t2, k2, _) = rows[0], rows[-1]
        # One byte that is not UTF-8 before the value, and another row edited after it.
        where1 = f"tbl = {_literal(t1, raw)} AND key = {_literal(k1, raw)}"
        edit(f"UPDATE idx_rows SET value = {raw.format('ff')} || value WHERE {where1}")
        where2 = f"tbl = {_literal(t2, raw)} AND key = {_literal(k2, raw)}"
        edit(f"UPDATE idx_rows SET value = {_literal('{}', raw)} WHERE {where2}")
        report = audit(chain)
        found = {f.where: f.what for f in report.findings}
        assert list(found) == [f"row {t1}/{k1}", f"row {t2}/{k2}"], report.findings
        assert found[f"row {t1}/{k1}"].startswith("edited behind the log: holds \\xff{")
        assert "(bytes that are not UTF-8 text), the log gives {" in found[f"row {t1}/{k1}"]
        assert found[f"row {t2}/{k2}"].startswith("edited behind the log: holds {}, the log")
        assert report.entries == chain.sequencer.reader.size()


async def test_undecodable_changes_and_entries_are_named(
    damaged: tuple[IndexStore, Edit, str],
) -> None:
    index, edit, raw = damaged
    async with journeyed(index) as chain:
        changes = list(index.dump_changes())
        first, last = changes[0], changes[-1]
        edit(
            f"UPDATE idx_changes SET key = {raw.format('ff')} WHERE idx = {first[0]}"
            f" AND pos = {first[1]}"
        )
        edit(
            f"UPDATE idx_changes SET value = {_literal('[]', raw)} WHERE idx = {last[0]}"
            f" AND pos = {last[1]}"
        )
        entries = list(index.dump_entries())
        kinded = next(e for e in entries if e.kind)
        edit(f"UPDATE idx_entries SET kind = {raw.format('c3')} WHERE idx = {kinded.index}")
        edit(
            f"UPDATE idx_entries SET org = {_literal('rogue', raw)} WHERE idx = {entries[-1].index}"
        )
        found = {f.where: f.what for f in audit(chain).findings}
        assert list(found) == [
            f"change {first[0]}/{first[1]}",
            f"change {last[0]}/{last[1]}",
            f"entry {kinded.index}",
            f"entry {entries[-1].index}",
        ], found
        assert f"holds {first[2]}/\\xff = " in found[f"change {first[0]}/{first[1]}"]
        assert found[f"entry {kinded.index}"].startswith(
            f"edited behind the log: kind \\xc3 (bytes that are not UTF-8 text) where the log "
            f"gives {kinded.kind}"
        )
        assert "org rogue where the log gives" in found[f"entry {entries[-1].index}"]


async def test_values_of_another_type_are_named(tmp_path: Path) -> None:
    """SQLite keeps any type: an entry id stored as 32 characters is named as an edit of its
    entry; a word where a change's index belongs stops the comparison of the changes alone
    (it sorts after every number: the changes before it were compared)."""
    index = SQLiteIndex(tmp_path / "provenance.db")
    try:
        async with journeyed(index) as chain:
            entries = list(index.dump_entries())
            index.execute(
                "UPDATE idx_entries SET entry_id = hex(randomblob(16)) WHERE idx = ?",
                (entries[3].index,),
            )
            changes = list(index.dump_changes())
            index.execute(
                "UPDATE idx_changes SET idx = 'x' WHERE idx = ? AND pos = ?", changes[-1][:2]
            )
            report = audit(chain)
            found = {f.where: f.what for f in report.findings}
            assert list(found) == ["index changes", f"entry {entries[3].index}"]
            # The moved change is not named as deleted: the comparison stopped short of it.
            assert found["index changes"].startswith(
                f"cannot be read on after change {changes[-2][0]}/{changes[-2][1]}: the "
                "index's idx_changes.idx holds text where an integer belongs"
            )
            assert found[f"entry {entries[3].index}"].startswith(
                "edited behind the log: entry_id a value stored as another type than bytes "
                "where the log gives "
            )
    finally:
        index.close()


async def test_a_key_turned_into_a_blob_is_named(tmp_path: Path) -> None:
    """SQLite never takes a BLOB for the text of the same bytes: a row whose key was turned
    into one is no longer found by its key (the server reads it as absent), so the audit
    must not read it as the text it was."""
    index = SQLiteIndex(tmp_path / "provenance.db")
    try:
        async with journeyed(index) as chain:
            index.execute(
                "UPDATE idx_rows SET key = CAST(key AS BLOB) "
                "WHERE tbl = 'compliance' AND key = 'srv-1'"
            )
            assert index.row("compliance", "srv-1") is None
            report = audit(chain)
            assert not report.ok
            assert any("compliance" in f.where for f in report.findings), report.findings
    finally:
        index.close()
