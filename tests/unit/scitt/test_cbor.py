"""The strict CBOR gate: a table of well-known bad encodings, and fuzzing that never gets
anything but a clean InvalidInput out of the decoder."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.errors import Error, InvalidInput
from sealtrail.scitt import decode_sign1, parse_statement
from sealtrail.scitt._cbor import MAX_DEPTH, check

GOOD = [
    0,
    23,
    24,
    255,
    256,
    2**64 - 1,
    -1,
    -(2**64),
    b"",
    b"abc",
    "x",
    "é",
    [],
    {},
    [1, [2, [3]]],
    {1: 2, "a": [b"x"]},
    cbor2.CBORTag(18, [b"", {}, None, b"s"]),
    1.5,
    True,
    False,
    None,
]


@pytest.mark.parametrize("value", GOOD, ids=repr)
def test_deterministic_items_pass(value: object) -> None:
    check(cbor2.dumps(value, canonical=True))


BAD = [
    (b"", "cbor-malformed"),
    (b"\x18\x05", "cbor-not-deterministic"),  # 5 in two bytes
    (b"\x19\x00\x01", "cbor-not-deterministic"),
    (b"\x5f\x41a\xff", "cbor-not-deterministic"),  # indefinite byte string
    (b"\x9f\x01\xff", "cbor-not-deterministic"),
    (b"\x82\x01", "cbor-malformed"),  # array of 2, one item
    (b"\xa2\x01\x02\x01\x03", "cbor-duplicate-key"),
    (b"\x01\x02", "cbor-malformed"),  # trailing byte
    (b"\x1c", "cbor-malformed"),  # reserved additional info
    (b"\x43ab", "cbor-malformed"),  # short byte string
    (b"\x62\xff\xfe", "cbor-malformed"),  # text not UTF-8
    (b"\x81" * (MAX_DEPTH + 1) + b"\x01", "cbor-too-complex"),
    (b"\xa1\x81\x01\x02", "cbor-malformed"),  # array as map key
    (b"\xf8\x10", "cbor-malformed"),  # simple value in the two-byte form
    (b"\x9b" + b"\xff" * 8, "cbor-malformed"),  # 2**64-1 items claimed
]


@pytest.mark.parametrize(("data", "code"), BAD, ids=[b.hex() for b, _ in BAD])
def test_bad_encodings_are_refused_with_a_code(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check(data)
    assert caught.value.code == code


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_anything_but_invalid_input(data: bytes) -> None:
    for parse in (check, decode_sign1, parse_statement):
        # InvalidInput, or a VerificationError (a bad signature length): clean refusals.
        with contextlib.suppress(Error):
            parse(data)


_leaves = st.one_of(st.integers(-(2**64), 2**64 - 1), st.binary(max_size=20), st.text(max_size=10))
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.integers(-50, 50), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(_values)
def test_any_canonical_value_round_trips(value: object) -> None:
    data = cbor2.dumps(value, canonical=True)
    check(data)
    assert cbor2.loads(data) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 199), st.integers(1, 255))
def test_a_corrupted_statement_is_refused_cleanly(seed: bytes, pos: int, flip: int) -> None:
    data = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, seed, b"s" * 64]))
    pos %= len(data)
    bad = data[:pos] + bytes([data[pos] ^ flip]) + data[pos + 1 :]
    from sealtrail.errors import Error

    with contextlib.suppress(Error):
        parse_statement(bad)
