"""The registration rules' own state: who holds a device identity, and when a claim is stale."""

from __future__ import annotations

import pytest

from sealtrail.errors import VerificationError
from sealtrail.provenance import DeviceManifest, parse_device_manifest
from sealtrail.provenance._rules import _DeviceOwners

from .test_payloads import CT, EXAMPLES, _encode

MANIFEST = parse_device_manifest(_encode(EXAMPLES["device-manifest"]))
FIRST, SECOND = b"\x01" * 32, b"\x02" * 32


class Context:
    """A rule context whose registered statements the test decides."""

    def __init__(self, registered: set[bytes], stored: list[tuple[bytes, bytes]]) -> None:
        self.registered = registered
        self.stored = stored
        self.loads = 0

    def is_registered(self, leaf_entry: bytes) -> bool:
        return leaf_entry in self.registered

    def stored_payloads(self, content_type: str) -> list[tuple[bytes, bytes]]:
        assert content_type == CT["device-manifest"]
        self.loads += 1
        return self.stored


def _owners() -> _DeviceOwners:
    return _DeviceOwners(DeviceManifest.CONTENT_TYPE)


def test_a_registered_claim_refuses_a_clone_and_the_store_is_read_once() -> None:
    owners, context = _owners(), Context({FIRST}, [])
    owners.check_and_claim(MANIFEST, FIRST, context)
    owners.check_and_claim(MANIFEST, FIRST, context)  # the same statement again
    with pytest.raises(VerificationError) as caught:
        owners.check_and_claim(MANIFEST, SECOND, context)
    assert caught.value.code == "manifest-cloned-device"
    assert context.loads == 1


def test_a_claim_whose_statement_never_reached_the_store_is_taken_over() -> None:
    owners, context = _owners(), Context(set(), [])
    owners.check_and_claim(MANIFEST, FIRST, context)  # accepted, then its store failed
    owners.check_and_claim(MANIFEST, SECOND, context)
    context.registered.add(SECOND)
    with pytest.raises(VerificationError):
        owners.check_and_claim(MANIFEST, FIRST, context)


def test_claims_are_rebuilt_from_stored_manifests_first_come_first_held() -> None:
    payload = _encode(EXAMPLES["device-manifest"])
    context = Context({FIRST, SECOND}, [(FIRST, payload), (SECOND, payload)])
    owners = _owners()
    owners.check_and_claim(MANIFEST, FIRST, context)
    with pytest.raises(VerificationError):
        owners.check_and_claim(MANIFEST, SECOND, context)
