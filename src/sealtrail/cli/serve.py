"""``sealtrail serve``: the HTTP service over a data directory's store."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import logging
import os
import socket
import ssl
import stat
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from fastapi import FastAPI
from rich.markup import escape

from sealtrail.config import (
    CHALLENGE_KEY_FILE,
    CONFIG_FILE,
    MAX_PORT,
    Config,
    absolute_store_path,
    check_store_log,
    open_log_store,
    remember_checkpoint,
)
from sealtrail.errors import ConfigError
from sealtrail.log import LogReader
from sealtrail.note import NoteVerifier
from sealtrail.scitt import key_id
from sealtrail.service import (
    create_app,
    run_server,
    service_app,
    settle_heap,
)
from sealtrail.service.app import RateLimits
from sealtrail.storage import describe_store

from ._common import DEFAULT_DATA_DIR, DataDir, err, load
from .provenance import policy

__all__ = ["serve"]

#: Largest TLS certificate chain, key or client CA bundle read, in bytes.
MAX_TLS_FILE = 1024 * 1024


def _limits(config: Config) -> RateLimits:
    return RateLimits(reads=config.rate_limit_reads, writes=config.rate_limit_writes)


def _read_only_app(config: Config) -> FastAPI:
    vkey = config.verifier_key()
    verifier = NoteVerifier.parse(vkey)
    store = config.open_store()
    try:
        # Another log's store: one clear line, not a signature error.
        check_store_log(config, store, verifier=verifier, empty_ok=True)
    except BaseException:
        store.close()
        raise
    reader = LogReader(store, origin=config.origin, verifiers=[verifier])
    reader.checkpoint()  # fail fast on a store that does not match the key
    return create_app(reader, verifier_key=vkey, limits=_limits(config))


def _writing_app(config: Config, *, new_log: bool = False) -> FastAPI:
    if config.service_pkcs11 is None and not (config.data_dir / config.service_key_file).exists():
        raise ConfigError(
            f"no receipt key at {config.service_key_file}",
            hint="This data directory predates receipts: create the key with 'sealtrail keys "
            f"generate -o {config.data_dir / config.service_key_file}', or serve --read-only.",
        )
    challenge_key = config.challenge_key()
    if challenge_key is None:
        # It also keys the tag on every statement row, without which a row written into
        # the database behind the service would be appended to the log (docs/keys.md).
        raise ConfigError(
            f"no challenge key at {CHALLENGE_KEY_FILE}",
            hint="This data directory predates the challenge key: write 32 random bytes as "
            f"hex to {CHALLENGE_KEY_FILE} (mode 0600; e.g. `umask 077; openssl rand -hex 32 "
            f"> {CHALLENGE_KEY_FILE}` in the data directory), and copy that same file to "
            "every host that serves this data directory.",
            code="challenge-key-missing",
        )
    checkpoint_signer = config.checkpoint_signer()
    # Before binding the port: a store that holds no log, or another one, is refused (a
    # sequencer would sign a second log with this directory's keys: a split view).
    store = open_log_store(config, verifier=checkpoint_signer.verifier, new_log=new_log)
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
        challenge_key=challenge_key,
        auth_required=config.auth_required,
        limits=_limits(config),
        on_checkpoint=lambda signed: remember_checkpoint(config, signed),
    )


def _read_tls_file(config: Config, setting: str, name: str, *, secret: bool = False) -> bytes:
    """A TLS file named by ``[server] <setting>``, relative to the data directory."""
    path = config.data_dir / name
    where = f"{CONFIG_FILE} [server] {setting} ({name})"
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{where} is not a regular file")
            if secret and info.st_mode & 0o007:
                raise ConfigError(
                    f"{where} is accessible by others (mode {stat.S_IMODE(info.st_mode):04o})",
                    hint=f"Restrict the private key to its owner: chmod 600 {path}",
                )
            data = handle.read(MAX_TLS_FILE + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: no such file", hint="Paths are relative to the data directory."
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_TLS_FILE:
        raise ConfigError(f"{where} is larger than {MAX_TLS_FILE} bytes")
    return data


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _tls_options(config: Config) -> dict[str, Any]:
    """uvicorn's TLS arguments, after checking the files they name: both readable, the
    certificate's key the private key's, the client CA bundle certificates. Empty without
    TLS. Every failure is a :class:`ConfigError` naming the setting, before the port is bound."""
    if config.tls_cert is None or config.tls_key is None:
        return {}
    try:
        chain = x509.load_pem_x509_certificates(_read_tls_file(config, "tls_cert", config.tls_cert))
    except ValueError:
        raise ConfigError(
            f"{CONFIG_FILE} [server] tls_cert ({config.tls_cert}) is not a PEM certificate"
        ) from None
    key_pem = _read_tls_file(config, "tls_key", config.tls_key, secret=True)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(
            f"{CONFIG_FILE} [server] tls_key ({config.tls_key}) is encrypted",
            hint="Give the server an unencrypted key (PKCS#8 or traditional PEM), mode 0600.",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{CONFIG_FILE} [server] tls_key ({config.tls_key}) is not a PEM private key"
        ) from None
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise ConfigError(
            f"{CONFIG_FILE} [server] tls_cert and tls_key do not match: the certificate "
            f"({config.tls_cert}) is not for the private key ({config.tls_key})",
            hint="The first certificate of tls_cert must be the one issued for tls_key.",
        )
    options: dict[str, Any] = {
        "ssl_certfile": str(config.data_dir / config.tls_cert),
        "ssl_keyfile": str(config.data_dir / config.tls_key),
    }
    if config.tls_client_ca is not None:
        bundle = _read_tls_file(config, "tls_client_ca", config.tls_client_ca)
        try:
            x509.load_pem_x509_certificates(bundle)
        except ValueError:
            raise ConfigError(
                f"{CONFIG_FILE} [server] tls_client_ca ({config.tls_client_ca}) is not a PEM "
                "certificate bundle"
            ) from None
        options["ssl_ca_certs"] = str(config.data_dir / config.tls_client_ca)
        # Asked for and verified when sent; anonymous clients still read (docs/limits.md).
        options["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
    # What uvicorn will do, done once here so that anything OpenSSL refuses is one line too.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(options["ssl_certfile"], options["ssl_keyfile"])
        if "ssl_ca_certs" in options:
            context.load_verify_locations(options["ssl_ca_certs"])
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{CONFIG_FILE} [server] TLS files refused by OpenSSL: {exc.strerror or exc}"
        ) from None
    now = datetime.datetime.now(datetime.UTC)
    if not chain[0].not_valid_before_utc <= now <= chain[0].not_valid_after_utc:
        err.print(
            f"[yellow]warning[/yellow]: the TLS certificate ({config.tls_cert}) is valid from "
            f"{chain[0].not_valid_before_utc:%Y-%m-%d} to {chain[0].not_valid_after_utc:%Y-%m-%d}"
            ": clients will refuse it"
        )
    return options


def _bind_error(exc: OSError | ValueError, host: str, port: int) -> ConfigError:
    """The one line saying why the server cannot listen on ``host`` port ``port``."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror | ValueError):
        return ConfigError(
            f"cannot serve on {where}: the host {host!r} does not resolve "
            f"({exc.strerror if isinstance(exc, OSError) else exc})",
            hint="Give --host (or [server] host) an address of this machine (127.0.0.1, ::1, "
            "0.0.0.0 for every interface) or a name that resolves to one.",
            code="host-unknown",
        )
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"cannot serve on {where}: the port is already in use",
            hint="Stop what listens there, or serve on another --port (0 picks a free one).",
            code="port-in-use",
        )
    reason = exc.strerror or str(exc)
    return ConfigError(
        f"cannot serve on {where}: {reason[:1].lower() + reason[1:]}",
        hint="--host must be an address of this machine (127.0.0.1, ::1, 0.0.0.0 for every "
        "interface); a port under 1024 needs privileges.",
        code="bind-failed",
    )


def _check_address(host: str, port: int) -> None:
    """Bind what the server will bind, and let go: a host that does not resolve, an address
    not of this machine or a port in use is one line here, before anything starts, where
    uvicorn would log it after the app started. As asyncio's ``create_server`` binds: every
    address the host resolves to, at once, ``SO_REUSEADDR``, IPv6 sockets IPv6 only."""
    try:
        infos = set(
            socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        )
    except (OSError, ValueError) as exc:  # UnicodeError (a label too long) is a ValueError
        raise _bind_error(exc, host, port) from None
    with contextlib.ExitStack() as sockets:
        for family, kind, proto, _, address in infos:
            try:
                sock = sockets.enter_context(socket.socket(family, kind, proto))
            except OSError:
                continue  # a family this machine does not have: asyncio skips it too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise _bind_error(exc, host, port) from None


class _BindFailure(logging.Filter):
    """What uvicorn logs when it cannot bind (the port taken since :func:`_check_address`
    looked, say), kept instead of logged: it is said as one line once uvicorn exits."""

    def __init__(self) -> None:
        super().__init__()
        self.listening = False
        self.error: OSError | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.listening and isinstance(record.msg, OSError):
            self.error = record.msg
            return False
        return True


@contextlib.contextmanager
def _bind_failure_said(host: str, port: int) -> Iterator[_BindFailure]:
    """Around the server's run: uvicorn failing to bind (it logs the error and exits with
    status 3) is the one-line error :func:`_bind_error` says."""
    failure = _BindFailure()
    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(failure)
    try:
        yield failure
    except SystemExit:
        if failure.error is None:
            raise
        raise _bind_error(failure.error, host, port) from None
    finally:
        logger.removeFilter(failure)


def serve(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from config: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=MAX_PORT, help="Port (default from config: 8080; 0 picks one)."),
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
    new_log: Annotated[
        bool,
        typer.Option(
            "--new-log",
            help="Start this data directory's log in the config's store, which must be empty: "
            "once, for a directory made by an older init and never served.",
        ),
    ] = False,
) -> None:
    """Serve the log and the transparency service (SCRAPI) until interrupted.

    The server runs the log's sequencer: registrations are sequenced and checkpointed here.
    Over PostgreSQL, run several: any of them takes registrations, one at a time sequences.
    With --read-only it only reads the store (run any number of those beside it).
    The store must hold this data directory's log (started by `sealtrail init`).
    """
    if new_log and (read_only or store is not None):
        raise ConfigError(
            f"--new-log does not go with {'--read-only' if read_only else '--store'}",
            hint="--new-log starts the log once, in the store sealtrail.toml names.",
        )
    config = load(data_dir)
    if store is not None:
        config = dataclasses.replace(config, store_url=absolute_store_path(store))
    if index is not None:
        config = dataclasses.replace(config, index_url=absolute_store_path(index))
    tls = _tls_options(config)
    bind_host = host or config.host
    bind_port = config.port if port is None else port
    _check_address(bind_host, bind_port)
    app = _read_only_app(config) if read_only else _writing_app(config, new_log=new_log)
    mode = "read-only " if read_only else ""
    scheme = "https" if tls else "http"
    mutual = "ssl_ca_certs" in tls

    def ready(host: str, port: int) -> None:
        """Said once the port is bound: the one actually listening (--port 0 picks one)."""
        failure.listening = True
        where = f"[{host}]" if ":" in host else host
        err.print(
            f"Serving {mode}log [bold]{escape(config.origin)}[/bold] on "
            f"{scheme}://{escape(where)}:{port}/ "
            f"from {escape(describe_store(config.resolved_store_url()))}"
            + ("; client certificates verified when sent" if mutual else "")
        )

    _log_to_stderr()
    settle_heap()
    with _bind_failure_said(bind_host, bind_port) as failure:
        run_server(
            app,
            ready=ready,
            host=bind_host,
            port=bind_port,
            log_level="warning",
            access_log=False,
            # A verified client certificate names a user (docs/auth.md).
            client_certificates=mutual,
            **tls,
        )


#: How a server's own log lines look on stderr (the role taken or given up, recoveries,
#: retried failures): time, level, what.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _log_to_stderr() -> None:
    """Sealtrail's log lines (from INFO: rare, each worth an operator's eye) and any
    library's warnings go to stderr with their time and level."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("sealtrail").setLevel(logging.INFO)
