"""SCITT from the command line: sign, submit, fetch the service keys, verify, onboard.

``statement sign`` and ``verify`` are offline. ``submit``, ``fetch-keys`` and ``org put``
talk to a transparency service at ``--url`` (or ``$SEALTRAIL_URL``). Output files are
checked before anything is signed or sent, never overwritten without ``--force``, and
never anything but a regular file (``_common.output_path``); secrets (keys, the
administrator token) are read from files or the environment, never from the command line,
where ``ps`` would show them.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sealtrail.client import DEFAULT_TIMEOUT, MAX_RESPONSE_SIZE, Client
from sealtrail.errors import ConfigError, Error, InvalidInput, TooLarge, VerificationError
from sealtrail.keys import Signer, Verifier, load_signer, verifier_for
from sealtrail.scitt import (
    MAX_STATEMENT_SIZE,
    VerifiedStatement,
    decode_key_set,
    key_id,
    load_certificates,
    parse_org_record,
    parse_statement,
    sign_statement,
    verify_transparent_statement,
)

from ._common import (
    TokenFile,
    connect,
    err,
    out,
    output_path,
    read_token,
    tls,
    write_output,
)

__all__ = ["fetch_keys", "org_app", "statement_app", "submit", "verify"]

statement_app = typer.Typer(help="Make signed statements (COSE_Sign1).", no_args_is_help=True)
org_app = typer.Typer(
    help="Onboard and change organizations on a transparency service.", no_args_is_help=True
)

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "SEALTRAIL_URL"
TOKEN_ENV = "SEALTRAIL_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)
#: Largest COSE file read (a statement is at most 1 MiB; receipts add a little).
MAX_COSE_FILE = MAX_RESPONSE_SIZE
#: Largest certificate, public key, organization record or key set file read.
MAX_SMALL_FILE = 1024 * 1024
TRANSPARENT_SUFFIX = ".transparent.cose"

Url = Annotated[
    str,
    typer.Option("--url", envvar=URL_ENV, help="The transparency service's base URL."),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace an existing output file (a regular file only: a directory, device "
        "or FIFO is never replaced).",
    ),
]
#: What to do about a local file that could not be read.
READ_HINT = "Check the path, and that this user may read it."
AsJson = Annotated[bool, typer.Option("--json", help="Print a JSON document instead.")]


class HashEnvelope(StrEnum):
    """Digest algorithms for a COSE hash envelope."""

    SHA256 = "sha-256"
    SHA384 = "sha-384"


# -- signing ----------------------------------------------------------------------------------


@statement_app.command("sign")
def sign(
    payload: Annotated[Path, typer.Argument(help="The content to sign (- for stdin).")],
    key: Annotated[Path, typer.Option(help="The signing key: PKCS#8 PEM, mode 0600.")],
    issuer: Annotated[str, typer.Option(help="The iss claim: your organization's issuer.")],
    subject: Annotated[str, typer.Option(help="The sub claim: what the statement is about.")],
    content_type: Annotated[
        str, typer.Option(help="The payload's media type (the hashed content's, when hashed).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
    x5chain: Annotated[
        Path | None,
        typer.Option(
            help="PEM certificates, the key's certificate first. Without it the statement "
            "names the key by its kid, which must be registered with the organization."
        ),
    ] = None,
    hash_envelope: Annotated[
        HashEnvelope | None,
        typer.Option(
            help="Sign the content's digest instead of the content. The content may be of "
            "any size: it is hashed as it is read, 1 MiB at a time, with no limit (an "
            "endless input such as /dev/zero runs until interrupted)."
        ),
    ] = None,
    location: Annotated[
        str | None, typer.Option(help="Where the hashed content can be fetched.")
    ] = None,
    force: Force = False,
) -> None:
    """Sign PAYLOAD into a signed statement, ready for `sealtrail submit`."""
    if location is not None and hash_envelope is None:
        raise InvalidInput("--location goes with --hash-envelope (it says where the content is)")
    _writable(output, force=force)
    signer = _load_key(key)
    chain = _load_chain(x5chain, signer) if x5chain is not None else []
    with _payload(payload) as stream:
        content: bytes | BinaryIO = stream
        if hash_envelope is None:  # else hashed as it is read, never held whole
            content = _bounded(stream, payload)
        data = sign_statement(
            signer,
            issuer=issuer,
            subject=subject,
            content_type=content_type,
            payload=content,
            x5chain=chain,
            hash_envelope=None if hash_envelope is None else hash_envelope.value,
            location=location,
        )
    statement = parse_statement(data)  # the profile the service will check, before writing
    _save(output, data, force=force)
    _note(f"wrote {output} ({len(data)} bytes, entry id {statement.entry_id})")


def _load_key(path: Path) -> Signer:
    try:
        return load_signer(path)
    except ConfigError as exc:
        if exc.hint != ConfigError.hint:
            raise
        raise ConfigError(
            exc.message, hint="Give --key a PKCS#8 PEM private key file with mode 0600."
        ) from None


def _load_chain(path: Path, signer: Signer) -> list[bytes]:
    certificates = _certificates(path, "--x5chain")
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if certificates[0].public_key().public_bytes(der, spki) != signer.public_key().public_bytes(
        der, spki
    ):
        raise InvalidInput(
            f"the first certificate in {path} is not for --key",
            hint="Put the signing key's own certificate first, then its issuers.",
        )
    return [c.public_bytes(der) for c in certificates]


# -- talking to the service -------------------------------------------------------------------


def submit(
    statement: Annotated[Path, typer.Argument(help="A signed statement (COSE_Sign1).")],
    url: Url = DEFAULT_URL,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=f"Where to save the transparent statement (default: STATEMENT with suffix "
            f"{TRANSPARENT_SUFFIX}).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the registration.")
    ] = DEFAULT_TIMEOUT,
    token_file: TokenFile = None,
    service_keys: Annotated[
        Path | None,
        typer.Option(
            help="Verify the receipt with the service's key set you pinned (from `sealtrail "
            "fetch-keys`) before saving it."
        ),
    ] = None,
    as_json: AsJson = False,
    force: Force = False,
) -> None:
    """Register a signed statement, wait for its receipt, save the transparent statement.

    Prints the entry id. Submitting the same statement again is harmless: it keeps its
    entry, and you get a fresh receipt. With --service-keys, a receipt that does not verify
    is not saved and the command fails.
    """
    if not timeout > 0:
        raise InvalidInput("--timeout must be a positive number of seconds")
    keys = read_service_keys(service_keys) if service_keys is not None else None
    data = _read(statement, "statement", limit=MAX_COSE_FILE)
    try:
        parse_statement(data)
    except Error as exc:
        raise InvalidInput(
            f"{statement} is not a signed statement to register: {exc.message}", code=exc.code
        ) from None
    target = output or statement.with_suffix(TRANSPARENT_SUFFIX)
    if target.resolve() == statement.resolve():
        raise InvalidInput(f"{target} is the statement itself; choose another --output")
    _writable(target, force=force)
    with connect(url, token_file) as service:
        registered = service.register(data, timeout=timeout)
    transparent = registered.transparent_statement()
    if keys is not None:
        try:
            verify_transparent_statement(transparent, service_keys=keys)
        except Error as exc:
            raise VerificationError(
                f"registered as entry {registered.entry_id}, but its receipt does not verify "
                f"with {service_keys}: {exc.message}",
                code=exc.code,
                hint="Nothing was saved. Check that the key set is this service's; if it is, "
                "do not trust this service's receipts.",
            ) from None
    try:
        _save(target, transparent, force=force)
    except Error as exc:
        raise InvalidInput(
            f"registered as entry {registered.entry_id}, but {exc.message}",
            code=exc.code,
            hint="Fetch it again: submit the same statement with another --output.",
        ) from None
    if as_json:
        _emit(
            {
                "entry_id": registered.entry_id,
                "index": registered.leaf_index,
                "tree_size": registered.tree_size,
                "transparent_statement": str(target),
            }
        )
        return
    _say(registered.entry_id)
    where = "" if registered.leaf_index is None else f"at index {registered.leaf_index} "
    checked = "receipt unverified" if keys is None else f"receipt verified with {service_keys}"
    _note(f"registered {where}({checked}); transparent statement saved to {target}")


def fetch_keys(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the key set.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    force: Force = False,
) -> None:
    """Save the service's receipt keys (a COSE_KeySet) for offline `sealtrail verify`.

    This trusts the service the first time: compare the printed key ids with the ones its
    operator publishes elsewhere.
    """
    _writable(output, force=force)
    with connect(url, token_file) as service:
        data = service.service_keys()
    keys = decode_key_set(data)
    _save(output, data, force=force)
    # A key is found under its thumbprint and under the kid its set gives it, if another.
    distinct = {key_id(v): v for v in keys.values()}
    for thumbprint, verifier in distinct.items():
        named = [kid.hex() for kid, v in keys.items() if v == verifier and kid != thumbprint]
        _say(" ".join([thumbprint.hex(), verifier.algorithm, *(f"kid:{k}" for k in named)]))
    _note(f"saved {len(distinct)} service key(s) to {output}")


@org_app.command("put")
def org_put(
    record: Annotated[Path, typer.Argument(help="The organization record (JSON).")],
    url: Url = DEFAULT_URL,
    token_file: Annotated[
        Path | None,
        typer.Option(help=f"File holding the administrator token (mode 0600); else ${TOKEN_ENV}."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Onboard an organization, or change it (its "version" one more than the current one).

    The record becomes a log entry signed by the service; its name is its "org" field.
    """
    data = _read(record, "organization record", limit=MAX_SMALL_FILE)
    token = _admin_token(token_file)
    try:
        org = parse_org_record(data)
    except Error as exc:
        raise InvalidInput(f"{record}: {exc.message}", code=exc.code) from None
    with Client(url, tls=tls()) as service:
        registration = service.put_organization(org.name, data, token=token)
    if as_json:
        _emit({"org": org.name, "entry_id": registration.entry_id, "index": registration.index})
        return
    _say(f"organization {org.name}: entry {registration.entry_id} at index {registration.index}")


def _admin_token(path: Path | None) -> str:
    """SECRET: the administrator token, from ``path`` or ``$SEALTRAIL_ADMIN_TOKEN``."""
    value = read_token(path, TOKEN_ENV)
    if value is None:
        raise ConfigError(
            f"no administrator token: give --token-file FILE or set {TOKEN_ENV}",
            hint="`sealtrail init` (or `sealtrail keys admin-token`) shows it once; "
            "keep it in a mode-0600 file.",
        )
    return value


# -- verifying --------------------------------------------------------------------------------

_HOW = {
    "x5chain+anchors": "checked with its x5chain, validated to a --trust-anchor",
    "x5chain": "checked with its x5chain's certificate; the chain was NOT validated "
    "(no --trust-anchor)",
    "issuer-key": "checked with --issuer-key",
    "not checked": "NOT checked (it names its key by kid: give --issuer-key)",
}


def verify(
    transparent: Annotated[
        Path, typer.Argument(help="A transparent statement (from `sealtrail submit`).")
    ],
    service_keys: Annotated[
        Path, typer.Option(help="The service's key set (from `sealtrail fetch-keys`).")
    ],
    issuer_key: Annotated[
        Path | None,
        typer.Option(help="The issuer's public key or certificate (PEM) to check against."),
    ] = None,
    trust_anchor: Annotated[
        list[Path] | None,
        typer.Option(help="CA certificates (PEM) the statement's x5chain must lead to."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Verify a transparent statement offline: its signature and every receipt.

    Exits 0 and prints OK only if everything verifies; otherwise exits 1 naming what failed.
    """
    data = _read(transparent, "transparent statement", limit=MAX_COSE_FILE)
    keys = read_service_keys(service_keys)
    issuer = _issuer_key(issuer_key) if issuer_key is not None else None
    anchors = [c for p in trust_anchor or [] for c in _certificates(p, "--trust-anchor")]
    verified = verify_transparent_statement(
        data, service_keys=keys, issuer_key=issuer, trust_anchors=anchors
    )
    check = verified.signature_check
    how = _HOW.get(check, check)
    if issuer is not None and check.startswith("x5chain"):
        how += "; its key is --issuer-key"  # checked by verify_transparent_statement
    if anchors and check not in ("x5chain+anchors", "issuer-key"):
        raise VerificationError(
            "--trust-anchor was given but the statement has no x5chain to validate "
            "(it names its key by kid)",
            code="statement-no-x5chain",
            hint="Verify a kid-signed statement with --issuer-key.",
        )
    if as_json:
        _emit(_verified_doc(verified, how))
        return
    _print_verified(verified, how)


def read_service_keys(path: Path) -> dict[bytes, Verifier]:
    data = _read(path, "service key set", limit=MAX_SMALL_FILE)
    try:
        return decode_key_set(data)
    except Error as exc:
        raise InvalidInput(
            f"{path} is not a COSE_KeySet: {exc.message}",
            code=exc.code,
            hint="Get the service's keys with `sealtrail fetch-keys`.",
        ) from None


def _issuer_key(path: Path) -> Verifier:
    data = _read(path, "issuer key", limit=MAX_SMALL_FILE)
    if b"CERTIFICATE-----" in data:
        public_key: PublicKeyTypes = _certificates(path, "--issuer-key", data=data)[0].public_key()
    else:
        try:
            public_key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise InvalidInput(
                f"{path} is not a PEM public key or certificate", code="key-malformed"
            ) from None
    try:
        return verifier_for(public_key)
    except Error as exc:
        raise InvalidInput(f"{path}: {exc.message}", code=exc.code) from None


def _verified_doc(verified: VerifiedStatement, how: str) -> dict[str, Any]:
    statement = verified.statement
    return {
        "ok": True,
        "entry_id": verified.entry_id,
        "issuer": statement.issuer,
        "subject": statement.subject,
        "content_type": statement.content_type,
        "signature_check": verified.signature_check,
        "signature": how,
        "receipts": [
            {
                "tree_size": r.tree_size,
                "leaf_index": r.leaf_index,
                "size_signed": r.size_signed,
                "log": r.subject,
                "service": r.issuer,
                "issued_at": r.issued_at,
                "kid": r.kid.hex(),
            }
            for r in verified.receipts
        ],
    }


def _print_verified(verified: VerifiedStatement, how: str) -> None:
    statement = verified.statement
    _say("OK")
    _say(f"entry id   {verified.entry_id}")
    _say(f"issuer     {statement.issuer}")
    _say(f"subject    {statement.subject}")
    _say(f"signature  {how}")
    for r in verified.receipts:
        _say(
            f"receipt    leaf index {r.leaf_index}, tree size {r.tree_size}"
            + ("" if r.size_signed else " (not signed by the service: as its proof says)")
            + (f", log {r.subject}" if r.subject else "")
            + (f", service {r.issuer}" if r.issuer else "")
        )
    if verified.signature_check in ("x5chain", "not checked"):
        _note(f"warning: the statement's signature was {_HOW[verified.signature_check]}")


# -- files and output -------------------------------------------------------------------------


def _read(path: Path, what: str, *, limit: int | None = None) -> bytes:
    """A whole input file; one-line errors naming the file. With ``limit``, no more than
    that is read."""
    with _opened(path, what) as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise TooLarge(f"{what} {path} is larger than {limit} bytes")
    return data


@contextlib.contextmanager
def _opened(path: Path, what: str) -> Iterator[BinaryIO]:
    """``path`` open for reading; a failure to open or read it is one line naming it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InvalidInput(
            f"{what} {path} not found", code="file-not-found", hint=READ_HINT
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}", hint=READ_HINT) from None
    with handle:
        try:
            yield handle
        except OSError as exc:
            raise InvalidInput(
                f"cannot read {what} {path}: {exc.strerror}", hint=READ_HINT
            ) from None


@contextlib.contextmanager
def _payload(path: Path) -> Iterator[BinaryIO]:
    """The payload to sign, as a binary stream: the file, or standard input for ``-``."""
    if str(path) == "-":
        try:
            yield sys.stdin.buffer
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read the payload from stdin: {exc}") from None
        return
    with _opened(path, "payload") as handle:
        yield handle


def _bounded(stream: BinaryIO, path: Path) -> bytes:
    """A payload carried whole in the statement: at most ``MAX_STATEMENT_SIZE`` bytes read."""
    content = stream.read(MAX_STATEMENT_SIZE + 1)
    if len(content) > MAX_STATEMENT_SIZE:
        where = "stdin" if str(path) == "-" else str(path)
        raise TooLarge(
            f"the payload ({where}) is larger than a {MAX_STATEMENT_SIZE}-byte statement",
            hint="Sign its digest instead: --hash-envelope sha-256.",
        )
    return content


def _certificates(path: Path, option: str, *, data: bytes | None = None) -> list[x509.Certificate]:
    raw = _read(path, "certificate file", limit=MAX_SMALL_FILE) if data is None else data
    try:
        certificates = load_certificates(raw)
    except Error as exc:
        raise InvalidInput(f"{option} {path}: {exc.message}", code=exc.code) from None
    if not certificates:
        raise InvalidInput(f"{option} {path} holds no certificate", code="bad-certificate")
    return certificates


def _writable(path: Path, *, force: bool) -> None:
    """Refuse an output ``path`` that could not be written, before anything is registered
    (:func:`output_path`: a regular file or a new one, in a directory that exists)."""
    output_path(path, force=force)


def _save(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``path`` whole or not at all; an existing file only with ``force``, and only a
    regular file (:func:`write_output`)."""
    write_output(path, data, force=force)


def _say(text: str) -> None:
    out.print(text, markup=False, soft_wrap=True)


def _note(text: str) -> None:
    err.print(text, markup=False, soft_wrap=True)


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
