"""What the benchmarks need of a PostgreSQL server: a fresh schema per run, and its URL as a
report may show it. Loaded by path (bench/ is not a package): see ``load`` in the callers."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from urllib.parse import quote

from sealtrail.storage import describe_store


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A fresh, empty schema in the database at ``url`` (a URL whose connections use it),
    dropped afterwards: every run starts from an empty store, as with SQLite's fresh files."""
    import psycopg

    name = f"sealtrail_bench_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        joiner = "&" if "?" in url else "?"
        yield f"{url}{joiner}options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def redacted(url: str) -> str:
    """The server's address and database, never a user or password."""
    return describe_store(url)
