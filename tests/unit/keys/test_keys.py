"""Software Ed25519 keys: signing, verification, and key files on disk."""

from __future__ import annotations

import base64
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealtrail.errors import ConfigError, InvalidInput, InvalidSignature
from sealtrail.keys import (
    ED25519,
    MAX_KEY_FILE_SIZE,
    Ed25519Signer,
    Ed25519Verifier,
    Signer,
    Verifier,
    load_signer,
    verify_ed25519,
    write_private_key,
)
from sealtrail.keys._files import pkcs8_pem

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX file modes and FIFOs")

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def write_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# --- signing and verification ---------------------------------------------------------------


def test_rfc8032_known_answer() -> None:
    signer = Ed25519Signer.from_private_bytes(RFC8032_SEED)
    assert signer.public_key_bytes() == RFC8032_PUBLIC
    assert signer.sign(b"") == RFC8032_SIGNATURE
    verify_ed25519(public_key=RFC8032_PUBLIC, signature=RFC8032_SIGNATURE, message=b"")


def test_sign_verify_round_trip() -> None:
    signer = Ed25519Signer.generate()
    message = b"sealtrail \x00\xff message"
    signature = signer.sign(message)
    assert len(signature) == 64
    assert signer.algorithm == ED25519
    verifier = signer.verifier()
    assert verifier.algorithm == ED25519
    assert verifier.public_key_bytes() == signer.public_key_bytes()
    verifier.verify(signature=signature, message=message)
    verify_ed25519(public_key=signer.public_key_bytes(), signature=signature, message=message)
    # Ed25519 is deterministic.
    assert signer.sign(message) == signature


def test_verifier_equality_and_hash() -> None:
    signer = Ed25519Signer.generate()
    a = Ed25519Verifier(signer.public_key_bytes())
    assert a == signer.verifier()
    assert hash(a) == hash(signer.verifier())
    assert a != Ed25519Signer.generate().verifier()
    assert a != signer.public_key_bytes()


@pytest.mark.parametrize("bit", [0, 7, 100, 255, 256, 511])
def test_flipped_signature_bit_is_rejected(bit: int) -> None:
    signer = Ed25519Signer.generate()
    signature = signer.sign(b"message")
    with pytest.raises(InvalidSignature):
        signer.verifier().verify(signature=flip(signature, bit), message=b"message")


@pytest.mark.parametrize("bit", [0, 9, 31, 38])
def test_flipped_message_bit_is_rejected(bit: int) -> None:
    signer = Ed25519Signer.generate()
    message = b"hello"  # 40 bits
    signature = signer.sign(message)
    with pytest.raises(InvalidSignature):
        signer.verifier().verify(signature=signature, message=flip(message, bit))


def test_every_flipped_public_key_bit_is_rejected() -> None:
    signer = Ed25519Signer.generate()
    signature = signer.sign(b"message")
    public_key = signer.public_key_bytes()
    for bit in range(len(public_key) * 8):
        # Some flipped keys are not valid curve points; that too is InvalidSignature.
        with pytest.raises(InvalidSignature):
            verify_ed25519(
                public_key=flip(public_key, bit), signature=signature, message=b"message"
            )


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_wrong_length_signature_is_invalid_signature(size: int) -> None:
    signer = Ed25519Signer.generate()
    with pytest.raises(InvalidSignature, match="expected 64"):
        signer.verifier().verify(signature=b"\x01" * size, message=b"m")


@pytest.mark.parametrize("key", [b"", b"\x00" * 31, b"\x00" * 33])
def test_wrong_length_public_key_is_invalid_input(key: bytes) -> None:
    with pytest.raises(InvalidInput):
        verify_ed25519(public_key=key, signature=b"\x00" * 64, message=b"m")


def test_constructors_reject_wrong_inputs() -> None:
    with pytest.raises(InvalidInput):
        Ed25519Signer(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    for seed in (b"", b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(InvalidInput, match="32 bytes"):
            Ed25519Signer.from_private_bytes(seed)
    with pytest.raises(InvalidInput):
        Ed25519Signer.from_private_bytes("00" * 32)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Ed25519Verifier("00" * 16)  # type: ignore[arg-type]


def test_signer_satisfies_the_runtime_checkable_protocols() -> None:
    signer = Ed25519Signer.generate()
    assert isinstance(signer, Signer)
    assert isinstance(signer.verifier(), Verifier)
    assert not isinstance(signer.verifier(), Signer)
    assert not isinstance(object(), Signer)
    assert not isinstance(object(), Verifier)


# --- secrets stay secret --------------------------------------------------------------------


def secret_spellings(signer: Ed25519Signer) -> list[str]:
    seed = signer.private_bytes_raw()
    pem_body = "".join(pkcs8_pem(signer).decode().splitlines()[1:-1])
    return [seed.hex(), seed.hex().upper(), base64.b64encode(seed).decode(), pem_body, repr(seed)]


def test_private_key_never_in_repr_or_str() -> None:
    signer = Ed25519Signer.from_private_bytes(RFC8032_SEED)
    shown = repr(signer) + str(signer) + f"{signer}" + repr([signer])
    for secret in secret_spellings(signer):
        assert secret not in shown
    assert RFC8032_PUBLIC.hex() in repr(signer)
    with pytest.raises(AttributeError):
        _ = signer.__dict__


def test_signer_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Ed25519Signer.generate())


# --- key files ------------------------------------------------------------------------------


def test_key_file_round_trip(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate()
    path = tmp_path / "log.key"
    write_private_key(path, signer)
    loaded = load_signer(path)
    assert isinstance(loaded, Ed25519Signer)
    assert loaded.public_key_bytes() == signer.public_key_bytes()
    assert loaded.sign(b"x") == signer.sign(b"x")
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    # Only the key file is left behind: no temporary file.
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]


def test_key_file_accepts_str_paths(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate()
    write_private_key(str(tmp_path / "k"), signer)
    assert load_signer(str(tmp_path / "k")).public_key_bytes() == signer.public_key_bytes()


@posix_only
def test_key_file_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_key(tmp_path / "k", Ed25519Signer.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    first = Ed25519Signer.generate()
    write_private_key(path, first)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_private_key(path, Ed25519Signer.generate())
    assert path.read_bytes() == before
    assert load_signer(path).public_key_bytes() == first.public_key_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]


def test_refuses_to_overwrite_any_file_or_dangling_symlink(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_private_key(other, Ed25519Signer.generate())
    assert other.read_text() == "keep me"
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_private_key(link, Ed25519Signer.generate())
    assert not (tmp_path / "nowhere").exists()


def test_write_into_missing_directory_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create key file"):
        write_private_key(tmp_path / "missing" / "k", Ed25519Signer.generate())


def test_only_software_ed25519_keys_can_be_written(tmp_path: Path) -> None:
    class OtherSigner:
        algorithm = ED25519

        def public_key_bytes(self) -> bytes:
            return b"\x00" * 32

        def sign(self, message: bytes) -> bytes:
            return b"\x00" * 64

    with pytest.raises(ConfigError):
        write_private_key(tmp_path / "k", OtherSigner())  # type: ignore[arg-type]
    assert not (tmp_path / "k").exists()


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_signer(tmp_path / "absent.key")


def pem(key: ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


BAD_KEY_FILES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "not a PKCS#8 PEM private key"),
    "garbage": (bytes(range(256)), "not a PKCS#8 PEM private key"),
    "text": (b"hello, I am not a key\n", "not a PKCS#8 PEM private key"),
    "truncated-pem": (
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "not a PKCS#8 PEM private key",
    ),
    # P-256 keys are supported, but only in PKCS#8: the SEC1 form is refused with a hint.
    "ec-p256-sec1": (
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        "not a PKCS#8 PEM private key",
    ),
    "x25519": (pem(x25519.X25519PrivateKey.generate()), "X25519 keys are not supported"),
    "ec-p521": (
        pem(ec.generate_private_key(ec.SECP521R1())),
        "keys on secp521r1 are not supported",
    ),
    "ed25519-public-key": (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "not a PKCS#8 PEM private key",
    ),
    "ed25519-der": (
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "not a PKCS#8 PEM private key",
    ),
    "ed25519-encrypted": (
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
        "encrypted",
    ),
    "too-large": (b"#" * (MAX_KEY_FILE_SIZE + 1), "larger than"),
}


@pytest.mark.parametrize("case", sorted(BAD_KEY_FILES))
def test_load_bad_key_file_is_config_error(tmp_path: Path, case: str) -> None:
    data, reason = BAD_KEY_FILES[case]
    path = write_file(tmp_path / f"{case}.key", data)
    with pytest.raises(ConfigError, match=reason) as info:
        load_signer(path)
    assert str(path) in info.value.message
    # No chained library exception to leak into a traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_load_directory_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_signer(tmp_path)


@posix_only
@pytest.mark.timeout(10)
def test_load_fifo_is_config_error_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_signer(fifo)


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o620])
def test_load_group_or_world_accessible_key_is_config_error(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    write_private_key(path, Ed25519Signer.generate())
    path.chmod(mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}") as info:
        load_signer(path)
    assert "chmod 600" in info.value.hint


@posix_only
def test_load_through_symlink_works(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate()
    write_private_key(tmp_path / "real.key", signer)
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    assert load_signer(tmp_path / "link.key").public_key_bytes() == signer.public_key_bytes()


def test_key_file_errors_do_not_contain_the_key(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate()
    path = tmp_path / "k"
    write_private_key(path, signer)
    if POSIX:
        path.chmod(0o644)
    messages: list[str] = []
    with pytest.raises(ConfigError) as overwrite:
        write_private_key(path, signer)
    messages.append(overwrite.value.diagnostics())
    if POSIX:
        with pytest.raises(ConfigError) as loose_mode:
            load_signer(path)
        messages.append(loose_mode.value.diagnostics())
    for secret in secret_spellings(signer):
        assert all(secret not in message for message in messages)
