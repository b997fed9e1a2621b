"""The challenge key: made by init (secret, mode 0600), read by every server of a deployment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sealtrail.config import CHALLENGE_KEY_FILE, init_data_dir, load_config
from sealtrail.errors import ConfigError


def test_init_makes_a_secret_challenge_key(tmp_path: Path) -> None:
    config = init_data_dir(tmp_path / "d", origin="challenge.test/log").config
    path = config.data_dir / CHALLENGE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_config(config.data_dir).challenge_key()
    assert key is not None
    assert len(key) == 32
    other = init_data_dir(tmp_path / "e", origin="challenge.test/log").config
    assert other.challenge_key() != key, "each data directory its own"


def test_a_missing_key_means_one_per_process_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    config = init_data_dir(tmp_path / "d", origin="challenge.test/log").config
    path = config.data_dir / CHALLENGE_KEY_FILE
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match=r"challenge\.key must hold 32 bytes"):
        config.challenge_key()
    path.write_text("ab" * 16 + "\n")  # 16 bytes: too short
    with pytest.raises(ConfigError):
        config.challenge_key()
    path.unlink()
    assert config.challenge_key() is None
