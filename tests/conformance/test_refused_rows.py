"""``refused_rows``, what ``sealtrail index status`` reports, lists on every backend the rows
a sequencer's backlog refuses: each row no server stored whose entry is not in the log,
below the sequenced watermark as above it, with why; never a row the log holds, whatever
its tag; and it writes nothing.
"""

from __future__ import annotations

import asyncio

from sealtrail.keys import ES256
from sealtrail.log import LogReader, Sequencer
from sealtrail.scitt import StatementBacklog
from sealtrail.scitt._rows import refused_rows
from tests._serve_proc import statement_for
from tests.conformance.conftest import StoreFactory
from tests.conformance.test_statement_rows import ROWS, _checkpoints, _record, _store, _tampered
from tests.unit.scitt._pki import make_issuer


def test_the_rows_listed_are_the_rows_a_backlog_refuses(store_factory: StoreFactory) -> None:
    store = _store(store_factory)
    issuer = make_issuer(ES256, cn="Refused")
    signer = _checkpoints()
    # Stored before the tags and appended then: in the log, so refused by nobody.
    old = [_record(statement_for(issuer, 90 + n), tag=False) for n in range(2)]
    store.put_statements(old)

    async def append() -> None:
        async with Sequencer(store, signer=signer) as sequencer:
            await sequencer.add_many([r.entry_id for r in old])

    asyncio.run(append())
    planted = _tampered(store, issuer)
    reader = LogReader(store, origin=signer.origin, verifiers=[signer.verifier])
    backlog = StatementBacklog(store, ROWS, reader)
    refused = [seq for seq, entry in backlog.entries_since(0, limit=100) if entry is None]
    assert refused[: len(old)] == [1, 2]  # given as None, not reported: in the log
    assert backlog.refused == len(planted.refused)
    before = store.backlog_since(-1, limit=100), store.read_sequenced(), reader.size()
    for step in (1, 3, 100):  # across the steps it reads
        found = list(refused_rows(store, ROWS, reader, step=step))
        assert [row.seq for row, _ in found] == planted.refused
        assert [row for row, _ in found] == [
            r for r in store.backlog_since(-1, limit=100) if r.seq in planted.refused
        ]
        assert {problem for _, problem in found} == {
            "its authentication tag does not verify",
            "it carries no authentication tag",
        }
    assert (store.backlog_since(-1, limit=100), store.read_sequenced(), reader.size()) == before
    # Below the watermark (the feeder moved on) they are listed all the same.
    store.write_sequenced(before[0][-1].seq)
    assert [row.seq for row, _ in refused_rows(store, ROWS, reader)] == planted.refused
