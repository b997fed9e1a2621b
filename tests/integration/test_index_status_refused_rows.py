"""``sealtrail index status`` reports the statement rows the sequencer refuses: rows an
insider with write access to a SQLite data directory's ``log.db`` (not to its keys)
slipped in. It counts them and names the first ``REFUSED_SHOWN`` by number and entry id,
never by content or tag; a row the log holds is not one of them, whatever its tag, nor is
a row a server stored and has yet to append. Without ``keys/challenge.key`` (an auditor's
copy) it says the rows were not checked, and reports the rest as before.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import replace
from pathlib import Path

from sealtrail.cli.provenance import REFUSED_SHOWN
from sealtrail.config import CHALLENGE_KEY_FILE, load_config
from sealtrail.keys import ES256
from sealtrail.scitt import StatementRows
from sealtrail.storage import StatementRecord
from tests._serve_proc import allow_anonymous, init_data, onboard, register, statement_for
from tests.integration.test_cli import sealtrail
from tests.integration.test_forged_statement_rows import _insert, _serving, _size, _stored
from tests.unit.scitt._pki import make_issuer

HEADLINE = "statement rows refused by the sequencer"
NO_TAG = "it carries no authentication tag"


def _status(root: Path) -> str:
    result = sealtrail("index", "status", "-d", "d", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_index_status_counts_and_names_the_rows_the_sequencer_refuses(tmp_path: Path) -> None:
    assert REFUSED_SHOWN == 20, "docs/provenance.md and `index status --help` say 20"
    root, token = init_data(tmp_path)
    data = root / "d"
    allow_anonymous(data)
    issuer = make_issuer(ES256, cn="Maker")
    first: list[str] = []

    def onboard_and_register(base: str) -> None:
        onboard(base, token, issuer)
        first.append(register(base, statement_for(issuer, 1))[0])
        assert _size(base) == 2

    _serving(root, onboard_and_register)
    out = _status(root)
    assert f"{HEADLINE}: none" in out, out
    secret = load_config(data).challenge_key()
    assert secret is not None
    rows = StatementRows(secret)
    made_up = b"\x07" * 32
    bodies = [b"not a signed statement %d" % n for n in range(REFUSED_SHOWN + 2)]
    db = sqlite3.connect(data / "log.db", isolation_level=None)
    try:
        # The registered row re-tagged: the log holds it, nothing to refuse.
        db.execute(
            "UPDATE statements SET tag = ? WHERE entry_id = ?", (made_up, bytes.fromhex(first[0]))
        )
        _insert(db, _stored(statement_for(issuer, 2), rows))  # stored, not appended yet
        forged = {}
        for n, body in enumerate(bodies):
            record = StatementRecord(
                hashlib.sha256(body).digest(), body, "https://x.example", "x", "t", 0
            )
            if n % 2:
                record = replace(record, tag=made_up)
            forged[_insert(db, record)] = record
    finally:
        db.close()
    out = _status(root)
    lines = out.splitlines()
    at = lines.index(
        f"{HEADLINE}: {len(forged)} (not in the log and never appended: written or edited "
        "behind the service; `sealtrail audit` names them)"
    )
    problems = {made_up: "its authentication tag does not verify", b"": NO_TAG}
    assert lines[at + 1 : at + 2 + REFUSED_SHOWN] == [
        *(
            f"  statement row {seq} (entry id {forged[seq].entry_id.hex()[:16]}…): "
            + problems[forged[seq].tag]
            for seq in sorted(forged)[:REFUSED_SHOWN]
        ),
        f"  and {len(forged) - REFUSED_SHOWN} more",
    ], out
    assert made_up.hex() not in out and "not a signed statement" not in out
    assert "up to date" in out and "no server uses it" in out  # the rest as before
    # The audit names the same rows, all of them.
    audit = sealtrail("audit", "-d", "d", cwd=root)
    named = [line.split(":")[0] for line in audit.stdout.splitlines() if "statement row" in line]
    assert named == [f"FOUND statement row {seq}" for seq in sorted(forged)], audit.stdout

    # An auditor's copy, without the key: not checked, and said so.
    (data / CHALLENGE_KEY_FILE).rename(tmp_path / "challenge.key")
    out = _status(root)
    assert (
        f"{HEADLINE}: not checked (no {CHALLENGE_KEY_FILE} in the data directory: an "
        "auditor's copy?); run this on a server's host to check their tags"
    ) in out, out
    assert "statement row " not in out and "up to date" in out
    # A key file that cannot be read: the same, with why.
    (data / CHALLENGE_KEY_FILE).write_text("not hex\n")
    out = _status(root)
    assert f"{HEADLINE}: not checked ({CHALLENGE_KEY_FILE} cannot be read: " in out, out
    # Another key than the one the store's rows are tagged under: every row would look
    # forged; none is named, and the line says why.
    (data / CHALLENGE_KEY_FILE).unlink()
    (data / CHALLENGE_KEY_FILE).write_text("ab" * 32 + "\n")
    (data / CHALLENGE_KEY_FILE).chmod(0o600)
    out = _status(root)
    assert (
        f"{HEADLINE}: not checked ({CHALLENGE_KEY_FILE} is not the key the store's rows are "
        "tagged under; see `sealtrail keys challenge-key`)"
    ) in out, out
    assert "statement row " not in out
