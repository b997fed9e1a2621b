"""What every command shares: the data-dir option, consoles and progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sealtrail.config import Config, load_config

__all__ = ["DataDir", "err", "load", "out", "progress_bar"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_DATA_DIR = Path(".sealtrail")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        "-d",
        envvar="SEALTRAIL_DATA_DIR",
        help="Data directory (config, keys, SQLite store).",
        file_okay=False,
    ),
]


def load(data_dir: Path) -> Config:
    return load_config(data_dir)


@contextmanager
def progress_bar(description: str, total: int, *, quiet: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr (hidden with ``quiet`` or when stderr is not a terminal)."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    with bar:
        bar.add_task(description, total=total)
        yield bar
