"""``sealtrail serve``: the HTTP service over a data directory's store."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from sealtrail.log import LogReader
from sealtrail.note import NoteVerifier
from sealtrail.service import create_app

from ._common import DEFAULT_DATA_DIR, DataDir, err, load

__all__ = ["serve"]


def serve(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from config: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default from config: 8080; 0 picks one).")
    ] = None,
) -> None:
    """Serve the tlog-tiles read API and proof routes until interrupted."""
    config = load(data_dir)
    vkey = config.verifier_key()
    reader = LogReader(
        config.open_store(), origin=config.origin, verifiers=[NoteVerifier.parse(vkey)]
    )
    reader.checkpoint()  # fail fast on a store that does not match the key
    app = create_app(reader, verifier_key=vkey)
    bind_host = host or config.host
    bind_port = config.port if port is None else port
    err.print(f"Serving log [bold]{config.origin}[/bold] on http://{bind_host}:{bind_port}/")
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning", access_log=False)
