"""Shared fixtures: fresh keys and stores. Every test gets its own."""

from __future__ import annotations

import functools
import os
import secrets
import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, LogReader
from sealtrail.storage import MemoryStore

ORIGIN = "test.sealtrail.localhost/log"


@pytest.fixture(autouse=True)
def _switch_interval() -> Iterator[None]:
    """A test that runs the ``sealtrail`` command in this process (``cli.main``) sets the
    interpreter's switch interval; the next test gets the one it had before."""
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())


@pytest.fixture
def memory_store() -> Iterator[MemoryStore]:
    store = MemoryStore()
    yield store
    store.close()


def reader_for(store: object, signer: CheckpointSigner) -> LogReader:
    from sealtrail.storage import LogStore

    assert isinstance(store, LogStore)
    return LogReader(store, origin=signer.origin, verifiers=[signer.verifier])


# -- PostgreSQL ------------------------------------------------------------------------------------

#: Where the PostgreSQL tests look for a server: SEALTRAIL_TEST_POSTGRES (a libpq URL), else
#: these, first that answers (the development machine trusts local connections).
POSTGRES_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


@functools.cache
def postgres_server() -> tuple[str | None, str]:
    """``(url, why)``: the URL of a reachable test server, or ``None`` and why there is none.

    Asked once per run; the answer decides whether every PostgreSQL test runs or skips.
    """
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None, "psycopg is not installed (pip install -e '.[test]')"
    from sealtrail.storage.postgres import describe

    env = os.environ.get("SEALTRAIL_TEST_POSTGRES")
    candidates = (env,) if env else POSTGRES_CANDIDATES
    reasons: list[str] = []
    for url in candidates:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            reasons.append(f"{describe(url)}: {first.rsplit('failed: ', 1)[-1]}")
            continue
        return url, f"server at {describe(url)}"
    hint = "set SEALTRAIL_TEST_POSTGRES=postgresql://user@host:port/db, or start the local one"
    return None, f"no server reachable ({'; '.join(reasons)}); {hint}"


def postgres_skip_reason() -> str | None:
    url, why = postgres_server()
    return None if url is not None else f"PostgreSQL tests skipped: {why}"


class PostgresSchemas:
    """Creates throwaway schemas on the test server and drops them all afterwards.

    Each URL it hands out has ``search_path`` set to its own fresh schema (a libpq startup
    option), so every connection a store's pool opens works in that schema alone.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self._names: list[str] = []

    def new_url(self) -> str:
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self._names.append(name)
        joiner = "&" if "?" in self.server else "?"
        options = quote(f"-csearch_path={name}")
        return f"{self.server}{joiner}options={options}&application_name=sealtrail-test-{name}"

    def adopt(self, url: str) -> None:
        """Take over dropping the schema of a URL made by another instance."""
        self._names.append(url.rsplit("sealtrail-test-", 1)[1])

    def drop_all(self) -> None:
        import psycopg

        names, self._names = self._names, []
        if not names:
            return
        with psycopg.connect(self.server, autocommit=True) as conn:
            for name in names:
                # Backends still connected (a test that left a store open) must not keep
                # the schema alive: end them first.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid() AND application_name = %s",
                    (f"sealtrail-test-{name}",),
                )
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def postgres_schemas() -> Iterator[PostgresSchemas]:
    """Make any number of isolated schemas in one test; skips when no server is reachable."""
    url, why = postgres_server()
    if url is None:
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    schemas = PostgresSchemas(url)
    yield schemas
    schemas.drop_all()


@pytest.fixture
def postgres_url(postgres_schemas: PostgresSchemas) -> str:
    """A libpq URL of a fresh, empty schema of its own (``search_path`` set in the URL),
    dropped after the test. Skips the test, with the reason, when no server is reachable."""
    return postgres_schemas.new_url()


def pytest_report_header() -> list[str]:
    """Say up front which optional backends this run covers."""
    from tests.unit.keys._softhsm import hsm_skip_reason

    url, why = postgres_server()
    hsm_reason = hsm_skip_reason()
    return [
        f"PostgreSQL: tests will run against the {why}, each in a schema of its own "
        "(storage backends covered: memory, sqlite, old-sqlite, postgresql)"
        if url is not None
        else f"PostgreSQL: tests will be SKIPPED: {why} "
        "(storage backends covered: memory, sqlite, old-sqlite)",
        "HSM (PKCS#11): SoftHSM2 tests will run"
        if hsm_reason is None
        else f"HSM (PKCS#11): SoftHSM2 tests will be skipped: {hsm_reason}",
    ]


# -- figures measured by tests (fail-over times, say), printed at the end of the run ----------

_FIGURES: list[tuple[str, str]] = []


def report_figure(name: str, text: str) -> None:
    """Show a measured figure in the run's summary (a test asserts its bound separately)."""
    _FIGURES.append((name, text))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured by tests")
        for name, text in _FIGURES:
            terminalreporter.write_line(f"{name}: {text}")
