"""``sealtrail init``: create a data directory with fresh keys and an administrator token,
and start its log in the store (a signed checkpoint of size 0: the store is this
directory's log from then on; a store that already holds a log is refused).

The configuration it writes requires tokens (``[auth] required = true``, docs/auth.md):
registering a statement and reading provenance need a user's; ``required = false`` in
``sealtrail.toml`` opens the service the way SCITT allows.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from sealtrail.config import CONFIG_FILE, DEFAULT_STORE, absolute_store_path, init_data_dir
from sealtrail.keys import ES256
from sealtrail.log import MAX_ORIGIN_SIZE
from sealtrail.storage import describe_store

from ._common import DEFAULT_DATA_DIR, DataDir, err, out

__all__ = ["init"]


def init(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    origin: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint origin: the log's scheme-less URL prefix, for good (printable, "
            f"no spaces or '+', at most {MAX_ORIGIN_SIZE} bytes). Default: random."
        ),
    ] = None,
    service_algorithm: Annotated[
        str, typer.Option(help="Receipt key algorithm: ES256, ES384, Ed25519, ML-DSA-65/87.")
    ] = ES256,
    store: Annotated[
        str,
        typer.Option(
            help="Where the log and statements live: sqlite:///… (default: log.db here) or "
            "postgresql://user@host/db (several servers; password via PGPASSWORD or ~/.pgpass). "
            "It must hold no log yet."
        ),
    ] = DEFAULT_STORE,
    index: Annotated[
        str | None,
        typer.Option(
            help="The provenance index: default provenance.db here, or the store's database "
            "when the store is PostgreSQL."
        ),
    ] = None,
) -> None:
    """Create a data directory (config, checkpoint and receipt keys (mode 0600), admin token)
    and start its log in the store."""
    created = init_data_dir(
        data_dir,
        origin=origin,
        store_url=absolute_store_path(store),
        index_url=None if index is None else absolute_store_path(index),
        service_algorithm=service_algorithm,
    )
    config = created.config
    # Values are escaped: a path or an origin is text, never markup.
    out.print(f"Initialized {escape(str(data_dir))} for log [bold]{escape(config.origin)}[/bold]")
    out.print(f"  config:        {escape(str(data_dir / CONFIG_FILE))}")
    out.print(
        f"  store:         {escape(describe_store(config.store_url))}  (log started at size 0)"
    )
    out.print(f"  log key:       {escape(str(data_dir / config.key_file))}  (secret, mode 0600)")
    out.print(
        f"  receipt key:   {escape(str(data_dir / config.service_key_file))}  (secret, mode 0600)"
    )
    out.print(f"  verifier key:  {escape(config.verifier_key())}")
    out.print(f"  issuer:        {escape(config.service_issuer)}")
    out.print("Publish the verifier key; clients pin it to verify checkpoints.")
    if config.auth_required:
        out.print(
            escape(
                "Registering and reading provenance need a user's token ([auth] required = "
                "true): add users and issue their tokens with 'sealtrail users' (docs/auth.md)."
            )
        )
    # The token goes to stderr so that scripts capturing stdout do not file it by accident.
    err.print(
        "Administrator token (shown once, only its hash is kept; "
        "'sealtrail keys admin-token' issues a new one):"
    )
    err.print(f"  {escape(created.admin_token)}", soft_wrap=True)
