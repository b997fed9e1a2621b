from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner, Sequencer, SequencerConfig
from sealtrail.scitt import TransparencyService
from sealtrail.storage import MemoryStore

from ._pki import Issuer, make_issuer

ISSUER = "https://maker.example/signing"
SERVICE = "https://ts.sealtrail.localhost"


def org_record(issuer: Issuer, *, version: int = 1, **policy: object) -> bytes:
    doc = {
        "org": "maker",
        "version": version,
        "roles": ["device-maker"],
        "issuers": [ISSUER],
        "anchors": [issuer.anchor_pem],
        "policy": {
            "content_types": ["application/json", "application/vnd.sealtrail.test+cbor"],
            "subjects": ["urn:maker:*"],
            "algorithms": ["ES256", "ES384", "Ed25519"],
            "max_size": 16384,
            **policy,
        },
    }
    return json.dumps(doc).encode()


@dataclass
class Running:
    service: TransparencyService
    store: MemoryStore
    issuer: Issuer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def issuer() -> Issuer:
    return make_issuer(ES256, cn="Maker")


@pytest.fixture
async def running(issuer: Issuer) -> AsyncIterator[Running]:
    store = MemoryStore()
    ckpt = CheckpointSigner(origin="ts.sealtrail.localhost/test", signer=Ed25519Signer.generate())
    seq = Sequencer(store, signer=ckpt, config=SequencerConfig(max_delay=0.001))
    service = TransparencyService(
        store=store, sequencer=seq, signer=generate_signer(ES256), issuer=SERVICE
    )
    await seq.start()
    await service.start()
    await service.put_organization(org_record(issuer))
    try:
        yield Running(service, store, issuer)
    finally:
        await service.close()
        await seq.close()
