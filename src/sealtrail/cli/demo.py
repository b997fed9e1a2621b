"""``sealtrail demo``: a whole supply chain and its attacks, against a real server on this
machine (what ``make demo`` runs; docs/demo.md).

1. Starts clean: a fresh data directory (the previous demo's is deleted — it holds nothing
   but the demo's ledger — unless its server is still running, which is said and left
   alone), ``sealtrail serve`` on 127.0.0.1 with the embedded SQLite store.
2. Makes a small fleet with the simulator and runs its journey through the HTTP API:
   organizations onboarded and a user made for each with the administrator token, every
   fact a signed statement sent with its organization's user's token (the data directory
   requires tokens, as ``sealtrail init`` writes it).
3. Makes an auditor user, whose token it keeps next to the administrator's (mode 0600),
   runs every attack scenario (each statement with its organization's token, reads as the
   auditor) and prints what Sealtrail reported for each.
4. Exports a server's passport and verifies it offline, with the log's and the service's
   keys pinned; checks the log's checkpoint and that the log only grew meanwhile.
5. Leaves the server running (until Ctrl-C) and prints commands to try next (the queries
   with the auditor's token); ``--exit`` stops it. ``--json`` prints one JSON object per
   attack scenario, then a summary.

Exit status 0 only if the journey succeeded, every attack was caught and the passport
verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from sealtrail.client import Client
from sealtrail.config import Config, init_data_dir
from sealtrail.errors import ConfigError, InvalidInput, StorageError, VerificationError
from sealtrail.log import ConsistencyProof, verify_checkpoint
from sealtrail.note import NoteVerifier
from sealtrail.provenance import PassportSubject, verify_passport
from sealtrail.sim import PHASES as JOURNEY_PHASES
from sealtrail.sim import (
    TOKEN_DAYS,
    AttackResult,
    Fleet,
    FleetSpec,
    FleetTokens,
    JourneyReport,
    auditor_name,
    issue_tokens,
    run_attacks,
    run_journey,
)

from ._common import err, out
from .passport import _fetch
from .sim import attack_table, make_fleet, show, tracked

__all__ = ["demo"]

#: The demo's fleet: small enough for a first look in well under two minutes.
DEMO_RACKS, DEMO_SERVERS, DEMO_ROTS, DEMO_SEED = 2, 2, 4, 1
DEFAULT_PORT = 8080
#: Files that mark a directory as the demo's own (the last one: the log-only demo's).
MARKER = "demo-run.json"
SERVER_STATE = "demo-server.json"
OLD_MARKER = "demo-pinned.checkpoint"
TOKEN_FILE = "admin.token"  # noqa: S105 (a file name)
AUDITOR_FILE = "auditor.token"
KEYS_FILE = "service-keys.cbor"
SERVER_LOG = "server.log"
#: Seconds the server has to start.
START_TIMEOUT = 30.0

#: Where the demo talks to a human: stdout, or stderr when stdout carries the JSON lines.
_ui = [out]


def _say(text: str = "") -> None:
    _ui[0].print(text, soft_wrap=True)  # never wrap: the commands must copy and paste


def _step(text: str, ok: bool = True) -> None:
    _say(f" {'[green]✔[/green]' if ok else '[red]✘[/red]'} {text}")


# -- the data directory and the server -------------------------------------------------------


def _previous_server(data_dir: Path) -> dict[str, Any] | None:
    """The previous demo's server, if it still runs: its recorded pid and URL."""
    try:
        state = json.loads((data_dir / SERVER_STATE).read_text(encoding="utf-8"))
        pid, url = int(state["pid"]), str(state["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    try:
        httpx.get(f"{url}/log/v1/info", timeout=2.0)
    except httpx.HTTPError:
        return None
    return {"pid": pid, "url": url}


def _fresh_data_dir(data_dir: Path) -> None:
    """Make room for a clean run: refuse while the previous demo's server runs; delete the
    previous demo's directory; never touch a directory that is not the demo's."""
    if not data_dir.exists():
        return
    running = _previous_server(data_dir)
    if running is not None:
        raise ConfigError(
            f"the previous demo's server is still running at {running['url']} "
            f"(pid {running['pid']}) on {data_dir}",
            hint=f"Stop it first (Ctrl-C in its terminal, or `kill {running['pid']}`), then run "
            "the demo again; or give the demo another --data-dir.",
        )
    is_demo = any((data_dir / name).exists() for name in (MARKER, SERVER_STATE, OLD_MARKER))
    if not is_demo and any(data_dir.iterdir()):
        raise ConfigError(
            f"{data_dir} exists and is not a demo data directory: refusing to delete it",
            hint="Give the demo an empty or new --data-dir.",
        )
    shutil.rmtree(data_dir)
    err.print(f"Starting clean: removed the previous demo's data directory {data_dir}/")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pick_port(requested: int | None) -> int:
    if requested == 0:
        return _free_port()
    port = requested or DEFAULT_PORT
    if _port_free(port):
        return port
    if requested is not None:
        raise InvalidInput(
            f"port {port} on 127.0.0.1 is already in use (a previous demo's server, or another "
            "program)",
            code="port-in-use",
            hint="Stop what listens there, or run the demo with --port 0 (any free port).",
        )
    port = _free_port()
    err.print(f"Port {DEFAULT_PORT} is in use on 127.0.0.1: the demo serves on {port} instead.")
    return port


def _start_server(data_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """``sealtrail serve`` in a child process; its output goes to ``server.log``. Until it
    answers, whatever stops the wait (Ctrl-C, SIGTERM, an error, the time running out)
    stops the child too."""
    cmd = [
        sys.executable,
        "-m",
        "sealtrail",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(data_dir / SERVER_LOG, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                lines = (data_dir / SERVER_LOG).read_text(errors="replace").strip().splitlines()
                raise StorageError(
                    f"the server exited at start: {lines[-1] if lines else 'no output'}",
                    hint=f"See {data_dir / SERVER_LOG}.",
                )
            try:
                httpx.get(f"{url}/log/v1/info", timeout=1.0)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            (data_dir / SERVER_STATE).write_text(json.dumps({"pid": proc.pid, "url": url}))
            return proc, url
        raise StorageError(f"the server did not start within {START_TIMEOUT:g} s")
    except BaseException:
        if proc is not None:
            _stop(proc, data_dir)
        raise


def _stop(server: subprocess.Popen[bytes], data_dir: Path) -> None:
    """Stop the server as Ctrl-C would, killing it if it has not stopped within 15 s or
    if this is interrupted meanwhile (a second Ctrl-C or SIGTERM)."""
    try:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        with contextlib.suppress(OSError):
            (data_dir / SERVER_STATE).unlink()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- the run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the demo found, for the summary."""

    journey: JourneyReport | None = None
    attacks: list[AttackResult] = field(default_factory=list)
    passport: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.journey is not None
            and bool(self.attacks)
            and all(a.caught for a in self.attacks)
            and bool(self.passport.get("verified"))
            and bool(self.log.get("consistent"))
        )


def _journey(fleet: Fleet, url: str, token: str, run: _Run, *, quiet: bool) -> None:
    spec = fleet.spec
    with tracked("journey", 1, quiet=quiet) as progress:
        run.journey = asyncio.run(run_journey(fleet, url, admin_token=token, progress=progress))
    report = run.journey
    _step(
        f"{report.organizations} organizations onboarded with a user each, "
        f"{report.statements} signed statements registered over HTTP with their users' "
        f"tokens in {report.seconds:.1f} s ({report.statements_per_s:.0f}/s): "
        f"{spec.servers} servers from the makers' manifests to production "
        f"({' → '.join(JOURNEY_PHASES[1:])})"
    )


def _tokens(config: Config, url: str, fleet: Fleet, admin_token: str) -> FleetTokens:
    """New tokens for the organizations' users, and an auditor's, kept next to the
    administrator token (mode 0600) for the commands the demo prints."""
    tokens = asyncio.run(issue_tokens(fleet, url, admin_token=admin_token, auditor=True))
    assert tokens.auditor is not None
    path = config.data_dir / AUDITOR_FILE
    _write_secret(path, (tokens.auditor + "\n").encode())
    _step(
        f"auditor {auditor_name(fleet)} made to read the views and passports; its token "
        f"(valid {TOKEN_DAYS * 24} h) is in {path}"
    )
    return tokens


def _passport(
    config: Config, url: str, fleet: Fleet, keys: bytes, run: _Run, token: str | None
) -> Path:
    serial = fleet.servers[0].serial
    data = _fetch(
        url, PassportSubject.node(serial), maker=None, serial=serial, timeout=30.0, token=token
    )
    path = config.data_dir / f"{serial}.passport.json"
    path.write_bytes(data)
    try:
        report = verify_passport(data, service_keys=keys, log_key=config.verifier_key())
    except VerificationError as exc:
        run.passport = {"file": str(path), "verified": False, "code": exc.code}
        _step(f"passport {path} does NOT verify: {exc.code}", ok=False)
        return path
    state = report.status.get("compliance")
    run.passport = {
        "file": str(path),
        "verified": True,
        "statements": len(report.stages),
        "checkpoint": report.checkpoint_size,
        "compliance": state,
    }
    _step(
        f"passport of {serial} exported to {path} ({len(data):,} bytes, {len(report.stages)} "
        f"statements against checkpoint {report.checkpoint_size}) and verified offline with the "
        f"log key and service keys pinned: {state}"
    )
    return path


def _log(config: Config, client: Client, before: bytes, run: _Run) -> None:
    verifier = NoteVerifier.parse(config.verifier_key())
    old = verify_checkpoint(before, origin=config.origin, verifiers=[verifier])
    latest = verify_checkpoint(client.checkpoint(), origin=config.origin, verifiers=[verifier])
    proof = httpx.get(
        f"{client.base_url}/log/v1/proof/consistency", params={"size1": old.size}, timeout=30.0
    )
    proof.raise_for_status()
    ConsistencyProof.from_dict(proof.json()).verify(old.root, latest.root)
    run.log = {"size": latest.size, "before_attacks": old.size, "consistent": True}
    _step(
        f"checkpoint of {latest.size} entries verified with the log's public key (log.vkey); "
        f"a consistency proof shows it extends the checkpoint of {old.size} taken before the "
        "attacks: nothing was rewritten, only appended"
    )


def _try_next(config: Config, url: str, fleet: Fleet, passport: Path) -> None:
    exe = ".venv/bin/sealtrail" if Path(".venv/bin/sealtrail").exists() else "sealtrail"
    d = config.data_dir
    serial = fleet.servers[0].serial
    auditor = f"--token-file {d / AUDITOR_FILE}"
    _say(f"\nThe ledger is served at [bold]{url}[/bold] (API docs: {url}/docs). Try:")
    for line in (
        f"export SEALTRAIL_URL={url}",
        f"{exe} query compliance {auditor}",
        f"{exe} query tree {serial} {auditor}",
        f"{exe} query timeline {serial} {auditor}",
        f"{exe} passport verify {passport} --log-key {d / 'log.vkey'} "
        f"--service-keys {d / KEYS_FILE}",
        f"{exe} audit -d {d}",
        f"{exe} sim fleet --racks 10 --servers-per-rack 40 --rots-per-server 8 --seed 2 "
        f"--token-file {d / TOKEN_FILE}",
        f"curl -s {url}/checkpoint",
    ):
        _say(f"  {line}")
    _say(
        f"The administrator token is in {d / TOKEN_FILE} and the auditor's in "
        f"{d / AUDITOR_FILE} (mode 0600; the demo keeps them, a real deployment never keeps "
        f"the administrator's). Server output: {d / SERVER_LOG}."
    )


def demo(
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", "-d", file_okay=False, help="The demo's data directory."),
    ] = Path(".sealtrail-demo"),
    port: Annotated[
        int | None,
        typer.Option(
            help=f"Port on 127.0.0.1 (default {DEFAULT_PORT}, or a free one if taken; 0: any)."
        ),
    ] = None,
    racks: Annotated[int, typer.Option(min=1, max=20, help="Racks in the fleet.")] = DEMO_RACKS,
    servers_per_rack: Annotated[
        int, typer.Option(min=1, max=40, help="Servers per rack.")
    ] = DEMO_SERVERS,
    rots_per_server: Annotated[
        int, typer.Option(min=1, max=16, help="RoTs per server.")
    ] = DEMO_ROTS,
    seed: Annotated[int, typer.Option(min=0, help="The fleet's seed.")] = DEMO_SEED,
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop the server when done.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per attack, then a summary, on stdout.")
    ] = False,
) -> None:
    """A supply chain on this machine: its journey through a real server, every attack and
    what Sealtrail reports, a passport verified offline (docs/demo.md)."""
    started = time.monotonic()
    _ui[0] = err if as_json else out
    spec = FleetSpec(racks, servers_per_rack, rots_per_server, seed)
    _fresh_data_dir(data_dir)
    chosen = _pick_port(port)
    created = init_data_dir(data_dir)
    (data_dir / MARKER).write_text(json.dumps({"started": int(time.time())}) + "\n")
    _write_secret(data_dir / TOKEN_FILE, (created.admin_token + "\n").encode())
    # SIGTERM as Ctrl-C: either way the server is stopped (by _start_server while it starts,
    # below once it has), never left behind.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    server: subprocess.Popen[bytes] | None = None
    run = _Run()
    try:
        server, url = _start_server(data_dir, chosen)
        _say(
            f"Sealtrail demo: a fresh ledger in {data_dir}/ (log {created.config.origin}), "
            f"served at {url} by `sealtrail serve` (pid {server.pid}, SQLite)."
        )
        fleet, passport = _run_all(created.config, url, created.admin_token, spec, run, as_json)
        _report(run, spec, url, time.monotonic() - started, as_json=as_json)
        if not exit_after:
            _try_next(created.config, url, fleet, passport)
            _say("\nPress Ctrl-C to stop the server.")
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()
    finally:
        try:
            if server is not None:
                _stop(server, data_dir)
        finally:
            signal.signal(signal.SIGTERM, previous)
    if not run.ok:
        raise typer.Exit(1)


def _run_all(
    config: Config, url: str, token: str, spec: FleetSpec, run: _Run, quiet: bool
) -> tuple[Fleet, Path]:
    """The fleet, its journey, the attacks, a passport and the log's checks."""
    fleet = make_fleet(spec, quiet=quiet)
    _step(
        f"fleet {spec.namespace} made: {spec.racks} racks x {spec.servers_per_rack} servers x "
        f"{spec.rots_per_server} roots of trust = {spec.devices} devices (Caliptra-like DICE "
        "chains in P-384 and ML-DSA-87, TPM-like, Cerberus-like), six organizations"
    )
    _journey(fleet, url, token, run, quiet=quiet)
    tokens = _tokens(config, url, fleet, token)
    with Client(url) as client:
        keys = client.service_keys()
        (config.data_dir / KEYS_FILE).write_bytes(keys)
        before = client.checkpoint()
        with tracked("attacks", 1, quiet=quiet) as progress:
            run.attacks = run_attacks(
                fleet, url, data_dir=config.data_dir, tokens=tokens, progress=progress
            )
        caught = sum(a.caught for a in run.attacks)
        show(_ui[0], attack_table(run.attacks))
        _step(f"{caught} of {len(run.attacks)} attacks caught", ok=caught == len(run.attacks))
        passport = _passport(config, url, fleet, keys, run, tokens.auditor)
        _log(config, client, before, run)
    return fleet, passport


def _report(run: _Run, spec: FleetSpec, url: str, seconds: float, *, as_json: bool) -> None:
    caught = f"{sum(a.caught for a in run.attacks)}/{len(run.attacks)}"
    if as_json:
        for attack in run.attacks:
            sys.stdout.write(json.dumps(attack.to_json()) + "\n")
        summary = {
            "ok": run.ok,
            "seconds": round(seconds, 1),
            "url": url,
            "fleet": {
                "racks": spec.racks,
                "servers_per_rack": spec.servers_per_rack,
                "rots_per_server": spec.rots_per_server,
                "seed": spec.seed,
            },
            "journey": run.journey.to_json() if run.journey else None,
            "attacks_caught": caught,
            "passport": run.passport,
            "log": run.log,
        }
        sys.stdout.write(json.dumps({"summary": summary}) + "\n")
        sys.stdout.flush()
    verdict = "[green]OK[/green]" if run.ok else "[red]FAILED[/red]"
    verified = "verified" if run.passport.get("verified") else "NOT verified"
    _say(
        f"\n{verdict}: journey done, {caught} attacks caught, passport {verified} "
        f"— {seconds:.1f} s."
    )
