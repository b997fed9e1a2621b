"""The StatementStore contract, on every backend: the backlog a shared sequencer feeds from.

What would break a deployment: a statement stored twice under two numbers, a number that
skips or repeats, a batch read (``entries_since``, ``content_types``) that drops a row.
"""

from __future__ import annotations

import hashlib

from sealtrail.storage import StatementRecord, StatementStore
from tests.conformance.conftest import StoreFactory


def _record(n: int, content_type: str = "application/json") -> StatementRecord:
    body = f"statement {n}".encode()
    return StatementRecord(hashlib.sha256(body).digest(), body, "iss", f"sub-{n}", content_type, n)


def _store(store_factory: StoreFactory) -> StatementStore:
    store = store_factory.open()
    assert isinstance(store, StatementStore)
    return store


def test_statements_are_numbered_once_in_order(store_factory: StoreFactory) -> None:
    store = _store(store_factory)
    first = [_record(n) for n in range(5)]
    assert store.put_statements(first) == [1, 2, 3, 4, 5]
    # Stored again (with new ones): the old keep their numbers, the new continue the run.
    again = [first[2], _record(5), first[0], _record(6)]
    assert store.put_statements(again) == [3, 6, 1, 7]
    assert store.get_statement(first[1].entry_id) == first[1]
    assert store.get_statement(b"\0" * 32) is None
    since = store.entries_since(2, limit=3)
    assert since == [(3, first[2].entry_id), (4, first[3].entry_id), (5, first[4].entry_id)]
    assert [(s, r.entry_id) for s, r in store.statements_since(2, limit=3)] == since
    assert store.entries_since(7, limit=10) == []


def test_a_large_group_with_repeats_is_numbered_in_order(store_factory: StoreFactory) -> None:
    """A group larger than one SQL statement takes (PostgreSQL: 256 rows), with statements
    already stored and repeats inside it: each new one numbered once, in the given order."""
    store = _store(store_factory)
    old = [_record(n) for n in range(3)]
    assert store.put_statements(old) == [1, 2, 3]
    new = [_record(n) for n in range(3, 603)]
    group = [*new[:300], old[1], new[0], *new[300:], old[2], new[599]]
    assert store.put_statements(group) == [
        *range(4, 304),
        2,
        4,
        *range(304, 604),
        3,
        603,
    ]
    assert [e for _, e in store.entries_since(0, limit=1000)] == [r.entry_id for r in [*old, *new]]
    assert store.put_statements([_record(603)]) == [604]


def test_content_types_of_many_statements_at_once(store_factory: StoreFactory) -> None:
    store = _store(store_factory)
    records = [_record(n, f"type/{n % 3}") for n in range(9000)]  # more than one SQL chunk
    for i in range(0, len(records), 3000):
        store.put_statements(records[i : i + 3000])
    unknown = [hashlib.sha256(b"never stored %d" % n).digest() for n in range(10)]
    asked = [r.entry_id for r in records] + unknown
    found = store.content_types(asked)
    assert found == {r.entry_id: r.content_type for r in records}
    assert store.content_types([]) == {}


def test_the_sequenced_watermark_only_rises(store_factory: StoreFactory) -> None:
    store = _store(store_factory)
    assert store.read_sequenced() == 0
    store.write_sequenced(5)
    store.write_sequenced(3)
    assert store.read_sequenced() == 5


def test_statements_of_a_type_in_order_and_after_a_skip(store_factory: StoreFactory) -> None:
    store = _store(store_factory)
    records = [_record(n, f"type/{n % 2}") for n in range(10)]
    store.put_statements(records)
    evens = [r for r in records if r.content_type == "type/0"]
    assert store.statements_of_type("type/0") == evens
    assert store.statements_of_type("type/0", skip=3) == evens[3:]
    assert store.statements_of_type("type/0", skip=99) == []
    assert store.statements_of_type("type/none") == []


def test_statements_of_a_type_after_a_seq(store_factory: StoreFactory) -> None:
    store = _store(store_factory)
    records = [_record(n, f"type/{n % 2}") for n in range(10)]
    seqs = store.put_statements(records)
    evens = [(seq, r) for seq, r in zip(seqs, records, strict=True) if r.content_type == "type/0"]
    assert store.statements_of_type_after("type/0", -(1 << 63)) == evens
    assert store.statements_of_type_after("type/0", evens[2][0]) == evens[3:]
    assert store.statements_of_type_after("type/0", seqs[-1]) == []
    assert store.statements_of_type_after("type/none", 0) == []
