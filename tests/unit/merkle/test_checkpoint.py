"""Checkpoint note text (C2SP tlog-checkpoint)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.merkle import (
    MAX_CHECKPOINT_BYTES,
    MAX_EXTENSION_LINES,
    Checkpoint,
    CheckpointFormatError,
)

ROOT = bytes(range(32))
ROOT64 = base64.b64encode(ROOT).decode()
URLSAFE = base64.urlsafe_b64encode(b"\xff" * 32).decode()


def test_spec_example() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.parse(text)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.to_text() == text


def test_extensions_round_trip() -> None:
    cp = Checkpoint("log.example/a", 0, ROOT, ("ext one", "two"))
    assert cp.to_text() == f"log.example/a\n0\n{ROOT64}\next one\ntwo\n"
    assert Checkpoint.parse(cp.to_text()) == cp


lines = st.text(
    st.characters(min_codepoint=0x20, categories=("L", "M", "N", "P", "S", "Zs")).filter(
        lambda c: c != "\x7f"
    ),
    min_size=1,
    max_size=40,
)


@given(
    lines,
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(lines, max_size=4),
)
def test_round_trip(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(ext))
    assert Checkpoint.parse(cp.to_text()) == cp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        f"origin\n1\n{ROOT64}",  # no final newline
        f"origin\n1\n{ROOT64}\n\n",  # empty extension line
        f"origin\n1\n{ROOT64}\next\n\n",
        f"\n1\n{ROOT64}\n",  # empty origin
        f"origin\n01\n{ROOT64}\n",  # leading zero
        f"origin\n00\n{ROOT64}\n",
        f"origin\n-1\n{ROOT64}\n",
        f"origin\n+1\n{ROOT64}\n",
        f"origin\n 1\n{ROOT64}\n",
        f"origin\n1.0\n{ROOT64}\n",
        f"origin\n\u0661\n{ROOT64}\n",  # non-ASCII digit
        f"origin\n{2**64}\n{ROOT64}\n",
        f"origin\n\n{ROOT64}\n",
        "origin\n1\n\n",
        "origin\n1\n",
        f"origin\n1\n{ROOT64[:-1]}\n",  # bad padding
        f"origin\n1\n{ROOT64.rstrip('=')}\n",  # unpadded
        f"origin\n1\n{URLSAFE}\n",  # URL-safe alphabet
        f"origin\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31 bytes
        f"origin\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",  # 33 bytes
        f"origin\n1\n{ROOT64[:-2]}B=\n",  # non-canonical trailing bits
        f"origin\n1\n {ROOT64}\n",
        f"origin\n1\n{ROOT64}\r\n",
        f"ori\tgin\n1\n{ROOT64}\n",  # control character
        f"origin\r\n1\n{ROOT64}\n",
        f"origin\n1\n{ROOT64}\next\x00\n",
        f"origin\ud800\n1\n{ROOT64}\n",  # lone surrogate: not UTF-8
        f"origin\n1\n{ROOT64}\n" + "e\n" * (MAX_EXTENSION_LINES + 1),
        "o" * MAX_CHECKPOINT_BYTES + f"\n1\n{ROOT64}\n",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(CheckpointFormatError):
        Checkpoint.parse(text)


def test_del_is_read_in_what_others_sign_but_not_signed() -> None:
    """C2SP signed-note forbids only the controls below U+0020 (newline aside): a DEL in
    another log's origin or extension lines is read. Sealtrail does not write one."""
    text = f"log\x7f.example\n1\n{ROOT64}\next\x7fension\n"
    cp = Checkpoint.parse(text)
    assert (cp.origin, cp.extensions) == ("log\x7f.example", ("ext\x7fension",))
    assert cp.to_text() == text
    assert cp == Checkpoint.parse(cp.to_text())
    for kwargs in ({"origin": "log\x7f.example"}, {"extensions": ("ext\x7fension",)}):
        args: dict[str, object] = {"origin": "o", "size": 1, "root": ROOT, **kwargs}
        with pytest.raises(CheckpointFormatError, match="control character"):
            Checkpoint(**args)  # type: ignore[arg-type]
    for control in ("\x00", "\x1f", "\t"):
        with pytest.raises(CheckpointFormatError, match="control character"):
            Checkpoint.parse(f"log{control}.example\n1\n{ROOT64}\n")


def test_limits_are_inclusive() -> None:
    text = f"origin\n1\n{ROOT64}\n" + "e\n" * MAX_EXTENSION_LINES
    assert len(Checkpoint.parse(text).extensions) == MAX_EXTENSION_LINES


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"size": -1},
        {"size": 2**64},
        {"root": ROOT[:31]},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
        {"extensions": ("e",) * (MAX_EXTENSION_LINES + 1)},
    ],
)
def test_constructor_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"origin": "o", "size": 1, "root": ROOT, "extensions": ()}
    with pytest.raises(CheckpointFormatError):
        Checkpoint(**(args | kwargs))  # type: ignore[arg-type]
