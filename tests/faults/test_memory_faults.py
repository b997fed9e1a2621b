"""The MemoryStore's fault points themselves: what each leaves behind, and that it disarms."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sealtrail.errors import CheckpointConflict, StorageError
from sealtrail.storage import FAULT_POINTS, Commit, MemoryStore, StoredCheckpoint, TilePart

LEAF = bytes(range(32))
COMMIT = Commit(0, 1, b"note 1", [TilePart(0, 0, 0, 1, LEAF)], [(LEAF, 0)])
NEXT_LEAF = bytes(range(1, 33))
NEXT = Commit(1, 2, b"note 2", [TilePart(0, 0, 1, 1, NEXT_LEAF)], [(NEXT_LEAF, 1)])

TRIGGERS: dict[str, Callable[[MemoryStore], object]] = {
    "before_commit": lambda s: s.commit(COMMIT),
    "after_parts": lambda s: s.commit(COMMIT),
    "after_checkpoint": lambda s: s.commit(COMMIT),
    "read_parts": lambda s: s.read_parts(0, 0),
    "read_checkpoint": lambda s: s.read_checkpoint(),
    "lookup_leaves": lambda s: s.lookup_leaves([LEAF]),
}


def test_every_fault_point_has_a_trigger() -> None:
    assert set(TRIGGERS) == FAULT_POINTS


@pytest.mark.parametrize("point", sorted(FAULT_POINTS))
def test_a_fault_fires_once_then_disarms(point: str) -> None:
    store = MemoryStore()
    store.faults.arm(point)
    with pytest.raises(StorageError, match=point):
        TRIGGERS[point](store)
    assert store.faults.fired == [point]
    assert point not in store.faults.armed
    if point != "after_checkpoint":  # (that one's commit is in: a retry would conflict)
        TRIGGERS[point](store)  # disarmed: the same call now goes through
    assert store.faults.fired == [point]


def test_before_commit_writes_nothing() -> None:
    store = MemoryStore()
    store.faults.arm("before_commit")
    with pytest.raises(StorageError):
        store.commit(COMMIT)
    assert store.read_checkpoint() is None
    assert store.read_parts(0, 0) == []
    assert store.lookup_leaves([LEAF]) == {}
    assert store.commits == 0


def test_after_parts_leaves_parts_and_leaves_but_no_checkpoint() -> None:
    store = MemoryStore()
    store.faults.arm("after_parts")
    with pytest.raises(StorageError):
        store.commit(COMMIT)
    assert store.read_checkpoint() is None
    assert store.read_parts(0, 0) == [TilePart(0, 0, 0, 1, LEAF)]
    assert store.lookup_leaves([LEAF]) == {LEAF: [0]}
    assert store.commits == 0
    store.commit(COMMIT)  # the size did not move: the same commit goes through
    assert store.read_checkpoint() == StoredCheckpoint(1, b"note 1", 1)
    assert store.read_parts(0, 0) == [TilePart(0, 0, 0, 1, LEAF)]
    assert store.lookup_leaves([LEAF]) == {LEAF: [0]}


def test_after_checkpoint_persists_everything_yet_fails() -> None:
    store = MemoryStore()
    store.faults.arm("after_checkpoint")
    with pytest.raises(StorageError):
        store.commit(COMMIT)
    assert store.read_checkpoint() == StoredCheckpoint(1, b"note 1", 1)
    assert store.read_parts(0, 0) == [TilePart(0, 0, 0, 1, LEAF)]
    assert store.lookup_leaves([LEAF]) == {LEAF: [0]}
    assert store.commits == 1
    store.commit(NEXT)  # the log moved on: the next commit builds on it


def test_a_failed_read_changes_nothing() -> None:
    store = MemoryStore()
    store.commit(COMMIT)
    for point in ("read_parts", "read_checkpoint", "lookup_leaves"):
        store.faults.arm(point)
        with pytest.raises(StorageError):
            TRIGGERS[point](store)
    assert store.read_checkpoint() == StoredCheckpoint(1, b"note 1", 1)
    assert store.read_parts(0, 0) == [TilePart(0, 0, 0, 1, LEAF)]


def test_a_conflicting_commit_does_not_use_up_a_fault() -> None:
    store = MemoryStore()
    store.faults.arm("before_commit")
    with pytest.raises(CheckpointConflict):
        store.commit(NEXT)
    assert store.faults.armed == {"before_commit": 1}
    assert store.faults.fired == []


def test_an_unknown_point_is_refused() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="unknown fault point"):
        store.faults.arm("during_commit")
    assert store.faults.armed == {}


def test_times_fires_that_many_times() -> None:
    store = MemoryStore()
    store.faults.arm("read_checkpoint", times=3)
    for _ in range(3):
        with pytest.raises(StorageError):
            store.read_checkpoint()
    assert store.read_checkpoint() is None
    assert store.faults.fired == ["read_checkpoint"] * 3
    assert store.faults.armed == {}


def test_faults_at_several_points_fire_independently() -> None:
    store = MemoryStore()
    store.faults.arm("before_commit")
    store.faults.arm("read_parts", times=2)
    with pytest.raises(StorageError):
        store.commit(COMMIT)
    store.commit(COMMIT)
    for _ in range(2):
        with pytest.raises(StorageError):
            store.read_parts(0, 0)
    assert store.read_parts(0, 0) == [TilePart(0, 0, 0, 1, LEAF)]
    assert store.faults.fired == ["before_commit", "read_parts", "read_parts"]


def test_disarm_clears_every_point() -> None:
    store = MemoryStore()
    for point in FAULT_POINTS:
        store.faults.arm(point)
    store.faults.disarm()
    store.commit(COMMIT)
    assert store.read_checkpoint() == StoredCheckpoint(1, b"note 1", 1)
    assert store.faults.fired == []
