"""``sealtrail keys``: make signing keys, show and rotate the service's keys."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sealtrail.config import (
    CHALLENGE_KEY_FILE,
    Config,
    issue_admin_token,
    open_log_store,
    rotate_service_key,
    write_challenge_key,
)
from sealtrail.errors import ConfigError
from sealtrail.keys import (
    ALGORITHMS,
    ES256,
    Pkcs11Signer,
    SoftwareSigner,
    Verifier,
    generate_signer,
    write_private_key,
)
from sealtrail.log import LogReader
from sealtrail.merkle import leaf_hash
from sealtrail.scitt import StatementRows, adopt_row_key, encode_key_set, key_id
from sealtrail.storage import StatementStore

from ._common import DEFAULT_DATA_DIR, DataDir, err, load, out, output_path, write_output
from .scitt import Force

__all__ = ["app"]

app = typer.Typer(
    help="Signing keys: generate one, show or rotate the service's, export its key set.",
    no_args_is_help=True,
)

Algorithm = Annotated[
    str, typer.Option("--algorithm", "-a", help=f"One of: {', '.join(ALGORITHMS)}.")
]


def _receipt_verifier(config: Config) -> Verifier:
    """The current receipt key's public half (an HSM session is closed again at once)."""
    signer = config.service_signer()
    try:
        return signer.verifier()
    finally:
        if isinstance(signer, Pkcs11Signer):
            signer.close()


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


@app.command("generate")
def generate(
    output: Annotated[Path, typer.Option("--out", "-o", help="Private key file to create.")],
    algorithm: Algorithm = ES256,
) -> None:
    """Create a software signing key (PKCS#8 PEM, mode 0600; never overwrites a file).

    Prints the key's COSE thumbprint kid and the entry to put under "keys" in an
    organization record, for statements signed with a kid instead of an x5chain.
    """
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}; supported: {', '.join(ALGORITHMS)}")
    signer = generate_signer(algorithm)
    assert isinstance(signer, SoftwareSigner)
    write_private_key(output, signer)
    _emit(
        {
            "file": str(output),
            "algorithm": signer.algorithm,
            "kid": key_id(signer.verifier()).hex(),
            "org_record_key": {
                "alg": signer.algorithm,
                "public_key": base64.b64encode(signer.public_key_bytes()).decode("ascii"),
            },
        }
    )


@app.command("show")
def show(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """The service's public keys: checkpoint verifier key, receipt key, retired keys."""
    config = load(data_dir)
    current = _receipt_verifier(config)
    retired = [
        {"algorithm": v.algorithm, "kid": key_id(v).hex()} for v in config.retired_verifiers()
    ]
    doc: dict[str, Any] = {
        "log_origin": config.origin,
        "log_verifier_key": config.verifier_key(),
        "issuer": config.service_issuer,
        "receipt_key": {
            "algorithm": current.algorithm,
            "kid": key_id(current).hex(),
            "source": "pkcs11" if config.service_pkcs11 else config.service_key_file,
        },
        "retired_receipt_keys": retired,
        "administration": "enabled" if config.admin_token_hash() else "disabled",
    }
    if json_out:
        _emit(doc)
        return
    out.print(f"log            {doc['log_origin']}")
    out.print(f"verifier key   {doc['log_verifier_key']}")
    out.print(f"issuer         {doc['issuer']}")
    out.print(f"receipt key    {current.algorithm}  kid {key_id(current).hex()}")
    for old in retired:
        out.print(f"retired        {old['algorithm']}  kid {old['kid']}")
    out.print(f"administration {doc['administration']}")


@app.command("rotate")
def rotate(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    algorithm: Annotated[
        str | None,
        typer.Option("--algorithm", "-a", help="Algorithm of the new key (default: the same)."),
    ] = None,
) -> None:
    """Retire the receipt key and create a new one; old receipts keep verifying.

    The retired public key stays in /.well-known/scitt-keys. Restart the server to sign
    with the new key.
    """
    rotation = rotate_service_key(load(data_dir), algorithm=algorithm)
    out.print(f"retired receipt key  kid {rotation.retired_kid.hex()}")
    out.print(f"new receipt key      kid {rotation.current_kid.hex()} ({rotation.algorithm})")
    err.print("Restart 'sealtrail serve' to sign receipts with the new key.")


@app.command("export")
def export(
    output: Annotated[Path, typer.Option("--out", "-o", help="COSE_KeySet file to write.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    force: Force = False,
) -> None:
    """Write the receipt keys (current and retired) as a COSE_KeySet for offline verifiers.

    The same bytes as GET /.well-known/scitt-keys.
    """
    output_path(output, force=force, option="--out")
    config = load(data_dir)
    verifiers = [_receipt_verifier(config), *config.retired_verifiers()]
    seen: dict[bytes, Verifier] = {}
    for verifier in verifiers:
        seen.setdefault(key_id(verifier), verifier)
    write_output(output, encode_key_set(list(seen.values())), force=force, option="--out")
    out.print(f"wrote {len(seen)} receipt key(s) to {output}")


@app.command("admin-token")
def admin_token(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Issue a new administrator token (shown once); the previous one stops working.

    A running server reads the token hash at start: the new token works, and the old one
    stops, on each server once it is restarted.
    """
    token = issue_admin_token(load(data_dir))
    err.print("New administrator token (shown once):")
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    err.print(
        "Restart every server of this log: until then each one still takes the old token, "
        "not this one."
    )


#: Backlog rows read per step when looking for statements not yet in the log.
_PENDING_STEP = 4096


def _pending(store: StatementStore, reader: LogReader, rows: StatementRows) -> tuple[int, int]:
    """Rows above the sequenced watermark whose entry the log does not hold: those whose
    tag verifies under ``rows`` (the current key: statements a server stored, which it
    would append), and the others (written behind the service, or tagged under another
    key: no server appends them)."""
    pending = foreign = 0
    seq = store.read_sequenced()
    while found := store.backlog_since(seq, limit=_PENDING_STEP):
        leaves = {leaf_hash(r.entry_id): rows.valid(r) for r in found if r.readable}
        logged = reader.indexes_of(list(leaves))
        waiting = [valid for leaf, valid in leaves.items() if leaf not in logged]
        pending += sum(waiting)
        foreign += len(waiting) - sum(waiting) + sum(not r.readable for r in found)
        seq = found[-1].seq
    return pending, foreign


@app.command("challenge-key")
def challenge_key(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    adopt: Annotated[
        bool,
        typer.Option(
            "--adopt",
            help=f"Record {CHALLENGE_KEY_FILE} as it is (a file copied from another host) "
            "instead of making a new one.",
        ),
    ] = False,
) -> None:
    """Replace the challenge key and record it in the store; stop every server first.

    The challenge key seals challenge nonces and keys the tag of every statement row
    (docs/keys.md): the store records which key its rows are tagged under, and a server
    given another refuses to start. Refused while statements are stored but not yet in the
    log (their rows carry the old key's tags): start a server and stop it with SIGTERM
    first, and it appends them.
    """
    config = load(data_dir)
    verifier = config.checkpoint_signer().verifier
    store = open_log_store(config, verifier=verifier)
    try:
        current = config.challenge_key()
        reader = LogReader(store, origin=config.origin, verifiers=[verifier])
        pending, foreign = (
            (0, 0) if current is None else _pending(store, reader, StatementRows(current))
        )
        if foreign:
            err.print(
                f"{foreign} row(s) of the statement store are not in the log and carry no "
                f"tag that verifies under {CHALLENGE_KEY_FILE}: no server appends them "
                "(`sealtrail audit` names them)."
            )
        if pending:
            raise ConfigError(
                f"{pending} stored statement(s) are not in the log yet: under another key "
                "the sequencer would refuse their rows",
                hint="Start a server of this data directory and stop it with SIGTERM (it "
                "appends them first), then run this again.",
                code="statements-pending",
            )
        if not adopt:
            write_challenge_key(config)
        key = config.challenge_key()
        if key is None:
            raise ConfigError(f"no challenge key at {CHALLENGE_KEY_FILE}")
        adopt_row_key(store, StatementRows(key), replace=True)
    finally:
        store.close()
    done = (
        f"Recorded {CHALLENGE_KEY_FILE} as the key of this store's statement rows."
        if adopt
        else f"New challenge key in {CHALLENGE_KEY_FILE}, recorded in the store."
    )
    err.print(
        f"{done} Copy it to every host of this deployment (mode 0600) before starting the "
        "servers; challenge nonces issued before it stop being accepted."
    )
