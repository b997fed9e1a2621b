"""Output files of the command line: only a regular file is ever replaced, never a
directory, device, FIFO or socket; a symbolic link is never written through (with --force
the link itself is replaced); the directory must exist;
and all of it is checked before anything is signed, sent or audited."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests._cli_inproc import Cli, assert_clean_error, in_process

from ._scitt_live import closed_port_url


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``sealtrail ARGS...`` in this process, run from ``tmp_path``."""
    return in_process(capsys, monkeypatch, tmp_path)


@pytest.fixture
def here(cli: Cli, tmp_path: Path) -> Path:
    """A data directory with a one-entry log, a signing key, a signed statement, and the
    special files an output must not replace: a FIFO and a directory."""
    assert cli("init", "-d", "d", "--origin", "outputs.test/log").code == 0
    (tmp_path / "a.bin").write_bytes(b"an entry")
    assert cli("log", "append", "a.bin", "-d", "d").code == 0
    assert cli("keys", "generate", "-o", "k.pem").code == 0
    (tmp_path / "p.json").write_text("{}")
    assert cli(*_sign("s.cose")).code == 0
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    return tmp_path


def _sign(output: str, *extra: str) -> list[str]:
    return [
        "statement",
        "sign",
        "--key",
        "k.pem",
        "--issuer",
        "https://maker.example",
        "--subject",
        "urn:maker:device:1",
        "--content-type",
        "application/json",
        "p.json",
        "-o",
        output,
        *extra,
    ]


def _untouched(here: Path) -> None:
    assert stat.S_ISFIFO((here / "fifo").lstat().st_mode)
    assert (here / "dir").is_dir() and not any((here / "dir").iterdir())
    assert not [p.name for p in here.iterdir() if p.name.endswith(".tmp")]


def _commands(url: str) -> dict[str, Callable[[str], list[str]]]:
    """Every command writing an output file, with that file as ``target`` and --force.
    The service ones name a port nothing listens on: refusing the output must come first."""
    return {
        "statement sign": lambda target: _sign(target, "--force"),
        "submit": lambda target: ["submit", "s.cose", "--url", url, "-o", target, "--force"],
        "fetch-keys": lambda target: ["fetch-keys", "--url", url, "-o", target, "--force"],
        "keys export": lambda target: ["keys", "export", "-d", "d", "--out", target, "--force"],
        "log verify --save": lambda target: ["log", "verify", "-d", "d", "-q", "--save", target],
    }


COMMANDS = list(_commands("http://unused"))


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("target", "kind"), [("fifo", "a FIFO"), ("dir", "a directory")])
def test_a_special_file_or_directory_is_never_replaced(
    cli: Cli, here: Path, command: str, target: str, kind: str
) -> None:
    result = cli(*_commands(closed_port_url())[command](target))
    line = assert_clean_error(result, "output-not-a-file")
    assert line.endswith(f"): {target} is {kind}, not a regular file; not replacing it")
    assert result.out == ""
    _untouched(here)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_link_is_never_written_through(cli: Cli, here: Path, command: str) -> None:
    """With --force a link is replaced itself (or left, when the command fails for another
    reason: here the service ones, whose port nothing listens on); what it leads to is never
    touched."""
    (here / "to-fifo").symlink_to("fifo")
    (here / "to-nothing").symlink_to("nowhere/file")
    make = _commands(closed_port_url())[command]
    for link in ("to-fifo", "to-nothing"):
        result = cli(*make(link))
        if result.code == 0:
            assert (here / link).is_file() and not (here / link).is_symlink()
        else:
            assert_clean_error(result, "service-unreachable")
            assert (here / link).is_symlink()
    assert not (here / "nowhere").exists()
    _untouched(here)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_directory_is_refused_not_made(cli: Cli, here: Path, command: str) -> None:
    result = cli(*_commands(closed_port_url())[command]("missing/out"))
    line = assert_clean_error(result, "output-unwritable")
    assert line == "error (output-unwritable): cannot write missing/out: missing does not exist"
    assert not (here / "missing").exists()


def test_force_replaces_the_link_itself_never_the_file_it_leads_to(cli: Cli, here: Path) -> None:
    """A link planted where the output goes (a shared directory) must not aim the write at
    another file: with --force the link is replaced by the output, the file left alone."""
    (here / "real.cose").write_bytes(b"old")
    (here / "link.cose").symlink_to("real.cose")
    without = cli(*_sign("link.cose"))
    assert_clean_error(without, "file-exists")
    assert (here / "real.cose").read_bytes() == b"old"
    done = cli(*_sign("link.cose", "--force"))
    assert done.code == 0, done.err
    assert not (here / "link.cose").is_symlink()
    assert (here / "link.cose").read_bytes() not in (b"", b"old")
    assert (here / "real.cose").read_bytes() == b"old"


def test_save_replaces_a_regular_file_without_force(cli: Cli, here: Path) -> None:
    """``--since kept --save kept`` is the usual pair: the kept checkpoint is replaced."""
    first = cli("log", "verify", "-d", "d", "-q", "--save", "kept")
    assert first.code == 0, first.err
    (here / "b.bin").write_bytes(b"another entry")
    assert cli("log", "append", "b.bin", "-d", "d").code == 0
    again = cli("log", "verify", "-d", "d", "-q", "--since", "kept", "--save", "kept")
    assert again.code == 0, again.err
    assert (here / "kept").read_text().splitlines()[1] == "2"
    (here / "kept-link").symlink_to("kept")
    before = (here / "kept").read_bytes()
    linked = cli("log", "verify", "-d", "d", "-q", "--save", "kept-link")
    assert linked.code == 0, linked.err
    assert not (here / "kept-link").is_symlink()  # replaced, not written through
    assert (here / "kept").read_bytes() == before


def test_existing_outputs_still_need_force(cli: Cli, here: Path) -> None:
    """And the hint names the command's own option."""
    assert_clean_error(cli(*_sign("s.cose")), "file-exists")
    assert cli("keys", "export", "-d", "d", "--out", "keys.cbor").code == 0
    again = cli("keys", "export", "-d", "d", "--out", "keys.cbor")
    line = assert_clean_error(again, "file-exists")
    assert line == "error (file-exists): keys.cbor already exists; not overwriting it"
    assert "hint: Choose another --out, or pass --force to replace it." in again.err
