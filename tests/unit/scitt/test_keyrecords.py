"""Receipt key set records: the canonical form, and every malformed one named."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.errors import InvalidInput
from sealtrail.scitt import MAX_RETIRED_KEYS, ServiceKeys, keys_record, parse_keys_record

KID = "ab" * 32


@given(
    st.binary(min_size=32, max_size=32),
    st.sets(st.binary(min_size=32, max_size=32), max_size=8),
    st.sampled_from(["ES256", "ES384", "Ed25519", "ML-DSA-65"]),
)
def test_records_round_trip(current: bytes, retired: set[bytes], algorithm: str) -> None:
    keys = ServiceKeys(current, algorithm, tuple(sorted(retired - {current})))
    assert parse_keys_record(keys_record(keys)) == keys


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"current": KID},
        {"current": KID.upper(), "algorithm": "ES256"},
        {"current": KID, "algorithm": ""},
        {"current": KID, "algorithm": "ES256", "retired": ["cd" * 32, "01" * 32]},
        {"current": KID, "algorithm": "ES256", "retired": ["01" * 32, "01" * 32]},
        {"current": KID, "algorithm": "ES256", "retired": [KID]},
        {
            "current": KID,
            "algorithm": "ES256",
            "retired": [f"{i:064x}" for i in range(MAX_RETIRED_KEYS + 1)],
        },
        {"current": KID, "algorithm": "ES256", "extra": 1},
    ],
)
def test_a_malformed_record_is_named(doc: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_keys_record(json.dumps(doc).encode())
    assert caught.value.code == "keys-record-invalid"


def test_not_json_is_named() -> None:
    with pytest.raises(InvalidInput, match="not JSON"):
        parse_keys_record(b"\xff")
