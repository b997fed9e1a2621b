"""What the benchmarks need of a PostgreSQL server: a fresh schema per run, and its URL as a
report may show it. Loaded by path, as bench/ is not a package
(``sealtrail.cli.bench.bench_module``)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sealtrail.errors import ConfigError
from sealtrail.storage import describe_store
from sealtrail.storage.postgres import _reason  # a driver error's first line, no password

#: Seconds to wait for the server, as the store waits (``sealtrail.storage.postgres``).
CONNECT_TIMEOUT = 10
_HINT = (
    "Check that the server is running and accepts TCP connections, the user and database in "
    "--store (postgresql://user@host:5432/dbname) and the password in PGPASSWORD, ~/.pgpass "
    "or a passfile (never in the URL)."
)


def check(url: str) -> None:
    """Connect to ``url`` once: a server that cannot be reached is a one-line
    :class:`~sealtrail.errors.ConfigError` before any figure is measured, not a traceback
    once the SQLite figures are done."""
    with _connect(url):
        pass


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A fresh, empty schema in the database at ``url`` (a URL whose connections use it),
    dropped afterwards: every run starts from an empty store, as with SQLite's fresh files."""
    name = f"sealtrail_bench_{secrets.token_hex(6)}"
    schema = sql.Identifier(name)
    _execute(url, sql.SQL("CREATE SCHEMA {}").format(schema), "create a schema")
    try:
        joiner = "&" if "?" in url else "?"
        yield f"{url}{joiner}options={quote(f'-csearch_path={name}')}"
    finally:
        _execute(url, sql.SQL("DROP SCHEMA {} CASCADE").format(schema), f"drop schema {name}")


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot connect to PostgreSQL at {describe_store(url)}: {_reason(exc, url)}",
            hint=_HINT,
        ) from None


def _execute(url: str, statement: sql.Composed, what: str) -> None:
    with _connect(url) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            primary = exc.diag.message_primary or _reason(exc, url)
            raise ConfigError(
                f"cannot {what} in PostgreSQL at {describe_store(url)}: {primary}",
                hint="The benchmark needs a user that may create schemas in the database.",
            ) from None


def redacted(url: str) -> str:
    """``url`` without its password (the JSON report is shareable)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
