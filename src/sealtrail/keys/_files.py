"""Secrets on disk: software private keys (PKCS#8 PEM, mode 0600, never overwritten) and
HSM PINs (read from a file with the same checks, or from an environment variable)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from sealtrail.errors import ConfigError
from sealtrail.keys._ecdsa import EcdsaSigner
from sealtrail.keys._ed25519 import Ed25519Signer
from sealtrail.keys._mldsa import MlDsaSigner
from sealtrail.keys._protocols import ALGORITHMS, Signer
from sealtrail.keys._select import SUPPORTED_KEYS, SoftwareSigner, software_signer

__all__ = ["MAX_KEY_FILE_SIZE", "MAX_PIN_SIZE", "load_signer", "read_pin", "write_private_key"]

MAX_KEY_FILE_SIZE = 64 * 1024
"""A PEM private key is at most a few kilobytes (ML-DSA-87 with its expanded key); anything
this large is not one."""

MAX_PIN_SIZE = 256
"""PKCS#11 PINs are short (SoftHSM2 allows up to 255 bytes); a larger PIN file is a mistake."""

_PKCS8_LABELS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN ENCRYPTED PRIVATE KEY-----")

_POSIX = os.name == "posix"
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def pkcs8_pem(signer: SoftwareSigner) -> bytes:
    """SECRET: the key as unencrypted PKCS#8 PEM, the key-file format. Never log it."""
    return signer.private_key().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def write_private_key(path: str | os.PathLike[str], signer: SoftwareSigner) -> None:
    """Write ``signer``'s key to ``path`` as unencrypted PKCS#8 PEM with mode 0600.

    Any software key can be written (Ed25519, ES256, ES384, ML-DSA-65, ML-DSA-87); an HSM
    key cannot, by design. The file appears atomically and complete, or not at all. An
    existing file at ``path`` is never replaced: that raises
    :class:`~sealtrail.errors.ConfigError`, so a second ``init`` cannot destroy a log's
    signing key.
    """
    if not isinstance(signer, Ed25519Signer | EcdsaSigner | MlDsaSigner):
        raise ConfigError(
            "only software keys can be written to a key file; an HSM key never leaves its token"
        )
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
            handle.write(pkcs8_pem(signer))
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


def _read_secret_file(target: Path, *, what: str, limit: int) -> bytes:
    """The bytes of a secret file, after checking it is a regular file only its owner can
    read or write (POSIX) and no larger than ``limit``. Errors name the file, never its bytes."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is rejected below.
        fd = os.open(target, os.O_RDONLY | _O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {target}") from None
    except OSError as exc:
        raise ConfigError(f"cannot open {what} {target}: {exc.strerror}") from None
    try:
        # Check the file we opened, not the path, so a swap between check and read is harmless.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {target} is not a regular file")
        if _POSIX and info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise ConfigError(
                f"{what} {target} is accessible by group or others (mode {mode:04o})",
                hint=f"Restrict it to its owner: chmod 600 {target}",
            )
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {target}: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigError(f"{what} {target} is larger than {limit} bytes")
    return data


def load_signer(path: str | os.PathLike[str], *, algorithm: str | None = None) -> Signer:
    """Read a software key written by :func:`write_private_key`.

    The key may be Ed25519, ECDSA P-256 (ES256) or P-384 (ES384), ML-DSA-65 or ML-DSA-87
    (the last two where :func:`~sealtrail.keys.mldsa_supported`). With ``algorithm``, the
    key MUST be of that algorithm (the log's checkpoint key, for one, is Ed25519).

    Raises :class:`~sealtrail.errors.ConfigError`, naming the file and what to do, when the
    file is missing, unreadable, not a regular file, readable or writable by group or others
    (POSIX), too large, encrypted, not a PKCS#8 PEM private key, a key of another type, or
    not of ``algorithm``.
    """
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise ConfigError(
            f"unknown signature algorithm {algorithm!r}; supported: {', '.join(ALGORITHMS)}"
        )
    target = Path(path)
    data = _read_secret_file(target, what="key file", limit=MAX_KEY_FILE_SIZE)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"key file {target} is encrypted; Sealtrail needs an unencrypted key"
        ) from None
    except UnsupportedAlgorithm:
        raise ConfigError(
            f"key file {target} holds a key this cryptography cannot load; "
            f"supported keys: {SUPPORTED_KEYS}",
            hint="ML-DSA keys need a cryptography and OpenSSL with ML-DSA (see docs/keys.md).",
        ) from None
    except ValueError:
        raise ConfigError(f"key file {target} is not a PKCS#8 PEM private key") from None
    try:
        signer = software_signer(key)
    except ConfigError as exc:
        raise ConfigError(f"key file {target}: {exc.message}") from None
    if not data.lstrip().startswith(_PKCS8_LABELS):
        # load_pem_private_key also reads the older SEC1 "EC PRIVATE KEY" form.
        raise ConfigError(
            f"key file {target} is not a PKCS#8 PEM private key",
            hint=f"Convert it: openssl pkcs8 -topk8 -nocrypt -in {target} -out NEW_FILE",
        )
    if algorithm is not None and signer.algorithm != algorithm:
        raise ConfigError(
            f"key file {target} holds an {signer.algorithm} key; {algorithm} is needed here"
        )
    return signer


def read_pin(*, env: str | None = None, path: str | os.PathLike[str] | None = None) -> str:
    """SECRET: an HSM PIN from the environment variable ``env`` or the file at ``path``.

    Exactly one source must be given. A PIN file is checked like a key file (a regular
    file, mode 0600 or stricter on POSIX, at most :data:`MAX_PIN_SIZE` bytes); one trailing
    newline is dropped. Errors name the variable or file, never the PIN. Pass the result
    straight to :class:`~sealtrail.keys.Pkcs11Signer`; never log or print it.
    """
    if (env is None) == (path is None):
        raise ConfigError("read_pin needs exactly one of env= or path=")
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(
                f"environment variable {env} is not set",
                hint=f"Put the PIN in {env}, or read it from a file with mode 0600.",
            )
        source = f"environment variable {env}"
    else:
        assert path is not None
        target = Path(path)
        data = _read_secret_file(target, what="PIN file", limit=MAX_PIN_SIZE)
        source = f"PIN file {target}"
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{source} is not UTF-8 text") from None
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ConfigError(f"{source} holds an empty PIN")
    return value
