"""The ``sealtrail`` command line: one module per command group, registered below."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.markup import escape

from sealtrail.errors import Error
from sealtrail.log import SWITCH_INTERVAL

from . import (
    bench,
    compliance,
    demo,
    init,
    keys,
    log,
    passport,
    provenance,
    query,
    record,
    scitt,
    serve,
    sim,
    users,
)
from ._common import err

__all__ = ["app", "main"]

app = typer.Typer(
    name="sealtrail",
    help="Sealtrail: a tamper-evident provenance ledger on a verifiable log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: The one table of commands: (name, single command or group).
COMMANDS: list[tuple[str, Callable[..., Any] | typer.Typer]] = [
    ("init", init.init),
    ("serve", serve.serve),
    ("log", log.app),
    ("keys", keys.app),
    ("statement", scitt.statement_app),
    ("submit", scitt.submit),
    ("fetch-keys", scitt.fetch_keys),
    ("verify", scitt.verify),
    ("org", scitt.org_app),
    ("users", users.users_app),
    ("record", record.record),
    ("challenge", record.challenge),
    ("compliance", compliance.compliance_app),
    ("index", provenance.index_app),
    ("audit", provenance.audit),
    ("query", query.query_app),
    ("passport", passport.passport_app),
    ("sim", sim.sim_app),
    ("demo", demo.demo),
    ("bench", bench.app),
]

for _name, _target in COMMANDS:
    if isinstance(_target, typer.Typer):
        app.add_typer(_target, name=_name)
    else:
        app.command(_name)(_target)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. A Sealtrail error is one line (plus a hint), never a traceback.

    Usage errors are click's own (exit status 2); Sealtrail errors exit with status 1.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)  # see SWITCH_INTERVAL: a sequencer's threads
    try:
        app(args=argv, prog_name="sealtrail")
    except Error as exc:
        err.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}", soft_wrap=True)
        err.print(f"hint: {escape(exc.hint)}", soft_wrap=True)
        sys.exit(1)
