"""Inputs of the log commands that the rest of the system could not handle: an origin too
long (or unfit) to be a log's, a proof document too deep or with too long a number, an
option that does not apply to the document given; and the unbounded hashed content of
``statement sign --hash-envelope``, which is documented as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealtrail.errors import InvalidInput
from sealtrail.keys import Ed25519Signer
from sealtrail.log import MAX_ORIGIN_SIZE, CheckpointSigner, _checkpoints
from sealtrail.merkle import MAX_CHECKPOINT_BYTES
from tests._cli_inproc import Cli, assert_clean_error, in_process

from ._scitt_live import closed_port_url


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``sealtrail ARGS...`` in this process, run from ``tmp_path``."""
    return in_process(
        capsys,
        monkeypatch,
        tmp_path,
        unset=("SEALTRAIL_URL", "SEALTRAIL_DATA_DIR", "SEALTRAIL_ADMIN_TOKEN"),
    )


# -- the origin -------------------------------------------------------------------------------

UNFIT = {
    "one byte too long": "o" * (MAX_ORIGIN_SIZE + 1),
    "too long in UTF-8": "\u00e9" * (MAX_ORIGIN_SIZE // 2 + 1),
    "as long as a checkpoint": "o" * MAX_CHECKPOINT_BYTES,
    "a space": "example.com/my log",
    "a plus sign": "example.com/a+b",
    "a control character": "example.com/\x7flog",
}


@pytest.mark.parametrize("origin", UNFIT.values(), ids=list(UNFIT))
def test_init_refuses_an_origin_the_log_could_not_keep_before_writing_anything(
    cli: Cli, tmp_path: Path, origin: str
) -> None:
    result = cli("init", "-d", "d", "--origin", origin)
    line = assert_clean_error(result, "origin-invalid")
    assert origin not in line
    assert result.out == ""
    assert list(tmp_path.iterdir()) == []
    if len(origin.encode()) <= MAX_ORIGIN_SIZE:  # the length is a rule for new logs only
        with pytest.raises(InvalidInput) as refused:
            CheckpointSigner(origin=origin, signer=Ed25519Signer.generate())
        assert refused.value.code == "origin-invalid"


def test_the_longest_origin_makes_a_log_every_command_can_use(cli: Cli, tmp_path: Path) -> None:
    longest = "o" * MAX_ORIGIN_SIZE
    too_long = cli("init", "-d", "d", "--origin", longest + "o")
    line = assert_clean_error(too_long, "origin-invalid")
    assert line.endswith(f"the origin is {MAX_ORIGIN_SIZE + 1} bytes long; at most 255 are allowed")
    made = cli("init", "-d", "d", "--origin", longest)
    assert made.code == 0, made.err
    (tmp_path / "a.bin").write_bytes(b"an entry")
    assert cli("log", "append", "a.bin", "-d", "d").code == 0
    proof = cli("log", "proof", "inclusion", "--index", "0", "-d", "d")
    (tmp_path / "proof.json").write_text(proof.out)
    checked = cli("log", "verify-proof", "proof.json", "--vkey", "d/log.vkey")
    assert checked.code == 0, checked.err
    assert checked.out.startswith(f"OK: entry 0 is in {longest} at size 1")


def test_a_log_made_before_the_length_limit_keeps_working(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data directory whose origin is longer than the limit (made before it) still loads,
    appends and signs: the limit is for new logs. A space in a hand-edited origin is
    refused on load, as ever."""
    longer = "o" * 300
    with monkeypatch.context() as patch:
        patch.setattr(_checkpoints, "MAX_ORIGIN_SIZE", 4000)  # as before the limit
        assert cli("init", "-d", "d", "--origin", longer).code == 0
    (tmp_path / "a.bin").write_bytes(b"an entry")
    appended = cli("log", "append", "a.bin", "-d", "d")
    assert appended.code == 0, appended.err
    checkpoint = cli("log", "checkpoint", "-d", "d")
    assert checkpoint.code == 0 and checkpoint.out.startswith(longer + "\n"), checkpoint.err
    config = tmp_path / "d" / "sealtrail.toml"
    config.write_text(config.read_text().replace(longer, "my log", 1))
    assert_clean_error(cli("log", "checkpoint", "-d", "d"), "config-error")


# -- proof documents --------------------------------------------------------------------------


@pytest.fixture
def proofs(cli: Cli, tmp_path: Path) -> Path:
    """A log of two entries: ``inclusion.json`` (entry 0, size 2), ``consistency.json``
    (1 -> 2) and ``old.checkpoint`` (size 1)."""
    assert cli("init", "-d", "d", "--origin", "inputs.test/log").code == 0
    (tmp_path / "a.bin").write_bytes(b"first")
    (tmp_path / "b.bin").write_bytes(b"second")
    assert cli("log", "append", "a.bin", "-d", "d").code == 0
    (tmp_path / "old.checkpoint").write_text(cli("log", "checkpoint", "-d", "d").out)
    assert cli("log", "append", "b.bin", "-d", "d").code == 0
    inclusion = cli("log", "proof", "inclusion", "--index", "0", "-d", "d").out
    (tmp_path / "inclusion.json").write_text(inclusion)
    (tmp_path / "consistency.json").write_text(
        cli("log", "proof", "consistency", "--from", "1", "-d", "d").out
    )
    return tmp_path


def test_a_json_document_too_deep_or_with_too_long_a_number_is_one_line(
    cli: Cli, proofs: Path
) -> None:
    """For every command that reads a JSON file the user gives."""
    depth = 100_000
    (proofs / "deep.json").write_text('{"checkpoint": ' + "[" * depth + "]" * depth + "}")
    (proofs / "number.json").write_text('{"checkpoint": ' + "9" * 100_000 + "}")
    for name in ("deep.json", "number.json"):
        line = assert_clean_error(
            cli("log", "verify-proof", name, "--vkey", "d/log.vkey"), "invalid-input"
        )
        assert line.endswith(f"{name} is not a JSON proof document")
        assert_clean_error(cli("passport", "verify", name), "passport-malformed")
        refused = cli(
            "record", "device-manifest", name, "--key", "k.pem", "--x5chain", "k.pem",
            "--issuer", "https://maker.example", "--url", closed_port_url(),
        )  # fmt: skip
        assert_clean_error(refused, "provenance-not-json")


def test_an_option_for_another_kind_of_proof_is_refused_not_ignored(cli: Cli, proofs: Path) -> None:
    (proofs / "garbage").write_bytes(b"not a checkpoint")
    wrong_old = cli(
        "log", "verify-proof", "inclusion.json", "--vkey", "d/log.vkey",
        "--old-checkpoint", "garbage",
    )  # fmt: skip
    line = assert_clean_error(wrong_old, "option-not-applicable")
    assert line.endswith(
        "--old-checkpoint goes with a consistency proof, and inclusion.json holds none"
    )
    assert wrong_old.out == ""
    wrong_entry = cli(
        "log", "verify-proof", "consistency.json", "--vkey", "d/log.vkey",
        "--old-checkpoint", "old.checkpoint", "--entry", "a.bin",
    )  # fmt: skip
    line = assert_clean_error(wrong_entry, "option-not-applicable")
    assert line.endswith("--entry goes with an inclusion proof, and consistency.json holds none")
    assert wrong_entry.out == ""


def test_a_document_holding_both_proofs_has_both_verified(cli: Cli, proofs: Path) -> None:
    both = json.loads((proofs / "inclusion.json").read_text())
    both["consistency_proof"] = json.loads((proofs / "consistency.json").read_text())[
        "consistency_proof"
    ]
    (proofs / "both.json").write_text(json.dumps(both))
    args = ("log", "verify-proof", "both.json", "--vkey", "d/log.vkey")
    ok = cli(*args, "--old-checkpoint", "old.checkpoint", "--entry", "a.bin")
    assert ok.code == 0, ok.err
    assert ok.out.splitlines() == [
        "OK: entry 0 is in inputs.test/log at size 2",
        "OK: size 2 extends size 1 (append-only)",
    ]
    assert_clean_error(cli(*args), "invalid-input")  # the consistency proof needs it
    both["consistency_proof"]["hashes"] = ["A" * 43 + "="]
    (proofs / "both.json").write_text(json.dumps(both))
    bad = cli(*args, "--old-checkpoint", "old.checkpoint")
    assert_clean_error(bad, "invalid-proof")
    assert bad.out == ""


# -- hashed content ---------------------------------------------------------------------------


def test_hashed_content_is_documented_as_unbounded(cli: Cli) -> None:
    """``--hash-envelope`` streams its input, whatever its size: an endless input is the
    user's choice, and the help (as docs/limits.md) says there is no limit."""
    shown = cli("statement", "sign", "--help")
    assert shown.code == 0
    assert "no limit" in " ".join(shown.out.replace("│", " ").split())
