"""``sealtrail compliance sweep``: servers whose attestation went stale become non-compliant.

Run it periodically (cron, a systemd timer) as the operator: it asks the service for the
servers that are ``verified`` or in ``production``, finds those without an affirming
attestation within the service's policy (its maximum attestation age, or ``--max-age``
seconds), and registers, signed with the operator's key,
one compliance statement per server moving it to ``non-compliant`` with the reason.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sealtrail.errors import Error, InvalidInput
from sealtrail.provenance import ATTESTED_STATES, Compliance, ComplianceState, stale_reason
from sealtrail.scitt import sign_statement

from ._common import TokenFile, connect, out
from .scitt import DEFAULT_URL, AsJson, Url, _emit, _load_chain, _load_key

__all__ = ["compliance_app"]

compliance_app = typer.Typer(
    help="Server compliance: the periodic sweep for stale attestations.", no_args_is_help=True
)


@compliance_app.command("sweep")
def sweep(
    key: Annotated[Path, typer.Option(help="The operator's signing key (PKCS#8 PEM).")],
    x5chain: Annotated[
        Path, typer.Option(help="PEM certificates: the key's certificate first, then its CAs.")
    ],
    issuer: Annotated[str, typer.Option(help="The operator's issuer (the iss claim).")],
    subject_prefix: Annotated[
        str, typer.Option(help="Statements' sub claim: this prefix, then the server serial.")
    ] = "urn:sealtrail:compliance:",
    max_age: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Seconds a passing attestation stays fresh: the service's policy in force "
            "(the default), or fewer.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the stale servers; register nothing.")
    ] = False,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Make every server without a fresh affirming attestation non-compliant.

    Exit status 0 when every stale server was recorded (or none was stale), 1 when a
    registration failed (the others are still recorded; run the sweep again).
    """
    signer = None if dry_run else _load_key(key)
    chain = [] if signer is None else _load_chain(x5chain, signer)
    now = int(time.time())
    found: list[dict[str, Any]] = []
    failed = False
    with connect(url, token_file) as service:
        in_force = int(service.policy()["max_attestation_age"])
        if max_age is None:
            max_age = in_force
        elif max_age > in_force:
            # A looser age would leave stale servers compliant: the policy is the service's.
            raise InvalidInput(
                f"--max-age {max_age} is longer than the service's policy in force "
                f"({in_force} s): a sweep may be stricter, not looser",
                code="sweep-max-age-looser",
            )
        for state in sorted(ATTESTED_STATES):
            for server in service.compliance(state.value)["servers"]:
                serial = server["server_serial"]
                node = service.node(serial)
                reason = stale_reason(
                    ComplianceState(state), node.get("attestation"), now=now, max_age=max_age
                )
                if reason is None:
                    continue
                row: dict[str, Any] = {"server_serial": serial, "from": state.value}
                row["reason"] = reason
                if signer is not None:
                    change = Compliance(
                        serial, ComplianceState(state), ComplianceState.NON_COMPLIANT, reason
                    )
                    data = sign_statement(
                        signer,
                        issuer=issuer,
                        subject=subject_prefix + serial,
                        content_type=Compliance.CONTENT_TYPE,
                        payload=change.to_json(),
                        x5chain=chain,
                        issued_at=now,
                    )
                    try:
                        row["entry_id"] = service.register(data).entry_id
                    except Error as exc:
                        row["error"] = exc.code
                        failed = True
                found.append(row)
    if as_json:
        _emit({"now": now, "max_age": max_age, "dry_run": dry_run, "stale": found})
    else:
        _print(found, dry_run=dry_run)
    if failed:
        raise typer.Exit(1)


def _print(found: list[dict[str, Any]], *, dry_run: bool) -> None:
    if not found:
        out.print("No stale server: every verified or production server attested in time.")
        return
    table = Table("server", "was", "reason", "recorded" if not dry_run else "would record")
    for row in found:
        if dry_run:
            done = "non-compliant"
        elif "error" in row:
            done = f"[red]failed ({row['error']})[/red]"
        else:
            done = f"entry {row['entry_id'][:16]}…"
        table.add_row(row["server_serial"], row["from"], row["reason"], done)
    out.print(table)
