"""The indexer takes no fact from a stored statement whose body is not the log's entry: an
insider who puts another (even validly signed) body in a registered statement's row and
has the index rebuilt gets the entry skipped with a code, and the audit names it."""

from __future__ import annotations

import dataclasses

import pytest

from sealtrail.provenance import Compliance, ComplianceState, ProvenanceLedger
from sealtrail.storage import MemoryIndex, StatementRecord

from ._signed import signed_chain
from ._world import OPERATOR

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_swapped_body_gives_no_fact() -> None:
    async with signed_chain() as chain:
        await chain.journey()
        await chain.indexed()
        size = chain.sequencer.reader.size()
        last = chain.sequencer.reader.entries(size - 1, size)[0]  # verified -> production
        # A statement the operator really signed, never registered: srv-1 non-compliant.
        other = chain.sign(
            OPERATOR,
            Compliance("srv-1", ComplianceState.PRODUCTION, ComplianceState.NON_COMPLIANT, "x"),
        )

        def statement(leaf: bytes) -> StatementRecord | None:
            record = chain.store.get_statement(leaf)
            if leaf == last and record is not None:
                return dataclasses.replace(record, body=other)
            return record

        rebuilt = MemoryIndex()
        ledger = ProvenanceLedger(
            rebuilt, statement=statement, org_of=chain.service.registry.name_of
        )
        ledger.catch_up(chain.sequencer.reader)
        (entry,) = rebuilt.entries(size - 1, size)
        assert (entry.outcome, entry.code) == ("skipped", "index-statement-altered")
        row = rebuilt.row("compliance", "srv-1")
        assert row is not None and '"state":"verified"' in row
