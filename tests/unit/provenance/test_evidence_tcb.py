"""The DICE ``DiceTcbInfo`` FWIDs of an alias chain against the measurements a device reports.

A DICE layer measures the next one before it runs and writes that measurement (an FWID)
into the alias certificate it issues for the next layer's key. A compromised layer holds its
alias key and signs whatever measurements it likes, but cannot change the certificate the
layer below issued: so every FWID must be among the reported measurements, same algorithm
and digest, or the appraisal is ``evidence-tcb-mismatch``. A ``DiceTcbInfo`` that is not
well-formed DER makes the chain bad (``evidence-bad-chain``), never an exception, and
evidence whose certificates carry no ``DiceTcbInfo`` is appraised as before.

The valid extensions here are written by the simulator's own DER encoder
(``sealtrail.sim.encode_tcb_info``), a second implementation of the format.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.provenance import (
    Algorithm,
    Assembly,
    DeviceKind,
    DeviceRef,
    EarStatus,
    Node,
    NodeType,
)
from sealtrail.provenance._evidence import (
    TCB_INFO_OID,
    AliasChains,
    EvidenceReason,
    Fwid,
    appraise_device,
    appraise_devices,
    sign_evidence,
    tcb_info_fwids,
)
from sealtrail.provenance._payloads import (
    AttestationResult,
    ComponentMeasurement,
    DeviceEvidence,
    DigestAlgorithm,
)
from sealtrail.sim import (
    ML_DSA_SUPPORTED,
    DeviceMaker,
    Evidence,
    Operator,
    RotDevice,
    TcbInfo,
    check_evidence,
    encode_tcb_info,
    tcb_info_of,
)
from sealtrail.sim import Fwid as SimFwid
from sealtrail.sim._fleet import firmware_for

from ._certs import alias, identity, new_key
from ._world import ASSEMBLER, OPERATOR, World

NONCE = bytes(range(32))
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TCB = "evidence-tcb-mismatch"
GOOD = (EarStatus.AFFIRMING, ())
BAD_CHAIN = (EarStatus.CONTRAINDICATED, ("evidence-bad-chain",))
MISMATCH = (EarStatus.CONTRAINDICATED, (TCB,))
UNKNOWN = (EarStatus.CONTRAINDICATED, ("measurement-unknown",))

SHA384 = DigestAlgorithm.SHA384
FMC = ComponentMeasurement("caliptra-fmc", SHA384, "0f" * 48)
RUNTIME = ComponentMeasurement("caliptra-rt", SHA384, "a1" * 48)
RUNTIME_256 = ComponentMeasurement("caliptra-rt", DigestAlgorithm.SHA256, "a1" * 32)
OLD_RUNTIME = ComponentMeasurement("caliptra-rt", SHA384, "b2" * 48)
SOC = ComponentMeasurement("soc-fw", SHA384, "c3" * 48)
#: The registered releases: measurement -> security version.
RELEASES = {FMC: 3, RUNTIME: 5, RUNTIME_256: 5, OLD_RUNTIME: 1, SOC: 1}
POLICY = {"caliptra-rt": 2}
SHA3_384_OID = "2.16.840.1.101.3.4.2.9"

ID_KEY, FMC_KEY, RT_KEY = new_key(), new_key(), new_key()
IDENTITY = identity(ID_KEY, "TCB-0001")


def _appraise(
    evidence: DeviceEvidence | None, *, chains: AliasChains | None = None
) -> tuple[EarStatus, tuple[str, ...]]:
    return appraise_device(
        evidence,
        nonce=NONCE,
        identity=IDENTITY,
        release_of=RELEASES.get,
        min_security_version=POLICY.get,
        chains=chains or AliasChains(),
    )


# -- writing DiceTcbInfo and the certificates that carry it ----------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element (lengths below 64 KiB), for the extensions the encoder cannot write."""
    if len(content) < 0x80:
        return bytes((tag, len(content))) + content
    size = len(content).to_bytes(2 if len(content) > 0xFF else 1, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element."""
    first, second, *rest = (int(a) for a in dotted.split("."))
    body = bytearray()
    for arc in (40 * first + second, *rest):
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _fwid_der(oid: str, digest: bytes) -> bytes:
    return _tlv(0x30, _oid(oid) + _tlv(0x04, digest))


def _tcb(*measurements: ComponentMeasurement, vendor: str = "tcb-maker") -> bytes:
    """A DiceTcbInfo as the simulator's devices write it, with these FWIDs."""
    fwids = tuple(SimFwid(m.alg.value, bytes.fromhex(m.digest)) for m in measurements)
    return encode_tcb_info(TcbInfo(vendor=vendor, model="m", version="1", svn=1, fwids=fwids))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer_der: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    name: str,
    ca: bool,
    tcb_info: bytes | None,
) -> bytes:
    """An alias certificate for ``key`` (DER), issued by ``issuer_key`` in the name of the
    subject of ``issuer_der``, carrying ``tcb_info`` as its DiceTcbInfo when given."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(x509.load_der_x509_certificate(issuer_der).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if tcb_info is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TCB_INFO_OID, tcb_info), critical=True
        )
    return builder.sign(issuer_key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def _chain(fmc: bytes | None, runtime: bytes | None) -> tuple[bytes, bytes]:
    """Runtime alias, FMC alias (leaf first), issued from IDENTITY, with these DiceTcbInfo."""
    fmc_alias = _issue(ID_KEY, IDENTITY, FMC_KEY, name="FMC Alias", ca=True, tcb_info=fmc)
    rt_alias = _issue(FMC_KEY, fmc_alias, RT_KEY, name="RT Alias", ca=False, tcb_info=runtime)
    return rt_alias, fmc_alias


def _evidence(chain: Sequence[bytes], *measurements: ComponentMeasurement) -> DeviceEvidence:
    return sign_evidence(RT_KEY, NONCE, measurements, chain)


MEASURED = _chain(_tcb(FMC), _tcb(RUNTIME))  # what a device that booted FMC and RUNTIME holds


# -- what "agree" means ----------------------------------------------------------------------


def test_fwids_that_are_reported_affirm() -> None:
    assert _appraise(_evidence(MEASURED, FMC, RUNTIME)) == GOOD
    assert _appraise(_evidence(MEASURED, RUNTIME, FMC)) == GOOD  # in any order


def test_a_layer_that_reports_other_firmware_than_was_measured() -> None:
    # The runtime's alias certificate says RUNTIME ran; the runtime reports another release.
    assert _appraise(_evidence(MEASURED, FMC, OLD_RUNTIME)) == (
        EarStatus.CONTRAINDICATED,
        (TCB, "security-version-too-low"),
    )
    implant = _chain(_tcb(FMC), _tcb(OLD_RUNTIME))
    assert _appraise(_evidence(implant, FMC, RUNTIME)) == MISMATCH


def test_a_measured_layer_left_out_of_the_report() -> None:
    assert _appraise(_evidence(MEASURED, FMC)) == MISMATCH
    assert _appraise(_evidence(MEASURED, RUNTIME)) == MISMATCH


def test_measurements_no_fwid_holds_are_the_layers_own() -> None:
    # What a measured layer loaded and measured itself (here an SoC image) is as good as
    # that layer, which its FWID pins; the releases judge it like any measurement.
    assert _appraise(_evidence(MEASURED, FMC, RUNTIME, SOC)) == GOOD
    unreleased = ComponentMeasurement("soc-fw", SHA384, "dd" * 48)
    assert _appraise(_evidence(MEASURED, FMC, RUNTIME, unreleased)) == UNKNOWN


def test_same_algorithm_and_digest() -> None:
    # The runtime measured with SHA-256 by its layer below, reported only with SHA-384.
    assert _appraise(_evidence(_chain(_tcb(FMC), _tcb(RUNTIME_256)), FMC, RUNTIME)) == MISMATCH
    # A hash no evidence can name can never be reported: that layer is not verified.
    sha3 = _tlv(0x30, _tlv(0xA6, _fwid_der(SHA3_384_OID, b"\xa1" * 48)))
    assert tcb_info_fwids(sha3) == (Fwid(SHA3_384_OID, "a1" * 48),)
    assert _appraise(_evidence(_chain(_tcb(FMC), sha3), FMC, RUNTIME)) == MISMATCH


def test_every_fwid_of_a_tcb_info_is_reported() -> None:
    both = _chain(_tcb(FMC), _tcb(RUNTIME, RUNTIME_256))
    assert _appraise(_evidence(both, FMC, RUNTIME)) == MISMATCH
    assert _appraise(_evidence(both, FMC, RUNTIME, RUNTIME_256)) == GOOD


def test_a_tcb_info_without_fwids_or_on_one_layer_only() -> None:
    no_fwids = encode_tcb_info(TcbInfo(vendor="tcb-maker", svn=3, layer=1))
    assert _appraise(_evidence(_chain(no_fwids, no_fwids), FMC, RUNTIME)) == GOOD
    only_runtime = _chain(None, _tcb(RUNTIME))
    assert _appraise(_evidence(only_runtime, FMC, RUNTIME)) == GOOD
    assert _appraise(_evidence(only_runtime, FMC, OLD_RUNTIME))[1][0] == TCB


def test_the_reasons_and_their_status() -> None:
    assert EvidenceReason.TCB_MISMATCH.value == TCB
    assert sorted(r.value for r in EvidenceReason) == [
        "evidence-bad-chain",
        "evidence-bad-signature",
        "evidence-missing",
        TCB,
        "measurement-unknown",
        "security-version-too-low",
    ]
    # Never only a warning: it says the firmware running is not the firmware reported.
    low = _chain(_tcb(FMC), _tcb(OLD_RUNTIME))
    assert _appraise(_evidence(low, FMC, OLD_RUNTIME)) == (
        EarStatus.WARNING,
        ("security-version-too-low",),
    )


def test_the_fwids_are_only_looked_at_once_the_signature_verified() -> None:
    forged = sign_evidence(new_key(), NONCE, (FMC, OLD_RUNTIME), MEASURED)
    assert _appraise(forged) == (EarStatus.CONTRAINDICATED, ("evidence-bad-signature",))


# -- no DiceTcbInfo: as before ---------------------------------------------------------------


def test_evidence_without_tcb_info_is_appraised_as_before() -> None:
    ldev_key = new_key()
    ldev = alias(ID_KEY, IDENTITY, ldev_key, name="LDevID", ca=True)
    fmc = alias(ldev_key, ldev, FMC_KEY, name="FMC Alias", ca=True)
    plain = (alias(FMC_KEY, fmc, RT_KEY), fmc, ldev)
    assert _appraise(_evidence(plain, FMC, RUNTIME)) == GOOD
    assert _appraise(_evidence(plain, FMC)) == GOOD
    assert _appraise(_evidence(plain, FMC, OLD_RUNTIME)) == (
        EarStatus.WARNING,
        ("security-version-too-low",),
    )
    unknown = ComponentMeasurement("caliptra-rt", SHA384, "ee" * 48)
    assert _appraise(_evidence(plain, FMC, unknown)) == UNKNOWN
    # The identity key signs: no chain, no FWIDs.
    assert _appraise(sign_evidence(ID_KEY, NONCE, (FMC, RUNTIME))) == GOOD
    assert _appraise(None) == (EarStatus.CONTRAINDICATED, ("evidence-missing",))


# -- a malformed DiceTcbInfo: a bad chain, never an exception --------------------------------

VALID = _tcb(FMC)
FWID_384 = _fwid_der("2.16.840.1.101.3.4.2.2", b"\x0f" * 48)
MALFORMED = {
    "empty": b"",
    "not DER": b"garbage",
    "not a SEQUENCE": _tlv(0x31, _tlv(0xA6, FWID_384)),
    "truncated": VALID[:-1],
    "bytes after it": VALID + b"\x05\x00",
    "two SEQUENCEs": VALID + VALID,
    "indefinite length": b"\x30\x80" + _tlv(0xA6, FWID_384) + b"\x00\x00",
    "length not shortest": b"\x30\x81\x06" + _tlv(0x83, b"\x01") + _tlv(0x84, b"\x01"),
    "length with a leading zero": b"\x30\x82\x00\x03\x83\x01\x01",
    "length past the end": b"\x30\x84\xff\xff\xff\xff",
    "fields out of order": _tlv(0x30, _tlv(0x84, b"\x01") + _tlv(0x83, b"\x01")),
    "a field twice": _tlv(0x30, _tlv(0x83, b"\x01") + _tlv(0x83, b"\x02")),
    "a universal field": _tlv(0x30, _tlv(0x0C, b"vendor")),
    "a high tag number": _tlv(0x30, b"\x9f\x1f\x01\x00"),
    "fwids primitive": _tlv(0x30, _tlv(0x86, FWID_384)),
    "vendor constructed": _tlv(0x30, _tlv(0xA0, _tlv(0x0C, b"v"))),
    "vendor not UTF-8": _tlv(0x30, _tlv(0x80, b"\xff\xfe")),
    "svn empty": _tlv(0x30, _tlv(0x83, b"")),
    "svn not shortest": _tlv(0x30, _tlv(0x83, b"\x00\x01")),
    "svn negative not shortest": _tlv(0x30, _tlv(0x83, b"\xff\x80")),
    "flags with 8 unused bits": _tlv(0x30, _tlv(0x87, b"\x08\x00")),
    "flags with unused bits set": _tlv(0x30, _tlv(0x87, b"\x01\x01")),
    "flags empty": _tlv(0x30, _tlv(0x87, b"")),
    "no FWID in FWIDLIST": _tlv(0x30, _tlv(0xA6, b"")),
    "FWID not a SEQUENCE": _tlv(0x30, _tlv(0xA6, _tlv(0x31, FWID_384[2:]))),
    "FWID without digest": _tlv(0x30, _tlv(0xA6, _tlv(0x30, _oid("2.16.840.1.101.3.4.2.2")))),
    "FWID with more": _tlv(0x30, _tlv(0xA6, _tlv(0x30, FWID_384[2:] + _tlv(0x04, b"")))),
    "FWID digest a BIT STRING": _tlv(
        0x30, _tlv(0xA6, _tlv(0x30, _oid("2.16.840.1.101.3.4.2.2") + _tlv(0x03, b"\x00\x0f")))
    ),
    "sha-384 digest of 47 bytes": _tlv(
        0x30, _tlv(0xA6, _fwid_der("2.16.840.1.101.3.4.2.2", b"\x0f" * 47))
    ),
    "sha-256 digest of 48 bytes": _tlv(
        0x30, _tlv(0xA6, _fwid_der("2.16.840.1.101.3.4.2.1", b"\x0f" * 48))
    ),
    "unknown hash, empty digest": _tlv(0x30, _tlv(0xA6, _fwid_der(SHA3_384_OID, b""))),
    "OID truncated": _tlv(0x30, _tlv(0xA6, _tlv(0x30, _tlv(0x06, b"\x60\x86") + _tlv(0x04, b"x")))),
    "OID arc not shortest": _tlv(
        0x30, _tlv(0xA6, _tlv(0x30, _tlv(0x06, b"\x60\x80\x86\x48") + _tlv(0x04, b"x")))
    ),
    "OID empty": _tlv(0x30, _tlv(0xA6, _tlv(0x30, _tlv(0x06, b"") + _tlv(0x04, b"x")))),
}


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_tcb_info_is_a_bad_chain(value: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        tcb_info_fwids(value)
    assert _appraise(_evidence(_chain(VALID, value), FMC, RUNTIME)) == BAD_CHAIN  # the leaf's
    assert _appraise(_evidence(_chain(value, _tcb(RUNTIME)), FMC, RUNTIME)) == BAD_CHAIN


def test_every_field_of_a_well_formed_tcb_info_is_read_past() -> None:
    fields = (
        _tlv(0x80, "véndor".encode())
        + _tlv(0x81, b"model")
        + _tlv(0x82, b"1.2")
        + _tlv(0x83, b"\x00\x80")  # 128: the zero octet is needed
        + _tlv(0x84, b"\xff")  # -1
        + _tlv(0x85, b"\x00")
        + _tlv(0xA6, FWID_384 + _fwid_der("2.16.840.1.101.3.4.2.3", b"\x01" * 64))
        + _tlv(0x87, b"\x07\x80")
        + _tlv(0x88, b"vendor info")
        + _tlv(0x89, b"type")
        + _tlv(0x8A, b"\x00\x00")  # fields of later versions: read past
        + _tlv(0xAB, _tlv(0x30, b""))
    )
    value = _tlv(0x30, fields + _tlv(0x9E, b"\x00" * 200))  # a long-form length, too
    assert tcb_info_fwids(value) == (Fwid("sha-384", "0f" * 48), Fwid("sha-512", "01" * 64))
    assert tcb_info_fwids(_tlv(0x30, b"")) == ()


def _runtime_alias(
    issuer_key: ec.EllipticCurvePrivateKey, issuer_der: bytes, *, ca: bool, twice: bool
) -> bytes:
    """A runtime alias certificate (for RT_KEY, issued by ``issuer_key``) whose DiceTcbInfo
    is followed by the same value under another OID; ``twice``: under the DiceTcbInfo's own
    OID too (no builder writes that, so its to-be-signed bytes are edited and signed again)."""
    placeholder = x509.ObjectIdentifier("2.23.133.5.4.9")  # as many octets as TCB_INFO_OID
    signed = (
        x509.CertificateBuilder()
        .subject_name(_name("RT Alias"))
        .issuer_name(x509.load_der_x509_certificate(issuer_der).subject)
        .public_key(RT_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(TCB_INFO_OID, _tcb(RUNTIME)), critical=False)
        .add_extension(x509.UnrecognizedExtension(placeholder, _tcb(RUNTIME)), critical=False)
        .sign(issuer_key, hashes.SHA384())
    )
    if not twice:
        return signed.public_bytes(serialization.Encoding.DER)
    old, new = _oid(placeholder.dotted_string), _oid(TCB_INFO_OID.dotted_string)
    assert signed.tbs_certificate_bytes.count(old) == 1
    tbs = signed.tbs_certificate_bytes.replace(old, new)
    signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA384()))
    ecdsa_with_sha384 = _tlv(0x30, _oid("1.2.840.10045.4.3.3"))
    return _tlv(0x30, tbs + ecdsa_with_sha384 + _tlv(0x03, b"\x00" + signature))


@pytest.mark.parametrize("twice", [False, True])
def test_a_certificate_whose_extensions_cannot_be_read_is_a_bad_chain(twice: bool) -> None:
    expected = BAD_CHAIN if twice else GOOD
    fmc_alias = _issue(ID_KEY, IDENTITY, FMC_KEY, name="FMC Alias", ca=True, tcb_info=_tcb(FMC))
    leaf = _runtime_alias(FMC_KEY, fmc_alias, ca=False, twice=twice)
    loaded = x509.load_der_x509_certificate(leaf)
    loaded.verify_directly_issued_by(x509.load_der_x509_certificate(fmc_alias))
    if twice:
        with pytest.raises(x509.DuplicateExtension):
            _ = loaded.extensions
    assert _appraise(_evidence((leaf, fmc_alias), FMC, RUNTIME)) == expected
    # In an alias that issues another, read for its basicConstraints too.
    issuing = _runtime_alias(FMC_KEY, fmc_alias, ca=True, twice=twice)
    below_key = new_key()
    below = _issue(RT_KEY, issuing, below_key, name="below", ca=False, tcb_info=None)
    evidence = sign_evidence(below_key, NONCE, (FMC, RUNTIME), (below, issuing, fmc_alias))
    assert _appraise(evidence) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_any_bytes_give_fwids_or_a_value_error(data: bytes) -> None:
    try:
        fwids = tcb_info_fwids(data)
    except ValueError:
        return
    assert all(isinstance(f, Fwid) for f in fwids)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, len(VALID) - 1), delta=st.integers(1, 255))
def test_any_changed_byte_gives_fwids_or_a_value_error(position: int, delta: int) -> None:
    changed = VALID[:position] + bytes([VALID[position] ^ delta]) + VALID[position + 1 :]
    try:
        fwids = tcb_info_fwids(changed)
    except ValueError:
        return
    assert all(isinstance(f, Fwid) for f in fwids)


TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
FWIDS = st.lists(
    st.sampled_from([("sha-256", 32), ("sha-384", 48), ("sha-512", 64)]).flatmap(
        lambda a: st.binary(min_size=a[1], max_size=a[1]).map(lambda d: SimFwid(a[0], d))
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    info=st.builds(
        TcbInfo,
        vendor=st.none() | TEXT,
        model=st.none() | TEXT,
        version=st.none() | TEXT,
        svn=st.none() | st.integers(-(2**63), 2**64),
        layer=st.none() | st.integers(0, 16),
        index=st.none() | st.integers(0, 2**31),
        fwids=FWIDS.map(tuple),
        type=st.none() | st.binary(max_size=300),
    )
)
def test_what_the_simulators_encoder_writes_is_read_back(info: TcbInfo) -> None:
    assert tcb_info_fwids(encode_tcb_info(info)) == tuple(
        Fwid(f.alg, f.digest.hex()) for f in info.fwids
    )


# -- cost: parsed once per chain ---------------------------------------------------------------


def test_the_fwids_are_parsed_once_per_chain_and_compared_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sealtrail.provenance._evidence as module

    parsed: list[bytes] = []
    real = module.tcb_info_fwids

    def counting(value: bytes) -> tuple[Fwid, ...]:
        parsed.append(value)
        return real(value)

    monkeypatch.setattr(module, "tcb_info_fwids", counting)
    chains = AliasChains()
    chain = _chain(_tcb(FMC), _tcb(RUNTIME))
    assert _appraise(_evidence(chain, FMC, RUNTIME), chains=chains) == GOOD
    assert len(parsed) == 2
    assert _appraise(_evidence(chain, FMC, RUNTIME), chains=chains) == GOOD
    assert _appraise(_evidence(chain, FMC, OLD_RUNTIME), chains=chains)[1][0] == TCB
    assert len(parsed) == 2


def test_appraise_devices_gives_what_appraise_device_gives() -> None:
    items: list[tuple[DeviceEvidence | None, bytes]] = [
        (_evidence(MEASURED, FMC, RUNTIME), IDENTITY),
        (_evidence(MEASURED, FMC, OLD_RUNTIME), IDENTITY),
        (_evidence(_chain(VALID, b"garbage"), FMC, RUNTIME), IDENTITY),
        (None, IDENTITY),
    ]
    chains = AliasChains()
    together = appraise_devices(
        items,
        nonce=NONCE,
        release_of=RELEASES.get,
        min_security_version=POLICY.get,
        chains=chains,
    )
    assert together == [_appraise(evidence) for evidence, _ in items]
    assert [status for status, _ in together] == [EarStatus.AFFIRMING] + [
        EarStatus.CONTRAINDICATED
    ] * 3


# -- the simulator's devices ---------------------------------------------------------------------


def _maker(kind: DeviceKind) -> DeviceMaker:
    return DeviceMaker(f"tcb-{kind.value}", kind=kind, firmware=firmware_for("tcb")[kind])


MAKERS = {kind: _maker(kind) for kind in (DeviceKind.CALIPTRA, DeviceKind.CERBERUS)}
DICE = [
    (DeviceKind.CALIPTRA, Algorithm.ES384),
    *([(DeviceKind.CALIPTRA, Algorithm.ML_DSA_87)] * ML_DSA_SUPPORTED),
    (DeviceKind.CERBERUS, None),
]


def _ledger_evidence(evidence: Evidence) -> DeviceEvidence:
    measurements = tuple(
        ComponentMeasurement(m.component, DigestAlgorithm(m.alg), m.digest)
        for m in evidence.measurements
    )
    return DeviceEvidence(evidence.chain, measurements, evidence.signature)


def _released(maker: DeviceMaker) -> Callable[[ComponentMeasurement], int | None]:
    versions = {
        (r.component, m.alg.value, m.digest): r.security_version
        for r in maker.releases()
        for m in r.measurements
    }
    return lambda m: versions.get((m.component, m.alg.value, m.digest))


def _appraise_sim(
    rot: RotDevice, maker: DeviceMaker, algorithm: Algorithm | None, nonce: bytes
) -> tuple[EarStatus, tuple[str, ...]]:
    return appraise_device(
        _ledger_evidence(rot.attest(nonce, algorithm=algorithm)),
        nonce=nonce,
        identity=rot.identity_certificate(algorithm),
        release_of=_released(maker),
        chains=AliasChains(),
    )


def _boot_implant(rot: RotDevice, monkeypatch: pytest.MonkeyPatch, *, lying: bool) -> None:
    """Boot ``rot`` with its last image tampered; a ``lying`` implant reports the released
    measurements (the genuine image's), as firmware that holds the alias key can."""
    genuine = rot.measurements()
    *lower, last = rot.firmware
    rot.boot([*lower, last.tampered()])
    if lying:
        monkeypatch.setattr(type(rot), "measurements", lambda self: genuine)


@pytest.mark.parametrize(("kind", "algorithm"), DICE)
def test_an_implant_that_reports_the_released_digest_is_a_tcb_mismatch(
    kind: DeviceKind, algorithm: Algorithm | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    maker = MAKERS[kind]
    rot = maker.manufacture(f"implant-{kind.value}", algorithm=algorithm)
    _boot_implant(rot, monkeypatch, lying=True)
    nonce = secrets.token_bytes(32)
    assert _appraise_sim(rot, maker, algorithm, nonce) == MISMATCH
    # The simulator's operator verifier, a second implementation, finds the same.
    released = {(m.component, m.alg, m.digest) for m in rot.measurements()}
    evidence = rot.attest(nonce, algorithm=algorithm)
    assert check_evidence(
        rot.identity_certificate(algorithm), evidence, nonce, released=released
    ) == (TCB,)


@pytest.mark.parametrize(("kind", "algorithm"), DICE)
def test_an_implant_that_reports_its_own_digest_is_unknown_only(
    kind: DeviceKind, algorithm: Algorithm | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    maker = MAKERS[kind]
    rot = maker.manufacture(f"honest-implant-{kind.value}", algorithm=algorithm)
    _boot_implant(rot, monkeypatch, lying=False)
    assert _appraise_sim(rot, maker, algorithm, secrets.token_bytes(32)) == UNKNOWN


@pytest.mark.parametrize(("kind", "algorithm"), DICE)
def test_a_genuine_device_still_affirms(kind: DeviceKind, algorithm: Algorithm | None) -> None:
    maker = MAKERS[kind]
    rot = maker.manufacture(f"genuine-{kind.value}", algorithm=algorithm)
    assert _appraise_sim(rot, maker, algorithm, secrets.token_bytes(32)) == GOOD
    # What the ledger reads from each alias certificate is what the device measured.
    fwids: set[Fwid] = set()
    for der in rot.alias_chain(algorithm):
        certificate = x509.load_der_x509_certificate(der)
        info = tcb_info_of(certificate)
        if info is None:
            continue
        value = certificate.extensions.get_extension_for_oid(TCB_INFO_OID).value
        assert isinstance(value, x509.UnrecognizedExtension)
        read = tcb_info_fwids(value.value)
        assert read == tuple(Fwid(f.alg, f.digest.hex()) for f in info.fwids)
        fwids.update(read)
    assert fwids == {Fwid(m.alg, m.digest) for m in rot.measurements()}


# -- at registration --------------------------------------------------------------------------


def _server_with(rot: RotDevice, maker: DeviceMaker) -> World:
    world = World()
    world.ok(maker.name, maker.manifest("batch-1", [rot]))
    for release in maker.releases():
        world.ok(maker.name, release)
    world.ok(ASSEMBLER, Assembly(Node(NodeType.SERVER, "srv-1"), (DeviceRef(rot.device_id),)))
    return world


def _result(rot: RotDevice, nonce: bytes, claim: EarStatus | None) -> AttestationResult:
    (answer,) = Operator.challenge([rot], nonce)
    return Operator("operator").attestation("srv-1", [answer], nonce, claim=claim)


def test_registration_refuses_an_implant_recorded_as_affirming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    maker = MAKERS[DeviceKind.CALIPTRA]
    rot = maker.manufacture("registered-implant")
    world = _server_with(rot, maker)
    _boot_implant(rot, monkeypatch, lying=True)
    claimed = _result(rot, secrets.token_bytes(32), EarStatus.AFFIRMING)
    ours = world.state.appraise(claimed)
    assert [(d.status, d.reasons) for d in ours.devices] == [MISMATCH]
    refused = world.apply(OPERATOR, claimed)
    assert not refused.applied
    assert refused.code == "attestation-result-mismatch"
    assert TCB in refused.message
    assert world.state.rows.get("attestation", "srv-1") is None
    # Recorded as what it is, it is a fact like any other.
    honest = _result(rot, secrets.token_bytes(32), EarStatus.CONTRAINDICATED)
    assert world.apply(OPERATOR, honest).applied
    row = world.state.rows.get("attestation", "srv-1")
    assert row is not None
    assert row["status"] == "contraindicated"
    assert row["reasons"] == [TCB]


def test_registration_records_a_genuine_device_as_affirming() -> None:
    maker = MAKERS[DeviceKind.CALIPTRA]
    rot = maker.manufacture("registered-genuine")
    world = _server_with(rot, maker)
    assert world.apply(OPERATOR, _result(rot, secrets.token_bytes(32), EarStatus.AFFIRMING)).applied
    row = world.state.rows.get("attestation", "srv-1")
    assert row is not None
    assert (row["status"], row["reasons"]) == ("affirming", [])
