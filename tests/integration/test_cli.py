"""The command line as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sealtrail.cli import main
from sealtrail.keys import ES256, EcdsaSigner, write_private_key
from sealtrail.storage import SQLiteStore, StatementRecord


def sealtrail(
    *args: str, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SEALTRAIL_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "sealtrail", *args],
        cwd=cwd,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"({code})" in result.stderr, result.stderr


@pytest.fixture
def data(tmp_path: Path) -> Path:
    result = sealtrail("init", "--data-dir", "d", "--origin", "cli.test/log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_init_creates_a_private_key_and_refuses_to_reinit(data: Path) -> None:
    key = data / "d" / "keys" / "log.key"
    assert key.stat().st_mode & 0o077 == 0
    assert (data / "d").stat().st_mode & 0o077 == 0
    assert (data / "d" / "log.vkey").read_text().startswith("cli.test/log+")
    again = sealtrail("init", "--data-dir", "d", cwd=data)
    assert_clean_error(again, "config-error")


def test_init_says_what_it_wrote_and_refuses_a_place_it_cannot_make(tmp_path: Path) -> None:
    made = sealtrail("init", "--data-dir", "d[1]", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "Initialized d[1] for log" in made.stdout and "([auth] required = true)" in made.stdout
    (tmp_path / "afile").write_text("")
    refused = sealtrail("init", "--data-dir", "afile/sub", cwd=tmp_path)
    assert_clean_error(refused, "config-error")
    assert "cannot create the data directory afile/sub" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "d[1]"]


def test_raw_entries_are_refused_where_statements_are_registered(data: Path) -> None:
    """A raw entry would sit among registered statements (the audit flags it); the log
    stays as it was."""
    statement = b"a registered statement"
    store = SQLiteStore(data / "d" / "log.db")
    try:
        entry = StatementRecord(
            hashlib.sha256(statement).digest(), statement, "maker", "srv-1", "text/plain", 0
        )
        store.put_statements([entry])
    finally:
        store.close()
    (data / "a.bin").write_bytes(b"raw")
    r = sealtrail("log", "append", "a.bin", "--data-dir", "d", cwd=data)
    assert_clean_error(r, "raw-append-refused")
    assert "transparency service" in r.stderr
    store = SQLiteStore(data / "d" / "log.db")
    try:
        stored = store.read_checkpoint()
        assert stored is None or stored.size == 0
    finally:
        store.close()


def test_raw_entries_are_refused_on_a_store_servers_share(data: Path, postgres_url: str) -> None:
    """On PostgreSQL only the holder of the sequencer role appends: a raw append from the
    command line would sequence beside it."""
    config = data / "d" / "sealtrail.toml"
    lines = config.read_text().splitlines()
    lines = [f"store = {json.dumps(postgres_url)}" if x.startswith("store =") else x for x in lines]
    config.write_text("\n".join(lines) + "\n")
    (data / "a.bin").write_bytes(b"raw")
    r = sealtrail("log", "append", "a.bin", "--data-dir", "d", cwd=data)
    assert_clean_error(r, "raw-append-refused")
    assert "sequencer role" in r.stderr


def test_a_missing_store_is_refused_by_every_command_and_not_created(data: Path) -> None:
    """Its log.db gone (a wrong path, a lost disk), a data directory's commands say so; none
    reports an empty log as fine, and none creates a new file in its place."""
    (data / "d" / "log.db").unlink()
    (data / "a.bin").write_bytes(b"raw")
    for args in (
        ["log", "verify"],
        ["log", "checkpoint"],
        ["log", "append", "a.bin"],
        ["log", "proof", "consistency", "--from", "0"],
        ["audit"],
        ["index", "status"],
    ):
        r = sealtrail(*args, "--data-dir", "d", cwd=data)
        assert_clean_error(r, "store-log-missing")
        assert not (data / "d" / "log.db").exists(), args


def test_inputs_are_read_no_further_than_their_limits(data: Path) -> None:
    """An endless input (/dev/zero) is refused at its limit, as a file entry, a line or a
    proof document; an entry of exactly the largest size goes in."""
    for args in (
        ["append", "/dev/zero", "--data-dir", "d"],
        ["append", "--lines", "/dev/zero", "--data-dir", "d"],
        ["verify-proof", "/dev/zero", "--vkey", "d/log.vkey"],
    ):
        assert_clean_error(sealtrail("log", *args, cwd=data), "too-large")
    (data / "largest.bin").write_bytes(b"x" * 0xFFFF)
    (data / "lines.txt").write_bytes(b"short\n" + b"y" * 0xFFFF + b"\n")
    r = sealtrail("log", "append", "largest.bin", "--data-dir", "d", cwd=data)
    assert r.returncode == 0, r.stderr
    r = sealtrail("log", "append", "--lines", "lines.txt", "--data-dir", "d", cwd=data)
    assert r.returncode == 0 and r.stdout.split() == ["1", "2"], r.stderr


def test_append_prove_and_verify_offline(data: Path) -> None:
    (data / "a.bin").write_bytes(b"first entry")
    lines = "\n".join(f"line {i}" for i in range(600)).encode()
    r = sealtrail("log", "append", "a.bin", "--data-dir", "d", cwd=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"
    r = sealtrail("log", "append", "--lines", "-", "--data-dir", "d", "-q", cwd=data, stdin=lines)
    assert r.returncode == 0, r.stderr
    assert "600 entries at indexes 1..600" in r.stdout
    # appending the same file again finds it
    assert sealtrail("log", "append", "a.bin", "--data-dir", "d", cwd=data).stdout.strip() == "0"

    old = sealtrail("log", "checkpoint", "--data-dir", "d", cwd=data).stdout
    (data / "old.checkpoint").write_text(old)
    sealtrail("log", "append", "--lines", "-", "--data-dir", "d", cwd=data, stdin=b"later\n")

    r = sealtrail("log", "proof", "inclusion", "--entry", "a.bin", "--data-dir", "d", cwd=data)
    assert r.returncode == 0, r.stderr
    (data / "proof.json").write_text(r.stdout)
    vkey = (data / "d" / "log.vkey").read_text().strip()
    ok = sealtrail(
        "log", "verify-proof", "proof.json", "--vkey", vkey, "--entry", "a.bin", cwd=data
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: entry 0 is in cli.test/log at size 602")

    r = sealtrail("log", "proof", "consistency", "--from", "601", "--data-dir", "d", cwd=data)
    (data / "cons.json").write_text(r.stdout)
    ok = sealtrail(
        "log",
        "verify-proof",
        "cons.json",
        "--vkey",
        "d/log.vkey",  # the file holding the key does as well
        "--old-checkpoint",
        "old.checkpoint",
        cwd=data,
    )
    assert ok.returncode == 0, ok.stderr

    # attacks on the document: an altered hash, the wrong entry, another log's key
    doc = json.loads((data / "proof.json").read_text())
    doc["inclusion_proof"]["hashes"][0] = "A" * 43 + "="
    (data / "bad.json").write_text(json.dumps(doc))
    assert_clean_error(
        sealtrail("log", "verify-proof", "bad.json", "--vkey", vkey, cwd=data), "invalid-proof"
    )
    (data / "other.bin").write_bytes(b"not the entry")
    wrong = sealtrail(
        "log", "verify-proof", "proof.json", "--vkey", vkey, "--entry", "other.bin", cwd=data
    )
    assert_clean_error(wrong, "invalid-proof")
    sealtrail("init", "--data-dir", "e", "--origin", "cli.test/log", cwd=data)
    other_key = (data / "e" / "log.vkey").read_text().strip()
    assert_clean_error(
        sealtrail("log", "verify-proof", "proof.json", "--vkey", other_key, cwd=data),
        "invalid-signature",
    )

    audit = sealtrail("log", "verify", "--data-dir", "d", "-q", cwd=data)
    assert audit.returncode == 0 and "OK: 602 entries" in audit.stdout


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    assert_clean_error(
        sealtrail("log", "checkpoint", "--data-dir", "nowhere", cwd=tmp_path), "config-error"
    )
    (tmp_path / "junk.json").write_text("{not json")
    r = sealtrail("log", "verify-proof", "junk.json", "--vkey", "a+00000000+AQ==", cwd=tmp_path)
    assert_clean_error(r, "invalid-input")


def _key_file_with_plus_signs(path: Path) -> str:
    """Write a freshly generated private key whose PEM has at least two '+' (so it splits
    like a vkey, with the head of the key where the name goes); return its base64."""
    while True:
        write_private_key(path, EcdsaSigner.generate(ES256))
        body = "".join(path.read_text().splitlines()[1:-1])
        if body.count("+") >= 2:
            return body
        path.unlink()


def test_a_private_key_given_as_the_verifier_key_is_refused_unseen(data: Path) -> None:
    """A key file from keys/ passed where log.vkey goes: one line, nothing of the key."""
    keys = data / "d" / "keys"
    es256 = _key_file_with_plus_signs(keys / "es256.key")
    (data / "junk.json").write_text("{}")
    cases = [
        ("d/keys/es256.key", ["log", "verify-proof", "junk.json", "--vkey"]),
        ("d/keys/es256.key", ["log", "verify", "--tiles", "d", "--vkey"]),
        ("d/keys/es256.key", ["passport", "verify", "junk.json", "--log-key"]),
        ("d/keys/log.key", ["log", "verify-proof", "junk.json", "--vkey"]),
        ("d/keys/service.key", ["passport", "verify", "junk.json", "--log-key"]),
    ]
    for path, args in cases:
        pem = (data / path).read_text()
        body = es256 if path.endswith("es256.key") else "".join(pem.splitlines()[1:-1])
        r = sealtrail(*args, path, cwd=data)
        assert r.returncode == 1, (args, r.stderr)
        assert_clean_error(r, "invalid-input")
        assert r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 2, r.stderr  # the error and its hint
        assert "private key was given where a verifier key is expected" in r.stderr
        assert "log.vkey" in r.stderr
        for chunk in (body[i : i + 8] for i in range(0, len(body) - 8, 4)):
            assert chunk not in r.stderr, (args, r.stderr)


@pytest.mark.parametrize("command", ["rotate", "admin-token"])
def test_keys_on_a_read_only_data_directory_is_one_line(
    data: Path,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Run in this process, the data directory's writes failing as on a read-only file
    system (a chmod does not stop root): one line, exit 1, nothing changed."""
    keys = data / "d" / "keys"
    before = {path.name: path.read_bytes() for path in keys.iterdir()}

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(SystemExit) as exited:
        main(["keys", command, "--data-dir", str(data / "d")])
    monkeypatch.undo()
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert "(config-error)" in err and "Read-only file system" in err
    assert len(err.strip().splitlines()) == 2, err  # the error and its hint
    assert {path.name: path.read_bytes() for path in keys.iterdir()} == before


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    r = sealtrail("log", "append", "--no-such-flag", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
