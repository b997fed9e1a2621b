"""Passports built from a real in-process service run, verified offline, and attacked.

The run: a maker's two manifests, two servers in one rack (a root of trust of the first
replaced before shipping, then moved into the second), the rack shipped, both servers
checked on arrival and attested, the first into production; a third server on its own.
Every passport is built against one checkpoint, so statements of one can be spliced into
another.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.errors import NotFound, VerificationError
from sealtrail.keys import ES256, Ed25519Signer, Signer, generate_signer
from sealtrail.log import CheckpointSigner, SignedCheckpoint
from sealtrail.merkle import Checkpoint
from sealtrail.provenance import (
    Arrival,
    Assembly,
    Challenge,
    Compliance,
    ComplianceState,
    CustodyEvent,
    DeviceManifest,
    DeviceRef,
    FirmwareRelease,
    Measurement,
    Node,
    NodeType,
    ProvenanceViews,
    Verdict,
)
from sealtrail.provenance._passport import (
    MAX_PASSPORT_SIZE,
    PASSPORT_TYPE,
    PassportSubject,
    _seal_digest,
    build_passport,
    verify_passport,
)
from sealtrail.provenance._strict import canonical
from sealtrail.scitt import (
    ORG_RECORD_TYPE,
    Header,
    add_receipts,
    decode_key_set,
    encode_key_set,
    key_id,
    sign1,
    split_transparent,
)
from sealtrail.storage import MemoryIndex
from tests.unit.scitt._pki import Issuer

from ._signed import SERVICE, SignedChain, journey, signed_chain
from ._world import ASSEMBLER, CARRIER, GOOD, MAKER, OPERATOR

S = ComplianceState


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclasses.dataclass
class Run:
    """What the service run left: passports (bytes) and what a test needs to judge them."""

    passports: dict[str, bytes]
    indexes: dict[str, int]  # label -> log index of the statement registered under it
    old_checkpoint: bytes  # a signed checkpoint from before the rack was shipped
    vkey: str
    key_set: bytes
    service_signer: Signer
    issuers: dict[str, Issuer]
    registered: list[bytes]
    devices: dict[str, str]  # label -> device id
    maker_serial: tuple[str, str]


def export(chain: SignedChain, subject: PassportSubject, checkpoint: SignedCheckpoint) -> bytes:
    service = chain.service

    def statement(entry_id: bytes) -> bytes | None:
        record = chain.store.get_statement(entry_id)
        return None if record is None else record.body

    return build_passport(
        subject,
        views=ProvenanceViews(chain.index),
        statements=statement,
        org_records=lambda: [r.body for r in chain.store.statements_of_type(ORG_RECORD_TYPE)],
        reader=service.reader,
        checkpoint=checkpoint,
        receipts=service.receipts,
        key_set=service.key_set(),
        verifier_key=chain.sequencer.signer.verifier_key(),
        seal=service.signer,
    )


async def _scenario(chain: SignedChain) -> tuple[dict[str, int], bytes, dict[str, str]]:
    """The rack's run; the log index of each labelled statement, the old checkpoint."""
    w = chain.world
    at: dict[str, int] = {}

    async def record(label: str, org: str, payload: Any) -> None:
        at[label] = await chain.record(org, payload)

    await record(
        "release",
        MAKER,
        FirmwareRelease(GOOD.component, "1.2", 3, (Measurement(GOOD.alg, GOOD.digest),)),
    )
    d = w.devices(10)
    ids = {f"d{n}": dev.device_id for n, dev in enumerate(d)}
    await record("batch-1", MAKER, DeviceManifest("batch-1", tuple(d[:8])))
    await record("batch-2", MAKER, DeviceManifest("batch-2", tuple(d[8:])))

    def blade(serial: str, *devices: int, removed: tuple[int, ...] = ()) -> Assembly:
        return Assembly(
            Node(NodeType.BLADE, serial),
            tuple(DeviceRef(d[i].device_id) for i in devices),
            tuple(DeviceRef(d[i].device_id) for i in removed),
        )

    def server(serial: str) -> Assembly:
        return Assembly(
            Node(NodeType.SERVER, serial),
            (Node(NodeType.BLADE, f"{serial}-blade-0"), Node(NodeType.BLADE, f"{serial}-blade-1")),
        )

    await record("srv-1-blade-0", ASSEMBLER, blade("srv-1-blade-0", 0, 1))
    await record("srv-1-blade-1", ASSEMBLER, blade("srv-1-blade-1", 2, 3))
    await record("srv-1", ASSEMBLER, server("srv-1"))
    await record("replace", ASSEMBLER, blade("srv-1-blade-0", 8, removed=(1,)))
    await record("srv-2-blade-0", ASSEMBLER, blade("srv-2-blade-0", 4, 1))
    await record("srv-2-blade-1", ASSEMBLER, blade("srv-2-blade-1", 6, 7))
    await record("srv-2", ASSEMBLER, server("srv-2"))
    rack = Assembly(
        Node(NodeType.RACK, "rack-1"),
        (Node(NodeType.SERVER, "srv-1"), Node(NodeType.SERVER, "srv-2")),
    )
    await record("rack-1", ASSEMBLER, rack)
    old = chain.sequencer.reader.checkpoint()
    assert old is not None
    await record("shipped", CARRIER, w._custody_payload("ship-1", CustodyEvent.SHIPPED, ["rack-1"]))
    for srv in ("srv-1", "srv-2"):
        await record(
            f"{srv}:in-transit", OPERATOR, Compliance(srv, S.REGISTERED, S.IN_TRANSIT, "go")
        )
    await record(
        "received", CARRIER, w._custody_payload("ship-1", CustodyEvent.RECEIVED, ["rack-1"])
    )
    for srv in ("srv-1", "srv-2"):
        challenges = tuple(
            Challenge(dev, f"{srv}-{n:02d}".encode().hex().ljust(32, "0"), True)
            for n, dev in enumerate(w.state.devices_of(srv))
        )
        arrival = Arrival("ship-1", srv, True, challenges, Verdict.PASS)
        await record(f"{srv}:arrival", OPERATOR, arrival)
        await record(f"{srv}:arrived", OPERATOR, Compliance(srv, S.IN_TRANSIT, S.ARRIVED, "ok"))
        await record(f"{srv}:attestation", OPERATOR, w.evidence_result(srv))
        await record(f"{srv}:verified", OPERATOR, Compliance(srv, S.ARRIVED, S.VERIFIED, "ok"))
    await record("srv-1:production", OPERATOR, Compliance("srv-1", S.VERIFIED, S.PRODUCTION, "go"))
    for org, payload in journey(w, "srv-3", "ship-3"):
        at[f"srv-3:{type(payload).KIND}:{len(at)}"] = await chain.register(org, payload)
    return at, old.note, ids


async def _run() -> Run:
    async with signed_chain() as chain:
        indexes, old, devices = await _scenario(chain)
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        subjects = {
            "srv-1": PassportSubject.node("srv-1"),
            "srv-2": PassportSubject.node("srv-2"),
            "srv-3": PassportSubject.node("srv-3"),
            "rack-1": PassportSubject.node("rack-1"),
            "blade": PassportSubject.node("srv-1-blade-0"),
            "d0": PassportSubject.device(devices["d0"]),
            "d1": PassportSubject.device(devices["d1"]),
        }
        passports = {name: export(chain, s, checkpoint) for name, s in subjects.items()}
        row = json.loads(chain.index.row("device", devices["d5"]) or "{}")
        return Run(
            passports=passports,
            indexes=indexes,
            old_checkpoint=old,
            vkey=chain.sequencer.signer.verifier_key(),
            key_set=chain.service.key_set(),
            service_signer=chain.service.signer,
            issuers=chain.issuers,
            registered=list(chain.registered),
            devices=devices,
            maker_serial=(row["maker"], row["serial"]),
        )


@pytest.fixture(scope="module")
def run() -> Run:
    return asyncio.run(_run())


# -- helpers to read and edit a passport -----------------------------------------------------


def doc_of(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    return canonical(doc)


def reseal(doc: dict[str, Any], signer: Signer) -> bytes:
    """The passport sealed again with the service key (what only the service can do)."""
    subject = doc["subject"]
    name = f"node:{subject['serial']}" if "serial" in subject else f"device:{subject['device_id']}"
    doc["seal"] = base64.b64encode(
        sign1(
            signer,
            protected={
                Header.KID: key_id(signer.verifier()),
                Header.CONTENT_TYPE: PASSPORT_TYPE,
                Header.CWT_CLAIMS: {1: SERVICE, 2: name, 6: 1_800_000_000},
            },
            payload=_seal_digest(doc),
            detached=True,
        )
    ).decode()
    return encode(doc)


def position(doc: dict[str, Any], index: int) -> int:
    """Where the statement at log ``index`` sits in the passport's list."""
    return next(n for n, item in enumerate(doc["statements"]) if item["index"] == index)


def failure(data: bytes, **pins: Any) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        verify_passport(data, **pins)
    return caught.value


# -- what a passport holds ------------------------------------------------------------------


def test_a_server_passport_holds_its_journey_and_nothing_of_its_neighbours(run: Run) -> None:
    report = verify_passport(run.passports["srv-1"])
    at = run.indexes
    mine = [
        "release", "batch-1", "batch-2", "srv-1-blade-0", "srv-1-blade-1", "srv-1", "replace",
        "srv-2-blade-0", "rack-1", "shipped", "srv-1:in-transit", "received", "srv-1:arrival",
        "srv-1:arrived", "srv-1:attestation", "srv-1:verified", "srv-1:production",
    ]  # fmt: skip
    assert [s.index for s in report.stages] == sorted(at[label] for label in mine)
    assert [s.stage for s in report.stages[:3]] == ["firmware", "factory", "factory"]
    assert report.stages[-1].stage == "compliance"
    assert "-> production" in report.stages[-1].summary
    # Nothing about srv-2 itself (its server record, compliance, arrival, attestation).
    theirs = {at[k] for k in at if k.startswith("srv-2") and k != "srv-2-blade-0"}
    assert not theirs & {s.index for s in report.stages}
    assert report.status == {
        "serial": "srv-1",
        "type": "server",
        "installed_in": ["rack-1"],
        "devices": sorted(run.devices[d] for d in ("d0", "d2", "d3", "d8")),
        "in_transit": None,
        "compliance": "production",
        "arrival": "pass",
        "attestation": "affirming",
    }
    # The rack's other server, and the blade the replaced device went to (with the device
    # beside it there), are named, not judged.
    assert report.outside == (f"device:{run.devices['d4']}", "node:srv-2", "node:srv-2-blade-0")
    assert {o for o, _, _ in report.organizations} == {MAKER, ASSEMBLER, CARRIER, OPERATOR}
    assert report.issuer == SERVICE
    assert not report.log_key_pinned and not report.service_keys_pinned
    assert report.log_key == run.vkey
    assert [k for k, _ in report.service_keys] == [k.hex() for k in decode_key_set(run.key_set)]


def test_the_other_server_in_the_rack_has_its_own_passport(run: Run) -> None:
    report = verify_passport(run.passports["srv-2"])
    assert report.status["compliance"] == "verified"
    assert report.status["installed_in"] == ["rack-1"]
    assert run.indexes["srv-2:attestation"] in {s.index for s in report.stages}
    assert run.indexes["srv-1:attestation"] not in {s.index for s in report.stages}
    # The moved device's first blade is out of this passport's scope: its placeholder
    # carries the replacement device too.
    assert "node:srv-1" in report.outside
    assert f"device:{run.devices['d8']}" in report.outside


def test_a_third_server_shares_nothing_with_the_rack(run: Run) -> None:
    report = verify_passport(run.passports["srv-3"])
    assert report.status["compliance"] == "production"
    assert report.outside == ()
    srv3 = {v for k, v in run.indexes.items() if k.startswith("srv-3")}
    assert {s.index for s in report.stages} == srv3 | {run.indexes["release"]}


def test_a_device_passport_follows_the_device_through_both_servers(run: Run) -> None:
    report = verify_passport(run.passports["d1"])
    assert report.subject == PassportSubject.device(run.devices["d1"])
    status = report.status
    assert status["installed_in"] == ["srv-2-blade-0", "srv-2", "rack-1"]
    assert status["compliance"] == {"srv-2": "verified"}
    assert status["maker"] == MAKER
    stages = {s.index for s in report.stages}
    for label in ("srv-1:attestation", "srv-2:attestation", "replace", "srv-2-blade-0"):
        assert run.indexes[label] in stages


def test_a_device_and_a_blade_passport_cover_their_server(run: Run) -> None:
    d0 = verify_passport(run.passports["d0"])
    assert d0.status["installed_in"] == ["srv-1-blade-0", "srv-1", "rack-1"]
    assert d0.status["compliance"] == {"srv-1": "production"}
    blade = verify_passport(run.passports["blade"])
    assert blade.status["type"] == "blade"
    assert blade.status["installed_in"] == ["srv-1", "rack-1"]
    assert run.indexes["srv-1:production"] in {s.index for s in blade.stages}


def test_a_rack_passport_holds_both_servers(run: Run) -> None:
    report = verify_passport(run.passports["rack-1"])
    assert report.status["type"] == "rack"
    assert len(report.status["devices"]) == 8
    stages = {s.index for s in report.stages}
    assert {run.indexes["srv-1:production"], run.indexes["srv-2:verified"]} <= stages
    assert report.outside == ()


def test_the_report_as_json(run: Run) -> None:
    doc = verify_passport(run.passports["srv-1"]).to_json()
    assert doc["ok"] is True
    assert doc["subject"] == {"kind": "node", "name": "srv-1"}
    assert doc["journey"][0]["time"].endswith("Z")
    assert doc["log"]["pinned"] is False
    json.dumps(doc)  # serializable as is


# -- pinning the keys -------------------------------------------------------------------------


def test_pinned_keys_are_checked_and_reported(run: Run) -> None:
    report = verify_passport(run.passports["srv-1"], log_key=run.vkey, service_keys=run.key_set)
    assert report.log_key_pinned and report.service_keys_pinned
    other_log = CheckpointSigner(origin=report.origin, signer=Ed25519Signer.generate())
    error = failure(run.passports["srv-1"], log_key=other_log.verifier_key())
    assert error.code == "passport-log-key-mismatch"
    other_keys = encode_key_set([generate_signer(ES256).verifier()])
    error = failure(run.passports["srv-1"], service_keys=other_keys)
    assert error.code == "passport-service-keys-mismatch"


async def _replica(run: Run) -> bytes:
    """Another service and log, fed the very same signed statements: a passport of its own
    keys that is consistent in itself."""
    async with signed_chain(issuers=run.issuers) as chain:
        for data in run.registered:
            await chain.service.register(data)
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        return export(chain, PassportSubject.node("srv-1"), checkpoint)


def test_a_file_alone_cannot_say_who_made_it_pinned_keys_can(run: Run) -> None:
    replica = asyncio.run(_replica(run))
    report = verify_passport(replica)  # self-consistent: the same journey
    assert report.status["compliance"] == "production"
    assert report.log_key != run.vkey  # ... with other fingerprints
    assert failure(replica, log_key=run.vkey).code == "passport-log-key-mismatch"
    assert failure(replica, service_keys=run.key_set).code == "passport-service-keys-mismatch"


# -- any byte changed -------------------------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_single_byte_changed_anywhere_fails_with_a_named_reason(
    run: Run, data: st.DataObject
) -> None:
    original = run.passports["srv-1"]
    at = data.draw(st.integers(0, len(original) - 1), label="position")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]), label="byte")
    changed = original[:at] + bytes([byte]) + original[at + 1 :]
    error = failure(changed)
    assert error.code not in ("verification-failed", "error"), error
    assert error.message


# -- edited consistently ----------------------------------------------------------------------


def _without(data: bytes, index: int) -> bytes:
    doc = doc_of(data)
    del doc["statements"][position(doc, index)]
    return encode(doc)


def test_a_statement_removed_from_the_middle_breaks_the_replay(run: Run) -> None:
    error = failure(_without(run.passports["srv-1"], run.indexes["srv-1:arrived"]))
    assert error.code == "passport-replay-refused"
    assert "compliance-stale-state" in error.message
    error = failure(_without(run.passports["srv-1"], run.indexes["batch-1"]))
    assert error.code == "passport-replay-refused"
    assert "assembly-unknown-device" in error.message


def test_the_last_statement_removed_breaks_the_seal(run: Run) -> None:
    error = failure(_without(run.passports["srv-1"], run.indexes["srv-1:production"]))
    assert error.code == "passport-bad-seal"


def test_what_the_seal_cannot_prove_the_service_itself_may_leave_out(run: Run) -> None:
    """Only the service's key seals: a service that leaves the last fact out, and seals,
    is caught by no offline check (docs/passports.md, "What a passport does not prove")."""
    doc = doc_of(_without(run.passports["srv-1"], run.indexes["srv-1:production"]))
    report = verify_passport(reseal(doc, run.service_signer))
    assert report.status["compliance"] == "verified"


def test_receipts_swapped_between_statements_fail(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    a, b = position(doc, run.indexes["srv-1"]), position(doc, run.indexes["rack-1"])
    (sa, ra), (sb, rb) = (
        split_transparent(base64.b64decode(doc["statements"][n]["statement"])) for n in (a, b)
    )
    doc["statements"][a]["statement"] = base64.b64encode(add_receipts(sa, rb)).decode()
    doc["statements"][b]["statement"] = base64.b64encode(add_receipts(sb, ra)).decode()
    assert failure(encode(doc)).code == "receipt-bad-signature"


def test_a_statement_of_another_server_spliced_in_is_foreign(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    theirs = doc_of(run.passports["srv-2"])
    index = run.indexes["srv-2:verified"]
    item = theirs["statements"][position(theirs, index)]
    doc["statements"].append(item)
    doc["statements"].sort(key=lambda i: i["index"])
    error = failure(encode(doc))
    assert error.code == "passport-foreign-statement"
    assert f"log index {index}" in error.message
    # Sealed again by the service, still foreign: the seal does not make a fact relevant.
    assert failure(reseal(doc, run.service_signer)).code == "passport-foreign-statement"


def test_an_older_checkpoint_fails_every_receipt(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    doc["log"]["checkpoint"] = run.old_checkpoint.decode()
    error = failure(encode(doc))
    assert error.code == "passport-receipt-not-at-checkpoint"


def test_another_log_key_signing_the_same_tree_breaks_the_seal_or_the_pin(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    cp = Checkpoint.parse(doc["log"]["checkpoint"].split("\n\n")[0] + "\n")
    forger = CheckpointSigner(origin=cp.origin, signer=Ed25519Signer.generate())
    doc["log"]["checkpoint"] = forger.sign(size=cp.size, root=cp.root).note.decode()
    doc["log"]["verifier_key"] = forger.verifier_key()
    assert failure(encode(doc)).code == "passport-bad-seal"
    resealed = reseal(doc, run.service_signer)
    assert failure(resealed, log_key=run.vkey).code == "passport-log-key-mismatch"


def test_statements_repeated_or_reordered_fail(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    doc["statements"].insert(1, doc["statements"][1])
    assert failure(encode(doc)).code == "passport-duplicate-statement"
    doc = doc_of(run.passports["srv-1"])
    s = doc["statements"]
    s[1], s[2] = s[2], s[1]
    assert failure(encode(doc)).code == "passport-out-of-order"


def test_an_organization_record_removed_or_foreign_fails(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    operator = next(
        n
        for n, item in enumerate(doc["organizations"])
        if b'"operator"' in base64.b64decode(item["statement"])
    )
    del doc["organizations"][operator]
    error = failure(encode(doc))
    assert error.code == "issuer-unknown"
    # The maker's record in a passport with none of its statements.
    doc = doc_of(run.passports["srv-1"])
    doc["statements"] = [
        i for i in doc["statements"] if i["index"] not in {run.indexes[k] for k in _MAKER}
    ]
    error = failure(reseal(doc, run.service_signer))
    assert error.code == "passport-foreign-statement"


_MAKER = ("release", "batch-1", "batch-2")


# -- the structure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (lambda d: json.dumps(json.loads(d), indent=1).encode(), "passport-not-canonical"),
        (lambda d: b"not json", "passport-malformed"),
        (lambda d: b"[]", "passport-malformed"),
        (lambda d: b"\xff" + d, "passport-malformed"),
        (lambda d: d.replace(b".v1+json", b".v2+json", 1), "passport-unsupported-type"),
        (lambda d: d + b" " * (MAX_PASSPORT_SIZE + 1 - len(d)), "passport-too-large"),
        (lambda d: encode({**doc_of(d), "extra": 1}), "passport-malformed"),
        (lambda d: encode({**doc_of(d), "subject": {"serial": 7}}), "passport-malformed"),
        (lambda d: d.replace(b'"index":', b'"index":1.5,"x":', 1), "passport-malformed"),
        (lambda d: d.replace(b'{"index":', b'{"index":0,"index":', 1), "passport-malformed"),
    ],
)
def test_a_malformed_file_is_named(run: Run, edit: Callable[[bytes], bytes], code: str) -> None:
    assert failure(edit(run.passports["srv-1"])).code == code


def test_a_statement_without_its_receipt_is_named(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    statement, _ = split_transparent(base64.b64decode(doc["statements"][0]["statement"]))
    doc["statements"][0]["statement"] = base64.b64encode(statement).decode()
    assert failure(encode(doc)).code == "passport-receipt-missing"


def test_a_subject_with_no_statement_is_named(run: Run) -> None:
    doc = doc_of(run.passports["srv-1"])
    doc["subject"] = {"serial": "srv-9"}
    assert failure(reseal(doc, run.service_signer)).code == "passport-foreign-statement"
    doc["statements"] = []
    doc["organizations"] = []
    assert failure(reseal(doc, run.service_signer)).code == "passport-subject-missing"


# -- building ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_builder_names_an_unknown_subject_and_an_index_behind() -> None:
    async with signed_chain() as chain:
        await chain.journey("srv-1", "ship-1")
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        for subject, code in (
            (PassportSubject.node("srv-9"), "node-unknown"),
            (PassportSubject.device("ab" * 32), "device-unknown"),
        ):
            with pytest.raises(NotFound) as caught:
                export(chain, subject, checkpoint)
            assert caught.value.code == code
        behind = dataclasses.replace(chain, index=MemoryIndex())
        with pytest.raises(NotFound) as caught:
            export(behind, PassportSubject.node("srv-1"), checkpoint)
        assert caught.value.code == "index-size-unknown"
        # A passport is as of its checkpoint: the server's later facts are not in it.
        data = export(chain, PassportSubject.node("srv-1"), checkpoint)
        await chain.record(OPERATOR, Compliance("srv-1", S.PRODUCTION, S.NON_COMPLIANT, "drift"))
        await chain.indexed()
        assert verify_passport(data).status["compliance"] == "production"
        later = chain.sequencer.reader.checkpoint()
        assert later is not None
        report = verify_passport(export(chain, PassportSubject.node("srv-1"), later))
        assert report.status["compliance"] == "non-compliant"


def test_the_subject_is_checked() -> None:
    with pytest.raises(Exception, match="device id"):
        PassportSubject.device("not hex")
    assert str(PassportSubject.node("srv-1")) == "node:srv-1"


@pytest.mark.anyio
async def test_history_outside_the_scope_is_named_not_judged() -> None:
    """Blade B passes through servers Z and W before server A. What Z and W did with other
    blades (Y, Y2) is outside A's passport: a removal it cannot see is not held against
    the facts it holds, and the facts it holds about B are judged in full."""
    async with signed_chain() as chain:
        d = chain.world.devices(4)
        await chain.record(MAKER, DeviceManifest("batch-b", tuple(d)))
        blade, server = NodeType.BLADE, NodeType.SERVER
        b, y, y2 = Node(blade, "B"), Node(blade, "Y"), Node(blade, "Y2")
        z, w, a = Node(server, "Z"), Node(server, "W"), Node(server, "A")
        at = {}
        steps: list[tuple[str, Assembly]] = [
            ("B", Assembly(b, (DeviceRef(d[0].device_id),))),
            ("Y", Assembly(y, (DeviceRef(d[1].device_id),))),
            ("Y2", Assembly(y2, (DeviceRef(d[2].device_id),))),
            ("Z+Y2", Assembly(z, (y2,))),  # not about A's scope
            ("Z+B,Y", Assembly(z, (b, y))),
            ("Z-Y2,B", Assembly(z, (), (y2, b))),  # removes Y2, which A's passport never saw
            ("Z-Y", Assembly(z, (), (y,))),  # not about A's scope
            ("W+B,Y", Assembly(w, (b, y))),  # Y's removal from Z is outside A's passport
            ("W-B", Assembly(w, (), (b,))),
            ("A+B", Assembly(a, (b,))),
            ("Q-blade", Assembly(Node(blade, "Q-blade"), (DeviceRef(d[3].device_id),))),
            ("Q", Assembly(Node(server, "Q"), (Node(blade, "Q-blade"),))),
        ]
        for label, payload in steps:
            at[label] = await chain.record(ASSEMBLER, payload)
        world = chain.world
        for event in (CustodyEvent.SHIPPED, CustodyEvent.RECEIVED):  # A travels with Q
            at[event.value] = await chain.record(
                CARRIER, world._custody_payload("ship-aq", event, ["A", "Q"])
            )
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        data = export(chain, PassportSubject.node("A"), checkpoint)
        report = verify_passport(data)
        held = {s.index for s in report.stages}
        assert {at[k] for k in ("Z+Y2", "Z-Y", "Q-blade", "Q")} & held == set()
        mine = ("B", "Z+B,Y", "Z-Y2,B", "W+B,Y", "W-B", "A+B", "shipped", "received")
        assert {at[k] for k in mine} <= held
        assert report.outside == ("node:Q", "node:W", "node:Y", "node:Y2", "node:Z")
        assert report.status["devices"] == [d[0].device_id]
        # B's own history is judged: without its removal from Z, W cannot take it.
        error = failure(_without(data, at["Z-Y2,B"]))
        assert error.code == "passport-replay-refused"
        assert "assembly-child-elsewhere" in error.message


@pytest.mark.anyio
async def test_a_blade_moved_to_a_rack_neighbour_leaves_both_passports_verifiable() -> None:
    """The neighbour is outside the first server's scope: its passport stands it in with no
    known assembler, and the move into it is not refused there (only a node's assembler
    changes it, which the index, knowing the neighbour, checks)."""
    async with signed_chain() as chain:
        devices = chain.world.devices(3)
        await chain.record(MAKER, DeviceManifest("batch", tuple(devices)))
        blades = [Node(NodeType.BLADE, name) for name in ("s1-b0", "s1-b1", "s2-b0")]
        for blade, device in zip(blades, devices, strict=True):
            await chain.record(ASSEMBLER, Assembly(blade, (DeviceRef(device.device_id),)))
        srv1, srv2 = Node(NodeType.SERVER, "srv-1"), Node(NodeType.SERVER, "srv-2")
        await chain.record(ASSEMBLER, Assembly(srv1, (blades[0], blades[1])))
        await chain.record(ASSEMBLER, Assembly(srv2, (blades[2],)))
        await chain.record(ASSEMBLER, Assembly(Node(NodeType.RACK, "rack-1"), (srv1, srv2)))
        await chain.record(ASSEMBLER, Assembly(srv1, (), (blades[1],)))
        await chain.record(ASSEMBLER, Assembly(srv2, (blades[1],)))
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        for subject in ("srv-1", "s1-b1", "srv-2"):
            verify_passport(export(chain, PassportSubject.node(subject), checkpoint))


@pytest.mark.anyio
async def test_a_rack_neighbours_trip_outside_the_scope_does_not_decide_the_racks_holder() -> None:
    """Servers S and X in rack R; X alone goes to the operator, then the operator ships the
    rack on. The log finds R's holder by X's trip, which S's passport does not hold: there
    R's holder is unknown, not judged, and every passport verifies."""
    async with signed_chain() as chain:
        world = chain.world
        d = world.devices(2)
        await chain.record(MAKER, DeviceManifest("batch", tuple(d)))
        blade = Node(NodeType.BLADE, "S-b0")
        s, x = Node(NodeType.SERVER, "S"), Node(NodeType.SERVER, "X")
        await chain.record(ASSEMBLER, Assembly(blade, (DeviceRef(d[0].device_id),)))
        await chain.record(ASSEMBLER, Assembly(s, (blade,)))
        await chain.record(ASSEMBLER, Assembly(x, (DeviceRef(d[1].device_id),)))
        await chain.record(ASSEMBLER, Assembly(Node(NodeType.RACK, "R"), (s, x)))
        for event in (CustodyEvent.SHIPPED, CustodyEvent.RECEIVED):  # not about S's scope
            await chain.record(
                CARRIER, world._custody_payload("ship-x", event, ["X"], (ASSEMBLER, OPERATOR))
            )
        shipped = await chain.record(
            CARRIER,
            world._custody_payload("ship-r", CustodyEvent.SHIPPED, ["R"], (OPERATOR, ASSEMBLER)),
        )
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        subjects = [PassportSubject.node(n) for n in ("S", "S-b0", "X", "R")] + [
            PassportSubject.device(d[0].device_id),
            PassportSubject.device(d[1].device_id),
        ]
        for subject in subjects:
            report = verify_passport(export(chain, subject, checkpoint))
            assert shipped in {stage.index for stage in report.stages}, subject
        report = verify_passport(export(chain, PassportSubject.node("S"), checkpoint))
        assert report.outside == ("node:X",)
        assert report.status["installed_in"] == ["R"]
        rack = verify_passport(export(chain, PassportSubject.node("R"), checkpoint))
        assert rack.status["in_transit"] == "ship-r"


@pytest.mark.anyio
async def test_a_fellow_travellers_later_trips_outside_the_scope_are_not_judged() -> None:
    """S and X ship together, then each alone, then together again. S's passport holds
    X's first trip, not its second: X's holder is unknown there, not the stale first."""
    async with signed_chain() as chain:
        world = chain.world
        d = world.devices(2)
        await chain.record(MAKER, DeviceManifest("batch", tuple(d)))
        for serial, device in (("S", d[0]), ("X", d[1])):
            await chain.record(
                ASSEMBLER, Assembly(Node(NodeType.SERVER, serial), (DeviceRef(device.device_id),))
            )
        trips = (
            ("ship-1", ["S", "X"], (ASSEMBLER, OPERATOR)),
            ("ship-2", ["S"], (OPERATOR, ASSEMBLER)),
            ("ship-3", ["X"], (OPERATOR, ASSEMBLER)),  # not about S's scope
        )
        for shipment, contents, parties in trips:
            for event in (CustodyEvent.SHIPPED, CustodyEvent.RECEIVED):
                await chain.record(
                    CARRIER, world._custody_payload(shipment, event, contents, parties)
                )
        await chain.record(
            CARRIER,
            world._custody_payload(
                "ship-4", CustodyEvent.SHIPPED, ["S", "X"], (ASSEMBLER, OPERATOR)
            ),
        )
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        for serial in ("S", "X"):
            report = verify_passport(export(chain, PassportSubject.node(serial), checkpoint))
            assert report.status["in_transit"] == "ship-4"


@pytest.mark.anyio
async def test_the_holder_of_what_the_passport_holds_is_still_judged() -> None:
    """A server shipped alone three times: without the second hand-off, the third sender
    is not the holder the passport's own facts give."""
    async with signed_chain() as chain:
        world = chain.world
        d = world.devices(1)
        await chain.record(MAKER, DeviceManifest("batch", tuple(d)))
        await chain.record(
            ASSEMBLER, Assembly(Node(NodeType.SERVER, "T"), (DeviceRef(d[0].device_id),))
        )
        at = {}
        trips = (("ship-1", ASSEMBLER, OPERATOR), ("ship-2", OPERATOR, ASSEMBLER))
        for shipment, sender, recipient in trips:
            for event in (CustodyEvent.SHIPPED, CustodyEvent.RECEIVED):
                at[shipment, event] = await chain.record(
                    CARRIER, world._custody_payload(shipment, event, ["T"], (sender, recipient))
                )
        await chain.record(
            CARRIER,
            world._custody_payload("ship-3", CustodyEvent.SHIPPED, ["T"], (ASSEMBLER, OPERATOR)),
        )
        await chain.indexed()
        checkpoint = chain.sequencer.reader.checkpoint()
        assert checkpoint is not None
        data = export(chain, PassportSubject.node("T"), checkpoint)
        verify_passport(data)
        for event in (CustodyEvent.RECEIVED, CustodyEvent.SHIPPED):
            data = _without(data, at["ship-2", event])
        error = failure(data)
        assert error.code == "passport-replay-refused"
        assert "custody-not-holder" in error.message
