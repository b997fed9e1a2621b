"""``sealtrail users``: the service's users and their tokens (docs/auth.md).

Every command talks to a transparency service at ``--url`` (or ``$SEALTRAIL_URL``) with the
administrator token (or an admin user's), read the way ``sealtrail org put`` reads it:
``--token-file`` or ``$SEALTRAIL_ADMIN_TOKEN``, never the command line. Each change is a new
version of the user's record, registered in the log.

A user's token is printed once, by ``users token``, on stdout — the line a script captures
— and nowhere else: ``users list`` shows token ids and expiries, never a secret or a hash.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sealtrail.client import DEFAULT_TOKEN_DAYS, Client, UserChange, UserInfo
from sealtrail.errors import NotFound

from ._common import out
from .scitt import DEFAULT_URL, TOKEN_ENV, AsJson, Url, _admin_token, _emit, _note, _say

__all__ = ["users_app"]

users_app = typer.Typer(
    help="Users, their personas and tokens on a transparency service (administrator token).",
    no_args_is_help=True,
)

AdminTokenFile = Annotated[
    Path | None,
    typer.Option(help=f"File holding the administrator token (mode 0600); else ${TOKEN_ENV}."),
]


def _client(url: str, token_file: Path | None) -> Client:
    return Client(url, token=_admin_token(token_file))


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
    table = Table("user", "persona", "org", "state", "tokens (id, expires)")
    for user in users:
        tokens = "\n".join(f"{t.id}  {_when(t.expires)}" for t in user.tokens) or "-"
        table.add_row(
            Text(user.name),
            Text(user.persona),
            Text(user.org or "-"),
            Text("disabled" if user.disabled else "active"),
            Text(tokens),
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
            raise NotFound(f"no user {name!r}", code="user-unknown")
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
