"""Attestation evidence: the signed message, alias chains, appraisal outcomes and the payload.

Most tests are attacks: evidence from another key, a chain not issued by the device, a
replayed or altered signature, firmware nobody registered. Each must end in a reason code,
never in ``affirming`` and never in an exception.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.errors import Error, InvalidInput, TooLarge
from sealtrail.provenance import device_id
from sealtrail.provenance._evidence import (
    EVIDENCE_CONTEXT,
    ML_DSA_AVAILABLE,
    AliasChains,
    EvidenceReason,
    appraise_device,
    evidence_message,
    sign_evidence,
)
from sealtrail.provenance._payloads import (
    MAX_CHAIN_LENGTH,
    MAX_MEASUREMENTS,
    MAX_SIGNATURE_SIZE,
    AttestationResult,
    ComponentMeasurement,
    DeviceEvidence,
    DeviceResult,
    DigestAlgorithm,
    EarStatus,
    TrustClaim,
    parse_attestation_result,
)

from ._certs import CA_DER, alias, identity, identity_for, new_key

try:
    from cryptography.hazmat.primitives.asymmetric import mldsa
except ImportError:  # pragma: no cover - depends on the installed cryptography
    mldsa = None  # type: ignore[assignment]

needs_ml_dsa = pytest.mark.skipif(
    not ML_DSA_AVAILABLE, reason="the installed cryptography has no ML-DSA"
)

NONCE = bytes(range(32))
OTHER_NONCE = bytes(range(1, 33))

FMC = ComponentMeasurement("caliptra-fmc", DigestAlgorithm.SHA384, "0f" * 48)
RUNTIME = ComponentMeasurement("caliptra-rt", DigestAlgorithm.SHA384, "a1" * 48)
OLD_RUNTIME = ComponentMeasurement("caliptra-rt", DigestAlgorithm.SHA384, "b2" * 48)
MEASUREMENTS = (FMC, RUNTIME)

#: The registered releases: measurement -> security version.
RELEASES = {FMC: 3, RUNTIME: 5, OLD_RUNTIME: 1}
POLICY = {"caliptra-rt": 2}

# One Caliptra-like device: IDevID -> LDevID -> FMC alias -> runtime alias (all P-384).
ID_KEY = new_key()
IDENTITY = identity(ID_KEY, "CPT-0001")
LDEV_KEY, FMC_KEY, RT_KEY = new_key(), new_key(), new_key()
LDEV = alias(ID_KEY, IDENTITY, LDEV_KEY, name="LDevID", ca=True)
FMC_ALIAS = alias(LDEV_KEY, LDEV, FMC_KEY, name="FMC Alias", ca=True)
RT_ALIAS = alias(FMC_KEY, FMC_ALIAS, RT_KEY, name="Runtime Alias")
DICE_CHAIN = (RT_ALIAS, FMC_ALIAS, LDEV)

# Another device, of the same maker (its identity has the same issuer).
OTHER_KEY = new_key()
OTHER_IDENTITY = identity(OTHER_KEY, "CPT-0002")


def release_of(measurement: ComponentMeasurement) -> int | None:
    return RELEASES.get(measurement)


def appraise(
    evidence: DeviceEvidence | None,
    *,
    nonce: bytes = NONCE,
    ident: bytes = IDENTITY,
    chains: AliasChains | None = None,
    policy: Callable[[str], int | None] = POLICY.get,
) -> tuple[EarStatus, tuple[str, ...]]:
    return appraise_device(
        evidence,
        nonce=nonce,
        identity=ident,
        release_of=release_of,
        min_security_version=policy,
        chains=chains or AliasChains(),
    )


GOOD = (EarStatus.AFFIRMING, ())
BAD_SIGNATURE = (EarStatus.CONTRAINDICATED, ("evidence-bad-signature",))
BAD_CHAIN = (EarStatus.CONTRAINDICATED, ("evidence-bad-chain",))


# -- the signed message --------------------------------------------------------------------


def test_message_bytes_are_as_documented() -> None:
    nonce = b"\x01" * 16
    message = evidence_message(nonce, [FMC])
    assert message == (
        b"sealtrail-attestation-v1\x00"
        + b"\x00\x10"
        + nonce
        + b'[{"alg":"sha-384","component":"caliptra-fmc","digest":"'
        + b"0f" * 48
        + b'"}]'
    )
    assert EVIDENCE_CONTEXT == b"sealtrail-attestation-v1\x00"


def test_message_keeps_the_evidence_order_and_utf8() -> None:
    unicode = ComponentMeasurement('fw "ü" \\ rt', DigestAlgorithm.SHA256, "00" * 32)
    message = evidence_message(NONCE, [RUNTIME, unicode])
    listed = message[len(EVIDENCE_CONTEXT) + 2 + len(NONCE) :]
    assert listed.decode("utf-8").index("caliptra-rt") < listed.decode("utf-8").index("ü")
    assert '"component":"fw \\"ü\\" \\\\ rt"'.encode() in listed
    assert evidence_message(NONCE, [RUNTIME, unicode]) != evidence_message(
        NONCE, [unicode, RUNTIME]
    )


@pytest.mark.parametrize("size", [0, 15, 65, 300])
def test_nonce_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError, match="nonce"):
        evidence_message(b"\x00" * size, MEASUREMENTS)
    with pytest.raises(ValueError, match="nonce"):
        sign_evidence(ID_KEY, b"\x00" * size, MEASUREMENTS)
    with pytest.raises(ValueError, match="nonce"):
        appraise(None, nonce=b"\x00" * size)


MEASUREMENT = st.builds(
    ComponentMeasurement,
    component=st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), min_size=1
    ).filter(lambda c: c == c.strip()),
    alg=st.just(DigestAlgorithm.SHA256),
    digest=st.binary(min_size=32, max_size=32).map(bytes.hex),
)


@settings(max_examples=200, deadline=None)
@given(nonce=st.binary(min_size=16, max_size=64), measurements=st.lists(MEASUREMENT, max_size=5))
def test_message_reads_back(nonce: bytes, measurements: list[ComponentMeasurement]) -> None:
    """Another implementation can split the message as documented and get the inputs back."""
    message = evidence_message(nonce, measurements)
    assert message.startswith(EVIDENCE_CONTEXT)
    rest = message[len(EVIDENCE_CONTEXT) :]
    size = int.from_bytes(rest[:2], "big")
    assert rest[2 : 2 + size] == nonce
    listed = json.loads(rest[2 + size :].decode("utf-8"))
    assert listed == [
        {"alg": m.alg.value, "component": m.component, "digest": m.digest} for m in measurements
    ]
    assert json.dumps(listed, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == rest[
        2 + size :
    ].decode("utf-8")


def test_ecdsa_signature_is_raw_r_and_s() -> None:
    evidence = sign_evidence(ID_KEY, NONCE, MEASUREMENTS)
    assert len(evidence.signature) == 96
    p256 = new_key(ec.SECP256R1())
    assert len(sign_evidence(p256, NONCE, MEASUREMENTS).signature) == 64


def test_a_der_encoded_ecdsa_signature_is_refused() -> None:
    """A signer that sends ASN.1 DER instead of r || s fails, rather than being guessed at."""
    message = evidence_message(NONCE, MEASUREMENTS)
    der = ID_KEY.sign(message, ec.ECDSA(hashes.SHA384()))
    decode_dss_signature(der)  # it is a valid signature, in the wrong encoding
    assert appraise(DeviceEvidence((), MEASUREMENTS, der)) == BAD_SIGNATURE


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP521R1()), ed25519.Ed25519PrivateKey.generate()],
    ids=["p521", "ed25519"],
)
def test_sign_evidence_refuses_other_keys(key: Any) -> None:
    with pytest.raises(ValueError, match="ECDSA"):
        sign_evidence(key, NONCE, MEASUREMENTS)


# -- good evidence -------------------------------------------------------------------------


def test_identity_key_signs_directly() -> None:
    assert appraise(sign_evidence(ID_KEY, NONCE, MEASUREMENTS)) == GOOD


def test_dice_alias_chain() -> None:
    assert appraise(sign_evidence(RT_KEY, NONCE, MEASUREMENTS, DICE_CHAIN)) == GOOD


def test_one_alias_issued_by_the_identity() -> None:
    key = new_key()
    chain = (alias(ID_KEY, IDENTITY, key),)
    assert appraise(sign_evidence(key, NONCE, MEASUREMENTS, chain)) == GOOD


def test_p256_identity_and_p256_alias() -> None:
    id_key = new_key(ec.SECP256R1())
    ident = identity(id_key, "P256")
    assert appraise(sign_evidence(id_key, NONCE, MEASUREMENTS), ident=ident) == GOOD
    key = new_key(ec.SECP256R1())
    chain = (alias(ID_KEY, IDENTITY, key),)
    assert appraise(sign_evidence(key, NONCE, MEASUREMENTS, chain)) == GOOD


# -- attacks: keys and chains --------------------------------------------------------------


def test_evidence_signed_by_another_key() -> None:
    assert appraise(sign_evidence(OTHER_KEY, NONCE, MEASUREMENTS)) == BAD_SIGNATURE
    assert appraise(sign_evidence(new_key(), NONCE, MEASUREMENTS)) == BAD_SIGNATURE


def test_good_chain_but_signed_by_another_key() -> None:
    """A device's public alias chain copied next to a signature of the attacker's key."""
    evidence = sign_evidence(new_key(), NONCE, MEASUREMENTS, DICE_CHAIN)
    assert appraise(evidence) == BAD_SIGNATURE
    evidence = sign_evidence(FMC_KEY, NONCE, MEASUREMENTS, DICE_CHAIN)  # the wrong layer's key
    assert appraise(evidence) == BAD_SIGNATURE


def test_alias_not_issued_by_the_identity_key() -> None:
    key = new_key()
    # The right issuer name, signed by an attacker's key.
    forged = alias(new_key(), IDENTITY, key)
    assert appraise(sign_evidence(key, NONCE, MEASUREMENTS, (forged,))) == BAD_CHAIN
    # Another device's genuine alias: it chains to that device, not to this one.
    theirs = alias(OTHER_KEY, OTHER_IDENTITY, key)
    assert appraise(sign_evidence(key, NONCE, MEASUREMENTS, (theirs,))) == BAD_CHAIN
    assert appraise(sign_evidence(key, NONCE, MEASUREMENTS, (theirs,)), ident=OTHER_IDENTITY) == (
        GOOD
    )


def test_another_devices_whole_chain() -> None:
    """Good evidence of one device presented for another device."""
    evidence = sign_evidence(RT_KEY, NONCE, MEASUREMENTS, DICE_CHAIN)
    assert appraise(evidence, ident=OTHER_IDENTITY) == BAD_CHAIN
    # The same key under a certificate re-issued by the maker is the same device.
    assert appraise(evidence, ident=identity(ID_KEY, "CPT-0001")) == GOOD
    assert device_id(identity(ID_KEY, "CPT-0001")) == device_id(IDENTITY)


def test_a_broken_link_in_the_middle() -> None:
    rogue = new_key()
    rogue_fmc = alias(rogue, LDEV, FMC_KEY, name="FMC Alias", ca=True)  # LDevID's name, not key
    evidence = sign_evidence(RT_KEY, NONCE, MEASUREMENTS, (RT_ALIAS, rogue_fmc, LDEV))
    assert appraise(evidence) == BAD_CHAIN


def test_a_leaf_alias_cannot_extend_the_chain() -> None:
    """The runtime alias (not a CA) certifying a key of its own choosing is refused."""
    extra = new_key()
    below = alias(RT_KEY, RT_ALIAS, extra, name="Rogue")
    evidence = sign_evidence(extra, NONCE, MEASUREMENTS, (below, *DICE_CHAIN))
    assert appraise(evidence) == BAD_CHAIN


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param((LDEV, FMC_ALIAS, RT_ALIAS), id="reversed"),
        pytest.param((RT_ALIAS, LDEV), id="link missing"),
        pytest.param((RT_ALIAS, FMC_ALIAS, LDEV, LDEV), id="link repeated"),
        pytest.param((b"\x30\x03\x02\x01\x01",), id="not a certificate"),
        pytest.param((RT_ALIAS, FMC_ALIAS, LDEV, IDENTITY), id="identity in the chain"),
        pytest.param((RT_ALIAS, FMC_ALIAS, LDEV, CA_DER), id="maker CA in the chain"),
        pytest.param((RT_ALIAS + b"\x00", FMC_ALIAS, LDEV), id="trailing byte"),
        pytest.param((b"\x00" * (16 * 1024 + 1),), id="oversized"),
        pytest.param((RT_ALIAS,) * (MAX_CHAIN_LENGTH + 1), id="too long"),
    ],
)
def test_bad_chains(chain: tuple[bytes, ...]) -> None:
    assert appraise(sign_evidence(RT_KEY, NONCE, MEASUREMENTS, chain)) == BAD_CHAIN


def test_unusable_identity() -> None:
    evidence = sign_evidence(ID_KEY, NONCE, MEASUREMENTS)
    assert appraise(evidence, ident=b"not DER") == BAD_CHAIN


def test_a_key_that_cannot_sign_evidence_is_never_good() -> None:
    """An Ed25519 (or P-521) identity: no signature of it is accepted, whatever it is."""
    ed = ed25519.Ed25519PrivateKey.generate()
    ident = identity_for(ed.public_key(), "ED")
    bogus = DeviceEvidence((), MEASUREMENTS, ed.sign(evidence_message(NONCE, MEASUREMENTS)))
    assert appraise(bogus, ident=ident) == BAD_CHAIN
    p521 = ec.generate_private_key(ec.SECP521R1())
    assert appraise(bogus, ident=identity_for(p521.public_key(), "P521")) == BAD_CHAIN


# -- attacks: altered and replayed evidence ------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


EVIDENCE = sign_evidence(RT_KEY, NONCE, MEASUREMENTS, DICE_CHAIN)


@pytest.mark.parametrize(
    "evidence",
    [
        pytest.param(
            DeviceEvidence(DICE_CHAIN, MEASUREMENTS, _flip(EVIDENCE.signature, 0)), id="sig first"
        ),
        pytest.param(
            DeviceEvidence(DICE_CHAIN, MEASUREMENTS, _flip(EVIDENCE.signature, 95)), id="sig last"
        ),
        pytest.param(
            DeviceEvidence(DICE_CHAIN, MEASUREMENTS, EVIDENCE.signature[:-1]), id="sig short"
        ),
        pytest.param(
            DeviceEvidence(DICE_CHAIN, MEASUREMENTS, EVIDENCE.signature + b"\x00"), id="sig long"
        ),
        pytest.param(DeviceEvidence(DICE_CHAIN, MEASUREMENTS, b"\x00" * 96), id="sig zero"),
        pytest.param(DeviceEvidence(DICE_CHAIN, MEASUREMENTS, b""), id="sig empty"),
        pytest.param(
            DeviceEvidence(DICE_CHAIN, (FMC, OLD_RUNTIME), EVIDENCE.signature),
            id="measurement swapped for a known one",
        ),
        pytest.param(
            DeviceEvidence(DICE_CHAIN, (FMC,), EVIDENCE.signature), id="measurement dropped"
        ),
        pytest.param(
            DeviceEvidence(DICE_CHAIN, (RUNTIME, FMC), EVIDENCE.signature), id="reordered"
        ),
        pytest.param(
            DeviceEvidence(
                DICE_CHAIN,
                (
                    FMC,
                    ComponentMeasurement("caliptra-rt", DigestAlgorithm.SHA384, "a0" + "a1" * 47),
                ),
                EVIDENCE.signature,
            ),
            id="digest byte",
        ),
        pytest.param(
            DeviceEvidence(
                DICE_CHAIN,
                (FMC, ComponentMeasurement("caliptra-RT", DigestAlgorithm.SHA384, "a1" * 48)),
                EVIDENCE.signature,
            ),
            id="component",
        ),
    ],
)
def test_altered_evidence(evidence: DeviceEvidence) -> None:
    assert appraise(evidence) == BAD_SIGNATURE


def test_altered_nonce() -> None:
    assert appraise(EVIDENCE) == GOOD
    assert appraise(EVIDENCE, nonce=_flip(NONCE, 31)) == BAD_SIGNATURE
    assert appraise(EVIDENCE, nonce=NONCE + b"\x00") == BAD_SIGNATURE
    assert appraise(EVIDENCE, nonce=NONCE[:-1]) == BAD_SIGNATURE


def test_replayed_evidence() -> None:
    """Evidence from an earlier attestation (another nonce) says nothing about this one."""
    earlier = sign_evidence(RT_KEY, OTHER_NONCE, MEASUREMENTS, DICE_CHAIN)
    assert appraise(earlier, nonce=OTHER_NONCE) == GOOD
    assert appraise(earlier, nonce=NONCE) == BAD_SIGNATURE
    # Nor does another context's signature over the same bytes minus the context.
    bare = evidence_message(NONCE, MEASUREMENTS)[len(EVIDENCE_CONTEXT) :]
    r, s = decode_dss_signature(RT_KEY.sign(bare, ec.ECDSA(hashes.SHA384())))
    raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    assert appraise(DeviceEvidence(DICE_CHAIN, MEASUREMENTS, raw)) == BAD_SIGNATURE


ALTERATION = st.one_of(
    st.tuples(st.just("nonce"), st.integers(0, len(NONCE) - 1), st.integers(1, 255)),
    st.tuples(st.just("signature"), st.integers(0, 95), st.integers(1, 255)),
    st.tuples(st.just("component"), st.integers(0, 100), st.integers(1, 25)),
    st.tuples(st.just("digest"), st.integers(0, 2 * 48 * 2 - 1), st.integers(1, 15)),
)
HEX = "0123456789abcdef"
SHARED = AliasChains()
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _alter(part: str, index: int, delta: int) -> tuple[DeviceEvidence, bytes]:
    """EVIDENCE and NONCE with one byte (or character) of one part of the message changed."""
    measurements = list(MEASUREMENTS)
    nonce, signature = NONCE, EVIDENCE.signature
    if part == "nonce":
        nonce = nonce[:index] + bytes([nonce[index] ^ delta]) + nonce[index + 1 :]
    elif part == "signature":
        signature = signature[:index] + bytes([signature[index] ^ delta]) + signature[index + 1 :]
    elif part == "component":
        which = index % 2
        m = measurements[which]
        at = index % len(m.component)
        old = m.component[at]
        new = LETTERS[(LETTERS.index(old) + delta) % 26] if old in LETTERS else "x"
        component = m.component[:at] + new + m.component[at + 1 :]
        measurements[which] = ComponentMeasurement(component, m.alg, m.digest)
    else:
        which, at = divmod(index, 96)
        m = measurements[which]
        new = HEX[(HEX.index(m.digest[at]) + delta) % 16]
        measurements[which] = ComponentMeasurement(
            m.component, m.alg, m.digest[:at] + new + m.digest[at + 1 :]
        )
    return DeviceEvidence(DICE_CHAIN, tuple(measurements), signature), nonce


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alteration=ALTERATION)
def test_any_single_change_of_the_signed_message_fails(alteration: tuple[str, int, int]) -> None:
    evidence, nonce = _alter(*alteration)
    message = evidence_message(nonce, evidence.measurements)
    original = evidence_message(NONCE, MEASUREMENTS)
    if alteration[0] != "signature":
        assert message != original
        assert len(message) == len(original)
        assert sum(a != b for a, b in zip(message, original, strict=True)) == 1
    status, reasons = appraise(evidence, nonce=nonce, chains=SHARED)
    assert status is EarStatus.CONTRAINDICATED
    assert reasons == ("evidence-bad-signature",)


# -- measurements and policy ---------------------------------------------------------------


def test_unknown_measurement() -> None:
    unknown = ComponentMeasurement("caliptra-rt", DigestAlgorithm.SHA384, "ee" * 48)
    evidence = sign_evidence(RT_KEY, NONCE, (FMC, unknown), DICE_CHAIN)
    assert appraise(evidence) == (EarStatus.CONTRAINDICATED, ("measurement-unknown",))
    # The digest of a release under another algorithm is another measurement.
    other_alg = ComponentMeasurement("caliptra-fmc", DigestAlgorithm.SHA512, "0f" * 64)
    evidence = sign_evidence(RT_KEY, NONCE, (other_alg,), DICE_CHAIN)
    assert appraise(evidence) == (EarStatus.CONTRAINDICATED, ("measurement-unknown",))


def test_security_version_below_policy_warns() -> None:
    evidence = sign_evidence(RT_KEY, NONCE, (FMC, OLD_RUNTIME), DICE_CHAIN)
    assert appraise(evidence) == (EarStatus.WARNING, ("security-version-too-low",))
    assert appraise(evidence, policy=lambda _: None) == GOOD
    assert appraise(evidence, policy=lambda c: 1 if c == "caliptra-rt" else None) == GOOD  # equal
    assert appraise(evidence, policy=lambda _: 4) == (
        EarStatus.WARNING,
        ("security-version-too-low",),
    )


def test_unknown_and_too_low_together_are_contraindicated() -> None:
    unknown = ComponentMeasurement("caliptra-fmc", DigestAlgorithm.SHA384, "ee" * 48)
    evidence = sign_evidence(RT_KEY, NONCE, (unknown, OLD_RUNTIME), DICE_CHAIN)
    assert appraise(evidence) == (
        EarStatus.CONTRAINDICATED,
        ("measurement-unknown", "security-version-too-low"),
    )


def test_measurements_are_not_looked_at_before_the_signature_verified() -> None:
    looked: list[ComponentMeasurement] = []

    def spy(measurement: ComponentMeasurement) -> int | None:
        looked.append(measurement)
        return None

    forged = sign_evidence(new_key(), NONCE, MEASUREMENTS, DICE_CHAIN)
    result = appraise_device(
        forged, nonce=NONCE, identity=IDENTITY, release_of=spy, chains=AliasChains()
    )
    assert result == BAD_SIGNATURE
    assert looked == []


def test_missing_evidence() -> None:
    assert appraise(None) == (EarStatus.CONTRAINDICATED, ("evidence-missing",))
    empty = sign_evidence(RT_KEY, NONCE, (), DICE_CHAIN)
    assert appraise(empty) == (EarStatus.CONTRAINDICATED, ("evidence-missing",))


def test_reason_codes_are_the_fixed_set() -> None:
    assert sorted(r.value for r in EvidenceReason) == [
        "evidence-bad-chain",
        "evidence-bad-signature",
        "evidence-missing",
        "evidence-tcb-mismatch",
        "measurement-unknown",
        "security-version-too-low",
    ]


# -- the chain cache -----------------------------------------------------------------------


def _count_resolves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import sealtrail.provenance._evidence as module

    calls = [0]
    real = module._resolve

    def counting(identity_der: bytes, chain: Any) -> Any:
        calls[0] += 1
        return real(identity_der, chain)

    monkeypatch.setattr(module, "_resolve", counting)
    return calls


def test_cache_hit_still_checks_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_resolves(monkeypatch)
    chains = AliasChains()
    assert appraise(EVIDENCE, chains=chains) == GOOD
    assert appraise(EVIDENCE, chains=chains) == GOOD
    assert calls == [1]
    # The same (cached) chain: the signature over a wrong nonce, or a forged one, still fails.
    assert appraise(EVIDENCE, nonce=OTHER_NONCE, chains=chains) == BAD_SIGNATURE
    forged = sign_evidence(new_key(), NONCE, MEASUREMENTS, DICE_CHAIN)
    assert appraise(forged, chains=chains) == BAD_SIGNATURE
    assert calls == [1]
    # Another identity with the same chain is another cache entry, and a bad one.
    assert appraise(EVIDENCE, ident=OTHER_IDENTITY, chains=chains) == BAD_CHAIN
    assert appraise(EVIDENCE, ident=OTHER_IDENTITY, chains=chains) == BAD_CHAIN
    assert calls == [2]
    assert appraise(EVIDENCE, chains=chains) == GOOD
    assert calls == [2]


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_resolves(monkeypatch)
    chains = AliasChains(cache=2)
    direct = sign_evidence(ID_KEY, NONCE, MEASUREMENTS)
    key = new_key()
    single = sign_evidence(key, NONCE, MEASUREMENTS, (alias(ID_KEY, IDENTITY, key),))
    for evidence in (EVIDENCE, direct, single):
        assert appraise(evidence, chains=chains) == GOOD
    assert calls == [3]
    assert appraise(single, chains=chains) == GOOD  # still held
    assert appraise(direct, chains=chains) == GOOD
    assert calls == [3]
    assert appraise(EVIDENCE, chains=chains) == GOOD  # evicted: resolved again
    assert calls == [4]


def test_signing_key_returns_the_leaf_key() -> None:
    chains = AliasChains()
    found = chains.signing_key(IDENTITY, DICE_CHAIN)
    assert found is not None
    assert found.public_key == RT_KEY.public_key()
    assert chains.signing_key(IDENTITY, DICE_CHAIN) is found
    direct = chains.signing_key(IDENTITY, ())
    assert direct is not None and direct.public_key == ID_KEY.public_key()
    assert chains.signing_key(OTHER_IDENTITY, DICE_CHAIN) is None


# -- ML-DSA-87 -----------------------------------------------------------------------------


@needs_ml_dsa
def test_ml_dsa_identity_signs_directly() -> None:
    key = mldsa.MLDSA87PrivateKey.generate()
    ident = identity_for(key.public_key(), "PQC-1")
    evidence = sign_evidence(key, NONCE, MEASUREMENTS)
    assert len(evidence.signature) == 4627
    assert appraise(evidence, ident=ident) == GOOD
    assert appraise(evidence, ident=ident, nonce=OTHER_NONCE) == BAD_SIGNATURE
    tampered = DeviceEvidence((), MEASUREMENTS, _flip(evidence.signature, 100))
    assert appraise(tampered, ident=ident) == BAD_SIGNATURE
    assert (
        appraise(
            sign_evidence(mldsa.MLDSA87PrivateKey.generate(), NONCE, MEASUREMENTS), ident=ident
        )
        == BAD_SIGNATURE
    )


@needs_ml_dsa
def test_ml_dsa_in_alias_chains() -> None:
    id_key = mldsa.MLDSA87PrivateKey.generate()
    ident = identity_for(id_key.public_key(), "PQC-2")
    runtime = new_key()
    chain = (alias(id_key, ident, runtime),)  # an ML-DSA identity certifies a P-384 alias
    assert appraise(sign_evidence(runtime, NONCE, MEASUREMENTS, chain), ident=ident) == GOOD
    pq_alias = mldsa.MLDSA87PrivateKey.generate()
    chain = (alias(ID_KEY, IDENTITY, pq_alias),)  # a P-384 identity certifies an ML-DSA alias
    assert appraise(sign_evidence(pq_alias, NONCE, MEASUREMENTS, chain)) == GOOD
    forged = (alias(mldsa.MLDSA87PrivateKey.generate(), ident, runtime),)
    assert appraise(sign_evidence(runtime, NONCE, MEASUREMENTS, forged), ident=ident) == BAD_CHAIN


@needs_ml_dsa
def test_ml_dsa_signature_fits_the_payload_limit() -> None:
    key = mldsa.MLDSA87PrivateKey.generate()
    evidence = sign_evidence(key, NONCE, MEASUREMENTS)
    assert len(evidence.signature) <= MAX_SIGNATURE_SIZE
    value = _result(evidence)
    assert parse_attestation_result(value.to_json()) == value


# -- the payload ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _result(evidence: DeviceEvidence | None) -> AttestationResult:
    return AttestationResult(
        server_serial="SRV-1",
        nonce=NONCE.hex(),
        status=EarStatus.AFFIRMING,
        trustworthiness=((TrustClaim.EXECUTABLES, 2), (TrustClaim.HARDWARE, 2)),
        devices=(
            DeviceResult(device_id(IDENTITY), EarStatus.AFFIRMING, (), evidence),
            DeviceResult(device_id(OTHER_IDENTITY), EarStatus.AFFIRMING),
        ),
    )


DOC: dict[str, Any] = {
    "server_serial": "SRV-1",
    "nonce": NONCE.hex(),
    "status": "affirming",
    "trustworthiness": {"executables": 2, "hardware": 2},
    "devices": [
        {
            "device_id": device_id(IDENTITY),
            "status": "affirming",
            "reasons": [],
            "evidence": {
                "chain": [_b64(c) for c in DICE_CHAIN],
                "measurements": [
                    {"component": m.component, "alg": m.alg.value, "digest": m.digest}
                    for m in MEASUREMENTS
                ],
                "signature": _b64(EVIDENCE.signature),
            },
        },
        {"device_id": device_id(OTHER_IDENTITY), "status": "affirming", "reasons": []},
    ],
}


def _encode(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_payload_round_trip_with_evidence() -> None:
    value = _result(EVIDENCE)
    assert value.to_json() == _encode(DOC)
    parsed = parse_attestation_result(value.to_json())
    assert parsed == value
    assert parsed.devices[0].evidence == EVIDENCE
    assert parsed.devices[1].evidence is None
    assert b"null" not in value.to_json()
    assert parse_attestation_result(_encode(DOC)).to_json() == _encode(DOC)


def test_parsed_evidence_appraises() -> None:
    """What the operator registered is what the ledger appraises, byte for byte."""
    parsed = parse_attestation_result(_encode(DOC))
    nonce = bytes.fromhex(parsed.nonce)
    assert appraise(parsed.devices[0].evidence, nonce=nonce) == GOOD
    assert appraise(parsed.devices[1].evidence, nonce=nonce, ident=OTHER_IDENTITY) == (
        EarStatus.CONTRAINDICATED,
        ("evidence-missing",),
    )


def test_evidence_of_the_identity_key_has_an_empty_chain() -> None:
    value = _result(sign_evidence(ID_KEY, NONCE, MEASUREMENTS))
    assert b'"chain":[]' in value.to_json()
    assert parse_attestation_result(value.to_json()) == value


Mutation = Callable[[dict[str, Any]], object]


def _evidence_set(name: str, value: object) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["devices"][0]["evidence"][name] = value

    return mutate


def _measurement_set(name: str, value: object) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["devices"][0]["evidence"]["measurements"][0][name] = value

    return mutate


SIGNATURE = _b64(EVIDENCE.signature)
CERT = _b64(RT_ALIAS)
MANY = [
    {"component": f"c{i}", "alg": "sha-256", "digest": "00" * 32}
    for i in range(MAX_MEASUREMENTS + 1)
]

REFUSED: list[tuple[str, Mutation, str]] = [
    ("evidence null", lambda d: d["devices"][0].update(evidence=None), "provenance-invalid"),
    ("evidence a string", lambda d: d["devices"][0].update(evidence="x"), "provenance-invalid"),
    ("unknown field", _evidence_set("alg", "ES384"), "provenance-unknown-field"),
    (
        "missing signature",
        lambda d: d["devices"][0]["evidence"].pop("signature"),
        "provenance-missing-field",
    ),
    (
        "missing chain",
        lambda d: d["devices"][0]["evidence"].pop("chain"),
        "provenance-missing-field",
    ),
    (
        "signature unpadded",
        _evidence_set("signature", _b64(b"\x01" * 95).rstrip("=")),
        "attestation-bad-evidence",
    ),
    (
        "signature with newline",
        _evidence_set("signature", SIGNATURE[:40] + "\n" + SIGNATURE[40:]),
        "attestation-bad-evidence",
    ),
    (
        "signature base64url",
        _evidence_set("signature", "-_" + SIGNATURE[2:]),
        "attestation-bad-evidence",
    ),
    ("signature not canonical", _evidence_set("signature", "AB=="), "attestation-bad-evidence"),
    ("signature empty", _evidence_set("signature", ""), "attestation-bad-evidence"),
    ("signature not a string", _evidence_set("signature", 7), "attestation-bad-evidence"),
    (
        "signature oversized",
        _evidence_set("signature", _b64(b"\x00" * (MAX_SIGNATURE_SIZE + 1))),
        "provenance-too-large",
    ),
    ("signature far oversized", _evidence_set("signature", "A" * 10**6), "provenance-too-large"),
    ("chain not a list", _evidence_set("chain", CERT), "provenance-invalid"),
    ("chain item not base64", _evidence_set("chain", ["!!!!"]), "attestation-bad-evidence"),
    ("chain item not canonical", _evidence_set("chain", [CERT + "="]), "attestation-bad-evidence"),
    ("chain item empty", _evidence_set("chain", [""]), "attestation-bad-evidence"),
    (
        "chain too long",
        _evidence_set("chain", [CERT] * (MAX_CHAIN_LENGTH + 1)),
        "provenance-too-large",
    ),
    (
        "chain item oversized",
        _evidence_set("chain", [_b64(b"\x30" * (16 * 1024 + 1))]),
        "provenance-too-large",
    ),
    ("no measurements", _evidence_set("measurements", []), "provenance-invalid"),
    ("too many measurements", _evidence_set("measurements", MANY), "provenance-too-large"),
    (
        "same component and alg twice",
        _evidence_set(
            "measurements",
            [
                {"component": "fw", "alg": "sha-256", "digest": "00" * 32},
                {"component": "fw", "alg": "sha-256", "digest": "11" * 32},
            ],
        ),
        "provenance-invalid",
    ),
    ("measurement unknown field", _measurement_set("svn", 3), "provenance-unknown-field"),
    ("measurement bad alg", _measurement_set("alg", "sha-1"), "provenance-invalid"),
    ("digest wrong size", _measurement_set("digest", "0f" * 32), "provenance-invalid"),
    ("digest upper case", _measurement_set("digest", "0F" * 48), "provenance-invalid"),
    ("component with spaces", _measurement_set("component", " fmc"), "provenance-invalid"),
    ("component control", _measurement_set("component", "fmc\n"), "provenance-invalid"),
    ("component empty", _measurement_set("component", ""), "provenance-invalid"),
]


@pytest.mark.parametrize(
    ("mutation", "code"), [pytest.param(m, code, id=case) for case, m, code in REFUSED]
)
def test_refused_evidence(mutation: Mutation, code: str) -> None:
    doc = copy.deepcopy(DOC)
    mutation(doc)
    with pytest.raises(InvalidInput) as caught:
        parse_attestation_result(_encode(doc))
    assert caught.value.code == code
    assert isinstance(caught.value, TooLarge) == code.endswith("too-large")
    assert "devices[0].evidence" in caught.value.message


def test_same_component_under_two_algorithms_is_fine() -> None:
    doc = copy.deepcopy(DOC)
    doc["devices"][0]["evidence"]["measurements"] = [
        {"component": "fw", "alg": "sha-256", "digest": "00" * 32},
        {"component": "fw", "alg": "sha-384", "digest": "00" * 48},
    ]
    value = parse_attestation_result(_encode(doc))
    assert parse_attestation_result(value.to_json()) == value


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["chain", "measurements", "signature", "extra"]),
    value=JSON,
    measurement=st.booleans(),
)
def test_mutated_evidence_raises_only_our_errors(
    name: str, value: object, measurement: bool
) -> None:
    doc = copy.deepcopy(DOC)
    target = doc["devices"][0]["evidence"]
    if measurement:
        target = target["measurements"][0]
        name = {"chain": "component", "signature": "digest", "measurements": "alg"}.get(name, name)
    target[name] = value
    try:
        parsed = parse_attestation_result(_encode(doc))
    except Error:
        return
    assert parse_attestation_result(parsed.to_json()) == parsed
