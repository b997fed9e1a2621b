"""``sealtrail serve``: the HTTP service over a data directory's store."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI

from sealtrail.config import Config
from sealtrail.errors import ConfigError
from sealtrail.log import LogReader
from sealtrail.note import NoteVerifier
from sealtrail.scitt import key_id
from sealtrail.service import create_app, service_app
from sealtrail.storage import describe_store

from ._common import DEFAULT_DATA_DIR, DataDir, err, load
from .provenance import policy

__all__ = ["serve"]


def _read_only_app(config: Config) -> FastAPI:
    vkey = config.verifier_key()
    reader = LogReader(
        config.open_store(), origin=config.origin, verifiers=[NoteVerifier.parse(vkey)]
    )
    reader.checkpoint()  # fail fast on a store that does not match the key
    return create_app(reader, verifier_key=vkey)


def _writing_app(config: Config) -> FastAPI:
    if config.service_pkcs11 is None and not (config.data_dir / config.service_key_file).exists():
        raise ConfigError(
            f"no receipt key at {config.service_key_file}",
            hint="This data directory predates receipts: create the key with 'sealtrail keys "
            f"generate -o {config.data_dir / config.service_key_file}', or serve --read-only.",
        )
    store = config.open_store()
    checkpoint_signer = config.checkpoint_signer()
    # Fail fast on a store that does not match the key, before binding the port.
    LogReader(store, origin=config.origin, verifiers=[checkpoint_signer.verifier]).checkpoint()
    signer = config.service_signer()
    token_hash = config.admin_token_hash()
    err.print(
        f"Receipts signed by [bold]{config.service_issuer}[/bold] "
        f"({signer.algorithm}, kid {key_id(signer.verifier()).hex()[:16]}...); "
        + ("administration enabled" if token_hash else "administration disabled (no token)")
    )
    return service_app(
        store,
        checkpoint_signer=checkpoint_signer,
        service_signer=signer,
        issuer=config.service_issuer,
        retired=config.retired_verifiers(),
        admin_token_hash=token_hash,
        sequencer_config=config.sequencer,
        index=config.open_index(),
        max_statement_size=config.max_statement_size,
        provenance_policy=policy(config),
    )


def serve(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from config: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default from config: 8080; 0 picks one).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Store URL instead of the config's (postgresql://… lets several servers share "
            "one database; password via PGPASSWORD or ~/.pgpass)."
        ),
    ] = None,
    index: Annotated[
        str | None,
        typer.Option(help="Provenance index URL instead of the config's."),
    ] = None,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only", help="Serve checkpoints, tiles and proofs only: no sequencer, no SCRAPI."
        ),
    ] = False,
) -> None:
    """Serve the log and the transparency service (SCRAPI) until interrupted.

    The server runs the log's sequencer: registrations are sequenced and checkpointed here.
    Over PostgreSQL, run several: any of them takes registrations, one at a time sequences.
    With --read-only it only reads the store (run any number of those beside it).
    """
    config = load(data_dir)
    if store is not None:
        config = dataclasses.replace(config, store_url=store)
    if index is not None:
        config = dataclasses.replace(config, index_url=index)
    app = _read_only_app(config) if read_only else _writing_app(config)
    bind_host = host or config.host
    bind_port = config.port if port is None else port
    mode = "read-only " if read_only else ""
    err.print(
        f"Serving {mode}log [bold]{config.origin}[/bold] on http://{bind_host}:{bind_port}/ "
        f"from {describe_store(config.resolved_store_url())}"
    )
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning", access_log=False)
