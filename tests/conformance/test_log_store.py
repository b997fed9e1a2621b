"""The LogStore contract, checked the same way against every backend (see conftest.BACKENDS).

Each test breaks the contract the way a crash, a race or a careless backend would: a
conflicting commit that sneaks rows in, a leftover of a torn write merged into a tile, a
reader that sees a checkpoint before its tiles.
"""

from __future__ import annotations

import copy
import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.errors import CheckpointConflict
from sealtrail.storage import ENTRY_BUNDLES, Commit, LogStore, StoredCheckpoint, TilePart
from tests.conformance.conftest import StoreFactory

TILE = 256
HASH = 32
LEVELS = (0, 1, ENTRY_BUNDLES)

FullParts = Literal["replace", "append", "prepend"]


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _encode(level: int, items: list[bytes]) -> bytes:
    if level == ENTRY_BUNDLES:
        return b"".join(len(e).to_bytes(2, "big") + e for e in items)
    return b"".join(items)


class LogModel:
    """A log written batch by batch as the sequencer writes it, and what a store must return.

    Level 0 holds leaf hashes, level 1 one hash per complete level-0 tile, entry bundles
    the entries (some empty). A batch that completes a tile restates it as a full part;
    ``full_parts`` also sends the partial part alongside it (the ``Commit`` docstring's
    "plus, optionally, a full part"), after or before it.
    """

    def __init__(self, tag: str = "log") -> None:
        self.tag = tag
        self.items: dict[int, list[bytes]] = {level: [] for level in LEVELS}
        self.notes: dict[int, bytes] = {}
        self.leaves: dict[bytes, int] = {}

    @property
    def size(self) -> int:
        return len(self.items[0])

    @property
    def note(self) -> bytes:
        return self.notes[self.size]

    def fork(self, tag: str) -> LogModel:
        """The same log so far; its next batches hold different leaves."""
        other = copy.deepcopy(self)
        other.tag = tag
        return other

    def batch(self, n: int, *, full_parts: FullParts = "replace") -> Commit:
        old = {level: len(items) for level, items in self.items.items()}
        old_size = self.size
        for i in range(old_size, old_size + n):
            self.items[0].append(_h(self.tag, "leaf", i))
            self.items[ENTRY_BUNDLES].append(f"{self.tag} entry {i};".encode() * (i % 4))
        while len(self.items[1]) < self.size // TILE:
            k = len(self.items[1])
            self.items[1].append(_h(self.tag, "node", *self.items[0][k * TILE : (k + 1) * TILE]))
        parts: list[TilePart] = []
        for level, items in self.items.items():
            parts += self._parts(level, old[level], len(items), full_parts)
        new_leaves = [(self.items[0][i], i) for i in range(old_size, self.size)]
        self.leaves.update(new_leaves)
        self.notes[self.size] = f"{self.tag}\n{self.size}\n{_h(new_leaves).hex()}\n".encode()
        return Commit(old_size, self.size, self.notes[self.size], parts, new_leaves)

    def _parts(self, level: int, first: int, end: int, full_parts: FullParts) -> list[TilePart]:
        items = self.items[level]
        parts: list[TilePart] = []
        pos = first
        while pos < end:
            index, start = divmod(pos, TILE)
            count = min(TILE - start, end - pos)
            part = TilePart(level, index, start, count, _encode(level, items[pos : pos + count]))
            if start > 0 and start + count == TILE:
                full = TilePart(level, index, 0, TILE, self.tile(level, index))
                parts += {"replace": [full], "append": [part, full], "prepend": [full, part]}[
                    full_parts
                ]
            else:
                parts.append(part)
            pos += count
        return parts

    def width(self, level: int, index: int, size: int | None = None) -> int:
        """Positions of tile ``(level, index)`` in the log at ``size`` (default: now)."""
        size = self.size if size is None else size
        units = size // TILE if level == 1 else size
        return max(0, min(TILE, units - index * TILE))

    def tile(self, level: int, index: int, width: int | None = None) -> bytes:
        width = self.width(level, index) if width is None else width
        return _encode(level, self.items[level][index * TILE : index * TILE + width])

    def tiles(self, size: int | None = None) -> list[tuple[int, int]]:
        return [
            (level, index)
            for level in LEVELS
            for index in range(TILE)
            if self.width(level, index, size) > 0
        ]


def _joined(parts: list[TilePart], level: int, index: int) -> tuple[bytes, int]:
    """Concatenate parts that must be contiguous from position 0, never overlapping."""
    have = 0
    data = b""
    for part in parts:
        assert (part.level, part.index) == (level, index)
        assert part.start == have, f"tile {level}/{index}: part at {part.start}, expected {have}"
        assert part.count > 0 and part.start + part.count <= TILE
        if level != ENTRY_BUNDLES:
            assert len(part.data) == part.count * HASH
        assert type(part.data) is bytes
        data += part.data
        have += part.count
    return data, have


def assert_stored(store: LogStore, model: LogModel) -> None:
    """The store holds exactly ``model``: checkpoint, every tile, every leaf, nothing more."""
    if model.size == 0:
        assert store.read_checkpoint() is None
    else:
        assert store.read_checkpoint() == StoredCheckpoint(model.size, model.note, model.size)
    for level, index in model.tiles():
        parts = store.read_parts(level, index)
        data, have = _joined(parts, level, index)
        assert have == model.width(level, index)
        assert data == model.tile(level, index)
        if have == TILE:
            assert len(parts) == 1, "a full tile reads back as one part"
    for level in LEVELS:
        beyond = len(model.items[level]) // TILE + 1
        assert store.read_parts(level, beyond) == []
    assert_finds(store, model.leaves)


def assert_finds(store: LogStore, leaves: dict[bytes, int]) -> None:
    """Every committed index comes back among the candidates (hints MAY add more)."""
    found = store.lookup_leaves(list(leaves))
    assert set(found) <= set(leaves), "only requested hashes are answered"
    for leaf, index in leaves.items():
        assert index in found.get(leaf, []), f"index {index} missing from the candidates"


def assert_covers(store: LogStore, model: LogModel, size: int) -> None:
    """Every position the checkpoint of ``size`` covers reads back as ``model`` wrote it.

    Parts beyond ``size`` are allowed (a later or a failed batch), overlapping ones are not.
    """
    for level, index in model.tiles(size):
        parts = store.read_parts(level, index)
        _, have = _joined(parts, level, index)
        width = model.width(level, index, size)
        assert have >= width
        items = [item for part in parts for item in _items(part)]
        assert items[:width] == model.items[level][index * TILE : index * TILE + width]


# -- empty store and round trips ----------------------------------------------------------------


def test_empty_store_has_no_checkpoint_parts_or_leaves(store: LogStore) -> None:
    assert store.read_checkpoint() is None
    for level in LEVELS:
        assert store.read_parts(level, 0) == []
    assert store.read_parts(0, 12345) == []
    assert store.lookup_leaves([_h("nothing")]) == {}
    assert store.lookup_leaves([]) == {}


def test_commits_read_back_exactly(store: LogStore) -> None:
    model = LogModel()
    for n in (1, 2, 97, 156, 300, 1):
        store.commit(model.batch(n))
        assert_stored(store, model)
    assert model.size == 557


def test_a_commit_is_visible_to_another_store_object(store_factory: StoreFactory) -> None:
    writer, reader = store_factory.open(), store_factory.open()
    model = LogModel()
    for n in (10, 300):
        writer.commit(model.batch(n))
        assert_stored(reader, model)


def test_parts_come_back_ordered_by_start(store: LogStore) -> None:
    model = LogModel()
    for _ in range(20):
        store.commit(model.batch(7))
    assert [p.start for p in store.read_parts(0, 0)] == list(range(0, 140, 7))

    # One commit listing several parts of one tile, last first.
    commit = model.batch(30)
    store.commit(replace(commit, parts=list(reversed(_split(commit.parts, 10)))))
    assert [p.start for p in store.read_parts(ENTRY_BUNDLES, 0)][-4:] == [133, 140, 150, 160]
    assert_stored(store, model)


def _split(parts: Sequence[TilePart], step: int) -> list[TilePart]:
    """Cut each part into parts of ``step`` positions (the same positions, more rows)."""
    out: list[TilePart] = []
    for part in parts:
        items = _items(part)
        for i in range(0, part.count, step):
            chunk = items[i : i + step]
            out.append(
                TilePart(
                    part.level, part.index, part.start + i, len(chunk), _encode(part.level, chunk)
                )
            )
    return out


def _items(part: TilePart) -> list[bytes]:
    if part.level != ENTRY_BUNDLES:
        return [part.data[i : i + HASH] for i in range(0, len(part.data), HASH)]
    items, pos = [], 0
    while pos < len(part.data):
        n = int.from_bytes(part.data[pos : pos + 2], "big")
        items.append(part.data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return items


def test_entry_bundle_parts_round_trip_byte_for_byte(store: LogStore) -> None:
    entries = [b"", b"\x00\xff" * 50, b"x" * 0xFFFF, bytes(range(256)), b"\x00"]
    part = TilePart(ENTRY_BUNDLES, 7, 0, len(entries), _encode(ENTRY_BUNDLES, entries))
    hashes = TilePart(0, 7, 0, len(entries), b"".join(_h(e) for e in entries))
    leaves = [(_h(e), 7 * TILE + i) for i, e in enumerate(entries)]
    store.commit(Commit(0, 7 * TILE + 5, b"note", [part, hashes], leaves))
    assert store.read_parts(ENTRY_BUNDLES, 7) == [part]
    assert store.read_parts(0, 7) == [hashes]
    assert store.read_parts(ENTRY_BUNDLES, 6) == []
    assert_finds(store, dict(leaves))


# -- the compare-and-swap -----------------------------------------------------------------------


def test_a_conflicting_commit_on_an_empty_store_writes_nothing(store: LogStore) -> None:
    commit = LogModel().batch(40)
    for old_size in (1, 40, 1000):
        with pytest.raises(CheckpointConflict):
            store.commit(replace(commit, old_size=old_size))
    assert_stored(store, LogModel())
    assert store.lookup_leaves([h for h, _ in commit.leaves]) == {}


WRONG_OLD_SIZES: dict[str, Callable[[int], int]] = {
    "zero (rewrite history)": lambda size: 0,
    "behind by one": lambda size: size - 1,
    "ahead by one": lambda size: size + 1,
    "far ahead": lambda size: size + 10_000,
}


@pytest.mark.parametrize("hints", [True, False], ids=["with leaf hints", "without leaf hints"])
@pytest.mark.parametrize("wrong", list(WRONG_OLD_SIZES), ids=list(WRONG_OLD_SIZES))
def test_a_conflicting_commit_writes_nothing(store: LogStore, wrong: str, hints: bool) -> None:
    """Without leaf hints is a sequencer's usual batch between index flushes (PostgreSQL
    writes it in one pipeline, ahead of the compare-and-swap's answer)."""
    model = LogModel()
    store.commit(model.batch(200))
    old_size = WRONG_OLD_SIZES[wrong](model.size)
    # The intruder's batch would overwrite the log from ``old_size`` (history, for zero).
    intruder = LogModel("intruder")
    if old_size < model.size:
        intruder.batch(old_size)
        attack = intruder.batch(300)
    else:
        attack = replace(model.fork("intruder").batch(300), old_size=old_size)
    intruder_leaves = [h for h, _ in attack.leaves]
    if not hints:
        attack = replace(attack, leaves=[])
    hints_before = store.lookup_leaves(intruder_leaves)
    with pytest.raises(CheckpointConflict):
        store.commit(attack)
    assert_stored(store, model)
    assert store.lookup_leaves(intruder_leaves) == hints_before
    # The store is still usable: the right commit goes through.
    store.commit(model.batch(100))
    assert_stored(store, model)


def _race(
    store: LogStore, commit: Commit, barrier: threading.Barrier, outcome: list[str], k: int
) -> None:
    barrier.wait()
    try:
        store.commit(commit)
        outcome[k] = "won"
    except CheckpointConflict:
        outcome[k] = "lost"
    except Exception as exc:  # reported by the caller's assertion
        outcome[k] = repr(exc)


def _one_wins(stores: Sequence[LogStore], commits: Sequence[Commit]) -> int:
    """Commit ``commits[k]`` to ``stores[k]``, all at once: exactly one wins (its index)."""
    barrier = threading.Barrier(len(stores))
    outcome: list[str] = ["?"] * len(stores)
    threads = [
        threading.Thread(target=_race, args=(store, commit, barrier, outcome, k))
        for k, (store, commit) in enumerate(zip(stores, commits, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcome) == ["lost"] * (len(stores) - 1) + ["won"], outcome
    return outcome.index("won")


def test_racing_commits_exactly_one_wins(store_factory: StoreFactory) -> None:
    racers = 4
    stores = [store_factory.open() for _ in range(racers)]
    model = LogModel()
    stores[0].commit(model.batch(10))
    for round_ in range(6):
        forks = [model.fork(f"round {round_} racer {k}") for k in range(racers)]
        commits = [fork.batch(50 + 40 * k) for k, fork in enumerate(forks)]
        racing_leaves = [h for c in commits for h, _ in c.leaves]
        hints_before = stores[0].lookup_leaves(racing_leaves)
        winner = _one_wins(stores, commits)
        model = forks[winner]
        for s in stores:
            assert_stored(s, model)
        for k, commit in enumerate(commits):
            if k != winner:
                loser_leaves = [h for h, _ in commit.leaves]
                hints_after = stores[0].lookup_leaves(loser_leaves)
                assert hints_after == {
                    h: hints_before[h] for h in loser_leaves if h in hints_before
                }


def _genesis(tag: str) -> Commit:
    return Commit(old_size=0, new_size=0, checkpoint=_h("genesis", tag), parts=(), leaves=())


def test_a_log_is_started_once(store: LogStore) -> None:
    """A commit of size 0 begins a log: refused, and nothing written, once the store holds
    a checkpoint, whether the log is still empty or has grown."""
    store.commit(_genesis("first"))
    with pytest.raises(CheckpointConflict):
        store.commit(_genesis("second"))
    assert store.read_checkpoint() == StoredCheckpoint(0, _h("genesis", "first"), 0)
    model = LogModel()
    store.commit(model.batch(30))
    with pytest.raises(CheckpointConflict):
        store.commit(_genesis("third"))
    assert_stored(store, model)


def test_racing_genesis_commits_exactly_one_wins(store_factory: StoreFactory) -> None:
    """Two logs started in one empty store at once (two ``sealtrail init``): one begins it,
    the others are told, and the stored checkpoint is the winner's."""
    racers = 4
    stores = [store_factory.open() for _ in range(racers)]
    commits = [_genesis(f"racer {k}") for k in range(racers)]
    winner = commits[_one_wins(stores, commits)].checkpoint
    for s in stores:
        assert s.read_checkpoint() == StoredCheckpoint(0, winner, 0)


# -- full parts and leftovers ----------------------------------------------------------------------


@pytest.mark.parametrize("full_parts", ["replace", "append", "prepend"])
def test_a_full_part_replaces_the_tiles_partial_parts(
    store: LogStore, full_parts: FullParts
) -> None:
    model = LogModel()
    for n in (100, 50, 60):
        store.commit(model.batch(n))
    assert [p.start for p in store.read_parts(0, 0)] == [0, 100, 150]
    store.commit(model.batch(46 + 10, full_parts=full_parts))  # completes tile 0
    for level in (0, ENTRY_BUNDLES):
        assert store.read_parts(level, 0) == [TilePart(level, 0, 0, TILE, model.tile(level, 0))]
        assert len(store.read_parts(level, 1)) == 1
    assert_stored(store, model)


@pytest.mark.parametrize(
    ("failed", "then"),
    [
        (30, 10),  # longer leftover at the same start
        (5, 30),  # shorter leftover
        (156, 10),  # leftover full part restating the committed positions
        (600, 20),  # leftovers in later tiles and at level 1
    ],
)
def test_a_leftover_of_a_failed_write_is_replaced_never_merged(
    store_factory: StoreFactory, failed: int, then: int
) -> None:
    store = store_factory.open()
    model = LogModel()
    store.commit(model.batch(100))
    leftover = model.fork("failed").batch(failed)
    nxt = model.fork(model.tag).batch(then)
    # The failed batch also left hints that name the next batch's leaves at wrong indexes.
    stale_hints = [(h, i + 1000) for h, i in nxt.leaves]
    store_factory.plant_leftover(store, replace(leftover, leaves=[*leftover.leaves, *stale_hints]))
    assert store.read_checkpoint() == StoredCheckpoint(100, model.note, 100)
    assert_covers(store, model, 100)

    store.commit(model.batch(then))
    assert store.read_checkpoint() == StoredCheckpoint(model.size, model.note, model.size)
    assert_covers(store, model, model.size)
    assert store.read_parts(0, 0)[-1] == TilePart(0, 0, 100, then, model.tile(0, 0)[100 * HASH :])
    assert_finds(store, dict(nxt.leaves))

    store.commit(model.batch(700))  # overwrites every position the leftover held
    assert_stored(store, model)


# -- lookups ---------------------------------------------------------------------------------------


def test_lookup_of_many_hashes_known_and_unknown(store: LogStore) -> None:
    model = LogModel()
    store.commit(model.batch(2000))
    known = list(model.leaves)
    unknown = [_h("unknown", i) for i in range(700)]
    mixed = known + unknown
    random.Random(7).shuffle(mixed)
    found = store.lookup_leaves(mixed)
    assert set(found) <= set(mixed)
    assert all(model.leaves[h] in found[h] for h in known), "no false negatives"
    assert all(isinstance(i, int) for candidates in found.values() for i in candidates)
    assert_finds(store, model.leaves)
    assert set(store.lookup_leaves(model.leaves.keys())) == set(known)
    # Asking twice for a hash changes nothing.
    assert store.lookup_leaves(known[:3] * 400) == store.lookup_leaves(known[:3])


def test_lookup_finds_leaves_that_share_a_prefix(store: LogStore) -> None:
    """A backend keyed by a prefix of the hash must keep (and return) every colliding row."""
    base = _h("collide")
    twins = [base[:-1] + bytes([b]) for b in range(5)]  # equal but for the last byte
    leaves = [(h, i) for i, h in enumerate(twins[:4])]
    part = TilePart(0, 0, 0, 4, b"".join(twins[:4]))
    store.commit(Commit(0, 4, b"note 4", [part], leaves))
    assert_finds(store, dict(leaves))
    for leaf, index in leaves:
        assert index in store.lookup_leaves([leaf])[leaf]
    stranger = store.lookup_leaves([twins[4]]).get(twins[4], [])
    assert set(stranger) <= {0, 1, 2, 3}, "a hint never names an index that was not written"


def test_lookup_returns_every_index_a_hash_was_committed_at(store: LogStore) -> None:
    """The same leaf committed twice (its hint was lost in between): both are candidates."""
    leaf = _h("twice")
    store.commit(Commit(0, 1, b"note 1", [TilePart(0, 0, 0, 1, leaf)], [(leaf, 0)]))
    store.commit(Commit(1, 2, b"note 2", [TilePart(0, 0, 1, 1, leaf)], [(leaf, 1)]))
    assert sorted(store.lookup_leaves([leaf])[leaf]) == [0, 1]


# -- lifecycle -------------------------------------------------------------------------------------


def test_close_is_idempotent(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    store.commit(LogModel().batch(3))
    store.close()
    store.close()


def test_data_survives_closing_and_reopening(store_factory: StoreFactory) -> None:
    if not store_factory.persistent:
        pytest.skip(f"{store_factory.name}: the data lives in the store object itself")
    model = LogModel()
    first = store_factory.open()
    first.commit(model.batch(300))
    first.close()
    second = store_factory.open()
    assert_stored(second, model)
    second.commit(model.batch(5))
    second.close()
    assert_stored(store_factory.open(), model)


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_readers_only_see_whole_commits(store_factory: StoreFactory) -> None:
    rng = random.Random(1)
    model = LogModel()
    commits = [model.batch(rng.randint(1, 60)) for _ in range(40)]
    writer = store_factory.open()
    readers = [writer, writer, store_factory.open(), store_factory.open()]
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[set[int]] = [set() for _ in readers]

    def read(k: int) -> None:
        store = readers[k]
        try:
            while not done.is_set():
                checkpoint = store.read_checkpoint()
                if checkpoint is None:
                    continue
                seen[k].add(checkpoint.size)
                assert checkpoint.note == model.notes[checkpoint.size]
                assert_covers(store, model, checkpoint.size)
                newest = model.items[0][checkpoint.size - 1]
                assert checkpoint.size - 1 in store.lookup_leaves([newest])[newest]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(len(readers))]
    for t in threads:
        t.start()
    try:
        # Every reader has a checkpoint in hand before the rest is written: a fast store
        # could otherwise finish all commits before a reader thread first runs.
        writer.commit(commits[0])
        deadline = time.monotonic() + 10
        while not all(seen) and not errors and time.monotonic() < deadline:
            time.sleep(0.001)
        for commit in commits[1:]:
            writer.commit(commit)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    if errors:
        raise errors[0]
    assert all(seen), "every reader saw at least one checkpoint"
    assert_stored(writer, model)


# -- against a model ------------------------------------------------------------------------------

Step = tuple[int, str, FullParts]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # fresh() per example
)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(1, 300),
            st.sampled_from(["ok", "ok", "zero", "behind", "ahead"]),
            st.sampled_from(["replace", "append", "prepend"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_commits_match_the_model(store_factory: StoreFactory, steps: list[Step]) -> None:
    store = store_factory.fresh()
    model = LogModel()
    try:
        for n, how, full_parts in steps:
            if how == "ok":
                store.commit(model.batch(n, full_parts=full_parts))
            else:
                wrong = {"zero": 0, "behind": model.size - 1, "ahead": model.size + 1}[how]
                if wrong in (model.size, -1):
                    wrong = model.size + n
                attack = model.fork("rejected").batch(n, full_parts=full_parts)
                with pytest.raises(CheckpointConflict):
                    store.commit(replace(attack, old_size=wrong))
            assert_stored(store, model)
    finally:
        store.close()


def test_the_kept_head_of_a_leftover_full_part_drops_its_inner_nodes(
    store_factory: StoreFactory,
) -> None:
    # Inner nodes belong to a full tile only; the committed head of a torn full part is not.
    store = store_factory.open()
    leaves = [bytes([i]) * HASH for i in range(256)]
    head = TilePart(0, 0, 0, 100, b"".join(leaves[:100]))
    store.commit(Commit(0, 100, b"note 100", [head], []))
    full = TilePart(0, 0, 0, 256, b"".join(leaves), b"\x01" * (254 * HASH))
    store_factory.plant_leftover(store, Commit(100, 256, b"note 256", [full], []))
    tail = TilePart(0, 0, 100, 10, b"".join(leaves[100:110]))
    store.commit(Commit(100, 110, b"note 110", [tail], []))
    assert store.read_parts(0, 0) == [head, tail]
