"""The provenance queries as a user runs them against a real service on loopback: the
client's methods (blocking and asyncio), and ``sealtrail query`` with ``--json`` and its
fields, tree and tables; errors are one line with their code, never a traceback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sealtrail.client import AsyncClient, Client, ServiceError, ServiceUnreachable
from sealtrail.errors import InvalidInput, NotFound
from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner
from sealtrail.scitt import decode_key_set, verify_receipt
from sealtrail.storage import MemoryStore
from tests._cli_inproc import Cli, Result, in_process
from tests._server import serve_in_thread

from ._journey import BLADES, MAKER, SERVER, SHIPMENT, STEPS, Journey
from ._scitt_live import ADMIN_TOKEN, ORIGIN, closed_port_url
from .conftest import service_application

#: Longest wait for the index to catch up with the log.
INDEX_WAIT = 15.0


@dataclass
class Live:
    url: str
    journey: Journey
    applied: int

    def entry(self, step: str) -> str:
        return hashlib.sha256(self.journey.statements[step]).hexdigest()


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """A service on 127.0.0.1 with the journey registered through the client."""
    store = MemoryStore()
    app = service_application(
        store,
        checkpoint_signer=CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate()),
        service_signer=generate_signer(ES256),
    )
    journey = Journey.new()
    try:
        with serve_in_thread(app) as url, Client(url) as client:
            journey.onboard(lambda name, record: _put(client, name, record))
            journey.run(lambda data: _register(client, data))
            deadline = time.monotonic() + INDEX_WAIT
            size = _log_size(client)
            while app.state.ledger.index.applied_size() < size:
                assert time.monotonic() < deadline, "the index did not catch up with the log"
                time.sleep(0.02)
            yield Live(url, journey, size)
    finally:
        store.close()


def _put(client: Client, name: str, record: bytes) -> None:
    client.put_organization(name, record, token=ADMIN_TOKEN)


def _register(client: Client, data: bytes) -> int:
    index = client.register(data).leaf_index
    assert index is not None
    return index


def _log_size(client: Client) -> int:
    checkpoint = client.checkpoint().decode()
    return int(checkpoint.splitlines()[1])


# -- the client ---------------------------------------------------------------------------


def test_the_client_reads_every_view(live: Live) -> None:
    device = live.journey.devices[0]
    with Client(live.url) as client:
        found = client.device(device.device_id)
        assert found["maker"] == MAKER
        assert found["installed_in"] == [BLADES[0], SERVER]
        assert found["size"] == live.applied
        assert client.device(device.device_id.upper()) == found  # normalized, as entry ids
        assert client.device_by_serial(MAKER, device.serial) == found
        node = client.node(SERVER)
        assert node["compliance"]["state"] == "verified"
        assert client.tree(SERVER)["children"][0]["serial"] == BLADES[0]
        timeline = client.timeline(SERVER)
        assert [e["entry_id"] for e in timeline["entries"]] == [
            live.entry(s) for s in STEPS if s != "release"
        ]
        device_timeline = client.device_timeline(device.device_id)
        assert [e["kind"] for e in device_timeline["entries"]] == [
            "device-manifest",
            "assembly",
            "attestation-result",
        ]
        assert client.shipment(SHIPMENT)["received"] == live.entry("received")
        assert [s["server_serial"] for s in client.compliance()["servers"]] == [SERVER]
        assert client.compliance("verified")["state"] == "verified"
        assert client.compliance("production")["servers"] == []
        keys = decode_key_set(client.service_keys())
    for entry in timeline["entries"]:
        info = verify_receipt(
            base64.b64decode(entry["receipt"]),
            leaf_entry=bytes.fromhex(entry["entry_id"]),
            keys=keys,
        )
        assert (info.leaf_index, info.tree_size) == (entry["index"], timeline["checkpoint"])


def test_the_client_reads_views_as_of_a_size(live: Live) -> None:
    server_at = live.journey.indexes["server"]
    with Client(live.url) as client:
        with pytest.raises(NotFound) as unknown:
            client.node(SERVER, size=server_at)
        assert unknown.value.code == "node-unknown"
        node = client.node(SERVER, size=server_at + 1)
        assert (node["size"], node["compliance"], node["arrival"]) == (
            server_at + 1,
            {"state": "registered"},
            None,
        )
        assert client.tree(SERVER, size=server_at + 1)["size"] == server_at + 1
        assert len(client.timeline(SERVER, size=server_at + 1)["entries"]) == 4
        assert client.compliance(size=server_at + 1)["servers"] == []
        with pytest.raises(NotFound) as beyond:
            client.shipment(SHIPMENT, size=live.applied + 1)
        assert beyond.value.code == "index-size-unknown"


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda c: c.node("NOPE"), NotFound, "node-unknown"),
        (lambda c: c.tree("NOPE"), NotFound, "node-unknown"),
        (lambda c: c.timeline("NOPE"), NotFound, "node-unknown"),
        (lambda c: c.node(".."), NotFound, "node-unknown"),  # a serial, not a dot segment
        (lambda c: c.node("a b"), NotFound, "node-unknown"),
        (lambda c: c.device("ab" * 32), NotFound, "device-unknown"),
        (lambda c: c.device_by_serial(MAKER, "nope"), NotFound, "device-unknown"),
        (lambda c: c.shipment("NOPE"), NotFound, "shipment-unknown"),
        (lambda c: c.node(SERVER, size=-1), InvalidInput, "size-invalid"),
        (lambda c: c.compliance("bogus"), InvalidInput, "compliance-state-invalid"),
        (lambda c: c.device("xyz"), InvalidInput, "device-id-invalid"),
        (lambda c: c.device_timeline("xyz"), InvalidInput, "device-id-invalid"),
        (lambda c: c.device_by_serial(MAKER, "a\nb"), InvalidInput, "serial-invalid"),
        (lambda c: c.node("a/b"), InvalidInput, "serial-invalid"),
        (lambda c: c.node(""), InvalidInput, "serial-invalid"),
        (lambda c: c.tree("s" * 129), InvalidInput, "serial-invalid"),
        (lambda c: c.shipment("a\tb"), InvalidInput, "shipment-id-invalid"),
    ],
)
def test_client_errors_keep_the_services_code(
    live: Live, call: Callable[[Client], Any], error: type[Exception], code: str
) -> None:
    with Client(live.url) as client, pytest.raises(error) as caught:
        call(client)
    assert getattr(caught.value, "code", None) == code


def test_the_async_client_has_the_same_queries(live: Live) -> None:
    device = live.journey.devices[1]

    async def run() -> list[dict[str, Any]]:
        async with AsyncClient(live.url) as client:
            return [
                await client.device(device.device_id),
                await client.device_by_serial(MAKER, device.serial),
                await client.node(SERVER),
                await client.tree(SERVER),
                await client.timeline(SERVER),
                await client.device_timeline(device.device_id),
                await client.shipment(SHIPMENT),
                await client.compliance("verified"),
            ]

    with Client(live.url) as client:
        expected = [
            client.device(device.device_id),
            client.device_by_serial(MAKER, device.serial),
            client.node(SERVER),
            client.tree(SERVER),
            client.timeline(SERVER),
            client.device_timeline(device.device_id),
            client.shipment(SHIPMENT),
            client.compliance("verified"),
        ]
    got = asyncio.run(run())
    # Receipts are signed afresh (their iat may differ): compare all but those.
    for doc in (*got, *expected):
        for entry in doc.get("entries", []):
            entry.pop("receipt")
    assert got == expected


def test_an_unreachable_service_is_service_unreachable() -> None:
    with Client(closed_port_url(), timeout=2.0) as client, pytest.raises(ServiceUnreachable):
        client.node(SERVER)


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``sealtrail ARGS...`` in this process."""
    return in_process(capsys, monkeypatch, tmp_path, unset=("SEALTRAIL_URL",))


def _one_line_error(result: Result, code: str) -> None:
    assert result.code == 1, result
    assert result.out == ""
    assert f"({code})" in result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 2  # the error and its hint


@pytest.mark.parametrize(
    ("args", "method", "call_args"),
    [
        (["node", SERVER], "node", (SERVER,)),
        (["tree", SERVER], "tree", (SERVER,)),
        (["shipment", SHIPMENT], "shipment", (SHIPMENT,)),
        (["compliance"], "compliance", ()),
        (["compliance", "--state", "verified"], "compliance", ("verified",)),
        (["device", "--maker", MAKER, "--serial", "RoT-0001"], "device_by_serial", None),
    ],
)
def test_json_output_is_the_services_document(
    live: Live, cli: Cli, args: list[str], method: str, call_args: tuple[str, ...] | None
) -> None:
    result = cli("query", *args, "--url", live.url, "--json")
    assert result.code == 0, result
    with Client(live.url) as client:
        if call_args is None:
            call_args = (MAKER, "RoT-0001")
        assert json.loads(result.out) == getattr(client, method)(*call_args)


def test_the_url_comes_from_the_environment(
    live: Live, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALTRAIL_URL", live.url)
    result = cli("query", "node", SERVER, "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["serial"] == SERVER


def test_device_by_id_prints_its_fields(live: Live, cli: Cli) -> None:
    device = live.journey.devices[0]
    result = cli("query", "device", device.device_id, "--url", live.url)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].split() == ["device", device.device_id]
    assert "maker" in result.out
    assert f"{BLADES[0]} < {SERVER}" in result.out
    assert live.entry("manifest") in result.out
    as_json = cli("query", "device", device.device_id, "--url", live.url, "--json")
    assert json.loads(as_json.out)["serial"] == device.serial


def test_a_server_node_prints_its_state(live: Live, cli: Cli) -> None:
    result = cli("query", "node", SERVER, "--url", live.url)
    assert result.code == 0, result
    fields = {line.split()[0]: line.split()[-1] for line in result.out.splitlines()}
    assert fields["compliance"] == "verified"
    assert fields["arrival"] == "pass"
    assert fields["attestation"] == "affirming"
    assert fields["devices"] == "4"
    assert fields["size"] == str(live.applied)


def test_the_tree_is_printed_as_a_tree(live: Live, cli: Cli) -> None:
    result = cli("query", "tree", SERVER, "--url", live.url)
    assert result.code == 0, result
    assert result.out.splitlines()[0].startswith(f"server {SERVER} (as of log size")
    for blade in BLADES:
        assert f"── blade {blade}" in result.out
    for device in live.journey.device_ids:
        assert f"device {device}" in result.out


def test_the_timeline_is_a_table(live: Live, cli: Cli) -> None:
    result = cli("query", "timeline", SERVER, "--url", live.url)
    assert result.code == 0, result
    for heading in ("index", "kind", "org", "entry id"):
        assert heading in result.out
    rows = [line for line in result.out.splitlines() if "…" in line and "│" in line]
    expected = [s for s in STEPS if s != "release"]
    assert len(rows) == len(expected)
    for row, step in zip(rows, expected, strict=True):
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[0] == str(live.journey.indexes[step])
        assert cells[3] == live.entry(step)[:16] + "…"
    assert "device-manifest" in rows[0]
    assert "maker" in rows[0]


def test_a_device_timeline_as_json_carries_receipts(live: Live, cli: Cli) -> None:
    device = live.journey.devices[3]
    result = cli("query", "timeline", "--device", device.device_id, "--url", live.url, "--json")
    assert result.code == 0, result
    doc = json.loads(result.out)
    assert [e["kind"] for e in doc["entries"]] == [
        "device-manifest",
        "assembly",
        "attestation-result",
    ]
    assert all(base64.b64decode(e["receipt"]) for e in doc["entries"])


def test_shipment_and_compliance_print_for_people(live: Live, cli: Cli) -> None:
    shipment = cli("query", "shipment", SHIPMENT, "--url", live.url)
    assert shipment.code == 0, shipment
    assert live.entry("received") in shipment.out
    compliance = cli("query", "compliance", "--state", "verified", "--url", live.url)
    assert compliance.code == 0, compliance
    assert SERVER in compliance.out
    assert "verified" in compliance.out


def test_a_size_gives_the_view_as_of_then(live: Live, cli: Cli) -> None:
    at = str(live.journey.indexes["server"] + 1)
    result = cli("query", "node", SERVER, "--url", live.url, "--size", at, "--json")
    assert result.code == 0, result
    doc = json.loads(result.out)
    assert doc["size"] == int(at)
    assert doc["compliance"] == {"state": "registered"}
    table = cli("query", "timeline", SERVER, "--url", live.url, "--size", at)
    assert f"as of log size {at}" in table.out
    before = str(live.journey.indexes["server"])
    _one_line_error(
        cli("query", "tree", SERVER, "--url", live.url, "--size", before), "node-unknown"
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["node", "NOPE"], "node-unknown"),
        (["shipment", "NOPE"], "shipment-unknown"),
        (["device", "ab" * 32], "device-unknown"),
        (["device", "xyz"], "device-id-invalid"),
        (["device"], "device-lookup-invalid"),
        (["device", "--maker", MAKER], "device-lookup-invalid"),
        (["device", "ab" * 32, "--maker", MAKER, "--serial", "x"], "device-lookup-invalid"),
        (["timeline"], "timeline-subject-invalid"),
        (["timeline", SERVER, "--device", "ab" * 32], "timeline-subject-invalid"),
        (["compliance", "--state", "bogus"], "compliance-state-invalid"),
        (["node", SERVER, "--size", "999999"], "index-size-unknown"),
    ],
)
def test_errors_are_one_line(live: Live, cli: Cli, args: list[str], code: str) -> None:
    _one_line_error(cli("query", *args, "--url", live.url), code)


def test_an_unreachable_service_is_one_line(cli: Cli) -> None:
    _one_line_error(cli("query", "node", SERVER, "--url", closed_port_url()), "service-unreachable")


def test_a_negative_size_is_a_usage_error(live: Live, cli: Cli) -> None:
    result = cli("query", "node", SERVER, "--url", live.url, "--size", "-1")
    assert result.code == 2
    assert "Traceback" not in result.err


class _NotAView(http.server.BaseHTTPRequestHandler):
    """A server that answers every GET with 200 and JSON that is no view of ours."""

    body = b'{"a": 1}'

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def not_a_view() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAView)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["fields", "json"])
@pytest.mark.parametrize(
    ("args", "lacks"),
    [
        (["device", "ab" * 32], "the device in the answer lacks device_id, size"),
        (["device", "--maker", MAKER, "--serial", "RoT-1"], "lacks device_id, size"),
        (["node", SERVER], "the node in the answer lacks serial, type, children, size"),
        (["tree", SERVER], "the tree in the answer lacks serial, type, children, size"),
        (["timeline", SERVER], "lacks serial, size, checkpoint, entries"),
        (["timeline", "--device", "ab" * 32], "lacks device_id, size, checkpoint, entries"),
        (["shipment", SHIPMENT], "the shipment in the answer lacks shipment_id, size"),
        (["compliance"], "the compliance in the answer lacks servers, size"),
    ],
)
def test_an_answer_that_is_not_the_view_is_a_service_error(
    not_a_view: str, cli: Cli, args: list[str], lacks: str, as_json: list[str]
) -> None:
    """200 and a JSON object is not enough: exit 1, one line, no empty record printed."""
    result = cli("query", *args, "--url", not_a_view, *as_json)
    _one_line_error(result, "service-error")
    assert lacks in result.err


def test_the_clients_refuse_an_answer_that_is_not_the_view(not_a_view: str) -> None:
    with Client(not_a_view) as client, pytest.raises(ServiceError, match="lacks serial"):
        client.node(SERVER)

    async def run() -> None:
        async with AsyncClient(not_a_view) as client:
            with pytest.raises(ServiceError, match="lacks servers, size"):
                await client.compliance()

    asyncio.run(run())
