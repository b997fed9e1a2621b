"""``sealtrail bench``: run a benchmark from bench/ and print its figures.

Benchmarks live in the source checkout's ``bench/`` folder (they may import peers the package
must not depend on); this command finds that folder and runs ``bench/<name>.py``'s ``run``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.table import Table

import sealtrail
from sealtrail.errors import ConfigError, InvalidInput

from ._common import err, out

__all__ = ["app"]

app = typer.Typer(help="Benchmarks (figures as JSON or a table).", no_args_is_help=True)

BenchDir = Annotated[
    Path | None,
    typer.Option("--bench-dir", envvar="SEALTRAIL_BENCH_DIR", help="The checkout's bench/ folder."),
]


def bench_module(path: Path) -> ModuleType:
    """The module of a bench/ file (bench/ is not a package and not on ``sys.path``): loaded
    once, as ``sealtrail_bench_<name>``; benchmarks load their helper files with it too."""
    name = f"sealtrail_bench_{path.stem}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load the benchmark file {path.name}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as importlib's recipe says: dataclasses and pickling look a
    # module up by name while it is being executed.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _bench_module(name: str, bench_dir: Path | None) -> ModuleType:
    candidates = [bench_dir] if bench_dir else []
    candidates += [Path.cwd() / "bench", Path(sealtrail.__file__).resolve().parents[2] / "bench"]
    for folder in candidates:
        path = folder / f"{name}.py"
        if path.is_file():
            return bench_module(path)
    raise ConfigError(
        f"benchmark {name!r} not found",
        hint="Benchmarks live in bench/ of a source checkout: run from there or pass --bench-dir.",
    )


def _reporter(quiet: bool) -> Callable[[str, int, int], None]:
    last: dict[str, int] = {}

    def report(what: str, done: int, total: int) -> None:
        step = max(1, total // 10)
        if quiet or (done // step == last.get(what, -1) and done < total):
            return
        last[what] = done // step
        err.print(f"  {what}: {min(done, total):,}/{total:,}")

    return report


def _as_table(json_out: bool, table: bool) -> bool:
    """Whether to print a table; both --json and --table is a usage error, before any work."""
    if json_out and table:
        raise typer.BadParameter(
            "cannot be given with --json: give one (JSON is the default)", param_hint="'--table'"
        )
    return table


def _print(result: dict[str, Any], as_table: bool) -> None:
    if not as_table:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    table = Table(title=f"sealtrail bench {result.get('benchmark', '')}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in result["figures"].items():
        # Ratios (below 10) keep three significant digits; rates and times one decimal.
        table.add_row(name, f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}")
    out.print(table)


@app.command("log")
def log(
    entries: Annotated[
        int, typer.Option(min=1000, help="Entries appended (default 10^6).")
    ] = 1_000_000,
    proofs: Annotated[int, typer.Option(min=100, help="Proofs generated per figure.")] = 20_000,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            max=9,
            help="Rounds of the append comparison (ours and pymerkle's in turn) and of the "
            "inclusion proofs; figures are medians.",
        ),
    ] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout (the default).")] = False,
    table: Annotated[bool, typer.Option("--table", help="A human table instead of JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    bench_dir: BenchDir = None,
    synchronous: Annotated[
        str,
        typer.Option(
            help="SQLite synchronous setting for the append figure (FULL is the default)."
        ),
    ] = "FULL",
    store: Annotated[
        str | None,
        typer.Option(
            help="Also measure append and proofs on PostgreSQL (postgresql://…; a fresh schema "
            "is made and dropped), in the same run as SQLite."
        ),
    ] = None,
) -> None:
    """The log: append throughput, proof generation and verification, vs pymerkle."""
    as_table = _as_table(json_out, table)
    if store is not None and not store.startswith(("postgresql://", "postgres://")):
        raise InvalidInput("--store takes a postgresql:// URL", code="bench-bad-store")
    module = _bench_module("log", bench_dir)
    result = module.run(
        entries=entries,
        proofs=proofs,
        append_rounds=rounds,
        synchronous=synchronous,
        store=store,
        report=_reporter(quiet),
    )
    _print(result, as_table=as_table)


@app.command("register")
def register(
    statements: Annotated[
        int, typer.Option(min=200, help="Statements registered per figure (default 20,000).")
    ] = 20_000,
    connections: Annotated[
        int, typer.Option(min=1, help="Concurrent keep-alive HTTP connections.")
    ] = 64,
    tasks: Annotated[
        int, typer.Option(min=1, help="Concurrent registrations in the in-process figure.")
    ] = 1024,
    time_limit: Annotated[
        float, typer.Option(min=1.0, help="Longest the HTTP figure may run, in seconds.")
    ] = 120.0,
    store: Annotated[
        str | None,
        typer.Option(
            help="Also measure on PostgreSQL (postgresql://…; a fresh schema per figure, "
            "dropped afterwards).",
        ),
    ] = None,
    api_processes: Annotated[
        int, typer.Option(min=1, max=8, help="Servers sharing PostgreSQL in its HTTP figure.")
    ] = 2,
    peak_connections: Annotated[
        str,
        typer.Option(
            help="With --store: connection counts of the capacity sweep, comma-separated "
            "('' for none).",
        ),
    ] = "128,256,384,512",
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            max=9,
            help="With --store: alternating rounds of the two HTTP figures at --connections "
            "(each figure its median round).",
        ),
    ] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout (the default).")] = False,
    table: Annotated[bool, typer.Option("--table", help="A human table instead of JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    bench_dir: BenchDir = None,
) -> None:
    """SCITT registration: the verification ceiling, in-process and HTTP throughput, latency."""
    as_table = _as_table(json_out, table)
    if store is not None and not store.startswith(("postgresql://", "postgres://")):
        raise InvalidInput("--store takes a postgresql:// URL", code="bench-bad-store")
    module = _bench_module("register", bench_dir)
    result = module.run(
        statements=statements,
        tasks=tasks,
        connections=connections,
        time_limit=time_limit,
        store=store,
        api_processes=api_processes,
        peak_connections=_connection_counts(peak_connections),
        rounds=rounds,
        report=_reporter(quiet),
    )
    _print(result, as_table=as_table)


#: Most connections one sweep level may open (each is a socket of the load generator and of
#: a server, on loopback).
MAX_PEAK_CONNECTIONS = 2048


def _connection_counts(text: str) -> list[int]:
    """``--peak-connections``: comma-separated counts, each 1..MAX_PEAK_CONNECTIONS."""
    counts: list[int] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not item.isdigit() or not 1 <= int(item) <= MAX_PEAK_CONNECTIONS:
            raise InvalidInput(
                f"--peak-connections takes counts from 1 to {MAX_PEAK_CONNECTIONS}, "
                "comma-separated",
                code="bench-bad-connections",
            )
        counts.append(int(item))
    return counts


@app.command("provenance")
def provenance(
    manifests: Annotated[
        int, typer.Option(min=1, help="Device manifests registered (default 3).")
    ] = 3,
    devices: Annotated[
        int, typer.Option(min=8, max=10_000, help="Devices per manifest (default 10,000).")
    ] = 10_000,
    servers: Annotated[
        int, typer.Option(min=1, help="Servers of 8 roots of trust that attest (default 250).")
    ] = 250,
    rounds: Annotated[
        int, typer.Option(min=1, help="Attestations per server, each with a fresh nonce.")
    ] = 4,
    fsck_entries: Annotated[
        int, typer.Option(min=1000, help="Entries of the log the fsck figure verifies.")
    ] = 1_000_000,
    p384_checks: Annotated[
        int, typer.Option(min=100, help="P-384 checks per pass of the ceiling (4 passes).")
    ] = 1000,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout (the default).")] = False,
    table: Annotated[bool, typer.Option("--table", help="A human table instead of JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    bench_dir: BenchDir = None,
) -> None:
    """The provenance ledger: identity and attestation ingestion, the audit, fsck."""
    as_table = _as_table(json_out, table)
    module = _bench_module("provenance", bench_dir)
    result = module.run(
        manifests=manifests,
        devices=devices,
        servers=servers,
        rounds=rounds,
        fsck_entries=fsck_entries,
        p384_checks=p384_checks,
        report=_reporter(quiet),
    )
    _print(result, as_table=as_table)
