"""The log as static files (``sealtrail log export-tiles``): every file is what the HTTP
read API answers at its path, the entries in the bundles hash to the checkpoint's root, an
export again writes only what the log gained, and a directory holding another log's
checkpoint, or one the log does not extend, is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sealtrail.errors import Corruption, InvalidInput
from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, Sequencer, bundle_entries, export_tiles
from sealtrail.merkle import CompactRange, leaf_hash
from sealtrail.service import create_app
from sealtrail.storage import MemoryStore
from tests.conftest import reader_for
from tests.integration.test_cli import assert_clean_error, sealtrail


def _grow(store: MemoryStore, signer: CheckpointSigner, start: int, stop: int) -> None:
    async def fill() -> None:
        async with Sequencer(store, signer=signer) as seq:
            await seq.add_many([f"entry {i}".encode() for i in range(start, stop)])

    asyncio.run(fill())


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in directory.rglob("*")
        if path.is_file()
    }


def test_the_files_are_the_read_api_and_hash_to_the_checkpoint(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    store = MemoryStore()
    _grow(store, signer, 0, 549)  # two full tiles and 37 entries; level 1: a partial of 2
    reader = reader_for(store, signer)
    done = export_tiles(reader, tmp_path)
    assert done.checkpoint is not None and done.checkpoint.size == 549
    files = _files(tmp_path)
    assert set(files) == {
        "checkpoint",
        "tile/entries/000",
        "tile/entries/001",
        "tile/entries/002.p/37",
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/37",
        "tile/1/000.p/2",
    }
    assert (done.written, done.kept) == (7, 0)
    client = TestClient(create_app(reader, verifier_key=signer.verifier_key()))
    for name, data in files.items():
        answer = client.get("/" + name)
        assert answer.status_code == 200, name
        assert answer.content == data, name
    for name in files:
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o644
    entries = [
        e
        for name in ("tile/entries/000", "tile/entries/001", "tile/entries/002.p/37")
        for e in bundle_entries(files[name])
    ]
    assert entries == [f"entry {i}".encode() for i in range(549)]
    tree, _ = CompactRange(0, []).append([leaf_hash(e) for e in entries])
    assert tree.root() == done.checkpoint.root


def test_an_export_again_writes_only_what_the_log_gained(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    store = MemoryStore()
    _grow(store, signer, 0, 300)
    reader = reader_for(store, signer)
    export_tiles(reader, tmp_path)
    before = _files(tmp_path)
    assert export_tiles(reader, tmp_path).written == 0  # nothing new: only the checkpoint
    _grow(store, signer, 300, 600)
    done = export_tiles(reader, tmp_path)
    after = _files(tmp_path)
    # The full tiles stay as they were; the old partials stay too, for older checkpoints.
    assert all(after[name] == data for name, data in before.items() if name != "checkpoint")
    assert set(after) - set(before) == {
        "tile/entries/001",
        "tile/entries/002.p/88",
        "tile/0/001",
        "tile/0/002.p/88",
        "tile/1/000.p/2",
    }
    assert (done.written, done.kept) == (5, 2)
    assert after["checkpoint"] == store.read_checkpoint().note  # type: ignore[union-attr]


def test_a_directory_of_another_log_or_a_fork_is_refused(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    ours, theirs = MemoryStore(), MemoryStore()
    other = CheckpointSigner(origin=signer.origin, signer=Ed25519Signer.generate())
    _grow(theirs, other, 0, 10)
    export_tiles(reader_for(theirs, other), tmp_path / "theirs")
    _grow(ours, signer, 0, 300)
    with pytest.raises(InvalidInput) as refused:
        export_tiles(reader_for(ours, signer), tmp_path / "theirs")
    assert refused.value.code == "export-foreign"

    # A fork under the same key: a directory exported from another history of 10 entries.
    fork = MemoryStore()

    async def forked() -> None:
        async with Sequencer(fork, signer=signer) as seq:
            await seq.add_many([b"forked %d" % i for i in range(10)])

    asyncio.run(forked())
    export_tiles(reader_for(fork, signer), tmp_path / "fork")
    with pytest.raises(Corruption, match="does not extend the checkpoint of size 10"):
        export_tiles(reader_for(ours, signer), tmp_path / "fork")
    # And one ahead of the log: the store went back.
    export_tiles(reader_for(ours, signer), tmp_path / "ours")
    with pytest.raises(Corruption, match="went back from size 300 to 10"):
        export_tiles(reader_for(theirs_of(signer, 10), signer), tmp_path / "ours")


def theirs_of(signer: CheckpointSigner, size: int) -> MemoryStore:
    """A log of ``size`` entries with the test's entries (a prefix of the 300 above)."""
    store = MemoryStore()
    _grow(store, signer, 0, size)
    return store


def test_the_command_exports_and_says_so_in_one_line(tmp_path: Path) -> None:
    result = sealtrail("init", "-d", "d", "--origin", "export.test/log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = sealtrail("log", "append", "-d", "d", "--lines", "-", cwd=tmp_path, stdin=b"a\nb\n")
    assert result.returncode == 0, result.stderr
    result = sealtrail("log", "export-tiles", "out", "-d", "d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exported the log at size 2 to out: 2 tiles written, 0 already there" in result.stdout
    assert (tmp_path / "out" / "tile" / "entries" / "000.p" / "2").read_bytes() == (
        b"\x00\x01a\x00\x01b"
    )
    (tmp_path / "file").write_text("not a directory")
    assert_clean_error(
        sealtrail("log", "export-tiles", "file", "-d", "d", cwd=tmp_path), "output-unwritable"
    )


def test_watch_exports_as_the_log_grows_until_sigterm(tmp_path: Path) -> None:
    result = sealtrail("init", "-d", "d", "--origin", "export.test/log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    watcher = subprocess.Popen(
        [sys.executable, "-m", "sealtrail", "log", "export-tiles", "out", "-d", "d", "-q",
         "--watch", "0.1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        checkpoint = tmp_path / "out" / "checkpoint"
        result = sealtrail("log", "append", "-d", "d", "--lines", "-", cwd=tmp_path, stdin=b"a\n")
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if checkpoint.exists() and checkpoint.read_bytes().split(b"\n")[1] == b"1":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the watcher did not export the grown log")
        watcher.send_signal(signal.SIGTERM)
        stdout, stderr = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, stderr
    assert "Traceback" not in stderr and "stopped" in stderr
    assert "exported the log at size 1" in stdout
