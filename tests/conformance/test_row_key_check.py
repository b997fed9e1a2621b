"""The store records which key its statement rows are tagged under, on every backend: the
first server's, kept against any other until it is replaced on purpose, and still there
for a store opened again (a restart)."""

from __future__ import annotations

import pytest

from sealtrail.errors import ConfigError
from sealtrail.scitt import StatementRows, adopt_row_key
from sealtrail.storage import StatementStore
from tests.conformance.conftest import StoreFactory

FIRST = StatementRows(b"\x01" * 32)
OTHER = StatementRows(b"\x02" * 32)


def test_the_first_key_is_kept_until_replaced(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    assert isinstance(store, StatementStore)
    assert FIRST.check != OTHER.check
    assert store.row_key_check(FIRST.check) == FIRST.check
    assert store.row_key_check(OTHER.check) == FIRST.check  # not taken over
    adopt_row_key(store, FIRST)  # the same key: no complaint
    with pytest.raises(ConfigError) as refused:
        adopt_row_key(store, OTHER)
    assert refused.value.code == "challenge-key-mismatch"
    assert FIRST.check.hex() not in str(refused.value)
    assert store.row_key_check(OTHER.check, replace=True) == OTHER.check
    reopened = store_factory.open()
    assert isinstance(reopened, StatementStore)
    with pytest.raises(ConfigError):
        adopt_row_key(reopened, FIRST)
    adopt_row_key(reopened, OTHER)


def test_the_recorded_check_is_read_without_recording_one(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    assert isinstance(store, StatementStore)
    assert store.recorded_row_key_check() is None
    assert store.recorded_row_key_check() is None  # reading recorded nothing
    store.row_key_check(FIRST.check)
    assert store.recorded_row_key_check() == FIRST.check


def test_the_check_value_reveals_no_tag() -> None:
    # The check is an HMAC of a fixed message no row's tag is computed over.
    assert len(FIRST.check) == 32
    assert StatementRows(b"\x01" * 32).check == FIRST.check
