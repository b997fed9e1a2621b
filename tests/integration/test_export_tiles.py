"""The log as static files (``sealtrail log export-tiles``): every file is what the HTTP
read API answers at its path, the entries in the bundles hash to the checkpoint's root, an
export again writes only what the log gained, and a directory holding another log's
checkpoint, or one the log does not extend, is refused. And the log verified from its
tiles alone (``sealtrail log verify --tiles``), a mirror's or a server's, with the public
key only: a tampered byte, a mirror behind a kept checkpoint and an oversized file are
each refused in one line."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sealtrail.cli import app as cli_app
from sealtrail.cli import log as log_cli
from sealtrail.client import TileSource
from sealtrail.errors import Corruption, InvalidInput, StorageError
from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, LogReader, Sequencer, bundle_entries, export_tiles
from sealtrail.merkle import CompactRange, leaf_hash
from sealtrail.note import MAX_NOTE_SIZE, NoteSigner, sign_note
from sealtrail.service import create_app
from sealtrail.storage import MemoryStore
from tests._serve_proc import allow_anonymous, init_data, onboard, register, served, statement_for
from tests.conftest import reader_for
from tests.integration.test_cli import assert_clean_error, sealtrail
from tests.unit.scitt._pki import make_issuer


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
    stored = store.read_checkpoint()
    assert stored is not None
    assert after["checkpoint"] == stored.note


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


# -- verifying a log from its tiles alone --------------------------------------------------------


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """A data directory whose log of 300 raw entries was exported to ``out``."""
    result = sealtrail("init", "-d", "d", "--origin", "export.test/log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = b"".join(b"entry %d\n" % i for i in range(300))
    result = sealtrail("log", "append", "-d", "d", "--lines", "-", cwd=tmp_path, stdin=lines)
    assert result.returncode == 0, result.stderr
    result = sealtrail("log", "export-tiles", "out", "-d", "d", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def _verify(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sealtrail("log", "verify", "-q", "--vkey", "d/log.vkey", *args, cwd=root)


def test_an_exported_log_verifies_from_its_tiles_and_extends_a_kept_checkpoint(
    exported: Path,
) -> None:
    result = _verify(exported, "--tiles", "out", "--save", "kept")
    assert result.returncode == 0, result.stderr
    assert "OK: 300 entries hash to the signed root" in result.stdout
    assert (exported / "kept").read_bytes() == (exported / "out" / "checkpoint").read_bytes()
    more = b"".join(b"more %d\n" % i for i in range(20))
    sealtrail("log", "append", "-d", "d", "--lines", "-", cwd=exported, stdin=more)
    sealtrail("log", "export-tiles", "out", "-d", "d", "-q", cwd=exported)
    result = _verify(exported, "--tiles", "out", "--since", "kept", "--save", "kept")
    assert result.returncode == 0, result.stderr
    assert "OK: 320 entries" in result.stdout
    assert "OK: the log extends the checkpoint of size 300 in kept" in result.stdout
    assert b"\n320\n" in (exported / "kept").read_bytes()


def test_a_tampered_mirror_or_one_behind_a_kept_checkpoint_is_refused(exported: Path) -> None:
    shutil.copy(exported / "out" / "checkpoint", exported / "kept")
    bundle = exported / "out" / "tile" / "entries" / "000"
    original = bundle.read_bytes()
    bundle.write_bytes(original[:3] + bytes([original[3] ^ 1]) + original[4:])  # entry 0
    result = _verify(exported, "--tiles", "out")
    assert_clean_error(result, "corruption")
    assert "does not match the entries" in result.stderr
    bundle.write_bytes(original)
    # A mirror rolled back to an older checkpoint than the one kept.
    sealtrail("log", "append", "-d", "d", "--lines", "-", cwd=exported, stdin=b"x\n")
    sealtrail("log", "export-tiles", "newer", "-d", "d", "-q", cwd=exported)
    shutil.copy(exported / "newer" / "checkpoint", exported / "kept")
    result = _verify(exported, "--tiles", "out", "--since", "kept")
    assert_clean_error(result, "log-rolled-back")
    # Arguments that do not go together, or a source that is neither.
    assert_clean_error(_verify(exported), "invalid-input")
    result = sealtrail("log", "verify", "--tiles", "out", cwd=exported)
    assert_clean_error(result, "invalid-input")
    assert_clean_error(_verify(exported, "--tiles", "no-such-dir"), "tiles-source-invalid")


def test_a_served_log_verifies_from_its_tiles_over_http(tmp_path: Path) -> None:
    root, token = init_data(tmp_path)
    allow_anonymous(root / "d")
    issuer = make_issuer("ES256", cn="Maker")
    with served(root) as url:
        onboard(url, token, issuer)
        for n in range(3):
            register(url, statement_for(issuer, n))
        result = _verify(root, "--tiles", url)
        assert result.returncode == 0, result.stderr
        assert "entries hash to the signed root" in result.stdout
        result = _verify(root, "--tiles", url + "/nothing-here")
        assert_clean_error(result, "tile-missing")
        assert "has no checkpoint" in result.stderr


def test_a_source_is_read_no_further_than_its_limits(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    store = MemoryStore()
    _grow(store, signer, 0, 10)
    export_tiles(reader_for(store, signer), tmp_path)
    tile = tmp_path / "tile" / "0" / "000.p" / "10"
    tile.write_bytes(tile.read_bytes() + bytes(32))  # one hash more than a tile of 10 holds
    with TileSource(tmp_path) as source:
        reader = LogReader(source, origin=signer.origin, verifiers=[signer.verifier])
        with pytest.raises(InvalidInput) as refused:
            reader.audit()
    assert refused.value.code == "tiles-source-invalid"
    assert "larger than 320 bytes" in refused.value.message
    (tmp_path / "checkpoint").write_bytes(b"x" * (MAX_NOTE_SIZE + 1))
    with TileSource(tmp_path) as source, pytest.raises(InvalidInput):
        source.read_checkpoint()


def _without_level_0_partials(tmp_path: Path, signer: CheckpointSigner) -> Path:
    """An export of a log of 300 entries as a log that deletes partial tiles leaves it once
    it has grown to 512: the level-0 tile and the bundle of 300's checkpoint are there only
    as full ones (its level-1 partial has no full tile yet, and stays)."""
    store = MemoryStore()
    _grow(store, signer, 0, 300)
    reader = reader_for(store, signer)
    out = tmp_path / "out"
    old = export_tiles(reader, out).checkpoint
    assert old is not None
    _grow(store, signer, 300, 512)
    export_tiles(reader, out)
    for name in ("tile/0/001.p/44", "tile/entries/001.p/44"):
        (out / name).unlink()
    assert (out / "tile/0/001").is_file() and (out / "tile/entries/001").is_file()
    (out / "checkpoint").write_bytes(old.note)
    return out


def test_a_removed_partial_tile_is_read_from_the_full_one(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    """C2SP tlog-tiles: a log MAY delete a partial tile once the full tile exists, and a
    client MAY fetch the full tile instead."""
    out = _without_level_0_partials(tmp_path, signer)
    with TileSource(out) as source:
        reader = LogReader(source, origin=signer.origin, verifiers=[signer.verifier])
        audited = reader.audit()
        assert audited is not None and audited.size == 300
        assert reader.entries(290, 300) == [f"entry {i}".encode() for i in range(290, 300)]
    # The same over HTTP, from a plain static file server that answers 404.
    asked: list[str] = []

    class Files(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Files, directory=str(out))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with TileSource(url) as source:
            reader = LogReader(source, origin=signer.origin, verifiers=[signer.verifier])
            audited = reader.audit()
            assert audited is not None and audited.size == 300
        assert {"/tile/0/001.p/44", "/tile/0/001", "/tile/entries/001"} <= set(asked)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    # A full tile whose first positions are not the partial one's is refused as it would be.
    full = out / "tile" / "0" / "001"
    full.write_bytes(bytes(32) + full.read_bytes()[32:])
    with TileSource(out) as source:
        reader = LogReader(source, origin=signer.origin, verifiers=[signer.verifier])
        with pytest.raises(Corruption):
            reader.audit()


def test_a_log_whose_key_is_named_otherwise_than_its_origin_verifies_with_origin(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    """C2SP tlog-checkpoint: the log's key name SHOULD match its origin, not MUST."""
    store = MemoryStore()
    _grow(store, signer, 0, 300)
    reader = reader_for(store, signer)
    export_tiles(reader, tmp_path / "out")
    latest = reader.checkpoint()
    assert latest is not None
    key = NoteSigner("keys.example/log-2026", Ed25519Signer.generate())
    note = sign_note(latest.checkpoint.to_text(), [key])
    (tmp_path / "out" / "checkpoint").write_bytes(note)
    (tmp_path / "key.vkey").write_text(key.verifier_key() + "\n")
    base = ("log", "verify", "-q", "--tiles", "out", "--vkey", "key.vkey")
    result = sealtrail(*base, cwd=tmp_path)
    assert_clean_error(result, "invalid-signature")
    assert f"checkpoint is for log '{signer.origin}'" in result.stderr
    result = sealtrail(*base, "--origin", signer.origin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK: 300 entries hash to the signed root" in result.stdout
    assert_clean_error(
        sealtrail(*base, "--origin", "another.example/log", cwd=tmp_path), "invalid-signature"
    )
    # A proof document of that log, checked with its key and its origin.
    with TileSource(tmp_path / "out") as source:
        theirs = LogReader(source, origin=signer.origin, verifiers=[key.verifier()])
        proof = theirs.inclusion_proof(7, size=300)
    doc = {"checkpoint": note.decode(), "inclusion_proof": proof.to_dict()}
    (tmp_path / "proof.json").write_text(json.dumps(doc))
    (tmp_path / "e.bin").write_bytes(b"entry 7")
    check = ("log", "verify-proof", "proof.json", "--vkey", "key.vkey", "--entry", "e.bin")
    assert_clean_error(sealtrail(*check, cwd=tmp_path), "invalid-signature")
    result = sealtrail(*check, "--origin", signer.origin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"OK: entry 7 is in {signer.origin} at size 300" in result.stdout
    # --origin is for a log read from its tiles: a data directory knows its own.
    assert_clean_error(sealtrail("log", "verify", "--origin", "x", cwd=tmp_path), "invalid-input")


def test_watch_waits_out_a_store_outage_and_stops_on_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restart under a watching export is a warning and a retry; a store that
    contradicts its checkpoint ends the watch with its error."""
    result = sealtrail("init", "-d", "d", "--origin", "export.test/log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    for last in (KeyboardInterrupt(), Corruption("tile 0/0 position 3 does not match")):
        turns: list[BaseException | int] = [-1, StorageError("the store is unavailable"), last]

        def export_once(
            *_args: object, turns: list[BaseException | int] = turns, **_kw: object
        ) -> int:
            turn = turns.pop(0)
            if isinstance(turn, BaseException):
                raise turn
            return turn

        monkeypatch.setattr(log_cli, "_export_once", export_once)
        outcome = CliRunner().invoke(
            cli_app, ["log", "export-tiles", "out", "-d", "d", "--watch", "1"]
        )
        if isinstance(last, KeyboardInterrupt):
            assert outcome.exit_code == 0, outcome.output
            assert "warning: the store is unavailable (storage-error); trying again" in (
                outcome.output
            )
            assert "stopped" in outcome.output
        else:
            assert isinstance(outcome.exception, Corruption)
        assert not turns


@pytest.mark.parametrize("watch", [[], ["--watch", "1"]])
def test_an_export_interrupted_before_it_is_whole_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watch: list[str]
) -> None:
    """Ctrl-C in the first export leaves it incomplete: the command fails (exit 0 only for
    a watching mirror stopped between exports, above)."""
    result = sealtrail("init", "-d", "d", "--origin", "export.test/log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(tmp_path)

    def export_once(*_args: object, **_kw: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(log_cli, "_export_once", export_once)
    outcome = CliRunner().invoke(cli_app, ["log", "export-tiles", "out", "-d", "d", *watch])
    assert outcome.exit_code != 0
    assert "stopped" not in outcome.output


def test_an_audit_from_tiles_fetches_each_file_once(
    tmp_path: Path, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    _grow(store, signer, 0, 549)
    export_tiles(reader_for(store, signer), tmp_path)
    fetched: list[str] = []
    get = TileSource._get

    def counted(self: TileSource, name: str, limit: int) -> bytes | None:
        fetched.append(name)
        return get(self, name, limit)

    monkeypatch.setattr(TileSource, "_get", counted)
    with TileSource(tmp_path) as source:
        reader = LogReader(source, origin=signer.origin, verifiers=[signer.verifier])
        assert reader.audit() is not None
    assert sorted(fetched) == sorted(_files(tmp_path))
