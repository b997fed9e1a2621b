"""The PostgreSQL stores' query texts, read without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sealtrail.storage

STORAGE = Path(sealtrail.storage.__file__).parent
#: An array parameter bound as text: ``%s`` picks the text format for a Python list.
TEXT_ARRAY = re.compile(r"%s::\w+\[\]")


@pytest.mark.parametrize("module", ["postgres.py", "index_postgres.py"])
def test_typed_array_parameters_are_bound_binary(module: str) -> None:
    """Bound as text, every byte of a ``bytea[]`` is hex-escaped in Python: ~0.85 ms for
    one batch's 40 KB of entry bundles, against ~0.05 ms bound binary (``%b``)."""
    source = (STORAGE / module).read_text()
    assert TEXT_ARRAY.findall(source) == []


def test_the_pattern_finds_a_text_bound_array() -> None:
    assert TEXT_ARRAY.findall("WHERE id = ANY(%s::bytea[])") == ["%s::bytea[]"]
