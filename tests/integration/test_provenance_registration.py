"""Provenance statements through ``POST /entries``: the kind's role and payload are checked.

The service built by ``service_app`` runs the provenance model's registration rules: a
device manifest from an organization without the device-maker role, a payload that is not
a valid manifest, or a manifest in a hash envelope is refused, and nothing is stored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealtrail.provenance import KINDS
from sealtrail.storage import MemoryStore
from tests.integration.conftest import Maker, Service, assert_problem, running, snapshot, statement
from tests.unit.provenance._certs import CA_DER, identity
from tests.unit.provenance.test_payloads import EXAMPLES, KEYS
from tests.unit.scitt._pki import make_ca

MANIFEST = next(ct for ct, kind in KINDS.items() if kind.name == "device-manifest")
#: The CA that issued the example manifest's device identities.
DEVICE_CA = x509.load_der_x509_certificate(CA_DER).public_bytes(serialization.Encoding.PEM)
_B64_CA = base64.b64encode(CA_DER).decode()
CLONED = "manifest-cloned-device"


def _policy() -> dict[str, Any]:
    return {
        "content_types": [MANIFEST],
        "subjects": ["urn:maker:*"],
        "algorithms": ["ES256"],
        "max_size": 65536,
    }


@pytest.fixture
def svc(maker: Maker) -> Iterator[Service]:
    with running(MemoryStore(), maker) as service:
        r = service.put_org(
            maker.record(version=2, policy=_policy(), device_anchors=[DEVICE_CA.decode()])
        )
        assert r.status_code == 201, r.text
        yield service


def _manifest(maker: Maker, doc: object = None, **changes: object) -> bytes:
    payload = json.dumps(EXAMPLES["device-manifest"] if doc is None else doc).encode()
    args: dict[str, object] = {
        "subject": "urn:maker:batch-2026-01",
        "content_type": MANIFEST,
        "payload": payload,
    }
    args.update(changes)
    return statement(maker.issuer, **args)


def test_a_device_maker_registers_a_manifest(svc: Service) -> None:
    r = svc.post(_manifest(svc.maker))
    assert r.status_code == 201, r.text


def test_a_manifest_from_an_organization_without_the_role_is_refused(svc: Service) -> None:
    r = svc.put_org(
        svc.maker.record(
            version=3, roles=["carrier"], policy=_policy(), device_anchors=[DEVICE_CA.decode()]
        )
    )
    assert r.status_code == 201, r.text
    before = snapshot(svc.store)
    assert_problem(svc.post(_manifest(svc.maker)), 400, "provenance-role")
    assert snapshot(svc.store) == before


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ({**EXAMPLES["device-manifest"], "extra": 1}, "provenance-unknown-field"),
        ({"batch_id": "b"}, "provenance-missing-field"),
        ([], "provenance-invalid"),
    ],
)
def test_a_payload_that_is_not_a_manifest_is_refused(svc: Service, doc: object, code: str) -> None:
    before = snapshot(svc.store)
    body = assert_problem(svc.post(_manifest(svc.maker, doc)), 400, code)
    assert "extra" not in body["detail"]  # field names of unknown keys are not echoed
    assert snapshot(svc.store) == before


def test_a_manifest_in_a_hash_envelope_is_refused(svc: Service) -> None:
    before = snapshot(svc.store)
    r = svc.post(_manifest(svc.maker, hash_envelope="sha-256"))
    assert_problem(r, 400, "provenance-hash-envelope")
    assert snapshot(svc.store) == before


@pytest.mark.parametrize(
    ("device_anchors", "code"),
    [
        ([], "manifest-no-device-ca"),
        (["other"], "manifest-device-untrusted"),  # a device CA the maker never registered
    ],
)
def test_devices_must_chain_to_the_makers_registered_device_ca(
    svc: Service, device_anchors: list[str], code: str
) -> None:
    anchors = [
        make_ca(cn="Another Device CA")[1].public_bytes(serialization.Encoding.PEM).decode()
        for _ in device_anchors
    ]
    r = svc.put_org(svc.maker.record(version=3, policy=_policy(), device_anchors=anchors))
    assert r.status_code == 201, r.text
    before = snapshot(svc.store)
    body = assert_problem(svc.post(_manifest(svc.maker)), 400, code)
    assert "CPT-0001" not in body["detail"]  # devices are named by position, not by serial
    assert snapshot(svc.store) == before


def test_an_organization_record_with_an_unknown_field_is_refused(svc: Service) -> None:
    before = snapshot(svc.store)
    r = svc.put_org(svc.maker.record(version=3, device_anchor=[DEVICE_CA.decode()]))
    assert_problem(r, 400, "org-record-invalid")
    assert snapshot(svc.store) == before


def _clone_manifest() -> dict[str, Any]:
    """Another batch holding device 0's identity key, under a freshly issued certificate."""
    device = {
        "kind": "caliptra",
        "serial": "CLONE-1",
        "chain": [base64.b64encode(identity(KEYS[0], "CLONE-1")).decode(), _B64_CA],
        "algorithm": "ES384",
    }
    return {"batch_id": "batch-clone", "devices": [device]}


def test_a_cloned_identity_is_refused_also_after_a_restart(maker: Maker) -> None:
    store = MemoryStore()
    anchors = [DEVICE_CA.decode()]
    with running(store, maker) as svc:
        r = svc.put_org(maker.record(version=2, policy=_policy(), device_anchors=anchors))
        assert r.status_code == 201, r.text
        first = _manifest(maker)
        assert svc.post(first).status_code == 201
        assert svc.post(first).status_code == 201  # the same statement again: not a clone
        before = snapshot(store)
        body = assert_problem(svc.post(_manifest(maker, _clone_manifest())), 400, CLONED)
        assert "devices[0]" in body["detail"]
        assert snapshot(store) == before
    # A restart with the same keys: the device owners are rebuilt from the store.
    with running(
        store,
        maker,
        onboard=False,
        checkpoint_signer=svc.checkpoint_signer,
        service_signer=svc.service_signer,
    ) as svc:
        before = snapshot(store)
        assert_problem(svc.post(_manifest(maker, _clone_manifest())), 400, CLONED)
        assert snapshot(store) == before
