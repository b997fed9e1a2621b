"""Passports from a live server, verified with nothing but the file.

A server's journey (tests/integration/_journey.py) is registered over HTTP; then
``sealtrail passport export`` fetches the passport from the server's route (``--url``), or
builds it from the data directory of a running ``sealtrail serve`` (``--data-dir``), and
``sealtrail passport verify`` checks the file alone, with and without pinned keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

from sealtrail.client import Client
from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner
from sealtrail.provenance import ProvenanceLedger
from sealtrail.provenance._passport import PASSPORT_TYPE, verify_passport
from sealtrail.provenance._strict import canonical
from sealtrail.service._passport import add_passport_routes
from sealtrail.storage import MemoryIndex, MemoryStore, SQLiteStore
from tests._serve_proc import (
    allow_anonymous,
    init_data,
    onboard,
    served,
    token_file,
    user_token,
)
from tests._server import serve_in_thread
from tests.integration.test_cli import assert_clean_error, sealtrail
from tests.unit.scitt._pki import make_issuer

from ._journey import MAKER, SERVER, STEPS, Journey, run_over_http
from .conftest import ADMIN_TOKEN, ORIGIN, assert_problem, service_application

COSE = {"Content-Type": "application/cose"}
#: The statement kind of each step of the journey.
KINDS = {
    "manifest": "device-manifest",
    "release": "firmware-release",
    "shipped": "custody",
    "received": "custody",
    "arrival": "arrival",
    "attestation": "attestation-result",
}


def kind_of(step: str) -> str:
    if step.startswith(("blade", "server")):
        return "assembly"
    return KINDS.get(step, "compliance")


@dataclass
class Live:
    url: str
    journey: Journey
    vkey: str
    keys: bytes
    root: Path


def _register_journey(url: str, token: str) -> Journey:
    journey = Journey.new()

    def challenge(serial: str, count: int) -> list[bytes]:
        with Client(url) as client:
            return client.challenge(serial, count)

    with httpx.Client(base_url=url, timeout=30) as http:
        run_over_http(http, journey, token, challenge)
    return journey


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A real HTTP server (uvicorn on loopback) over SQLite, the
    journey registered."""
    root = tmp_path_factory.mktemp("passport")
    store = SQLiteStore(root / "log.db")
    signer = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    app = service_application(
        store, checkpoint_signer=signer, service_signer=generate_signer(ES256)
    )
    with serve_in_thread(app) as url:
        journey = _register_journey(url, ADMIN_TOKEN)
        keys = httpx.get(url + "/.well-known/scitt-keys").content
        (root / "keys.cbor").write_bytes(keys)
        yield Live(url, journey, signer.verifier_key(), keys, root)
    store.close()


# -- the route --------------------------------------------------------------------------------


def test_the_route_answers_a_passport_that_verifies_alone(live: Live) -> None:
    r = httpx.get(f"{live.url}/provenance/v1/passports/{SERVER}", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == PASSPORT_TYPE
    assert r.headers["cache-control"] == "no-store"
    report = verify_passport(r.content, log_key=live.vkey, service_keys=live.keys)
    assert [s.index for s in report.stages] == [live.journey.indexes[s] for s in STEPS]
    assert [s.kind for s in report.stages] == [kind_of(s) for s in STEPS]
    assert report.status["compliance"] == "verified"
    device = live.journey.devices[1]
    for path, params in (
        (f"/provenance/v1/device-passports/{device.device_id}", {}),
        ("/provenance/v1/device-passports", {"maker": MAKER, "serial": device.serial}),
    ):
        r = httpx.get(live.url + path, params=params, timeout=30)
        assert r.status_code == 200, r.text
        report = verify_passport(r.content, log_key=live.vkey, service_keys=live.keys)
        assert report.subject.name == device.device_id
        assert report.status["compliance"] == {SERVER: "verified"}


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/provenance/v1/passports/SRV-404", {}, 404, "node-unknown"),
        ("/provenance/v1/device-passports/" + "ab" * 32, {}, 404, "device-unknown"),
        ("/provenance/v1/device-passports/XYZ", {}, 400, "device-id-invalid"),
        ("/provenance/v1/device-passports", {"maker": MAKER}, 400, "device-lookup-invalid"),
        ("/provenance/v1/device-passports", {"maker": MAKER, "serial": "x"}, 404, "device-unknown"),
        ("/provenance/v1/passports/" + "x" * 129, {}, 400, "serial-invalid"),
    ],
)  # fmt: skip
def test_the_route_names_what_it_cannot_answer(
    live: Live, path: str, params: dict[str, str], status: int, code: str
) -> None:
    assert_problem(httpx.get(live.url + path, params=params, timeout=30), status, code)


def test_the_route_answers_503_while_the_index_is_behind_the_log() -> None:
    store = MemoryStore()
    signer = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    app = service_application(
        store, checkpoint_signer=signer, service_signer=generate_signer(ES256)
    )
    stalled = ProvenanceLedger(MemoryIndex(), statement=store.get_statement, org_of=lambda _: None)
    service = app.state.transparency_service
    # The same routes over a ledger whose index never moves, in place of service_app's.
    app.router.routes[:] = [
        r for r in app.router.routes if "passports" not in getattr(r, "path", "")
    ]
    add_passport_routes(app, ledger=stalled, service=service, wait=0.05)
    with TestClient(app) as client:
        journey = Journey.new()
        org = journey.orgs[MAKER]
        r = client.put(
            f"/admin/organizations/{MAKER}",
            content=org.record(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 201, r.text
        r = client.get(f"/provenance/v1/passports/{SERVER}")
        body = assert_problem(r, 503, "passport-index-behind")
        assert "index" in body["detail"]
        assert r.headers["retry-after"] == "1"
    store.close()


# -- the command line -------------------------------------------------------------------------


def test_export_by_url_then_verify_the_file_alone(live: Live, tmp_path: Path) -> None:
    r = sealtrail("passport", "export", SERVER, "--url", live.url, "-o", "srv.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "srv.json"
    assert f"{len(STEPS)} statement(s)" in r.stderr
    # Offline: the file alone. Keys not pinned are said to be so.
    v = sealtrail("passport", "verify", "srv.json", cwd=tmp_path)
    assert v.returncode == 0, v.stderr
    assert v.stdout.startswith("OK")
    assert "NOT pinned" in v.stdout
    rows = {line.split()[0] for line in v.stdout.splitlines() if line.strip()}
    assert {str(live.journey.indexes[step]) for step in STEPS} <= rows
    assert "compliance verified" in v.stdout
    # Pinned: the log's verifier key and the service's key set.
    (tmp_path / "keys.cbor").write_bytes(live.keys)
    pinned = sealtrail(
        "passport", "verify", "srv.json", "--log-key", live.vkey,
        "--service-keys", "keys.cbor", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    doc = json.loads(pinned.stdout)
    assert doc["ok"] is True
    assert doc["log"]["pinned"] is True and doc["service"]["pinned"] is True
    assert [s["kind"] for s in doc["journey"]] == [kind_of(s) for s in STEPS]
    assert doc["status"]["compliance"] == "verified"


def test_export_never_overwrites_without_force(live: Live, tmp_path: Path) -> None:
    (tmp_path / "srv.json").write_bytes(b"keep me")
    r = sealtrail("passport", "export", SERVER, "--url", live.url, "-o", "srv.json", cwd=tmp_path)
    assert_clean_error(r, "file-exists")
    assert (tmp_path / "srv.json").read_bytes() == b"keep me"
    r = sealtrail(
        "passport", "export", SERVER, "--url", live.url, "-o", "srv.json", "--force", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert verify_passport((tmp_path / "srv.json").read_bytes()).subject.name == SERVER


def test_export_a_device_by_id_and_by_maker_and_serial(live: Live, tmp_path: Path) -> None:
    device = live.journey.devices[2]
    r = sealtrail(
        "passport", "export", device.device_id, "--device", "--url", live.url, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    by_id = tmp_path / f"{device.device_id}.passport.json"
    assert r.stdout.strip() == by_id.name
    r = sealtrail(
        "passport", "export", device.serial, "--device", "--maker", MAKER,
        "--url", live.url, "-o", "by-serial.json", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for path in (by_id, tmp_path / "by-serial.json"):
        report = verify_passport(path.read_bytes(), log_key=live.vkey)
        assert report.subject.kind == "device"
        assert report.subject.name == device.device_id


def test_a_changed_byte_or_wrong_pins_fail_with_one_line(live: Live, tmp_path: Path) -> None:
    r = sealtrail("passport", "export", SERVER, "--url", live.url, "-o", "p.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "p.json").read_bytes()
    doc = json.loads(data)
    last = doc["statements"][-1]
    del doc["statements"][-1]
    (tmp_path / "short.json").write_bytes(canonical(doc))
    v = sealtrail("passport", "verify", "short.json", cwd=tmp_path)
    assert_clean_error(v, "passport-bad-seal")
    assert v.stderr.startswith("error (passport-bad-seal): ")
    at = data.index(last["statement"].encode()) + 100
    flipped = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    (tmp_path / "flipped.json").write_bytes(flipped)
    v = sealtrail("passport", "verify", "flipped.json", cwd=tmp_path)
    assert v.returncode == 1
    assert v.stderr.startswith("error (")
    assert "Traceback" not in v.stderr
    other = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()).verifier_key()
    v = sealtrail("passport", "verify", "p.json", "--log-key", other, cwd=tmp_path)
    assert_clean_error(v, "passport-log-key-mismatch")


def test_export_names_what_it_cannot_do(live: Live, tmp_path: Path) -> None:
    r = sealtrail("passport", "export", "SRV-404", "--url", live.url, cwd=tmp_path)
    assert_clean_error(r, "node-unknown")
    assert "check the serial" in r.stderr  # not the hint about log indexes and sizes
    r = sealtrail("passport", "export", SERVER, "--url", live.url, "-d", "d", cwd=tmp_path)
    assert_clean_error(r, "invalid-input")
    r = sealtrail("passport", "export", "not-an-id", "--device", "--url", live.url, cwd=tmp_path)
    assert_clean_error(r, "device-id-invalid")
    r = sealtrail("passport", "verify", "missing.json", cwd=tmp_path)
    assert_clean_error(r, "file-not-found")
    assert not list(tmp_path.glob("*.passport.json"))


def test_export_names_a_missing_or_refused_token(tmp_path: Path) -> None:
    """On a service that requires tokens (the default), export says which credential is
    wrong, in one line with the hint a user acts on; a supplier's token is refused too."""
    root, admin = init_data(tmp_path)
    with served(root) as url:
        r = sealtrail("passport", "export", SERVER, "--url", url, cwd=root)
        assert_clean_error(r, "token-required")
        assert "--token-file" in r.stderr
        token_file(root / "bad.token", "stk_0000000000000000_not-a-token")
        r = sealtrail(
            "passport", "export", SERVER, "--url", url, "--token-file", "bad.token", cwd=root
        )
        assert_clean_error(r, "token-unknown")
        assert "sealtrail users token" in r.stderr
        onboard(url, admin, make_issuer(ES256, cn="Maker"))
        token_file(root / "ana.token", user_token(url, admin, "ana", "supplier", "maker"))
        r = sealtrail(
            "passport", "export", SERVER, "--url", url, "--token-file", "ana.token", cwd=root
        )
        assert_clean_error(r, "persona-forbidden")
    assert not list(root.glob("*.passport.json"))


def test_export_from_the_data_directory_of_a_running_server(tmp_path: Path) -> None:
    """``--data-dir``: built here from the store, the index and the service key, while
    ``sealtrail serve`` keeps running on the same files; verified with the data
    directory's published keys."""
    root, token = init_data(tmp_path)
    # About building the passport from the data directory, not access control: the journey
    # registers without users' tokens.
    allow_anonymous(root / "d")
    with served(root) as url:
        journey = _register_journey(url, token)
        keys = sealtrail("fetch-keys", "-o", "keys.cbor", "--url", url, cwd=root)
        assert keys.returncode == 0, keys.stderr
        r = sealtrail("passport", "export", SERVER, "-d", "d", "-o", "p.json", cwd=root)
        assert r.returncode == 0, r.stderr
    v = sealtrail(
        "passport", "verify", "p.json", "--log-key", "d/log.vkey",
        "--service-keys", "keys.cbor", "--json", cwd=root,
    )  # fmt: skip
    assert v.returncode == 0, v.stderr
    doc = json.loads(v.stdout)
    assert doc["log"]["pinned"] is True and doc["service"]["pinned"] is True
    assert [s["index"] for s in doc["journey"]] == [journey.indexes[s] for s in STEPS]


# -- the subject asked for ----------------------------------------------------------------------


@contextmanager
def answering(body: bytes) -> Iterator[str]:
    """A stand-in for the service, or for anything on the path to it: every request is
    answered with ``body``, a genuine passport of whatever subject."""
    app = FastAPI()

    @app.get("/{path:path}")
    def passport(path: str) -> Response:
        return Response(content=body, media_type=PASSPORT_TYPE)

    with serve_in_thread(app) as url:
        yield url


def _passport(live: Live, path: str, **params: str) -> bytes:
    r = httpx.get(live.url + path, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def test_export_refuses_a_genuine_passport_of_another_subject(live: Live, tmp_path: Path) -> None:
    server = _passport(live, f"/provenance/v1/passports/{SERVER}")
    asked, other = live.journey.devices[2], live.journey.devices[1]
    device = _passport(live, f"/provenance/v1/device-passports/{other.device_id}")
    cases = [
        (server, ("SRV-OTHER",)),
        (device, (SERVER,)),
        (server, (asked.device_id, "--device")),
        (device, (asked.device_id, "--device")),
        (server, (asked.serial, "--device", "--maker", MAKER)),
        (device, (asked.serial, "--device", "--maker", MAKER)),
        (device, (other.serial, "--device", "--maker", "another-maker")),
    ]
    for body, args in cases:
        with answering(body) as url:
            r = sealtrail("passport", "export", *args, "--url", url, "-o", "p.json", cwd=tmp_path)
        assert_clean_error(r, "passport-subject-mismatch")
        assert r.stderr.startswith("error (passport-subject-mismatch): the service answered")
        assert not (tmp_path / "p.json").exists(), args
    # The right passport, from the same stand-in, is taken.
    with answering(device) as url:
        r = sealtrail(
            "passport", "export", other.serial, "--device", "--maker", MAKER,
            "--url", url, "-o", "p.json", cwd=tmp_path,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.json").read_bytes() == device


def test_verify_checks_the_subject_it_is_told_to_expect(live: Live, tmp_path: Path) -> None:
    device = live.journey.devices[1]
    (tmp_path / "srv.json").write_bytes(_passport(live, f"/provenance/v1/passports/{SERVER}"))
    (tmp_path / "dev.json").write_bytes(
        _passport(live, "/provenance/v1/device-passports", maker=MAKER, serial=device.serial)
    )
    for file, expect in (
        ("srv.json", ("--expect-node", SERVER)),
        ("dev.json", ("--expect-device", device.device_id)),
        ("dev.json", ("--expect-device", device.serial, "--maker", MAKER)),
    ):
        v = sealtrail("passport", "verify", file, *expect, cwd=tmp_path)
        assert v.returncode == 0, v.stderr
        assert v.stdout.startswith("OK")
    other = live.journey.devices[2]
    for file, expect in (
        ("srv.json", ("--expect-node", "SRV-OTHER")),
        ("dev.json", ("--expect-node", SERVER)),
        ("srv.json", ("--expect-device", device.device_id)),
        ("dev.json", ("--expect-device", other.device_id)),
        ("dev.json", ("--expect-device", other.serial, "--maker", MAKER)),
        ("srv.json", ("--expect-device", device.serial, "--maker", MAKER)),
    ):
        v = sealtrail("passport", "verify", file, *expect, "--json", cwd=tmp_path)
        assert_clean_error(v, "passport-subject-mismatch")
        assert v.stdout == ""
    for expect, code in (
        (("--maker", MAKER), "device-lookup-invalid"),
        (("--expect-node", SERVER, "--expect-device", device.device_id), "invalid-input"),
        (("--expect-device", "not-an-id"), "device-id-invalid"),
    ):
        v = sealtrail("passport", "verify", "srv.json", *expect, cwd=tmp_path)
        assert_clean_error(v, code)


def test_text_that_is_not_unicode_fails_with_one_line(live: Live, tmp_path: Path) -> None:
    """A lone surrogate: as a JSON escape in a file, or as a byte that is not UTF-8 in an
    argument."""
    lone = '{"subject":"\\ud800","type":"' + PASSPORT_TYPE + '"}'
    (tmp_path / "lone.json").write_text(lone, encoding="ascii")
    v = sealtrail("passport", "verify", "lone.json", cwd=tmp_path)
    assert_clean_error(v, "passport-malformed")
    for args, code in (
        (("a\udcffb",), "serial-invalid"),
        (("a\udcffb", "--device", "--maker", MAKER), "serial-invalid"),
        (("RoT-0001", "--device", "--maker", "a\udcffb"), "maker-invalid"),
    ):
        r = sealtrail("passport", "export", *args, "--url", live.url, cwd=tmp_path)
        assert_clean_error(r, code)
    v = sealtrail("passport", "verify", "lone.json", "--expect-node", "a\udcffb", cwd=tmp_path)
    assert_clean_error(v, "serial-invalid")
