"""`sealtrail audit`, `index` and `serve` over a data directory whose SQLite files an insider
edited with values the code could not have written: a claim on the index that never lapses,
bytes that are not UTF-8, text where bytes belong. Each command answers in one coded line,
never a traceback; the audit names every such edit and goes on to the others; and
`audit --no-index` says what it checked, not that the index is fine.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.integration.test_cli import sealtrail
from tests.integration.test_cli_provenance import data  # noqa: F401 (a fixture: the log)

INDEX_OK = "the index is exactly what the log gives"


@pytest.fixture
def copy(data: Path, tmp_path: Path) -> Path:  # noqa: F811 (the fixture imported above)
    """A copy of the data directory (``copy / "d"``), to edit."""
    shutil.copytree(data / "d", tmp_path / "d")
    return tmp_path


def _edit(root: Path, db: str, *statements: str) -> None:
    with closing(sqlite3.connect(root / "d" / db, isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


def _run(root: Path, *args: str) -> tuple[int, str, str]:
    """A command on the copy: its status, output and errors (which hold no traceback)."""
    result = sealtrail(*args, "-d", "d", cwd=root)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


def _findings(out: str) -> list[str]:
    return [line.removeprefix("FOUND ") for line in out.splitlines() if line.startswith("FOUND")]


def test_audit_without_the_index_does_not_vouch_for_it(copy: Path) -> None:
    _edit(copy, "provenance.db", "UPDATE idx_rows SET value = '{}'")  # every row edited
    status, out, _ = _run(copy, "audit", "--no-index")
    assert status == 0, out
    assert INDEX_OK not in out and "index is" not in out
    assert "OK: the log matches its signed checkpoint" in out
    assert "the index was not read (--no-index)" in out
    status, out, _ = _run(copy, "audit", "--no-index", "--json")
    report = json.loads(out)
    assert (status, report["ok"], report["index_compared"]) == (0, True, False)
    status, out, _ = _run(copy, "audit", "--json")
    report = json.loads(out)
    assert (status, report["ok"], report["index_compared"]) == (1, False, True)


def test_a_claim_that_never_lapses_blocks_nothing(copy: Path) -> None:
    _edit(
        copy,
        "provenance.db",
        "INSERT INTO idx_claims VALUES ('sealtrail index rebuild evil/1 #x', 1, 1e15)",
        "INSERT INTO idx_claims VALUES ('sealtrail serve evil/2 #y', 0, 'forever')",
    )
    status, out, err = _run(copy, "index", "status")
    assert status == 0 and "no server uses it" in out, out + err
    status, out, err = _run(copy, "audit")
    assert status == 0 and INDEX_OK in out, out + err
    status, out, err = _run(copy, "index", "rebuild")  # the servers' claims bar a rebuild
    assert status == 0 and "Index rebuilt" in out, out + err
    with closing(sqlite3.connect(copy / "d" / "provenance.db")) as conn:
        assert conn.execute("SELECT count(*) FROM idx_claims").fetchone()[0] == 0  # dropped


def test_an_undecodable_row_is_one_finding_among_the_others(copy: Path) -> None:
    with closing(sqlite3.connect(copy / "d" / "provenance.db")) as conn:
        rows = conn.execute("SELECT tbl, key FROM idx_rows ORDER BY tbl, key").fetchall()
    (t1, k1), (t2, k2) = rows[0], rows[-1]
    first, last = f"tbl = '{t1}' AND key = '{k1}'", f"tbl = '{t2}' AND key = '{k2}'"
    _edit(
        copy,
        "provenance.db",
        f"UPDATE idx_rows SET value = CAST(x'7b22ff22' AS TEXT) WHERE {first}",
        f"UPDATE idx_rows SET value = '{{}}' WHERE {last}",
        # A key that reads as console markup is printed as it is stored.
        "INSERT INTO idx_rows VALUES ('device', '[/x]', '{}')",
    )
    status, out, err = _run(copy, "audit")
    assert status == 1, out + err
    found = _findings(out)
    assert [f.split(": ", 1)[0] for f in found] == [
        f"row {t1}/{k1}",
        "row device/[/x]",
        f"row {t2}/{k2}",
    ], out
    assert found[0].startswith(
        f'row {t1}/{k1}: edited behind the log: holds {{"\\xff" (bytes that are not UTF-8 '
        "text), the log gives {"
    )
    assert found[1] == "row device/[/x]: inserted behind the log: {}"
    assert found[2].startswith(f"row {t2}/{k2}: edited behind the log: holds {{}}, the log")
    # A server refuses the index, and points at the audit, which reads past the damage.
    status, _, err = _run(copy, "serve", "--port", "0")
    assert status == 1
    assert "error (corruption): the index's idx_rows.value holds bytes that are not UTF-8" in err
    assert "run `sealtrail audit` to name what differs" in err
    assert "may be retried" not in err


def test_an_entry_id_stored_as_text_is_named_and_refused_in_one_line(copy: Path) -> None:
    _edit(
        copy,
        "provenance.db",
        "UPDATE idx_entries SET entry_id = hex(randomblob(16))"
        " WHERE idx = (SELECT max(idx) FROM idx_entries)",
    )
    status, _, err = _run(copy, "index", "status")
    assert status == 1
    assert "error (corruption): the index's idx_entries.entry_id holds text where bytes" in err
    status, out, err = _run(copy, "audit")
    assert status == 1, out + err
    (finding,) = _findings(out)
    assert "edited behind the log: entry_id a value stored as another type than bytes" in finding


@pytest.mark.parametrize("command", [("log", "verify"), ("audit",), ("index", "status")])
def test_a_checkpoint_note_stored_as_text_is_corruption(copy: Path, command: tuple[str]) -> None:
    _edit(copy, "log.db", "UPDATE checkpoint SET note = CAST(note AS TEXT)")
    status, _, err = _run(copy, *command)
    assert status == 1
    assert "error (corruption): checkpoint.note holds text where bytes belong" in err, err
    assert "sealtrail audit" not in err  # which reads the same row: no way out
