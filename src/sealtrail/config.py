"""The data directory: configuration, the log's signing key, and the store it points at.

Layout created by ``sealtrail init`` (directory mode 0700, key 0600)::

    <data-dir>/
      sealtrail.toml     origin, store URL, key file, server and sequencer settings
      keys/log.key       the checkpoint signing key (Ed25519, PKCS#8 PEM) - secret
      log.vkey           the log's public verifier key (name+keyhash+base64) - publish it
      log.db             the SQLite store (embedded default)
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sealtrail.errors import ConfigError
from sealtrail.keys import ED25519, Ed25519Signer, load_signer, write_private_key
from sealtrail.log import CheckpointSigner, SequencerConfig
from sealtrail.storage import LogStore, open_store

__all__ = [
    "CONFIG_FILE",
    "Config",
    "init_data_dir",
    "load_config",
]

CONFIG_FILE = "sealtrail.toml"
_T = TypeVar("_T")

DEFAULT_STORE = "sqlite:///log.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Config:
    data_dir: Path
    origin: str
    store_url: str = DEFAULT_STORE
    key_file: str = "keys/log.key"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)

    def resolved_store_url(self) -> str:
        """The store URL with a relative SQLite path made relative to the data directory."""
        prefix = "sqlite:///"
        if self.store_url.startswith(prefix):
            path = Path(self.store_url[len(prefix) :])
            if not path.is_absolute():
                path = self.data_dir / path
            return str(path)
        return self.store_url

    def open_store(self) -> LogStore:
        return open_store(self.resolved_store_url())

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


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _render(config: Config) -> str:
    seq = config.sequencer
    lines = [
        "# Sealtrail data directory configuration (see ARCHITECTURE.md).",
        f"origin = {_toml_value(config.origin)}",
        f"store = {_toml_value(config.store_url)}",
        f"key_file = {_toml_value(config.key_file)}",
        "",
        "[server]",
        f"host = {_toml_value(config.host)}",
        f"port = {_toml_value(config.port)}",
        "",
        "[sequencer]",
        f"max_batch = {seq.max_batch}",
        f"max_delay = {seq.max_delay!r}",
        f"max_pending = {seq.max_pending}",
        f"max_pending_bytes = {seq.max_pending_bytes}",
        f"index_every = {seq.index_every}",
        "",
    ]
    return "\n".join(lines)


def init_data_dir(
    data_dir: Path, *, origin: str | None = None, store_url: str = DEFAULT_STORE
) -> Config:
    """Create a data directory with a fresh log key. Refuses to touch an existing one."""
    if (data_dir / CONFIG_FILE).exists():
        raise ConfigError(
            f"{data_dir} is already a Sealtrail data directory",
            hint="Use it as it is, or pick another --data-dir.",
        )
    if origin is None:
        origin = f"sealtrail.localhost/{secrets.token_hex(4)}"
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data_dir / "keys").mkdir(mode=0o700, exist_ok=True)
    config = Config(data_dir=data_dir, origin=origin, store_url=store_url)
    signer = Ed25519Signer.generate()
    write_private_key(data_dir / config.key_file, signer)
    checkpoint_signer = CheckpointSigner(origin=origin, signer=signer)
    (data_dir / "log.vkey").write_text(checkpoint_signer.verifier_key() + "\n", encoding="utf-8")
    # The config is written last: a directory without it is not yet a data directory.
    tmp = data_dir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(_render(config), encoding="utf-8")
    os.replace(tmp, data_dir / CONFIG_FILE)
    return config


def _get(table: dict[str, Any], key: str, kind: type[_T], default: _T) -> _T:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{CONFIG_FILE}: {key} must be of type {kind.__name__}")
    return value


def load_config(data_dir: Path) -> Config:
    path = data_dir / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{data_dir} is not a Sealtrail data directory (no {CONFIG_FILE})"
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {CONFIG_FILE}: {exc}") from exc
    server = raw.get("server", {})
    seq = raw.get("sequencer", {})
    if not isinstance(server, dict) or not isinstance(seq, dict):
        raise ConfigError(f"{CONFIG_FILE}: [server] and [sequencer] must be tables")
    defaults = SequencerConfig()
    origin = _get(raw, "origin", str, "")
    if not origin:
        raise ConfigError(f"{CONFIG_FILE}: origin is missing")
    return Config(
        data_dir=data_dir,
        origin=origin,
        store_url=_get(raw, "store", str, DEFAULT_STORE),
        key_file=_get(raw, "key_file", str, "keys/log.key"),
        host=_get(server, "host", str, DEFAULT_HOST),
        port=_get(server, "port", int, DEFAULT_PORT),
        sequencer=SequencerConfig(
            max_batch=_get(seq, "max_batch", int, defaults.max_batch),
            max_delay=_get(seq, "max_delay", float, defaults.max_delay),
            max_pending=_get(seq, "max_pending", int, defaults.max_pending),
            max_pending_bytes=_get(seq, "max_pending_bytes", int, defaults.max_pending_bytes),
            index_every=_get(seq, "index_every", int, defaults.index_every),
        ),
    )
