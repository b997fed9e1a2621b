"""A real crash of the transparency service: ``sealtrail serve`` killed with SIGKILL mid-load.

Clients register statements over HTTP while the server is killed at a random moment,
several times. After a restart: every statement that was answered 201 has a receipt that
verifies, every stored statement is in the log (recovery re-appends what was stored but not
sequenced), and no statement has two indexes.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from sealtrail.config import load_config
from sealtrail.keys import ES256
from sealtrail.log import LogReader
from sealtrail.scitt import add_receipts, verify_transparent_statement
from sealtrail.storage import SQLiteStore
from tests._serve_proc import (
    COSE,
    allow_anonymous,
    init_data,
    onboard,
    serve_process,
    statement_for,
)
from tests.unit.scitt._pki import make_issuer

ROUNDS = 3
CLIENTS = 6


@pytest.mark.slow
def test_sigkill_of_the_server_loses_no_acknowledged_registration(tmp_path: Path) -> None:
    root, token = init_data(tmp_path)
    # Crash recovery, not access control: the clients register without a token.
    allow_anonymous(root / "d")
    issuer = make_issuer(ES256, cn="Maker")
    rng = random.Random(20261123)
    counter = itertools.count()
    acked: dict[str, bytes] = {}  # entry id -> statement
    lock = threading.Lock()

    for round_no in range(ROUNDS):
        with serve_process(root) as (url, proc):
            if round_no == 0:
                onboard(url, token, issuer)
            stop = threading.Event()

            def client(url: str = url, stop: threading.Event = stop) -> None:
                with httpx.Client(base_url=url, timeout=10) as http:
                    while not stop.is_set():
                        with lock:
                            n = next(counter)
                        statement = statement_for(issuer, n)
                        try:
                            r = http.post("/entries", content=statement, headers=COSE)
                        except httpx.TransportError:
                            return  # the server is gone
                        if r.status_code == 201:
                            entry = r.headers["location"].rsplit("/", 1)[1]
                            with lock:
                                acked[entry] = statement

            threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.5, 1.5))
            proc.kill()  # SIGKILL: no lifespan shutdown, no watermark written
            proc.wait()
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert len(acked) > 10, "the load generator acknowledged too little to test anything"

    with serve_process(root) as (url, _):
        keys = httpx.get(url + "/.well-known/scitt-keys").content
        with httpx.Client(base_url=url, timeout=10) as http:
            for entry, statement in acked.items():
                r = http.get(f"/entries/{entry}")
                assert r.status_code == 200, (entry, r.status_code)
                verified = verify_transparent_statement(
                    add_receipts(statement, [r.content]), service_keys=keys
                )
                assert verified.entry_id == entry

    config = load_config(root / "d")
    store = SQLiteStore(Path(config.resolved_store_url()))
    try:
        signer = config.checkpoint_signer()
        reader = LogReader(store, origin=config.origin, verifiers=[signer.verifier])
        size = reader.size()
        entries = [reader.entry(i) for i in range(size)]
        assert len(set(entries)) == size, "a statement was given two indexes"
        stored = store.statements_since(0, limit=1_000_000)
        assert {record.entry_id for _, record in stored} == set(entries)
        assert {bytes.fromhex(e) for e in acked} <= set(entries)
    finally:
        store.close()
