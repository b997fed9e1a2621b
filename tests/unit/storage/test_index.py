"""The provenance index: one conformance suite over every backend, then SQLite specifics.

Every backend must give the same answers as a plain dict model (the hypothesis test), refuse
what the contract says it refuses without writing anything, and — for the audit — read back
what is really stored.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.errors import (
    ConfigError,
    Conflict,
    Corruption,
    InvalidInput,
    NotFound,
    StorageError,
    TooLarge,
)
from sealtrail.storage import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    MAX_BATCH_ROWS,
    MAX_NAME_BYTES,
    MAX_READ_ENTRIES,
    MAX_VALUE_BYTES,
    Change,
    IndexedEntry,
    IndexStore,
    MemoryIndex,
    PostgresIndex,
    SQLiteIndex,
    index_postgres,
    open_index,
)
from sealtrail.storage.index_sqlite import _MIGRATIONS

Batch = list[tuple[IndexedEntry, Sequence[Change]]]
Dumps = tuple[
    list[IndexedEntry],
    list[tuple[int, int, str, str, str | None]],
    list[tuple[str, str, str]],
]


def entry(
    index: int,
    *subjects: str,
    outcome: str = "applied",
    code: str | None = None,
    kind: str = "device-manifest",
    org: str = "acme",
) -> IndexedEntry:
    entry_id = hashlib.sha256(index.to_bytes(8, "big")).digest()
    return IndexedEntry(index, entry_id, kind, org, outcome, code, tuple(sorted(set(subjects))))


def dumps(index: IndexStore) -> Dumps:
    return list(index.dump_entries()), list(index.dump_changes()), list(index.dump_rows())


EMPTY: Dumps = ([], [], [])


# -- PostgreSQL: a schema of its own per test -----------------------------------------------------

#: The server the PostgreSQL cases use (trust authentication on this machine).
PG_URL = os.environ.get("SEALTRAIL_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
_pg_reason: list[str | None] = []


def _pg_skip_reason() -> str | None:
    """Why the PostgreSQL cases cannot run here (``None``: they can); asked once."""
    if not _pg_reason:
        try:
            psycopg.connect(PG_URL, connect_timeout=2).close()
            _pg_reason.append(None)
        except psycopg.Error as exc:
            _pg_reason.append(
                f"PostgreSQL not reachable at SEALTRAIL_TEST_POSTGRES / 127.0.0.1:5432 "
                f"({exc.__class__.__name__}); start it as DEVELOPERS.md says"
            )
    return _pg_reason[0]


def with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


#: How the schemas of these tests are named: a prefix, then 12 hex digits (a shared server
#: may ask each run to keep to a prefix of its own).
PG_SCHEMA_PREFIX = os.environ.get("SEALTRAIL_TEST_INDEX_SCHEMA_PREFIX", "test_index_")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema, dropped after the test."""
    reason = _pg_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if not PG_SCHEMA_PREFIX.isidentifier():
        raise ValueError("SEALTRAIL_TEST_INDEX_SCHEMA_PREFIX must be an SQL identifier")
    schema = f"{PG_SCHEMA_PREFIX}{secrets.token_hex(6)}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(PG_URL, schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def pg_raw(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """Another connection on the index's schema: "another process"."""
    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def pg_index(pg_url: str) -> Iterator[PostgresIndex]:
    store = PostgresIndex(pg_url)
    yield store
    store.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexStore]:
    store: IndexStore
    if request.param == "memory":
        store = MemoryIndex()
    elif request.param == "sqlite":
        store = SQLiteIndex(tmp_path / "provenance.db")
    else:
        store = PostgresIndex(request.getfixturevalue("pg_url"))
    yield store
    store.close()


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Iterator[SQLiteIndex]:
    store = SQLiteIndex(tmp_path / "provenance.db")
    yield store
    store.close()


#: Three entries: a manifest of two devices, a refused assembly, an arrival that moves one.
HISTORY: Batch = [
    (
        entry(0, "device:aa", "device:bb"),
        [
            ("devices", "aa", '{"state":"made"}'),
            ("devices", "bb", '{"state":"made"}'),
        ],
    ),
    (entry(1, "node:srv-1", outcome="refused", code="assembly-unknown-child", kind="assembly"), []),
    (
        entry(2, "device:aa", "node:srv-1", kind="arrival", org="dc"),
        [("devices", "aa", '{"state":"arrived"}'), ("nodes", "srv-1", '{"ok":true}')],
    ),
]


# -- the conformance suite ------------------------------------------------------------------------


def test_is_an_index_store(index: IndexStore) -> None:
    assert isinstance(index, IndexStore)


def test_an_empty_index(index: IndexStore) -> None:
    assert index.applied_size() == 0
    assert index.row("devices", "aa") is None
    assert index.rows("devices") == []
    assert index.row_at("devices", "aa", 0) is None
    assert index.history("devices", "aa") == []
    assert index.entries(0, 10) == []
    assert index.entries_about("device:aa") == []
    assert dumps(index) == EMPTY
    index.apply([])  # an empty batch does nothing
    assert index.applied_size() == 0


def test_round_trip(index: IndexStore) -> None:
    index.apply(HISTORY)
    assert index.applied_size() == 3
    assert index.row("devices", "aa") == '{"state":"arrived"}'
    assert index.row("devices", "cc") is None
    assert index.row("nodes", "aa") is None  # tables are apart
    assert index.rows("devices") == [("aa", '{"state":"arrived"}'), ("bb", '{"state":"made"}')]
    assert index.rows("nodes") == [("srv-1", '{"ok":true}')]
    assert index.rows("nowhere") == []
    assert index.entries(0, 3) == [e for e, _ in HISTORY]
    assert index.entries(1, 2) == [HISTORY[1][0]]
    assert index.entries(2, 100) == [HISTORY[2][0]]  # cut short at the applied size
    assert index.entries(3, 3) == []
    assert index.history("devices", "aa") == [(0, '{"state":"made"}'), (2, '{"state":"arrived"}')]
    assert index.changes(0, 3) == list(index.dump_changes())
    assert index.changes(1, 2) == []  # a refused entry changes nothing
    assert index.changes(2, 100) == [  # cut short at the applied size
        (2, 0, "devices", "aa", '{"state":"arrived"}'),
        (2, 1, "nodes", "srv-1", '{"ok":true}'),
    ]
    assert index.changes(0, 1) == [
        (0, 0, "devices", "aa", '{"state":"made"}'),
        (0, 1, "devices", "bb", '{"state":"made"}'),
    ]
    assert dumps(index) == (
        [e for e, _ in HISTORY],
        [
            (0, 0, "devices", "aa", '{"state":"made"}'),
            (0, 1, "devices", "bb", '{"state":"made"}'),
            (2, 0, "devices", "aa", '{"state":"arrived"}'),
            (2, 1, "nodes", "srv-1", '{"ok":true}'),
        ],
        [
            ("devices", "aa", '{"state":"arrived"}'),
            ("devices", "bb", '{"state":"made"}'),
            ("nodes", "srv-1", '{"ok":true}'),
        ],
    )


def test_skipped_entries_with_and_without_a_code(index: IndexStore) -> None:
    skipped = [
        entry(0, outcome="skipped", kind="", org=""),  # not provenance at all
        entry(1, outcome="skipped", code="index-statement-missing", kind="", org=""),
        entry(2, outcome="skipped", code="cose-bad-signature", kind="custody"),
    ]
    index.apply([(e, []) for e in skipped])
    assert index.entries(0, 3) == skipped
    assert list(index.dump_entries()) == skipped


def test_batches_in_any_split_give_the_same_index(index: IndexStore) -> None:
    for item in HISTORY:
        index.apply([item])
    one_by_one = dumps(index)
    index.reset()
    index.apply(HISTORY[:2])
    index.apply(HISTORY[2:])
    assert dumps(index) == one_by_one


def test_later_changes_win_within_an_entry_and_a_batch(index: IndexStore) -> None:
    index.apply(
        [
            (entry(0), [("t", "k", '"a"'), ("t", "k", '"b"'), ("t", "j", '"x"')]),
            (entry(1), [("t", "k", '"c"'), ("t", "j", None), ("t", "j", '"y"')]),
            (entry(2), [("t", "k", None), ("t", "k", '"d"'), ("t", "j", None)]),
        ]
    )
    assert index.row("t", "k") == '"d"'
    assert index.row("t", "j") is None
    assert index.rows("t") == [("k", '"d"')]
    assert index.history("t", "k") == [(0, '"a"'), (0, '"b"'), (1, '"c"'), (2, None), (2, '"d"')]
    assert index.history("t", "j") == [(0, '"x"'), (1, None), (1, '"y"'), (2, None)]
    assert [index.row_at("t", "k", n) for n in range(4)] == [None, '"b"', '"c"', '"d"']
    assert [index.row_at("t", "j", n) for n in range(4)] == [None, '"x"', '"y"', None]
    assert [c[:2] for c in index.dump_changes()] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 1),
        (2, 2),
    ]


def test_a_deletion_removes_the_row_and_stays_in_the_history(index: IndexStore) -> None:
    index.apply(HISTORY)
    index.apply([(entry(3), [("devices", "bb", None), ("devices", "never", None)])])
    assert index.row("devices", "bb") is None
    assert index.rows("devices") == [("aa", '{"state":"arrived"}')]
    assert ("devices", "bb", '{"state":"made"}') not in list(index.dump_rows())
    assert index.history("devices", "bb") == [(0, '{"state":"made"}'), (3, None)]
    assert index.history("devices", "never") == [(3, None)]  # recorded all the same
    assert index.row_at("devices", "bb", 3) == '{"state":"made"}'
    assert index.row_at("devices", "bb", 4) is None
    index.apply([(entry(4), [("devices", "bb", '{"state":"reborn"}')])])
    assert index.row("devices", "bb") == '{"state":"reborn"}'


def test_row_at_reads_every_version(index: IndexStore) -> None:
    index.apply(HISTORY)
    assert [index.row_at("devices", "aa", n) for n in range(4)] == [
        None,
        '{"state":"made"}',
        '{"state":"made"}',
        '{"state":"arrived"}',
    ]
    assert [index.row_at("nodes", "srv-1", n) for n in range(4)] == [
        None,
        None,
        None,
        '{"ok":true}',
    ]


def test_row_at_refuses_sizes_the_index_has_not_reached(index: IndexStore) -> None:
    index.apply(HISTORY)
    with pytest.raises(NotFound):
        index.row_at("devices", "aa", 4)
    with pytest.raises(InvalidInput):
        index.row_at("devices", "aa", -1)


@pytest.mark.parametrize("read", ["entries", "changes"])
@pytest.mark.parametrize(("start", "stop"), [(-1, 2), (3, 2)])
def test_ranged_reads_refuse_bad_ranges(
    index: IndexStore, read: str, start: int, stop: int
) -> None:
    with pytest.raises(InvalidInput) as info:
        getattr(index, read)(start, stop)
    assert info.value.code == "index-bad-read"


@pytest.mark.parametrize("read", ["entries", "changes"])
def test_ranged_reads_refuse_reads_over_the_limit(index: IndexStore, read: str) -> None:
    assert getattr(index, read)(0, MAX_READ_ENTRIES) == []
    with pytest.raises(TooLarge) as info:
        getattr(index, read)(0, MAX_READ_ENTRIES + 1)
    assert info.value.code == "index-read-too-large"


def test_entries_about_is_a_timeline(index: IndexStore) -> None:
    index.apply(HISTORY)
    index.apply([(entry(i, "device:aa", "x:other"), []) for i in range(3, 8)])
    about = index.entries_about("device:aa")
    assert [e.index for e in about] == [0, 2, 3, 4, 5, 6, 7]
    assert about[1] == HISTORY[2][0]  # with every subject, not only the one asked for
    assert [e.index for e in index.entries_about("node:srv-1")] == [1, 2]
    assert [e.index for e in index.entries_about("device:aa", limit=2)] == [0, 2]
    assert [e.index for e in index.entries_about("device:aa", start=3, limit=2)] == [3, 4]
    assert [e.index for e in index.entries_about("device:aa", start=5)] == [5, 6, 7]
    assert index.entries_about("device:aa", start=8) == []
    assert index.entries_about("device:a") == []  # exact, not a prefix
    for bad in ({"limit": 0}, {"start": -1}):
        with pytest.raises(InvalidInput):
            index.entries_about("device:aa", **bad)
    with pytest.raises(TooLarge):
        index.entries_about("device:aa", limit=MAX_READ_ENTRIES + 1)


@pytest.mark.parametrize(
    ("first", "why"),
    [(0, "re-applies entries 0-2"), (2, "re-applies entry 2"), (4, "skips entry 3")],
)
def test_a_batch_that_does_not_follow_is_a_conflict_and_writes_nothing(
    index: IndexStore, first: int, why: str
) -> None:
    index.apply(HISTORY)
    before = dumps(index)
    with pytest.raises(Conflict) as info:
        index.apply([(entry(first), [("devices", "aa", '"forged"')]), (entry(first + 1), [])])
    assert info.value.code == "index-conflict", why
    assert index.applied_size() == 3
    assert dumps(index) == before


def test_a_first_batch_must_start_at_zero(index: IndexStore) -> None:
    with pytest.raises(Conflict):
        index.apply([(entry(1), [("t", "k", "1")])])
    assert dumps(index) == EMPTY


def test_indexes_within_a_batch_must_be_consecutive(index: IndexStore) -> None:
    for indexes in ([0, 2], [0, 0], [0, 1, 1], [1, 0]):
        with pytest.raises(InvalidInput) as info:
            index.apply([(entry(i), [("t", str(i), "1")]) for i in indexes])
        assert info.value.code == "index-not-consecutive"
        assert dumps(index) == EMPTY


BIG = "x" * (MAX_VALUE_BYTES + 1)
BIG_UTF8 = "é" * (MAX_VALUE_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
FULL = "x" * MAX_VALUE_BYTES


GOOD: Batch = [(entry(3, "device:cc"), [("devices", "cc", '"ok"')])]
FOUR = entry(4)
TOO_LONG = MAX_NAME_BYTES + 1
#: Values of the largest size, one over the batch's byte budget (65 references to one string).
OVER_BUDGET = [("t", str(i), FULL) for i in range(MAX_BATCH_BYTES // MAX_VALUE_BYTES + 1)]


def last(e: IndexedEntry, changes: Sequence[Any] = ()) -> Callable[[], Batch]:
    """A batch whose *last* entry is at fault, built when the test runs."""
    return lambda: [*GOOD, (e, list(changes))]


def bare(subjects: tuple[str, ...], entry_id: bytes = b"\x00" * 32) -> IndexedEntry:
    return IndexedEntry(4, entry_id, "", "", "skipped", None, subjects)


#: case -> (stable code, the batch)
REFUSED: dict[str, tuple[str, Callable[[], Batch]]] = {
    "a value over the limit": ("index-value-too-large", last(FOUR, [("t", "k", BIG)])),
    "a value over in bytes": ("index-value-too-large", last(FOUR, [("t", "k", BIG_UTF8)])),
    "a key over the limit": ("index-name-too-large", last(FOUR, [("t", "k" * TOO_LONG, "1")])),
    "a table name over": ("index-name-too-large", last(FOUR, [("é" * MAX_NAME_BYTES, "k", "1")])),
    "a subject over the limit": ("index-name-too-large", last(entry(4, "s" * TOO_LONG))),
    "an empty key": ("index-bad-value", last(FOUR, [("t", "", "1")])),
    "an empty table name": ("index-bad-value", last(FOUR, [("", "k", "1")])),
    "a bytes value": ("index-bad-value", last(FOUR, [("t", "k", b"1")])),
    "a lone surrogate": ("index-bad-value", last(FOUR, [("t", "k", '"\udc80"')])),
    "a lone surrogate in a key": ("index-bad-value", last(FOUR, [("t", "\ud800", "1")])),
    "not a triple": ("index-bad-value", last(FOUR, [("t", "k")])),
    "an unknown outcome": ("index-bad-entry", last(entry(4, outcome="maybe"))),
    "a refusal without a code": ("index-bad-entry", last(entry(4, outcome="refused"))),
    "an empty skip code": ("index-bad-entry", last(entry(4, outcome="skipped", code=""))),
    "a code on an applied entry": ("index-bad-entry", last(entry(4, code="why"))),
    "a short entry id": ("index-bad-entry", last(bare((), b"\x00" * 31))),
    "unsorted subjects": ("index-bad-entry", last(bare(("b", "a")))),
    "repeated subjects": ("index-bad-entry", last(bare(("a", "a")))),
    "subjects in a list": ("index-bad-entry", last(bare(["a"]))),  # type: ignore[arg-type]
    # Counted before anything is looked at: the same item many times will do.
    "too many entries": (
        "index-batch-too-large",
        lambda: [*GOOD, *[(FOUR, [])] * MAX_BATCH_ENTRIES],
    ),
    "too many rows": ("index-batch-too-large", last(FOUR, [("t", "k", None)] * MAX_BATCH_ROWS)),
    "too many bytes": ("index-batch-too-large", last(FOUR, OVER_BUDGET)),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_batch_leaves_the_index_untouched(index: IndexStore, case: str) -> None:
    code, batch = REFUSED[case]
    index.apply(HISTORY)
    before = dumps(index)
    with pytest.raises(InvalidInput) as info:
        index.apply(batch())
    assert info.value.code == code, case
    assert "cc" not in info.value.message  # names positions, never keys or values
    assert index.applied_size() == 3
    assert dumps(index) == before


def test_the_limits_themselves_are_allowed(index: IndexStore) -> None:
    name = "é" * (MAX_NAME_BYTES // 2)
    index.apply([(entry(0, name, kind=name, org=name), [(name, name, FULL)])])
    assert index.row(name, name) == FULL
    assert index.entries_about(name)[0].org == name


def test_reset_forgets_everything(index: IndexStore) -> None:
    index.apply(HISTORY)
    index.reset()
    assert index.applied_size() == 0
    assert dumps(index) == EMPTY
    assert index.row("devices", "aa") is None
    assert index.history("devices", "aa") == []
    assert index.entries_about("device:aa") == []
    index.apply(HISTORY)  # and a rebuild starts from entry 0
    assert index.applied_size() == 3


def test_the_rules_version_is_recorded_by_the_first_batch_and_by_reset(
    index: IndexStore,
) -> None:
    """The index keeps the version of the rules its entries were computed with: the one
    the first batch applied to it passes, or the one a reset (before a rebuild) passes."""
    assert index.rules_version() is None  # nothing applied, nothing recorded
    index.apply([], rules_version=5)  # an empty batch does nothing
    assert index.rules_version() is None
    index.apply(HISTORY[:1], rules_version=2)
    assert index.rules_version() == 2
    index.apply(HISTORY[1:], rules_version=2)
    assert (index.applied_size(), index.rules_version()) == (3, 2)
    index.reset(rules_version=3)  # a rebuild with the rules of version 3
    assert (index.applied_size(), index.rules_version()) == (0, 3)
    assert dumps(index) == EMPTY
    # Empty, the index holds nothing computed by any rules: the first batch records its own.
    index.apply(HISTORY[:2], rules_version=4)
    assert index.rules_version() == 4
    index.reset()
    assert index.rules_version() is None
    index.apply(HISTORY)  # no version: none recorded, and none is required next
    index.apply([(entry(3), [])])
    assert (index.applied_size(), index.rules_version()) == (4, None)


@pytest.mark.parametrize(("recorded", "given"), [(1, 2), (2, 1), (2, None), (None, 2)])
def test_a_batch_of_other_rules_is_refused_and_writes_nothing(
    index: IndexStore, recorded: int | None, given: int | None
) -> None:
    """One index, one version of the rules: a batch of another would mix rows no replay of
    the log gives."""
    index.apply(HISTORY[:2], rules_version=recorded)
    before = dumps(index)
    with pytest.raises(Conflict) as refused:
        index.apply(HISTORY[2:], rules_version=given)
    assert refused.value.code == "index-rules-mismatch"
    assert "index rebuild" in refused.value.hint
    assert dumps(index) == before
    assert (index.applied_size(), index.rules_version()) == (2, recorded)
    # A batch that does not follow is that first (the caller resumes, then learns of this).
    with pytest.raises(Conflict) as behind:
        index.apply(HISTORY[:1], rules_version=given)
    assert behind.value.code == "index-conflict"
    index.apply(HISTORY[2:], rules_version=recorded)  # its own rules: applied
    assert index.applied_size() == 3


@pytest.mark.parametrize("version", [0, -1, True, "2", 2.0])
def test_a_bad_rules_version_is_refused(index: IndexStore, version: Any) -> None:
    writes: list[Callable[[], None]] = [
        lambda: index.apply(HISTORY, rules_version=version),
        lambda: index.reset(rules_version=version),
    ]
    for write in writes:
        with pytest.raises(InvalidInput) as refused:
            write()
        assert refused.value.code == "index-bad-rules-version"
    assert (index.applied_size(), index.rules_version()) == (0, None)


def test_claims_share_or_exclude(index: IndexStore) -> None:
    """Servers share an index; a rebuild has it alone, and each is refused by name."""
    index.claim("serve a/1")
    index.claim("serve b/2")  # shared claims stand together
    with pytest.raises(Conflict, match="in use by serve a/1") as refused:
        index.claim("rebuild c/3", exclusive=True)
    assert refused.value.code == "index-in-use"
    assert "Stop every server" in refused.value.hint
    index.release("serve a/1")
    with pytest.raises(Conflict, match="in use by serve b/2"):
        index.claim("rebuild c/3", exclusive=True)
    index.release("serve b/2")
    index.claim("rebuild c/3", exclusive=True)
    index.claim("rebuild c/3", exclusive=True)  # renewed by its holder
    with pytest.raises(Conflict, match="being rebuilt by rebuild c/3") as refused:
        index.claim("serve a/1")
    assert "Wait for the rebuild" in refused.value.hint
    with pytest.raises(Conflict, match="being rebuilt"):
        index.claim("rebuild d/4", exclusive=True)
    index.apply(HISTORY)
    index.reset()  # the rebuild's own claim outlives the reset
    with pytest.raises(Conflict, match="being rebuilt"):
        index.claim("serve a/1")
    index.release("rebuild c/3")
    index.release("rebuild c/3")  # releasing twice is harmless
    index.claim("serve a/1")


def test_claims_are_listed_with_the_time_they_have_left(index: IndexStore) -> None:
    assert index.claims() == []
    index.claim("serve b/2", ttl=10)
    index.claim("serve a/1", ttl=10)
    index.claim("serve c/3", ttl=0.2)
    time.sleep(0.3)  # c/3 lapsed: not listed, though still stored
    listed = index.claims()
    assert [(holder, exclusive) for holder, exclusive, _ in listed] == [
        ("serve a/1", False),
        ("serve b/2", False),
    ]
    assert all(9 < left <= 10 for _, _, left in listed), listed
    index.release("serve a/1")
    index.release("serve b/2")
    index.claim("rebuild d/4", exclusive=True)
    assert [(h, e) for h, e, _ in index.claims()] == [("rebuild d/4", True)]


def test_a_claim_that_is_not_renewed_lapses(index: IndexStore) -> None:
    index.claim("rebuild killed/9", exclusive=True, ttl=0.3)
    with pytest.raises(Conflict):
        index.claim("serve a/1")
    time.sleep(0.5)
    index.claim("serve a/1")  # the killed rebuild's claim lapsed
    index.claim("serve b/2", ttl=0.3)
    time.sleep(0.5)
    with pytest.raises(Conflict, match="serve a/1"):  # a/1's claim still stands, b/2's not
        index.claim("rebuild c/3", exclusive=True)


@pytest.mark.parametrize(
    ("holder", "ttl"), [("", 15.0), ("x" * 201, 15.0), ("a\nb", 15.0), ("a", 0), ("a", 4000)]
)
def test_a_bad_claim_is_refused(index: IndexStore, holder: str, ttl: float) -> None:
    with pytest.raises(InvalidInput) as refused:
        index.claim(holder, ttl=ttl)
    assert refused.value.code == "claim-invalid"


def test_a_dump_is_a_snapshot(index: IndexStore) -> None:
    index.apply(HISTORY[:1])
    rows, changes, entries = index.dump_rows(), index.dump_changes(), index.dump_entries()
    index.apply(HISTORY[1:])  # while the dumps are open
    assert len(list(rows)) == 2
    assert len(list(changes)) == 2
    assert [e.index for e in entries] == [0]
    assert len(list(index.dump_changes())) == 4


def test_text_is_kept_as_given_and_ordered_by_code_point(index: IndexStore) -> None:
    keys = ["b", "a", "Z", "é", "\U0001f600", "\uffff", "a\x00b", "a b"]
    index.apply([(entry(0), [("t", k, f'"{k}"') for k in keys])])
    assert index.rows("t") == [(k, f'"{k}"') for k in sorted(keys)]
    assert index.row("t", "a\x00b") == '"a\x00b"'


def test_ten_thousand_changes_in_one_batch(index: IndexStore) -> None:
    """More rows than one SQLite statement binds (5 values a change, 32,766 at most)."""
    changes: list[Change] = [("devices", f"{i:05d}", f'{{"n":{i}}}') for i in range(10_000)]
    index.apply([(entry(0, "node:rack"), changes), (entry(1), changes[:10])])
    assert len(index.rows("devices")) == 10_000
    assert len(list(index.dump_changes())) == 10_010
    assert index.history("devices", "00009") == [(0, '{"n":9}'), (1, '{"n":9}')]


def test_threads_share_an_index(index: IndexStore) -> None:
    index.apply(HISTORY)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                assert index.row("devices", "bb") == '{"state":"made"}'
                assert index.applied_size() >= 3
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(3, 13):
        index.apply([(entry(i), [("counter", "n", str(i))])])
    for t in readers:
        t.join()
    assert errors == []
    assert index.row("counter", "n") == "12"


# -- against a model: random changes in random batches ---------------------------------------------

TABLES = ["devices", "nodes"]
KEYS = ["a", "b", "é", "\U0001f600"]
VALUES = [None, '"1"', '"2"', "{}", ""]

changes_st = st.lists(
    st.tuples(st.sampled_from(TABLES), st.sampled_from(KEYS), st.sampled_from(VALUES)), max_size=4
)
subjects_st = st.frozensets(st.sampled_from(["device:a", "device:b", "node:n"]), max_size=2)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    per_entry=st.lists(st.tuples(changes_st, subjects_st), max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=5), min_size=12, max_size=12),
)
def test_the_index_agrees_with_a_dict_model(
    index: IndexStore,
    per_entry: list[tuple[list[Change], frozenset[str]]],
    cuts: list[int],
) -> None:
    index.reset()  # hypothesis runs every example on the same index
    items: Batch = [
        (entry(i, *subjects), changes) for i, (changes, subjects) in enumerate(per_entry)
    ]
    # The model: rows after each entry, and every change.
    states: list[dict[tuple[str, str], str]] = [{}]
    history: dict[tuple[str, str], list[tuple[int, str | None]]] = {}
    for i, (_, changes) in enumerate(items):
        state = dict(states[-1])
        for table, key, value in changes:
            history.setdefault((table, key), []).append((i, value))
            if value is None:
                state.pop((table, key), None)
            else:
                state[(table, key)] = value
        states.append(state)
    # Applied in random splits.
    at = 0
    for cut in cuts:
        if at >= len(items):
            break
        index.apply(items[at : at + cut])
        at += cut
    assert index.applied_size() == len(items)
    final = states[-1]
    assert list(index.dump_rows()) == sorted((t, k, v) for (t, k), v in final.items())
    assert list(index.dump_entries()) == [e for e, _ in items]
    assert list(index.dump_changes()) == [
        (i, pos, *change)
        for i, (_, changes) in enumerate(items)
        for pos, change in enumerate(changes)
    ]
    for table in TABLES:
        assert index.rows(table) == sorted((k, v) for (t, k), v in final.items() if t == table)
        for key in KEYS:
            assert index.row(table, key) == final.get((table, key))
            assert index.history(table, key) == history.get((table, key), [])
            for size, state in enumerate(states):
                assert index.row_at(table, key, size) == state.get((table, key))
    for subject in ["device:a", "device:b", "node:n"]:
        assert index.entries_about(subject) == [e for e, _ in items if subject in e.subjects]


# -- memory: fault hooks ---------------------------------------------------------------------------


def test_memory_faults_before_and_after_apply() -> None:
    index = MemoryIndex()
    index.faults.arm("before_apply")
    with pytest.raises(StorageError, match="injected"):
        index.apply(HISTORY)
    assert dumps(index) == EMPTY
    index.faults.arm("after_apply")
    with pytest.raises(StorageError):
        index.apply(HISTORY)
    assert index.applied_size() == 3  # failed but persisted: the caller reads this to know
    with pytest.raises(Conflict):
        index.apply(HISTORY)
    index.faults.arm("read", times=2)
    with pytest.raises(StorageError):
        index.row("devices", "aa")
    with pytest.raises(StorageError):
        index.dump_rows()
    assert index.row("devices", "aa") == '{"state":"arrived"}'
    assert index.faults.fired == ["before_apply", "after_apply", "read", "read"]
    with pytest.raises(ValueError, match="unknown fault point"):
        index.faults.arm("after_parts")


def test_memory_tampering_shows_in_the_reads() -> None:
    index = MemoryIndex()
    index.apply(HISTORY)
    index.tamper_row("devices", "bb", '"forged"')
    index.tamper_row("devices", "aa", None)
    assert list(index.dump_rows())[:1] == [("devices", "bb", '"forged"')]
    assert index.history("devices", "bb") == [(0, '{"state":"made"}')]  # history untouched


# -- SQLite specifics ------------------------------------------------------------------------------


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_sqlite_survives_close_and_reopen(sqlite_index: SQLiteIndex) -> None:
    sqlite_index.apply(HISTORY)
    before = dumps(sqlite_index)
    sqlite_index.close()
    sqlite_index.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        sqlite_index.row("devices", "aa")
    again = SQLiteIndex(sqlite_index.path)
    try:
        assert again.applied_size() == 3
        assert dumps(again) == before
        again.apply([(entry(3), [("devices", "aa", None)])])
        assert again.row_at("devices", "aa", 3) == '{"state":"arrived"}'
    finally:
        again.close()


def test_sqlite_settings_and_schema_version(sqlite_index: SQLiteIndex) -> None:
    conn = raw(sqlite_index.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {
        "idx_entries",
        "idx_subjects",
        "idx_changes",
        "idx_rows",
        "idx_claims",
        "idx_meta",
    }
    conn.close()
    assert sqlite_index._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    SQLiteIndex(sqlite_index.path).close()  # reopening migrates nothing twice


def test_sqlite_a_newer_schema_is_refused(sqlite_index: SQLiteIndex) -> None:
    sqlite_index.close()
    conn = raw(sqlite_index.path)
    conn.execute(f"PRAGMA user_version = {len(_MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="upgrade"):
        SQLiteIndex(sqlite_index.path)


def test_sqlite_refuses_bad_settings_and_places(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SQLiteIndex(tmp_path / "nowhere" / "provenance.db")
    with pytest.raises(ConfigError, match="synchronous"):
        SQLiteIndex(tmp_path / "provenance.db", synchronous="OFF")
    (tmp_path / "text.db").write_bytes(b"not a database, but a text file long enough. " * 4)
    with pytest.raises(StorageError, match="not a database") as info:
        SQLiteIndex(tmp_path / "text.db")
    assert str(tmp_path) not in info.value.message


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        (
            "UPDATE idx_rows SET value = '\"forged\"' WHERE tbl = 'devices' AND key = 'bb'",
            [("devices", "aa", '{"state":"arrived"}'), ("devices", "bb", '"forged"')],
        ),
        (
            "DELETE FROM idx_rows WHERE tbl = 'devices' AND key = 'aa'",
            [("devices", "bb", '{"state":"made"}')],
        ),
        (
            "INSERT INTO idx_rows (tbl, key, value) VALUES ('devices', 'zz', '\"planted\"')",
            [
                ("devices", "aa", '{"state":"arrived"}'),
                ("devices", "bb", '{"state":"made"}'),
                ("devices", "zz", '"planted"'),
            ],
        ),
    ],
    ids=["edited", "deleted", "inserted"],
)
def test_sqlite_rows_edited_behind_the_index_are_what_it_reads(
    sqlite_index: SQLiteIndex, sql: str, rows: list[tuple[str, str, str]]
) -> None:
    sqlite_index.apply(HISTORY)
    assert sqlite_index.rows("devices")  # read once, so that a cache would be warm
    conn = raw(sqlite_index.path)  # another connection: "another process"
    conn.execute(sql)
    conn.close()
    assert [r for r in sqlite_index.dump_rows() if r[0] == "devices"] == rows
    assert sqlite_index.rows("devices") == [(k, v) for _, k, v in rows]
    assert sqlite_index.row("devices", rows[-1][1]) == rows[-1][2]
    # The history is not what was edited: the audit finds the row that differs.
    assert sqlite_index.row_at("devices", "bb", 3) == '{"state":"made"}'


def test_sqlite_apply_rolls_back_a_failed_batch(sqlite_index: SQLiteIndex) -> None:
    """A clash half-way through the transaction (a change row planted for entry 4) leaves
    nothing of the batch, entry 3 included."""
    sqlite_index.apply(HISTORY)
    sqlite_index.execute(
        "INSERT INTO idx_changes (idx, pos, tbl, key, value) VALUES (4, 0, 'devices', 'aa', 'x')"
    )
    before = dumps(sqlite_index)
    with pytest.raises(Corruption, match="contradicts"):
        sqlite_index.apply(
            [
                (entry(3, "device:cc"), [("devices", "cc", '"new"')]),
                (entry(4), [("devices", "aa", '"gone"')]),
            ]
        )
    assert sqlite_index.applied_size() == 3
    assert dumps(sqlite_index) == before
    assert sqlite_index.entries_about("device:cc") == []


def test_sqlite_a_dump_holds_its_own_connection_until_done(sqlite_index: SQLiteIndex) -> None:
    sqlite_index.apply(HISTORY)
    assert len(sqlite_index._all) == 1
    rows = sqlite_index.dump_rows()
    unstarted = sqlite_index.dump_entries()
    assert len(sqlite_index._all) == 3
    assert len(list(rows)) == 3
    del unstarted  # dropped without a single next()
    assert len(sqlite_index._all) == 1
    changes = sqlite_index.dump_changes()
    next(changes)
    sqlite_index.close()  # closes open dumps too
    with pytest.raises(StorageError):
        list(changes)


def test_sqlite_claims_hold_across_objects_on_one_file(sqlite_index: SQLiteIndex) -> None:
    other = SQLiteIndex(sqlite_index.path)  # another process, as far as the file goes
    try:
        other.claim("serve a/1")
        with pytest.raises(Conflict, match="serve a/1"):
            sqlite_index.claim("rebuild b/2", exclusive=True)
    finally:
        other.close()


def test_sqlite_an_index_of_the_first_schema_is_upgraded(tmp_path: Path) -> None:
    conn = raw(tmp_path / "provenance.db")
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    upgraded = SQLiteIndex(tmp_path / "provenance.db")
    try:
        upgraded.claim("serve a/1")
        assert upgraded._conn().execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
    finally:
        upgraded.close()


def _sqlite_of_the_previous_schema(path: Path, batch: Batch) -> None:
    """An index file as the release before rules versions left it (schema 2), holding
    ``batch``: written by hand, as that release's ``apply`` would have."""
    conn = raw(path)
    for statements in _MIGRATIONS[:2]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    for item, changes in batch:
        conn.execute(
            "INSERT INTO idx_entries (idx, entry_id, kind, org, outcome, code)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (item.index, item.entry_id, item.kind, item.org, item.outcome, item.code),
        )
        for subject in item.subjects:
            conn.execute("INSERT INTO idx_subjects VALUES (?, ?)", (subject, item.index))
        for pos, (table, key, value) in enumerate(changes):
            conn.execute(
                "INSERT INTO idx_changes VALUES (?, ?, ?, ?, ?)",
                (item.index, pos, table, key, value),
            )
            if value is None:
                conn.execute("DELETE FROM idx_rows WHERE tbl = ? AND key = ?", (table, key))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO idx_rows VALUES (?, ?, ?)", (table, key, value)
                )
    conn.close()


def test_sqlite_an_index_with_entries_of_the_previous_schema_has_rules_version_1(
    tmp_path: Path,
) -> None:
    """Built before versions were recorded, by the rules numbered 1: a release of other
    rules is refused its batches rather than add them to the old rows."""
    path = tmp_path / "provenance.db"
    _sqlite_of_the_previous_schema(path, HISTORY[:2])
    upgraded = SQLiteIndex(path)
    try:
        assert upgraded._conn().execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
        assert (upgraded.applied_size(), upgraded.rules_version()) == (2, 1)
        assert upgraded.row("devices", "aa") == '{"state":"made"}'  # the data is kept
        with pytest.raises(Conflict) as refused:
            upgraded.apply(HISTORY[2:], rules_version=2)
        assert refused.value.code == "index-rules-mismatch"
        upgraded.reset(rules_version=2)  # the rebuild
        upgraded.apply(HISTORY, rules_version=2)
        assert upgraded.rules_version() == 2
    finally:
        upgraded.close()
    again = SQLiteIndex(path)  # recorded for good, and migrated once
    try:
        assert (again.applied_size(), again.rules_version()) == (3, 2)
    finally:
        again.close()


def test_sqlite_an_empty_index_of_the_previous_schema_records_no_rules_version(
    tmp_path: Path,
) -> None:
    """Empty, it holds nothing computed by any rules: the first batch records its own."""
    path = tmp_path / "provenance.db"
    _sqlite_of_the_previous_schema(path, [])
    upgraded = SQLiteIndex(path)
    try:
        assert (upgraded.applied_size(), upgraded.rules_version()) == (0, None)
        upgraded.apply(HISTORY, rules_version=2)
        assert upgraded.rules_version() == 2
    finally:
        upgraded.close()


def test_sqlite_a_second_object_on_the_same_file_conflicts(sqlite_index: SQLiteIndex) -> None:
    other = SQLiteIndex(sqlite_index.path)
    try:
        other.apply(HISTORY[:2])
        with pytest.raises(Conflict):
            sqlite_index.apply(HISTORY[:1])  # it lost the race for entry 0
        sqlite_index.apply(HISTORY[2:])
        assert dumps(other) == dumps(sqlite_index)
    finally:
        other.close()


# -- open_index ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory:", "memory://"])
def test_open_index_memory(url: str) -> None:
    index = open_index(url)
    assert isinstance(index, MemoryIndex)
    assert isinstance(index, IndexStore)


def test_open_index_sqlite(tmp_path: Path) -> None:
    for url, path in [
        (f"sqlite:///{tmp_path}/url.db", tmp_path / "url.db"),
        (str(tmp_path / "plain.db"), tmp_path / "plain.db"),
    ]:
        index = open_index(url)
        assert isinstance(index, SQLiteIndex)
        assert index.path == path
        index.close()
        assert path.is_file()


@pytest.mark.parametrize("url", ["mysql://x", "s3://bucket/provenance"])
def test_open_index_refuses_unsupported_schemes(url: str) -> None:
    with pytest.raises(ConfigError, match="unsupported index URL scheme") as info:
        open_index(url)
    assert "sqlite:///" in info.value.hint
    assert "postgresql://" in info.value.hint


@pytest.mark.postgres
def test_open_index_postgresql(pg_url: str) -> None:
    for url in (pg_url, "postgres://" + pg_url.removeprefix("postgresql://")):
        index = open_index(url)
        assert isinstance(index, PostgresIndex)
        assert isinstance(index, IndexStore)
        if url == pg_url:
            index.apply(HISTORY[:1])
        assert index.applied_size() == 1  # the second URL opens the same schema
        assert "127.0.0.1" not in repr(index)
        index.close()


def test_open_index_postgresql_unreachable_says_so_without_credentials() -> None:
    with pytest.raises(StorageError) as info:
        PostgresIndex("postgresql://sealtrail:s3cret-pw@127.0.0.1:1/test", timeout=1)
    text = f"{info.value.message} {info.value.hint}"
    assert "s3cret-pw" not in text
    assert "sealtrail" not in text.replace("Sealtrail", "")
    assert "127.0.0.1" not in text


# -- PostgreSQL specifics --------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_survives_close_and_reopen(pg_url: str, pg_index: PostgresIndex) -> None:
    pg_index.apply(HISTORY, rules_version=2)
    before = dumps(pg_index)
    pg_index.close()
    pg_index.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        pg_index.row("devices", "aa")
    with pytest.raises(StorageError, match="closed"):
        pg_index.dump_rows()
    again = PostgresIndex(pg_url)
    try:
        assert (again.applied_size(), again.rules_version()) == (3, 2)
        assert dumps(again) == before
    finally:
        again.close()


@pytest.mark.postgres
@pytest.mark.parametrize(("batch", "version"), [(HISTORY[:2], 1), ([], None)])
def test_postgres_an_index_of_the_previous_schema_gets_its_rules_version(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, batch: Batch, version: int | None
) -> None:
    """An index with entries, built before versions were recorded, was built by the rules
    numbered 1; an empty one records none, and its first batch records its own."""
    with monkeypatch.context() as previous:  # the release before rules versions
        previous.setattr(index_postgres, "_MIGRATIONS", index_postgres._MIGRATIONS[:2])
        PostgresIndex(pg_url).close()
    with pg_raw(pg_url) as conn:
        assert conn.execute("SELECT schema_version FROM idx_meta").fetchall() == [(2,)]
        for item, _ in batch:  # as that release's apply wrote them (changes left out)
            conn.execute(
                "INSERT INTO idx_entries (idx, entry_id, kind, org, outcome, code)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    item.index,
                    item.entry_id,
                    item.kind.encode(),
                    item.org.encode(),
                    item.outcome,
                    None if item.code is None else item.code.encode(),
                ),
            )
    upgraded = PostgresIndex(pg_url)
    try:
        assert (upgraded.applied_size(), upgraded.rules_version()) == (len(batch), version)
        if batch:
            with pytest.raises(Conflict) as refused:
                upgraded.apply(HISTORY[2:], rules_version=2)
            assert refused.value.code == "index-rules-mismatch"
            upgraded.reset(rules_version=2)
        upgraded.apply(HISTORY, rules_version=2)
        assert upgraded.rules_version() == 2
    finally:
        upgraded.close()
    with pg_raw(pg_url) as conn:
        assert conn.execute("SELECT schema_version, rules_version FROM idx_meta").fetchall() == [
            (len(index_postgres._MIGRATIONS), 2)
        ]


@pytest.mark.postgres
def test_postgres_schema_version_and_idempotent_migration(
    pg_url: str, pg_index: PostgresIndex
) -> None:
    with pg_raw(pg_url) as conn:
        version = conn.execute("SELECT schema_version FROM idx_meta").fetchall()
        assert version == [(len(index_postgres._MIGRATIONS),)]
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        }
        assert tables == {
            "idx_meta",
            "idx_entries",
            "idx_subjects",
            "idx_changes",
            "idx_rows",
            "idx_claims",
        }
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            )
        }
        assert any("(tbl, key, idx, pos)" in i for i in indexes)
    # Several processes opening at once migrate once (the advisory lock), and nothing twice.
    errors: list[BaseException] = []

    def reopen() -> None:
        try:
            PostgresIndex(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reopen) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.postgres
def test_postgres_claims_hold_across_processes(pg_url: str, pg_index: PostgresIndex) -> None:
    """Each host's server claims through its own connections, against the database's
    clock."""
    other = PostgresIndex(pg_url)
    try:
        other.claim("serve a/1")
        with pytest.raises(Conflict, match="serve a/1"):
            pg_index.claim("rebuild b/2", exclusive=True)
        with pg_raw(pg_url) as conn:  # the claim lives in the database, for TTL seconds
            left = conn.execute(
                "SELECT expires - extract(epoch FROM clock_timestamp()) FROM idx_claims"
            ).fetchall()
            assert len(left) == 1 and 10 < left[0][0] <= 15
    finally:
        other.close()


@pytest.mark.postgres
def test_postgres_concurrent_first_opens_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def first_open() -> None:
        try:
            barrier.wait()
            PostgresIndex(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_open) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pg_raw(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM idx_meta").fetchall() == [(1,)]


@pytest.mark.postgres
def test_postgres_a_newer_schema_is_refused(pg_url: str, pg_index: PostgresIndex) -> None:
    pg_index.close()
    with pg_raw(pg_url) as conn:
        conn.execute("UPDATE idx_meta SET schema_version = schema_version + 1")
    with pytest.raises(ConfigError, match="upgrade"):
        PostgresIndex(pg_url)


@pytest.mark.postgres
def test_postgres_a_missing_schema_is_a_config_error(pg_url: str) -> None:
    with pytest.raises(ConfigError, match="search_path"):
        PostgresIndex(with_schema(PG_URL, "no_such_schema_" + secrets.token_hex(4)))


def _queued_behind(url: str, gate: int, count: int) -> None:
    """Wait until ``count`` sessions queue behind session ``gate``'s lock (directly, or
    behind one that does: the second waiter queues on the first one's tuple lock)."""
    with pg_raw(url) as conn:
        for _ in range(500):
            (waiting,) = conn.execute(
                "WITH a AS (SELECT pid FROM pg_stat_activity"
                "  WHERE %s = ANY(pg_blocking_pids(pid)))"
                " SELECT count(*) FROM pg_stat_activity WHERE pid IN (SELECT pid FROM a)"
                " OR pg_blocking_pids(pid) && ARRAY(SELECT pid FROM a)",
                (gate,),
            ).fetchall()[0]
            if waiting >= count:
                return
            time.sleep(0.01)
    raise AssertionError(f"{count} writers never queued on the lock")


@pytest.mark.postgres
def test_postgres_two_indexers_racing_for_one_entry(pg_url: str) -> None:
    """Two index objects (two processes, say) apply the same next entries at once: exactly
    one batch lands, the other is a Conflict, and the index is the winner's, whole."""
    one, two = PostgresIndex(pg_url), PostgresIndex(pg_url)
    try:
        one.apply(HISTORY[:1])
        theirs: Batch = [
            (entry(1, "node:srv-1", kind="assembly"), [("devices", "aa", '"mine"')]),
            (entry(2), [("devices", "zz", '"mine"')]),
        ]
        results: dict[str, BaseException | None] = {}

        def run(name: str, store: PostgresIndex, batch: Batch) -> None:
            try:
                store.apply(batch)
                results[name] = None
            except BaseException as exc:
                results[name] = exc

        # Hold the writers' lock so that both are inside apply, queued, before either runs.
        with pg_raw(pg_url) as gate:
            with gate.transaction():
                gate.execute("SELECT 1 FROM idx_meta FOR UPDATE")
                threads = [
                    threading.Thread(target=run, args=("one", one, HISTORY[1:])),
                    threading.Thread(target=run, args=("two", two, theirs)),
                ]
                for t in threads:
                    t.start()
                _queued_behind(pg_url, gate.info.backend_pid, 2)
            for t in threads:
                t.join()
        winners = [name for name, exc in results.items() if exc is None]
        losers = [exc for exc in results.values() if exc is not None]
        assert len(winners) == 1
        assert len(losers) == 1
        assert isinstance(losers[0], Conflict)
        assert losers[0].code == "index-conflict"
        won = HISTORY if winners == ["one"] else [*HISTORY[:1], *theirs]
        assert one.applied_size() == two.applied_size() == 3
        assert dumps(one) == dumps(two)
        assert list(one.dump_entries()) == [e for e, _ in won]
        assert len(list(one.dump_changes())) == sum(len(c) for _, c in won)
        # The loser resumes from the size it reads.
        loser = two if winners == ["one"] else one
        loser.apply([(entry(loser.applied_size()), [])])
        assert one.applied_size() == 4
    finally:
        one.close()
        two.close()


@pytest.mark.postgres
def test_postgres_racing_writers_without_a_gate(pg_url: str) -> None:
    """Many rounds of free-running racers: every entry lands exactly once."""
    stores = [PostgresIndex(pg_url) for _ in range(3)]
    errors: list[BaseException] = []

    def write(store: PostgresIndex, n: int) -> None:
        landed = 0
        while landed < n:
            at = store.applied_size()
            try:
                store.apply([(entry(at), [("counter", "n", str(at))])])
                landed += 1
            except Conflict:
                continue
            except BaseException as exc:
                errors.append(exc)
                return

    try:
        threads = [threading.Thread(target=write, args=(s, 15)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert stores[0].applied_size() == 45
        assert [e.index for e in stores[0].dump_entries()] == list(range(45))
        assert stores[0].history("counter", "n") == [(i, str(i)) for i in range(45)]
    finally:
        for s in stores:
            s.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        (
            "UPDATE idx_rows SET value = convert_to('\"forged\"', 'UTF8')"
            " WHERE tbl = 'devices'::bytea AND key = 'bb'::bytea",
            [("devices", "aa", '{"state":"arrived"}'), ("devices", "bb", '"forged"')],
        ),
        (
            "DELETE FROM idx_rows WHERE tbl = 'devices'::bytea AND key = 'aa'::bytea",
            [("devices", "bb", '{"state":"made"}')],
        ),
        (
            "INSERT INTO idx_rows (tbl, key, value)"
            " VALUES ('devices'::bytea, 'zz'::bytea, convert_to('\"planted\"', 'UTF8'))",
            [
                ("devices", "aa", '{"state":"arrived"}'),
                ("devices", "bb", '{"state":"made"}'),
                ("devices", "zz", '"planted"'),
            ],
        ),
    ],
    ids=["edited", "deleted", "inserted"],
)
def test_postgres_rows_edited_behind_the_index_are_what_it_reads(
    pg_url: str, pg_index: PostgresIndex, sql: str, rows: list[tuple[str, str, str]]
) -> None:
    pg_index.apply(HISTORY)
    assert pg_index.rows("devices")  # read once, so that a cache would be warm
    with pg_raw(pg_url) as conn:
        conn.execute(sql)
    assert [r for r in pg_index.dump_rows() if r[0] == "devices"] == rows
    assert pg_index.rows("devices") == [(k, v) for _, k, v in rows]
    assert pg_index.row("devices", rows[-1][1]) == rows[-1][2]
    assert pg_index.row_at("devices", "bb", 3) == '{"state":"made"}'


@pytest.mark.postgres
def test_postgres_bytes_that_are_not_text_read_as_corruption(
    pg_url: str, pg_index: PostgresIndex
) -> None:
    pg_index.apply(HISTORY)
    with pg_raw(pg_url) as conn:
        conn.execute("UPDATE idx_rows SET value = '\\xff'::bytea WHERE key = 'aa'::bytea")
    with pytest.raises(Corruption):
        pg_index.row("devices", "aa")
    with pytest.raises(Corruption):
        list(pg_index.dump_rows())


@pytest.mark.postgres
def test_postgres_apply_rolls_back_a_failed_batch(pg_url: str, pg_index: PostgresIndex) -> None:
    pg_index.apply(HISTORY)
    with pg_raw(pg_url) as conn:
        conn.execute(
            "INSERT INTO idx_changes (idx, pos, tbl, key, value)"
            " VALUES (4, 0, 'devices'::bytea, 'aa'::bytea, 'x'::bytea)"
        )
    before = dumps(pg_index)
    with pytest.raises(Corruption, match="contradicts") as info:
        pg_index.apply(
            [
                (entry(3, "device:cc"), [("devices", "cc", '"new"')]),
                (entry(4), [("devices", "aa", '"gone"')]),
            ]
        )
    assert "devices" not in info.value.message  # no keys, values or SQL
    assert "INSERT" not in info.value.message
    assert pg_index.applied_size() == 3
    assert dumps(pg_index) == before


@pytest.mark.postgres
def test_postgres_a_dump_holds_its_own_connection_until_done(pg_index: PostgresIndex) -> None:
    pg_index.apply(HISTORY)
    rows = pg_index.dump_rows()
    unstarted = pg_index.dump_entries()
    assert len(pg_index._dumps) == 2
    assert len(list(rows)) == 3
    del unstarted
    assert pg_index._dumps == {}
    changes = pg_index.dump_changes()
    next(changes)
    pg_index.reset()  # a reset does not wait for an open dump (DELETE, not TRUNCATE)
    assert len(list(changes)) == 3  # the dump still reads its snapshot
    changes = pg_index.dump_changes()
    pg_index.close()  # closes open dumps too
    with pytest.raises(StorageError):
        list(changes)


@pytest.mark.postgres
def test_postgres_ten_thousand_changes_apply_in_bulk(
    pg_index: PostgresIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch costs the same statements whatever its size: no round trip per row. (The
    times are printed, not asserted: ~0.3 and ~0.6 s here.)"""
    calls: list[str] = []
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def counted(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(query)[:40])
        return execute(self, query, *args, **kwargs)

    def counted_many(self: psycopg.Cursor[Any], query: Any, params: Any, **kwargs: Any) -> Any:
        params = list(params)
        calls.extend(str(query)[:40] for _ in params)  # a statement per parameter set
        return executemany(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    monkeypatch.setattr(psycopg.Cursor, "executemany", counted_many)

    def statements(batch: Sequence[tuple[IndexedEntry, Sequence[Change]]], what: str) -> int:
        calls.clear()
        started = time.perf_counter()
        pg_index.apply(batch)
        took = time.perf_counter() - started
        print(f"PostgresIndex: {what} applied in {took * 1000:.0f} ms, {len(calls)} statements")
        return len(calls)

    rows: list[Change] = [
        ("devices", f"{i:05d}", f'{{"n":{i},"state":"made"}}') for i in range(10_010)
    ]
    small = statements([(entry(0, "node:rack"), rows[:10])], "10 changes")
    assert statements([(entry(1, "node:rack"), rows[10:])], "10,000 changes") == small
    small = statements(
        [(entry(2 + i, f"device:{i:05d}"), [rows[i]]) for i in range(10)], "10 entries"
    )
    many = [(entry(12 + i, f"device:{i:05d}"), [rows[i]]) for i in range(10_000)]
    assert statements(many, "10,000 entries of one change each") == small
    assert pg_index.applied_size() == 10_012


def test_postgres_a_malformed_url_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError, match="malformed") as info:
        PostgresIndex("postgresql://u:s3cret-pw@[::1/db")
    assert "s3cret-pw" not in info.value.message


@pytest.mark.postgres
def test_postgres_connections_are_named(pg_url: str, pg_index: PostgresIndex) -> None:
    dump = pg_index.dump_rows()
    with pg_raw(pg_url) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sealtrail-index'"
            " AND datname = current_database()"
        ).fetchall()[0]
    assert count >= 2  # the pool's and the dump's
    assert list(dump) == []
