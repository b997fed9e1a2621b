"""A statement sent after the receipts of what it rests on is judged with them, whichever
process of a shared store (PostgreSQL) receives it.

Two services (``service_app``, as two ``sealtrail serve`` processes build it) over one
schema, with the same keys. Process A registers an organization record and what a
statement rests on, each answered with its receipt; process B is then sent a statement
whose issuer it has not read yet, or that rests on A's history, or both. B reads nothing
in the background here (its organization poll and its indexer's poll are put off), so it
learns only what it reads when a check refuses: the race a load balancer makes now and
then is played every time.

Every entry point that registers a signed statement is tried: ``POST /entries`` without
and with ``[auth] required`` (through the in-process test client), the same route through
:class:`sealtrail.client.Client` over a loopback socket, and the library's
:meth:`TransparencyService.register`. With ``[auth] required`` the sender is the
organization's writer, made through B (so B has read the organization's first record):
the issuer new to B is one the organization's second record, registered through A,
adds. A statement that rests on nothing anyone registered is still refused.

Each process's indexer applies the log to the one index, whichever comes first; the last
tests run the two indexers by hand in the order that once left B's view of the history
short of entries A had indexed (a refusal no read could cure), or let B's index write an
outcome its check computed without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sealtrail.client import Client
from sealtrail.errors import Error, StorageError
from sealtrail.keys import ES256, Ed25519Signer, Signer, generate_signer
from sealtrail.log import CheckpointSigner
from sealtrail.provenance import Assembly, DeviceRef, Node, NodeType, Payload, ProvenanceLedger
from sealtrail.scitt import TransparencyService, sign_statement
from sealtrail.storage import PostgresIndex, PostgresStore
from tests._server import serve_in_thread

from ._journey import ASSEMBLER, BLADES, MAKER, WRITERS, Journey, user_token
from .conftest import ADMIN_TOKEN, COSE, ORIGIN, service_application

pytestmark = pytest.mark.postgres

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Long enough that no background read teaches process B anything during a test.
NEVER = 3600.0
#: Sends ``(organization, statement)`` to process B: "" when it is registered (answered
#: with its receipt), else the code of the refusal.
Send = Callable[[str, bytes], str]


class Deployment:
    """Processes over one PostgreSQL schema, started on demand, all with the same keys."""

    def __init__(self, url: str, stack: contextlib.ExitStack, *, auth_required: bool) -> None:
        self.url = url
        self.stack = stack
        self.auth_required = auth_required
        self.checkpoint_signer = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
        self.service_signer: Signer = generate_signer(ES256)
        #: Every app started, in order (A first).
        self.apps: list[FastAPI] = []

    def app(self) -> FastAPI:
        store = PostgresStore(self.url)
        self.stack.callback(store.close)
        index = PostgresIndex(self.url)
        self.stack.callback(index.close)
        app = service_application(
            store,
            index=index,
            checkpoint_signer=self.checkpoint_signer,
            service_signer=self.service_signer,
            auth_required=self.auth_required,
        )
        self.apps.append(app)
        return app

    def start(self) -> tuple[FastAPI, TestClient]:
        """A process, once the work it starts in the background (recording the provenance
        policy, which reads the log) is done."""
        app = self.app()
        client = self.stack.enter_context(TestClient(app, follow_redirects=False))
        assert client.portal is not None
        client.portal.call(_started)
        return app, client


async def _started() -> None:
    """Wait for the provenance policy's recording, which a process starts as it starts."""
    for task in asyncio.all_tasks():
        if task.get_name() == "sealtrail-policy":
            await task


@dataclass
class World:
    deployment: Deployment
    entry: str
    a: TestClient
    journey: Journey
    #: Each organization's issuer: its second record's new one once :meth:`new_issuer`.
    issuers: dict[str, str] = field(default_factory=dict)
    #: Writers' tokens (``[auth] required``), by organization.
    tokens: dict[str, str] = field(default_factory=dict)
    #: Process B's test client, once started (not with the ``client`` entry point).
    b: TestClient | None = None

    @property
    def auth(self) -> bool:
        return self.deployment.auth_required

    def onboard(self, *orgs: str, version: int = 1) -> None:
        """Register the organizations' records through A."""
        for name in orgs:
            doc = json.loads(self.journey.orgs[name].record(version=version))
            doc["issuers"] = sorted({*doc["issuers"], self.issuer(name)})
            r = self.a.put(f"/admin/organizations/{name}", content=json.dumps(doc), headers=ADMIN)
            assert r.status_code == 201, r.text

    def new_issuer(self, org: str) -> None:
        """The organization signs as an issuer its second record adds, through A."""
        self.issuers[org] = f"https://{org}.example/second-signing"
        self.onboard(org, version=2)

    def issuer(self, org: str) -> str:
        return self.issuers.get(org, self.journey.orgs[org].iss)

    def sign(self, org: str, payload: Payload, subject: str) -> bytes:
        signer = self.journey.orgs[org].signer
        return sign_statement(
            signer.leaf_key,
            issuer=self.issuer(org),
            subject=subject,
            content_type=type(payload).CONTENT_TYPE,
            payload=payload.to_json(),
            x5chain=signer.chain,
        )

    def register_on_a(self, org: str, data: bytes) -> None:
        """Registered through A, answered with its receipt."""
        headers = {"Content-Type": COSE}
        if self.auth:
            headers["Authorization"] = f"Bearer {self.writer(org, self.a)}"
        r = self.a.post("/entries", content=data, headers=headers)
        assert r.status_code == 201, r.text

    def writer(self, org: str, through: TestClient) -> str:
        if org not in self.tokens:
            self.tokens[org] = user_token(through, f"w-{org}", WRITERS[org], org, ADMIN)
        return self.tokens[org]

    def manifest(self) -> bytes:
        _, payload = self.journey.payloads()["manifest"]
        return self.sign(MAKER, payload, "urn:sealtrail:manifest")

    def blade(self, devices: list[str] | None = None) -> bytes:
        """An assembly into a blade of the manifest's first device (or of ``devices``)."""
        ids = devices if devices is not None else self.journey.device_ids[:1]
        payload = Assembly(Node(NodeType.BLADE, BLADES[0]), tuple(DeviceRef(d) for d in ids))
        return self.sign(ASSEMBLER, payload, "urn:sealtrail:blade")

    def server(self, serial: str) -> bytes:
        """An assembly of the blade into server ``serial``."""
        payload = Assembly(Node(NodeType.SERVER, serial), (Node(NodeType.BLADE, BLADES[0]),))
        return self.sign(ASSEMBLER, payload, "urn:sealtrail:server")

    def start_b(self) -> Send:
        """Start process B; how this world's entry point sends it a statement."""
        deployment = self.deployment
        if self.entry == "client":
            url = deployment.stack.enter_context(serve_in_thread(deployment.app()))
            client = deployment.stack.enter_context(Client(url))
            return lambda _, data: _refusal(lambda: client.register(data))
        app, b = deployment.start()
        self.b = b
        if self.entry == "library":
            service: TransparencyService = app.state.transparency_service
            portal = b.portal
            assert portal is not None
            return lambda _, data: _refusal(lambda: portal.call(service.register, data))

        def post(org: str, data: bytes) -> str:
            headers = {"Content-Type": COSE}
            if self.auth:
                headers["Authorization"] = f"Bearer {self.writer(org, b)}"
            r = b.post("/entries", content=data, headers=headers)
            return "" if r.status_code == 201 else str(r.json()["code"])

        return post

    def known_to_b(self, *orgs: str) -> None:
        """With ``[auth] required``: make the organizations' writers through B now (B reads
        the organizations' records as it does)."""
        if self.auth:
            assert self.b is not None
            for org in orgs:
                self.writer(org, self.b)


def _refusal(register: Callable[[], object]) -> str:
    try:
        register()
    except Error as exc:
        return exc.code
    return ""


@pytest.fixture(autouse=True)
def _no_background_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sealtrail.scitt._service.REGISTRY_POLL", NEVER)
    monkeypatch.setattr("sealtrail.provenance._ledger.INDEX_POLL", NEVER)


@pytest.fixture(params=["http", "http-auth", "client", "library"])
def world(request: pytest.FixtureRequest, postgres_url: str) -> Iterator[World]:
    entry: str = request.param
    with contextlib.ExitStack() as stack:
        deployment = Deployment(postgres_url, stack, auth_required=entry == "http-auth")
        _, a = deployment.start()
        yield World(deployment, entry, a, Journey.new(devices=2))


def stored(world: World, data: bytes) -> bool:
    store = PostgresStore(world.deployment.url)
    try:
        return store.get_statement(hashlib.sha256(data).digest()) is not None
    finally:
        store.close()


def test_an_issuer_registered_through_another_process(world: World) -> None:
    """(a) B has not read the record that names the maker's issuer; the manifest rests on
    nothing else."""
    send = world.start_b()
    world.onboard(MAKER)
    world.known_to_b(MAKER)
    if world.auth:
        world.new_issuer(MAKER)
    data = world.manifest()
    assert send(MAKER, data) == ""
    assert stored(world, data)


def test_a_history_registered_through_another_process(world: World) -> None:
    """(b) B knows both organizations (it read them as it started), not the manifest A
    registered a moment ago, which holds the device the blade is built of."""
    world.onboard(MAKER, ASSEMBLER)
    send = world.start_b()
    world.known_to_b(ASSEMBLER)
    world.register_on_a(MAKER, world.manifest())
    data = world.blade()
    assert send(ASSEMBLER, data) == ""
    assert stored(world, data)


def test_an_issuer_and_a_history_both_new_to_the_process(world: World) -> None:
    """(c) B has read neither the record that names the assembler's issuer nor the
    manifest: it reads both, and the blade is accepted."""
    send = world.start_b()
    world.onboard(MAKER, ASSEMBLER)
    world.known_to_b(ASSEMBLER)
    if world.auth:
        world.new_issuer(ASSEMBLER)
    world.register_on_a(MAKER, world.manifest())
    data = world.blade()
    assert send(ASSEMBLER, data) == ""
    assert stored(world, data)


def test_what_nobody_registered_is_still_refused(world: World) -> None:
    """A blade of a device no manifest holds (a rogue device), and a statement of an issuer
    nobody onboarded, are refused after B read what it could."""
    send = world.start_b()
    world.onboard(MAKER, ASSEMBLER)
    world.known_to_b(ASSEMBLER)
    world.register_on_a(MAKER, world.manifest())
    rogue = world.blade(devices=["f" * 64])
    assert send(ASSEMBLER, rogue) == "assembly-unknown-device"
    assert not stored(world, rogue)
    world.issuers[MAKER] = "https://nobody.example/signing"
    alien = world.manifest()
    assert send(MAKER, alien) == "issuer-unknown"
    assert not stored(world, alien)


@pytest.mark.parametrize("world", ["http"], indirect=True)
def test_a_history_another_process_indexed_before_this_ones_own_entry(world: World) -> None:
    """Each process's indexer applies the log to the shared index, whichever comes first.
    A indexes up to its manifest; B's next own entry follows it in the log, and B's indexer
    applies that entry alone: B must still take in the manifest before its next check."""
    world.onboard(MAKER, ASSEMBLER)
    send = world.start_b()
    world.register_on_a(MAKER, world.manifest())
    indexed(world.deployment.apps[0])
    _, release = world.journey.payloads()["release"]
    assert send(MAKER, world.sign(MAKER, release, "urn:sealtrail:release")) == ""
    indexed(world.deployment.apps[1])
    data = world.blade()
    assert send(ASSEMBLER, data) == ""
    assert stored(world, data)


def indexed(app: FastAPI, *, limit: int | None = None) -> None:
    """The process's indexer applies what the log holds now (as its poll would), or only
    its next ``limit`` entries."""
    ledger: ProvenanceLedger = app.state.ledger
    ledger.catch_up(app.state.sequencer.reader, limit=limit)


@pytest.mark.parametrize("world", ["http"], indirect=True)
def test_an_entry_another_process_indexed_first_leaves_the_queue(world: World) -> None:
    """B's statement, indexed by A's indexer before B's: B does not keep it waiting to be
    indexed (nor apply it again over the index when it rebuilds its tentative state), and
    B's next statement is indexed with the outcome B's check computed."""
    world.onboard(MAKER, ASSEMBLER)
    send = world.start_b()
    a, b = world.deployment.apps
    assert send(MAKER, world.manifest()) == ""
    indexed(a)
    indexed(b)
    assert not b.state.ledger._queue
    data = world.blade()
    assert send(ASSEMBLER, data) == ""
    assert len(b.state.ledger._queue) == 1
    indexed(b)
    assert not b.state.ledger._queue


@pytest.mark.parametrize("world", ["http"], indirect=True)
def test_of_two_conflicting_facts_the_later_is_refused_by_the_index(world: World) -> None:
    """A installs the blade into one server while B, which has not seen that yet, installs
    it into another. A's indexer applies A's entry alone, B's then applies B's: the index
    judges B's in log order (refused: the blade is in the first server) rather than write
    the outcome B's check computed without A's entry."""
    world.onboard(MAKER, ASSEMBLER)
    send = world.start_b()
    a, b = world.deployment.apps
    world.register_on_a(MAKER, world.manifest())
    world.register_on_a(ASSEMBLER, world.blade())
    indexed(b)  # B takes in the manifest and the blade
    world.register_on_a(ASSEMBLER, world.server("SRV-1"))
    assert send(ASSEMBLER, world.server("SRV-2")) == ""  # B's check has not seen SRV-1's
    index: PostgresIndex = a.state.ledger.index
    size = a.state.sequencer.reader.size()
    indexed(a, limit=size - 1 - index.applied_size())  # up to SRV-1's entry
    indexed(b)
    assert index.applied_size() == size
    (last,) = index.entries(size - 1, size)
    assert (last.outcome, last.code) == ("refused", "assembly-child-elsewhere")


@pytest.mark.parametrize("world", ["http"], indirect=True)
def test_a_batch_another_process_indexed_in_part_keeps_its_acceptances(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's indexer takes its manifest and blade off its queue for one batch; A's indexer
    applies the manifest alone first, and B's batch is refused (index-conflict). The blade's
    acceptance must go back on B's queue: lost, B's tentative state would forget the
    blade's device, and B would accept that device into a second blade."""
    world.onboard(MAKER, ASSEMBLER)
    send = world.start_b()
    a, b = world.deployment.apps
    assert send(MAKER, world.manifest()) == ""
    assert send(ASSEMBLER, world.blade()) == ""
    index: PostgresIndex = b.state.ledger.index
    apply = index.apply
    calls: list[int] = []

    def racing(*args: object, **kwargs: object) -> object:
        calls.append(index.applied_size())
        if len(calls) == 1:
            indexed(a, limit=size - 1 - index.applied_size())  # A: up to the manifest
        else:  # B's next batch fails too (the database went away): B stops here
            raise StorageError("stopped for the test")
        return apply(*args, **kwargs)  # type: ignore[arg-type]

    size = b.state.sequencer.reader.size()
    monkeypatch.setattr(index, "apply", racing)
    with pytest.raises(StorageError):
        indexed(b)
    assert index.applied_size() == size - 1  # the blade's entry is not indexed yet
    assert len(b.state.ledger._queue) == 1  # its acceptance is still waiting
    monkeypatch.setattr(index, "apply", apply)
    (blade,) = world.journey.device_ids[:1]
    payload = Assembly(Node(NodeType.BLADE, BLADES[1]), (DeviceRef(blade),))
    assert send(ASSEMBLER, world.sign(ASSEMBLER, payload, "urn:sealtrail:blade")) == (
        "assembly-child-elsewhere"
    )
