"""Simulated devices: their evidence is what the ledger's own appraisal accepts, the
operator's verifier catches what it should, and their private keys never leave them."""

from __future__ import annotations

import copy
import pickle
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sealtrail.provenance import Algorithm, DeviceKind, DigestAlgorithm, EarStatus
from sealtrail.provenance._evidence import AliasChains, appraise_device
from sealtrail.provenance._evidence import evidence_message as ledger_message
from sealtrail.provenance._payloads import ComponentMeasurement, DeviceEvidence
from sealtrail.sim import (
    Answer,
    Evidence,
    Operator,
    ReportedMeasurement,
    RotDevice,
    check_evidence,
    evidence_message,
)
from sealtrail.sim._evidence import sign_message

from ._devices import device, every_identity, maker


def _ledger_evidence(evidence: Evidence) -> DeviceEvidence:
    return DeviceEvidence(
        chain=evidence.chain,
        measurements=tuple(
            ComponentMeasurement(m.component, DigestAlgorithm(m.alg), m.digest)
            for m in evidence.measurements
        ),
        signature=evidence.signature,
    )


def test_the_evidence_message_is_the_ledgers_byte_for_byte() -> None:
    nonce = secrets.token_bytes(32)
    reported = (
        ReportedMeasurement("caliptra-fmc", "sha-384", "0f" * 48),
        ReportedMeasurement("naïve-ü", "sha-256", "a1" * 32),
    )
    ours = evidence_message(nonce, reported)
    theirs = ledger_message(
        nonce,
        [ComponentMeasurement(m.component, DigestAlgorithm(m.alg), m.digest) for m in reported],
    )
    assert ours == theirs


@pytest.mark.parametrize(("kind", "algorithm"), every_identity())
def test_the_ledgers_appraisal_affirms_a_genuine_device(
    kind: DeviceKind, algorithm: Algorithm | None
) -> None:
    rot = device(kind, algorithm)
    nonce = secrets.token_bytes(32)
    evidence = rot.attest(nonce, algorithm=algorithm)
    released = {(m.component, m.alg, m.digest) for m in rot.measurements()}
    status, reasons = appraise_device(
        _ledger_evidence(evidence),
        nonce=nonce,
        identity=rot.identity_certificate(algorithm),
        release_of=lambda m: 1 if (m.component, m.alg.value, m.digest) in released else None,
        chains=AliasChains(),
    )
    assert (status, reasons) == (EarStatus.AFFIRMING, ())
    assert (
        check_evidence(rot.identity_certificate(algorithm), evidence, nonce, released=released)
        == ()
    )


def test_the_operators_verifier_names_what_is_wrong() -> None:
    rot = device(DeviceKind.CALIPTRA, Algorithm.ES384)
    other = device(DeviceKind.CERBERUS)
    identity = rot.identity_certificate()
    nonce = secrets.token_bytes(32)
    good = rot.attest(nonce)
    released = {(m.component, m.alg, m.digest) for m in rot.measurements()}
    assert check_evidence(identity, good, secrets.token_bytes(32)) == ("evidence-bad-signature",)
    assert check_evidence(identity, other.attest(nonce), nonce) == ("evidence-bad-chain",)
    assert check_evidence(identity, good, nonce, released=set()) == ("measurement-unknown",)
    # A compromised runtime holds the runtime alias key and may sign any measurements; the
    # alias certificate, issued by the layer below, still records what was really booted.
    lying = (
        *rot.measurements()[:1],
        ReportedMeasurement(good.measurements[1].component, "sha-384", "00" * 48),
    )
    key = rot._layers[Algorithm.ES384].signing_key
    assert key is not None
    forged = Evidence(good.chain, lying, sign_message(key, evidence_message(nonce, lying)))
    assert check_evidence(identity, forged, nonce, released=released) == (
        "evidence-tcb-mismatch",
        "measurement-unknown",
    )


def test_an_operator_records_what_its_verifier_found() -> None:
    rot = device(DeviceKind.CALIPTRA, Algorithm.ES384)
    operator = Operator("t1-dc")
    operator.trust(maker(DeviceKind.CALIPTRA).releases())
    nonce = secrets.token_bytes(32)
    (answer,) = operator.challenge([rot], nonce)
    assert operator.appraise(answer, nonce) == (EarStatus.AFFIRMING, ())
    result = operator.attestation("srv", [answer], nonce)
    assert result.status is EarStatus.AFFIRMING
    assert result.devices[0].evidence is not None
    stranger = Answer(answer.device_id, answer.identity, device(DeviceKind.TPM).attest(nonce))
    assert operator.attestation("srv", [stranger], nonce).status is EarStatus.CONTRAINDICATED
    claimed = operator.attestation("srv", [stranger], nonce, claim=EarStatus.AFFIRMING)
    assert claimed.status is EarStatus.AFFIRMING  # what a lying verifier records


# -- the keys stay inside -------------------------------------------------------------------

PRIVATE = (ec.EllipticCurvePrivateKey,)


def _private_scalars(rot: RotDevice) -> list[bytes]:
    """The device's private key bytes, dug out the way nothing outside a test may."""
    found = []
    for layer in rot._layers.values():
        for key in (layer.identity_key, layer.signing_key):
            if isinstance(key, ec.EllipticCurvePrivateKey):
                size = (key.curve.key_size + 7) // 8
                found.append(key.private_numbers().private_value.to_bytes(size, "big"))
            elif key is not None:
                found.append(key.private_bytes_raw())  # ML-DSA seed
    found.append(rot._secret)
    return found


@pytest.mark.parametrize(("kind", "algorithm"), every_identity())
def test_no_public_attribute_or_output_holds_a_private_key(
    kind: DeviceKind, algorithm: Algorithm | None
) -> None:
    rot = device(kind, algorithm)
    for name in dir(rot):
        if name.startswith("_"):
            continue
        value = getattr(rot, name)
        assert not isinstance(value, PRIVATE), name
        assert "PrivateKey" not in type(value).__name__, name
    nonce = secrets.token_bytes(32)
    outputs = [
        rot.identity_csr(algorithm),
        rot.identity_certificate(algorithm),
        *rot.identity().chain,
        *rot.alias_chain(algorithm),
        rot.attest(nonce, algorithm=algorithm).signature,
        repr(rot).encode(),
    ]
    blob = b"".join(outputs)
    for secret in _private_scalars(rot):
        assert secret not in blob
    assert "PRIVATE" not in repr(rot)


def test_a_device_can_be_neither_pickled_nor_copied() -> None:
    rot = device(DeviceKind.CERBERUS)
    with pytest.raises(TypeError, match="keys stay inside"):
        pickle.dumps(rot)
    with pytest.raises(TypeError, match="keys stay inside"):
        copy.copy(rot)
    with pytest.raises(TypeError, match="keys stay inside"):
        copy.deepcopy(rot)
    with pytest.raises(AttributeError):
        rot.stolen = "x"  # type: ignore[attr-defined]  # __slots__: no place to stash one
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(maker(DeviceKind.CERBERUS))


def test_provisioning_refuses_a_certificate_for_another_key() -> None:
    rot = maker(DeviceKind.CERBERUS).manufacture("cerberus-x")
    other = device(DeviceKind.CERBERUS).identity_certificate()
    with pytest.raises(ValueError, match="not for this device"):
        rot.provision(other)
