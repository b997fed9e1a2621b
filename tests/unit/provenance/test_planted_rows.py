"""Someone who can write to the database plants a row under the entry id of a statement
before it is registered: untagged, or over a body that is not the statement. The rules
must not take it for an earlier registration of that statement (which would let it through
without its nonce checked), and the registration must put the server's own row in its
place, so that the statement is appended and its body read."""

from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest

from sealtrail.errors import VerificationError
from sealtrail.provenance import ProvenancePolicy
from sealtrail.scitt import StatementRows, parse_statement
from sealtrail.storage import MemoryStore, StatementRecord

from ._signed import journey as facts
from ._signed import signed_chain
from ._world import OPERATOR

ROWS = StatementRows(b"\x33" * 32)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _row(body: bytes) -> StatementRecord:
    statement = parse_statement(body)
    return StatementRecord(
        hashlib.sha256(body).digest(),
        body,
        statement.issuer,
        statement.subject,
        str(statement.content_type),
        int(time.time()),
    )


@pytest.mark.anyio
async def test_a_planted_row_does_not_pass_for_an_earlier_registration() -> None:
    policy = ProvenancePolicy(require_challenge=True, challenge_ttl=60)
    store = MemoryStore()
    async with signed_chain(store=store, policy=policy, statement_rows=ROWS) as chain:
        ledger = chain.ledger

        def issued(serial: str, count: int) -> list[bytes]:
            return [bytes.fromhex(n) for n in ledger.challenge(serial, count).nonces]

        for org, payload in facts(chain.world, "srv-1", "ship-1", challenge=issued):
            await chain.register(org, payload)
        made_up = chain.sign(OPERATOR, chain.world.evidence_result("srv-1"))
        size = chain.sequencer.reader.size()
        for planted in (_row(made_up), dataclasses.replace(_row(made_up), body=b"garbage")):
            store.tamper_insert(planted)
            with pytest.raises(VerificationError) as caught:
                await chain.service.register(made_up)
            assert caught.value.code == "nonce-not-issued"
            assert chain.sequencer.reader.size() == size

        # A statement the rules accept, planted first with a garbage body: registered, its
        # own row in place, and its body read back whole.
        fresh = chain.sign(
            OPERATOR, chain.world.evidence_result("srv-1", nonce=issued("srv-1", 1)[0])
        )
        store.tamper_insert(dataclasses.replace(_row(fresh), body=b"garbage"))
        registration = await chain.service.register(fresh)
        assert registration.index == size
        stored = store.get_statement(hashlib.sha256(fresh).digest())
        assert stored is not None and stored.body == fresh and ROWS.holds(stored)
