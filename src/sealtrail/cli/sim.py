"""``sealtrail sim``: the simulator against a running service (docs/demo.md).

``sim fleet`` makes a fleet (deterministic for its seed), onboards its organizations with
the administrator token, makes a user per organization with a token of a day, and
registers its whole journey through the HTTP API with those tokens, then prints how long
each phase took; ``--attacks`` runs the attack scenarios after it (each organization's user
and an auditor get another token for them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from sealtrail.config import load_config
from sealtrail.errors import InvalidInput
from sealtrail.sim import (
    DEFAULT_CONCURRENCY,
    AttackResult,
    Fleet,
    FleetSpec,
    JourneyReport,
    Progress,
    generate_fleet,
    run_attacks,
    run_journey,
)

from ._common import err, out, progress_bar
from .scitt import DEFAULT_URL, TOKEN_ENV, AsJson, Url, _admin_token

__all__ = ["attack_table", "journey_table", "show", "sim_app", "tracked"]

sim_app = typer.Typer(
    help="The simulator: a fleet's journey (and attacks) through a running service.",
    no_args_is_help=True,
)

Racks = Annotated[int, typer.Option(min=1, max=1000, help="Racks.")]
Servers = Annotated[int, typer.Option(min=1, max=1024, help="Servers per rack.")]
Rots = Annotated[int, typer.Option(min=1, max=64, help="Root-of-trust devices per server.")]
Seed = Annotated[int, typer.Option(min=0, help="Seed: names, serials and shapes follow from it.")]


@contextmanager
def tracked(description: str, total: int, *, quiet: bool = False) -> Iterator[Progress]:
    """A progress bar on stderr, as a simulator progress callback."""
    with progress_bar(description, total, quiet=quiet) as bar:
        task = bar.task_ids[0]

        def update(stage: str, done: int, all_: int) -> None:
            bar.update(task, description=stage, completed=done, total=all_)

        yield update


def make_fleet(spec: FleetSpec, *, quiet: bool = False) -> Fleet:
    with tracked("devices", spec.devices, quiet=quiet) as progress:
        return generate_fleet(spec, progress=progress)


def journey_table(report: JourneyReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="The journey through HTTP")
    table.add_column("phase")
    for name in ("statements", "seconds", "per second"):
        table.add_column(name, justify="right")
    for phase in report.phases:
        rate = phase.statements / phase.seconds if phase.seconds > 0 else 0.0
        table.add_row(phase.name, str(phase.statements), f"{phase.seconds:.2f}", f"{rate:,.0f}")
    rate = report.entries / report.seconds if report.seconds > 0 else 0.0
    table.add_row("all", str(report.entries), f"{report.seconds:.2f}", f"{rate:,.0f}", style="bold")
    return table


#: Columns of a table when the output is not a terminal (a log or a pipe): unwrapped rows.
WIDE = 250


def show(console: Console, table: Table) -> None:
    """Print ``table``; when not to a terminal, as wide as its rows need."""
    if not console.is_terminal:
        console = Console(stderr=console.stderr, width=WIDE, highlight=False)
    console.print(table)


def attack_table(results: list[AttackResult]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="The attacks, and what Sealtrail reported")
    for name in ("scenario", "expected", "reported", "caught"):
        table.add_column(name, overflow="fold")
    for r in results:
        mark = "[green]yes[/green]" if r.caught else "[red]NO[/red]"
        table.add_row(r.name, r.expected, r.reported, mark)
    return table


@sim_app.command("fleet")
def fleet(
    racks: Racks = 10,
    servers_per_rack: Servers = 40,
    rots_per_server: Rots = 8,
    seed: Seed = 1,
    url: Url = DEFAULT_URL,
    token_file: Annotated[
        Path | None,
        typer.Option(help=f"File holding the administrator token (mode 0600); else ${TOKEN_ENV}."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1024, help="Statements in flight at once.")
    ] = DEFAULT_CONCURRENCY,
    attacks: Annotated[
        bool, typer.Option("--attacks", help="Run the attack scenarios after the journey.")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            "-d",
            file_okay=False,
            help="With --attacks: the service's data directory (for the database scenario).",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Make a fleet and run its journey through a running service; print the timing.

    Onboards the fleet's six organizations and makes a user for each (administrator
    token), then registers every fact from the makers' manifests to production over HTTP,
    each with its organization's user's token. A ledger holds one fleet per seed: use
    another --seed for another fleet on the same ledger.
    """
    token = _admin_token(token_file)
    if data_dir is not None:
        if not attacks:
            raise InvalidInput("--data-dir goes with --attacks (the database scenario)")
        load_config(data_dir)  # a directory that is not one is refused before anything runs
    try:
        spec = FleetSpec(racks, servers_per_rack, rots_per_server, seed)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    started = time.perf_counter()
    the_fleet = make_fleet(spec, quiet=as_json)
    generated = time.perf_counter() - started
    with tracked("journey", 1, quiet=as_json) as progress:
        report = asyncio.run(
            run_journey(
                the_fleet, url, admin_token=token, progress=progress, concurrency=concurrency
            )
        )
    results: list[AttackResult] = []
    if attacks:
        with tracked("attacks", 1, quiet=as_json) as progress:
            results = run_attacks(
                the_fleet, url, data_dir=data_dir, admin_token=token, progress=progress
            )
    if as_json:
        doc = {
            "fleet": {
                "racks": racks,
                "servers_per_rack": servers_per_rack,
                "rots_per_server": rots_per_server,
                "seed": seed,
                "servers": spec.servers,
                "devices": spec.devices,
                "generate_seconds": round(generated, 3),
            },
            "journey": report.to_json(),
            "attacks": [r.to_json() for r in results],
        }
        out.print_json(json.dumps(doc))
    else:
        err.print(
            f"Fleet {spec.namespace}: {spec.racks} racks x {spec.servers_per_rack} servers x "
            f"{spec.rots_per_server} RoTs = {spec.devices} devices, made in {generated:.1f} s"
        )
        show(out, journey_table(report))
        if results:
            show(out, attack_table(results))
    if results and not all(r.caught for r in results):
        raise typer.Exit(1)
