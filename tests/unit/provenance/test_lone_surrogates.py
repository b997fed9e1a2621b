"""A lone surrogate escape (``"\\ud800"``) is valid JSON but not Unicode text: Python parses
it into a string that cannot be encoded as UTF-8 again. Wherever the provenance package
reads JSON, such a string is refused with a stable code, never raised as a
UnicodeEncodeError: in every field and key of every statement kind (and so at
registration), and in a passport file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sealtrail.errors import Error, InvalidInput, VerificationError
from sealtrail.provenance import (
    KINDS,
    Arrival,
    Assembly,
    Challenge,
    Compliance,
    ComplianceState,
    CustodyEvent,
    DeviceManifest,
    DeviceRef,
    FirmwareRelease,
    Measurement,
    Node,
    NodeType,
    PolicyChange,
    Verdict,
    parse_policy_change,
)
from sealtrail.provenance._kinds import Payload
from sealtrail.provenance._passport import PASSPORT_TYPE, verify_passport
from sealtrail.scitt import sign_statement

from ._signed import issuer_name, signed_chain
from ._world import GOOD, OPERATOR, World

S = ComplianceState
LONE = ("\ud800", "\udfff")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _payloads() -> list[Payload]:
    world = World()
    assert world.release().applied
    devices = world.devices(2)
    world.build_server("srv-1")
    world.to_production("srv-1", "ship-1")
    custody = world._custody_payload
    return [
        DeviceManifest("batch", tuple(devices)),
        FirmwareRelease(GOOD.component, "1.2", 3, (Measurement(GOOD.alg, GOOD.digest),)),
        Assembly(Node(NodeType.SERVER, "S"), (DeviceRef(devices[0].device_id),)),
        custody("s1", CustodyEvent.SHIPPED, ["S"]),
        custody("s1", CustodyEvent.RECEIVED, ["S"]),
        Arrival(
            "s1",
            "S",
            True,
            (Challenge(devices[0].device_id, "00" * 16, True),),
            Verdict.FAIL,
            ("seal-broken",),
        ),
        world.evidence_result("srv-1"),
        Compliance("S", S.REGISTERED, S.IN_TRANSIT, "go"),
        PolicyChange(1, 3600, (("component", 1),)),
    ]


def _parser(payload: Payload) -> Callable[[bytes], Any]:
    kind = KINDS.get(type(payload).CONTENT_TYPE)
    return parse_policy_change if kind is None else kind.parse


def _variants(doc: Any) -> Iterator[Any]:
    """``doc`` with a lone surrogate in one string (alone, before or after it) or as a
    new key of one object, each place in turn."""
    if isinstance(doc, str):
        for lone in LONE:
            yield from (lone, lone + doc, doc + lone)
    elif isinstance(doc, dict):
        yield {**doc, LONE[0]: next(iter(doc.values()), 1)}
        for key, value in doc.items():
            yield from ({**doc, key: changed} for changed in _variants(value))
    elif isinstance(doc, list):
        for n, value in enumerate(doc):
            yield from ([*doc[:n], changed, *doc[n + 1 :]] for changed in _variants(value))


def test_every_payload_refuses_a_lone_surrogate_anywhere_with_a_code() -> None:
    tried = 0
    for payload in _payloads():
        parse = _parser(payload)
        for doc in _variants(json.loads(payload.to_json())):
            data = json.dumps(doc).encode("ascii")  # the surrogate as a \u escape
            with pytest.raises(Error) as caught:
                parse(data)
            assert caught.value.code.startswith(("provenance-", "manifest-", "attestation-")), (
                caught.value.code
            )
            tried += 1
    assert tried > 400


@pytest.mark.anyio
async def test_registration_refuses_a_payload_holding_a_lone_surrogate() -> None:
    async with signed_chain() as chain:
        payload = b'{"server_serial":"srv-\\ud800","from_state":"registered",' + (
            b'"to_state":"in-transit","reason":"go"}'
        )
        statement = sign_statement(
            chain.issuers[OPERATOR].leaf_key,
            issuer=issuer_name(OPERATOR),
            subject=f"urn:{OPERATOR}:compliance",
            content_type=Compliance.CONTENT_TYPE,
            payload=payload,
            x5chain=chain.issuers[OPERATOR].chain,
            issued_at=int(time.time()),
        )
        with pytest.raises(InvalidInput) as caught:
            await chain.service.register(statement)
        assert caught.value.code == "provenance-invalid"


@pytest.mark.parametrize(
    "data",
    [
        # 76 bytes: parsed, then the canonical-form check could not encode it.
        '{"subject":"\\ud800","type":"' + PASSPORT_TYPE + '"}',
        '{"\\udfff":1,"type":"' + PASSPORT_TYPE + '"}',
        '{"type":"' + PASSPORT_TYPE + '","x":["a\\ud800b"]}',
    ],
)
def test_a_passport_holding_a_lone_surrogate_is_malformed(data: str) -> None:
    with pytest.raises(VerificationError) as caught:
        verify_passport(data.encode("ascii"))
    assert caught.value.code == "passport-malformed"
    assert "not Unicode text" in caught.value.message
