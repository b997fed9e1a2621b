"""``sealtrail keys``: make signing keys, show and rotate the service's keys."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sealtrail.config import Config, issue_admin_token, rotate_service_key
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
from sealtrail.scitt import encode_key_set, key_id

from ._common import DEFAULT_DATA_DIR, DataDir, err, load, out
from .scitt import Force, _exists, _save

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
    if not force and (output.exists() or output.is_symlink()):
        raise _exists(output)
    config = load(data_dir)
    verifiers = [_receipt_verifier(config), *config.retired_verifiers()]
    seen: dict[bytes, Verifier] = {}
    for verifier in verifiers:
        seen.setdefault(key_id(verifier), verifier)
    _save(output, encode_key_set(list(seen.values())), force=force)
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
