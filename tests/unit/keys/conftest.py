"""Fixtures for the key tests: a fresh SoftHSM2 token per PKCS#11 test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.keys._softhsm import SoftHsm, hsm_skip_reason


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsm]:
    """A SoftHSM2 configuration in ``tmp_path`` with one initialized token (``TOKEN``/``PIN``).

    SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is initialized, and a PKCS#11 module is
    initialized once per process, so the module is finalized and initialized again around
    each test. Every signer a test opens must be closed by its end: the fixture checks that
    no login is left behind.
    """
    reason = hsm_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    import pkcs11

    from sealtrail.keys import _pkcs11

    hsm = SoftHsm.create(tmp_path / "softhsm")
    hsm.init_token()
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.config))
    lib = pkcs11.lib(str(hsm.module))
    lib.finalize()
    lib.initialize()
    try:
        yield hsm
    finally:
        left = [key for key in _pkcs11._logins if key[0] == str(hsm.module)]
        for key in left:  # keep the next test clean even when this one failed
            del _pkcs11._logins[key]
        lib.finalize()
    assert not left, "a test left a Pkcs11Signer open"
