"""``sealtrail audit``: replay the log from entry 0 and compare the index with what it gives.

The audit trusts nothing the service wrote except the log's signed checkpoint and the
service's public keys:

1. the tree: every entry rehashed, every tile checked, the root against the signed
   checkpoint (:meth:`~sealtrail.log.LogReader.audit`);
2. every entry's statement: present in the statement store, hashing to the entry, and
   passing registration's checks again — organization records signed by a service key
   and applied in log order (user and grant records, which say who may call what and
   state no provenance fact, and receipt key sets: signed by a service key, well-formed,
   user versions in sequence, a key set signed by its current key), then each
   statement's issuer, policy, key (its chain validated at the statement's ``iat``) and
   signature, and the provenance rules;
3. the provenance state, rebuilt in memory by applying the entries in order;
4. the index database, compared row by row, change by change and entry by entry with the
   rebuilt state: every row edited, deleted or inserted behind the log's back is named.
   A stored text that is not UTF-8 is named as such, as an edit of its row, and the rest
   compared all the same (the index's dumps mark it, ``mark_damaged``); a value the index
   cannot read at all (SQLite keeps any type it is given) ends the comparison of its table
   as one finding, and the other tables are compared.
   An index built with other rules than this release's (:data:`RULES_VERSION`) is one
   finding, not compared: its rows differ wherever the rules changed, and each difference
   would read as an edit. Steps 1 to 3 check the log all the same.
5. with the statement store's rows and the deployment's statement-row key, every stored
   row that is not in the log: one whose authentication tag does not verify (written or
   edited behind the service, which the servers refuse to append) is named. Rows in the
   log are judged by step 2 (a tag there would only say which key stored them).

Findings are reported, not raised: an audit lists everything it finds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sealtrail.errors import Corruption, Error
from sealtrail.keys import Verifier
from sealtrail.log import LogReader, SignedCheckpoint
from sealtrail.scitt import (
    GRANT_RECORD_TYPE,
    KEYS_RECORD_TYPE,
    ORG_RECORD_TYPE,
    USER_RECORD_TYPE,
    ChainValidator,
    Grant,
    Registry,
    SignedStatement,
    StatementRows,
    Users,
    edited_columns,
    issuer_key,
    load_certificates,
    parse_grant_record,
    parse_keys_record,
    parse_org_record,
    parse_statement,
    parse_user_record,
)
from sealtrail.storage import BacklogRow, IndexedEntry, IndexStore, StatementRecord

from ._devicechain import DeviceChainValidator
from ._kinds import KINDS
from ._ledger import indexed_entry, policy_fact, screen
from ._payloads import PolicyChange
from ._state import RULES_VERSION, Fact, MemoryRows, Outcome, ProvenancePolicy, ProvenanceState

__all__ = ["AuditReport", "Finding", "audit_log"]

#: Entries read from the log per step.
AUDIT_STEP = 1024
#: Statement rows (without their bodies) read from the store per step.
ROWS_STEP = 8192
#: Below every store ``seq`` (an edit may have made one negative).
_MIN_SEQ = -(1 << 63)
#: Characters of a row value quoted in a finding.
QUOTE = 120

Progress = Callable[[str, int, int], None]

#: The service's own records (signed by a service key): organizations, who may call what
#: (docs/auth.md: users and their tokens, shared statements), the receipt keys, and the
#: provenance policy (the one that is a provenance fact).
_SERVICE_RECORDS = frozenset(
    {
        ORG_RECORD_TYPE,
        USER_RECORD_TYPE,
        GRANT_RECORD_TYPE,
        KEYS_RECORD_TYPE,
        PolicyChange.CONTENT_TYPE,
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the audit found wrong: where (an entry, a row) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class AuditReport:
    """What an audit checked and found."""

    checkpoint: SignedCheckpoint | None
    entries: int = 0
    statements_verified: int = 0
    applied: int = 0
    refused: int = 0
    rows: int = 0
    #: Statement rows stored but not in the log (None: the store's rows were not read).
    outside: int | None = None
    #: Whether the tags of those rows were checked (the statement-row key was given).
    tags_checked: bool = False
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _quote(value: str | None) -> str:
    if value is None:
        return "nothing"
    text = value if len(value) <= QUOTE else value[:QUOTE] + "…"
    if _is_text(value):
        return text
    return f"{_printable(text)} (bytes that are not UTF-8 text)"


def _is_text(value: str) -> bool:
    """Whether ``value`` is text the index can hold: not one read with lone surrogates
    standing for the bytes of a stored value that is not UTF-8 (``mark_damaged``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(value: str) -> str:
    """``value`` with the bytes that lone surrogates stand for written as ``\\xNN``."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class _Replay:
    """The log's statements checked again and applied in order."""

    def __init__(
        self,
        *,
        issuer: str,
        service_keys: Mapping[bytes, Verifier],
        policy: ProvenancePolicy,
        statement: Callable[[bytes], StatementRecord | None],
    ) -> None:
        self.issuer = issuer
        self.service_keys = service_keys
        self.statement = statement
        self.service_marks: set[bytes] = set()
        self.registry = Registry()
        self.users = Users()
        self.validator = ChainValidator()
        self.devices = DeviceChainValidator()
        self.rows = MemoryRows()
        self.state = ProvenanceState(self.rows, policy=policy)

    def entry(
        self, index: int, leaf: bytes, record: StatementRecord | None
    ) -> tuple[IndexedEntry, Outcome, Finding | None]:
        """Check and apply one entry: its expected index verdict, and a finding if any."""
        if record is None:
            return (
                indexed_entry(index, leaf, "", None, Outcome()),
                Outcome(),
                Finding(f"entry {index}", "its statement is missing from the statement store"),
            )
        if hashlib.sha256(record.body).digest() != leaf:
            return (
                indexed_entry(index, leaf, "", None, Outcome()),
                Outcome(),
                Finding(f"entry {index}", "the stored statement does not hash to the log's entry"),
            )
        try:
            statement = parse_statement(record.body, max_size=len(record.body))
            content_type = str(statement.content_type)
            edited = _edited_columns(index, record, statement)
            if statement.issuer == self.issuer and content_type in _SERVICE_RECORDS:
                entry, outcome = self._service_record(index, leaf, content_type, statement)
                return entry, outcome, edited
            if content_type == PolicyChange.CONTENT_TYPE:
                raise Error(  # only the service records its policy, as registration says
                    "a policy record from an issuer that is not the service",
                    code="policy-record-reserved",
                )
            org = self.registry.for_issuer(statement.issuer)
            org.policy.check(
                content_type=content_type,
                subject=statement.subject,
                alg=statement.alg,
                size=len(record.body),
            )
            statement.message.verify(
                issuer_key(statement, org, self.validator, now=_checked_at(statement))
            )
            kind = KINDS.get(content_type)
            if kind is None:
                return indexed_entry(index, leaf, "", None, Outcome()), Outcome(), edited
            payload = screen(statement, org, kind, self.devices)
        except Error as exc:
            finding = Finding(
                f"entry {index}",
                f"registration would refuse its statement: {exc} ({exc.code})",
            )
            return indexed_entry(index, leaf, "", None, Outcome()), Outcome(), finding
        fact = Fact(leaf, org.name, statement.issued_at or 0, payload)
        outcome = self.state.apply(fact)
        return indexed_entry(index, leaf, kind.name, fact, outcome), outcome, edited

    def _service_record(
        self, index: int, leaf: bytes, content_type: str, statement: SignedStatement
    ) -> tuple[IndexedEntry, Outcome]:
        """A record the service signed: organizations are applied to the registry the
        statements after them are checked against; users are folded too (each version
        one more than the last, a certificate one user's); a receipt key set must be signed
        by the key it names as current; grants are only read; a policy record is applied
        to the provenance state, as the index does."""
        self._service_signed(statement)
        if content_type == PolicyChange.CONTENT_TYPE:
            fact = policy_fact(statement)
            outcome = self.state.apply(fact)
            return indexed_entry(index, leaf, PolicyChange.KIND, fact, outcome), outcome
        if content_type == ORG_RECORD_TYPE:
            self.registry.apply(parse_org_record(statement.payload))
        elif content_type == USER_RECORD_TYPE:
            self.users.apply(parse_user_record(statement.payload))
        elif content_type == KEYS_RECORD_TYPE:
            if parse_keys_record(statement.payload).current != statement.kid:
                raise Error(
                    "a receipt key set record not signed by the key it names as current",
                    code="keys-record-untrusted",
                )
        else:
            self._grant(parse_grant_record(statement.payload))
        return indexed_entry(index, leaf, "", None, Outcome()), Outcome()

    def _service_signed(self, statement: SignedStatement) -> None:
        """Signed by one of the service's keys, and not a re-encoded copy of a record."""
        verifier = self.service_keys.get(statement.kid or b"")
        if verifier is None:
            raise Error("signed by a key that is not a service key", code="org-record-untrusted")
        statement.message.verify(verifier)
        mark = statement.message.signing_mark
        if mark in self.service_marks:
            raise Error(
                "an earlier service record again, under a re-encoded signature: a copy the "
                "service never made",
                code="service-record-replayed",
            )
        self.service_marks.add(mark)

    def _grant(self, grant: Grant) -> None:
        """A grant is made by an administrator or by a user of the statement's organization
        (as the service allows), of a statement it has: checked by what the log says of
        both, not by the statement store's columns."""
        record = self.statement(grant.entry)
        if record is None or hashlib.sha256(record.body).digest() != grant.entry:
            raise Error("a grant of a statement the store does not hold", code="grant-unknown")
        owner = self.registry.name_of(parse_statement(record.body).issuer)
        user = self.users.get(grant.by)
        if grant.by != "admin" and (
            user is None or (user.persona != "admin" and (user.org is None or user.org != owner))
        ):
            raise Error(
                f"a grant by {grant.by!r}, neither an administrator nor a user of the "
                f"statement's organization ({owner or 'none'})",
                code="grant-forbidden",
            )


def _checked_at(statement: SignedStatement) -> dt.datetime:
    """When to check a statement's chain: at its ``iat``, as registration did too. One
    without ``iat`` (optional outside the provenance kinds) was checked at the moment of
    its registration, which the log does not record: it is checked at the first moment
    its whole chain was valid, so that everything but the moment is checked."""
    if statement.issued_at is not None or not statement.x5chain:
        return dt.datetime.fromtimestamp(statement.issued_at or 0, dt.UTC)
    try:
        return max(load_certificates(der)[0].not_valid_before_utc for der in statement.x5chain)
    except Error:  # not certificates: the validation that follows says so
        return dt.datetime.fromtimestamp(0, dt.UTC)


def _edited_columns(
    index: int, record: StatementRecord, statement: SignedStatement
) -> Finding | None:
    """A finding naming the columns of a stored statement that disagree with its body, if
    any. Registration fills them from the statement; the service reads them instead of the
    body (the kinds the indexer applies, the records it folds at start), so an edit misleads
    it with no byte of the log or of the statement changed."""
    columns = edited_columns(record, statement)
    if not columns:
        return None
    return Finding(
        f"entry {index}",
        f"the statement store's {', '.join(columns)} edited behind the log: "
        + "; ".join(
            f"holds {held!r}, the statement says {said!r}" for held, said in columns.values()
        ),
    )


def audit_log(
    reader: LogReader,
    statement: Callable[[bytes], StatementRecord | None],
    index: IndexStore | None,
    *,
    issuer: str,
    service_keys: Mapping[bytes, Verifier],
    policy: ProvenancePolicy | None = None,
    progress: Progress | None = None,
    stored_rows: Callable[[int, int], Sequence[BacklogRow]] | None = None,
    statement_rows: StatementRows | None = None,
) -> AuditReport:
    """Audit the log and, if given, the provenance index against it (see the module docs).

    ``stored_rows(seq, limit)`` reads the statement store's rows above ``seq``
    (``StatementStore.backlog_since``): with it, the rows that are not in the log are
    counted, and with ``statement_rows`` (the deployment's key) each one whose tag does
    not verify is named."""
    report = AuditReport(checkpoint=None)

    def tree_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("tree", done, total)

    try:
        # Read first: a tree that fails its audit still says which checkpoint it failed.
        report.checkpoint = reader.checkpoint()
        report.checkpoint = reader.audit(progress=tree_progress)
    except Error as exc:
        report.findings.append(Finding("log", f"{exc} ({exc.code})"))
        return report
    size = 0 if report.checkpoint is None else report.checkpoint.size
    replay = _Replay(
        issuer=issuer,
        service_keys=service_keys,
        policy=policy or ProvenancePolicy(),
        statement=statement,
    )
    expected_entries: list[IndexedEntry] = []
    expected_changes: list[tuple[int, int, str, str, str | None]] = []
    in_log: set[bytes] = set()
    for start in range(0, size, AUDIT_STEP):
        stop = min(size, start + AUDIT_STEP)
        for offset, leaf in enumerate(reader.entries(start, stop)):
            i = start + offset
            if stored_rows is not None:
                in_log.add(leaf)
            finding: Finding | None
            try:
                record = statement(leaf)
            except Corruption as exc:  # one entry's damage: named, and the audit goes on
                verdict, outcome, _ = replay.entry(i, leaf, None)
                finding = Finding(
                    f"entry {i}", f"its statement cannot be read from the statement store: {exc}"
                )
            else:
                verdict, outcome, finding = replay.entry(i, leaf, record)
            report.entries += 1
            if finding is not None:
                report.findings.append(finding)
            elif verdict.kind or verdict.outcome == "skipped":
                report.statements_verified += 1
            report.applied += verdict.outcome == "applied"
            report.refused += verdict.outcome == "refused"
            expected_entries.append(verdict)
            expected_changes.extend(
                (i, pos, table, key, value)
                for pos, (table, key, value) in enumerate(outcome.changes)
            )
        if progress is not None:
            progress("statements", stop, size)
    report.rows = sum(1 for _ in replay.rows.dump())
    if stored_rows is not None:
        report.findings.extend(_outside_the_log(stored_rows, in_log, statement_rows, report))
    if index is not None:
        report.findings.extend(
            compare_index(index, replay.rows.dump(), expected_changes, expected_entries, size)
        )
    return report


def _outside_the_log(
    stored_rows: Callable[[int, int], Sequence[BacklogRow]],
    in_log: set[bytes],
    tags: StatementRows | None,
    report: AuditReport,
) -> Iterator[Finding]:
    """Every stored row whose entry is not in the log counted and, with ``tags``, each one
    a server would refuse to append named (by its number and entry id, not its content)."""
    report.outside = 0
    report.tags_checked = tags is not None
    after = _MIN_SEQ
    while rows := stored_rows(after, ROWS_STEP):
        for row in rows:
            if row.readable and row.entry_id in in_log:
                continue
            report.outside += 1
            problem = None if tags is None else tags.problem(row)
            if problem is not None:
                entry = f"entry id {row.entry_id.hex()[:16]}…" if row.readable else "it"
                yield Finding(
                    f"statement row {row.seq}",
                    f"{entry} is not in the log, and {problem}: written or edited behind "
                    "the service (servers refuse to append it)",
                )
        after = rows[-1].seq


def _key(text: str) -> bytes:
    """A table name or key as the index orders it: by its UTF-8 bytes (the code-point
    order for text; a damaged text's lone surrogates as the bytes they stand for)."""
    return text.encode("utf-8", "surrogateescape")


def compare_index(
    index: IndexStore,
    rows: Iterable[tuple[str, str, str]],
    changes: Iterable[tuple[int, int, str, str, str | None]],
    entries: Iterable[IndexedEntry],
    size: int,
) -> Iterator[Finding]:
    """Every difference between the index and what the log gives, named; for an index
    built with other rules than the replay's, that one fact instead."""
    applied = index.applied_size()
    try:
        recorded = index.rules_version()
    except Corruption as exc:
        yield Finding("index", f"its rules version cannot be read: {exc}: not compared")
        return
    if applied > size:
        # Not a lagging index: the log lost entries the index applied (not to be rebuilt
        # away before it is understood).
        yield Finding(
            "index",
            f"has applied {applied} entries, but the log holds {size}: the log was rolled "
            "back or is not the index's log",
        )
    if applied and recorded != RULES_VERSION:
        # Built by another release: its rows differ wherever the rules changed, so a
        # comparison would name each as an edit behind the log. Not tampering, but not
        # checked either: the rebuild makes it comparable.
        built = "of no recorded version" if recorded is None else f"version {recorded}"
        yield Finding(
            "index",
            f"built with provenance rules {built}, not this Sealtrail's version "
            f"{RULES_VERSION}: not compared with the log (run `sealtrail index rebuild`, "
            "every server of the index stopped, then audit again)",
        )
        return
    if applied < size:
        yield Finding(
            "index", f"has applied {applied} entries of the log's {size} (run `index rebuild`)"
        )
    # Read with damage marked, not refused: a stored text that is not UTF-8 is one row
    # edited behind the log, named by the comparison, and the rows after it are compared.
    yield from _diff(
        "row",
        (((_key(t), _key(k)), v) for t, k, v in rows),
        (((_key(t), _key(k)), v) for t, k, v in index.dump_rows(mark_damaged=True)),
    )
    yield from _diff(
        "change",
        (((i, pos), (t, k, v)) for i, pos, t, k, v in changes),
        (((i, pos), (t, k, v)) for i, pos, t, k, v in index.dump_changes(mark_damaged=True)),
    )
    yield from _diff(
        "entry",
        (((e.index,), e) for e in entries),
        (((e.index,), e) for e in index.dump_entries(mark_damaged=True)),
    )


def _show(value: object) -> str:
    if isinstance(value, IndexedEntry):
        text = f"{value.kind or 'other'} {value.outcome}" + (
            f" ({value.code})" if value.code else ""
        )
        return f"{text}, entry id {value.entry_id.hex()[:16]}…"
    if isinstance(value, tuple):
        table, key, row = value
        return f"{_printable(table)}/{_printable(key)} = {_quote(row)}"
    return _quote(value if isinstance(value, str) else repr(value))


def _difference(held: object, given: object) -> str:
    """What an edited index value holds against what the log gives: an entry's verdict
    by the fields that differ (its subjects are not in :func:`_show`)."""
    if isinstance(held, IndexedEntry) and isinstance(given, IndexedEntry):
        fields = [f for f in _ENTRY_FIELDS if getattr(held, f) != getattr(given, f)]
        return "; ".join(
            f"{f} {_field(getattr(held, f))} where the log gives {_field(getattr(given, f))}"
            for f in fields
        )
    return f"holds {_show(held)}, the log gives {_show(given)}"


#: An indexed entry's fields an edit may change (its index is its key).
_ENTRY_FIELDS = ("entry_id", "kind", "org", "outcome", "code", "subjects")


def _field(value: object) -> str:
    if value == b"":  # an id stored as another type than bytes (mark_damaged)
        return "a value stored as another type than bytes"
    if isinstance(value, bytes):
        return value.hex()[:16] + "…"
    if isinstance(value, tuple):
        return _quote(", ".join(value) or "none")
    return "nothing" if value is None else _quote(str(value) or '""')


def _label(key: tuple[object, ...]) -> str:
    """Where a finding is: the parts of a key, a table name's or key's bytes as text (any
    that are not UTF-8 as ``\\xNN``)."""
    return "/".join(
        part.decode("utf-8", "backslashreplace") if isinstance(part, bytes) else str(part)
        for part in key
    )


_Keyed = tuple[tuple[Any, ...], object]


def _diff(
    what: str,
    expected: Iterable[_Keyed],
    actual: Iterable[_Keyed],
) -> Iterator[Finding]:
    """Merge two key-ordered sequences; name each key missing, extra or different.

    ``actual`` is the index's dump: a value in it that cannot be read at all ends it as
    one finding (where the reading stopped), and what the log gives from there on is not
    named as deleted, since it was not seen.
    """
    want, have = iter(expected), iter(actual)
    last: tuple[Any, ...] | None = None
    w = next(want, None)
    try:
        h = next(have, None)
    except Corruption as exc:
        yield _unreadable(what, last, exc)
        return
    while w is not None or h is not None:
        if h is None or (w is not None and w[0] < h[0]):
            assert w is not None
            where = f"{what} {_label(w[0])}"
            yield Finding(where, f"deleted behind the log (the log gives {_show(w[1])})")
            w = next(want, None)
            continue
        if w is None or h[0] < w[0]:
            yield Finding(f"{what} {_label(h[0])}", f"inserted behind the log: {_show(h[1])}")
        else:
            if w[1] != h[1]:
                yield Finding(
                    f"{what} {_label(w[0])}",
                    f"edited behind the log: {_difference(h[1], w[1])}",
                )
            w = next(want, None)
        last = h[0]
        try:
            h = next(have, None)
        except Corruption as exc:
            yield _unreadable(what, last, exc)
            return


def _unreadable(what: str, last: tuple[Any, ...] | None, exc: Corruption) -> Finding:
    """The finding of an index dump that stopped at a value it cannot read at all."""
    after = "from the first" if last is None else f"after {what} {_label(last)}"
    those = _PLURAL.get(what, f"{what}s")
    return Finding(
        f"index {those}",
        f"cannot be read on {after}: {exc}; the {those} from there on are not compared",
    )


_PLURAL = {"entry": "entries"}
