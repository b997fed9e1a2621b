"""The Accept header read by RFC 9110's grammar (service._accept), and the problem-details
negotiation built on it (service._problems.wants_concise)."""

from __future__ import annotations

import time

import pytest

from sealtrail.service._accept import MediaRange, parse_accept, preferred, quality
from sealtrail.service._problems import wants_concise

CONCISE = "application/concise-problem-details+cbor"
KEY_SET = ("application/cbor", "application/cose-key-set")


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        ("", []),
        (" , ,", []),
        ("*/*", [MediaRange("*", "*")]),
        ("Application/COSE", [MediaRange("application", "cose")]),
        ("a/b ; Q=0.2 ,, c/*", [MediaRange("a", "b", 200), MediaRange("c", "*")]),
        ("a/b;q=0", [MediaRange("a", "b", 0)]),
        ("a/b;q=1.000", [MediaRange("a", "b", 1000)]),
        ("a/b;", [MediaRange("a", "b")]),
        ('a/b;x="q=0, c/d";q=0.5', [MediaRange("a", "b", 500)]),
        ('a/b;x="\\"";q=0.5', [MediaRange("a", "b", 500)]),
    ],
)
def test_well_formed_accept_fields(value: str, ranges: list[MediaRange]) -> None:
    assert parse_accept(value) == ranges


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "a/",
        "*/b",
        "a/b c",
        "a/b;x",
        "a/b;q=1.5",
        "a/b;q=0.1234",
        'a/b;q="0.5"',
        'a/b;x="open',
        "a/b;q=",
        "a/b/c",
        "\u00e9/b",
        "a/b\x00",
    ],
)
def test_malformed_accept_fields(value: str) -> None:
    assert parse_accept(value) is None


def test_the_most_specific_range_gives_the_weight() -> None:
    ranges = parse_accept("application/*;q=0.2, application/cbor;q=0, */*;q=0.5")
    assert ranges is not None
    assert quality(ranges, "application/cbor") == (0, 2)
    assert quality(ranges, "application/json") == (200, 1)
    assert quality(ranges, "text/plain") == (500, 0)
    assert quality([], "text/plain") == (0, -1)


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/cbor"),
        ("*/*", "application/cbor"),
        ("application/cose-key-set", "application/cose-key-set"),
        ("application/cose-key-set, application/cbor", "application/cbor"),
        ("application/cose-key-set, */*", "application/cose-key-set"),
        ("application/cbor;q=0.1, application/cose-key-set", "application/cose-key-set"),
        ("application/cose", "application/cbor"),
        ("application/cose-key-set;q=0", "application/cbor"),
        ("application/cose-key-set;q=2", "application/cbor"),
    ],
)
def test_preferred(accept: str | None, chosen: str) -> None:
    assert preferred(accept, KEY_SET) == chosen


def _scope(path: str, *headers: tuple[str, str], root: str = "") -> dict[str, object]:
    return {
        "type": "http",
        "path": root + path,
        "root_path": root,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
    }


@pytest.mark.parametrize(
    ("path", "accept", "concise"),
    [
        ("/entries", None, False),
        ("/entries", "*/*", False),
        ("/entries", "application/json", False),
        ("/entries", "application/problem+json", False),
        ("/entries", "application/*", False),
        ("/entries", "application/cose", True),
        ("/entries", "application/cose, application/json;q=0", True),
        ("/entries", "application/cose, application/json;q=0.001", False),
        ("/entries/ab/statement", "application/cbor", True),
        ("/.well-known/scitt-keys", "application/cose-key-set", True),
        ("/.well-known/scitt-keys/00", "application/cbor", True),
        ("/.well-known/transparency-configuration", "application/cbor", True),
        ("/entriesx", "application/cose", False),
        ("/.well-known/other", "application/cbor", False),
        ("/checkpoint", "text/plain", False),
        ("/checkpoint", CONCISE, True),
        ("/checkpoint", f"{CONCISE}, */*", True),
        ("/checkpoint", f"{CONCISE}, application/json", False),
        ("/checkpoint", f"{CONCISE};q=0.9, application/problem+json", False),
        ("/checkpoint", f"application/problem+json;q=0.9, {CONCISE}", True),
        ("/checkpoint", f"{CONCISE};q=0", False),
        ("/entries", "application/cose;q=2", False),  # malformed: as none
    ],
)
def test_wants_concise(path: str, accept: str | None, concise: bool) -> None:
    headers = () if accept is None else (("Accept", accept),)
    assert wants_concise(_scope(path, *headers)) is concise
    # Behind a proxy that strips a prefix, the route's own path decides.
    assert wants_concise(_scope(path, *headers, root="/ledger")) is concise


def test_a_long_hostile_accept_costs_little() -> None:
    """Every shape of a 64 KiB Accept (the request head's bound) is read in linear time."""
    for value in (
        "a/b" + "; " * 32_000 + "!",
        "a/b;" + " " * 64_000 + "!",
        "a/b;x=" + '"' + "\\a" * 32_000,
        ", ".join(["a/b;q=0.5"] * 6_500),
    ):
        start = time.perf_counter()
        parse_accept(value)
        assert time.perf_counter() - start < 0.5
