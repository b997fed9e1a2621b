"""Every software algorithm: signing, verification, tampering, and independent checks."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.errors import ConfigError, InvalidInput, InvalidSignature
from sealtrail.keys import (
    ALGORITHMS,
    ED25519,
    ES256,
    ES384,
    ML_DSA_65,
    ML_DSA_87,
    EcdsaSigner,
    EcdsaVerifier,
    Ed25519Signer,
    MlDsaSigner,
    MlDsaVerifier,
    Signer,
    SoftwareSigner,
    Verifier,
    generate_signer,
    mldsa_supported,
    verifier_for,
    verifier_from_bytes,
)
from sealtrail.keys._files import pkcs8_pem

needs_mldsa = pytest.mark.skipif(not mldsa_supported(), reason="this cryptography has no ML-DSA")


def each(*algorithms: str) -> list[object]:
    return [
        pytest.param(a, marks=needs_mldsa) if a.startswith("ML-DSA") else pytest.param(a)
        for a in algorithms
    ]


ALL = each(*ALGORITHMS)

#: algorithm -> (raw public key size, signature size)
SIZES = {
    ED25519: (32, 64),
    ES256: (65, 64),
    ES384: (97, 96),
    ML_DSA_65: (1952, 3309),
    ML_DSA_87: (2592, 4627),
}
HASHES: dict[str, hashes.HashAlgorithm] = {ES256: hashes.SHA256(), ES384: hashes.SHA384()}


@functools.cache
def shared_signer(algorithm: str) -> Signer:
    """One key per algorithm for the property tests (key generation is the slow part)."""
    return generate_signer(algorithm)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_algorithm_names() -> None:
    assert (ED25519, ES256, ES384, ML_DSA_65, ML_DSA_87) == (
        "Ed25519",
        "ES256",
        "ES384",
        "ML-DSA-65",
        "ML-DSA-87",
    )
    assert ALGORITHMS == (ED25519, ES256, ES384, ML_DSA_65, ML_DSA_87)


# --- every algorithm ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALL)
def test_sign_verify_round_trip(algorithm: str) -> None:
    signer = generate_signer(algorithm)
    public_size, signature_size = SIZES[algorithm]
    assert signer.algorithm == algorithm
    assert len(signer.public_key_bytes()) == public_size
    verifier = signer.verifier()
    assert verifier.algorithm == algorithm
    assert verifier.public_key_bytes() == signer.public_key_bytes()
    for message in (b"", b"sealtrail \x00\xff message", bytes(range(256)) * 256):
        signature = signer.sign(message)
        assert len(signature) == signature_size
        verifier.verify(signature=signature, message=message)
        verifier_from_bytes(algorithm, signer.public_key_bytes()).verify(
            signature=signature, message=message
        )


@pytest.mark.parametrize("algorithm", ALL)
def test_protocols_equality_and_public_key_objects(algorithm: str) -> None:
    signer = generate_signer(algorithm)
    assert isinstance(signer, Signer)
    assert isinstance(signer.verifier(), Verifier)
    assert not isinstance(signer.verifier(), Signer)
    rebuilt = verifier_from_bytes(algorithm, signer.public_key_bytes())
    assert rebuilt == signer.verifier()
    assert hash(rebuilt) == hash(signer.verifier())
    assert rebuilt != generate_signer(algorithm).verifier()
    raw: object = signer.public_key_bytes()
    assert rebuilt != raw
    # public_key() is the same key as a cryptography object, and maps back.
    assert verifier_for(signer.public_key()) == rebuilt
    assert verifier_for(signer.public_key(), algorithm) == rebuilt


def test_a_signer_must_offer_its_public_key_and_verifier() -> None:
    class Partial:
        algorithm = ES256

        def public_key_bytes(self) -> bytes:
            return b"\x04" * 65

        def sign(self, message: bytes) -> bytes:
            return b"\x00" * 64

    assert not isinstance(Partial(), Signer)


@pytest.mark.parametrize("algorithm", ALL)
@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0), message=st.binary(min_size=1, max_size=64))
def test_any_flipped_signature_bit_is_rejected(
    algorithm: str, position: int, message: bytes
) -> None:
    signer = shared_signer(algorithm)
    signature = signer.sign(message)
    bad = flip(signature, position % (len(signature) * 8))
    with pytest.raises(InvalidSignature):
        signer.verifier().verify(signature=bad, message=message)


@pytest.mark.parametrize("algorithm", ALL)
@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0), message=st.binary(min_size=1, max_size=64))
def test_any_flipped_message_bit_is_rejected(algorithm: str, position: int, message: bytes) -> None:
    signer = shared_signer(algorithm)
    signature = signer.sign(message)
    bad = flip(message, position % (len(message) * 8))
    with pytest.raises(InvalidSignature):
        signer.verifier().verify(signature=signature, message=bad)


@pytest.mark.parametrize("algorithm", ALL)
def test_wrong_length_signatures_are_invalid_signatures(algorithm: str) -> None:
    signer = shared_signer(algorithm)
    size = SIZES[algorithm][1]
    good = signer.sign(b"m")
    for bad in (b"", good[:-1], good + b"\x00", b"\x00" + good, good * 2):
        with pytest.raises(InvalidSignature, match=f"expected {size}"):
            signer.verifier().verify(signature=bad, message=b"m")


@pytest.mark.parametrize("algorithm", ALL)
def test_a_signature_by_another_key_is_rejected(algorithm: str) -> None:
    signature = shared_signer(algorithm).sign(b"m")
    with pytest.raises(InvalidSignature):
        generate_signer(algorithm).verifier().verify(signature=signature, message=b"m")


def test_a_signature_of_another_algorithm_is_rejected() -> None:
    # Ed25519 and ES256 signatures are both 64 bytes.
    es256 = shared_signer(ES256).sign(b"m")
    ed25519 = shared_signer(ED25519).sign(b"m")
    with pytest.raises(InvalidSignature):
        shared_signer(ED25519).verifier().verify(signature=es256, message=b"m")
    with pytest.raises(InvalidSignature):
        shared_signer(ES256).verifier().verify(signature=ed25519, message=b"m")


@pytest.mark.parametrize("algorithm", ["ES512", "EdDSA", "ed25519", "ML-DSA-44", "", "RS256"])
def test_unknown_algorithm_names_are_invalid_input(algorithm: str) -> None:
    with pytest.raises(InvalidInput, match="unknown signature algorithm"):
        generate_signer(algorithm)
    with pytest.raises(InvalidInput, match="unknown signature algorithm"):
        verifier_from_bytes(algorithm, b"\x04" * 65)


@pytest.mark.parametrize("algorithm", ALL)
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_size_public_keys_are_invalid_input(algorithm: str, delta: int) -> None:
    raw = shared_signer(algorithm).public_key_bytes()
    bad = raw + b"\x00" if delta > 0 else raw[:-1]
    with pytest.raises(InvalidInput):
        verifier_from_bytes(algorithm, bad)


# --- secrets stay secret --------------------------------------------------------------------


def secret_spellings(signer: SoftwareSigner) -> list[str]:
    pem_body = "".join(pkcs8_pem(signer).decode().splitlines()[1:-1])
    private = signer.private_key()
    spellings = [pem_body, pem_body[:40]]
    if isinstance(private, ec.EllipticCurvePrivateKey):
        value = private.private_numbers().private_value
        spellings += [f"{value:x}", str(value)]
    else:
        raw = private.private_bytes_raw()
        spellings += [raw.hex(), raw.hex().upper(), repr(raw)]
    return spellings


@pytest.mark.parametrize("algorithm", ALL)
def test_private_key_never_in_repr_and_never_pickled(algorithm: str) -> None:
    signer = generate_signer(algorithm)
    assert isinstance(signer, Ed25519Signer | EcdsaSigner | MlDsaSigner)
    shown = repr(signer) + str(signer) + f"{signer}" + repr([signer]) + repr(signer.verifier())
    for secret in secret_spellings(signer):
        assert secret not in shown
    assert algorithm in repr(signer) or isinstance(signer, Ed25519Signer)
    assert signer.public_key_bytes()[:16].hex() in repr(signer)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(signer)
    with pytest.raises(AttributeError):
        _ = signer.__dict__


# --- ECDSA: raw r || s, checked against cryptography's DER form -----------------------------

# RFC 6979 appendix A.2.5: P-256, SHA-256, message "sample" (a deterministic-nonce vector;
# here it checks our raw-signature decoding and verification, not nonce generation).
RFC6979_P256_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC6979_P256_PUBLIC = bytes.fromhex(
    "04"
    "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
)
RFC6979_P256_SAMPLE = bytes.fromhex(
    "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
    "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
)
# The order of the P-256 group (SEC 2, section 2.4.2).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_rfc6979_known_answer() -> None:
    signer = EcdsaSigner(ec.derive_private_key(RFC6979_P256_X, ec.SECP256R1()))
    assert signer.public_key_bytes() == RFC6979_P256_PUBLIC
    verifier = EcdsaVerifier(RFC6979_P256_PUBLIC, algorithm=ES256)
    verifier.verify(signature=RFC6979_P256_SAMPLE, message=b"sample")
    with pytest.raises(InvalidSignature):
        verifier.verify(signature=RFC6979_P256_SAMPLE, message=b"test")


def test_ecdsa_signatures_are_malleable_so_never_use_them_as_identifiers() -> None:
    # (r, n - s) verifies too; docs/keys.md warns about it.
    r = RFC6979_P256_SAMPLE[:32]
    s = int.from_bytes(RFC6979_P256_SAMPLE[32:], "big")
    twin = r + (P256_ORDER - s).to_bytes(32, "big")
    EcdsaVerifier(RFC6979_P256_PUBLIC, algorithm=ES256).verify(signature=twin, message=b"sample")


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 1), (1, 0), (0, 0), (P256_ORDER, 1), (1, P256_ORDER), (2**256 - 1, 2**256 - 1)],
    ids=["r=0", "s=0", "both-0", "r=n", "s=n", "all-ones"],
)
def test_out_of_range_r_or_s_is_invalid_signature(r: int, s: int) -> None:
    verifier = EcdsaVerifier(RFC6979_P256_PUBLIC, algorithm=ES256)
    with pytest.raises(InvalidSignature):
        verifier.verify(signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"), message=b"sample")


@pytest.mark.parametrize("algorithm", [ES256, ES384])
def test_raw_signature_verifies_with_cryptography_as_der(algorithm: str) -> None:
    signer = EcdsaSigner.generate(algorithm)
    size = SIZES[algorithm][1] // 2
    public = signer.public_key()
    for i in range(20):
        message = b"independent check %d" % i
        raw = signer.sign(message)
        der = encode_dss_signature(
            int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
        )
        public.verify(der, message, ec.ECDSA(HASHES[algorithm]))  # raises if bad


@pytest.mark.parametrize("algorithm", [ES256, ES384])
def test_cryptography_der_signature_verifies_with_ours_as_raw(algorithm: str) -> None:
    private = ec.generate_private_key(EcdsaSigner.generate(algorithm).public_key().curve)
    size = SIZES[algorithm][1] // 2
    der = private.sign(b"from cryptography", ec.ECDSA(HASHES[algorithm]))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    verifier_for(private.public_key()).verify(signature=raw, message=b"from cryptography")
    assert verifier_for(private.public_key()).algorithm == algorithm


def test_short_r_or_s_are_left_padded_to_fixed_length() -> None:
    # About one signature in 128 has an r or s below 2^248; DER drops its leading zero byte,
    # the raw form must keep it.
    signer = shared_signer(ES256)
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for i in range(20_000):
        message = i.to_bytes(4, "big")
        raw = signer.sign(message)
        if raw[0] == 0 or raw[32] == 0:
            break
    else:  # pragma: no cover - probability about 2^-230
        pytest.fail("no short r or s in 20,000 signatures")
    assert len(raw) == 64
    signer.verifier().verify(signature=raw, message=message)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, message, ec.ECDSA(hashes.SHA256()))


def test_ecdsa_public_key_checks() -> None:
    raw = shared_signer(ES256).public_key_bytes()
    compressed = (
        shared_signer(ES256)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    )
    with pytest.raises(InvalidInput, match="uncompressed P-256 point"):
        EcdsaVerifier(compressed, algorithm=ES256)
    with pytest.raises(InvalidInput, match="uncompressed P-256 point"):
        EcdsaVerifier(b"\x05" + raw[1:], algorithm=ES256)
    off_curve = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(InvalidInput, match="not a point on P-256"):
        EcdsaVerifier(off_curve, algorithm=ES256)
    with pytest.raises(InvalidInput, match="not a point on P-256"):
        EcdsaVerifier(b"\x04" + b"\x00" * 64, algorithm=ES256)
    # A P-384 point is not an ES256 key and vice versa.
    with pytest.raises(InvalidInput):
        EcdsaVerifier(shared_signer(ES384).public_key_bytes(), algorithm=ES256)
    with pytest.raises(InvalidInput):
        EcdsaVerifier(raw, algorithm=ES384)
    with pytest.raises(InvalidInput, match="not an ECDSA algorithm"):
        EcdsaVerifier(raw, algorithm=ED25519)
    with pytest.raises(InvalidInput):
        EcdsaVerifier(raw.hex(), algorithm=ES256)  # type: ignore[arg-type]


def test_ecdsa_signer_refuses_other_keys() -> None:
    with pytest.raises(InvalidInput, match="secp521r1"):
        EcdsaSigner(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(InvalidInput, match="needs an ECDSA private key"):
        EcdsaSigner(Ed25519Signer.generate().private_key())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not an ECDSA algorithm"):
        EcdsaSigner.generate(ED25519)


# --- ML-DSA: checked against cryptography directly ------------------------------------------


@needs_mldsa
@pytest.mark.parametrize("algorithm", [ML_DSA_65, ML_DSA_87])
def test_mldsa_cross_checks_with_cryptography(algorithm: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import mldsa

    signer = MlDsaSigner.generate(algorithm)
    public_class = mldsa.MLDSA65PublicKey if algorithm == ML_DSA_65 else mldsa.MLDSA87PublicKey
    private_class = mldsa.MLDSA65PrivateKey if algorithm == ML_DSA_65 else mldsa.MLDSA87PrivateKey
    theirs = public_class.from_public_bytes(signer.public_key_bytes())
    signature = signer.sign(b"ours")
    theirs.verify(signature, b"ours")  # pure ML-DSA, empty context
    other = private_class.generate()
    MlDsaVerifier(other.public_key().public_bytes_raw(), algorithm=algorithm).verify(
        signature=other.sign(b"theirs"), message=b"theirs"
    )
    # A signature under a non-empty context is a different signature.
    with pytest.raises(InvalidSignature):
        signer.verifier().verify(signature=signer.private_key().sign(b"m", b"ctx"), message=b"m")


@needs_mldsa
def test_mldsa_refuses_other_keys() -> None:
    with pytest.raises(InvalidInput, match="ML-DSA-65 or ML-DSA-87"):
        MlDsaSigner(Ed25519Signer.generate().private_key())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not an ML-DSA algorithm"):
        MlDsaSigner.generate(ES256)
    with pytest.raises(InvalidInput, match="1952 bytes"):
        MlDsaVerifier(shared_signer(ML_DSA_87).public_key_bytes(), algorithm=ML_DSA_65)


def test_without_mldsa_the_other_algorithms_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from sealtrail.keys import _mldsa

    monkeypatch.setattr(_mldsa, "_mldsa", None)
    _mldsa.mldsa_supported.cache_clear()
    try:
        assert not mldsa_supported()
        with pytest.raises(ConfigError, match="no ML-DSA") as info:
            generate_signer(ML_DSA_65)
        assert "OpenSSL" in info.value.hint
        with pytest.raises(InvalidInput, match="no ML-DSA"):
            verifier_from_bytes(ML_DSA_87, b"\x00" * 2592)
        for algorithm in (ED25519, ES256, ES384):
            signer = generate_signer(algorithm)
            signer.verifier().verify(signature=signer.sign(b"m"), message=b"m")
    finally:
        monkeypatch.undo()
        _mldsa.mldsa_supported.cache_clear()


def test_keys_import_without_cryptography_mldsa() -> None:
    # A cryptography too old for ML-DSA has no mldsa module: the package must still import.
    script = textwrap.dedent(
        """
        import sys
        import cryptography.hazmat.primitives.asymmetric as asymmetric
        import cryptography.hazmat.primitives.asymmetric.types  # before hiding mldsa
        import cryptography.hazmat.primitives.serialization
        del asymmetric.mldsa
        sys.modules["cryptography.hazmat.primitives.asymmetric.mldsa"] = None
        import sealtrail.keys as keys
        assert not keys.mldsa_supported()
        signer = keys.generate_signer(keys.ES256)
        signer.verifier().verify(signature=signer.sign(b"m"), message=b"m")
        try:
            keys.generate_signer(keys.ML_DSA_65)
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ConfigError ML-DSA-65 is not available")
