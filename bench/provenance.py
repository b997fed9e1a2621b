"""Benchmark of the provenance ledger: identities and attestations in, the audit and fsck out.

Run with ``sealtrail bench provenance [--json|--table]``. Every figure comes from this one
process run, on fresh stores in a temporary directory: the log and its statements in
``SQLiteStore`` (``log.db``, ``synchronous=FULL``), the provenance index in ``SQLiteIndex``
(``provenance.db``), wired as ``sealtrail.service.service_app`` wires them (sequencer,
transparency service with the ledger's registration rules, the ledger following the log)
but without HTTP. docs/bench.md says what each figure measures and the targets.

Figures (name -> number):
  ceiling_p384_verifications_per_s       bare ECDSA P-384/SHA-384 checks with cryptography,
                                         one thread, over a message the size of device
                                         evidence (median of 4 passes spread over the run)
  ceiling_statement_verifications_per_s  every statement of the run's log (its own mix)
                                         parsed and checked with every signature it carries
                                         (its COSE signature, each manifest identity's
                                         certificate, each evidence signature, each alias
                                         certificate once), bare, one thread
  identities_ingested_per_s              device identities from signed device manifests
                                         (--devices each), every identity chain checked to
                                         the maker's device CA, from submission until the
                                         index applied them
  attestations_per_s                     attestation results with per-device evidence over
                                         fresh nonces, re-appraised by the ledger, from
                                         submission until the index applied them
  rots_per_server                        roots of trust per server (8)
  attestation_rots_per_s                 attestations_per_s * rots_per_server
  audit_entries_per_s                    audit_log over the whole log, every signature checked
  audit_signatures_per_s                 the signatures that audit checked, per second
  fsck_entries_per_s                     LogReader.audit (the tree only) of a separate log of
                                         --fsck-entries 32-byte entries
  identities_vs_p384, attestation_rots_vs_p384, audit_vs_statement_ceiling,
  audit_signatures_vs_p384               the ratios

Statements larger than the service-wide 1 MiB limit cannot be registered with the defaults
(a 10,000-device manifest is about 5.8 MB): the benchmark raises the limits of the service
it builds and of the maker's registration policy, and says so in ``limits``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import gc
import hashlib
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealtrail.config import DEFAULT_MAX_STATEMENT_SIZE
from sealtrail.keys import EcdsaSigner, Ed25519Signer, Verifier
from sealtrail.keys.parallel import workers as verification_workers
from sealtrail.log import CheckpointSigner, LogReader, Sequencer, SequencerConfig
from sealtrail.provenance import (
    KINDS,
    Assembly,
    AttestationResult,
    DeviceRef,
    DeviceResult,
    DigestAlgorithm,
    EarStatus,
    FirmwareRelease,
    Measurement,
    Node,
    NodeType,
    ProvenanceLedger,
    ProvenancePolicy,
    audit_log,
)
from sealtrail.provenance._evidence import SigningKey, evidence_message, sign_evidence
from sealtrail.provenance._payloads import ComponentMeasurement, DeviceEvidence
from sealtrail.scitt import (
    ChainValidator,
    TransparencyService,
    issuer_key,
    parse_statement,
    sign_statement,
)
from sealtrail.storage import SQLiteIndex, SQLiteStore

Report = Callable[[str, int, int], None]

SERVICE = "https://ts.provenance.bench.sealtrail.localhost"
ORIGIN = "ts.provenance.bench.sealtrail.localhost/log"
MAKER, ASSEMBLER, OPERATOR = "bench-maker", "bench-assembler", "bench-operator"
#: Roots of trust per server (Caliptra, a TPM and the BMC's and NICs' RoTs, say).
ROTS_PER_SERVER = 8
#: The statement size limit this benchmark configures (the service-wide default is 1 MiB).
STATEMENT_LIMIT = 16 * 1024 * 1024
#: Concurrent attestation registrations.
TASKS = 64
#: Checks per pass of the P-384 ceiling. A pass runs before and after each timed ingestion
#: phase and after the audit; the median of the four is the figure (the machine's speed
#: drifts when other work shares it, and every pass is reported).
P384_CHECKS = 1000
#: Passes over the statement mix for the statement ceiling (the median is reported).
STATEMENT_PASSES = 3
#: Devices generated per job of the generation pool.
GENERATION_CHUNK = 250
#: The firmware every device measures, and its release.
FIRMWARE = "caliptra-rt"
FIRMWARE_DIGEST = hashlib.sha384(b"caliptra runtime 1.2").hexdigest()
MEASUREMENT = ComponentMeasurement(FIRMWARE, DigestAlgorithm.SHA384, FIRMWARE_DIGEST)
#: Entries of the fsck log per sequencer batch, and batches in flight.
FSCK_BATCH = 16384
FSCK_IN_FLIGHT = 3

TARGETS = {
    "identities_vs_p384": 0.7,
    "attestation_rots_vs_p384": 0.6,
    "audit_vs_statement_ceiling": 0.6,
    "fsck_entries_per_s": 300_000.0,
}

_DER = serialization.Encoding.DER


# -- certificates --------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _signing_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    """An organization's root CA (``issuer`` None) or its statement-signing leaf."""
    now = dt.datetime.now(dt.UTC)
    ca = issuer is None
    issuer_name, issuer_key_ = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
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
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key_.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key_, hashes.SHA256())


@dataclass(frozen=True)
class Org:
    """One organization: its root CA (the registered anchor) and an ES256 signing leaf."""

    name: str
    roles: tuple[str, ...]
    kinds: tuple[str, ...]  # content types it registers
    root: x509.Certificate
    leaf: bytes
    signer: EcdsaSigner

    @classmethod
    def make(cls, name: str, roles: Sequence[str], kinds: Sequence[str]) -> Org:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _signing_cert(f"{name} Root CA", root_key, None)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _signing_cert(f"{name} Signer", leaf_key, (root.subject, root_key))
        return cls(
            name, tuple(roles), tuple(kinds), root, leaf.public_bytes(_DER), EcdsaSigner(leaf_key)
        )

    @property
    def issuer(self) -> str:
        return f"https://{self.name}.bench.sealtrail.localhost/signing"

    def record(self, *, max_size: int, device_ca: x509.Certificate | None = None) -> bytes:
        pem = serialization.Encoding.PEM
        doc: dict[str, Any] = {
            "org": self.name,
            "version": 1,
            "roles": list(self.roles),
            "issuers": [self.issuer],
            "anchors": [self.root.public_bytes(pem).decode()],
            "policy": {
                "content_types": list(self.kinds),
                "subjects": [f"urn:{self.name}:*"],
                "algorithms": ["ES256"],
                "max_size": max_size,
            },
        }
        if device_ca is not None:
            doc["device_anchors"] = [device_ca.public_bytes(pem).decode()]
        return json.dumps(doc).encode()

    def sign(self, kind: str, subject: str, payload: bytes) -> bytes:
        return sign_statement(
            self.signer,
            issuer=self.issuer,
            subject=f"urn:{self.name}:{subject}",
            content_type=kind,
            payload=payload,
            x5chain=(self.leaf,),
        )


# -- devices (made in worker processes: a P-384 key and certificate cost about 1 ms) ---------------


@dataclass(frozen=True)
class Device:
    """One root of trust: its identity certificate, device id and, for a device installed in
    a benchmark server, the evidence it signs for each attestation round."""

    serial: str
    identity: bytes
    device_id: str
    evidence: tuple[DeviceEvidence, ...]


def _nonce(seed: int, server: int, round_: int) -> bytes:
    return hashlib.sha256(f"{seed}/nonce/{server}/{round_}".encode()).digest()


def _make_devices(job: tuple[int, int, int, int, int, int]) -> list[Device]:
    """Devices ``first .. first + count - 1``: P-384 keys, identity certificates issued by the
    device CA (its private value ``ca_value``), and evidence for those in servers.

    Odd devices sign evidence with an alias key certified by their identity key (a DICE
    layer); even ones with the identity key itself.
    """
    ca_value, first, count, in_servers, rounds, seed = job
    curve = ec.SECP384R1()
    ca_key = ec.derive_private_key(ca_value, curve)
    ca_name = _name("Bench Device CA")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    made = []
    for number in range(first, first + count):
        serial = f"rot-{seed}-{number:07d}"
        key = ec.generate_private_key(curve)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"IDevID {serial}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(number + 1)
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA384())
        )
        spki = cert.public_key().public_bytes(_DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        evidence: list[DeviceEvidence] = []
        if number < in_servers:
            signer = key
            chain: tuple[bytes, ...] = ()
            if number % 2:
                signer = ec.generate_private_key(curve)
                alias = (
                    x509.CertificateBuilder()
                    .subject_name(_name(f"Runtime Alias {serial}"))
                    .issuer_name(cert.subject)
                    .public_key(signer.public_key())
                    .serial_number(number + 1)
                    .not_valid_before(start)
                    .not_valid_after(start + dt.timedelta(days=365))
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .sign(key, hashes.SHA384())
                )
                chain = (alias.public_bytes(_DER),)
            server = number // ROTS_PER_SERVER
            evidence = [
                sign_evidence(signer, _nonce(seed, server, r), (MEASUREMENT,), chain)
                for r in range(rounds)
            ]
        made.append(
            Device(
                serial, cert.public_bytes(_DER), hashlib.sha256(spki).hexdigest(), tuple(evidence)
            )
        )
    return made


def _generate(
    ca_key: ec.EllipticCurvePrivateKey,
    total: int,
    in_servers: int,
    rounds: int,
    seed: int,
    workers: int,
    report: Report,
) -> list[Device]:
    """Every device, made by ``workers`` forked processes (in this one if it runs threads:
    forking a threaded process is not safe)."""
    value = ca_key.private_numbers().private_value
    jobs = [
        (value, first, min(GENERATION_CHUNK, total - first), in_servers, rounds, seed)
        for first in range(0, total, GENERATION_CHUNK)
    ]
    devices: list[Device] = []
    if workers > 1 and threading.active_count() == 1 and len(jobs) > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for made in pool.map(_make_devices, jobs):
                devices += made
                report("devices made", len(devices), total)
    else:
        for job in jobs:
            devices += _make_devices(job)
            report("devices made", len(devices), total)
    return devices


def _device_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Bench Device CA"))
        .issuer_name(_name("Bench Device CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    return key, cert


# -- statements ----------------------------------------------------------------------------------


def _content_type(kind: str) -> str:
    return next(ct for ct, k in KINDS.items() if k.name == kind)


MANIFEST = _content_type("device-manifest")
RELEASE = _content_type("firmware-release")
ASSEMBLY = _content_type("assembly")
ATTESTATION = _content_type("attestation-result")


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _manifest(maker: Org, batch: str, devices: Sequence[Device]) -> bytes:
    """A device manifest, its JSON written directly (the canonical form ``to_json`` gives)."""
    doc = {
        "batch_id": batch,
        "devices": [
            {
                "algorithm": "ES384",
                "chain": [base64.b64encode(d.identity).decode("ascii")],
                "kind": "caliptra",
                "serial": d.serial,
            }
            for d in devices
        ],
    }
    return maker.sign(MANIFEST, f"batch:{batch}", _canonical(doc))


def _release(maker: Org) -> bytes:
    release = FirmwareRelease(
        component=FIRMWARE,
        version="1.2",
        security_version=3,
        measurements=(Measurement(DigestAlgorithm.SHA384, FIRMWARE_DIGEST),),
    )
    return maker.sign(RELEASE, f"firmware:{FIRMWARE}", release.to_json())


def _server_serial(seed: int, server: int) -> str:
    return f"srv-{seed}-{server:05d}"


def _assembly(assembler: Org, serial: str, devices: Sequence[Device]) -> bytes:
    assembly = Assembly(
        parent=Node(NodeType.SERVER, serial),
        children=tuple(DeviceRef(d.device_id) for d in devices),
    )
    return assembler.sign(ASSEMBLY, f"node:{serial}", assembly.to_json())


def _attestation(
    operator: Org, serial: str, nonce: bytes, devices: Sequence[Device], round_: int
) -> bytes:
    result = AttestationResult(
        server_serial=serial,
        nonce=nonce.hex(),
        status=EarStatus.AFFIRMING,
        trustworthiness=(),
        devices=tuple(
            DeviceResult(d.device_id, EarStatus.AFFIRMING, (), evidence=d.evidence[round_])
            for d in devices
        ),
    )
    return operator.sign(ATTESTATION, f"node:{serial}", result.to_json())


# -- ceilings ------------------------------------------------------------------------------------


def _p384_ceiling(count: int) -> float:
    """Seconds per bare P-384/SHA-384 check over a message the size of device evidence."""
    key = ec.generate_private_key(ec.SECP384R1())
    public = key.public_key()
    message = evidence_message(b"\x07" * 32, (MEASUREMENT,))
    algorithm = ec.ECDSA(hashes.SHA384())
    signature = key.sign(message, algorithm)
    gc.collect()
    start = time.perf_counter()
    for _ in range(count):
        public.verify(signature, message, algorithm)
    return (time.perf_counter() - start) / count


def _statement_verifiers(
    statements: Sequence[bytes], service: TransparencyService
) -> dict[str, Verifier]:
    """issuer -> the key its statements verify with (found once, as a cached chain's is)."""
    validator = ChainValidator()
    found: dict[str, Verifier] = {}
    for data in statements:
        statement = parse_statement(data, max_size=len(data))
        if statement.issuer in found:
            continue
        if statement.issuer == SERVICE:
            found[statement.issuer] = service.keys[statement.kid or b""]
        else:
            org = service.registry.for_issuer(statement.issuer)
            when = dt.datetime.fromtimestamp(statement.issued_at or 0, dt.UTC)
            found[statement.issuer] = issuer_key(statement, org, validator, now=when)
    return found


Check = Callable[[], object]


def _implied_checks(statements: Sequence[bytes], device_ca: x509.Certificate) -> list[list[Check]]:
    """Per statement, the bare signature checks verifying it implies beyond its own COSE
    signature: each manifest identity's certificate (by the device CA), each attestation
    device's evidence signature, and each alias certificate the first time it is seen.
    Prepared outside the timing; each is one ``cryptography`` call."""
    ca_key = device_ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    identities: dict[str, x509.Certificate] = {}
    aliases: set[bytes] = set()
    checks: list[list[Check]] = []
    for data in statements:
        statement = parse_statement(data, max_size=len(data))
        doc = json.loads(statement.payload) if statement.payload_hash_alg is None else {}
        kind = KINDS.get(str(statement.content_type))
        mine: list[Check] = []
        if kind is not None and kind.name == "device-manifest":
            for device in doc["devices"]:
                cert = x509.load_der_x509_certificate(base64.b64decode(device["chain"][0]))
                identities[_spki_id(cert)] = cert
                mine.append(_cert_check(ca_key, cert))
        elif kind is not None and kind.name == "attestation-result":
            nonce = bytes.fromhex(doc["nonce"])
            for device in doc["devices"]:
                evidence = device["evidence"]
                signer = identities[device["device_id"]]
                for der in reversed([base64.b64decode(c) for c in evidence["chain"]]):
                    alias = x509.load_der_x509_certificate(der)
                    if der not in aliases:
                        aliases.add(der)
                        key = signer.public_key()
                        assert isinstance(key, ec.EllipticCurvePublicKey)
                        mine.append(_cert_check(key, alias))
                    signer = alias
                measurements = tuple(
                    ComponentMeasurement(m["component"], DigestAlgorithm(m["alg"]), m["digest"])
                    for m in evidence["measurements"]
                )
                message = evidence_message(nonce, measurements)
                signature = base64.b64decode(evidence["signature"])
                verifier = SigningKey(signer.public_key())
                mine.append(functools.partial(verifier.verifies, signature, message))
        checks.append(mine)
    return checks


def _spki_id(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _cert_check(key: ec.EllipticCurvePublicKey, cert: x509.Certificate) -> Check:
    algorithm = cert.signature_hash_algorithm
    assert algorithm is not None
    signature, tbs = cert.signature, cert.tbs_certificate_bytes
    return lambda: key.verify(signature, tbs, ec.ECDSA(algorithm))


def _statement_ceiling(
    statements: Sequence[bytes], verifiers: dict[str, Verifier], implied: list[list[Check]]
) -> float:
    """Seconds to parse and check every statement of the mix with every signature it
    carries (identity certificates, evidence), bare, one thread."""
    gc.collect()
    start = time.perf_counter()
    for data, checks in zip(statements, implied, strict=True):
        statement = parse_statement(data, max_size=len(data))
        statement.message.verify(verifiers[statement.issuer])
        for check in checks:
            check()
    return time.perf_counter() - start


# -- the service ---------------------------------------------------------------------------------


@dataclass
class Service:
    """The pieces ``service_app`` wires, over SQLite files in one directory."""

    store: SQLiteStore
    index: SQLiteIndex
    sequencer: Sequencer
    ledger: ProvenanceLedger
    service: TransparencyService
    checkpoints: CheckpointSigner

    @classmethod
    def make(cls, root: Path, policy: ProvenancePolicy) -> Service:
        store = SQLiteStore(root / "log.db", synchronous="FULL")
        index = SQLiteIndex(root / "provenance.db")
        checkpoints = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
        sequencer = Sequencer(store, signer=checkpoints)
        holder: list[TransparencyService] = []

        def org_of(issuer: str) -> str | None:
            return holder[0].registry.name_of(issuer)

        ledger = ProvenanceLedger(
            index, statement=store.get_statement, org_of=org_of, policy=policy
        )
        service = TransparencyService(
            store=store,
            sequencer=sequencer,
            signer=EcdsaSigner.generate(),
            issuer=SERVICE,
            max_statement_size=STATEMENT_LIMIT,
            payload_rules=ledger.rules(),
        )
        holder.append(service)
        return cls(store, index, sequencer, ledger, service, checkpoints)

    async def start(self) -> None:
        await self.sequencer.start()
        await self.service.start()
        await self.ledger.start(self.sequencer.reader)

    async def close(self) -> None:
        try:
            await self.service.close()
            await self.ledger.close(self.sequencer.reader)
        finally:
            await self.sequencer.close()

    async def indexed(self, size: int) -> None:
        """Until the index has applied the log's first ``size`` entries."""
        while self.index.applied_size() < size:
            self.ledger.poke()
            await asyncio.sleep(0.002)

    def reader(self) -> LogReader:
        """A reader with a cold cache, as a freshly started auditor has."""
        return LogReader(self.store, origin=ORIGIN, verifiers=[self.checkpoints.verifier])


async def _register_all(
    service: TransparencyService,
    statements: Sequence[bytes],
    tasks: int,
    report: Report,
    label: str,
) -> list[int]:
    """Register every statement from ``tasks`` concurrent tasks; their indexes, in order."""
    indexes = [-1] * len(statements)
    todo = iter(enumerate(statements))
    done = 0

    async def worker() -> None:
        nonlocal done
        for position, data in todo:
            indexes[position] = (await service.register(data)).index
            done += 1
            report(label, done, len(statements))

    await asyncio.gather(*(worker() for _ in range(min(tasks, len(statements)))))
    return indexes


def _check_entries(index: SQLiteIndex, positions: Sequence[int], kind: str) -> int:
    """How many of the log entries at ``positions`` the index applied as ``kind``."""
    good = 0
    wanted = sorted(positions)
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        by_index = {e.index: e for e in index.entries(chunk[0], chunk[-1] + 1)}
        good += sum(
            1
            for i in chunk
            if i in by_index and by_index[i].kind == kind and by_index[i].outcome == "applied"
        )
    return good


# -- the fsck log --------------------------------------------------------------------------------


def _fsck(path: Path, entries: int, seed: int, report: Report) -> tuple[float, int]:
    """Build a log of ``entries`` 32-byte entries (as a service's leaf entries), then time
    ``LogReader.audit`` over it. Returns (seconds, entries audited)."""
    store = SQLiteStore(path, synchronous="FULL")
    signer = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    config = SequencerConfig(
        max_batch=FSCK_BATCH, max_delay=0.005, max_pending=FSCK_BATCH * (FSCK_IN_FLIGHT + 1)
    )
    prefix = f"{seed}/fsck/".encode()

    async def build() -> None:
        async with Sequencer(store, signer=signer, config=config) as seq:
            pending: list[asyncio.Future[list[int]]] = []
            for pos in range(0, entries, FSCK_BATCH):
                chunk = [
                    hashlib.sha256(prefix + i.to_bytes(8, "big")).digest()
                    for i in range(pos, min(entries, pos + FSCK_BATCH))
                ]
                pending.append(asyncio.ensure_future(seq.add_many(chunk)))
                if len(pending) >= FSCK_IN_FLIGHT:
                    await pending.pop(0)
                report("fsck log built", pos + len(chunk), entries)
            for fut in pending:
                await fut

    try:
        asyncio.run(build())
        reader = LogReader(store, origin=ORIGIN, verifiers=[signer.verifier])
        gc.collect()
        start = time.perf_counter()
        checkpoint = reader.audit(progress=lambda done, total: report("fsck", done, total))
        elapsed = time.perf_counter() - start
    finally:
        store.close()
    assert checkpoint is not None
    assert checkpoint.size == entries
    return elapsed, checkpoint.size


# -- the run -------------------------------------------------------------------------------------


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def _quiet(_what: str, _done: int, _total: int) -> None:
    pass


@dataclass(frozen=True)
class Params:
    """What one run does (the options of ``sealtrail bench provenance``)."""

    manifests: int = 3
    devices: int = 10_000  # per manifest
    servers: int = 250
    rounds: int = 4  # attestations per server
    fsck_entries: int = 1_000_000
    p384_checks: int = P384_CHECKS  # per pass of the P-384 ceiling
    workers: int = 0  # processes that make the devices (0: one per core)
    seed: int = 1


def run(*, report: Report, **options: int) -> dict[str, Any]:
    """One run; ``options`` are :class:`Params` fields."""
    params = Params(**options)
    total = params.manifests * params.devices
    if params.servers * ROTS_PER_SERVER > total:
        raise ValueError(
            f"{params.servers} servers of {ROTS_PER_SERVER} roots of trust need at least "
            f"{params.servers * ROTS_PER_SERVER} devices; the manifests hold {total}"
        )
    return _run(params, report)


def _run(params: Params, report: Report) -> dict[str, Any]:
    manifests, devices, servers, rounds = (
        params.manifests,
        params.devices,
        params.servers,
        params.rounds,
    )
    seed = params.seed
    workers = params.workers or os.cpu_count() or 1
    figures: dict[str, float] = {}
    p384_passes: list[float] = []
    setup_start = time.perf_counter()

    # Everything is made and signed before any timing starts.
    ca_key, device_ca = _device_ca()
    made = _generate(
        ca_key, manifests * devices, servers * ROTS_PER_SERVER, rounds, seed, workers, report
    )
    maker = Org.make(MAKER, ["device-maker"], [MANIFEST, RELEASE])
    assembler = Org.make(ASSEMBLER, ["assembler"], [ASSEMBLY])
    operator = Org.make(OPERATOR, ["operator"], [ATTESTATION])
    manifest_statements = [
        _manifest(maker, f"batch-{seed}-{m}", made[m * devices : (m + 1) * devices])
        for m in range(manifests)
    ]
    report("statements signed", manifests, manifests)
    racks = [made[s * ROTS_PER_SERVER : (s + 1) * ROTS_PER_SERVER] for s in range(servers)]
    setup_statements = [_release(maker)] + [
        _assembly(assembler, _server_serial(seed, s), rack) for s, rack in enumerate(racks)
    ]
    attestation_statements = [
        _attestation(operator, _server_serial(seed, s), _nonce(seed, s, r), rack, r)
        for r in range(rounds)
        for s, rack in enumerate(racks)
    ]
    setup_seconds = time.perf_counter() - setup_start

    with tempfile.TemporaryDirectory(prefix="sealtrail-bench-") as tmp:
        root = Path(tmp)
        policy = ProvenancePolicy()
        svc = Service.make(root, policy)

        async def registrations() -> dict[str, Any]:
            await svc.start()
            try:
                await svc.service.put_organization(
                    maker.record(max_size=STATEMENT_LIMIT, device_ca=device_ca)
                )
                await svc.service.put_organization(assembler.record(max_size=64 * 1024))
                await svc.service.put_organization(operator.record(max_size=64 * 1024))
                await svc.indexed(svc.sequencer.reader.size())

                # Identities: every manifest submitted at once; until the index applied them.
                p384_passes.append(_p384_ceiling(params.p384_checks))
                gc.collect()
                start = time.perf_counter()
                manifest_indexes = await _register_all(
                    svc.service, manifest_statements, manifests, report, "manifests registered"
                )
                await svc.indexed(max(manifest_indexes) + 1)
                identities_s = time.perf_counter() - start

                # Servers: a firmware release and one assembly per server (not timed).
                setup_indexes = await _register_all(
                    svc.service, setup_statements, TASKS, _quiet, "assemblies"
                )
                await svc.indexed(max(setup_indexes) + 1)

                # Attestations, TASKS at a time; until the index applied them.
                p384_passes.append(_p384_ceiling(params.p384_checks))
                gc.collect()
                start = time.perf_counter()
                attestation_indexes = await _register_all(
                    svc.service, attestation_statements, TASKS, report, "attestations registered"
                )
                await svc.indexed(max(attestation_indexes) + 1)
                attestations_s = time.perf_counter() - start
                p384_passes.append(_p384_ceiling(params.p384_checks))
                return {
                    "identities_s": identities_s,
                    "attestations_s": attestations_s,
                    "manifest_indexes": manifest_indexes,
                    "setup_indexes": setup_indexes,
                    "attestation_indexes": attestation_indexes,
                }
            finally:
                await svc.close()

        timed = asyncio.run(registrations())
        index = svc.index
        devices_indexed = len(index.rows("device"))
        attested = index.rows("attestation")
        checks: dict[str, Any] = {
            "manifests_applied": _check_entries(
                index, timed["manifest_indexes"], "device-manifest"
            ),
            "devices_indexed": devices_indexed,
            "setup_applied": _check_entries(index, timed["setup_indexes"], "firmware-release")
            + _check_entries(index, timed["setup_indexes"], "assembly"),
            "attestations_applied": _check_entries(
                index, timed["attestation_indexes"], "attestation-result"
            ),
            "servers_affirming": sum(
                1 for _, value in attested if json.loads(value)["status"] == "affirming"
            ),
        }
        figures["rots_per_server"] = ROTS_PER_SERVER
        figures["identities_ingested_per_s"] = _rate(manifests * devices, timed["identities_s"])
        figures["attestations_per_s"] = _rate(len(attestation_statements), timed["attestations_s"])
        figures["attestation_rots_per_s"] = round(
            figures["attestations_per_s"] * ROTS_PER_SERVER, 1
        )

        # The statement ceiling, over the statements of this run's log, in log order.
        reader = svc.reader()
        size = reader.size()
        mix = []
        for first in range(0, size, 1024):
            for leaf in reader.entries(first, min(size, first + 1024)):
                record = svc.store.get_statement(leaf)
                assert record is not None
                mix.append(record.body)
        verifiers = _statement_verifiers(mix, svc.service)
        implied = _implied_checks(mix, device_ca)
        passes = []
        for done in range(STATEMENT_PASSES):
            report("statement ceiling", done, STATEMENT_PASSES)
            passes.append(_statement_ceiling(mix, verifiers, implied))
        figures["ceiling_statement_verifications_per_s"] = _rate(
            len(mix), statistics.median(passes)
        )

        # The audit: the whole log, every statement, chain and evidence signature.
        gc.collect()
        start = time.perf_counter()
        audit = audit_log(
            svc.reader(),
            svc.store.get_statement,
            index,
            issuer=SERVICE,
            service_keys=svc.service.keys,
            policy=policy,
            progress=lambda what, done, total: report(f"audit ({what})", done, total),
        )
        audit_s = time.perf_counter() - start
        figures["audit_entries_per_s"] = _rate(audit.entries, audit_s)
        alias_devices = sum(1 for d in made[: servers * ROTS_PER_SERVER] if d.evidence[0].chain)
        signatures = (
            len(mix)  # every statement
            + manifests * devices  # every identity's certificate, by the device CA
            + len(attestation_statements) * ROTS_PER_SERVER  # every evidence signature
            + alias_devices  # every alias certificate, once per audit
        )
        figures["audit_signatures_per_s"] = _rate(signatures, audit_s)
        checks.update(
            audit_entries=audit.entries,
            audit_statements_verified=audit.statements_verified,
            audit_findings=len(audit.findings),
            audit_first_findings=[str(f) for f in audit.findings[:5]],
            log_size=size,
        )
        svc.index.close()
        svc.store.close()

        p384_passes.append(_p384_ceiling(params.p384_checks))
        figures["ceiling_p384_verifications_per_s"] = round(1 / statistics.median(p384_passes), 1)

        fsck_s, fsck_size = _fsck(root / "fsck.db", params.fsck_entries, seed, report)
        figures["fsck_entries_per_s"] = _rate(fsck_size, fsck_s)

    p384 = figures["ceiling_p384_verifications_per_s"]
    figures["identities_vs_p384"] = round(figures["identities_ingested_per_s"] / p384, 3)
    figures["attestation_rots_vs_p384"] = round(figures["attestation_rots_per_s"] / p384, 3)
    figures["audit_vs_statement_ceiling"] = round(
        figures["audit_entries_per_s"] / figures["ceiling_statement_verifications_per_s"], 3
    )
    figures["audit_signatures_vs_p384"] = round(figures["audit_signatures_per_s"] / p384, 3)
    order = [
        "ceiling_p384_verifications_per_s",
        "ceiling_statement_verifications_per_s",
        "identities_ingested_per_s",
        "attestations_per_s",
        "rots_per_server",
        "attestation_rots_per_s",
        "audit_entries_per_s",
        "audit_signatures_per_s",
        "fsck_entries_per_s",
        "identities_vs_p384",
        "attestation_rots_vs_p384",
        "audit_vs_statement_ceiling",
        "audit_signatures_vs_p384",
    ]
    figures = {name: figures[name] for name in order}
    sizes = {
        "manifest": round(statistics.mean(map(len, manifest_statements))),
        "attestation": round(statistics.mean(map(len, attestation_statements))),
        "mix": round(statistics.mean(map(len, mix))),
    }
    return {
        "benchmark": "provenance",
        "params": {
            "manifests": manifests,
            "devices_per_manifest": devices,
            "servers": servers,
            "rots_per_server": ROTS_PER_SERVER,
            "attestation_rounds_per_server": rounds,
            "attestations": len(attestation_statements),
            "statements": {
                "log_entries": checks["log_size"],
                "mean_bytes": sizes,
                "signing": "ES256 leaf under each organization's root CA (x5chain)",
            },
            "devices": "P-384 identity certificates (SHA-384) issued by the maker's device CA; "
            "evidence signed with P-384 by the identity key (even devices) or by an alias "
            "key it certified (odd devices)",
            "attestation_tasks": TASKS,
            "fsck_entries": params.fsck_entries,
            "p384_checks_per_pass": params.p384_checks,
            "statement_ceiling_passes": STATEMENT_PASSES,
            "sqlite_synchronous": "FULL",
            "generation_workers": workers,
            "verification_workers": verification_workers(),
            "setup_seconds": round(setup_seconds, 1),
            "seed": seed,
        },
        "machine": {"cpus": os.cpu_count()},
        "limits": {
            "max_statement_size": STATEMENT_LIMIT,
            "maker_policy_max_size": STATEMENT_LIMIT,
            "default_max_statement_size": DEFAULT_MAX_STATEMENT_SIZE,
            "note": "as `sealtrail serve` accepts by default ([server] max_statement_size), "
            "with the maker's policy max_size raised to match",
        },
        "figures": figures,
        "ceiling_passes": {
            "p384_verifications_per_s": [round(1 / s, 1) for s in p384_passes],
            "statement_verifications_per_s": [_rate(len(mix), s) for s in passes],
        },
        "targets": TARGETS,
        "targets_met": {name: figures[name] >= target for name, target in TARGETS.items()},
        "checks": checks,
    }
