"""SoftHSM2 for the PKCS#11 tests: a throwaway token directory per test.

Whether the HSM tests can run is decided here, once, for the tests and for the report
header in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sealtrail.keys import find_pkcs11_module, pkcs11_supported

SOFTHSM2_UTIL = "softhsm2-util"
TOKEN = "sealtrail-test"
# Recognisable values, so a leak into a message or repr is easy to assert against.
PIN = "7305-pin-8819"
SO_PIN = "5521-so-6640"


def hsm_skip_reason() -> str | None:
    """Why the SoftHSM2 tests cannot run here, or ``None`` if they can."""
    if not pkcs11_supported():
        return "python-pkcs11 is not installed (pip install 'sealtrail[hsm]')"
    module = find_pkcs11_module()
    if module is None:
        return (
            "libsofthsm2.so not found in the standard places "
            "(install SoftHSM2, Debian package softhsm2, or set SEALTRAIL_PKCS11_MODULE)"
        )
    if not module.is_file():
        return f"SEALTRAIL_PKCS11_MODULE names {module}, which does not exist"
    if shutil.which(SOFTHSM2_UTIL) is None:
        return f"{SOFTHSM2_UTIL} not found (install SoftHSM2, Debian package softhsm2)"
    return None


@dataclass(frozen=True)
class SoftHsm:
    """One SoftHSM2 configuration whose tokens live under ``directory``."""

    module: Path
    directory: Path
    config: Path

    @classmethod
    def create(cls, directory: Path) -> SoftHsm:
        module = find_pkcs11_module()
        assert module is not None
        tokens = directory / "tokens"
        tokens.mkdir(parents=True)
        config = directory / "softhsm2.conf"
        config.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )
        return cls(module=module, directory=directory, config=config)

    def _util(self, *args: str) -> None:
        result = subprocess.run(
            [SOFTHSM2_UTIL, *args],
            env={**os.environ, "SOFTHSM2_CONF": str(self.config)},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, f"{SOFTHSM2_UTIL} {args[0]} failed: {result.stderr}"

    def init_token(self, label: str = TOKEN, *, pin: str = PIN) -> None:
        self._util("--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN)

    def import_key(self, pkcs8_pem: Path, *, label: str, key_id: bytes, token: str = TOKEN) -> None:
        """Put a software key pair on the token (both objects, sharing ``key_id``)."""
        self._util(
            "--import", str(pkcs8_pem), "--token", token, "--label", label,
            "--id", key_id.hex(), "--pin", PIN,
        )  # fmt: skip
