"""What every command shares: the data-dir option, consoles, progress bars, the user's
token for the commands that talk to a service (``--token-file`` or ``$SEALTRAIL_TOKEN``),
and the writing of output files."""

from __future__ import annotations

import os
import secrets
import ssl
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sealtrail.client import DEFAULT_TIMEOUT, Client, client_tls
from sealtrail.config import Config, load_config
from sealtrail.errors import ConfigError, InvalidInput
from sealtrail.storage import IndexStore, claim_conflict

__all__ = [
    "USER_TOKEN_ENV",
    "DataDir",
    "TokenFile",
    "connect",
    "err",
    "exists_error",
    "load",
    "not_being_rebuilt",
    "out",
    "output_path",
    "progress_bar",
    "read_secret",
    "read_token",
    "user_token",
    "write_output",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_DATA_DIR = Path(".sealtrail")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        "-d",
        envvar="SEALTRAIL_DATA_DIR",
        help="Data directory (config, keys, SQLite store).",
        file_okay=False,
    ),
]


#: Where a user's token is read from when no ``--token-file`` is given.
USER_TOKEN_ENV = "SEALTRAIL_TOKEN"  # noqa: S105 (the variable's name, not a token)
#: Largest token file read: a token is a few dozen characters.
MAX_TOKEN_FILE = 4096
#: Largest client key file read (an ML-DSA-87 private key in PEM is under 7 KiB).
MAX_KEY_FILE = 64 * 1024

TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help=f"File holding your token (mode 0600); else ${USER_TOKEN_ENV}; else none "
        "(enough where the service does not require one).",
        dir_okay=False,
    ),
]


def load(data_dir: Path) -> Config:
    return load_config(data_dir)


def not_being_rebuilt(index: IndexStore, doing: str) -> None:
    """Refuse to read ``index`` for ``doing`` while a rebuild holds it: what it holds then
    is the part rebuilt so far, not the index (``index-in-use``)."""
    for holder, exclusive, left in index.claims():
        if exclusive:
            raise claim_conflict(holder, True, left, then=f"Run {doing} once it is done")


def connect(url: str, token_file: Path | None, *, timeout: float = DEFAULT_TIMEOUT) -> Client:
    """A client for the service at ``url`` holding the user's token (:func:`user_token`)
    and, when the environment names one, their TLS client certificate (:func:`tls`)."""
    return Client(url, token=user_token(token_file), timeout=timeout, tls=tls())


#: A TLS client certificate (PEM) and its key (PEM, mode 0600) for a service that knows its
#: users by certificate (docs/auth.md); the CAs to trust come from ``$SSL_CERT_FILE``.
CLIENT_CERT_ENV = "SEALTRAIL_CLIENT_CERT"
CLIENT_KEY_ENV = "SEALTRAIL_CLIENT_KEY"


def tls() -> ssl.SSLContext | None:
    """The TLS context the environment asks for: with ``$SEALTRAIL_CLIENT_CERT`` and
    ``$SEALTRAIL_CLIENT_KEY``, one that presents that certificate; else None (httpx's own
    defaults, which read ``$SSL_CERT_FILE``)."""
    certificate = os.environ.get(CLIENT_CERT_ENV, "").strip()
    key = os.environ.get(CLIENT_KEY_ENV, "").strip()
    if not certificate and not key:
        return None
    if not certificate or not key:
        raise ConfigError(
            f"${CLIENT_CERT_ENV} and ${CLIENT_KEY_ENV} go together: set both or neither",
            hint="Each names a PEM file: the client certificate, and its key (mode 0600).",
        )
    read_secret(Path(key), "client key", limit=MAX_KEY_FILE)  # owner-only, like a token
    return client_tls(certificate, key)


def user_token(path: Path | None) -> str | None:
    """SECRET: the user's token from ``path`` or ``$SEALTRAIL_TOKEN``; ``None`` without both."""
    return read_token(path, USER_TOKEN_ENV)


def read_token(path: Path | None, env: str) -> str | None:
    """SECRET: a bearer token from the file ``path`` or, without one, the variable ``env``
    (``None`` when unset or empty). Errors name the file or variable, never the token."""
    if path is None:
        value = os.environ.get(env, "").strip()
        where = f"${env}"
    else:
        data = read_secret(path, "token file", limit=MAX_TOKEN_FILE)
        try:
            value = data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"token file {path} is not ASCII text") from None
        if not value:
            raise ConfigError(f"token file {path} is empty")
        where = f"token file {path}"
    if not value:
        return None
    if not value.isprintable() or any(c.isspace() for c in value):
        # Never echo it: say what is wrong, and where, not what it is.
        raise InvalidInput(
            f"{where} holds more than one token, or stray characters",
            code="token-malformed",
            hint="A token is one line of printable ASCII without spaces.",
        )
    return value


def read_secret(path: Path, what: str, *, limit: int) -> bytes:
    """A secret file: a regular file only its owner can read (POSIX). Errors never show it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot open {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise ConfigError(
                f"{what} {path} is readable or writable by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o})",
                hint=f"Restrict it to its owner: chmod 600 {path}",
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return data


@contextmanager
def progress_bar(description: str, total: int, *, quiet: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr (hidden with ``quiet`` or when stderr is not a terminal)."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    with bar:
        bar.add_task(description, total=total)
        yield bar


# -- output files -----------------------------------------------------------------------------

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


def exists_error(path: Path, option: str = "--output") -> InvalidInput:
    return InvalidInput(
        f"{path} already exists; not overwriting it",
        code="file-exists",
        hint=f"Choose another {option}, or pass --force to replace it.",
    )


def output_path(path: Path, *, force: bool, option: str = "--output") -> Path:
    """Where an output given as ``path`` is to be written, checked before anything is sent
    or written: a new file in an existing directory this user may write to, or, with
    ``force``, an existing regular file to replace. Anything else that exists there — a
    directory, a device, a FIFO, a socket — is refused (``output-not-a-file``) whatever
    ``force`` says. A symbolic link is never written through (one planted in a shared
    directory would aim the write at any file this user may write): with ``force`` the link
    itself is replaced by the new file, whatever it leads to."""
    try:
        info: os.stat_result | None = os.lstat(path)  # the link itself, not what it names
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InvalidInput(
            f"cannot write {path}: {exc.strerror}",
            code="output-unwritable",
            hint=f"Choose another {option}.",
        ) from None
    if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise InvalidInput(
            f"{path} is {kind}, not a regular file; not replacing it",
            code="output-not-a-file",
            hint=f"Give {option} the path of a regular file, or of one that does not exist yet.",
        )
    if info is not None and not force:
        raise exists_error(path, option)
    target = path
    folder = target.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        why = "is not a directory this user may write to"
        if not folder.exists():
            why = "does not exist"
        raise InvalidInput(
            f"cannot write {path}: {folder} {why}",
            code="output-unwritable",
            hint=f"Choose another {option}, or make its directory first.",
        )
    return target


def write_output(path: Path, data: bytes, *, force: bool, option: str = "--output") -> None:
    """Write ``data`` to the output ``path`` whole or not at all, by a rename (a reader never
    sees half of it), once :func:`output_path` accepts it: an existing file only with
    ``force``, and never anything but a regular file."""
    target = output_path(path, force=force, option=option)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            tmp.replace(target)
        else:
            # link() fails if the target exists, so a file that appeared meanwhile survives.
            os.link(tmp, target)
    except FileExistsError:
        raise exists_error(path, option) from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot write {path}: {exc.strerror}",
            code="output-unwritable",
            hint=f"Choose another {option}, or check that this user may write there.",
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
