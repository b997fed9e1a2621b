"""``sealtrail log``: append, prove and verify from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer

from sealtrail.client import TileSource
from sealtrail.config import Config, check_store_url, open_log_store
from sealtrail.errors import Corruption, InvalidInput, InvalidProof, StorageError, TooLarge
from sealtrail.log import (
    MAX_ENTRY_SIZE,
    ROLLED_BACK,
    ConsistencyProof,
    InclusionProof,
    LogReader,
    Sequencer,
    SignedCheckpoint,
    export_tiles,
    verify_checkpoint,
)
from sealtrail.merkle import leaf_hash
from sealtrail.note import MAX_NOTE_SIZE, NoteVerifier
from sealtrail.scitt._registry import load_json
from sealtrail.storage import MemoryStore, PostgresStore, SQLiteStore

from ._common import (
    DEFAULT_DATA_DIR,
    DataDir,
    err,
    load,
    out,
    output_path,
    progress_bar,
    write_output,
)
from .passport import _vkey
from .scitt import _opened, _read

__all__ = ["app"]

app = typer.Typer(help="Append to the log, get proofs, verify them.", no_args_is_help=True)
proof_app = typer.Typer(
    help="Inclusion and consistency proofs as JSON documents.", no_args_is_help=True
)
app.add_typer(proof_app, name="proof")

#: Bounds of ``export-tiles --watch``: seconds between two looks at the log.
MIN_WATCH = 0.1
MAX_WATCH = 3600.0

#: ``--origin``: the log's origin when its key is named otherwise (C2SP tlog-checkpoint:
#: the key name SHOULD match the origin, so that is the default).
Origin = Annotated[
    str | None,
    typer.Option(
        help="The log's origin (its checkpoints' first line), if its key is named otherwise. "
        "Default: the key's name.",
        show_default=False,
    ),
]

#: Entries handed to the sequencer per await: keeps memory flat on large inputs.
CHUNK = 4096
#: Largest proof document or checkpoint file read (a proof is a few KB).
MAX_DOCUMENT = 1024 * 1024


def _reader(data_dir: Path) -> LogReader:
    config = load(data_dir)
    return LogReader(
        open_log_store(config),
        origin=config.origin,
        verifiers=[NoteVerifier.parse(config.verifier_key())],
    )


def _read_entries(files: list[Path], lines: Path | None) -> list[bytes]:
    entries = [_read_entry(f) for f in files]
    if lines is not None:
        entries += _read_lines(lines)
    if not entries:
        raise InvalidInput("nothing to append: give files, or --lines FILE (- for stdin)")
    return entries


def _raw_log_only(config: Config) -> MemoryStore | SQLiteStore | PostgresStore:
    """The store to append raw entries to, once it is known to hold this directory's log and
    nothing else: refused where raw entries would bypass the sequencer role of servers
    that share the store, or share the log with registered statements."""
    if check_store_url(config.resolved_store_url()) == "postgresql":
        raise InvalidInput(
            "this log's store is shared by servers (PostgreSQL): only the process that holds "
            "the sequencer role appends to it",
            hint="Register statements through a server (sealtrail submit, sealtrail record).",
            code="raw-append-refused",
        )
    store = open_log_store(config)
    if store.statements_since(0, limit=1):
        store.close()
        raise InvalidInput(
            "this log serves the transparency service: its entries are registered statements, "
            "and a raw entry among them would be flagged by the audit",
            hint="Register statements through the server (sealtrail submit, sealtrail record).",
            code="raw-append-refused",
        )
    return store


def _read_lines(lines: Path) -> list[bytes]:
    """The non-empty lines of ``lines`` (``-``: standard input), each an entry."""
    if str(lines) != "-":
        with _opened(lines, "lines file") as stream:
            return _entry_lines(stream, str(lines))
    try:
        return _entry_lines(sys.stdin.buffer, "stdin")
    except OSError as exc:
        raise InvalidInput(f"cannot read stdin: {exc.strerror}") from exc


def _entry_lines(stream: BinaryIO, where: str) -> list[bytes]:
    """Read one line at a time: a line longer than an entry may be is refused as soon as
    it is seen, never read whole."""
    entries = []
    for number, line in enumerate(iter(lambda: stream.readline(MAX_ENTRY_SIZE + 2), b"")):
        entry = line.removesuffix(b"\n")
        if len(entry) > MAX_ENTRY_SIZE:
            raise TooLarge(
                f"line {number + 1} of {where} is longer than an entry may be "
                f"({MAX_ENTRY_SIZE} bytes)"
            )
        if entry:
            entries.append(entry)
    return entries


def _read_entry(path: Path) -> bytes:
    return _read(path, "entry", limit=MAX_ENTRY_SIZE)


def _read_file(path: Path) -> bytes:
    """A proof document or a checkpoint: small, and read no further than that."""
    return _read(path, "file", limit=MAX_DOCUMENT)


@app.command()
def append(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Each file's bytes become one entry.")
    ] = None,
    lines: Annotated[
        Path | None,
        typer.Option(help="Each non-empty line of FILE (- for stdin) becomes one entry."),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Append entries durably and print their indexes (an existing entry keeps its index)."""
    entries = _read_entries(files or [], lines)
    config = load(data_dir)
    store = _raw_log_only(config)

    async def run() -> tuple[list[int], SignedCheckpoint | None]:
        indexes: list[int] = []
        async with Sequencer(
            store, signer=config.checkpoint_signer(), config=config.sequencer
        ) as seq:
            with progress_bar(
                "appending", len(entries), quiet=quiet or len(entries) < CHUNK
            ) as bar:
                for start in range(0, len(entries), CHUNK):
                    indexes += await seq.add_many(entries[start : start + CHUNK])
                    bar.advance(bar.task_ids[0], min(CHUNK, len(entries) - start))
            return indexes, seq.latest

    try:
        indexes, latest = asyncio.run(run())
    finally:
        store.close()
    if len(indexes) <= 20:
        for index in indexes:
            out.print(index)
    else:
        out.print(f"{len(indexes)} entries at indexes {min(indexes)}..{max(indexes)}")
    if latest is not None:
        err.print(f"log size {latest.size}, root {latest.root.hex()}")


@app.command()
def checkpoint(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Print the latest signed checkpoint."""
    latest = _reader(data_dir).checkpoint()
    if latest is None:
        raise InvalidInput("the log is empty: append something first")
    sys.stdout.write(latest.note.decode("utf-8"))


@proof_app.command("inclusion")
def proof_inclusion(
    index: Annotated[int | None, typer.Option(help="Entry index.")] = None,
    leaf: Annotated[str | None, typer.Option("--leaf-hash", help="Entry leaf hash (hex).")] = None,
    entry: Annotated[Path | None, typer.Option(help="File holding the entry itself.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Print an inclusion proof for the latest checkpoint, bundled with that checkpoint."""
    if sum(x is not None for x in (index, leaf, entry)) != 1:
        raise InvalidInput("give exactly one of --index, --leaf-hash, --entry")
    reader = _reader(data_dir)
    latest = reader.checkpoint()
    if latest is None:
        raise InvalidInput("the log is empty")
    if index is not None:
        proof = reader.inclusion_proof(index, size=latest.size)
    else:
        wanted = leaf_hash(_read_entry(entry)) if entry is not None else _hex32(leaf or "")
        proof = reader.inclusion_proof_by_hash(wanted, size=latest.size)
    _emit({"checkpoint": latest.note.decode("utf-8"), "inclusion_proof": proof.to_dict()})


@proof_app.command("consistency")
def proof_consistency(
    size1: Annotated[int, typer.Option("--from", help="The older tree size.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Print a consistency proof from an older size to the latest checkpoint, bundled with it."""
    reader = _reader(data_dir)
    latest = reader.checkpoint()
    if latest is None:
        raise InvalidInput("the log is empty")
    proof = reader.consistency_proof(size1, latest.size)
    _emit({"checkpoint": latest.note.decode("utf-8"), "consistency_proof": proof.to_dict()})


@app.command("verify-proof")
def verify_proof(
    document: Annotated[Path, typer.Argument(help="A proof document from `sealtrail log proof`.")],
    vkey: Annotated[
        str,
        typer.Option(
            help="The log's verifier key (name+keyhash+base64), or a file holding it: log.vkey."
        ),
    ],
    entry: Annotated[
        Path | None, typer.Option(help="Also check the proof is for this entry.")
    ] = None,
    old_checkpoint: Annotated[
        Path | None,
        typer.Option(help="For a consistency proof: the older signed checkpoint you hold."),
    ] = None,
    origin: Origin = None,
) -> None:
    """Verify a proof offline, with only the log's public key. Exit 0 only if it holds.

    --entry goes with an inclusion proof, --old-checkpoint with a consistency proof; either
    given for a document without that proof is refused, never ignored.
    """
    verifier = NoteVerifier.parse(_vkey(vkey))
    origin = verifier.name if origin is None else origin
    doc = _load_doc(document)
    inclusion, consistency = "inclusion_proof" in doc, "consistency_proof" in doc
    if not inclusion and not consistency:
        raise InvalidInput("the document holds no inclusion_proof or consistency_proof")
    if entry is not None and not inclusion:
        raise _not_for(document, "--entry", "an inclusion proof")
    if old_checkpoint is not None and not consistency:
        raise _not_for(document, "--old-checkpoint", "a consistency proof")
    if consistency and old_checkpoint is None:
        raise InvalidInput("a consistency proof needs --old-checkpoint")
    latest = _open_checkpoint(doc.get("checkpoint"), verifier, origin)
    verified = []
    if inclusion:
        proof = InclusionProof.from_dict(doc["inclusion_proof"])
        if proof.size != latest.size:
            raise InvalidProof(f"proof is for size {proof.size}, the checkpoint has {latest.size}")
        if entry is not None and leaf_hash(_read_entry(entry)) != proof.leaf_hash:
            raise InvalidProof("the proof is for a different entry")
        proof.verify(latest.root)
        verified.append(
            f"OK: entry {proof.index} is in {latest.checkpoint.origin} at size {latest.size}"
        )
    if consistency:
        assert old_checkpoint is not None
        old = _open_checkpoint(
            _read_file(old_checkpoint).decode("utf-8", "replace"), verifier, origin
        )
        cproof = ConsistencyProof.from_dict(doc["consistency_proof"])
        if (cproof.size1, cproof.size2) != (old.size, latest.size):
            raise InvalidProof(
                f"proof is for sizes {cproof.size1}->{cproof.size2}, checkpoints are "
                f"{old.size}->{latest.size}"
            )
        cproof.verify(old.root, latest.root)
        verified.append(f"OK: size {latest.size} extends size {old.size} (append-only)")
    for line in verified:  # said once every proof the document holds has verified
        out.print(line, markup=False)


def _not_for(document: Path, option: str, proof: str) -> InvalidInput:
    return InvalidInput(
        f"{option} goes with {proof}, and {document} holds none",
        code="option-not-applicable",
        hint=f"Leave out {option}, or give a document holding {proof}.",
    )


@app.command()
def verify(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    tiles: Annotated[
        str | None,
        typer.Option(
            help="Verify the log from its tiles alone, with no store: a directory "
            "`export-tiles` wrote, or the log's http(s):// URL. Needs --vkey.",
            metavar="DIR|URL",
        ),
    ] = None,
    vkey: Annotated[
        str | None,
        typer.Option(help="With --tiles: the log's verifier key, or its file log.vkey."),
    ] = None,
    origin: Origin = None,
    since: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint of this log kept earlier: the log must extend it (a "
            "consistency proof computed from the tiles, not asked of the server).",
            metavar="FILE",
        ),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="Write the checkpoint verified here, for the next --since: a new file, or "
            "a regular file it replaces (no --force needed), in a directory that exists.",
            metavar="FILE",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Audit the whole log from scratch: every entry rehashed, every tile and the root checked.

    From the data directory's store, or with --tiles from a server's or a mirror's tiles:
    an auditor's check that needs nothing but the log's public key.
    """
    if save is not None:  # checked before the audit, which may be long
        output_path(save, force=True, option="--save")
    if tiles is None:
        if vkey is not None or origin is not None:
            raise InvalidInput(
                "--vkey and --origin go with --tiles: the data directory has the log's key "
                "and origin"
            )
        reader = _reader(data_dir)
    else:
        if vkey is None:
            raise InvalidInput("--tiles needs --vkey: the log's verifier key, or its file")
        verifier = NoteVerifier.parse(_vkey(vkey))
        # The reader takes its one key for the log's, whatever its name (verify_checkpoint).
        reader = LogReader(
            TileSource(tiles),
            origin=verifier.name if origin is None else origin,
            verifiers=[verifier],
        )
    try:
        kept = None if since is None else _kept(since, reader)
        size = reader.size()
        with progress_bar("verifying", size, quiet=quiet) as bar:
            task = bar.task_ids[0]
            latest = reader.audit(progress=lambda done, _total: bar.update(task, completed=done))
        if kept is not None:
            _extends(reader, kept, latest, since)
    finally:
        reader.store.close()
    if latest is None:
        out.print("OK: the log is empty")
        return
    out.print(f"OK: {latest.size} entries hash to the signed root {latest.root.hex()}")
    if kept is not None:
        out.print(f"OK: the log extends the checkpoint of size {kept.size} in {since}")
    if save is not None:
        _save_checkpoint(save, latest)


def _kept(path: Path, reader: LogReader) -> SignedCheckpoint:
    """The checkpoint kept in ``path``, signed by the log's key."""
    note = _read(path, "checkpoint", limit=MAX_NOTE_SIZE)
    return verify_checkpoint(note, origin=reader.origin, verifiers=reader.verifiers)


def _extends(
    reader: LogReader, kept: SignedCheckpoint, latest: SignedCheckpoint | None, where: Path | None
) -> None:
    """Refuse a log that does not extend ``kept``: behind it (rolled back) or a fork."""
    try:
        reader.check_extends(kept, latest)
    except Corruption as exc:
        if exc.code != ROLLED_BACK:
            raise
        size = 0 if latest is None else latest.size
        raise InvalidProof(
            f"the log is at size {size}, behind the checkpoint of size {kept.size} in "
            f"{where}: it was rolled back, or this is not the log you kept it from",
            code=ROLLED_BACK,
        ) from None


def _save_checkpoint(path: Path, latest: SignedCheckpoint) -> None:
    """``latest`` to ``path`` by a rename: a reader of it never sees half a checkpoint. The
    file there is replaced (the next run's --since is the last run's --save), but only a
    regular file (:func:`write_output`)."""
    write_output(path, latest.note, force=True, option="--save")
    err.print(f"checkpoint of size {latest.size} saved to {path}")


@app.command("export-tiles")
def export_tiles_command(
    directory: Annotated[
        Path, typer.Argument(help="Where the tiles go (made if missing); serve it as /.")
    ],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    watch: Annotated[
        float | None,
        typer.Option(
            min=MIN_WATCH,
            max=MAX_WATCH,
            help="Export again every SECONDS as the log grows, until interrupted.",
            metavar="SECONDS",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write the log as static files (C2SP tlog-tiles): tiles, entry bundles, checkpoint.

    A web server or CDN serving DIRECTORY answers the log's read API (/checkpoint, /tile/…)
    byte for byte as `sealtrail serve` does. Exporting again writes only what is new; the
    checkpoint is written last.
    """
    reader = _reader(data_dir)
    try:
        # Interrupted here, the export is incomplete: the command fails as any other does.
        exported = _export_once(reader, directory, quiet=quiet)
        if watch is None:
            return
        try:
            with _stopped_by_sigterm():
                while True:
                    time.sleep(watch)
                    try:
                        if reader.size() != exported:
                            exported = _export_once(reader, directory, quiet=True)
                    except StorageError as exc:
                        if isinstance(exc, Corruption):
                            raise
                        # The store is away for a while (a database restart): the mirror
                        # waits.
                        err.print(f"warning: {exc} ({exc.code}); trying again in {watch:g} s")
        except KeyboardInterrupt:
            # How a watching mirror is meant to end: what it exported is a whole export
            # (each writes its checkpoint last), one stopped half-way included.
            err.print("stopped")
    finally:
        reader.store.close()


def _export_once(reader: LogReader, directory: Path, *, quiet: bool) -> int:
    """One export, said in one line: the size exported."""
    with progress_bar("exporting", 0, quiet=quiet) as bar:
        task = bar.task_ids[0]
        done = export_tiles(
            reader,
            directory,
            progress=lambda n, total: bar.update(task, completed=n, total=total),
        )
    if done.checkpoint is None:
        out.print(f"the log is empty: nothing exported to {directory}")
        return 0
    out.print(
        f"exported the log at size {done.checkpoint.size} to {directory}: "
        f"{done.written} tiles written, {done.kept} already there"
    )
    return done.checkpoint.size


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM (a service manager's stop) ends the loop as Ctrl-C does."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _hex32(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise InvalidInput("--leaf-hash must be hex") from exc
    if len(raw) != 32:
        raise InvalidInput("--leaf-hash must be 32 bytes (64 hex digits)")
    return raw


def _load_doc(path: Path) -> dict[str, Any]:
    """A proof document: JSON (none too deep or with too long a number: ``load_json``)."""
    doc = load_json(
        _read_file(path), f"{path} is not a JSON proof document", code=InvalidInput.code
    )
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path} is not a JSON proof document")
    return doc


def _open_checkpoint(text: object, verifier: NoteVerifier, origin: str) -> SignedCheckpoint:
    if not isinstance(text, str):
        raise InvalidInput("the document holds no checkpoint")
    return verify_checkpoint(
        text.encode("utf-8"), origin=origin, verifiers=[verifier], key_name=verifier.name
    )


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
