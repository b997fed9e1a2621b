"""``sealtrail record KIND PAYLOAD``: a provenance fact checked, signed and registered in one
step — the command each persona uses (a maker's manifest, an assembler's assembly record, a
carrier's custody record, an operator's arrival, attestation result or compliance change)."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sealtrail.client import DEFAULT_TIMEOUT
from sealtrail.errors import Error, InvalidInput
from sealtrail.provenance import KINDS, MAX_PAYLOAD_SIZE
from sealtrail.scitt import parse_statement, sign_statement

from ._common import TokenFile, connect
from .scitt import (
    DEFAULT_URL,
    TRANSPARENT_SUFFIX,
    AsJson,
    Force,
    Url,
    _emit,
    _load_chain,
    _load_key,
    _note,
    _read,
    _save,
    _say,
    _writable,
)

__all__ = ["challenge", "record"]

KindName = StrEnum(  # type: ignore[misc]
    "KindName", {k.name.upper().replace("-", "_"): k.name for k in KINDS.values()}
)
_BY_NAME = {k.name: k for k in KINDS.values()}


def record(
    kind: Annotated[KindName, typer.Argument(help="The statement kind.", show_default=False)],
    payload: Annotated[Path, typer.Argument(help="The payload: a JSON file (docs/provenance.md).")],
    key: Annotated[Path, typer.Option(help="Your organization's signing key (PKCS#8 PEM).")],
    x5chain: Annotated[
        Path, typer.Option(help="PEM certificates: the key's certificate first, then its CAs.")
    ],
    issuer: Annotated[str, typer.Option(help="Your organization's issuer (the iss claim).")],
    subject: Annotated[
        str | None,
        typer.Option(help="The sub claim (default: urn:sealtrail:<kind>:<its main id>)."),
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=f"Where to save the transparent statement (default: PAYLOAD with suffix "
            f"{TRANSPARENT_SUFFIX}).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the registration.")
    ] = DEFAULT_TIMEOUT,
    as_json: AsJson = False,
    force: Force = False,
) -> None:
    """Check PAYLOAD as a KIND, sign it and register it; save the transparent statement.

    The payload is checked here first, with the same parser the service runs, so a typo is
    a one-line error before anything is signed. The service then applies the rules that
    need the log's history (docs/provenance.md) and names what it refuses.
    """
    if not timeout > 0:
        raise InvalidInput("--timeout must be a positive number of seconds")
    target = output or payload.with_suffix(TRANSPARENT_SUFFIX)
    _writable(target, force=force)
    spec = _BY_NAME[str(kind.value)]
    content = _read(payload, "payload", limit=MAX_PAYLOAD_SIZE)
    try:
        value = spec.parse(content)
    except Error as exc:
        raise InvalidInput(
            f"{payload} is not a valid {spec.name}: {exc.message}", code=exc.code
        ) from None
    signer = _load_key(key)
    chain = _load_chain(x5chain, signer)
    data = sign_statement(
        signer,
        issuer=issuer,
        subject=subject or f"urn:sealtrail:{spec.name}:{_main_id(value)}",
        content_type=spec.content_type,
        payload=content,
        x5chain=chain,
        issued_at=int(time.time()),
    )
    statement = parse_statement(data)
    with connect(url, token_file) as service:
        registered = service.register(data, timeout=timeout)
    try:
        _save(target, registered.transparent_statement(), force=force)
    except Error as exc:
        raise InvalidInput(
            f"registered as entry {registered.entry_id}, but {exc.message}",
            code=exc.code,
            hint="Its receipt is at GET /entries/<entry id> on the service.",
        ) from None
    if as_json:
        _emit(
            {
                "kind": spec.name,
                "entry_id": registered.entry_id,
                "index": registered.leaf_index,
                "transparent_statement": str(target),
            }
        )
        return
    _say(statement.entry_id)
    where = "" if registered.leaf_index is None else f" at index {registered.leaf_index}"
    _note(f"{spec.name} registered{where}; transparent statement saved to {target}")


def _main_id(value: object) -> str:
    """What a payload is mainly about, for its default subject."""
    for name in ("batch_id", "server_serial", "shipment_id"):
        found = getattr(value, name, None)
        if isinstance(found, str):
            return found
    parent = getattr(value, "parent", None)
    if parent is not None:
        return str(parent.serial)
    return str(getattr(value, "component", "fact"))


def challenge(
    server: Annotated[str, typer.Argument(help="The server's serial.")],
    count: Annotated[
        int, typer.Option(min=1, max=1024, help="How many nonces (one per device to challenge).")
    ] = 1,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Ask the service for fresh nonces for a server's attestation or arrival.

    Prints one hex nonce per line. Each is accepted once, for this server, until it
    expires (`challenge_ttl`, 300 s by default).
    """
    with connect(url, token_file) as service:
        nonces = service.challenge(server, count)
    if as_json:
        _emit({"server_serial": server, "nonces": [n.hex() for n in nonces]})
        return
    for nonce in nonces:
        _say(nonce.hex())
