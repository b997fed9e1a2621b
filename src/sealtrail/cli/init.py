"""``sealtrail init``: create a data directory with a fresh log key."""

from __future__ import annotations

from typing import Annotated

import typer

from sealtrail.config import CONFIG_FILE, init_data_dir

from ._common import DEFAULT_DATA_DIR, DataDir, out

__all__ = ["init"]


def init(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    origin: Annotated[
        str | None,
        typer.Option(help="Checkpoint origin: the log's scheme-less URL prefix. Default: random."),
    ] = None,
) -> None:
    """Create a data directory: config, Ed25519 checkpoint key (mode 0600), SQLite store."""
    config = init_data_dir(data_dir, origin=origin)
    out.print(f"Initialized {data_dir} for log [bold]{config.origin}[/bold]")
    out.print(f"  config:        {data_dir / CONFIG_FILE}")
    out.print(f"  signing key:   {data_dir / config.key_file}  (secret, mode 0600)")
    out.print(f"  verifier key:  {config.verifier_key()}")
    out.print("Publish the verifier key; clients pin it to verify checkpoints.")
