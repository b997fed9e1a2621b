"""An insider with direct access to the PostgreSQL database edits what a real server wrote:
a byte of a statement, a tile, the checkpoint row, the index, the backlog. Each edit is
named by `sealtrail log verify`, `sealtrail audit`, or a client holding an earlier
checkpoint, in one line and without a traceback.

One data directory's log (a server's journey to production, over HTTP) is built once; each
test works on a copy of its tables in a schema of its own and a copy of the directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from sealtrail.config import load_config
from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, LogReader, Sequencer
from sealtrail.storage import PostgresIndex, PostgresStore
from tests._serve_proc import COSE, bearer, serve_process, served
from tests.conftest import PostgresSchemas, postgres_server
from tests.integration.test_cli import sealtrail
from tests.integration.test_cli_provenance import issuer_of, onboard_all
from tests.unit.provenance._signed import journey, make_issuers, sign_fact
from tests.unit.provenance._world import OPERATOR, World

pytestmark = pytest.mark.postgres

ORIGIN = "tamper.test/log"
#: Facts registered before the checkpoint a client keeps (the rollback's target).
EARLY = 5


@dataclass(frozen=True)
class Log:
    """The data directory ``root / "d"`` and its store's URL; ``early`` a checkpoint the
    server published on the way, ``final`` its last."""

    root: Path
    url: str
    early: bytes
    final: bytes


def _schema(url: str) -> str:
    return url.rsplit("sealtrail-test-", 1)[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    server, why = postgres_server()
    if server is None:
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    schemas = PostgresSchemas(server)
    try:
        url = schemas.new_url()
        root = tmp_path_factory.mktemp("pg-tamper")
        init = sealtrail("init", "-d", "d", "--origin", ORIGIN, "--store", url, cwd=root)
        assert init.returncode == 0, init.stderr
        token = init.stderr.strip().splitlines()[-1].strip()
        issuers, world = make_issuers(), World()
        early = b""
        with served(root) as base:
            tokens = onboard_all(base, token, issuers)
            nonces = issuer_of(base, tokens[OPERATOR])
            facts = journey(world, "srv-1", "ship-1", challenge=nonces)
            for n, (org, payload) in enumerate(facts, 1):
                r = httpx.post(
                    base + "/entries",
                    content=sign_fact(issuers, org, payload),
                    headers={**COSE, **bearer(tokens[org])},
                )
                assert r.status_code == 201, r.text
                if n == EARLY:
                    early = httpx.get(base + "/checkpoint").content
            final = httpx.get(base + "/checkpoint").content
        yield Log(root, url, early, final)
    finally:
        schemas.drop_all()


@pytest.fixture
def log(built: Log, postgres_url: str, tmp_path: Path) -> Log:
    """A copy of the built log: its tables in the fresh schema of ``postgres_url``, its data
    directory under ``tmp_path`` pointing there."""
    source = _schema(built.url)
    PostgresStore(postgres_url).close()  # the tables, as the code makes them
    PostgresIndex(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name <> 'sealtrail_schema'",
            (source,),
        ).fetchall()
        for (table,) in tables:
            conn.execute(f"DELETE FROM {table}")
            conn.execute(f"INSERT INTO {table} SELECT * FROM {source}.{table}")
    # An auditor's copy: the configuration and keys, not what a server of the directory
    # remembered of the log (its last checkpoint), so that each check here is the store's.
    shutil.copytree(
        built.root / "d", tmp_path / "d", ignore=shutil.ignore_patterns("seen-checkpoint")
    )
    config = tmp_path / "d" / "sealtrail.toml"
    config.write_text(config.read_text().replace(json.dumps(built.url), json.dumps(postgres_url)))
    return Log(tmp_path, postgres_url, built.early, built.final)


def _sql(log: Log, *statements: str, params: tuple[object, ...] | None = None) -> None:
    """The insider's statements, as they would type them (``%`` is a placeholder only
    with ``params``)."""
    with psycopg.connect(log.url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode(), params)


def _run(log: Log, *args: str) -> tuple[int, str]:
    """A command on the copy: its status and its output and errors, which hold no traceback."""
    result = sealtrail(*args, "-d", "d", cwd=log.root)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def test_the_copy_verifies_and_audits_clean(log: Log) -> None:
    status, output = _run(log, "log", "verify")
    assert status == 0 and "OK: 25 entries" in output, output
    status, output = _run(log, "audit")
    assert status == 0 and "the index is exactly what the log gives" in output, output


# -- the log's tables: `log verify` and `audit` both refuse -------------------------------


@pytest.mark.parametrize(
    ("statements", "said"),
    [
        pytest.param(
            [
                "UPDATE log_entry_bundles SET data = overlay(data placing '\\x41'::bytea"
                " from 10 for 1) WHERE start = 5"
            ],
            "tile 0/0 position 5 does not match the entries",
            id="a byte of an entry bundle",
        ),
        pytest.param(
            [
                "UPDATE log_tile_parts SET data = overlay(data placing '\\x41'::bytea"
                " from 10 for 1) WHERE level = 0 AND start = 7"
            ],
            "tile 0/0 position 7 does not match the entries",
            id="a byte of a hash tile",
        ),
        pytest.param(
            ["DELETE FROM log_entry_bundles WHERE start = 24"],
            "entry bundle 0 is missing positions 24..24 the checkpoint covers",
            id="the last entry deleted",
        ),
        pytest.param(
            [
                "DELETE FROM log_entry_bundles WHERE start = 7",
                "DELETE FROM log_tile_parts WHERE start = 7",
            ],
            "entry bundle 0: part at position 8, expected 7",
            id="an entry deleted with its leaf hash",
        ),
        pytest.param(
            ["TRUNCATE log_tile_parts"],
            "tile 0/0 is missing positions 0..24 the checkpoint covers",
            id="the hash tiles truncated",
        ),
        pytest.param(
            [
                "UPDATE log_entry_bundles b SET data = o.data FROM log_entry_bundles o"
                " WHERE (b.start, o.start) IN ((3, 4), (4, 3))",
                "UPDATE log_tile_parts t SET data = o.data FROM log_tile_parts o"
                " WHERE t.level = 0 AND o.level = 0 AND (t.start, o.start) IN ((3, 4), (4, 3))",
            ],
            "the entries do not hash to the signed checkpoint's root",
            id="two entries swapped with their leaf hashes",
        ),
        pytest.param(
            ["UPDATE log_checkpoint SET size = size - 1"],
            "stored size 24 disagrees with the signed checkpoint (25)",
            id="the checkpoint's size",
        ),
        pytest.param(
            ["UPDATE log_checkpoint SET indexed = size"],
            "the leaf index does not hold entry 0, below its watermark 25",
            id="the leaf-index watermark raised",
        ),
        pytest.param(
            ["UPDATE log_checkpoint SET note = NULL, size = 0, indexed = 0"],
            "but no checkpoint: its checkpoint was removed",
            id="the checkpoint deleted",
        ),
    ],
)
def test_an_edit_of_the_log_is_refused_by_verify_and_the_audit(
    log: Log, statements: list[str], said: str
) -> None:
    _sql(log, *statements)
    for command in (("log", "verify"), ("audit",)):
        status, output = _run(log, *command)
        assert status == 1, output
        assert said in output, output
        assert "(corruption)" in output or "(store-log-missing)" in output, output
        if command == ("audit",) and "FOUND log:" in output:
            # The checkpoint the tree failed against, not "size 0".
            assert "Audited 0 entries (checkpoint size 25)" in output, output


def test_a_checkpoint_edited_or_signed_by_another_key_is_refused(log: Log) -> None:
    """A byte of the signed checkpoint (the data directory's signature on it no longer
    verifies), or a checkpoint of this origin under another key."""
    note = log.final.replace(b"\n25\n", b"\n26\n")
    forged = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()).sign(
        size=25, root=bytes(32)
    )
    for checkpoint, said in (
        (note, "does not verify: the checkpoint was edited"),
        (forged.note, "signed by another key"),
    ):
        _sql(log, "UPDATE log_checkpoint SET note = %s", params=(checkpoint,))
        for command in (("log", "verify"), ("audit",), ("log", "checkpoint")):
            status, output = _run(log, *command)
            assert status == 1, output
            assert "(store-log-foreign)" in output and said in output, output


def test_a_rollback_to_an_earlier_signed_checkpoint_is_caught_by_the_index_and_clients(
    log: Log,
) -> None:
    """The checkpoint row set back to one the server published earlier: a log of its own
    that verifies (an older log is a good log), but the index holds entries the log no
    longer does, and a client holding the later checkpoint gets no consistency proof."""
    early_size = int(log.early.split(b"\n")[1])
    _sql(
        log,
        "UPDATE log_checkpoint SET size = %s, note = %s, indexed = 0",
        params=(early_size, log.early),
    )
    status, output = _run(log, "log", "verify")
    assert status == 0 and f"OK: {early_size} entries" in output, output
    status, output = _run(log, "audit")
    assert status == 1
    assert (
        f"index: has applied 25 entries, but the log holds {early_size}: the log was rolled "
        "back" in output
    ), output
    status, output = _run(log, "log", "proof", "consistency", "--from", "25")
    assert status == 1
    assert f"(not-found): size 25 is not at most {early_size}" in output, output
    # The data directory as its server left it: the newest checkpoint it saw tells.
    _keep_seen(log)
    for command in (("log", "verify"), ("audit",), ("serve", "--port", "0")):
        status, output = _run(log, *command)
        assert status == 1 and "(store-log-rolled-back)" in output, output


def test_a_fork_signed_with_the_log_key_fails_a_client_holding_a_checkpoint(log: Log) -> None:
    """An insider holding the log's key writes another history from scratch, one entry
    different: it verifies on its own (that is what the key is trusted for), and a client
    that kept the checkpoint of size 25 finds the fork with a consistency proof."""
    (log.root / "kept.checkpoint").write_bytes(log.final)
    signer = load_config(log.root / "d").checkpoint_signer()
    store = PostgresStore(log.url)
    try:
        entries = LogReader(store, origin=ORIGIN, verifiers=[signer.verifier]).entries(0, 25)
    finally:
        store.close()
    entries[3] = b"\x00" * 32
    _sql(
        log,
        "TRUNCATE log_tile_parts, log_entry_bundles",
        "UPDATE log_checkpoint SET size = 0, note = NULL, indexed = 0",
    )

    async def rewrite() -> None:
        store = PostgresStore(log.url)
        try:
            async with Sequencer(store, signer=signer) as sequencer:
                await sequencer.add_many([*entries, b"\x01" * 32])
        finally:
            store.close()

    asyncio.run(rewrite())
    status, output = _run(log, "log", "verify")
    assert status == 0 and "OK: 26 entries" in output, output
    proof = sealtrail("log", "proof", "consistency", "--from", "25", "-d", "d", cwd=log.root)
    assert proof.returncode == 0, proof.stderr
    (log.root / "proof.json").write_text(proof.stdout)
    result = sealtrail(
        "log", "verify-proof", "proof.json", "--vkey", "d/log.vkey",
        "--old-checkpoint", "kept.checkpoint", cwd=log.root,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "(invalid-proof)" in result.stderr, result.stderr
    # The data directory as its server left it refuses the fork before anything is served.
    _keep_seen(log)
    status, output = _run(log, "serve", "--port", "0")
    assert status == 1 and "(store-log-forked)" in output, output


def _keep_seen(log: Log) -> None:
    """The newest checkpoint the built log's server saw, in the copy's data directory."""
    (log.root / "d" / "seen-checkpoint").write_bytes(log.final)


# -- the statements: the audit ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "findings"),
    [
        pytest.param(
            [
                "UPDATE statements SET body = overlay(body placing '\\x41'::bytea from 100"
                " for 1) WHERE content_type LIKE '%device-manifest%'"
            ],
            ["FOUND entry 13: the stored statement does not hash to the log's entry"],
            id="a byte of a statement",
        ),
        pytest.param(
            [
                "UPDATE statements s SET body = o.body FROM statements o"
                " WHERE (s.seq, o.seq) IN ((2, 3), (3, 2))"
            ],
            [
                "FOUND entry 1: the stored statement does not hash to the log's entry",
                "FOUND entry 2: the stored statement does not hash to the log's entry",
            ],
            id="two statements swapped",
        ),
        pytest.param(
            [
                "UPDATE statements SET content_type = 'text/plain'"
                " WHERE content_type LIKE '%device-manifest%'",
                "UPDATE statements SET subject = 'org:other' WHERE subject = 'org:maker'",
            ],
            [
                "FOUND entry 0: the statement store's subject edited behind the log: holds "
                "'org:other', the statement says 'org:maker'",
                "FOUND entry 13: the statement store's content_type edited behind the log: "
                "holds 'text/plain', the statement says "
                "'application/vnd.sealtrail.device-manifest.v1+json'",
            ],
            id="a statement's columns",
        ),
        pytest.param(
            ["DELETE FROM statements WHERE seq = 5"],
            ["FOUND entry 4: its statement is missing from the statement store"],
            id="a statement deleted",
        ),
    ],
)
def test_an_edit_of_the_statements_is_named_by_the_audit(
    log: Log, statements: list[str], findings: list[str]
) -> None:
    """`log verify` checks the tree, which holds only the statements' hashes; the audit
    reads each statement back."""
    _sql(log, *statements)
    status, output = _run(log, "log", "verify")
    assert status == 0, output
    status, output = _run(log, "audit")
    assert status == 1
    for finding in findings:
        assert finding in output, output


def test_statements_slipped_into_the_backlog_are_refused_and_named_by_the_audit(
    log: Log,
) -> None:
    """The servers append what the statements table holds above the sequenced mark, but
    only the rows whose authentication tag verifies (keyed by keys/challenge.key, which the
    insider does not have). Rows inserted there behind the service — garbage, and a
    registered device manifest with a byte of its payload changed, copied with the
    original's columns and tag — reach neither the log nor the index: the server logs each
    once, a registration stored after them is sequenced all the same, and the audit names
    them."""
    forged = b"not a signed statement"
    _sql(
        log,
        "INSERT INTO statements SELECT max(seq) + 1, sha256(%s), %s, 'https://maker.example/"
        "signing', 'x', 'application/vnd.sealtrail.device-manifest.v1+json', 0 FROM statements",
        params=(forged, forged),
    )
    _sql(
        log,
        "INSERT INTO statements SELECT (SELECT max(seq) FROM statements) + 1, sha256(b), b,"
        " issuer, subject, content_type, registered_at, tag FROM (SELECT overlay(body"
        " placing '\\x41'::bytea from 200 for 1) AS b, * FROM statements"
        " WHERE content_type LIKE '%%device-manifest%%' ORDER BY seq LIMIT 1) AS s",
        params=(),
    )
    with psycopg.connect(log.url, autocommit=True) as conn:
        rows = conn.execute("SELECT seq, entry_id FROM statements ORDER BY seq").fetchall()
    (junk_seq, junk), (copy_seq, copy) = rows[-2:]
    # A setting changed: the server registers the new policy as it starts, stored after
    # the forged rows.
    config = log.root / "d" / "sealtrail.toml"
    text = config.read_text()
    assert "max_attestation_age = 86400\n" in text
    config.write_text(
        text.replace("max_attestation_age = 86400\n", "max_attestation_age = 86401\n")
    )
    with serve_process(log.root) as (base, proc):
        deadline = time.monotonic() + 30
        while int(httpx.get(base + "/checkpoint").content.split(b"\n")[1]) < 26:
            assert time.monotonic() < deadline, "the policy record was not sequenced"
            time.sleep(0.05)
        time.sleep(0.5)  # the feeder polls on: nothing more is appended
        assert int(httpx.get(base + "/checkpoint").content.split(b"\n")[1]) == 26
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
    for seq, entry in ((junk_seq, junk), (copy_seq, copy)):
        refused = f"statement row seq {seq} (entry {bytes(entry).hex()[:16]}…) refused"
        assert stderr.count(refused) == 1, stderr
    assert forged.decode() not in stderr
    with psycopg.connect(log.url, autocommit=True) as conn:
        indexed = conn.execute("SELECT entry_id FROM idx_entries").fetchall()
    assert len(indexed) == 26
    assert not {bytes(junk), bytes(copy)} & {bytes(e) for (e,) in indexed}
    status, output = _run(log, "log", "verify")
    assert status == 0 and "OK: 26 entries" in output, output
    status, output = _run(log, "audit")
    assert status == 1
    found = [line for line in output.splitlines() if line.startswith("FOUND")]
    assert found == [
        f"FOUND statement row {junk_seq}: entry id {bytes(junk).hex()[:16]}… is not in the "
        "log, and it carries no authentication tag: written or edited behind the service "
        "(servers refuse to append it)",
        f"FOUND statement row {copy_seq}: entry id {bytes(copy).hex()[:16]}… is not in the "
        "log, and its authentication tag does not verify: written or edited behind the "
        "service (servers refuse to append it)",
    ], output


# -- the provenance index: the audit -------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "finding"),
    [
        pytest.param(
            [
                "UPDATE idx_rows SET value = convert_to(replace(convert_from(value, 'UTF8'),"
                " 'production', 'verified'), 'UTF8') WHERE tbl = convert_to('compliance', 'UTF8')"
            ],
            "FOUND row compliance/srv-1: edited behind the log",
            id="a row edited",
        ),
        pytest.param(
            ["DELETE FROM idx_rows WHERE tbl = convert_to('shipment', 'UTF8')"],
            "FOUND row shipment/ship-1: deleted behind the log",
            id="a row deleted",
        ),
        pytest.param(
            [
                "INSERT INTO idx_rows VALUES (convert_to('device', 'UTF8'), "
                "convert_to('ab', 'UTF8'), convert_to('{\"serial\":\"rogue\"}', 'UTF8'))"
            ],
            'FOUND row device/ab: inserted behind the log: {"serial":"rogue"}',
            id="a row inserted",
        ),
        pytest.param(
            ["DELETE FROM idx_changes WHERE idx = 24"],
            "FOUND change 24/0: deleted behind the log",
            id="a change deleted",
        ),
        pytest.param(
            ["UPDATE idx_entries SET outcome = 'refused', code = 'x'::bytea WHERE idx = 20"],
            "FOUND entry 20: edited behind the log: outcome refused where the log gives "
            "applied; code x where the log gives nothing",
            id="an entry's verdict",
        ),
        pytest.param(
            ["INSERT INTO idx_subjects VALUES (convert_to('node:srv-9', 'UTF8'), 20)"],
            "FOUND entry 20: edited behind the log: subjects node:srv-1, node:srv-9, "
            "shipment:ship-1 where the log gives node:srv-1, shipment:ship-1",
            id="a subject added to an entry",
        ),
    ],
)
def test_an_edit_of_the_index_is_named_by_the_audit(
    log: Log, statements: list[str], finding: str
) -> None:
    _sql(log, *statements)
    status, output = _run(log, "audit")
    assert status == 1
    assert finding in output, output
