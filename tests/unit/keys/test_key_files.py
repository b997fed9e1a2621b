"""Key files for every software algorithm, and PINs read from the environment or a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealtrail.errors import ConfigError
from sealtrail.keys import (
    ALGORITHMS,
    ED25519,
    ES256,
    ES384,
    MAX_PIN_SIZE,
    EcdsaSigner,
    Ed25519Signer,
    MlDsaSigner,
    SoftwareSigner,
    generate_signer,
    load_signer,
    mldsa_supported,
    read_pin,
    write_private_key,
)

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX file modes")
needs_mldsa = pytest.mark.skipif(not mldsa_supported(), reason="this cryptography has no ML-DSA")
ALL = [
    pytest.param(a, marks=needs_mldsa) if a.startswith("ML-DSA") else pytest.param(a)
    for a in ALGORITHMS
]
CLASSES = {ED25519: Ed25519Signer, ES256: EcdsaSigner, ES384: EcdsaSigner}


def software(algorithm: str) -> SoftwareSigner:
    signer = generate_signer(algorithm)
    assert isinstance(signer, Ed25519Signer | EcdsaSigner | MlDsaSigner)
    return signer


@pytest.mark.parametrize("algorithm", ALL)
def test_key_file_round_trip(tmp_path: Path, algorithm: str) -> None:
    signer = software(algorithm)
    path = tmp_path / "service.key"
    write_private_key(path, signer)
    loaded = load_signer(path)
    assert type(loaded) is CLASSES.get(algorithm, MlDsaSigner)
    assert loaded.algorithm == algorithm
    assert loaded.public_key_bytes() == signer.public_key_bytes()
    signer.verifier().verify(signature=loaded.sign(b"x"), message=b"x")
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert load_signer(path, algorithm=algorithm).public_key_bytes() == signer.public_key_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["service.key"]
    if POSIX:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("algorithm", ALL)
def test_never_overwrites_a_key_of_any_algorithm(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "k"
    first = software(ES256)
    write_private_key(path, first)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_private_key(path, software(algorithm))
    assert path.read_bytes() == before


@posix_only
@pytest.mark.parametrize("algorithm", ALL)
def test_loose_modes_are_refused_for_every_algorithm(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "k"
    write_private_key(path, software(algorithm))
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="mode 0640"):
        load_signer(path)


def test_expected_algorithm_is_enforced(tmp_path: Path) -> None:
    path = tmp_path / "k"
    write_private_key(path, software(ES384))
    with pytest.raises(ConfigError, match=f"holds an ES384 key; {ED25519} is needed here"):
        load_signer(path, algorithm=ED25519)
    with pytest.raises(ConfigError, match="unknown signature algorithm 'P-384'"):
        load_signer(path, algorithm="P-384")


def test_sec1_ec_keys_get_a_conversion_hint(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not a PKCS#8 PEM private key") as info:
        load_signer(path)
    assert "openssl pkcs8 -topk8" in info.value.hint


@pytest.mark.parametrize(
    "encoding", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL]
)
def test_rsa_keys_say_which_keys_are_supported(
    tmp_path: Path, encoding: serialization.PrivateFormat
) -> None:
    path = tmp_path / "rsa.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, encoding, serialization.NoEncryption())
    )
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="RSA-2048 keys are not supported") as info:
        load_signer(path)
    assert str(path) in info.value.message
    assert "ECDSA P-256 (ES256)" in info.value.message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_foreign_signers_cannot_be_written(tmp_path: Path) -> None:
    class HsmLike:
        algorithm = ES256

    with pytest.raises(ConfigError, match="never leaves its token"):
        write_private_key(tmp_path / "k", HsmLike())  # type: ignore[arg-type]
    assert not (tmp_path / "k").exists()


# --- PINs -----------------------------------------------------------------------------------

PIN = "4711-0815"


def pin_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "hsm.pin"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_pin_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALTRAIL_TEST_PIN", PIN)
    assert read_pin(env="SEALTRAIL_TEST_PIN") == PIN
    monkeypatch.setenv("SEALTRAIL_TEST_PIN", "")
    with pytest.raises(ConfigError, match="environment variable SEALTRAIL_TEST_PIN holds an empty"):
        read_pin(env="SEALTRAIL_TEST_PIN")
    monkeypatch.delenv("SEALTRAIL_TEST_PIN")
    with pytest.raises(ConfigError, match="SEALTRAIL_TEST_PIN is not set"):
        read_pin(env="SEALTRAIL_TEST_PIN")


@pytest.mark.parametrize("data", [PIN.encode(), PIN.encode() + b"\n", PIN.encode() + b"\r\n"])
def test_pin_from_file_drops_one_trailing_newline(tmp_path: Path, data: bytes) -> None:
    assert read_pin(path=pin_file(tmp_path, data)) == PIN


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "holds an empty PIN"),
        (b"\n", "holds an empty PIN"),
        (b"\xff\xfe", "not UTF-8"),
        (b"1" * (MAX_PIN_SIZE + 1), "larger than"),
    ],
    ids=["empty", "newline", "binary", "too-large"],
)
def test_bad_pin_files(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        read_pin(path=pin_file(tmp_path, data))


@posix_only
def test_pin_file_must_be_private(tmp_path: Path) -> None:
    path = pin_file(tmp_path, PIN.encode(), mode=0o644)
    with pytest.raises(ConfigError, match=r"PIN file .* is accessible by group or others") as info:
        read_pin(path=path)
    assert PIN not in info.value.diagnostics()


def test_pin_source_is_exactly_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        read_pin()
    with pytest.raises(ConfigError, match="exactly one"):
        read_pin(env="X", path=tmp_path / "p")
    with pytest.raises(ConfigError, match="PIN file not found"):
        read_pin(path=tmp_path / "missing.pin")
