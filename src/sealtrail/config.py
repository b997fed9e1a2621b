"""The data directory: configuration, the log's signing key, and the store it points at.

Layout created by ``sealtrail init`` (directory mode 0700, keys 0600)::

    <data-dir>/
      sealtrail.toml            origin, issuer, store URL, key files, server, sequencer, auth
      keys/log.key              the checkpoint signing key (Ed25519, PKCS#8 PEM) - secret
      keys/service.key          the receipt signing key (ES256 by default) - secret
      keys/retired/<kid>.pem    public keys of retired receipt keys (old receipts verify)
      keys/admin-token.sha256   SHA-256 of the administrator token (the token is shown once)
      log.vkey                  the log's public verifier key (name+keyhash+base64) - publish it
      log.db                    the SQLite store (embedded default)
      provenance.db             the provenance index, rebuilt from the log on demand
      seen-checkpoint           the newest checkpoint a server of this directory saw

A data directory and its store are bound from ``init`` on: ``init`` writes the log's
genesis (a signed checkpoint of size 0) into an empty store and refuses one that holds a
log, and the commands that write to the log open the store with :func:`open_log_store`,
which refuses a store that holds no log or another one. That keeps one directory's keys
from ever signing two logs (a split view). It also refuses a store whose log is behind
``seen-checkpoint``, or does not extend it: a store restored from an older backup.

The receipt key may instead live on a PKCS#11 token (``[service_key.pkcs11]``, see
docs/keys.md); the PIN is then read from a file or an environment variable, never from
the configuration itself.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import re
import secrets
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from cryptography.hazmat.primitives import serialization
from psycopg.conninfo import conninfo_to_dict

from sealtrail.errors import (
    CheckpointConflict,
    ConfigError,
    Corruption,
    Error,
    InvalidInput,
    InvalidProof,
    InvalidSignature,
    MalformedNote,
    VerificationError,
)
from sealtrail.keys import (
    ALGORITHMS,
    ED25519,
    ES256,
    Ed25519Signer,
    Pkcs11Signer,
    Signer,
    SoftwareSigner,
    Verifier,
    generate_signer,
    load_signer,
    read_pin,
    verifier_for,
    write_private_key,
)
from sealtrail.log import (
    ROLLED_BACK,
    SHARED_MAX_DELAY,
    CheckpointSigner,
    LogReader,
    SequencerConfig,
    SignedCheckpoint,
    check_origin,
    verify_checkpoint,
)
from sealtrail.merkle import EMPTY_ROOT, Checkpoint, MerkleError
from sealtrail.note import NoteVerifier
from sealtrail.provenance import (
    MAX_POLICY_AGE,
    MAX_POLICY_COMPONENTS,
    MAX_SECURITY_VERSION,
    PolicyChange,
    parse_policy_change,
)
from sealtrail.scitt import MAX_STATEMENT_SIZE_LIMIT, key_id
from sealtrail.storage import (
    ENTRY_BUNDLES,
    Commit,
    IndexStore,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    describe_store,
    open_index,
    open_store,
)

__all__ = [
    "CONFIG_FILE",
    "SEEN_CHECKPOINT_FILE",
    "Config",
    "Initialized",
    "Pkcs11KeyConfig",
    "Rotation",
    "absolute_store_path",
    "check_store_url",
    "init_data_dir",
    "issue_admin_token",
    "load_config",
    "open_log_store",
    "read_seen_checkpoint",
    "remember_checkpoint",
    "rotate_service_key",
    "sequencer_defaults",
]

CONFIG_FILE = "sealtrail.toml"
_T = TypeVar("_T")

DEFAULT_STORE = "sqlite:///log.db"
#: The secret that seals challenge nonces, shared by every server of a deployment.
CHALLENGE_KEY_FILE = "keys/challenge.key"
#: The newest checkpoint of its log a server of this data directory has seen (a signed
#: note; public): a store behind it, or whose log does not extend it, was rolled back.
SEEN_CHECKPOINT_FILE = "seen-checkpoint"
#: The largest ``seen-checkpoint`` read (a checkpoint is a few hundred bytes).
MAX_SEEN_CHECKPOINT = 64 * 1024
CHALLENGE_KEY_BYTES = 32
DEFAULT_INDEX = "sqlite:///provenance.db"
#: Largest statement ``sealtrail serve`` accepts: room for a 10,000-device manifest.
DEFAULT_MAX_STATEMENT_SIZE = 16 * 1024 * 1024
#: Seconds a challenge nonce stays valid.
DEFAULT_CHALLENGE_TTL = 300
#: Seconds a server's last passing attestation stays fresh (``compliance sweep``).
DEFAULT_MAX_ATTESTATION_AGE = 24 * 3600
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: The largest TCP port.
MAX_PORT = 65535
#: Requests per second per client that ``sealtrail serve`` allows by default, reads and
#: writes (bursts of twice that); 0 turns a limit off. Well above what one client of a
#: 2-core server needs (docs/limits.md, "Request rates").
DEFAULT_RATE_LIMIT_READS = 1000.0
DEFAULT_RATE_LIMIT_WRITES = 500.0


DEFAULT_SERVICE_KEY = "keys/service.key"
DEFAULT_RETIRED_DIR = "keys/retired"
DEFAULT_ADMIN_TOKEN_FILE = "keys/admin-token.sha256"  # noqa: S105 (a file name, not a secret)
#: Largest public-key PEM read from the retired-keys folder, and most files read there.
MAX_PUBLIC_PEM = 16 * 1024
MAX_RETIRED_KEYS = 64


@dataclass(frozen=True)
class Pkcs11KeyConfig:
    """The receipt key on a PKCS#11 token; the PIN comes from ``pin_file`` or ``pin_env``."""

    module: str
    token_label: str
    key_label: str
    pin_file: str | None = None
    pin_env: str | None = None


def _hex_file(path: Path, what: str) -> bytes | None:
    """The bytes written as hex in ``path`` (None when it does not exist; b"" when it does
    not hold hex: the caller's length check names the file)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path.name}") from exc
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


@dataclass(frozen=True)
class Config:
    data_dir: Path
    origin: str
    #: The transparency service's name in receipts (CWT ``iss``); default ``https://<origin>``.
    issuer: str = ""
    store_url: str = DEFAULT_STORE
    key_file: str = "keys/log.key"
    service_key_file: str = DEFAULT_SERVICE_KEY
    service_pkcs11: Pkcs11KeyConfig | None = None
    retired_keys_dir: str = DEFAULT_RETIRED_DIR
    admin_token_file: str = DEFAULT_ADMIN_TOKEN_FILE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    index_url: str = DEFAULT_INDEX
    max_statement_size: int = DEFAULT_MAX_STATEMENT_SIZE
    #: Requests per second per client (0: unlimited), ``[server] rate_limit_reads/writes``.
    rate_limit_reads: float = DEFAULT_RATE_LIMIT_READS
    rate_limit_writes: float = DEFAULT_RATE_LIMIT_WRITES
    #: TLS for ``sealtrail serve``: PEM files, relative to the data directory; both or
    #: neither. ``tls_client_ca`` (PEM bundle) makes the server ask for client certificates.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    max_attestation_age: int = DEFAULT_MAX_ATTESTATION_AGE
    require_challenge: bool = True
    #: Every route needs a principal its persona allows ([auth] required; docs/auth.md).
    #: The default; ``required = false`` opens the service the way SCITT allows.
    auth_required: bool = True
    challenge_ttl: int = DEFAULT_CHALLENGE_TTL
    min_security_version: dict[str, int] = field(default_factory=dict)

    @property
    def service_issuer(self) -> str:
        return self.issuer or f"https://{self.origin}"

    def service_signer(self) -> Signer:
        """The receipt signing key: a key file, or a key on a PKCS#11 token."""
        hsm = self.service_pkcs11
        if hsm is None:
            return load_signer(self.data_dir / self.service_key_file)
        pin = read_pin(
            env=hsm.pin_env, path=None if hsm.pin_file is None else self.data_dir / hsm.pin_file
        )
        return Pkcs11Signer(
            module=hsm.module, token_label=hsm.token_label, key_label=hsm.key_label, pin=pin
        )

    def retired_verifiers(self) -> list[Verifier]:
        """Public keys of retired receipt keys (``<kid>.pem`` files), oldest first by name."""
        folder = self.data_dir / self.retired_keys_dir
        if not folder.is_dir():
            return []
        files = sorted(folder.glob("*.pem"))
        if len(files) > MAX_RETIRED_KEYS:
            raise ConfigError(f"more than {MAX_RETIRED_KEYS} retired keys in {folder.name}/")
        return [_read_public_key(path) for path in files]

    def challenge_key(self) -> bytes | None:
        """The secret that seals challenge nonces (``keys/challenge.key``, 32 bytes as hex),
        or None for a data directory made before it existed (each server process then
        seals with a key of its own, and its nonces are valid only there)."""
        key = _hex_file(self.data_dir / CHALLENGE_KEY_FILE, "the challenge key")
        if key is not None and len(key) != CHALLENGE_KEY_BYTES:
            raise ConfigError(f"{CHALLENGE_KEY_FILE} must hold {CHALLENGE_KEY_BYTES} bytes as hex")
        return key

    def admin_token_hash(self) -> bytes | None:
        """SHA-256 of the administrator token, or None when administration is disabled."""
        digest = _hex_file(self.data_dir / self.admin_token_file, "the administrator token hash")
        if digest is not None and len(digest) != hashlib.sha256().digest_size:
            raise ConfigError(f"{self.admin_token_file} must hold one hex SHA-256 digest")
        return digest

    def resolved_store_url(self) -> str:
        """The store URL with a relative SQLite path (``sqlite:///log.db`` or ``log.db``)
        made relative to the data directory, as every path in the configuration is."""
        return self._resolve(self.store_url)

    def _resolve(self, url: str) -> str:
        path = _sqlite_file(url)
        if path is None:
            return url
        return str(path if path.is_absolute() else self.data_dir / path)

    def open_store(self) -> MemoryStore | SQLiteStore | PostgresStore:
        """The store, whatever it holds (:func:`open_log_store` for one to write the log to).
        A URL :func:`check_store_url` refuses is refused before anything is opened."""
        check_store_url(self.store_url)
        return open_store(self.resolved_store_url())

    def open_index(self) -> IndexStore:
        """The provenance index (``index`` in the configuration; ``provenance.db``)."""
        check_store_url(self.index_url, what="index")
        return open_index(self._resolve(self.index_url))

    def checkpoint_signer(self) -> CheckpointSigner:
        return CheckpointSigner(
            origin=self.origin, signer=load_signer(self.data_dir / self.key_file, algorithm=ED25519)
        )

    def verifier_key(self) -> str:
        path = self.data_dir / "log.vkey"
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the log's verifier key {path.name}") from exc


#: ``scheme:`` at the start of a string that is no URL this version knows (``postgresql:/db``
#: with one slash, ``mysql:x``): a typo, never a file name (write ``./name`` for one).
_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
#: libpq's ``key=value`` connection string (``host=db dbname=ledger``).
_CONNINFO = re.compile(r"\s*[A-Za-z_]+\s*=")
_STORE_FORMS = (
    "sqlite:///path/to/log.db (a relative path: in the data directory), "
    "postgresql://user@host:5432/dbname (password via PGPASSWORD or ~/.pgpass)"
)


def absolute_store_path(url: str) -> str:
    """A store or index named on the command line: a SQLite file's plain relative path is
    the shell's, relative to the working directory, and made absolute here (in the
    configuration a relative path is relative to the data directory). Anything else as
    it is."""
    try:
        kind = check_store_url(url)
    except ConfigError:
        return url  # refused as written, by the command's own check
    if kind != "sqlite" or url.startswith("sqlite:///") or Path(url).is_absolute():
        return url
    return str(Path(url).absolute())


def check_store_url(url: str, *, what: str = "store") -> str:
    """The kind of store a URL names (``"memory"``, ``"sqlite"`` or ``"postgresql"``), or
    :class:`ConfigError` for one no command should open.

    The one parser of store (and index) URLs, before anything is opened: ``init`` checks
    what it writes to the configuration with it, and every command that opens a store
    does too. A PostgreSQL URL must name its database; libpq's ``key=value`` form and a
    scheme this version does not know (or a URL missing its ``//``) are refused rather
    than taken for a SQLite file name; any other string is a SQLite file's path.
    Messages never show a password.
    """
    if url in ("memory:", "memory://"):
        return "memory"
    if url.startswith("sqlite:///"):
        if not url[len("sqlite:///") :]:
            raise ConfigError(
                f"the {what} URL sqlite:/// names no file",
                hint=f"Write {_STORE_FORMS}.",
                code="store-url-invalid",
            )
        return "sqlite"
    scheme, sep, _ = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            raise ConfigError(
                f"the {what} URL {scheme}://… is not a valid PostgreSQL URL",
                hint=f"Write {_STORE_FORMS}.",
                code="store-url-invalid",
            ) from None
        if any(params.get(key) for key in _SECRET_PARAMS):
            raise _holds_a_password(url, what)
        if not params.get("dbname"):
            shown = describe_store(url).removesuffix("(default)")
            raise ConfigError(
                f"the {what} URL {shown} names no database",
                hint="Name it after the host: postgresql://user@host:5432/dbname.",
                code="store-url-invalid",
            )
        return "postgresql"
    if sep:
        hint = f"Write {_STORE_FORMS}, or memory: for a throwaway log."
        if scheme == "sqlite":
            hint = "A SQLite URL has three slashes: sqlite:///path/to/log.db."
        raise ConfigError(
            f"unsupported {what} URL scheme {scheme!r}", hint=hint, code="store-url-invalid"
        )
    if _CONNINFO.match(url):
        raise ConfigError(
            f"the {what} {_conninfo_shown(url)} looks like a libpq connection string "
            "(key=value), not a URL or a file",
            hint=f"Write it as a URL: {_as_url(url)} (password via PGPASSWORD or ~/.pgpass).",
            code="store-url-invalid",
        )
    prefix = _SCHEME_PREFIX.match(url)
    if prefix is not None or not url.strip():
        # Only the scheme is shown: the rest may hold a password.
        shown = "''" if prefix is None else prefix.group() + "…"
        raise ConfigError(
            f"the {what} URL {shown} is neither a URL this version knows nor a file "
            "(a URL has // after its scheme)",
            hint=f"Write {_STORE_FORMS}; a file whose name has a colon: ./name.",
            code="store-url-invalid",
        )
    return "sqlite"


#: Connection parameters that are secrets: the password, and the passphrase of the client
#: certificate's key. Never in a URL, never shown.
_SECRET_PARAMS = ("password", "sslpassword")


def _holds_a_password(url: str, what: str, where: str = "") -> ConfigError:
    """A PostgreSQL URL with a password in it: refused, for ``sealtrail.toml`` would keep the
    password in plain text (and a command line shows it to every user of the host)."""
    return ConfigError(
        f"{where}the {what} URL {describe_store(url)} holds a password, and a password never "
        "goes in the URL (sealtrail.toml and command lines keep it in the clear)",
        hint="Remove it from the URL (postgresql://user@host:5432/dbname) and give it to libpq "
        "instead: ~/.pgpass (mode 0600), a passfile (?passfile=/path in the URL), a service "
        "file (PGSERVICEFILE), or PGPASSWORD.",
        code="store-url-invalid",
    )


def _refuse_a_password(url: str, what: str, *, where: str = "") -> None:
    """:func:`_holds_a_password` for a PostgreSQL URL that has one; any other URL (and one
    that does not parse, which :func:`check_store_url` refuses when it is used) passes."""
    scheme, sep, _ = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return
    if any(params.get(key) for key in _SECRET_PARAMS):
        raise _holds_a_password(url, what, where)


def _conninfo_shown(url: str) -> str:
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "setting"
    return "'" + " ".join(f"{k}={v}" for k, v in params.items() if k not in _SECRET_PARAMS) + "'"


def _as_url(url: str) -> str:
    """A ``key=value`` connection string as the URL to write instead (no password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://user@host:5432/dbname"
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or 'dbname'}"


def _sqlite_file(url: str) -> Path | None:
    """The file of a resolved SQLite store URL (None for any other store)."""
    if check_store_url(url) != "sqlite":
        return None
    return Path(url[len("sqlite:///") :] if url.startswith("sqlite:///") else url)


@dataclass(frozen=True)
class _Found:
    """What a store holds: its checkpoint (None: none) and whether anything else is there."""

    checkpoint: bytes | None
    size: int
    remnants: bool

    @property
    def empty(self) -> bool:
        return self.checkpoint is None and not self.remnants

    def origin(self) -> str | None:
        """The origin the checkpoint names (read, not verified), None if unreadable."""
        if self.checkpoint is None:
            return None
        text = self.checkpoint.split(b"\n\n", 1)[0] + b"\n"
        try:
            return Checkpoint.parse(text.decode("utf-8")).origin
        except (UnicodeDecodeError, MerkleError):
            return None

    def described(self) -> str:
        if self.checkpoint is None:
            return "tiles or statements but no checkpoint"
        origin = self.origin()
        named = "of an unreadable origin" if origin is None else origin
        return f"log {named} (size {self.size})"


def _found(store: MemoryStore | SQLiteStore | PostgresStore) -> _Found:
    stored = store.read_checkpoint()
    if stored is not None:
        return _Found(stored.note, stored.size, remnants=False)
    remnants = bool(
        store.read_parts(0, 0)
        or store.read_parts(ENTRY_BUNDLES, 0)
        or store.statements_since(0, limit=1)
    )
    return _Found(None, 0, remnants=remnants)


def _write_genesis(
    store: MemoryStore | SQLiteStore | PostgresStore, signer: CheckpointSigner
) -> None:
    """The log's first checkpoint, of size 0, into an empty store; refused if another one
    got there first (a store commits a genesis only while it holds no checkpoint)."""
    genesis = signer.sign(size=0, root=EMPTY_ROOT)
    try:
        store.commit(Commit(old_size=0, new_size=0, checkpoint=genesis.note, parts=(), leaves=()))
    except CheckpointConflict:
        raise ConfigError(
            "another log was started in the store at the same time",
            hint="Pick a store of its own for this log.",
            code="store-log-exists",
        ) from None


def open_log_store(
    config: Config, *, verifier: NoteVerifier | None = None, new_log: bool = False
) -> MemoryStore | SQLiteStore | PostgresStore:
    """The data directory's store, once it is known to hold this directory's log: what
    a command that writes to the log opens (``serve``; see :func:`check_store_log`).

    A missing SQLite file is refused without being created.

    ``new_log``: the way out for a data directory made before ``init`` wrote the log's
    first checkpoint: write it now, into an empty store only (refused on one that holds
    anything, and when the provenance index has applied entries of a log).
    """
    url = config.resolved_store_url()
    check_store_url(config.store_url)
    if new_log:
        _refuse_a_served_index(config, describe_store(url))
        _refuse_a_seen_log(config, describe_store(url))
    path = _sqlite_file(url)
    if path is not None and not path.exists() and not new_log:
        raise _no_log(config, describe_store(url))
    store = config.open_store()
    try:
        if new_log:
            _start_log(config, store, _found(store), describe_store(url))
        else:
            check_store_log(config, store, verifier=verifier)
    except BaseException:
        store.close()
        raise
    return store


def check_store_log(
    config: Config,
    store: MemoryStore | SQLiteStore | PostgresStore,
    *,
    verifier: NoteVerifier | None = None,
    empty_ok: bool = False,
) -> None:
    """Refuse (:class:`ConfigError`, one line naming the store) a store that does not hold
    this data directory's log, before anything writes to it: one that holds no log (a
    sequencer would start a second log there with this directory's keys: a split view;
    ``empty_ok`` lets it pass, for a reader), and one whose checkpoint is of another
    origin or not signed by this directory's key (``verifier``; default: the published
    ``log.vkey``, so that a reader needs no secret key; a writer passes its signer's)."""
    found = _found(store)
    where = describe_store(config.resolved_store_url())
    if verifier is None:
        verifier = _published_verifier(config)
    if found.checkpoint is not None:
        stored = _check_log(config, found, where, verifier)
    elif found.remnants:
        raise ConfigError(
            f"the store at {where} holds {found.described()}: its checkpoint was removed, "
            "or a write was cut short",
            hint="Restore the store from its backup, or check --store; `sealtrail audit` "
            "needs a signed checkpoint to check the tiles against.",
            code="store-log-missing",
        )
    elif not empty_ok:
        raise _no_log(config, where)
    else:
        stored = None
    _check_seen(config, store, stored, where, verifier)


def _published_verifier(config: Config) -> NoteVerifier:
    """The log's public key as published in ``log.vkey``."""
    try:
        return NoteVerifier.parse(config.verifier_key())
    except InvalidInput as exc:
        raise ConfigError(f"log.vkey is not a verifier key: {exc.message}") from None


def _no_log(config: Config, where: str) -> ConfigError:
    return ConfigError(
        f"the store at {where} holds no log: this data directory's log (origin "
        f"{config.origin}) is elsewhere",
        hint="Check --store or the config's store (a new log starts with `sealtrail init "
        "--store URL`). A data directory made by an older `init` and never served starts "
        "its log once with `sealtrail serve --new-log`: never one that served a log before.",
        code="store-log-missing",
    )


def _check_log(
    config: Config, found: _Found, where: str, verifier: NoteVerifier
) -> SignedCheckpoint:
    assert found.checkpoint is not None
    origin = found.origin()
    if origin != config.origin:
        raise ConfigError(
            f"the store at {where} holds {found.described()}, not this data directory's "
            f"log {config.origin}",
            hint="Check --store or the config's store: each log is served with the data "
            "directory (keys) that made it.",
            code="store-log-foreign",
        )
    try:
        return verify_checkpoint(found.checkpoint, origin=config.origin, verifiers=[verifier])
    except InvalidSignature:
        if _names_key(found.checkpoint, verifier):
            raise ConfigError(
                f"the store at {where} holds log {origin} (size {found.size}), but the "
                "signature of this data directory's key on its checkpoint does not verify: "
                "the checkpoint was edited",
                hint="Restore the store from its backup; `sealtrail log verify` checks the "
                "rest of the tree once the checkpoint verifies.",
                code="store-log-foreign",
            ) from None
        raise ConfigError(
            f"the store at {where} holds log {origin} (size {found.size}) signed by another "
            "key than this data directory's",
            hint="Another data directory of the same origin made that log: serve it with "
            "that directory's keys/log.key, or check --store.",
            code="store-log-foreign",
        ) from None
    except MalformedNote as exc:
        raise ConfigError(
            f"the store at {where} holds a checkpoint that is not a signed checkpoint: "
            f"{exc.message}",
            code="store-log-foreign",
        ) from None


def _names_key(note: bytes, verifier: NoteVerifier) -> bool:
    """Whether a signature line of ``note`` names ``verifier``'s key (its name and key id),
    whether or not the signature verifies."""
    prefix = f"\u2014 {verifier.name} ".encode()
    for line in note.split(b"\n\n", 1)[-1].splitlines():
        if line.startswith(prefix):
            with contextlib.suppress(ValueError):
                if base64.b64decode(line[len(prefix) :], validate=True)[:4] == verifier.key_id:
                    return True
    return False


def _check_seen(
    config: Config,
    store: MemoryStore | SQLiteStore | PostgresStore,
    stored: SignedCheckpoint | None,
    where: str,
    verifier: NoteVerifier,
) -> None:
    """Refuse a store whose log is behind the checkpoint this directory's servers last saw
    (``seen-checkpoint``), or does not extend it: restored from an older backup, a lagging
    replica, a fork. A sequencer would sign a second history at sizes clients have seen."""
    seen = read_seen_checkpoint(config, verifier)
    if seen is None or seen.size == 0:
        return
    hint = (
        "Serve the store that holds the newer log (restore a database to the end of its "
        f"WAL, never to an earlier time). If this log is the one to keep, remove "
        f"{SEEN_CHECKPOINT_FILE} (and run `sealtrail index rebuild`): clients that saw the "
        "longer log will see a fork."
    )
    size = 0 if stored is None else stored.size
    reader = LogReader(store, origin=config.origin, verifiers=[verifier])
    try:
        reader.check_extends(seen, stored)
    except Corruption as exc:
        if exc.code != ROLLED_BACK:
            raise
        raise ConfigError(
            f"the store at {where} holds log {config.origin} at size {size}, but a server of "
            f"this data directory saw it at size {seen.size}: the store was rolled back",
            hint=hint,
            code="store-log-rolled-back",
        ) from None
    except InvalidProof:
        raise ConfigError(
            f"the store at {where} holds log {config.origin} at size {size}, which does not "
            f"extend the checkpoint of size {seen.size} a server of this data directory saw: "
            "a fork",
            hint=hint,
            code="store-log-forked",
        ) from None


def read_seen_checkpoint(config: Config, verifier: NoteVerifier) -> SignedCheckpoint | None:
    """The checkpoint in ``seen-checkpoint``, signature verified; ``None`` when there is
    none."""
    path = config.data_dir / SEEN_CHECKPOINT_FILE
    try:
        with path.open("rb") as handle:
            note = handle.read(MAX_SEEN_CHECKPOINT + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {SEEN_CHECKPOINT_FILE}: {exc.strerror}") from None
    try:
        if len(note) > MAX_SEEN_CHECKPOINT:
            raise MalformedNote(f"larger than {MAX_SEEN_CHECKPOINT} bytes")
        return verify_checkpoint(note, origin=config.origin, verifiers=[verifier])
    except VerificationError as exc:
        raise ConfigError(
            f"{SEEN_CHECKPOINT_FILE} is not a checkpoint of this log: {exc.message}",
            hint="It holds the last checkpoint a server saw; remove it if it was damaged.",
            code="seen-checkpoint-invalid",
        ) from None


def remember_checkpoint(config: Config, signed: SignedCheckpoint) -> None:
    """Keep ``signed`` as the newest checkpoint this data directory's servers have seen,
    unless the file already holds a larger one (servers sharing the directory write it in
    turn)."""
    path = config.data_dir / SEEN_CHECKPOINT_FILE
    with contextlib.suppress(OSError, ValueError, MerkleError, UnicodeDecodeError):
        with path.open("rb") as handle:  # its first lines only: what read_seen_checkpoint reads
            text = handle.read(MAX_SEEN_CHECKPOINT).split(b"\n\n", 1)[0] + b"\n"
        if Checkpoint.parse(text.decode("utf-8")).size >= signed.size:
            return
    _write_atomically(path, signed.note, mode=0o644)


def _start_log(
    config: Config, store: MemoryStore | SQLiteStore | PostgresStore, found: _Found, where: str
) -> None:
    if not found.empty:
        mine = found.origin() == config.origin
        raise ConfigError(
            f"--new-log: the store at {where} already holds {found.described()}",
            hint="Drop --new-log: it starts a log once, on an empty store."
            if mine
            else "Check the config's store: --new-log starts a log on an empty store only.",
            code="store-log-exists",
        )
    _write_genesis(store, config.checkpoint_signer())


def _refuse_a_served_index(config: Config, where: str) -> None:
    """A provenance index that applied entries: the directory served a log (``--new-log``
    must not start another one beside a lost store)."""
    index = config.open_index()
    try:
        applied = index.applied_size()
    finally:
        index.close()
    if applied:
        raise ConfigError(
            f"--new-log: the provenance index has applied {applied} entries of a log that "
            f"the store at {where} does not hold: this data directory served that log",
            hint="Point the config's store at that log's store; a second log with the same "
            "keys would be a fork.",
            code="store-log-missing",
        )


def _refuse_a_seen_log(config: Config, where: str) -> None:
    """A ``seen-checkpoint`` past the genesis: the directory served a log (``--new-log``
    must not start another one beside a lost store)."""
    seen = read_seen_checkpoint(config, config.checkpoint_signer().verifier)
    if seen is not None and seen.size:
        raise ConfigError(
            f"--new-log: a server of this data directory saw its log at size {seen.size}, "
            f"and the store at {where} does not hold it",
            hint="Point the config's store at that log's store; a second log with the same "
            "keys would be a fork.",
            code="store-log-missing",
        )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _tls_lines(config: Config) -> list[str]:
    settings = [
        ("tls_cert", config.tls_cert, "keys/tls.crt"),
        ("tls_key", config.tls_key, "keys/tls.key"),
        ("tls_client_ca", config.tls_client_ca, "keys/clients-ca.pem"),
    ]
    return [
        f"{name} = {_toml_value(value)}" if value is not None else f'# {name} = "{example}"'
        for name, value, example in settings
    ]


def _render(config: Config) -> str:
    seq = config.sequencer
    lines = [
        "# Sealtrail data directory configuration (see ARCHITECTURE.md and docs/keys.md).",
        f"origin = {_toml_value(config.origin)}",
        f"issuer = {_toml_value(config.service_issuer)}",
        f"store = {_toml_value(config.store_url)}",
        f"index = {_toml_value(config.index_url)}",
        f"key_file = {_toml_value(config.key_file)}",
        f"service_key_file = {_toml_value(config.service_key_file)}",
        f"retired_keys_dir = {_toml_value(config.retired_keys_dir)}",
        f"admin_token_file = {_toml_value(config.admin_token_file)}",
        "",
        "# The receipt key on an HSM instead of service_key_file:",
        "# [service_key.pkcs11]",
        '# module = "/usr/lib/softhsm/libsofthsm2.so"',
        '# token_label = "sealtrail"',
        '# key_label = "receipts"',
        '# pin_file = "keys/hsm.pin"       # or: pin_env = "SEALTRAIL_HSM_PIN"',
        "",
        "[server]",
        f"host = {_toml_value(config.host)}",
        f"port = {_toml_value(config.port)}",
        "# Largest signed statement accepted, in bytes (each organization's policy may set less).",
        f"max_statement_size = {config.max_statement_size}",
        "# Requests per second per client, bursts of twice that; 0 = unlimited (docs/limits.md).",
        f"rate_limit_reads = {config.rate_limit_reads:g}",
        f"rate_limit_writes = {config.rate_limit_writes:g}",
        "# HTTPS: a PEM certificate (chain) and its private key, relative to this directory.",
        "# tls_client_ca (a PEM bundle) also asks clients for a certificate (optional).",
        *_tls_lines(config),
        "",
        "[sequencer]",
        f"max_batch = {seq.max_batch}",
        f"max_delay = {seq.max_delay!r}",
        f"max_pending = {seq.max_pending}",
        f"max_pending_bytes = {seq.max_pending_bytes}",
        f"index_every = {seq.index_every}",
        "",
        "[auth]",
        "# true: every request needs a token whose persona the route allows; statements'",
        "# contents only for their organization, auditors and administrators (docs/auth.md).",
        "# false: open the way SCITT allows (anyone may register a statement its issuer's",
        "# policy accepts); only administration needs a token.",
        f"required = {_toml_value(config.auth_required)}",
        "",
        "[provenance]",
        "# Seconds a server's last passing attestation stays fresh (compliance sweep).",
        f"max_attestation_age = {config.max_attestation_age}",
        "# Attestations and arrivals must answer nonces this service issued (POST",
        "# /provenance/v1/challenges, `sealtrail challenge`), within challenge_ttl seconds.",
        f"require_challenge = {_toml_value(config.require_challenge)}",
        f"challenge_ttl = {config.challenge_ttl}",
        "# Lowest security version an attestation accepts without a warning, per component:",
        "# [provenance.min_security_version]",
        '# "caliptra-rt" = 3',
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Initialized:
    """A new data directory, and its administrator token: SECRET, shown once, never stored."""

    config: Config
    admin_token: str


def init_data_dir(
    data_dir: Path,
    *,
    origin: str | None = None,
    store_url: str = DEFAULT_STORE,
    index_url: str | None = None,
    service_algorithm: str = ES256,
) -> Initialized:
    """Create a data directory with fresh keys and an administrator token, and start its log:
    a signed checkpoint of size 0 (the log's genesis) in the store.

    Refuses to touch an existing data directory, a store URL :func:`check_store_url`
    refuses (and ``memory:``, which forgets the log), and a store that already holds a log
    (a checkpoint, a tile or a statement). A refused or failed init leaves nothing behind:
    what it created is removed.
    """
    if (data_dir / CONFIG_FILE).exists():
        raise ConfigError(
            f"{data_dir} is already a Sealtrail data directory",
            hint="Use it as it is, or pick another --data-dir.",
        )
    if service_algorithm not in ALGORITHMS:
        raise ConfigError(
            f"unknown receipt key algorithm {service_algorithm!r}; "
            f"supported: {', '.join(ALGORITHMS)}"
        )
    kind = check_store_url(store_url)
    if kind == "memory":
        raise ConfigError(
            "a data directory's store cannot be memory: (the log would be gone when the "
            "process ends)",
            hint=f"Write {_STORE_FORMS}.",
            code="store-url-invalid",
        )
    if index_url is not None:
        check_store_url(index_url, what="index")
    origin = f"sealtrail.localhost/{secrets.token_hex(4)}" if origin is None else origin
    check_origin(origin, new=True)  # before anything is opened or written: a log keeps it
    if index_url is None:
        # A server store keeps the index beside the log (its tables do not collide).
        index_url = store_url if kind == "postgresql" else DEFAULT_INDEX
    config = Config(
        data_dir=data_dir,
        origin=origin,
        store_url=store_url,
        index_url=index_url,
        sequencer=sequencer_defaults(store_url),
    )
    where = describe_store(config.resolved_store_url())
    sqlite_file = _sqlite_file(config.resolved_store_url())
    _check_index(config)
    store = None
    if sqlite_file is None or sqlite_file.exists():
        store = config.open_store()  # fail now, not at the first serve, on a wrong URL
    with _undone_on_error(data_dir, sqlite_file):
        try:
            if store is not None:
                _refuse_a_log(store, where)
            try:
                data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                (data_dir / "keys").mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the data directory {data_dir}: {exc.strerror}",
                    hint="Give --data-dir a path where a directory can be made.",
                ) from None
            signer = Ed25519Signer.generate()
            write_private_key(data_dir / config.key_file, signer)
            checkpoint_signer = CheckpointSigner(origin=origin, signer=signer)
            (data_dir / "log.vkey").write_text(
                checkpoint_signer.verifier_key() + "\n", encoding="utf-8"
            )
            write_private_key(data_dir / config.service_key_file, _software_key(service_algorithm))
            write_challenge_key(config)
            token = issue_admin_token(config)
            if store is None:
                store = config.open_store()
                _refuse_a_log(store, where)
            _write_genesis(store, checkpoint_signer)
        finally:
            if store is not None:
                store.close()
        # The config is written last: a directory without it is not yet a data directory.
        _write_atomically(data_dir / CONFIG_FILE, _render(config).encode("utf-8"), mode=0o600)
    return Initialized(config=config, admin_token=token)


def _check_index(config: Config) -> None:
    """Open the provenance index a new data directory names, as its store is opened, so that
    a wrong URL or a server that is down fails the init and not the first serve: a
    PostgreSQL index (unless it is the store's database, which the store's open reaches)
    and a SQLite file that exists (a new one is made by the first command that uses it)."""
    url = config._resolve(config.index_url)
    if url == config.resolved_store_url():
        return
    kind = check_store_url(url, what="index")
    index_file = _sqlite_file(url)
    if kind == "postgresql" or (index_file is not None and index_file.exists()):
        config.open_index().close()


def _refuse_a_log(store: MemoryStore | SQLiteStore | PostgresStore, where: str) -> None:
    found = _found(store)
    if not found.empty:
        raise ConfigError(
            f"the store at {where} already holds {found.described()}: init starts a new "
            "log on an empty store only",
            hint="Serve that log with the data directory that made it, or give init a store "
            "of its own (another database, or a schema: ?options=-csearch_path%3Dname).",
            code="store-log-exists",
        )


@contextlib.contextmanager
def _undone_on_error(data_dir: Path, sqlite_file: Path | None) -> Iterator[None]:
    """Remove what an init created if it fails: the directories it made (``data_dir`` and
    missing parents), else the entries new in ``data_dir``; and a new SQLite file."""
    top: Path | None = None
    for folder in (data_dir, *data_dir.parents):
        if folder.exists():
            break
        top = folder
    before = set(os.listdir(data_dir)) if top is None and data_dir.is_dir() else set()
    new_file = sqlite_file is not None and not sqlite_file.exists()
    try:
        yield
    except BaseException:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        elif data_dir.is_dir():
            for name in set(os.listdir(data_dir)) - before:
                entry = data_dir / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        if new_file and sqlite_file is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):  # its folder may be what could not be made
                    Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
        raise


def write_challenge_key(config: Config) -> None:
    """A fresh challenge key (SECRET, mode 0600): see :meth:`Config.challenge_key`."""
    key = secrets.token_bytes(CHALLENGE_KEY_BYTES)
    _write_atomically(config.data_dir / CHALLENGE_KEY_FILE, (key.hex() + "\n").encode(), mode=0o600)


def issue_admin_token(config: Config) -> str:
    """A new administrator token; only its SHA-256 is stored, the old token stops working.

    Returns the token: SECRET, show it once and never log it.
    """
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode("ascii")).hexdigest()
    _write_atomically(
        config.data_dir / config.admin_token_file, (digest + "\n").encode(), mode=0o600
    )
    return token


@dataclass(frozen=True)
class Rotation:
    """A receipt key rotation: the retired key (still published) and the new current one."""

    retired_kid: bytes
    current_kid: bytes
    algorithm: str


def rotate_service_key(config: Config, *, algorithm: str | None = None) -> Rotation:
    """Retire the receipt key and make a new one (software keys only).

    The old public key goes to the retired-keys folder first, so receipts it signed keep
    verifying (it stays in ``/.well-known/scitt-keys``); then the new private key replaces
    the old one atomically. *A crash between the two leaves the old key both current and
    retired, which is harmless; the old private key is gone once the replace returns.*
    A running server picks the new key up when restarted.
    """
    if config.service_pkcs11 is not None:
        raise ConfigError(
            "the receipt key is on a PKCS#11 token: rotate it there",
            hint="Generate a new key on the token, put the old public key (PEM) in "
            f"{config.retired_keys_dir}/ and point [service_key.pkcs11] key_label at the new one.",
        )
    old = config.service_signer()
    algorithm = algorithm or old.algorithm
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}; supported: {', '.join(ALGORITHMS)}")
    new = _software_key(algorithm)
    old_kid = key_id(old.verifier())
    folder = config.data_dir / config.retired_keys_dir
    retired = folder / f"{old_kid.hex()}.pem"
    made, had = not folder.exists(), retired.exists()
    pem = old.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    target = config.data_dir / config.service_key_file
    staged = target.with_name(f".{target.name}.new")
    try:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {config.retired_keys_dir}: {exc.strerror}") from None
        _write_atomically(retired, pem, mode=0o644)
        # If we crash after this line, the old key is already published as retired.
        try:
            staged.unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot write {target.name}: {exc.strerror}") from None
        write_private_key(staged, new)
        try:
            os.replace(staged, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                staged.unlink(missing_ok=True)
            raise ConfigError(f"cannot write {target.name}: {exc.strerror}") from None
    except ConfigError:
        # Nothing rotated: the old key stays current, and is not left listed as retired.
        with contextlib.suppress(OSError):
            if not had:
                retired.unlink(missing_ok=True)
            if made:
                folder.rmdir()
        raise
    # The new key is in place from here on: a failure to sync is reported, not undone.
    _fsync_directory(target.parent)
    return Rotation(retired_kid=old_kid, current_kid=key_id(new.verifier()), algorithm=algorithm)


def _software_key(algorithm: str) -> SoftwareSigner:
    signer = generate_signer(algorithm)
    assert isinstance(signer, SoftwareSigner)
    return signer


def _read_public_key(path: Path) -> Verifier:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PUBLIC_PEM + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read retired key {path.name}: {exc.strerror}") from None
    if len(data) > MAX_PUBLIC_PEM:
        raise ConfigError(f"retired key {path.name} is larger than {MAX_PUBLIC_PEM} bytes")
    try:
        return verifier_for(serialization.load_pem_public_key(data))
    except (ValueError, TypeError, Error) as exc:
        raise ConfigError(
            f"retired key {path.name} is not a supported public key (PEM): "
            f"{exc if isinstance(exc, Error) else type(exc).__name__}"
        ) from None


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` via a synced temporary file and a rename."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path.name}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if os.name == "posix":
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path.name}: {exc.strerror}") from None
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot sync the folder {directory.name}: {exc.strerror}") from None


def _get(table: dict[str, Any], key: str, kind: type[_T], default: _T) -> _T:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{CONFIG_FILE}: {key} must be of type {kind.__name__}")
    return value


def _port(server: dict[str, Any]) -> int:
    port = _get(server, "port", int, DEFAULT_PORT)
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"{CONFIG_FILE}: [server] port must be from 0 to {MAX_PORT}")
    return port


def _sequencer(seq: dict[str, Any], defaults: SequencerConfig) -> SequencerConfig:
    try:
        return SequencerConfig(
            max_batch=_get(seq, "max_batch", int, defaults.max_batch),
            max_delay=_get(seq, "max_delay", float, defaults.max_delay),
            max_pending=_get(seq, "max_pending", int, defaults.max_pending),
            max_pending_bytes=_get(seq, "max_pending_bytes", int, defaults.max_pending_bytes),
            index_every=_get(seq, "index_every", int, defaults.index_every),
        )
    except InvalidInput as exc:
        raise ConfigError(f"{CONFIG_FILE}: [sequencer] {exc.message}") from None


def _pkcs11(raw: dict[str, Any]) -> Pkcs11KeyConfig | None:
    table = raw.get("service_key", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{CONFIG_FILE}: [service_key] must be a table")
    hsm = table.get("pkcs11")
    if hsm is None:
        return None
    if not isinstance(hsm, dict):
        raise ConfigError(f"{CONFIG_FILE}: [service_key.pkcs11] must be a table")
    pin_file = hsm.get("pin_file")
    pin_env = hsm.get("pin_env")
    if (pin_file is None) == (pin_env is None):
        raise ConfigError(
            f"{CONFIG_FILE}: [service_key.pkcs11] needs exactly one of pin_file or pin_env"
        )
    if "pin" in hsm:
        raise ConfigError(
            f"{CONFIG_FILE}: a PIN never goes in the configuration",
            hint="Use pin_file (mode 0600) or pin_env.",
        )
    return Pkcs11KeyConfig(
        module=_get(hsm, "module", str, ""),
        token_label=_get(hsm, "token_label", str, ""),
        key_label=_get(hsm, "key_label", str, ""),
        pin_file=None if pin_file is None else _get(hsm, "pin_file", str, ""),
        pin_env=None if pin_env is None else _get(hsm, "pin_env", str, ""),
    )


def _positive(table: dict[str, Any], key: str, default: int) -> int:
    value = _get(table, key, int, default)
    if value <= 0:
        raise ConfigError(f"{CONFIG_FILE}: {key} must be a positive number of seconds")
    return value


def _check_policy(max_attestation_age: int, minimums: dict[str, int]) -> None:
    """The policy settings as a server records them (a provenance policy record), so that
    one it could not record is refused here, when the configuration is read."""
    change = PolicyChange(1, max_attestation_age, tuple(sorted(minimums.items())))
    try:
        parse_policy_change(change.to_json())
    except Error as exc:
        raise ConfigError(
            f"{CONFIG_FILE}: [provenance]: {exc.message}",
            hint=f"max_attestation_age is 1 to {MAX_POLICY_AGE} s (a year); "
            f"[provenance.min_security_version] names at most {MAX_POLICY_COMPONENTS} "
            f"components, each with a security version of at most {MAX_SECURITY_VERSION} "
            "(docs/provenance.md).",
        ) from None


def _statement_limit(server: dict[str, Any]) -> int:
    value = _get(server, "max_statement_size", int, DEFAULT_MAX_STATEMENT_SIZE)
    if not 0 < value <= MAX_STATEMENT_SIZE_LIMIT:
        raise ConfigError(
            f"{CONFIG_FILE}: [server] max_statement_size must be 1..{MAX_STATEMENT_SIZE_LIMIT}"
        )
    return value


def _rate_limit(server: dict[str, Any], key: str, default: float) -> float:
    value = _get(server, key, float, default)
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(
            f"{CONFIG_FILE}: [server] {key} must be a number of requests per second >= 0 "
            "(0: unlimited)"
        )
    return value


def _tls(server: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``tls_cert``, ``tls_key`` and ``tls_client_ca``: the first two both or neither."""
    cert, key, client_ca = (
        None if server.get(name) is None else _get(server, name, str, "")
        for name in ("tls_cert", "tls_key", "tls_client_ca")
    )
    for name, value in (("tls_cert", cert), ("tls_key", key), ("tls_client_ca", client_ca)):
        if value == "":
            raise ConfigError(f"{CONFIG_FILE}: [server] {name} is empty")
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise ConfigError(
            f"{CONFIG_FILE}: [server] {missing} is missing: tls_cert and tls_key go together",
            hint="Set both (a PEM certificate and its private key) or neither.",
        )
    if client_ca is not None and cert is None:
        raise ConfigError(
            f"{CONFIG_FILE}: [server] tls_client_ca needs tls_cert and tls_key",
            hint="Client certificates are only asked for over TLS.",
        )
    return cert, key, client_ca


def sequencer_defaults(store_url: str) -> SequencerConfig:
    """The sequencer settings a store gets unless ``[sequencer]`` says otherwise: a batch
    waits about one commit's time for more entries (PostgreSQL's commits take longer)."""
    if store_url.startswith(("postgresql://", "postgres://")):
        return SequencerConfig(max_delay=SHARED_MAX_DELAY)
    return SequencerConfig()


def load_config(data_dir: Path) -> Config:
    path = data_dir / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{data_dir} is not a Sealtrail data directory (no {CONFIG_FILE})",
            hint="Create one with 'sealtrail init --data-dir DIR'.",
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {CONFIG_FILE}: {exc}") from exc
    server = raw.get("server", {})
    seq = raw.get("sequencer", {})
    prov = raw.get("provenance", {})
    auth = raw.get("auth", {})
    if not all(isinstance(t, dict) for t in (server, seq, prov, auth)):
        raise ConfigError(
            f"{CONFIG_FILE}: [server], [sequencer], [auth] and [provenance] must be tables"
        )
    minimums = prov.get("min_security_version", {})
    if not isinstance(minimums, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in minimums.values()
    ):
        raise ConfigError(
            f"{CONFIG_FILE}: [provenance.min_security_version] maps components to "
            "non-negative integers"
        )
    max_attestation_age = _positive(prov, "max_attestation_age", DEFAULT_MAX_ATTESTATION_AGE)
    _check_policy(max_attestation_age, minimums)
    store_url = _get(raw, "store", str, DEFAULT_STORE)
    index_url = _get(raw, "index", str, DEFAULT_INDEX)
    _refuse_a_password(store_url, "store", where=f"{CONFIG_FILE}: ")
    _refuse_a_password(index_url, "index", where=f"{CONFIG_FILE}: ")
    defaults = sequencer_defaults(store_url)
    origin = _get(raw, "origin", str, "")
    if not origin:
        raise ConfigError(f"{CONFIG_FILE}: origin is missing")
    try:
        check_origin(origin)
    except InvalidInput as exc:
        raise ConfigError(
            f"{CONFIG_FILE}: {exc.message}",
            hint="A log keeps its origin for good: make a new data directory with "
            "`sealtrail init --origin`.",
        ) from None
    tls_cert, tls_key, tls_client_ca = _tls(server)
    return Config(
        data_dir=data_dir,
        origin=origin,
        issuer=_get(raw, "issuer", str, ""),
        store_url=store_url,
        key_file=_get(raw, "key_file", str, "keys/log.key"),
        service_key_file=_get(raw, "service_key_file", str, DEFAULT_SERVICE_KEY),
        service_pkcs11=_pkcs11(raw),
        retired_keys_dir=_get(raw, "retired_keys_dir", str, DEFAULT_RETIRED_DIR),
        admin_token_file=_get(raw, "admin_token_file", str, DEFAULT_ADMIN_TOKEN_FILE),
        host=_get(server, "host", str, DEFAULT_HOST),
        port=_port(server),
        sequencer=_sequencer(seq, defaults),
        index_url=index_url,
        max_statement_size=_statement_limit(server),
        rate_limit_reads=_rate_limit(server, "rate_limit_reads", DEFAULT_RATE_LIMIT_READS),
        rate_limit_writes=_rate_limit(server, "rate_limit_writes", DEFAULT_RATE_LIMIT_WRITES),
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        max_attestation_age=max_attestation_age,
        min_security_version=dict(minimums),
        require_challenge=_get(prov, "require_challenge", bool, True),
        auth_required=_get(auth, "required", bool, True),
        challenge_ttl=_positive(prov, "challenge_ttl", DEFAULT_CHALLENGE_TTL),
    )
