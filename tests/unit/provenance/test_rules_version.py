"""The provenance rules have a version, and the index is built with one: a release of other
rules refuses to serve or extend an index of another version (a rebuild makes it its own),
and the audit reports such an index once instead of naming every row the rules changed as
an edit behind the log."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sealtrail.errors import ConfigError, Conflict
from sealtrail.provenance import (
    RULES_VERSION,
    AuditReport,
    PassportSubject,
    ProvenanceLedger,
    audit_log,
    check_index_of_log,
    check_index_rules,
)
from sealtrail.storage import IndexedEntry, IndexStore, MemoryIndex, SQLiteIndex

from ._signed import SERVICE, SignedChain, signed_chain
from .test_passport import export

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def audit(chain: SignedChain) -> AuditReport:
    return audit_log(
        chain.sequencer.reader,
        chain.store.get_statement,
        chain.index,
        issuer=SERVICE,
        service_keys=dict(chain.service.keys),
    )


def ledger_of(chain: SignedChain, *, shared: bool = False) -> ProvenanceLedger:
    """Another server's ledger over the chain's store and index."""
    return ProvenanceLedger(
        chain.index,
        statement=chain.store.get_statement,
        org_of=chain.service.registry.name_of,
        shared=shared,
    )


def test_the_rules_are_versioned_from_2() -> None:
    """1 is every release before versions were recorded (the index migrations say so)."""
    assert isinstance(RULES_VERSION, int) and RULES_VERSION >= 2


async def test_an_index_of_older_rules_is_refused_reported_once_and_rebuilt(
    tmp_path: Path,
) -> None:
    index = SQLiteIndex(tmp_path / "provenance.db")
    try:
        async with signed_chain(index=index) as chain:
            await chain.journey("srv-1", "ship-1")
            await chain.indexed()
            reader = chain.sequencer.reader
            assert index.rules_version() == RULES_VERSION  # the first batch recorded it
            assert audit(chain).ok
            # As the release before left it: version 1, and rows the old rules gave (no
            # trip rows). Without the version, the audit names each as an edit.
            index.execute("DELETE FROM idx_rows WHERE tbl = 'trip'")
            per_row = audit(chain).findings
            assert [f.where for f in per_row] == ["row trip/srv-1"]
            index.execute("UPDATE idx_meta SET rules_version = 1")

            checks: list[Callable[[], None]] = [
                lambda: check_index_of_log(index, reader),
                lambda: check_index_rules(index),
            ]
            for check in checks:
                with pytest.raises(ConfigError) as refused:
                    check()
                assert refused.value.code == "index-rules-outdated"
                assert str(refused.value) == (
                    "the provenance index was built with provenance rules version 1, and "
                    f"this Sealtrail applies version {RULES_VERSION}"
                )
                assert "run `sealtrail index rebuild`" in refused.value.hint
            check_index_of_log(index, reader, rules=False)  # the log itself is the index's
            other = ledger_of(chain)
            with pytest.raises(ConfigError) as refused:
                await other.start(reader)  # a server's start, before it applies anything
            assert refused.value.code == "index-rules-outdated"

            report = audit(chain)
            assert [(f.where, f.what) for f in report.findings] == [
                (
                    "index",
                    f"built with provenance rules version 1, not this Sealtrail's version "
                    f"{RULES_VERSION}: not compared with the log (run `sealtrail index "
                    "rebuild`, every server of the index stopped, then audit again)",
                )
            ]
            assert report.entries == reader.size()  # the log is checked all the same
            assert report.statements_verified == report.entries
            checkpoint = reader.checkpoint()
            assert checkpoint is not None
            with pytest.raises(ConfigError) as refused:  # its scope would come from old rows
                export(chain, PassportSubject.node("srv-1"), checkpoint)
            assert refused.value.code == "index-rules-outdated"

            await chain.ledger.close()
            index.reset(rules_version=RULES_VERSION)  # `sealtrail index rebuild`
            other.catch_up(reader)
            assert (index.applied_size(), index.rules_version()) == (
                reader.size(),
                RULES_VERSION,
            )
            check_index_of_log(index, reader)
            assert audit(chain).ok
            export(chain, PassportSubject.node("srv-1"), checkpoint)
    finally:
        index.close()


async def test_an_index_of_newer_rules_is_refused_with_the_upgrade_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = MemoryIndex()
    async with signed_chain(index=index) as chain:
        await chain.journey("srv-1", "ship-1")
        await chain.indexed()
        await chain.ledger.close()
        with monkeypatch.context() as newer:  # rebuilt by a newer release
            newer.setattr("sealtrail.provenance._ledger.RULES_VERSION", RULES_VERSION + 1)
            index.reset(rules_version=RULES_VERSION + 1)
            ledger_of(chain).catch_up(chain.sequencer.reader)
        size = index.applied_size()
        assert index.rules_version() == RULES_VERSION + 1
        with pytest.raises(ConfigError) as refused:
            check_index_of_log(index, chain.sequencer.reader)
        assert refused.value.code == "index-rules-newer"
        assert f"version {RULES_VERSION + 1}, newer than this Sealtrail's" in str(refused.value)
        assert refused.value.hint.startswith("Run the Sealtrail release that built it (upgrade")
        findings = audit(chain).findings
        assert len(findings) == 1 and f"rules version {RULES_VERSION + 1}," in findings[0].what
        assert index.applied_size() == size


def skipped(index: int) -> tuple[IndexedEntry, Sequence[tuple[str, str, str | None]]]:
    return IndexedEntry(index, bytes([index]) * 32, "", "", "skipped", None, ()), []


class _Log:
    """The read side ``catch_up`` uses: a log of entries no statement store holds."""

    def __init__(self, size: int) -> None:
        self._size = size

    def size(self) -> int:
        return self._size

    def entries(self, start: int, stop: int) -> list[bytes]:
        return [bytes([i]) * 32 for i in range(start, stop)]


@pytest.mark.parametrize("shared", [False, True])
def test_the_indexer_extends_no_index_of_other_rules(shared: bool) -> None:
    """Even past the start's check (a shared store's other process, say), a batch of these
    rules is not added to an index of others; an empty one takes these rules."""
    old = MemoryIndex()
    old.apply([skipped(0)], rules_version=RULES_VERSION - 1)  # built by the release before
    ledger = ProvenanceLedger(old, statement=lambda _: None, org_of=lambda _: None, shared=shared)
    with pytest.raises(Conflict) as refused:
        ledger.catch_up(_Log(3))  # type: ignore[arg-type]
    assert refused.value.code == "index-rules-mismatch"
    assert (old.applied_size(), old.rules_version()) == (1, RULES_VERSION - 1)

    fresh: IndexStore = MemoryIndex()
    assert fresh.rules_version() is None
    check_index_rules(fresh)  # empty: nothing built with any rules
    new = ProvenanceLedger(fresh, statement=lambda _: None, org_of=lambda _: None, shared=shared)
    assert new.catch_up(_Log(3)) == 3  # type: ignore[arg-type]
    assert fresh.rules_version() == RULES_VERSION
    check_index_rules(fresh)


def test_an_empty_index_of_other_rules_is_served_and_takes_these() -> None:
    """Reset by another release over an empty log: nothing in it was computed by those
    rules, so a server takes it and its first batch records this release's."""
    index = MemoryIndex()
    index.reset(rules_version=RULES_VERSION + 1)
    check_index_rules(index)
    ProvenanceLedger(index, statement=lambda _: None, org_of=lambda _: None).catch_up(
        _Log(1)  # type: ignore[arg-type]
    )
    assert index.rules_version() == RULES_VERSION
