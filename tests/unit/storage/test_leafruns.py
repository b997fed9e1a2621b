"""The embedded store's leaf-index runs: keys, search, merges and the merge policy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.errors import Corruption, InvalidInput
from sealtrail.merkle import leaf_hash
from sealtrail.storage._leafruns import (
    FANOUT,
    MAX_RUN,
    Run,
    build_run,
    indexes_from_bytes,
    keys_from_bytes,
    leaf_keys32,
    merge_plan,
    merge_runs,
    search,
)

small_keys = st.lists(st.integers(0, 40), max_size=60)


def naive(keys: list[int], asked: list[int]) -> list[tuple[int, int]]:
    return sorted((a, k) for a, x in enumerate(asked) for k, y in enumerate(keys) if x == y)


@given(small_keys, small_keys)
def test_search_finds_every_occurrence_and_nothing_else(keys: list[int], asked: list[int]) -> None:
    run_keys = np.array(sorted(keys), dtype=np.uint32)
    ordered = np.array(sorted(asked), dtype=np.uint32)
    which, where = search(run_keys, ordered)
    got = sorted(zip(which.tolist(), where.tolist(), strict=True))
    assert got == naive(run_keys.tolist(), ordered.tolist())


def test_leaf_keys_are_the_first_four_bytes_big_endian() -> None:
    hashes = [leaf_hash(b"a"), leaf_hash(b"b"), b"\xff\xfe\xfd\xfc" + bytes(28)]
    assert leaf_keys32(hashes).tolist() == [int.from_bytes(h[:4], "big") for h in hashes]
    with pytest.raises(InvalidInput):
        leaf_keys32([b"short"])


@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**64 - 1))))
def test_a_built_run_is_sorted_and_keeps_every_pair(pairs: list[tuple[bytes, int]]) -> None:
    run = build_run(pairs)
    assert run.keys.tolist() == sorted(run.keys.tolist())
    expected = sorted((int.from_bytes(h[:4], "big"), i) for h, i in pairs)
    assert sorted(zip(run.keys.tolist(), run.indexes.tolist(), strict=True)) == expected
    # What is stored reads back the same, whatever the machine's byte order.
    back = Run(keys_from_bytes(run.key_bytes()), indexes_from_bytes(run.index_bytes()))
    assert back.keys.tolist() == run.keys.tolist()
    assert back.indexes.tolist() == run.indexes.tolist()


def test_indexes_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidInput):
        build_run([(bytes(32), -1)])
    with pytest.raises(InvalidInput):
        build_run([(bytes(32), 2**64)])


@given(st.lists(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 99)))))
def test_merged_runs_hold_every_pair_sorted(batches: list[list[tuple[bytes, int]]]) -> None:
    parts = [build_run(b) for b in batches]
    if not parts:
        return
    merged = merge_runs(parts)
    assert merged.keys.tolist() == sorted(merged.keys.tolist())
    every = sorted(p for r in parts for p in zip(r.keys.tolist(), r.indexes.tolist(), strict=True))
    got = sorted(zip(merged.keys.tolist(), merged.indexes.tolist(), strict=True))
    assert got == every


def test_stored_runs_of_broken_lengths_are_corruption() -> None:
    with pytest.raises(Corruption):
        keys_from_bytes(b"\x00" * 5)
    with pytest.raises(Corruption):
        indexes_from_bytes(b"\x00" * 9)
    with pytest.raises(Corruption):
        Run(np.zeros(2, dtype=np.uint32), np.zeros(3, dtype=np.uint64))


@pytest.mark.parametrize(
    ("counts", "merge"),
    [
        ([], 0),
        ([100] * (FANOUT - 1), 0),
        ([100] * FANOUT, FANOUT),
        ([400, 100, 100, 100], 0),  # a larger run ahead: not one tier
        ([1600, 400, 100, 100, 100, 100], FANOUT),  # only the newest tier merges
        ([100, 150, 120, 199], FANOUT),  # within a factor of two: one tier
        ([MAX_RUN // 2] * FANOUT, 0),  # the merged run would be too large
    ],
)
def test_merge_plan(counts: list[int], merge: int) -> None:
    assert merge_plan(counts) == merge


def test_numpy_is_loaded_only_when_a_leaf_index_is_used() -> None:
    """Every command imports the stores; numpy's import (~0.1 s) waits for a leaf index."""
    code = (
        "import sys, sealtrail.cli, sealtrail.storage.sqlite, sealtrail.storage.postgres;"
        " print('numpy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
