"""Attacks on a supply chain, each run against a live service, and what Sealtrail reports.

Every scenario is a function of an :class:`AttackLab` (the fleet's organizations, clients
of the running service, the lab's own servers) that plays the attacker, then returns an
:class:`AttackResult`: its name, the finding Sealtrail **must** report (a stable error
code, with the details that name what was found), what it reported, and whether the two
are the same. The docstring of each scenario says what the attacker does and what
Sealtrail must report; the codes are those of docs/provenance.md ("The rules that need
the log's history", "Evidence and its appraisal"), docs/scitt.md and docs/passports.md.

A refused statement changes nothing, so the scenarios that are refused can share the lab's
servers. The lab (:meth:`AttackLab.prepare`) builds, with the fleet's organizations and
through the same HTTP API, a *victim* server taken all the way to production (a Caliptra-
like RoT and a TPM-like device on its motherboard, a blade with two Cerberus-like ones),
a spare blade, a server left at ``arrived`` (for the stale attestation) and two servers
assembled but not yet shipped (for the custody attacks).

On a service with ``[auth] required``, the attacker sends each statement with the token of
the user of the organization it is issued for (a stolen token, or an insider's), so that
what refuses it is the ledger's provenance checks, never a missing token; challenges are
asked for with the operator's token, and views and passports are read with an auditor's
(:class:`FleetTokens`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from sealtrail.client import Client, RegisteredStatement
from sealtrail.config import Config, load_config
from sealtrail.errors import Error, RetryLater, VerificationError
from sealtrail.log import LogReader
from sealtrail.note import NoteVerifier
from sealtrail.provenance import (
    PASSPORT_TYPE,
    Algorithm,
    ComplianceState,
    CustodyEvent,
    DeviceIdentity,
    DeviceKind,
    EarStatus,
    Finding,
    Node,
    NodeType,
    Payload,
    ProvenancePolicy,
    audit_log,
    parse_attestation_result,
    verify_passport,
)
from sealtrail.scitt import (
    add_receipts,
    decode_key_set,
    parse_statement,
    split_transparent,
    verify_transparent_statement,
)
from sealtrail.storage import open_index, open_store

from ._actors import Actor, Answer, DeviceMaker
from ._devices import RotDevice
from ._fleet import Fleet, Progress, RackPlan, ServerPlan, build_server
from ._journey import FleetTokens, JourneyReport, issue_tokens, run_journey

__all__ = [
    "ATTACKS",
    "AttackLab",
    "AttackResult",
    "run_attacks",
]

#: The provenance policy's default maximum attestation age, used without a data directory.
DEFAULT_MAX_AGE = 24 * 3600
#: How much older than the policy's maximum age the stale attestation is, in seconds.
STALE_BY = 3600
#: Seconds to wait for the provenance index or a passport.
WAIT = 30.0
S = ComplianceState


@dataclass(frozen=True, slots=True)
class AttackResult:
    """One scenario: what Sealtrail must report, what it reported, whether it caught it."""

    name: str
    expected: str
    reported: str
    caught: bool

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def finding(code: str, details: Sequence[str] = ()) -> str:
    """A finding as the results show it: ``code`` or ``code (detail, detail)``."""
    return f"{code} ({', '.join(details)})" if details else code


def _result(name: str, expected: str, reported: str) -> AttackResult:
    return AttackResult(name, expected, reported, reported == expected)


_TRAILING_REASONS = re.compile(r"\(([a-z0-9:, -]+)\)\s*$")


def _reasons(message: str) -> list[str]:
    """The reason codes a refusal names at its end: ``... (measurement-unknown)``."""
    match = _TRAILING_REASONS.search(message)
    return [r.strip() for r in match.group(1).split(",")] if match else []


class AttackLab:
    """The attacker's workbench: the fleet's organizations, the live service, lab servers.

    ``data_dir`` is the service's data directory, for the one insider scenario that edits
    its database (on a copy; without it that scenario is left out). ``tokens`` are the
    fleet's users' (each organization's and an auditor's); without them the lab sends no
    token, which only a service with ``[auth] required = false`` takes. Blocking: use it
    outside a running event loop (:meth:`prepare` runs its own).
    """

    def __init__(
        self,
        fleet: Fleet,
        url: str,
        *,
        data_dir: Path | None = None,
        tokens: FleetTokens | None = None,
    ) -> None:
        self.fleet = fleet
        self.url = url
        self.data_dir = data_dir
        self.config: Config | None = load_config(data_dir) if data_dir is not None else None
        self.tokens = tokens if tokens is not None else FleetTokens()
        #: The auditor's client: views, passports, the checkpoint and the service's keys.
        self.client = Client(url, token=self.tokens.auditor, timeout=WAIT)
        self._clients: dict[str, Client] = {}
        try:
            self.service_keys = self.client.service_keys()
        except BaseException:
            self.client.close()
            raise
        self.prefix = f"{fleet.namespace}-lab"
        self._counter = 0
        self.victim = self._server("victim", rots=4)
        self.stale = self._server("late", rots=1)
        self.sealed = self._server("sealed", rots=1)
        self.boxed = self._server("boxed", rots=1)
        spare = [self._make(DeviceKind.CERBERUS, None) for _ in range(2)]
        self.spare_blade = (f"{self.prefix}-spare-blade", tuple(spare))
        self.journeys: dict[str, JourneyReport] = {}

    @property
    def max_attestation_age(self) -> int:
        return self.config.max_attestation_age if self.config is not None else DEFAULT_MAX_AGE

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self.client.close()

    def client_of(self, actor: Actor) -> Client:
        """A client holding the token of ``actor``'s organization's user (none without one).
        An impostor in a genuine organization's name gets that organization's token."""
        client = self._clients.get(actor.name)
        if client is None:
            client = Client(self.url, token=self.tokens.of(actor), timeout=WAIT)
            self._clients[actor.name] = client
        return client

    def __enter__(self) -> AttackLab:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- building the lab -------------------------------------------------------------------

    def _make(self, kind: DeviceKind, algorithm: Algorithm | None) -> RotDevice:
        self._counter += 1
        serial = f"{self.prefix}-{kind.value}-{self._counter:03d}"
        return self.fleet.makers[kind].manufacture(serial, algorithm=algorithm)

    def _server(self, label: str, *, rots: int) -> RackPlan:
        rack = f"{self.prefix}-{label}-rack"
        server = build_server(self._make, f"{self.prefix}-{label}", rack=rack, rots=rots)
        seals = (f"{self.prefix}-{label}-seal-a", f"{self.prefix}-{label}-seal-b")
        return RackPlan(rack, (server,), f"{self.prefix}-{label}-ship", seals, "Lab dock")

    def _fleet(self, rack: RackPlan) -> Fleet:
        return dataclasses.replace(self.fleet, racks=(rack,))

    def prepare(self) -> None:
        """Register the lab's servers (through the same HTTP API as the fleet)."""

        async def build() -> list[JourneyReport]:
            journey = functools.partial(
                run_journey, url=self.url, tokens=self.tokens, onboard=False, releases=False
            )
            return list(
                await asyncio.gather(
                    journey(self._fleet(self.victim)),
                    journey(self._fleet(self.stale), until="arrived"),
                    *(
                        journey(self._fleet(rack), until="racks")
                        for rack in (self.sealed, self.boxed)
                    ),
                )
            )

        reports = asyncio.run(build())
        for rack, report in zip(
            (self.victim, self.stale, self.sealed, self.boxed), reports, strict=True
        ):
            self.journeys[rack.servers[0].serial] = report
        blade, devices = self.spare_blade
        maker = self.fleet.makers[DeviceKind.CERBERUS]
        self.register(
            maker, maker.manifest(f"{self.prefix}-spares", devices), f"batch/{self.prefix}-spares"
        )
        asm = self.fleet.assembler
        self.register(asm, asm.assemble(Node(NodeType.BLADE, blade), devices), blade)

    # -- what the scenarios share -----------------------------------------------------------

    def register(
        self, actor: Actor, payload: Payload, about: str, *, issued_at: int | None = None
    ) -> RegisteredStatement:
        data = actor.sign(payload, about=about, issued_at=issued_at)
        client = self.client_of(actor)
        for _ in range(20):
            try:
                return client.register(data)
            except RetryLater as exc:
                time.sleep(min(max(exc.retry_after or 0.1, 0.05), 2.0))
        return client.register(data)

    def attempt(
        self, actor: Actor, payload: Payload, about: str, *, issued_at: int | None = None
    ) -> tuple[str, str]:
        """Register a statement the attacker hopes gets in: ``(code, message)`` of the
        refusal, or ``("accepted", ...)`` if the service took it."""
        try:
            registered = self.register(actor, payload, about, issued_at=issued_at)
        except Error as exc:
            return exc.code, exc.message
        return "accepted", f"registered as entry {registered.entry_id}"

    def victim_server(self) -> ServerPlan:
        return self.victim.servers[0]

    def wait_for_index(self) -> int:
        """Wait until the provenance index has applied the whole log; its size."""
        deadline = time.monotonic() + WAIT
        while True:
            size = int(self.client.checkpoint().split(b"\n")[1])
            applied = int(self.client.node(self.victim_server().serial)["size"])
            if applied >= size:
                return size
            if time.monotonic() > deadline:
                raise RetryLater(
                    "the provenance index did not catch up with the log", retry_after=1.0
                )
            time.sleep(0.05)

    def passport(self, serial: str) -> bytes:
        """A server's passport, from the service's route (503 waited out)."""
        self.wait_for_index()
        deadline = time.monotonic() + WAIT
        url = f"{self.url.rstrip('/')}/provenance/v1/passports/{serial}"
        headers = {"Accept": PASSPORT_TYPE}
        if self.tokens.auditor is not None:
            headers["Authorization"] = f"Bearer {self.tokens.auditor}"
        while True:
            reply = httpx.get(url, headers=headers, timeout=WAIT)
            if reply.status_code == 200:
                return reply.content
            if reply.status_code != 503 or time.monotonic() > deadline:
                raise Error(
                    f"passport of {serial}: HTTP {reply.status_code}", code="passport-unavailable"
                )
            time.sleep(0.2)


# -- the scenarios ------------------------------------------------------------------------

Scenario = Callable[[AttackLab], AttackResult]
ATTACKS: list[tuple[str, Scenario]] = []


def _scenario(name: str) -> Callable[[Scenario], Scenario]:
    def register(function: Scenario) -> Scenario:
        ATTACKS.append((name, function))
        return function

    return register


def _grey_maker(
    lab: AttackLab, name: str, kind: DeviceKind, *, issuer: str | None = None
) -> DeviceMaker:
    """A maker the ledger never onboarded, with its own CAs and the genuine firmware."""
    genuine = lab.fleet.makers[kind]
    return DeviceMaker(name, kind=kind, firmware=genuine.firmware, issuer=issuer)


@_scenario("rogue-device")
def rogue_device(lab: AttackLab) -> AttackResult:
    """A grey-market Cerberus-like device, from a maker the ledger does not know, is fitted
    into a blade. Sealtrail must refuse the assembly record: ``assembly-unknown-device``
    (no registered manifest holds the device)."""
    rogue = _grey_maker(lab, f"{lab.prefix}-greymarket", DeviceKind.CERBERUS)
    device = rogue.manufacture(f"{lab.prefix}-rogue-1")
    blade = Node(NodeType.BLADE, f"{lab.prefix}-rogue-blade")
    code, _ = lab.attempt(
        lab.fleet.assembler, lab.fleet.assembler.assemble(blade, [device]), blade.serial
    )
    return _result("rogue-device", "assembly-unknown-device", code)


@_scenario("cloned-identity")
def cloned_identity(lab: AttackLab) -> AttackResult:
    """A counterfeit part carries a copy of a genuine device's identity certificate and
    turns up in the maker's next batch under a new serial. Sealtrail must refuse the
    manifest: ``manifest-cloned-device`` (the identity key is already registered)."""
    genuine = lab.victim_server().blades[0][1][0]
    clone = DeviceIdentity(
        kind=genuine.kind,
        serial=f"{lab.prefix}-clone-1",
        chain=genuine.identity().chain,
        algorithm=genuine.algorithm,
    )
    maker = lab.fleet.makers[genuine.kind]
    batch = f"{lab.prefix}-clones"
    code, _ = lab.attempt(maker, maker.manifest(batch, [clone]), f"batch/{batch}")
    return _result("cloned-identity", "manifest-cloned-device", code)


@_scenario("unregistered-device-ca")
def unregistered_device_ca(lab: AttackLab) -> AttackResult:
    """The maker's manifest lists a device whose identity was issued by a factory CA it
    never registered. Sealtrail must refuse the manifest: ``manifest-device-untrusted``
    (the chain does not lead to the maker's registered device CA)."""
    shadow = _grey_maker(lab, f"{lab.prefix}-shadow-fab", DeviceKind.CALIPTRA)
    device = shadow.manufacture(f"{lab.prefix}-shadow-1")
    maker = lab.fleet.makers[DeviceKind.CALIPTRA]
    batch = f"{lab.prefix}-shadow"
    code, _ = lab.attempt(maker, maker.manifest(batch, [device]), f"batch/{batch}")
    return _result("unregistered-device-ca", "manifest-device-untrusted", code)


@_scenario("forged-manifest")
def forged_manifest(lab: AttackLab) -> AttackResult:
    """An impostor signs a manifest in the maker's name (its organization, issuer and
    subject) with a key and certificate of its own, and sends it with the maker's token
    (stolen). Sealtrail must refuse the statement: ``chain-untrusted`` (the signing
    certificate does not chain to the maker's anchors)."""
    genuine = lab.fleet.makers[DeviceKind.CALIPTRA]
    impostor = _grey_maker(lab, genuine.name, DeviceKind.CALIPTRA, issuer=genuine.issuer)
    device = impostor.manufacture(f"{lab.prefix}-forged-1")
    batch = f"{lab.prefix}-forged"
    code, _ = lab.attempt(impostor, impostor.manifest(batch, [device]), f"batch/{batch}")
    return _result("forged-manifest", "chain-untrusted", code)


def _claimed_attestation(lab: AttackLab, answers: list[Answer], nonce: bytes) -> list[str]:
    """A verifier that was fooled (or lies) records every device as affirming; the
    refusal's code and the reasons it names."""
    op = lab.fleet.operator
    serial = lab.victim_server().serial
    payload = op.attestation(serial, answers, nonce, claim=EarStatus.AFFIRMING)
    code, message = lab.attempt(op, payload, serial)
    return [code, *(_reasons(message) if code == "attestation-result-mismatch" else [])]


def _nonce(lab: AttackLab, serial: str) -> bytes:
    """A fresh nonce for the server, from the service's challenge route (as the operator)."""
    (nonce,) = lab.client_of(lab.fleet.operator).challenge(serial)
    return nonce


@_scenario("swapped-blade")
def swapped_blade(lab: AttackLab) -> AttackResult:
    """In the data center, the victim server's blade is swapped for another blade (its
    devices genuine and registered, but installed elsewhere), and a verifier that looks
    only at signatures records the server as affirming. Sealtrail appraises the evidence
    against the recorded assembly and must refuse it: ``attestation-result-mismatch
    (device-not-in-assembly)``."""
    server = lab.victim_server()
    present = [*server.board_devices, *lab.spare_blade[1]]
    nonce = _nonce(lab, server.serial)
    code, *reasons = _claimed_attestation(lab, lab.fleet.operator.challenge(present, nonce), nonce)
    expected = finding("attestation-result-mismatch", ["device-not-in-assembly"])
    return _result("swapped-blade", expected, finding(code, reasons))


@_scenario("tampered-firmware")
def tampered_firmware(lab: AttackLab) -> AttackResult:
    """The victim's Caliptra-like RoT boots a runtime image with one byte changed (its DICE
    runtime alias key and certificate change with it), and the verifier records the server
    as affirming. Sealtrail must refuse the result: ``attestation-result-mismatch
    (measurement-unknown)`` (no registered release holds the measurement)."""
    server = lab.victim_server()
    caliptra = server.board_devices[0]
    fmc, runtime = caliptra.firmware
    caliptra.boot([fmc, runtime.tampered()])
    try:
        nonce = _nonce(lab, server.serial)
        code, *reasons = _claimed_attestation(
            lab, lab.fleet.operator.challenge(server.devices, nonce), nonce
        )
    finally:
        caliptra.boot([fmc, runtime])
    expected = finding("attestation-result-mismatch", ["measurement-unknown"])
    return _result("tampered-firmware", expected, finding(code, reasons))


@_scenario("evidence-other-key")
def evidence_other_key(lab: AttackLab) -> AttackResult:
    """A counterfeit TPM answers the challenge in the genuine one's place: its evidence is
    signed with its own key, presented as the genuine device's. Sealtrail must refuse the
    result: ``attestation-result-mismatch (evidence-bad-signature)``."""
    server = lab.victim_server()
    genuine = server.board_devices[1]
    impostor = _grey_maker(lab, f"{lab.prefix}-fake-tpm", DeviceKind.TPM).manufacture(
        genuine.serial
    )
    nonce = _nonce(lab, server.serial)
    op = lab.fleet.operator
    answers = [
        Answer(genuine.device_id, genuine.identity_certificate(), impostor.attest(nonce))
        if a.device_id == genuine.device_id
        else a
        for a in op.challenge(server.devices, nonce)
    ]
    code, *reasons = _claimed_attestation(lab, answers, nonce)
    expected = finding("attestation-result-mismatch", ["evidence-bad-signature"])
    return _result("evidence-other-key", expected, finding(code, reasons))


@_scenario("replayed-nonce")
def replayed_nonce(lab: AttackLab) -> AttackResult:
    """A captured attestation (the victim's good one) is signed again and registered as a
    fresh result, to make the server look freshly attested. Sealtrail must refuse it with
    the log's history rule ``attestation-nonce-replayed``: a nonce is answered once, whoever
    issued it."""
    serial = lab.victim_server().serial
    earlier = lab.journeys[serial].registered[f"attestation {serial}"]
    statement = parse_statement(earlier.statement, max_size=len(earlier.statement))
    payload = parse_attestation_result(statement.payload)
    later = (statement.issued_at or int(time.time())) + 1
    code, _ = lab.attempt(lab.fleet.operator, payload, serial, issued_at=later)
    return _result("replayed-nonce", "attestation-nonce-replayed", code)


@_scenario("stale-attestation")
def stale_attestation(lab: AttackLab) -> AttackResult:
    """A server is moved to ``verified`` on an attestation older than the policy's maximum
    age (by an hour: it was recorded with a backdated issue time, which the operator's
    certificate, backdated by ``_actors.CERT_BACKDATE``, covers). Sealtrail must refuse the
    move: ``compliance-stale-attestation``."""
    server = lab.stale.servers[0]
    op = lab.fleet.operator
    nonce = _nonce(lab, server.serial)
    old = int(time.time()) - lab.max_attestation_age - STALE_BY
    result = op.attestation(server.serial, op.challenge(server.devices, nonce), nonce)
    lab.register(op, result, server.serial, issued_at=old)
    move = op.move(server.serial, S.ARRIVED, S.VERIFIED, "attestation affirming")
    code, _ = lab.attempt(op, move, server.serial)
    return _result("stale-attestation", "compliance-stale-attestation", code)


def _ship(
    lab: AttackLab, rack: RackPlan, received_contents: Sequence[str], seals: Sequence[str]
) -> list[str]:
    """Ship ``rack``, receive it as the carrier found it, then claim a passing arrival for
    its server: the refusal's code and the shipment's findings."""
    carrier, op, asm = lab.fleet.carrier, lab.fleet.operator, lab.fleet.assembler
    server = rack.servers[0]

    def custody(event: CustodyEvent, contents: Sequence[str], seals: Sequence[str]) -> Payload:
        return carrier.custody(
            event,
            shipment_id=rack.shipment_id,
            contents=contents,
            seals=seals,
            from_org=asm.name,
            to_org=op.name,
            place=rack.place,
        )

    shipped = custody(CustodyEvent.SHIPPED, [rack.serial], rack.seals)
    lab.register(carrier, shipped, rack.shipment_id)
    lab.register(op, op.move(server.serial, S.REGISTERED, S.IN_TRANSIT, "shipped"), server.serial)
    received = custody(CustodyEvent.RECEIVED, received_contents, seals)
    lab.register(carrier, received, rack.shipment_id)
    arrival = op.arrival(
        shipment_id=rack.shipment_id,
        server_serial=server.serial,
        devices=server.devices,
        nonces=lab.client_of(op).challenge(server.serial, len(server.devices)),
        claim_pass=True,
    )
    code, _ = lab.attempt(op, arrival, server.serial)
    lab.wait_for_index()  # the index follows the log within a fraction of a second
    findings = lab.client.shipment(rack.shipment_id)["findings"]
    return [code, *findings]


@_scenario("broken-seal")
def broken_seal(lab: AttackLab) -> AttackResult:
    """A rack arrives with one of its two seals broken (the carrier's received record lists
    only the intact one), and the operator records a passing arrival anyway. Sealtrail
    must refuse the arrival: ``arrival-contradicts-custody (seal-broken:<seal>)``."""
    rack = lab.sealed
    code, *found = _ship(lab, rack, [rack.serial], rack.seals[:1])
    expected = finding("arrival-contradicts-custody", [f"seal-broken:{rack.seals[1]}"])
    return _result("broken-seal", expected, finding(code, found))


@_scenario("changed-contents")
def changed_contents(lab: AttackLab) -> AttackResult:
    """The shipment is opened on the way and its contents replaced: another box arrives
    under intact seals, and the operator records a passing arrival for the shipped server.
    Sealtrail must refuse the arrival: ``arrival-contradicts-custody
    (contents-missing:<shipped>, contents-extra:<received>)``."""
    rack = lab.boxed
    other = f"{lab.prefix}-decoy"
    code, *found = _ship(lab, rack, [other], rack.seals)
    expected = finding(
        "arrival-contradicts-custody",
        [f"contents-missing:{rack.serial}", f"contents-extra:{other}"],
    )
    return _result("changed-contents", expected, finding(code, found))


@_scenario("database-row-edited")
def database_row_edited(lab: AttackLab) -> AttackResult:
    """An insider with access to the database edits ``provenance.db`` behind the log: the
    server whose seal was broken becomes ``production``. (The edit is made on a copy of
    the data directory's databases, so that the running service is left as it was.)
    ``sealtrail audit`` replays the log and must name the row: ``row
    compliance/<server>: edited behind the log``."""
    assert lab.config is not None, "run_attacks leaves this scenario out without data_dir"
    serial = lab.sealed.servers[0].serial
    expected = f"row compliance/{serial}: edited behind the log"
    lab.wait_for_index()
    with _copied_databases(lab.config) as (log_db, index_db):
        with contextlib.closing(sqlite3.connect(index_db)) as db, db:
            db.execute(
                "UPDATE idx_rows SET value = json_set(value, '$.state', 'production') "
                "WHERE tbl = 'compliance' AND key = ?",
                (serial,),
            )
        findings = _audit(lab, lab.config, log_db, index_db)
    reported = "; ".join(f"{f.where}: {f.what.split(':')[0]}" for f in findings) or "no finding"
    return _result("database-row-edited", expected, reported)


@contextlib.contextmanager
def _copied_databases(config: Config) -> Iterator[tuple[Path, Path]]:
    """Consistent copies (SQLite's online backup) of the log store and the index."""
    with tempfile.TemporaryDirectory(prefix="sealtrail-audit-") as tmp:
        copies = []
        for url, name in ((config.store_url, "log.db"), (config.index_url, "provenance.db")):
            source = _sqlite_path(config, url)
            target = Path(tmp) / name
            with (
                contextlib.closing(sqlite3.connect(source)) as src,
                contextlib.closing(sqlite3.connect(target)) as dst,
            ):
                src.backup(dst)
            copies.append(target)
        yield copies[0], copies[1]


def _sqlite_path(config: Config, url: str) -> Path:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise Error(f"the store {url!r} is not a SQLite file", code="sim-not-sqlite")
    path = Path(url[len(prefix) :])
    return path if path.is_absolute() else config.data_dir / path


def _audit(lab: AttackLab, config: Config, log_db: Path, index_db: Path) -> list[Finding]:
    store = open_store(str(log_db))
    index = open_index(str(index_db))
    try:
        reader = LogReader(
            store, origin=config.origin, verifiers=[NoteVerifier.parse(config.verifier_key())]
        )
        report = audit_log(
            reader,
            store.get_statement,
            index,
            issuer=config.service_issuer,
            service_keys=decode_key_set(lab.service_keys),
            policy=ProvenancePolicy(),
        )
    finally:
        index.close()
        store.close()
    return list(report.findings)


@_scenario("receipt-edited")
def receipt_edited(lab: AttackLab) -> AttackResult:
    """A receipt is altered in transit (one byte of its signature). Verifying the
    transparent statement offline with the service's keys must fail:
    ``receipt-bad-signature``."""
    serial = lab.victim_server().serial
    registered = lab.journeys[serial].registered[f"production {serial}"]
    good = registered.transparent_statement()
    try:
        verify_transparent_statement(good, service_keys=lab.service_keys)
    except VerificationError as exc:
        return _result(
            "receipt-edited", "receipt-bad-signature", f"the genuine one failed: {exc.code}"
        )
    statement, receipts = split_transparent(good)
    altered = bytearray(receipts[0])
    altered[-1] ^= 0x01  # the last byte of a COSE_Sign1 is its signature's
    try:
        verify_transparent_statement(
            add_receipts(statement, [bytes(altered)]), service_keys=lab.service_keys
        )
    except VerificationError as exc:
        return _result("receipt-edited", "receipt-bad-signature", exc.code)
    return _result("receipt-edited", "receipt-bad-signature", "verified")


@_scenario("passport-edited")
def passport_edited(lab: AttackLab) -> AttackResult:
    """The victim server's passport is exported, and on its way to the relying party its
    latest statement (the move to ``production``) is cut out, to hide the latest fact.
    Verifying it offline with the log's and the service's keys pinned must fail at the
    service's seal: ``passport-bad-seal``."""
    data = lab.passport(lab.victim_server().serial)
    log_key = lab.config.verifier_key() if lab.config is not None else None
    try:
        verify_passport(data, service_keys=lab.service_keys, log_key=log_key)
    except VerificationError as exc:
        return _result(
            "passport-edited", "passport-bad-seal", f"the genuine one failed: {exc.code}"
        )
    doc = json.loads(data)
    doc["statements"] = doc["statements"][:-1]
    edited = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        verify_passport(edited, service_keys=lab.service_keys, log_key=log_key)
    except VerificationError as exc:
        return _result("passport-edited", "passport-bad-seal", exc.code)
    return _result("passport-edited", "passport-bad-seal", "verified")


def run_attacks(
    fleet: Fleet,
    url: str,
    *,
    data_dir: Path | None = None,
    tokens: FleetTokens | None = None,
    admin_token: str | None = None,
    progress: Progress | None = None,
    only: Sequence[str] | None = None,
) -> list[AttackResult]:
    """Prepare the lab and run every scenario (or ``only`` those named) against the
    service at ``url``, in order. The fleet's organizations must be onboarded and its
    firmware released (its journey run). Without ``data_dir`` the database scenario is
    left out.

    The lab acts with ``tokens`` (each organization's user's and an auditor's); without
    them, ``admin_token`` makes (or updates) those users and issues each a new token
    (:func:`issue_tokens`); with neither it sends no token, which only a service with
    ``[auth] required = false`` takes. Blocking: call it outside a running event loop."""
    chosen = [
        (name, fn)
        for name, fn in ATTACKS
        if (only is None or name in only)
        and (data_dir is not None or name != "database-row-edited")
    ]
    if tokens is None and admin_token is not None:
        tokens = asyncio.run(issue_tokens(fleet, url, admin_token=admin_token, auditor=True))
    with AttackLab(fleet, url, data_dir=data_dir, tokens=tokens) as lab:
        if progress is not None:
            progress("lab", 0, len(chosen))
        lab.prepare()
        results = []
        for done, (_, scenario) in enumerate(chosen, start=1):
            results.append(scenario(lab))
            if progress is not None:
                progress("attacks", done, len(chosen))
    return results
