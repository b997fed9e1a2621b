"""A batch waits about one commit's time for more entries: 1 ms on SQLite, 5 ms on
PostgreSQL, whichever way the settings are arrived at; an explicit setting wins. The
command's process switches threads at the sequencer's interval."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from sealtrail.cli import main
from sealtrail.config import CONFIG_FILE, init_data_dir, load_config, sequencer_defaults
from sealtrail.errors import ConfigError
from sealtrail.log import (
    SHARED_MAX_DELAY,
    SWITCH_INTERVAL,
    CheckpointSigner,
    SequencerConfig,
    SharedSequencer,
)
from sealtrail.storage import SharedMemoryStore

POSTGRES = "postgresql://db.example/ledger"


def test_the_default_batch_delay_follows_the_store() -> None:
    assert sequencer_defaults("sqlite:///log.db").max_delay == SequencerConfig().max_delay == 0.001
    assert sequencer_defaults(POSTGRES).max_delay == SHARED_MAX_DELAY == 0.005
    assert sequencer_defaults("postgres://db.example/ledger").max_delay == SHARED_MAX_DELAY


def test_init_writes_the_sqlite_default(tmp_path: Path) -> None:
    sqlite_dir = init_data_dir(tmp_path / "a", origin="delay.test/log").config.data_dir
    assert load_config(sqlite_dir).sequencer.max_delay == 0.001


def test_init_writes_the_stores_default_and_a_config_without_one_gets_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """(``init`` starts the log in its store, so the PostgreSQL one must be reachable.)"""
    pg = init_data_dir(tmp_path / "b", origin="delay.test/log", store_url=postgres_url).config
    assert "max_delay = 0.005" in (pg.data_dir / CONFIG_FILE).read_text()
    assert load_config(pg.data_dir).sequencer.max_delay == SHARED_MAX_DELAY
    # An older file with no max_delay line: the store's default.
    path = pg.data_dir / CONFIG_FILE
    path.write_text(re.sub(r"(?m)^max_delay = .*\n", "", path.read_text()))
    assert load_config(pg.data_dir).sequencer.max_delay == SHARED_MAX_DELAY
    # An explicit setting wins.
    path.write_text(path.read_text().replace("[sequencer]\n", "[sequencer]\nmax_delay = 0.002\n"))
    assert load_config(pg.data_dir).sequencer.max_delay == 0.002


def test_a_shared_sequencer_without_settings_waits_the_shared_default(
    signer: CheckpointSigner,
) -> None:
    store = SharedMemoryStore()
    shared = SharedSequencer(store, signer=signer, backlog=store, holder="test")
    assert shared.config.max_delay == SHARED_MAX_DELAY


def test_the_command_runs_with_the_sequencers_switch_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer thread takes the GIL back after each SQLite call: the ``sealtrail``
    process bounds that wait by a short switch interval (``SWITCH_INTERVAL``)."""
    asked: list[float] = []
    monkeypatch.setattr(sys, "setswitchinterval", asked.append)
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert asked == [SWITCH_INTERVAL] == [0.001]


@pytest.mark.parametrize(
    ("section", "line", "named"),
    [
        ("[sequencer]", "max_delay = inf", "[sequencer] max_delay"),
        ("[sequencer]", "max_delay = nan", "[sequencer] max_delay"),
        ("[sequencer]", "max_delay = -1", "[sequencer] max_delay"),
        ("[sequencer]", "max_batch = 0", "[sequencer] need max_batch"),
        ("[server]", "port = 70000", "[server] port"),
        ("[server]", "port = -1", "[server] port"),
    ],
)
def test_settings_out_of_range_are_named_config_errors(
    tmp_path: Path, section: str, line: str, named: str
) -> None:
    """An endless batch delay would never cut a batch, and port 70000 would bind another."""
    path = init_data_dir(tmp_path / "d", origin="delay.test/log").config.data_dir / CONFIG_FILE
    text = re.sub(rf"(?m)^{line.split(' = ', maxsplit=1)[0]} = .*\n", "", path.read_text())
    path.write_text(text.replace(f"{section}\n", f"{section}\n{line}\n"))
    with pytest.raises(ConfigError) as refused:
        load_config(path.parent)
    assert refused.value.message.startswith(f"{CONFIG_FILE}: {named}")
