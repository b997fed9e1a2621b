"""What the benchmarks need of a PostgreSQL server: a fresh schema per run, and its URL as a
report may show it. Loaded by path, as bench/ is not a package
(``sealtrail.cli.bench.bench_module``)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit


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
    """``url`` without its password (the JSON report is shareable)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
