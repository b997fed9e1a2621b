"""``sealtrail index`` and ``sealtrail audit``: the provenance index, rebuilt and checked
against the log."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sealtrail.config import CHALLENGE_KEY_FILE, Config, open_log_store
from sealtrail.errors import Error
from sealtrail.keys import Verifier
from sealtrail.log import LogReader
from sealtrail.note import NoteVerifier
from sealtrail.provenance import (
    POLICY_KEY,
    RULES_VERSION,
    ProvenanceLedger,
    ProvenancePolicy,
    audit_log,
    check_index_of_log,
    check_index_rules,
    service_signed,
)
from sealtrail.scitt import (
    ORG_RECORD_TYPE,
    Registry,
    StatementRows,
    key_id,
    parse_org_record,
    parse_statement,
)
from sealtrail.scitt._rows import refused_rows
from sealtrail.storage import (
    CLAIM_TTL,
    IndexStore,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    claim_holder,
)

from ._common import DEFAULT_DATA_DIR, DataDir, load, not_being_rebuilt, out, progress_bar
from .scitt import read_service_keys

__all__ = ["audit", "index_app"]

#: Refused statement rows ``index status`` names by number and entry id (any more are counted).
REFUSED_SHOWN = 20

index_app = typer.Typer(
    help="The provenance index: a database built only by applying the log's entries.",
    no_args_is_help=True,
)


def policy(config: Config) -> ProvenancePolicy:
    """The configured policy: what ``serve`` records as the service's when the log's
    differs (rebuilds and audits start from its :meth:`~ProvenancePolicy.initial` and take
    the rest from the log's policy records)."""
    return ProvenancePolicy(
        min_security_version=dict(config.min_security_version),
        max_attestation_age=config.max_attestation_age,
        require_challenge=config.require_challenge,
        challenge_ttl=config.challenge_ttl,
    )


def service_keys(config: Config, keys_file: str | None) -> dict[bytes, Verifier]:
    """The receipt keys organization records are checked with: a COSE key set file (as
    ``fetch-keys`` saves it), or the data directory's current and retired keys."""
    if keys_file is not None:  # read as submit, verify and passport verify read it
        return read_service_keys(Path(keys_file))
    verifiers = [*config.retired_verifiers(), config.service_signer().verifier()]
    return {key_id(v): v for v in verifiers}


def registry(
    store: MemoryStore | SQLiteStore | PostgresStore, issuer: str, keys: Mapping[bytes, Verifier]
) -> Registry:
    """The organizations, from the service-signed records in the store. A row that is
    not one (unreadable, another issuer's, a signature that does not verify) or a record
    that does not apply (a copy of an older version, written behind the service) is
    skipped, as the servers skip it: the audit names such rows."""
    found = Registry()
    skipped = 0
    for record in store.statements_of_type(ORG_RECORD_TYPE):
        try:
            statement = parse_statement(record.body, max_size=max(len(record.body), 1))
            verifier = keys.get(statement.kid or b"")
            if statement.issuer != issuer or verifier is None:
                continue
            statement.message.verify(verifier)
            found.apply(parse_org_record(statement.payload))
        except Error:
            skipped += 1
    if skipped:
        out.print(
            f"{skipped} organization record row(s) skipped: not a service record that applies "
            "(`sealtrail audit` names them)"
        )
    return found


def _reader(config: Config, store: MemoryStore | SQLiteStore | PostgresStore) -> LogReader:
    return LogReader(
        store, origin=config.origin, verifiers=[NoteVerifier.parse(config.verifier_key())]
    )


KeysOption = Annotated[
    str | None,
    typer.Option(
        "--service-keys",
        help="COSE key set of the service's receipt keys (default: the data directory's).",
    ),
]


@index_app.command("rebuild")
def rebuild(data_dir: DataDir = DEFAULT_DATA_DIR, keys_file: KeysOption = None) -> None:
    """Forget the index and build it again from the log, entry by entry.

    Refused while a server uses the index (the server keeps the index up with the log and
    answers from it): stop every `sealtrail serve` of it first. Servers refuse to start
    until the rebuild is done. The index is rebuilt with this release's provenance rules
    (and records their version): after an upgrade that changed them, servers refuse the
    old index until it is rebuilt.
    """
    config = load(data_dir)
    store = open_log_store(config)
    index = config.open_index()
    try:
        with _rebuild_claim(index) as renew:
            reader = _reader(config, store)
            size = reader.size()
            keys = service_keys(config, keys_file)
            found = registry(store, config.service_issuer, keys)
            ledger = ProvenanceLedger(
                index,
                statement=store.get_statement,
                org_of=found.name_of,
                policy=policy(config).initial(),
                content_types=store.content_types,
                service_record=service_signed(config.service_issuer, keys),
            )
            renew()  # a claim lost while the log was read empties nothing
            # Emptied and stamped with this release's rules in one transaction: a rebuild
            # cut short leaves a shorter index of these rules, which a server extends.
            index.reset(rules_version=RULES_VERSION)
            with progress_bar("Rebuilding the index", size) as bar:
                while index.applied_size() < size:
                    ledger.catch_up(reader, limit=1024)
                    bar.update(bar.task_ids[0], completed=index.applied_size())
                    renew()
            rows = sum(1 for _ in index.dump_rows())
        out.print(
            f"Index rebuilt from {size} log entries: {rows} rows "
            f"(provenance rules version {RULES_VERSION})."
        )
    finally:
        index.close()
        store.close()


@contextlib.contextmanager
def _rebuild_claim(index: IndexStore) -> Iterator[Callable[[], None]]:
    """A rebuild's exclusive claim on ``index``, renewed by a thread every third of its
    life while the rebuild works (one step may outlast a claim), and released afterwards.
    Yields a renewal to call between steps: it raises (``index-in-use``) if the claim was
    lost, so that the rebuild stops rather than write under a server."""
    holder = claim_holder("sealtrail index rebuild")
    index.claim(holder, exclusive=True, ttl=CLAIM_TTL)
    done = threading.Event()

    def keep() -> None:
        while not done.wait(CLAIM_TTL / 3):
            with contextlib.suppress(Error):  # lost or unreachable: the next renew() says
                index.claim(holder, exclusive=True, ttl=CLAIM_TTL)

    keeper = threading.Thread(target=keep, name="sealtrail-rebuild-claim", daemon=True)
    keeper.start()
    try:
        yield lambda: index.claim(holder, exclusive=True, ttl=CLAIM_TTL)
    finally:
        done.set()
        keeper.join()
        with contextlib.suppress(Error):  # a claim not released lapses by itself
            index.release(holder)


@index_app.command("status")
def status(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """How far the index has applied the log, the provenance rules it was built with, who
    uses it (servers, a rebuild), and the statement rows the sequencer refuses.

    A refused row is one no server of this deployment stored (its authentication tag does
    not verify under keys/challenge.key) and whose entry is not in the log: never appended,
    so never indexed. They are counted, and the first 20 named by number and entry id
    (`sealtrail audit` names them all). Every row of the statement store is read (not the
    bodies); without keys/challenge.key they are not checked, and the line says so.
    """
    config = load(data_dir)
    store = open_log_store(config)
    index = config.open_index()
    try:
        reader = _reader(config, store)
        check_index_of_log(index, reader, rules=False)  # shown below, not refused
        size = reader.size()
        applied = index.applied_size()
        state = "up to date" if applied == size else f"{size - applied} entries behind"
        out.print(f"log size {size}, index applied {applied}: {state}")
        out.print(escape(_rules_status(index)))
        out.print(escape(_policy_status(index, applied)))
        claims = index.claims()
        for holder, exclusive, _ in claims:
            out.print(f"{'being rebuilt' if exclusive else 'in use'} by {escape(holder)}")
        if not claims:
            out.print("no server uses it")
        for line in _refused_status(config, store, reader):
            out.print(escape(line))
    finally:
        index.close()
        store.close()


def _refused_status(
    config: Config, store: MemoryStore | SQLiteStore | PostgresStore, reader: LogReader
) -> list[str]:
    """The lines of ``index status`` on the statement rows the sequencer refuses
    (:func:`~sealtrail.scitt._rows.refused_rows`): their count, and the first
    :data:`REFUSED_SHOWN` by number and entry id (never a row's content or tag)."""
    try:
        key = config.challenge_key()
    except Error as exc:
        key, why = None, f"{CHALLENGE_KEY_FILE} cannot be read: {exc}"
    else:
        why = f"no {CHALLENGE_KEY_FILE} in the data directory: an auditor's copy?"
    if key is None:
        return [
            f"statement rows refused by the sequencer: not checked ({why}); run this on a "
            "server's host to check their tags"
        ]
    rows = StatementRows(key)
    recorded = store.recorded_row_key_check()
    if recorded is not None and recorded != rows.check:
        # Every row would look forged under another key: say so, and name none.
        return [
            f"statement rows refused by the sequencer: not checked ({CHALLENGE_KEY_FILE} is "
            "not the key the store's rows are tagged under; see `sealtrail keys "
            "challenge-key`)"
        ]
    count = 0
    shown: list[str] = []
    for row, problem in refused_rows(store, rows, reader):
        count += 1
        if len(shown) < REFUSED_SHOWN:
            entry = f"entry id {row.entry_id.hex()[:16]}…" if row.readable else "unreadable"
            shown.append(f"  statement row {row.seq} ({entry}): {problem}")
    if not count:
        return ["statement rows refused by the sequencer: none"]
    lines = [
        f"statement rows refused by the sequencer: {count} (not in the log and never "
        "appended: written or edited behind the service; `sealtrail audit` names them)",
        *shown,
    ]
    if count > len(shown):
        lines.append(f"  and {count - len(shown)} more")
    return lines


def _policy_status(index: IndexStore, applied: int) -> str:
    """The line of ``index status`` on the provenance policy in force: the latest policy
    record the index applied, or the defaults before the log holds one."""
    raw = index.row("policy", POLICY_KEY) if applied else None
    if raw is None:
        default = ProvenancePolicy()
        return (
            f"provenance policy: the defaults (max attestation age "
            f"{default.max_attestation_age} s, no minimum security versions); no policy "
            "record in the log"
        )
    row = json.loads(raw)
    floors = ", ".join(f"{c} {v}" for c, v in sorted(row["min_security_version"].items()))
    return (
        f"provenance policy version {row['version']}: max attestation age "
        f"{row['max_attestation_age']} s, minimum security versions "
        f"{floors or 'none'} (entry {row['entry'][:16]}…)"
    )


def _rules_status(index: IndexStore) -> str:
    """The line of ``index status`` on the provenance rules: the index's version and this
    release's, and what to do when they differ."""
    recorded = index.rules_version()
    built = "none recorded" if recorded is None else str(recorded)
    line = f"provenance rules version {built}, this Sealtrail's {RULES_VERSION}"
    try:
        check_index_rules(index)
    except Error as exc:
        return f"{line}: refused by servers ({exc.code}). {exc.hint}"
    if recorded != RULES_VERSION:  # empty
        return f"{line}: empty, the first entry indexed records {RULES_VERSION}"
    return f"{line}: current"


def audit(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    keys_file: KeysOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Check the log and statements only.")
    ] = False,
) -> None:
    """Replay the log from entry 0 and compare the provenance index with it.

    Verifies the tree against the signed checkpoint, every statement's signature, chain
    and rules, rebuilds the state in memory and names every index row that differs, and
    every stored statement row outside the log whose authentication tag does not verify
    (with the data directory's keys/challenge.key). Exit status 1 when anything is found.
    """
    config = load(data_dir)
    challenge_key = config.challenge_key()
    store = open_log_store(config)
    index: IndexStore | None = None if no_index else config.open_index()
    try:
        if index is not None:
            not_being_rebuilt(index, "the audit (or `audit --no-index`, which reads no index)")
        reader = _reader(config, store)
        size = reader.size()
        with progress_bar("Auditing: tree, then statements", 2 * size) as bar:

            def step(stage: str, done: int, _total: int) -> None:
                bar.update(bar.task_ids[0], completed=done + (size if stage != "tree" else 0))

            report = audit_log(
                reader,
                store.get_statement,
                index,
                issuer=config.service_issuer,
                service_keys=service_keys(config, keys_file),
                policy=policy(config).initial(),
                progress=step,
                stored_rows=lambda seq, limit: store.backlog_since(seq, limit=limit),
                statement_rows=None if challenge_key is None else StatementRows(challenge_key),
            )
    finally:
        if index is not None:
            index.close()
        store.close()
    size = 0 if report.checkpoint is None else report.checkpoint.size
    if as_json:
        doc = {
            "ok": report.ok,
            "size": size,
            "entries": report.entries,
            "statements_verified": report.statements_verified,
            "applied": report.applied,
            "refused": report.refused,
            "rows": report.rows,
            "statements_outside_log": report.outside,
            "statement_tags_checked": report.tags_checked,
            "index_compared": not no_index,
            "findings": [{"where": f.where, "what": f.what} for f in report.findings],
        }
        out.print_json(json.dumps(doc))
    else:
        out.print(
            f"Audited {report.entries} entries (checkpoint size {size}): "
            f"{report.statements_verified} statements verified, {report.applied} provenance "
            f"facts applied, {report.refused} refused by the rules, {report.rows} rows."
        )
        if report.outside and not report.tags_checked:
            out.print(
                f"{report.outside} stored statements are not in the log; their tags were "
                f"not checked (no {CHALLENGE_KEY_FILE}: an auditor's copy?)."
            )
        for finding in report.findings:
            # Escaped: a finding quotes what the index holds, which may look like markup.
            out.print(f"[red]FOUND[/red] {escape(str(finding))}", markup=True, highlight=False)
        if report.ok and no_index:
            # Nothing was read of the index: say what was checked, and only that.
            out.print(
                "[green]OK[/green]: the log matches its signed checkpoint and every statement "
                "passes registration's checks again; the index was not read (--no-index)."
            )
        elif report.ok:
            out.print("[green]OK[/green]: the index is exactly what the log gives.")
    if not report.ok:
        raise typer.Exit(1)
