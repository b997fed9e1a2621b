"""The simulated devices' certificates: real X.509 that cryptography and OpenSSL parse, DICE
chains whose alias certificates carry the TCG ``DiceTcbInfo`` with the device's firmware
measurements, and an EK certificate in the TCG profile's shape."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.provenance import Algorithm, DeviceKind
from sealtrail.sim import (
    ML_DSA_SUPPORTED,
    TCB_INFO_OID,
    UEID_OID,
    Fwid,
    TcbInfo,
    decode_tcb_info,
    decode_ueid,
    encode_tcb_info,
    tcb_info_of,
)

from ._devices import device, every_identity, maker

OPENSSL = shutil.which("openssl")
SHA384_OID = "2.16.840.1.101.3.4.2.2"


def _certs(ders: tuple[bytes, ...]) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(d) for d in ders]


@pytest.mark.parametrize(("kind", "algorithm"), every_identity())
def test_alias_certificates_carry_the_devices_measurements(
    kind: DeviceKind, algorithm: Algorithm | None
) -> None:
    rot = device(kind, algorithm)
    aliases = _certs(rot.alias_chain(algorithm))
    fwids = []
    # Every layer's alias certificate carries a DiceTcbInfo; Caliptra's LDevID (last in
    # its chain, issued by the IDevID from ROM) measures nothing and carries the UEID.
    measured = aliases[:-1] if kind is DeviceKind.CALIPTRA else aliases
    for certificate in measured:
        info = tcb_info_of(certificate)
        assert info is not None, "every alias certificate carries a DiceTcbInfo"
        extension = certificate.extensions.get_extension_for_oid(TCB_INFO_OID)
        assert extension.critical
        assert info.vendor == rot.vendor
        fwids += [(f.alg, f.digest.hex()) for f in info.fwids]
    expected = [(m.alg, m.digest) for m in rot.measurements()]
    if kind is DeviceKind.TPM:
        assert aliases == [] and fwids == []  # the EK signs: no alias, no TcbInfo
    else:
        # Leaf first: the leaf alias (the last layer) measured the last image.
        assert sorted(fwids) == sorted(expected)
        leaf = tcb_info_of(aliases[0])
        assert leaf is not None
        assert [(f.alg, f.digest.hex()) for f in leaf.fwids] == expected[-1:]


@pytest.mark.parametrize(
    "algorithm", [Algorithm.ES384, *([Algorithm.ML_DSA_87] * ML_DSA_SUPPORTED)]
)
def test_caliptra_chain_is_idevid_ldevid_fmc_runtime(algorithm: Algorithm) -> None:
    rot = device(DeviceKind.CALIPTRA, algorithm)
    runtime, fmc, ldevid = _certs(rot.alias_chain(algorithm))
    idevid = x509.load_der_x509_certificate(rot.identity_certificate(algorithm))
    for child, issuer in ((runtime, fmc), (fmc, ldevid), (ldevid, idevid)):
        child.verify_directly_issued_by(issuer)
    names = [
        c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        for c in (idevid, ldevid, fmc, runtime)
    ]
    assert names == [
        "Caliptra-like RoT IDevID",
        "Caliptra-like RoT LDevID",
        "Caliptra-like RoT FMC Alias",
        "Caliptra-like RoT Runtime Alias",
    ]
    constraints = [
        c.extensions.get_extension_for_class(x509.BasicConstraints).value
        for c in (idevid, ldevid, fmc, runtime)
    ]
    assert [(b.ca, b.path_length) for b in constraints] == [
        (True, 2),
        (True, 1),
        (True, 0),
        (False, None),
    ]
    layers = [tcb_info_of(c).layer for c in (fmc, runtime)]  # type: ignore[union-attr]
    assert layers == [1, 2]
    ueid = decode_ueid(ldevid.extensions.get_extension_for_oid(UEID_OID).value.value)  # type: ignore[attr-defined]
    assert ueid[0] == 0x01 and len(ueid) == 17
    public = runtime.public_key()
    if algorithm is Algorithm.ES384:
        assert public.curve.name == "secp384r1"  # type: ignore[union-attr]
    else:
        assert runtime.public_key_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.19"


def test_other_firmware_gives_other_alias_keys_and_the_same_firmware_the_same() -> None:
    maker_ = maker(DeviceKind.CALIPTRA)
    rot = maker_.manufacture("caliptra-reboot")
    fmc, runtime = rot.firmware
    before = _certs(rot.alias_chain())
    rot.boot([fmc, runtime.tampered()])
    tampered = _certs(rot.alias_chain())
    rot.boot([fmc, runtime])
    again = _certs(rot.alias_chain())
    key = [c.public_key() for c in before]
    assert tampered[0].public_key() != key[0]  # the runtime alias follows the runtime image
    assert tampered[1].public_key() == key[1]  # the FMC alias did not change
    assert [c.public_key() for c in again] == key  # DICE: same firmware, same keys
    (fwid,) = tcb_info_of(tampered[0]).fwids  # type: ignore[union-attr]
    assert fwid.digest.hex() == runtime.tampered().digest != runtime.digest


def test_ek_certificate_has_the_tcg_profile_shape() -> None:
    ek = x509.load_der_x509_certificate(device(DeviceKind.TPM).identity_certificate())
    assert len(ek.subject) == 0
    san = ek.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    (directory,) = san.value.get_values_for_type(x509.DirectoryName)
    oids = [a.oid.dotted_string for a in directory]
    assert oids == ["2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3"]
    usage = ek.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_agreement and not usage.digital_signature
    ek.verify_directly_issued_by(maker(DeviceKind.TPM).device_cas[0])


@pytest.mark.parametrize(("kind", "algorithm"), every_identity())
def test_identity_chains_lead_to_the_makers_registered_device_ca(
    kind: DeviceKind, algorithm: Algorithm | None
) -> None:
    rot = device(kind, algorithm)
    chain = _certs(rot.identity().chain)
    for child, issuer in zip(chain, [*chain[1:], *maker(kind).device_cas], strict=False):
        child.verify_directly_issued_by(issuer)
    assert chain[-1].issuer == maker(kind).device_cas[0].subject


@given(
    st.builds(
        TcbInfo,
        vendor=st.none() | st.text(max_size=40),
        model=st.none() | st.text(max_size=40),
        version=st.none() | st.text(max_size=20),
        svn=st.none() | st.integers(-(2**40), 2**40),
        layer=st.none() | st.integers(0, 300),
        index=st.none() | st.integers(0, 300),
        fwids=st.lists(
            st.builds(
                Fwid,
                alg=st.sampled_from(["sha-256", "sha-384", "sha-512"]),
                digest=st.binary(max_size=200),
            ),
            max_size=4,
        ).map(tuple),
        type=st.none() | st.binary(max_size=10),
    )
)
def test_tcb_info_round_trips(info: TcbInfo) -> None:
    assert decode_tcb_info(encode_tcb_info(info)) == info


def test_tcb_info_der_is_as_the_tcg_asn1_says() -> None:
    digest = bytes(range(48))
    der = encode_tcb_info(TcbInfo(vendor="v", svn=3, layer=1, fwids=(Fwid("sha-384", digest),)))
    # SEQUENCE { [0] "v", [3] 3, [4] 1, [6] { SEQUENCE { OID sha384, OCTET STRING } } }
    fwid = bytes.fromhex("303d 0609 608648016503040202 0430") + digest
    assert der == bytes.fromhex("304a 800176 830103 840101 a63f") + fwid


# -- OpenSSL, an independent parser, where it is installed ------------------------------


def _openssl(*args: str, data: bytes) -> str:
    assert OPENSSL is not None
    run = subprocess.run([OPENSSL, *args], input=data, capture_output=True, timeout=30, check=False)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return run.stdout.decode(errors="replace")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize(("kind", "algorithm"), every_identity())
def test_openssl_parses_every_certificate(kind: DeviceKind, algorithm: Algorithm | None) -> None:
    rot = device(kind, algorithm)
    cas = [c.public_bytes(serialization.Encoding.DER) for c in maker(kind).device_cas]
    for der in (*rot.identity().chain, *rot.alias_chain(algorithm), *cas):
        text = _openssl("x509", "-inform", "DER", "-text", "-noout", data=der)
        assert "Certificate:" in text
    for der in rot.alias_chain(algorithm):
        text = _openssl("x509", "-inform", "DER", "-text", "-noout", data=der)
        has_tcb_info = tcb_info_of(x509.load_der_x509_certificate(der)) is not None
        assert ("2.23.133.5.4.1: critical" in text) == has_tcb_info


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_reads_the_tcb_info_as_the_asn1_says() -> None:
    rot = device(DeviceKind.CALIPTRA, Algorithm.ES384)
    runtime = x509.load_der_x509_certificate(rot.alias_chain()[0])
    value = runtime.extensions.get_extension_for_oid(TCB_INFO_OID).value.value  # type: ignore[attr-defined]
    text = _openssl("asn1parse", "-inform", "DER", data=value)
    assert "cont [ 0 ]" in text and "cont [ 6 ]" in text
    assert "sha384" in text or SHA384_OID in text
    digest = rot.measurements()[-1].digest.upper()
    assert digest in text.replace(":", "")
