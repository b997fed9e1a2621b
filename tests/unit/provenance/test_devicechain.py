"""Device identity chains to the maker's device CAs: real P-384 certificates, every way to fail."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealtrail.errors import VerificationError
from sealtrail.provenance import MAX_DEVICE_CHAIN, DeviceChainValidator, _devicechain

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DER = serialization.Encoding.DER


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = True,
    constraints: bool = True,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))  # expired long ago: dates are not checked
    )
    if constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    return builder.sign(issuer_key, hashes.SHA384())


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


ROOT_KEY, MID_KEY, LEAF_KEY = _key(), _key(), _key()
ROOT = _cert("Device Root", ROOT_KEY)
MID = _cert("Device Intermediate", MID_KEY, ("Device Root", ROOT_KEY))
LEAF = _cert("IDevID 1", LEAF_KEY, ("Device Intermediate", MID_KEY))


def _chain(*certs: x509.Certificate) -> list[bytes]:
    return [c.public_bytes(DER) for c in certs]


def test_a_chain_through_an_intermediate_to_the_device_ca() -> None:
    validator = DeviceChainValidator()
    validator.validate(_chain(LEAF, MID), [ROOT], where="devices[0]")
    validator.validate(_chain(MID), [ROOT], where="devices[0]")  # a leaf issued by the CA


def test_links_are_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    validator = DeviceChainValidator()
    calls = 0
    original = _devicechain._signature_verifies

    def counting(child: x509.Certificate, parent: x509.Certificate) -> bool:
        nonlocal calls
        calls += 1
        return original(child, parent)

    monkeypatch.setattr(_devicechain, "_signature_verifies", counting)
    validator.validate(_chain(LEAF, MID), [ROOT], where="devices[0]")
    assert calls == 2
    validator.validate(_chain(LEAF, MID), [ROOT], where="devices[0]")
    assert calls == 2


def _refused(chain: list[bytes], anchors: list[x509.Certificate], code: str) -> None:
    with pytest.raises(VerificationError) as caught:
        DeviceChainValidator().validate(chain, anchors, where="devices[7]")
    assert caught.value.code == code
    assert "devices[7]" in caught.value.message or code == "manifest-no-device-ca"


def test_another_makers_ca_is_refused() -> None:
    _refused(_chain(LEAF, MID), [_cert("Device Root", _key())], "manifest-device-untrusted")


def test_a_missing_intermediate_is_refused() -> None:
    _refused(_chain(LEAF), [ROOT], "manifest-device-untrusted")


def test_no_device_ca_at_all_is_refused() -> None:
    _refused(_chain(LEAF, MID), [], "manifest-no-device-ca")


def test_an_intermediate_that_is_not_a_ca_cannot_issue() -> None:
    not_ca = _cert("Device Intermediate", MID_KEY, ("Device Root", ROOT_KEY), ca=False)
    _refused(_chain(LEAF, not_ca), [ROOT], "manifest-device-untrusted")
    bare = _cert("Device Intermediate", MID_KEY, ("Device Root", ROOT_KEY), constraints=False)
    _refused(_chain(LEAF, bare), [ROOT], "manifest-device-untrusted")


def test_a_forged_signature_with_the_right_names_is_refused() -> None:
    forged = _cert("IDevID 1", LEAF_KEY, ("Device Intermediate", _key()))
    _refused(_chain(forged, MID), [ROOT], "manifest-device-untrusted")


def test_garbage_in_the_chain_is_refused() -> None:
    _refused([LEAF.public_bytes(DER), b"\x30\x03\x02\x01\x00"], [ROOT], "manifest-device-untrusted")


def test_a_chain_longer_than_the_limit_is_refused() -> None:
    keys = [_key() for _ in range(MAX_DEVICE_CHAIN + 1)]
    certs = [_cert("CA 0", keys[0], ("Device Root", ROOT_KEY))]
    for i in range(1, len(keys)):
        certs.append(_cert(f"CA {i}", keys[i], (f"CA {i - 1}", keys[i - 1])))
    _refused(_chain(*reversed(certs)), [ROOT], "manifest-device-untrusted")
    DeviceChainValidator().validate(_chain(*reversed(certs[:4])), [ROOT], where="devices[0]")
