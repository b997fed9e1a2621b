"""The sequencer role (SequencerRoles), on every backend that offers one.

The attacks: a second process bidding while the role is held, a deposed sequencer that has
not noticed yet and commits a batch it prepared, and one that commits under an epoch it
never held. Each must be refused with nothing written. SQLite has no roles (one process
writes a file) and is skipped.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sealtrail.errors import Fenced
from sealtrail.storage import LogStore, SequencerRoles, SharedMemoryStore
from tests.conformance.conftest import StoreFactory
from tests.conformance.test_log_store import LogModel, assert_stored


def _roles(store_factory: StoreFactory) -> tuple[SequencerRoles, SequencerRoles]:
    if store_factory.name == "memory":
        shared = SharedMemoryStore()  # the memory backend's variant with roles
        return shared, shared
    first, second = store_factory.open(), store_factory.open()
    if not isinstance(first, SequencerRoles) or not isinstance(second, SequencerRoles):
        pytest.skip(f"{store_factory.name} has no sequencer role (one writing process)")
    return first, second


def test_one_holder_at_a_time(store_factory: StoreFactory) -> None:
    a, b = _roles(store_factory)
    lease = a.acquire_role("a")
    assert lease is not None and lease.alive()
    assert b.acquire_role("b") is None
    assert a.acquire_role("a again") is None, "not even the holder's own store bids twice"
    lease.release()
    assert not lease.alive()
    taken = b.acquire_role("b")
    assert taken is not None and taken.alive()
    assert taken.epoch > lease.epoch
    taken.release()
    lease.release()  # idempotent, and never releases someone else's role
    again = a.acquire_role("a")
    assert again is not None and again.epoch > taken.epoch
    again.release()


def test_a_deposed_sequencer_cannot_commit(store_factory: StoreFactory) -> None:
    a, b = _roles(store_factory)
    assert isinstance(a, LogStore) and isinstance(b, LogStore)
    model = LogModel()
    old = a.acquire_role("old")
    assert old is not None
    a.commit(replace(model.batch(100), fence=old.epoch))
    # The old holder loses the role and a new one takes it; the old one has a batch ready.
    old.release()
    new = b.acquire_role("new")
    assert new is not None
    stale = model.fork("deposed").batch(50)
    for batch in (stale, replace(stale, leaves=[])):  # with and without leaf hints
        with pytest.raises(Fenced):
            a.commit(replace(batch, fence=old.epoch))
        with pytest.raises(Fenced):
            b.commit(replace(batch, fence=new.epoch + 1))  # an epoch nobody was given
    # Nothing of the refused batches landed: the log is still the first 100 entries.
    first = LogModel()
    first.batch(100)
    assert_stored(b, first)
    b.commit(replace(first.batch(30), fence=new.epoch))
    assert_stored(b, first)
    new.release()


def test_an_unfenced_commit_still_obeys_the_compare_and_swap(store_factory: StoreFactory) -> None:
    a, _ = _roles(store_factory)
    assert isinstance(a, LogStore)
    lease = a.acquire_role("holder")
    assert lease is not None
    model = LogModel()
    a.commit(model.batch(10))  # fence=None: a single-writer tool, not a sequencer
    assert_stored(a, model)
    lease.release()
