"""An insider with write access to a SQLite data directory's ``log.db`` (not to its keys)
slips statement rows in while the server is stopped, beside rows a server stored just
before it crashed. ``sealtrail serve``'s recovery appends the registered rows and none of
the forged ones (each logged once), keeps sequencing afterwards, and ``sealtrail audit``
names every forged row.
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import cbor2
import httpx
import pytest

from sealtrail.config import CHALLENGE_KEY_FILE, load_config
from sealtrail.keys import ES256
from sealtrail.scitt import StatementRows, parse_statement
from sealtrail.storage import StatementRecord
from tests._serve_proc import (
    allow_anonymous,
    init_data,
    onboard,
    register,
    serve_process,
    statement_for,
)
from tests.integration.test_cli import sealtrail
from tests.unit.scitt._pki import make_issuer

#: The order of the P-256 group: (r, s) and (r, N - s) are both valid ECDSA signatures.
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_COLUMNS = "entry_id, body, issuer, subject, content_type, registered_at, tag"


def _size(base: str) -> int:
    return int(httpx.get(base + "/checkpoint").content.split(b"\n")[1])


def _serving(root: Path, work: Callable[[str], None]) -> str:
    """``work`` on a server of ``root``'s data directory; its stderr once stopped."""
    with serve_process(root) as (base, proc):
        work(base)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        return proc.stderr.read().decode()


def _insert(db: sqlite3.Connection, record: StatementRecord) -> int:
    cursor = db.execute(
        f"INSERT INTO statements ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            record.entry_id,
            record.body,
            record.issuer,
            record.subject,
            record.content_type,
            record.registered_at,
            record.tag or None,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _stored(body: bytes, rows: StatementRows) -> StatementRecord:
    """The row a server stores for ``body``: what a server that crashed before appending
    it left behind."""
    statement = parse_statement(body)
    return rows.tagged(
        StatementRecord(
            hashlib.sha256(body).digest(),
            body,
            statement.issuer,
            statement.subject,
            str(statement.content_type),
            int(time.time()),
        )
    )


def _reencoded(body: bytes) -> bytes:
    parts = list(cbor2.loads(body).value)
    s = int.from_bytes(parts[3][32:], "big")
    parts[3] = parts[3][:32] + (N - s).to_bytes(32, "big")
    return bytes(cbor2.dumps(cbor2.CBORTag(18, parts)))


def test_recovery_appends_only_what_a_server_stored_and_the_audit_names_the_rest(
    tmp_path: Path,
) -> None:
    root, token = init_data(tmp_path)
    data = root / "d"
    allow_anonymous(data)
    issuer = make_issuer(ES256, cn="Maker")
    first: list[str] = []

    def onboard_and_register(base: str) -> None:
        onboard(base, token, issuer)
        first.append(register(base, statement_for(issuer, 1))[0])
        assert _size(base) == 2  # the organization record and the statement

    _serving(root, onboard_and_register)
    # The server's own rows carry their tag; the insider's cannot.
    secret = load_config(data).challenge_key()
    assert secret is not None
    rows = StatementRows(secret)
    db = sqlite3.connect(data / "log.db", isolation_level=None)
    try:
        registered = db.execute(
            f"SELECT {_COLUMNS} FROM statements WHERE entry_id = ?",
            (bytes.fromhex(first[0]),),
        ).fetchone()
        assert registered[6] is not None and len(registered[6]) == 32
        crashed = _stored(statement_for(issuer, 2), rows)  # stored, then the server died
        garbage = b"not a signed statement"
        copy = _reencoded(registered[1])  # verifies, and is another entry
        edited = _stored(statement_for(issuer, 3), rows)
        body_edited = _stored(statement_for(issuer, 4), rows)
        forged = {
            _insert(
                db,
                StatementRecord(
                    hashlib.sha256(garbage).digest(), garbage, registered[2], "x", "t", 0
                ),
            ): "it carries no authentication tag",
        }
        forged[
            _insert(
                db,
                StatementRecord(hashlib.sha256(copy).digest(), copy, *registered[2:]),
            )
        ] = "its authentication tag does not verify"
        _insert(db, crashed)
        forged[_insert(db, edited)] = "its authentication tag does not verify"
        db.execute(
            "UPDATE statements SET issuer = 'https://mallory.example/signing' WHERE entry_id = ?",
            (edited.entry_id,),
        )
        _insert(db, body_edited)
        # The body swapped after it was stored: its entry id (and tag) are the registered
        # ones, and no reader takes a body that does not hash to its entry id.
        db.execute(
            "UPDATE statements SET body = ? WHERE entry_id = ?", (garbage, body_edited.entry_id)
        )
    finally:
        db.close()
    db = sqlite3.connect(data / "log.db")
    try:
        ids = {seq: bytes(e).hex() for seq, e in db.execute("SELECT seq, entry_id FROM statements")}
    finally:
        db.close()
    later: list[str] = []

    def recovered(base: str) -> None:
        assert _size(base) == 4  # the row the crash left, and the one whose body was swapped
        later.append(register(base, statement_for(issuer, 5))[0])  # the backlog moves on
        assert _size(base) == 5

    stderr = _serving(root, recovered)
    for seq, problem in forged.items():
        line = f"statement row seq {seq} (entry {ids[seq][:16]}…) refused: {problem}"
        assert stderr.count(line) == 1, stderr
    assert "not a signed statement" not in stderr and garbage.hex() not in stderr
    # Started again: nothing more is appended, and nothing refused again (passed for good).
    stderr = _serving(root, lambda base: None if _size(base) == 5 else pytest.fail("grew"))
    assert "refused" not in stderr, stderr
    status = sealtrail("log", "verify", "-d", "d", cwd=root)
    assert status.returncode == 0 and "OK: 5 entries" in status.stdout, status.stdout
    audit = sealtrail("audit", "-d", "d", cwd=root)
    assert audit.returncode == 1
    found = [line for line in audit.stdout.splitlines() if line.startswith("FOUND")]
    assert found == [
        "FOUND entry 3: the stored statement does not hash to the log's entry",
        *(
            f"FOUND statement row {seq}: entry id {ids[seq][:16]}… is not in the log, and "
            f"{problem}: written or edited behind the service (servers refuse to append it)"
            for seq, problem in sorted(forged.items())
        ),
    ], audit.stdout
    # An auditor's copy without the key counts those rows, and cannot judge them.
    (data / CHALLENGE_KEY_FILE).rename(tmp_path / "challenge.key")
    audit = sealtrail("audit", "-d", "d", cwd=root)
    assert "3 stored statements are not in the log; their tags were not checked" in (
        audit.stdout
    ), audit.stdout
    assert "FOUND statement row" not in audit.stdout
    # And no server starts without it.
    refused = sealtrail("serve", "-d", "d", "--port", "0", cwd=root)
    assert refused.returncode == 1
    assert "(challenge-key-missing)" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
