"""The audit checks each statement's chain at the moment registration did: at its ``iat``,
which registration also checks; a statement without ``iat`` (optional outside the
provenance kinds) at a moment its whole chain was valid, rather than at 1970."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.provenance import audit_log
from sealtrail.scitt import Header, TransparencyService, decode_key_set, sign1, sign_statement
from sealtrail.storage import MemoryStore
from tests.unit.scitt._pki import make_issuer
from tests.unit.scitt.conftest import ISSUER, SERVICE, org_record

JSON = "application/json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_statements_with_and_without_iat_audit_clean() -> None:
    issuer = make_issuer(ES256, cn="Maker")
    store = MemoryStore()
    checkpoints = CheckpointSigner(origin="audit.test/log", signer=Ed25519Signer.generate())
    sequencer = Sequencer(store, signer=checkpoints, config=SequencerConfig(max_delay=0.001))
    service = TransparencyService(
        store=store, sequencer=sequencer, signer=generate_signer(ES256), issuer=SERVICE
    )
    await sequencer.start()
    await service.start()
    try:
        await service.put_organization(org_record(issuer))
        claims = {1: ISSUER, 2: "urn:maker:device:9"}
        without_iat = sign1(
            issuer.leaf_key,
            protected={
                Header.CWT_CLAIMS: claims,
                Header.X5CHAIN: issuer.chain[0],
                Header.CONTENT_TYPE: JSON,
            },
            payload=b'{"serial": "Z9"}',
        )
        await service.register(without_iat)
        with_iat = sign_statement(
            issuer.leaf_key,
            issuer=ISSUER,
            subject="urn:maker:device:8",
            content_type=JSON,
            payload=b'{"serial": "Z8"}',
            x5chain=issuer.chain,
            issued_at=int(time.time()) - 60,
        )
        await service.register(with_iat)
        report = audit_log(
            sequencer.reader,
            store.get_statement,
            None,
            issuer=SERVICE,
            service_keys=decode_key_set(service.key_set()),
        )
        assert report.ok, [dataclasses.asdict(f) for f in report.findings]
        assert report.statements_verified == 3  # the organization record and both
    finally:
        await service.close()
        await sequencer.close()


def test_the_moment_a_chain_is_checked_at() -> None:
    from sealtrail.provenance._audit import _checked_at
    from sealtrail.scitt import parse_statement

    issuer = make_issuer(ES256)
    stamp = int(time.time()) - 30
    signed = sign_statement(
        issuer.leaf_key,
        issuer=ISSUER,
        subject="s",
        content_type=JSON,
        payload=b"{}",
        x5chain=issuer.chain,
        issued_at=stamp,
    )
    assert _checked_at(parse_statement(signed)) == dt.datetime.fromtimestamp(stamp, dt.UTC)
    bare = sign1(
        issuer.leaf_key,
        protected={
            Header.CWT_CLAIMS: {1: ISSUER, 2: "s"},
            Header.X5CHAIN: issuer.chain[0],
            Header.CONTENT_TYPE: JSON,
        },
        payload=b"{}",
    )
    assert _checked_at(parse_statement(bare)) == issuer.leaf.not_valid_before_utc
