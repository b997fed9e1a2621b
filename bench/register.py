"""Benchmark of SCITT registration: signed statements in, receipts out, on SQLite.

Run with ``sealtrail bench register [--json|--table] [--store postgresql://…]``. Every
figure comes from this one process run, on fresh stores (``SQLiteStore``,
``synchronous=FULL``) in a temporary directory; with ``--store``, the in-process and HTTP
figures again on PostgreSQL (a fresh schema, dropped afterwards), the HTTP one with
``--api-processes`` servers sharing the database (default 2: one of them sequences, see
``SharedSequencer``), each load connection bound to one of them in turn.

The statements are realistic: ~2 KB ES256 COSE_Sign1 statements with distinct
JSON payloads, signed by a leaf certificate whose x5chain (leaf + intermediate) leads to the
organization's root CA, registered as its anchor through the service's own
``put_organization``.

Figures (name -> number):
  ceiling_verifications_per_s      decode (cbor2) + ES256 check (cryptography) of the same
                                   statements, one thread: the floor cost of any registration
  registrations_per_s_inprocess    TransparencyService.register from many concurrent asyncio
                                   tasks, each awaiting its durable checkpoint (no HTTP)
  inprocess_fraction_of_ceiling    the ratio of the two above
  registrations_per_s_http         POST /entries to a real server (uvicorn, another process)
                                   from concurrent keep-alive connections on 127.0.0.1
  http_p50_ms, http_p99_ms         latency from sending the POST to holding the receipt
                                   (a 303 is followed by polling, and counted in full)
  postgresql_…                     the in-process and HTTP figures on PostgreSQL
  postgresql_http_ratio            PostgreSQL's HTTP figure over SQLite's (--connections):
                                   with --store, both are measured in --rounds alternating
                                   rounds; each HTTP figure above is its median round, this
                                   the median of the rounds' ratios (all under "rounds")
  …_peak_registrations_per_s       with --store: the most registrations/s of the capacity
  …_peak_connections               sweep (the HTTP figure again at each of
                                   --peak-connections, SQLite and PostgreSQL in turn) with
                                   every statement registered and p99 within 250 ms, and
                                   the connection count that gave it
  postgresql_peak_ratio            PostgreSQL's peak over SQLite's

The server is this file run as a script (``python bench/register.py serve ...``), so it
shares no interpreter, GIL or event loop with the load generator. The load generator is a
minimal HTTP/1.1 keep-alive client written here: a general-purpose client would spend more
of the two cores than the server it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import importlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from sealtrail.keys import EcdsaSigner, Ed25519Signer, load_signer, write_private_key
from sealtrail.log import CheckpointSigner, Sequencer
from sealtrail.scitt import StatementRows, TransparencyService, sign_statement
from sealtrail.storage import PostgresStore, SQLiteStore

Report = Callable[[str, int, int], None]

ISSUER = "https://maker.bench.sealtrail.localhost/signing"
SERVICE = "https://ts.bench.sealtrail.localhost"
ORIGIN = "ts.bench.sealtrail.localhost/log"
CONTENT_TYPE = "application/json"
#: Target size of one signed statement, bytes (the payload is padded to reach it).
STATEMENT_SIZE = 2048
#: Concurrent registrations in the in-process figure.
TASKS = 1024
#: Concurrent keep-alive connections of the HTTP load generator.
CONNECTIONS = 64
#: Statements registered over HTTP before timing starts (connections, first-call costs).
WARMUP = 256
#: With ``--store``: rounds of the two HTTP figures at ``--connections``, SQLite's and
#: PostgreSQL's in turn. Each figure is its median round, the ratio the median of the rounds'
#: ratios: the machine moves by ±15% within minutes, and one pair of runs minutes apart
#: read anywhere from 0.84 to 0.91 on the same code.
HTTP_ROUNDS = 3
#: Connection counts of the capacity sweep (with ``--store``): the HTTP figures again at each,
#: to find what each deployment takes at most rather than at one concurrency.
PEAK_CONNECTIONS = (128, 256, 384, 512)
#: The HTTP figure's latency target (p99, ms): a level of the sweep above it does not count
#: toward a peak, as a service that slow is not taking that load.
P99_TARGET_MS = 250.0
#: Longest the HTTP figure may run, seconds; what completed by then is what is reported.
HTTP_TIME_LIMIT = 120.0
#: Passes over the statements for the ceiling figure (its median is reported).
CEILING_PASSES = 3
#: Pause between polls of an entry after a 303, seconds.
POLL_INTERVAL = 0.02
SERVER_START_TIMEOUT = 60.0
#: Seconds the other API processes get to read a new organization record (REGISTRY_POLL).
REGISTRY_WAIT = 1.5


# -- certificates and statements ---------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    path_length: int | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    """An organization's root CA (its registered anchor), an intermediate and a signing leaf."""

    root: x509.Certificate
    chain: tuple[bytes, ...]  # x5chain, DER, leaf first
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls) -> Pki:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _cert("Bench Maker Root CA", root_key, None, ca=True, path_length=1)
        inter_key = ec.generate_private_key(ec.SECP256R1())
        inter = _cert(
            "Bench Maker Signing CA", inter_key, (root.subject, root_key), ca=True, path_length=0
        )
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _cert("Bench Maker Signer", leaf_key, (inter.subject, inter_key), ca=False)
        der = serialization.Encoding.DER
        return cls(root, (leaf.public_bytes(der), inter.public_bytes(der)), leaf_key)

    def org_record(self) -> bytes:
        return json.dumps(
            {
                "org": "bench-maker",
                "version": 1,
                "roles": ["device-maker"],
                "issuers": [ISSUER],
                "anchors": [self.root.public_bytes(serialization.Encoding.PEM).decode()],
                "policy": {
                    "content_types": [CONTENT_TYPE],
                    "subjects": ["urn:bench:*"],
                    "algorithms": ["ES256"],
                    "max_size": 65536,
                },
            }
        ).encode()


def _statements(pki: Pki, count: int, seed: int, report: Report) -> list[bytes]:
    """``count`` distinct signed statements of about :data:`STATEMENT_SIZE` bytes."""
    signer = EcdsaSigner(pki.leaf_key)
    # The envelope around the payload is the same size for every statement of one run.
    probe = sign_statement(
        signer,
        issuer=ISSUER,
        subject="urn:bench:device:0",
        content_type=CONTENT_TYPE,
        payload=b"",
        x5chain=pki.chain,
    )
    out: list[bytes] = []
    for i in range(count):
        doc = {"device": f"urn:bench:device:{seed}-{i}", "event": "assembled", "seq": i}
        head = json.dumps(doc).encode()
        fill = max(0, STATEMENT_SIZE - len(probe) - len(head) - 16)
        doc["notes"] = hashlib.shake_256(f"{seed}/{i}".encode()).hexdigest(fill // 2)
        out.append(
            sign_statement(
                signer,
                issuer=ISSUER,
                subject=f"urn:bench:device:{seed}-{i}",
                content_type=CONTENT_TYPE,
                payload=json.dumps(doc).encode(),
                x5chain=pki.chain,
            )
        )
        if i % 1000 == 999 or i == count - 1:
            report("statements signed", i + 1, count)
    return out


# -- the ceiling ---------------------------------------------------------------------------------


def _ceiling(statements: Sequence[bytes], key: ec.EllipticCurvePublicKey) -> float:
    """Seconds to decode and check every statement's ES256 signature, one thread.

    The floor of any registration: cbor2 decodes the message and its protected header,
    the ``Sig_structure`` is encoded, and cryptography checks the signature with the
    leaf's key (loaded once, as a validated chain's key is). Nothing else.
    """
    algorithm = ec.ECDSA(hashes.SHA256())
    gc.collect()
    start = time.perf_counter()
    for data in statements:
        protected, _unprotected, payload, signature = cbor2.loads(data).value
        cbor2.loads(protected)
        tbs = cbor2.dumps(["Signature1", protected, b"", payload])
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        key.verify(encode_dss_signature(r, s), tbs, algorithm)
    return time.perf_counter() - start


def _median_ceiling(
    statements: Sequence[bytes], key: ec.EllipticCurvePublicKey, report: Report
) -> float:
    """The median of :data:`CEILING_PASSES` passes (a shared machine's speed drifts)."""
    passes = []
    for done in range(CEILING_PASSES):
        report(
            "ceiling (decode + verify)", done * len(statements), CEILING_PASSES * len(statements)
        )
        passes.append(_ceiling(statements, key))
    return sorted(passes)[len(passes) // 2]


# -- in process ----------------------------------------------------------------------------------


def _open(where: str) -> SQLiteStore | PostgresStore:
    """A store: a PostgreSQL URL, or the path of a new SQLite file (``synchronous=FULL``)."""
    if where.startswith(("postgresql://", "postgres://")):
        return PostgresStore(where)
    return SQLiteStore(Path(where), synchronous="FULL")


async def _inprocess(
    where: str, pki: Pki, statements: Sequence[bytes], tasks: int, report: Report
) -> float:
    store = _open(where)
    checkpoints = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    sequencer = Sequencer(store, signer=checkpoints)
    service = TransparencyService(
        store=store,
        sequencer=sequencer,
        signer=EcdsaSigner.generate(),
        issuer=SERVICE,
        statement_rows=StatementRows(secrets.token_bytes(32)),  # as a server stores rows
    )
    await sequencer.start()
    try:
        await service.start()
        try:
            await service.put_organization(pki.org_record())
            todo = iter(statements)
            done = 0

            async def worker() -> None:
                nonlocal done
                for data in todo:
                    await service.register(data)
                    done += 1
                    if done % 1000 == 0:
                        report("in-process registrations", done, len(statements))

            gc.collect()
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(tasks, len(statements)))))
            elapsed = time.perf_counter() - start
            report("in-process registrations", done, len(statements))
            return elapsed
        finally:
            await service.close()
    finally:
        await sequencer.close()
        store.close()


# -- over HTTP -----------------------------------------------------------------------------------


class HttpError(Exception):
    """The server answered something the load generator cannot use."""


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


class _Connection:
    """One HTTP/1.1 keep-alive connection: a request, then its response, in turn."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> _Response:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return await self._response()

    async def _response(self) -> _Response:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {status_line!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return _Response(int(parts[1]), headers, body)

    async def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields, unused
                return b"".join(chunks)
            chunks.append((await self.reader.readexactly(size + 2))[:-2])

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class _HttpRun:
    latencies: list[float] = field(default_factory=list)
    created: int = 0
    see_other: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def _register_over_http(conn: _Connection, data: bytes, run: _HttpRun) -> None:
    start = time.perf_counter()
    response = await conn.request("POST", "/entries", data, [("Content-Type", "application/cose")])
    if response.status == 303:
        run.see_other += 1
        location = response.headers.get("location", "")
        while response.status in (302, 303):
            await asyncio.sleep(POLL_INTERVAL)
            response = await conn.request("GET", location)
    if response.status not in (200, 201) or not response.body:
        run.error(f"http-{response.status}")
        return
    run.latencies.append(time.perf_counter() - start)
    run.created += 1


async def _load(
    ports: Sequence[int],
    statements: Sequence[bytes],
    connections: int,
    time_limit: float,
    report: Report,
    label: str,
) -> tuple[_HttpRun, float]:
    run = _HttpRun()
    todo = iter(statements)
    conns = [await _Connection.open("127.0.0.1", ports[k % len(ports)]) for k in range(connections)]
    deadline = time.perf_counter() + time_limit

    async def client(conn: _Connection) -> None:
        for data in todo:
            if time.perf_counter() > deadline:
                run.error("time-limit")
                return
            try:
                await _register_over_http(conn, data, run)
            except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
                run.error(type(exc).__name__)
                return
            done = run.created + sum(run.errors.values())
            if done % 1000 == 0:
                report(label, done, len(statements))

    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - start
    for conn in conns:
        await conn.close()
    return run, elapsed


@dataclass
class _Server:
    process: subprocess.Popen[bytes]
    port: int
    settings: dict[str, Any]

    def stop(self) -> None:
        """Close its standard input (it then shuts down cleanly); signal it if it lingers."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            for signal_it in (None, self.process.terminate, self.process.kill):
                if signal_it is not None:
                    signal_it()
                try:
                    self.process.wait(timeout=30)
                    return
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def _start_server(where: str, keys: Path, token: str) -> _Server:
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    process = subprocess.Popen(  # this interpreter, this file
        # -P: bench/ is not put on sys.path, so no file here can shadow a module.
        [sys.executable, "-P", str(Path(__file__).resolve()), "serve", where, str(keys)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "SEALTRAIL_BENCH_ADMIN_TOKEN_SHA256": token_hash},
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the server's one line: its port and settings
    if not line:
        process.wait(timeout=SERVER_START_TIMEOUT)
        raise RuntimeError("the benchmark server did not start")
    ready = json.loads(line)
    return _Server(process, int(ready["port"]), ready["settings"])


async def _onboard(port: int, token: str, record: bytes) -> None:
    conn = await _Connection.open("127.0.0.1", port)
    try:
        response = await conn.request(
            "PUT",
            "/admin/organizations/bench-maker",
            record,
            [("Content-Type", "application/json"), ("Authorization", f"Bearer {token}")],
        )
    finally:
        await conn.close()
    if response.status != 201:
        raise HttpError(f"onboarding answered {response.status}: {response.body[:200]!r}")


def _write_keys(folder: Path) -> Path:
    """The keys every server of one run signs with (several servers are one service)."""
    folder.mkdir(mode=0o700)
    write_private_key(folder / "log.key", Ed25519Signer.generate())
    write_private_key(folder / "service.key", EcdsaSigner.generate())
    # The challenge key, which also keys the statement rows' tags (as `sealtrail serve`).
    fd = os.open(folder / "challenge.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return folder


def _http(
    where: str,
    keys: Path,
    pki: Pki,
    warmup: Sequence[bytes],
    statements: Sequence[bytes],
    connections: int,
    time_limit: float,
    report: Report,
    *,
    processes: int = 1,
    label: str = "HTTP registrations",
) -> tuple[_HttpRun, float, dict[str, Any]]:
    token = secrets.token_urlsafe(24)
    servers: list[_Server] = []
    try:
        for _ in range(processes):
            servers.append(_start_server(where, keys, token))
        ports = [server.port for server in servers]

        async def drive() -> tuple[_HttpRun, float]:
            await _onboard(ports[0], token, pki.org_record())
            if processes > 1:
                await asyncio.sleep(REGISTRY_WAIT)  # the others pick the organization up
            await _load(ports, warmup, connections, time_limit, _quiet, "warm-up")
            return await _load(ports, statements, connections, time_limit, report, label)

        with asyncio.Runner(loop_factory=_client_loop()) as runner:
            run, elapsed = runner.run(drive())
    finally:
        for server in servers:
            server.stop()
    return (
        run,
        elapsed,
        {
            **servers[0].settings,
            "client_loop": "asyncio" if _client_loop() is None else "uvloop",
            "api_processes": processes,
        },
    )


# -- the server (a separate process) -------------------------------------------------------------


def serve(where: str, keys: Path) -> None:
    """Run the full writing service over a store (see :func:`_open`) on 127.0.0.1, port 0,
    with the keys in the folder ``keys``.

    Prints one JSON line (the port and server settings) once listening; stops on SIGTERM
    or when its standard input closes.
    """
    import uvicorn

    from sealtrail.log import SWITCH_INTERVAL
    from sealtrail.service import server_config, service_app, settle_heap

    sys.setswitchinterval(SWITCH_INTERVAL)  # as `sealtrail serve` runs
    token_hash = bytes.fromhex(os.environ["SEALTRAIL_BENCH_ADMIN_TOKEN_SHA256"])
    store = _open(where)
    app = service_app(
        store,
        checkpoint_signer=CheckpointSigner(origin=ORIGIN, signer=load_signer(keys / "log.key")),
        service_signer=load_signer(keys / "service.key"),
        issuer=SERVICE,
        admin_token_hash=token_hash,
        challenge_key=bytes.fromhex((keys / "challenge.key").read_text().strip()),
    )
    # As `sealtrail serve` runs: httptools with the request head bounded, no forwarding
    # headers trusted (server_config); the loop is uvloop's when it is installed.
    settings = {"loop": _best("uvloop", "asyncio"), "http": "httptools"}
    config = server_config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop=settings["loop"],
        backlog=4096,
    )
    server = uvicorn.Server(config)
    settle_heap()  # as `sealtrail serve` does

    def exit_when_stdin_closes() -> None:
        sys.stdin.buffer.read()
        server.should_exit = True

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        sys.stdout.write(json.dumps({"port": port, "settings": settings}) + "\n")
        sys.stdout.flush()
        threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
        await task

    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(main())
    finally:
        store.close()


def _client_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop for the load generator when it is installed (it leaves more of
    the machine to the server), else asyncio's."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _best(preferred: str, fallback: str) -> str:
    try:
        importlib.import_module(preferred)
    except ImportError:
        return fallback
    return preferred


# -- the run -------------------------------------------------------------------------------------


def _quiet(_what: str, _done: int, _total: int) -> None:
    pass


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    *,
    statements: int = 20_000,
    tasks: int = TASKS,
    connections: int = CONNECTIONS,
    time_limit: float = HTTP_TIME_LIMIT,
    seed: int = 1,
    store: str | None = None,
    api_processes: int = 2,
    peak_connections: Sequence[int] = PEAK_CONNECTIONS,
    rounds: int = HTTP_ROUNDS,
    report: Report,
) -> dict[str, Any]:
    if store is not None:
        _postgres().check(store)  # a server that cannot be reached fails now, not minutes on
    figures: dict[str, float] = {}
    pki = Pki.make()
    data = _statements(pki, statements + WARMUP, seed, report)
    warmup, data = data[:WARMUP], data[WARMUP:]
    leaf_key = x509.load_der_x509_certificate(pki.chain[0]).public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)

    figures["ceiling_verifications_per_s"] = _rate(
        statements, _median_ceiling(data, leaf_key, report)
    )

    runs: dict[str, _HttpRun] = {}
    sweep: dict[str, list[dict[str, Any]]] = {}
    rounds_out: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="sealtrail-bench-") as tmp:
        root = Path(tmp)
        keys = _write_keys(root / "keys")
        elapsed = asyncio.run(_inprocess(str(root / "inprocess.db"), pki, data, tasks, report))
        figures["registrations_per_s_inprocess"] = _rate(statements, elapsed)
        figures["inprocess_fraction_of_ceiling"] = round(
            figures["registrations_per_s_inprocess"] / figures["ceiling_verifications_per_s"], 3
        )

        def over_http(where: str, level: int, processes: int, label: str) -> _Round:
            """The HTTP figure over ``where``: the run, its figures, the server's settings."""
            run, elapsed, settings = _http(
                where,
                keys,
                pki,
                warmup,
                data,
                level,
                time_limit,
                report,
                processes=processes,
                label=label,
            )
            return run, _http_figures(run, elapsed), settings

        def sqlite_round(k: int) -> _Round:
            label = "HTTP registrations" + (f" (round {k + 1})" if store is not None else "")
            return over_http(str(root / f"http-{k}.db"), connections, 1, label)

        if store is None:
            runs["sqlite"], sqlite_http, server = sqlite_round(0)
            figures |= sqlite_http
        else:
            postgres = _postgres()
            with postgres.fresh_schema(store) as url:
                label = "in-process registrations (postgresql)"
                elapsed = asyncio.run(_inprocess(url, pki, data, tasks, _relabel(report, label)))
                figures["postgresql_registrations_per_s_inprocess"] = _rate(statements, elapsed)

            def postgres_round(k: int) -> _Round:
                with postgres.fresh_schema(store) as url:
                    label = f"HTTP registrations (postgresql, {api_processes} API processes,"
                    return over_http(url, connections, api_processes, f"{label} round {k + 1})")

            # In turn, so that each pair of figures sees the same minutes of the machine.
            paired = [(sqlite_round(k), postgres_round(k)) for k in range(rounds)]
            server = paired[0][0][2]
            mine, theirs = [p for _, p in paired], [s for s, _ in paired]
            runs["sqlite"], sqlite_http, _ = _median_round(theirs)
            runs["postgresql"], postgres_http, _ = _median_round(mine)
            figures |= sqlite_http
            figures |= {f"postgresql_{name}": value for name, value in postgres_http.items()}
            ratios = [_per_s(p) / _per_s(s) for s, p in paired]
            figures["postgresql_http_ratio"] = round(statistics.median(ratios), 3)
            rounds_out = {
                "connections": connections,
                "sqlite_registrations_per_s": [_per_s(s) for s in theirs],
                "postgresql_registrations_per_s": [_per_s(p) for p in mine],
                "ratios": [round(r, 3) for r in ratios],
                "failed": [
                    sum(s[0].errors.values()) + sum(p[0].errors.values()) for s, p in paired
                ],
            }
            sweep = {
                "sqlite": [_level(connections, runs["sqlite"], sqlite_http)],
                "postgresql": [_level(connections, runs["postgresql"], postgres_http)],
            }
            for level in sorted(set(peak_connections) - {connections}):
                # Both deployments at each level in turn: the same minutes of the machine.
                where = str(root / f"peak-{level}.db")
                label = f"HTTP registrations ({level} connections)"
                run, level_figures, _ = over_http(where, level, 1, label)
                sweep["sqlite"].append(_level(level, run, level_figures))
                with postgres.fresh_schema(store) as url:
                    label = f"HTTP registrations (postgresql, {level} connections)"
                    run, level_figures, _ = over_http(url, level, api_processes, label)
                sweep["postgresql"].append(_level(level, run, level_figures))
            figures |= _peaks(sweep)

    return {
        "benchmark": "register",
        "params": {
            "statements": statements,
            "statement_size": round(sum(map(len, data)) / len(data)),
            "x5chain": "leaf + intermediate, ES256, to the organization's root CA anchor",
            "inprocess_tasks": tasks,
            "http_connections": connections,
            "http_warmup_statements": WARMUP,
            "http_server": {"uvicorn": True, **server},
            "sqlite_synchronous": "FULL",
            "postgresql": None if store is None else _postgres().redacted(store),
            "postgresql_api_processes": None if store is None else api_processes,
            "peak_connections": None if store is None else sorted({connections, *peak_connections}),
            "http_rounds": None if store is None else rounds,
            "seed": seed,
        },
        "machine": {"cpus": os.cpu_count()},
        "figures": figures,
        "http": {
            backend: {
                "created": run.created - run.see_other,
                "see_other_then_polled": run.see_other,
                "failed": run.errors,
            }
            for backend, run in runs.items()
        },
        "rounds": rounds_out,
        "sweep": sweep,
    }


_Round = tuple[_HttpRun, dict[str, float], dict[str, Any]]


def _per_s(one: _Round) -> float:
    return one[1]["registrations_per_s_http"]


def _median_round(rounds: Sequence[_Round]) -> _Round:
    """The round of the median rate (the lower middle one of an even count): its rate and
    latencies are reported together, as they were measured."""
    ordered = sorted(rounds, key=_per_s)
    return ordered[(len(ordered) - 1) // 2]


def _level(connections: int, run: _HttpRun, figures: dict[str, float]) -> dict[str, Any]:
    """One row of the capacity sweep, from one HTTP run and its figures."""
    return {
        "connections": connections,
        "registrations_per_s": figures["registrations_per_s_http"],
        "p50_ms": figures["http_p50_ms"],
        "p99_ms": figures["http_p99_ms"],
        "failed": sum(run.errors.values()),
    }


def _peaks(sweep: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """The peak of each deployment over the sweep's levels that registered every statement
    within the latency target (:data:`P99_TARGET_MS`), and PostgreSQL's over SQLite's."""
    out: dict[str, float] = {}
    for backend, prefix in (("sqlite", "http_"), ("postgresql", "postgresql_http_")):
        clean = [r for r in sweep[backend] if not r["failed"] and r["p99_ms"] <= P99_TARGET_MS]
        if not clean:
            continue
        best = max(clean, key=lambda row: row["registrations_per_s"])
        out[f"{prefix}peak_registrations_per_s"] = best["registrations_per_s"]
        out[f"{prefix}peak_connections"] = best["connections"]
    mine, theirs = "postgresql_http_peak_registrations_per_s", "http_peak_registrations_per_s"
    if mine in out and theirs in out:
        out["postgresql_peak_ratio"] = round(out[mine] / out[theirs], 3)
    return out


def _http_figures(run: _HttpRun, elapsed: float) -> dict[str, float]:
    return {
        "registrations_per_s_http": _rate(run.created, elapsed),
        "http_p50_ms": round(_percentile(run.latencies, 0.50) * 1000, 2),
        "http_p99_ms": round(_percentile(run.latencies, 0.99) * 1000, 2),
    }


def _relabel(report: Report, label: str) -> Report:
    return lambda _what, done, total: report(label, done, total)


def _postgres() -> Any:  # noqa: ANN401 (a module loaded by path)
    """bench/_postgres.py, loaded when a PostgreSQL figure is asked for (not by ``serve``)."""
    from sealtrail.cli.bench import bench_module

    return bench_module(Path(__file__).with_name("_postgres.py"))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], Path(sys.argv[3]))
    else:
        sys.exit(
            "usage: register.py serve <store path or URL> <keys folder>"
            "  (run by `sealtrail bench register`)"
        )
