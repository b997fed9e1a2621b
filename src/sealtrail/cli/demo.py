"""``sealtrail demo``: a running log, entries appended, proofs fetched over HTTP and checked.

Reuses the data directory if it exists (the log just grows), else creates it. Starts
``sealtrail serve`` on 127.0.0.1, appends entries from this process while the server reads
the same store, then verifies what the server says with nothing but the log's public key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from sealtrail.config import CONFIG_FILE, Config, init_data_dir
from sealtrail.errors import InvalidProof, StorageError, VerificationError
from sealtrail.log import (
    ConsistencyProof,
    InclusionProof,
    Sequencer,
    SignedCheckpoint,
    bundle_entries,
    verify_checkpoint,
)
from sealtrail.merkle import leaf_hash
from sealtrail.note import NoteVerifier

from ._common import DataDir, err, load, out, progress_bar

__all__ = ["demo"]

DEMO_ENTRIES = 5000
CHUNK = 1000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
            raise StorageError(
                f"the server exited at start: {detail.splitlines()[-1:] or 'no output'}"
            )
        try:
            httpx.get(f"http://127.0.0.1:{port}/log/v1/info", timeout=1.0)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise StorageError("the server did not start within 20 s")


def _append(config: Config, entries: list[bytes]) -> None:
    store = config.open_store()

    async def run() -> None:
        async with Sequencer(
            store, signer=config.checkpoint_signer(), config=config.sequencer
        ) as seq:
            with progress_bar("appending", len(entries)) as bar:
                for start in range(0, len(entries), CHUNK):
                    await seq.add_many(entries[start : start + CHUNK])
                    bar.advance(bar.task_ids[0], len(entries[start : start + CHUNK]))

    try:
        asyncio.run(run())
    finally:
        store.close()


def _checkpoint(client: httpx.Client, verifier: NoteVerifier) -> SignedCheckpoint:
    response = client.get("/checkpoint")
    response.raise_for_status()
    return verify_checkpoint(response.content, origin=verifier.name, verifiers=[verifier])


#: Where the demo talks to a human: stdout, or stderr when stdout carries the JSON summary.
_ui = [out]


def _say(text: str) -> None:
    _ui[0].print(text, soft_wrap=True)  # never wrap: the commands must copy and paste


def _step(text: str, ok: bool = True) -> None:
    mark = "[green]✔[/green]" if ok else "[red]✘[/red]"
    _say(f" {mark} {text}")


def _run_checks(
    client: httpx.Client, verifier: NoteVerifier, pinned: SignedCheckpoint | None
) -> tuple[dict[str, Any], SignedCheckpoint]:
    latest = _checkpoint(client, verifier)
    _step(f"checkpoint verified with the log's public key: size {latest.size}")
    index = latest.size // 2
    proof = InclusionProof.from_dict(
        client.get("/log/v1/proof/inclusion", params={"index": index}).json()
    )
    entry = client.get(f"/log/v1/entries/{index}").content
    if leaf_hash(entry) != proof.leaf_hash:
        raise InvalidProof("the served entry does not match the proof's leaf hash")
    proof.verify(latest.root)
    _step(f"entry {index} proven included (inclusion proof of {len(proof.hashes)} hashes)")

    bundle = bundle_entries(client.get("/tile/entries/000").content)
    tile = client.get("/tile/0/000").content
    if [leaf_hash(e) for e in bundle] != [tile[i : i + 32] for i in range(0, len(tile), 32)]:
        raise InvalidProof("entry bundle 0 does not hash to level-0 tile 0")
    _step(f"entry bundle 0 ({len(bundle)} entries) hashes to tile 0/000, as C2SP tlog-tiles says")

    if pinned is not None:
        before = pinned.size
        doc = client.get("/log/v1/proof/consistency", params={"size1": before}).json()
        ConsistencyProof.from_dict(doc).verify(pinned.root, latest.root)
        _step(
            f"size {latest.size} extends the checkpoint pinned by the previous run "
            f"(size {before}): consistency proof"
        )

    forged = InclusionProof(
        proof.index, proof.size, proof.leaf_hash, [bytes(32), *proof.hashes[1:]]
    )
    try:
        forged.verify(latest.root)
    except VerificationError:
        _step("a proof with one hash altered is rejected")
    else:
        raise InvalidProof("a forged proof verified")
    return {"size": latest.size, "root": latest.root.hex()}, latest


#: Where the demo, like a client, pins the last checkpoint it verified.
PINNED = "demo-pinned.checkpoint"


def _pinned(data_dir: Path, verifier: NoteVerifier) -> SignedCheckpoint | None:
    path = data_dir / PINNED
    if not path.exists():
        return None
    note = path.read_bytes()
    return verify_checkpoint(note, origin=verifier.name, verifiers=[verifier])


def demo(
    data_dir: DataDir = Path(".sealtrail-demo"),
    entries: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Entries to append.")
    ] = DEMO_ENTRIES,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 0,
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop the server when done.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout.")
    ] = False,
) -> None:
    """Run a log end to end on this machine and show that its proofs hold."""
    _ui[0] = err if as_json else out
    if (data_dir / CONFIG_FILE).exists():
        config = load(data_dir)
        err.print(f"Reusing {data_dir} (log {config.origin}); delete it to start clean.")
    else:
        config = init_data_dir(data_dir).config
        err.print(
            f"Created {data_dir} for log {config.origin} (key in {config.key_file}, mode 0600)"
        )
    verifier = NoteVerifier.parse(config.verifier_key())
    port = port or _free_port()
    server = _start_server(data_dir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10.0) as client:
            pinned = _pinned(data_dir, verifier)
            before = int(client.get("/log/v1/info").json()["size"])
            stamp = int(time.time())
            batch = [
                json.dumps({"demo": "sealtrail", "run": stamp, "n": before + i}).encode()
                for i in range(entries)
            ]
            _append(config, batch)
            summary, latest = _run_checks(client, verifier, pinned)
            (data_dir / PINNED).write_bytes(latest.note)
        summary.update(url=base, data_dir=str(data_dir), ok=True)
        if as_json:
            sys.stdout.write(json.dumps(summary) + "\n")
        _say(f"\nThe log is served at [bold]{base}[/bold]. Try:")
        _say(f"  curl {base}/checkpoint")
        _say(f"  curl -s {base}/tile/0/000 | xxd | head")
        _say(f"  curl '{base}/log/v1/proof/inclusion?index=0'")
        _say(f"  .venv/bin/sealtrail log verify --data-dir {data_dir}")
        prove = f".venv/bin/sealtrail log proof inclusion --index 0 --data-dir {data_dir}"
        _say(f"  {prove} > proof.json")
        vkey = verifier.verifier_key()
        _say(f"  .venv/bin/sealtrail log verify-proof proof.json --vkey '{vkey}'")
        _say(f"  API docs: {base}/docs")
        if exit_after:
            return
        _say("\nPress Ctrl-C to stop the server.")
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
