"""Provenance payloads: round trips, every refusal with its code, limits, compliance moves."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.errors import Error, InvalidInput, TooLarge
from sealtrail.provenance import (
    KINDS,
    MAX_DEVICES,
    MAX_ID_LENGTH,
    MAX_PAYLOAD_SIZE,
    TRANSITIONS,
    ComplianceState,
    DeviceManifest,
    Role,
    check_transition,
    device_id,
    parse_device_manifest,
    parse_payload,
)

from ._certs import CA_DER, identity, new_key, spki

CT = {kind.name: content_type for content_type, kind in KINDS.items()}


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


KEYS = [new_key(), new_key()]
LEAVES = [identity(KEYS[0], "CPT-0001"), identity(KEYS[1], "CPT-0002")]
IDS = [hashlib.sha256(spki(k)).hexdigest() for k in KEYS]
NONCE = "ab" * 32

EXAMPLES: dict[str, dict[str, Any]] = {
    "device-manifest": {
        "batch_id": "batch-2026-01",
        "devices": [
            {
                "kind": "caliptra",
                "serial": "CPT-0001",
                "chain": [_b64(LEAVES[0]), _b64(CA_DER)],
                "algorithm": "ES384",
            },
            {"kind": "tpm", "serial": "CPT-0002", "chain": [_b64(LEAVES[1])], "algorithm": "ES384"},
        ],
    },
    "firmware-release": {
        "component": "caliptra-fmc",
        "version": "1.2.0",
        "security_version": 3,
        "measurements": [
            {"alg": "sha-384", "digest": "0f" * 48},
            {"alg": "sha-256", "digest": "a1" * 32},
        ],
        "evidence": "eyJhbGciOiJFUzUxMiJ9.eyJyZXZpZXciOjF9.c2lnbmF0dXJl",
    },
    "assembly": {
        "parent": {"type": "server", "serial": "SRV-1"},
        "children": [{"type": "blade", "serial": "BLD-1"}, {"device_id": IDS[0]}],
        "removed": [{"type": "blade", "serial": "BLD-0"}],
        "reason": "blade replaced after a fault",
    },
    "custody": {
        "shipment_id": "SHP-42",
        "event": "shipped",
        "from_org": "assembler",
        "to_org": "datacenter",
        "contents": ["RACK-1", "SRV-1"],
        "seals": ["SEAL-001", "SEAL-002"],
        "time": "2026-01-31T12:00:00.25Z",
        "place": "Dock 4, Guadalajara",
    },
    "arrival": {
        "shipment_id": "SHP-42",
        "server_serial": "SRV-1",
        "seals_intact": True,
        "devices_challenged": [{"device_id": IDS[0], "nonce": NONCE, "ok": True}],
        "result": "pass",
        "reasons": [],
    },
    "attestation-result": {
        "server_serial": "SRV-1",
        "nonce": NONCE,
        "status": "warning",
        "trustworthiness": {"executables": 2, "hardware": 2, "configuration": 32},
        "devices": [
            {"device_id": IDS[0], "status": "affirming", "reasons": []},
            {
                "device_id": IDS[1],
                "status": "warning",
                "reasons": ["security version below policy"],
            },
        ],
    },
    "compliance": {
        "server_serial": "SRV-1",
        "from_state": "verified",
        "to_state": "production",
        "reason": "attestation passed",
    },
}


def _encode(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_every_kind_has_an_example_and_a_role() -> None:
    assert set(CT) == set(EXAMPLES)
    roles = {kind.name: kind.role for kind in KINDS.values()}
    assert roles == {
        "device-manifest": Role.DEVICE_MAKER,
        "firmware-release": Role.DEVICE_MAKER,
        "assembly": Role.ASSEMBLER,
        "custody": Role.CARRIER,
        "arrival": Role.OPERATOR,
        "attestation-result": Role.OPERATOR,
        "compliance": Role.OPERATOR,
    }
    for content_type, kind in KINDS.items():
        assert content_type == f"application/vnd.sealtrail.{kind.name}.v1+json"


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_round_trip(kind: str) -> None:
    payload = _encode(EXAMPLES[kind])
    value = parse_payload(CT[kind], payload)
    assert CT[kind] == type(value).CONTENT_TYPE
    assert value.to_json() == payload  # the example is already canonical
    assert parse_payload(CT[kind], value.to_json()) == value
    assert KINDS[CT[kind]].parse(payload) == value


def test_manifest_values() -> None:
    manifest = parse_device_manifest(_encode(EXAMPLES["device-manifest"]))
    assert isinstance(manifest, DeviceManifest)
    assert [d.device_id for d in manifest.devices] == IDS
    assert manifest.devices[0].chain == (LEAVES[0], CA_DER)


def test_device_id_is_the_key_not_the_certificate() -> None:
    key = new_key()
    first, again = identity(key, "X"), identity(key, "X")
    assert first != again
    assert device_id(first) == device_id(again) == hashlib.sha256(spki(key)).hexdigest()
    assert device_id(identity(new_key(), "X")) != device_id(first)


def test_cloned_key_in_one_manifest_is_refused() -> None:
    doc = copy.deepcopy(EXAMPLES["device-manifest"])
    doc["devices"][1]["chain"] = [_b64(identity(KEYS[0], "CPT-0002"))]
    with pytest.raises(InvalidInput) as caught:
        parse_device_manifest(_encode(doc))
    assert caught.value.code == "manifest-duplicate-device"


Mutation = Callable[[dict[str, Any]], object]


def _set(path: str, value: object) -> Mutation:
    """Set ``a.b.0.c`` in the document to ``value``."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _drop(name: str) -> Mutation:
    return lambda doc: doc.pop(name)


P256_LEAF = _b64(identity(new_key(ec.SECP256R1()), "P256"))

INVALID: list[tuple[str, str, Mutation, str]] = [
    # (kind, case, mutation, code)
    ("device-manifest", "unknown field", _set("extra", 1), "provenance-unknown-field"),
    ("device-manifest", "missing batch", _drop("batch_id"), "provenance-missing-field"),
    ("device-manifest", "no devices", _set("devices", []), "provenance-invalid"),
    ("device-manifest", "bad kind", _set("devices.0.kind", "hsm"), "provenance-invalid"),
    ("device-manifest", "bad alg", _set("devices.0.algorithm", "RS256"), "provenance-invalid"),
    ("device-manifest", "serial int", _set("devices.0.serial", 7), "provenance-invalid"),
    ("device-manifest", "serial spaces", _set("devices.0.serial", " A"), "provenance-invalid"),
    ("device-manifest", "serial control", _set("devices.0.serial", "A\n"), "provenance-invalid"),
    (
        "device-manifest",
        "dup serial",
        _set("devices.1.serial", "CPT-0001"),
        "manifest-duplicate-device",
    ),
    ("device-manifest", "empty chain", _set("devices.0.chain", []), "provenance-invalid"),
    ("device-manifest", "not base64", _set("devices.0.chain.0", "!!"), "manifest-bad-certificate"),
    ("device-manifest", "unpadded", _set("devices.0.chain.0", "AAA"), "manifest-bad-certificate"),
    (
        "device-manifest",
        "not a certificate",
        _set("devices.0.chain.0", "AAAA"),
        "manifest-bad-certificate",
    ),
    (
        "device-manifest",
        "chain too long",
        _set("devices.0.chain", [_b64(CA_DER)] * 9),
        "provenance-too-large",
    ),
    (
        "device-manifest",
        "alg mismatch",
        _set("devices.0.chain", [P256_LEAF]),
        "manifest-algorithm-mismatch",
    ),
    (
        "device-manifest",
        "long batch",
        _set("batch_id", "b" * (MAX_ID_LENGTH + 1)),
        "provenance-too-large",
    ),
    ("firmware-release", "negative svn", _set("security_version", -1), "provenance-invalid"),
    ("firmware-release", "bool svn", _set("security_version", True), "provenance-invalid"),
    ("firmware-release", "float svn", _set("security_version", 1.5), "provenance-invalid"),
    ("firmware-release", "huge svn", _set("security_version", 2**32), "provenance-invalid"),
    ("firmware-release", "no measurements", _set("measurements", []), "provenance-invalid"),
    (
        "firmware-release",
        "short digest",
        _set("measurements.0.digest", "0f" * 32),
        "provenance-invalid",
    ),
    (
        "firmware-release",
        "upper hex",
        _set("measurements.1.digest", "A1" * 32),
        "provenance-invalid",
    ),
    ("firmware-release", "bad alg", _set("measurements.0.alg", "md5"), "provenance-invalid"),
    (
        "firmware-release",
        "dup measurement",
        _set("measurements.1", {"alg": "sha-384", "digest": "0f" * 48}),
        "provenance-invalid",
    ),
    ("firmware-release", "evidence not jws", _set("evidence", "a.b"), "provenance-invalid"),
    (
        "firmware-release",
        "evidence too big",
        _set("evidence", "a." + "b" * 65536 + ".c"),
        "provenance-too-large",
    ),
    ("firmware-release", "evidence null", _set("evidence", None), "provenance-invalid"),
    (
        "assembly",
        "self child",
        _set("children.0", {"type": "server", "serial": "SRV-1"}),
        "assembly-self-child",
    ),
    (
        "assembly",
        "dup child",
        _set("children.1", {"type": "blade", "serial": "BLD-1"}),
        "assembly-duplicate-child",
    ),
    (
        "assembly",
        "child also removed",
        _set("removed.0", {"type": "blade", "serial": "BLD-1"}),
        "assembly-duplicate-child",
    ),
    (
        "assembly",
        "rack in server",
        _set("children.0", {"type": "rack", "serial": "R"}),
        "assembly-bad-nesting",
    ),
    ("assembly", "empty", lambda d: d.update(children=[], removed=[]), "assembly-empty"),
    ("assembly", "bad device id", _set("children.1", {"device_id": "AB"}), "provenance-invalid"),
    (
        "assembly",
        "mixed child",
        _set("children.1", {"device_id": IDS[0], "type": "blade"}),
        "provenance-unknown-field",
    ),
    ("assembly", "bad parent type", _set("parent.type", "chassis"), "provenance-invalid"),
    ("custody", "bad event", _set("event", "lost"), "provenance-invalid"),
    ("custody", "local time", _set("time", "2026-01-31T12:00:00+01:00"), "provenance-invalid"),
    ("custody", "bad date", _set("time", "2026-02-30T12:00:00Z"), "provenance-invalid"),
    ("custody", "no contents", _set("contents", []), "provenance-invalid"),
    ("custody", "dup seal", _set("seals", ["S", "S"]), "provenance-invalid"),
    ("custody", "long place", _set("place", "p" * 1025), "provenance-too-large"),
    ("arrival", "pass with broken seal", _set("seals_intact", False), "arrival-inconsistent"),
    (
        "arrival",
        "pass with failed device",
        _set("devices_challenged.0.ok", False),
        "arrival-inconsistent",
    ),
    ("arrival", "fail without reason", _set("result", "fail"), "arrival-inconsistent"),
    ("arrival", "short nonce", _set("devices_challenged.0.nonce", "ab" * 8), "provenance-invalid"),
    ("arrival", "ok not bool", _set("devices_challenged.0.ok", 1), "provenance-invalid"),
    (
        "attestation-result",
        "status better than device",
        _set("status", "affirming"),
        "attestation-inconsistent",
    ),
    (
        "attestation-result",
        "unknown claim",
        _set("trustworthiness", {"vibes": 2}),
        "provenance-unknown-field",
    ),
    (
        "attestation-result",
        "tier range",
        _set("trustworthiness", {"hardware": 200}),
        "provenance-invalid",
    ),
    ("attestation-result", "bad status", _set("status", "ok"), "provenance-invalid"),
    ("attestation-result", "dup device", _set("devices.1.device_id", IDS[0]), "provenance-invalid"),
    (
        "compliance",
        "evicted is final",
        lambda d: d.update(from_state="evicted", to_state="verified"),
        "compliance-bad-transition",
    ),
    (
        "compliance",
        "production not from arrived",
        _set("from_state", "arrived"),
        "compliance-bad-transition",
    ),
    ("compliance", "unknown state", _set("to_state", "retired"), "provenance-invalid"),
    ("compliance", "empty reason", _set("reason", ""), "provenance-invalid"),
]


@pytest.mark.parametrize(
    ("kind", "mutation", "code"),
    [
        pytest.param(kind, mutation, code, id=f"{kind}: {case}")
        for kind, case, mutation, code in INVALID
    ],
)
def test_invalid(kind: str, mutation: Mutation, code: str) -> None:
    doc = copy.deepcopy(EXAMPLES[kind])
    mutation(doc)
    with pytest.raises(InvalidInput) as caught:
        parse_payload(CT[kind], _encode(doc))
    assert caught.value.code == code
    assert isinstance(caught.value, TooLarge) == code.endswith("too-large")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"batch_id":"a","batch_id":"b","devices":[]}', "provenance-duplicate-key"),
        (b'{"batch_id":NaN}', "provenance-not-json"),
        (b'{"batch_id":Infinity}', "provenance-not-json"),
        (b"\xff\xfe", "provenance-not-json"),
        (b"{", "provenance-not-json"),
        (b"[" * 100_000, "provenance-not-json"),
        (b"[]", "provenance-invalid"),
        (b'"text"', "provenance-invalid"),
    ],
)
def test_malformed_json(payload: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_device_manifest(payload)
    assert caught.value.code == code


def test_duplicate_key_in_a_nested_object() -> None:
    payload = _encode(EXAMPLES["compliance"]).replace(b'"reason":', b'"reason":"x","reason":')
    with pytest.raises(InvalidInput) as caught:
        parse_payload(CT["compliance"], payload)
    assert caught.value.code == "provenance-duplicate-key"


def test_unknown_content_type() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_payload("application/json", b"{}")
    assert caught.value.code == "provenance-unknown-type"


def test_manifest_too_large() -> None:
    doc = {
        "batch_id": "b",
        "devices": [EXAMPLES["device-manifest"]["devices"][0]] * (MAX_DEVICES + 1),
    }
    with pytest.raises(TooLarge) as caught:
        parse_device_manifest(_encode(doc))
    assert caught.value.code == "manifest-too-large"


def test_payload_too_large() -> None:
    with pytest.raises(TooLarge) as caught:
        parse_device_manifest(b" " * (MAX_PAYLOAD_SIZE + 1))
    assert caught.value.code == "provenance-too-large"


def test_messages_name_the_field_but_not_the_value() -> None:
    doc = copy.deepcopy(EXAMPLES["custody"])
    doc["from_org"] = "SECRET\x00VALUE"
    with pytest.raises(InvalidInput) as caught:
        parse_payload(CT["custody"], _encode(doc))
    assert "custody.from_org" in caught.value.message
    assert "SECRET" not in caught.value.message
    doc = copy.deepcopy(EXAMPLES["custody"])
    doc["SECRET_FIELD"] = "x"
    with pytest.raises(InvalidInput) as caught:
        parse_payload(CT["custody"], _encode(doc))
    assert "SECRET" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00Z"),
        ("2026-01-31T12:00:00.500Z", "2026-01-31T12:00:00.5Z"),
        ("2026-01-31T12:00:00.123456789Z", "2026-01-31T12:00:00.123456Z"),
    ],
)
def test_custody_time(text: str, canonical: str) -> None:
    doc = dict(EXAMPLES["custody"], time=text)
    value = parse_payload(CT["custody"], _encode(doc))
    assert json.loads(value.to_json())["time"] == canonical
    assert parse_payload(CT["custody"], value.to_json()) == value


def test_optional_fields_may_be_left_out() -> None:
    for kind, name in [("assembly", "removed"), ("assembly", "reason"), ("arrival", "reasons")]:
        doc = copy.deepcopy(EXAMPLES[kind])
        del doc[name]
        value = parse_payload(CT[kind], _encode(doc))
        assert parse_payload(CT[kind], value.to_json()) == value
    doc = copy.deepcopy(EXAMPLES["firmware-release"])
    del doc["evidence"]
    assert b"evidence" not in parse_payload(CT["firmware-release"], _encode(doc)).to_json()


ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in targets]
REFUSED = [(a, b) for a in ComplianceState for b in ComplianceState if (a, b) not in ALLOWED]


@pytest.mark.parametrize(("from_state", "to_state"), ALLOWED)
def test_allowed_transitions(from_state: ComplianceState, to_state: ComplianceState) -> None:
    check_transition(from_state, to_state)


@pytest.mark.parametrize(("from_state", "to_state"), REFUSED)
def test_refused_transitions(from_state: ComplianceState, to_state: ComplianceState) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_transition(from_state, to_state)
    assert caught.value.code == "compliance-bad-transition"


def test_state_machine_shape() -> None:
    assert set(TRANSITIONS) == set(ComplianceState)
    assert not TRANSITIONS[ComplianceState.EVICTED]
    into_production = {a for a, b in ALLOWED if b is ComplianceState.PRODUCTION}
    assert into_production == {ComplianceState.VERIFIED}
    assert (ComplianceState.PRODUCTION, ComplianceState.PRODUCTION) in REFUSED


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(EXAMPLES)), value=JSON)
def test_random_json_raises_only_our_errors(kind: str, value: object) -> None:
    with contextlib.suppress(Error):
        parse_payload(CT[kind], json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(EXAMPLES)), data=st.data())
def test_mutated_examples_raise_only_our_errors(kind: str, data: st.DataObject) -> None:
    doc = copy.deepcopy(EXAMPLES[kind])
    name = data.draw(st.sampled_from(sorted(doc)))
    doc[name] = data.draw(JSON)
    try:
        value = parse_payload(CT[kind], _encode(doc))
    except Error:
        return
    assert parse_payload(CT[kind], value.to_json()) == value


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(sorted(EXAMPLES)), payload=st.binary(max_size=64))
def test_random_bytes_raise_only_our_errors(kind: str, payload: bytes) -> None:
    with contextlib.suppress(Error):
        parse_payload(CT[kind], payload)
