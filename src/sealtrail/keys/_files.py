"""Software private keys on disk: PKCS#8 PEM, mode 0600, never overwritten."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealtrail.errors import ConfigError
from sealtrail.keys._ed25519 import Ed25519Signer
from sealtrail.keys._protocols import Signer

__all__ = ["MAX_KEY_FILE_SIZE", "load_signer", "write_private_key"]

MAX_KEY_FILE_SIZE = 64 * 1024
"""A PEM private key is a few hundred bytes; anything this large is not one."""

_POSIX = os.name == "posix"
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def write_private_key(path: str | os.PathLike[str], signer: Ed25519Signer) -> None:
    """Write ``signer``'s key to ``path`` as unencrypted PKCS#8 PEM with mode 0600.

    The file appears atomically and complete, or not at all. An existing file at ``path``
    is never replaced: that raises :class:`~sealtrail.errors.ConfigError`, so a second
    ``init`` cannot destroy a log's signing key.
    """
    if not isinstance(signer, Ed25519Signer):
        raise ConfigError("only software Ed25519 keys can be written to a key file")
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise ConfigError(
            f"refusing to overwrite existing key file {target}",
            hint="Move the old key away first if you really mean to replace it.",
        )
    directory = target.parent
    try:
        # mkstemp creates the file with O_EXCL and mode 0600 before any byte is written.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot create key file in {directory}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if _POSIX:
                os.fchmod(handle.fileno(), 0o600)
            handle.write(signer._pkcs8_pem())
            handle.flush()
            os.fsync(handle.fileno())
        # link() is atomic and fails if the target exists. If we crash before it, only a
        # hidden temporary file is left and ``path`` does not exist; after it, ``path`` holds
        # the complete, synced key.
        os.link(tmp, target)
    except FileExistsError:
        raise ConfigError(f"refusing to overwrite existing key file {target}") from None
    except OSError as exc:
        raise ConfigError(f"cannot write key file {target}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if _POSIX:
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """Read a software key written by :func:`write_private_key`.

    Raises :class:`~sealtrail.errors.ConfigError`, naming the file and what to do, when the
    file is missing, unreadable, not a regular file, readable or writable by group or others
    (POSIX), too large, encrypted, or not an Ed25519 PKCS#8 PEM private key.
    """
    target = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is rejected below.
        fd = os.open(target, os.O_RDONLY | _O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"key file not found: {target}") from None
    except OSError as exc:
        raise ConfigError(f"cannot open key file {target}: {exc.strerror}") from None
    try:
        # Check the file we opened, not the path, so a swap between check and read is harmless.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"key file {target} is not a regular file")
        if _POSIX and info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise ConfigError(
                f"key file {target} is accessible by group or others (mode {mode:04o})",
                hint=f"Restrict it to its owner: chmod 600 {target}",
            )
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        try:
            data = handle.read(MAX_KEY_FILE_SIZE + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read key file {target}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_SIZE:
        raise ConfigError(f"key file {target} is larger than {MAX_KEY_FILE_SIZE} bytes")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"key file {target} is encrypted; Sealtrail needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"key file {target} is not a PKCS#8 PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"key file {target} holds a {type(key).__name__.removeprefix('_')}; "
            "only Ed25519 keys are supported"
        )
    return Ed25519Signer(key)
