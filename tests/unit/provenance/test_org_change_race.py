"""A statement checked while its organization's record changes waits for the change and is
checked again: meanwhile the ledger holds no acceptance of it, so nothing that rests on it
is accepted, and checked again it is accepted once, not twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from sealtrail.errors import Error
from sealtrail.provenance import Arrival, Verdict, audit_log
from sealtrail.scitt import fingerprint

from ._signed import SERVICE, journey, org_record, signed_chain
from ._world import ASSEMBLER, OPERATOR

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_statement_checked_again_is_accepted_once() -> None:
    async with signed_chain() as chain:
        steps = list(journey(chain.world, "srv-1", "ship-1"))
        for org, payload in steps[:8]:  # up to the shipment's receipt
            await chain.register(org, payload)
        await chain.indexed()
        failed = Arrival("ship-1", "srv-1", False, (), Verdict.FAIL, reasons=("seal-broken",))
        change = asyncio.create_task(
            chain.service.put_organization(
                org_record(OPERATOR, chain.issuers[OPERATOR], version=2)  # admits it too
            )
        )
        await asyncio.sleep(0)  # the change is under way
        arrival = asyncio.create_task(chain.service.register(chain.sign(OPERATOR, failed)))
        await change
        await arrival
        await chain.indexed()
        await asyncio.sleep(0.2)  # the indexer's round after the entry
        assert not chain.ledger._queue  # the acceptance was queued once, and is indexed
        for org, payload in steps[8:]:  # the rest of the journey, judged as before
            await chain.register(org, payload)
        await chain.indexed()
        report = audit_log(
            chain.sequencer.reader,
            chain.store.get_statement,
            chain.index,
            issuer=SERVICE,
            service_keys=dict(chain.service.keys),
        )
        assert report.ok and report.refused == 0, report.findings


async def test_nothing_rests_on_a_statement_while_it_waits_to_be_checked_again() -> None:
    async with signed_chain() as chain:
        steps = list(journey(chain.world, "srv-1", "ship-1"))
        for org, payload in steps[:4]:  # a release, a manifest, two blades
            await chain.register(org, payload)
        (assembler, server), (carrier, shipped) = steps[4], steps[5]
        assert assembler == ASSEMBLER
        doc = json.loads(org_record(ASSEMBLER, chain.issuers[ASSEMBLER], version=2))
        doc["revoked_certificates"] = [fingerprint(chain.issuers[ASSEMBLER].leaf)]
        change = asyncio.create_task(chain.service.put_organization(json.dumps(doc).encode()))
        await asyncio.sleep(0)
        built = asyncio.create_task(chain.service.register(chain.sign(assembler, server)))
        await asyncio.sleep(0.05)  # checked, and waiting for the change
        with pytest.raises(Error):  # the server it ships is not built (yet)
            await chain.service.register(chain.sign(carrier, shipped))
        await change
        with pytest.raises(Error) as refused:
            await built
        assert refused.value.code == "chain-revoked"
        await chain.indexed()
        assert chain.index.row("shipment", "ship-1") is None


async def test_a_copy_of_a_registered_statement_takes_back_no_acceptance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client's retry of a statement registered but not yet indexed, sent while its
    organization changes, is checked again: the registered one stays accepted, and what
    rests on it is accepted."""
    import threading

    async with signed_chain() as chain:
        steps = list(journey(chain.world, "srv-1", "ship-1"))
        for org, payload in steps[:4]:
            await chain.register(org, payload)
        await chain.indexed()
        (assembler, server), (carrier, shipped) = steps[4], steps[5]
        gate = threading.Event()
        apply_entries = chain.ledger.apply_entries

        def slow(start: int, leaves: Sequence[bytes]) -> None:  # the indexer lags this once
            gate.wait(10)
            apply_entries(start, leaves)

        monkeypatch.setattr(chain.ledger, "apply_entries", slow)
        data = chain.sign(assembler, server)
        await chain.service.register(data)  # stored and logged, not indexed yet
        change = asyncio.create_task(
            chain.service.put_organization(
                org_record(ASSEMBLER, chain.issuers[ASSEMBLER], version=2)
            )
        )
        await asyncio.sleep(0)
        retry = asyncio.create_task(chain.service.register(data))
        await change
        await retry
        assert len(chain.ledger._queue) == 1  # the registered one's acceptance stands
        await chain.register(carrier, shipped)  # rests on it
        gate.set()
        monkeypatch.undo()
        await chain.indexed()


async def test_an_entry_the_ledger_did_not_foresee_is_seen_by_the_next_registration() -> None:
    """A provenance entry that reached the log without this ledger accepting it (appended
    by recovery at start, or by another way into the store) is indexed; the tentative state
    then judges the next statement with it, queue empty or not."""
    from sealtrail.scitt import parse_statement
    from sealtrail.storage import StatementRecord

    async with signed_chain() as chain:
        steps = list(journey(chain.world, "srv-1", "ship-1"))
        (first_org, first), (maker, manifest), (assembler, blade) = steps[:3]
        await chain.register(first_org, first)
        await chain.indexed()
        data = chain.sign(maker, manifest)
        statement = parse_statement(data)
        chain.store.put_statements(
            [
                StatementRecord(
                    statement.leaf_entry,
                    data,
                    statement.issuer,
                    statement.subject,
                    str(statement.content_type),
                    0,
                )
            ]
        )
        await chain.sequencer.add(statement.leaf_entry)  # past the ledger's acceptance
        await chain.indexed()
        await chain.register(assembler, blade)  # its devices are the manifest's
