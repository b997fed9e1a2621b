"""A server given another challenge key than the one its store's statement rows are tagged
under would store rows the sequencer refuses: its registrations would never complete. It is
refused at its start instead, and `sealtrail keys challenge-key` replaces the key on
purpose, but not while a stored statement still waits for the log under the old one."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from sealtrail.config import CHALLENGE_KEY_FILE, load_config
from sealtrail.scitt import StatementRows
from sealtrail.storage import SQLiteStore, StatementRecord
from tests._serve_proc import init_data, serve_process
from tests.integration.test_cli import sealtrail


def _serve_refused(root: Path) -> str:
    refused = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    return refused.stderr


def test_a_server_with_another_challenge_key_is_refused_until_the_key_is_adopted(
    tmp_path: Path,
) -> None:
    root, _ = init_data(tmp_path)
    data = root / "d"
    key_file = data / CHALLENGE_KEY_FILE
    with serve_process(root):
        pass  # the first server records its key
    first = key_file.read_text()

    # A host given a challenge key of its own (a copy of keys/ that missed the file).
    key_file.write_text(hashlib.sha256(b"another host").hexdigest() + "\n")
    stderr = _serve_refused(root)
    assert "(challenge-key-mismatch)" in stderr, stderr
    assert first.strip() not in stderr and hashlib.sha256(b"another host").hexdigest() not in stderr

    # The right file back: it starts again.
    key_file.write_text(first)
    with serve_process(root):
        pass

    # A key replaced on purpose and copied by hand: adopted, then served.
    key_file.write_text(hashlib.sha256(b"replacement").hexdigest() + "\n")
    _serve_refused(root)
    adopted = sealtrail("keys", "challenge-key", "-d", "d", "--adopt", cwd=root)
    assert adopted.returncode == 0, adopted.stderr
    assert key_file.read_text() == hashlib.sha256(b"replacement").hexdigest() + "\n"
    with serve_process(root):
        pass


def test_a_new_challenge_key_waits_for_the_backlog(tmp_path: Path) -> None:
    root, _ = init_data(tmp_path)
    data = root / "d"
    key_file = data / CHALLENGE_KEY_FILE
    with serve_process(root):
        pass
    old = key_file.read_text()

    # A statement stored (tagged under the current key) that no server appended: a
    # crash between the statement's commit and the log's.
    rows = StatementRows(load_config(data).challenge_key() or b"")
    body = b"stored, not yet appended"
    record = StatementRecord(
        hashlib.sha256(body).digest(), body, "iss", "sub", "text/plain", int(time.time())
    )
    store = SQLiteStore(data / "log.db")
    store.put_statements([rows.tagged(record)])
    store.close()

    refused = sealtrail("keys", "challenge-key", "-d", "d", cwd=root)
    assert refused.returncode != 0
    assert "(statements-pending)" in refused.stderr, refused.stderr
    assert "1 stored statement" in refused.stderr
    assert key_file.read_text() == old  # nothing changed

    # A server appends it (recovery), and the key can be replaced.
    with serve_process(root):
        pass
    replaced = sealtrail("keys", "challenge-key", "-d", "d", cwd=root)
    assert replaced.returncode == 0, replaced.stderr
    new = key_file.read_text()
    assert new != old and len(bytes.fromhex(new.strip())) == 32
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert new.strip() not in replaced.stderr + replaced.stdout
    with serve_process(root):
        pass  # the new key is the store's
    key_file.write_text(old)
    assert "(challenge-key-mismatch)" in _serve_refused(root)
