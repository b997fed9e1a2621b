"""A policy's subject patterns, compiled once, allow exactly what ``fnmatchcase`` does."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.errors import VerificationError
from sealtrail.scitt import Policy

_CHARS = st.sampled_from(list("ab:*?[]!-.\\\n"))
_TEXT = st.text(_CHARS, max_size=8)


@given(st.lists(_TEXT, max_size=4), _TEXT)
def test_subjects_match_as_fnmatchcase_does(patterns: list[str], subject: str) -> None:
    policy = Policy(content_types=("application/json",), subjects=tuple(patterns))

    def check() -> None:
        policy.check(content_type="application/json", subject=subject, alg="ES256", size=1)

    if any(fnmatch.fnmatchcase(subject, p) for p in patterns):
        check()
    else:
        with pytest.raises(VerificationError) as caught:
            check()
        assert caught.value.code == "policy-subject"


def test_no_pattern_allows_no_subject() -> None:
    with pytest.raises(VerificationError):
        Policy(content_types=("x",), subjects=()).check(
            content_type="x", subject="", alg="ES256", size=1
        )
