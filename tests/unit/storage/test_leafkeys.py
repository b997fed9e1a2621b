"""The leaf index's key: the first 8 bytes of a leaf hash, big-endian, signed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.errors import InvalidInput
from sealtrail.storage._leafkeys import leaf_keys

HASHES = st.lists(st.binary(min_size=32, max_size=32), max_size=64)


@given(HASHES)
def test_each_key_is_the_hash_head_as_a_signed_big_endian_integer(hashes: list[bytes]) -> None:
    assert leaf_keys(hashes) == [int.from_bytes(h[:8], "big", signed=True) for h in hashes]


def test_the_extremes() -> None:
    low, high = b"\x80" + bytes(31), b"\x7f" + b"\xff" * 31
    assert leaf_keys([low, high, bytes(32)]) == [-(2**63), 2**63 - 1, 0]


@pytest.mark.parametrize(
    "hashes",
    [[b"y" * 32, b""], [b"y" * 32, b"x" * 31], [b"x" * 33], [b"x" * 33, b"z" * 31]],
    ids=["empty", "short", "long", "lengths-adding-up"],
)
def test_a_hash_of_another_length_is_refused(hashes: list[bytes]) -> None:
    with pytest.raises(InvalidInput):
        leaf_keys(hashes)
