"""Signature checks spread over the cores give the verdicts of checks made one by one.

A manifest's identity chains go to worker processes (``validate_many``), an attestation's
evidence to helper threads (``appraise_devices``); the first failure is named as the
sequential walk names it, the cache is filled the same way, and a pool that cannot run
leaves the work to the caller.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sealtrail.errors import VerificationError
from sealtrail.keys import parallel as _parallel
from sealtrail.provenance import DeviceChainValidator, _devicechain
from sealtrail.provenance._evidence import (
    AliasChains,
    appraise_device,
    appraise_devices,
    sign_evidence,
)
from sealtrail.provenance._payloads import ComponentMeasurement, DigestAlgorithm

from ._certs import CA_DER, NOW, alias, identity, new_key

CA = x509.load_der_x509_certificate(CA_DER)
DER = serialization.Encoding.DER
RUNTIME = ComponentMeasurement("caliptra-rt", DigestAlgorithm.SHA384, "a1" * 48)
NONCE = bytes(range(32))


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two workers, whatever the machine has."""
    monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", "2")
    yield
    _parallel.shutdown()


def _chains(count: int) -> list[tuple[bytes, ...]]:
    return [(identity(new_key(), f"rot-{i}"),) for i in range(count)]


def _other_makers_leaf() -> bytes:
    """A device identity issued in the test CA's name by another key."""
    other = new_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "IDevID rogue")]))
        .issuer_name(CA.subject)
        .public_key(new_key().public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW.replace(year=NOW.year + 1))
        .sign(other, hashes.SHA384())
        .public_bytes(DER)
    )


def _refusal(validator: DeviceChainValidator, chains: list[tuple[bytes, ...]]) -> str:
    with pytest.raises(VerificationError) as caught:
        validator.validate_many(chains, [CA], where=lambda i: f"devices[{i}]")
    assert caught.value.code == "manifest-device-untrusted"
    return caught.value.message


@pytest.mark.usefixtures("pool")
def test_worker_processes_accept_a_good_manifest_and_fill_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chains = _chains(6)
    validator = DeviceChainValidator(parallel_from=1)
    validator.validate_many(chains, [CA], where=str)
    # Every link the workers verified is cached: a second look checks nothing.
    monkeypatch.setattr(_parallel, "run", pytest.fail)
    monkeypatch.setattr(_devicechain, "_signature_verifies", pytest.fail)
    validator.validate_many(chains, [CA], where=str)
    validator.validate(chains[3], [CA], where="devices[3]")


@pytest.mark.usefixtures("pool")
@pytest.mark.parametrize("parallel_from", [1, None])
def test_the_first_bad_chain_is_named_in_parallel_and_in_place(parallel_from: int | None) -> None:
    chains = _chains(12)
    chains[5] = (_other_makers_leaf(),)
    chains[9] = (b"\x30\x03\x02\x01\x00",)
    message = _refusal(DeviceChainValidator(parallel_from=parallel_from), chains)
    assert message.startswith("devices[5]: ")
    assert "does not chain to a registered device CA" in message
    chains[5] = chains[4]
    message = _refusal(DeviceChainValidator(parallel_from=parallel_from), chains)
    assert message.startswith("devices[9]: ")
    assert "not a certificate" in message


def test_a_manifest_without_device_ca_is_refused_before_any_check() -> None:
    with pytest.raises(VerificationError) as caught:
        DeviceChainValidator(parallel_from=1).validate_many(_chains(1), [], where=str)
    assert caught.value.code == "manifest-no-device-ca"


def test_without_a_pool_the_chains_are_checked_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "run", lambda fn, chunks: None)
    chains = _chains(3)
    DeviceChainValidator(parallel_from=1).validate_many(chains, [CA], where=str)
    chains[1] = (_other_makers_leaf(),)
    assert _refusal(DeviceChainValidator(parallel_from=1), chains).startswith("devices[1]: ")


def test_a_cached_chain_is_settled_only_along_the_walks_own_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    validator = DeviceChainValidator(parallel_from=None)
    (leaf,) = _chains(1)[0]
    validator.validate((leaf,), [CA], where="devices[0]")
    root = [hashlib.sha256(CA_DER).digest()]
    assert validator._cached((leaf,), root)
    # Not settled by the cache, though every link is known: the walk reaches the root
    # before the chain's end, or meets a certificate nobody checked.
    assert not validator._cached((leaf, CA_DER), root)
    assert not validator._cached((leaf, b"garbage"), root)
    assert not validator._cached((identity(new_key(), "x"),), root)
    monkeypatch.setattr(_devicechain, "_signature_verifies", pytest.fail)
    validator.validate_many([(leaf, CA_DER)], [CA], where=str)  # the walk, from the cache
    with pytest.raises(VerificationError, match="not a certificate"):
        validator.validate_many([(leaf, b"garbage")], [CA], where=str)


# -- the signature check itself ---------------------------------------------------------------


def test_an_ecdsa_certificate_whose_inner_algorithm_differs_is_not_taken_the_fast_way() -> None:
    leaf_der = identity(new_key(), "rot-1")
    leaf = x509.load_der_x509_certificate(leaf_der)
    assert _devicechain._plain_ecdsa(leaf)
    assert _devicechain._signature_verifies(leaf, CA)
    # The TBSCertificate's copy of the algorithm (the first one) says SHA-256 instead.
    sha384 = _devicechain._ECDSA_IDS[x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384]
    sha256 = _devicechain._ECDSA_IDS[x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256]
    tampered = x509.load_der_x509_certificate(leaf_der.replace(sha384, sha256, 1))
    assert not _devicechain._plain_ecdsa(tampered)
    assert not _devicechain._signature_verifies(tampered, CA)


def test_other_algorithms_go_through_cryptographys_own_check() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Ed25519 Device CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW.replace(year=NOW.year + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    leaf = x509.load_der_x509_certificate(alias(key, ca.public_bytes(DER), new_key()))
    assert _devicechain._signature_verifies(leaf, ca)
    assert not _devicechain._signature_verifies(leaf, CA)


# -- an attestation's evidence ---------------------------------------------------------------------


def test_appraising_devices_together_gives_each_ones_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", "3")
    keys = [new_key() for _ in range(5)]
    identities = [identity(k, f"rot-{i}") for i, k in enumerate(keys)]
    alias_key = new_key()
    chain = (alias(keys[1], identities[1], alias_key),)
    items = [
        (sign_evidence(keys[0], NONCE, (RUNTIME,)), identities[0]),  # good
        (sign_evidence(alias_key, NONCE, (RUNTIME,), chain), identities[1]),  # good, alias
        (sign_evidence(keys[0], NONCE, (RUNTIME,)), identities[2]),  # another device's key
        (None, identities[3]),  # missing
        (sign_evidence(keys[4], bytes(32), (RUNTIME,)), identities[4]),  # another nonce
        (sign_evidence(alias_key, NONCE, (RUNTIME,), chain), identities[0]),  # not its alias
    ]
    releases = {RUNTIME: 1}
    try:
        together = appraise_devices(
            items, nonce=NONCE, release_of=releases.get, chains=AliasChains()
        )
    finally:
        _parallel.shutdown()
    one_by_one = [
        appraise_device(e, nonce=NONCE, identity=i, release_of=releases.get, chains=AliasChains())
        for e, i in items
    ]
    assert together == one_by_one
    assert [status.value for status, _ in together] == [
        "affirming",
        "affirming",
        "contraindicated",
        "contraindicated",
        "contraindicated",
        "contraindicated",
    ]


def test_in_threads_keeps_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", "3")
    try:
        assert _parallel.in_threads(lambda x: x * x, list(range(11))) == [x * x for x in range(11)]
        assert _parallel.in_threads(lambda x: x, []) == []
    finally:
        _parallel.shutdown()
    monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", "0")
    assert _parallel.in_threads(str, [1, 2]) == ["1", "2"]
