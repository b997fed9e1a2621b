"""``sealtrail users``: the service's users and their tokens (docs/auth.md).

Every command talks to a transparency service at ``--url`` (or ``$SEALTRAIL_URL``) with the
administrator token (or an admin user's), read the way ``sealtrail org put`` reads it:
``--token-file`` or ``$SEALTRAIL_ADMIN_TOKEN``, never the command line. Each change is a new
version of the user's record, registered in the log.

A user's token is printed once, by ``users token``, on stdout — the line a script captures
— and nowhere else: ``users list`` shows token ids and expiries, never a secret or a hash.
``users cert`` sets the TLS client certificates a user is known by (their SHA-256 only).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rich.table import Table
from rich.text import Text

from sealtrail.client import DEFAULT_TOKEN_DAYS, NOT_FOUND_HINTS, Client, UserChange, UserInfo
from sealtrail.errors import InvalidInput, NotFound
from sealtrail.scitt import certificate_hash

from ._common import out, tls
from .scitt import DEFAULT_URL, TOKEN_ENV, AsJson, Url, _admin_token, _emit, _note, _say

__all__ = ["certificate_sha256", "users_app"]

#: Largest certificate file ``users cert --add`` reads.
MAX_CERTIFICATE_FILE = 64 * 1024

users_app = typer.Typer(
    help="Users, their personas and tokens on a transparency service (administrator token).",
    no_args_is_help=True,
)

AdminTokenFile = Annotated[
    Path | None,
    typer.Option(help=f"File holding the administrator token (mode 0600); else ${TOKEN_ENV}."),
]


def _client(url: str, token_file: Path | None) -> Client:
    return Client(url, token=_admin_token(token_file), tls=tls())


def _when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _doc(user: UserInfo) -> dict[str, Any]:
    return {
        "user": user.name,
        "version": user.version,
        "persona": user.persona,
        "org": user.org,
        "disabled": user.disabled,
        "tokens": [{"id": t.id, "expires": t.expires} for t in user.tokens],
        "certificates": list(user.certificates),
    }


def _changed(change: UserChange, what: str, as_json: bool) -> None:
    user, registration = change.user, change.registration
    if as_json:
        _emit({**_doc(user), "entry_id": registration.entry_id, "index": registration.index})
        return
    of = f" of {user.org}" if user.org else ""
    state = ", disabled" if user.disabled else ""
    _say(
        f"user {user.name} ({user.persona}{of}{state}) {what}: version {user.version}, "
        f"entry {registration.entry_id} at index {registration.index}"
    )


@users_app.command("list")
def list_users(
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Every user: persona, organization, whether disabled, token ids and expiries."""
    with _client(url, token_file) as service:
        users = service.users()
    if as_json:
        _emit({"users": [_doc(u) for u in users]})
        return
    if not users:
        _say("No users yet: add one with `sealtrail users add NAME --persona P`.")
        return
    table = Table("user", "persona", "org", "state", "tokens (id, expires)", "certificates")
    for user in users:
        tokens = "\n".join(f"{t.id}  {_when(t.expires)}" for t in user.tokens) or "-"
        table.add_row(
            Text(user.name),
            Text(user.persona),
            Text(user.org or "-"),
            Text("disabled" if user.disabled else "active"),
            Text(tokens),
            Text("\n".join(f"{c[:16]}…" for c in user.certificates) or "-"),
        )
    out.print(table)


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    persona: Annotated[
        str,
        typer.Option(help="supplier, carrier, operator, auditor or admin (docs/auth.md)."),
    ],
    org: Annotated[
        str | None,
        typer.Option(help="The user's organization (suppliers, carriers and operators)."),
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Create a user, or set an existing one's persona and organization (and enable it)."""
    with _client(url, token_file) as service:
        change = service.put_user(name, persona, org)
    _changed(change, "recorded", as_json)


@users_app.command("disable")
def disable(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Shut a user out at once (every token refused); its history stays in the log.

    `sealtrail users add NAME --persona P` enables it again.
    """
    with _client(url, token_file) as service:
        if not any(u.name == name for u in service.users()):
            raise NotFound(
                f"no user {name!r}", code="user-unknown", hint=NOT_FOUND_HINTS["user-unknown"]
            )
        # Only ``disabled`` is sent: the service keeps the persona and organization as
        # they are then, so nothing read here can be written back stale.
        change = service.put_user(name, None, disabled=True)
    _changed(change, "disabled", as_json)


@users_app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    days: Annotated[
        int, typer.Option(help="Days it is valid (the service allows 1 to 366).")
    ] = DEFAULT_TOKEN_DAYS,
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Issue a token for a user and print it ONCE on stdout (the service keeps its hash).

    Hand it to the user over a channel you trust; they keep it in a mode-0600 file for
    --token-file, or in $SEALTRAIL_TOKEN.
    """
    with _client(url, token_file) as service:
        issued = service.issue_token(name, days)
    # SECRET: the one place a user's token is printed. stdout only, so that a script
    # capturing it files nothing else; everything else goes to stderr.
    if as_json:
        _emit(
            {
                "user": issued.user,
                "id": issued.id,
                "expires": issued.expires,
                "token": issued.token,
                "entry_id": issued.registration.entry_id,
                "index": issued.registration.index,
            }
        )
    else:
        sys.stdout.write(issued.token + "\n")
        sys.stdout.flush()
    _note(
        f"token {issued.id} for {issued.user}, expires {_when(issued.expires)} "
        f"(entry {issued.registration.entry_id} at index {issued.registration.index}); "
        "it is shown once: only its hash is kept"
    )


@users_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    token_id: Annotated[str, typer.Argument(help="The token's id (from `users list`).")],
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Revoke a user's token at once."""
    with _client(url, token_file) as service:
        change = service.revoke_token(name, token_id)
    _changed(change, f"token {token_id} revoked", as_json)


def certificate_sha256(path: Path) -> str:
    """The SHA-256 (hex) of the DER of the certificate in ``path`` (PEM or DER)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CERTIFICATE_FILE + 1)
    except OSError as exc:
        raise InvalidInput(
            f"{path}: cannot read it: {exc.strerror}", code="certificate-invalid"
        ) from None
    if len(data) > MAX_CERTIFICATE_FILE:
        raise InvalidInput(f"{path} is larger than a certificate", code="certificate-invalid")
    try:
        if b"-----BEGIN" in data:
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise InvalidInput(
            f"{path} is not an X.509 certificate (PEM or DER)", code="certificate-invalid"
        ) from None
    return certificate_hash(certificate.public_bytes(serialization.Encoding.DER)).hex()


@users_app.command("cert")
def cert(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    add: Annotated[
        list[Path] | None,
        typer.Option("--add", help="A TLS client certificate (PEM or DER file) to know them by."),
    ] = None,
    remove: Annotated[
        list[str] | None,
        typer.Option("--remove", help="A certificate's SHA-256 (from `users list --json`)."),
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: AdminTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Set the TLS client certificates a user is known by (mutual TLS, docs/auth.md).

    Only each certificate's SHA-256 goes to the service; with neither option, the user's
    current ones are listed.
    """
    added = [certificate_sha256(path) for path in add or ()]
    with _client(url, token_file) as service:
        user = next((u for u in service.users() if u.name == name), None)
        if user is None:
            raise NotFound(
                f"no user {name!r}", code="user-unknown", hint=NOT_FOUND_HINTS["user-unknown"]
            )
        if not added and not remove:
            if as_json:
                _emit(_doc(user))
            else:
                for sha256 in user.certificates:
                    sys.stdout.write(sha256 + "\n")
            return
        gone = [r.strip().lower() for r in remove or ()]
        unknown = [g for g in gone if g not in user.certificates]
        if unknown:
            raise NotFound(
                f"user {name} is known by no certificate {unknown[0]}",
                code="certificate-unknown",
                hint=NOT_FOUND_HINTS["certificate-unknown"],
            )
        kept = [c for c in user.certificates if c not in gone]
        change = service.put_certificates(name, kept + [a for a in added if a not in kept])
    _changed(change, f"now known by {len(change.user.certificates)} certificate(s)", as_json)
