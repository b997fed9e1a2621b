"""A verifier key is parsed from what a user typed or a file they named: its errors say what
is wrong and never repeat any of it, since it may be a private key given by mistake."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sealtrail.errors import InvalidInput
from sealtrail.note import CosignatureVerifier, NoteSigner, NoteVerifier

# A name that stands for whatever came before the first '+' of the input: it must never be
# shown. It has no space or '+', so each check after the name's is reached.
SECRET = "s3cretMaterialHead"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def vkey(name: str, material: bytes) -> str:
    """A vkey whose key ID matches its (possibly unsupported) material."""
    key_id = hashlib.sha256(name.encode() + b"\n" + material).digest()[:4].hex()
    return f"{name}+{key_id}+{b64(material)}"


def _pem_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM block: the key material."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def _private_pems() -> dict[str, bytes]:
    pkcs8 = serialization.PrivateFormat.PKCS8
    pem = serialization.Encoding.PEM
    none = serialization.NoEncryption()
    return {
        "ed25519-pkcs8": ed25519.Ed25519PrivateKey.generate().private_bytes(pem, pkcs8, none),
        "es256-pkcs8": ec.generate_private_key(ec.SECP256R1()).private_bytes(pem, pkcs8, none),
        "es256-sec1": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, none
        ),
        "rsa-pkcs1": rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, none
        ),
        "ed25519-encrypted": ed25519.Ed25519PrivateKey.generate().private_bytes(
            pem, pkcs8, serialization.BestAvailableEncryption(b"a passphrase")
        ),
    }


@pytest.mark.parametrize("parser", [NoteVerifier, CosignatureVerifier])
@pytest.mark.parametrize("kind", sorted(_private_pems()))
def test_a_private_key_pem_is_refused_without_a_word_of_it(
    parser: type[NoteVerifier], kind: str
) -> None:
    pem = _private_pems()[kind]
    # As read from a file, and with '+' signs ahead of the base64 so that the text before
    # the first one (once taken for the key's name) is the head of the key.
    for text in (pem.decode().strip(), pem.decode().replace("\n", "+\n", 2)):
        with pytest.raises(InvalidInput, match="private key was given") as info:
            parser.parse(text)
        shown = info.value.diagnostics()
        assert "log.vkey" in shown
        for line in _pem_lines(pem):
            assert line not in shown
            assert line[:8] not in shown


def test_a_pem_public_key_is_not_a_verifier_key() -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InvalidInput, match="PEM file was given") as info:
        NoteVerifier.parse(pem.decode().replace("\n", "+\n"))
    for line in _pem_lines(pem):
        assert line not in info.value.diagnostics()


ED25519 = bytes([0x01]) + bytes(32)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"{SECRET} x+00000000+{b64(ED25519)}", "name must not contain whitespace"),
        (f"{SECRET}\x7f+00000000+{b64(ED25519)}", "name must contain only printable"),
        (f"{SECRET}+zzzzzzzz+{b64(ED25519)}", "8 hex digits"),
        (f"{SECRET}+00000000+{b64(ED25519)[:-1]}", "not canonical standard base64"),
        (f"{SECRET}+00000000+", "the key is empty"),
        (f"{SECRET}+00000000+{b64(ED25519)}", "does not match the key"),
        (vkey(SECRET, bytes([0x07]) + bytes(32)), "unsupported signature type 0x07"),
        (vkey(SECRET, ED25519 + bytes(1)), "an Ed25519 key is 32 bytes, not 33"),
        (SECRET, "must look like"),
    ],
    ids=[
        "space",
        "unprintable",
        "key-id",
        "base64",
        "empty",
        "wrong-id",
        "type",
        "length",
        "shape",
    ],
)
@pytest.mark.parametrize("parser", [NoteVerifier, CosignatureVerifier])
def test_bad_vkeys_never_echo_their_name(
    parser: type[NoteVerifier], text: str, reason: str
) -> None:
    with pytest.raises(InvalidInput, match=reason) as info:
        parser.parse(text)
    assert SECRET not in info.value.diagnostics()


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\tname", "bidi\u202ename"])
def test_bad_key_names_are_refused_without_being_shown(name: str) -> None:
    for make in (lambda: NoteVerifier(name, bytes(32)), lambda: NoteSigner.generate(name)):
        with pytest.raises(InvalidInput, match="key name") as info:
            make()
        assert not name or name not in info.value.diagnostics()
        assert repr(name) not in info.value.diagnostics()


def test_a_good_vkey_still_parses() -> None:
    signer = NoteSigner.generate("log.example/a")
    assert NoteVerifier.parse(signer.verifier_key()) == signer.verifier()


@pytest.mark.parametrize(
    "tail",
    [
        "SECRETchunk+00000000+AQ==",  # a key ID that does not match
        "SECRETchunk+zz+AQ==",  # a malformed key ID
        "SECRETchunk+00000000+AgAA",  # another algorithm
        "SECRETchunk+00000000+AQAA",  # a seed of the wrong size
        "SECRET chunk+00000000+AQ==",  # a name no key may have
    ],
)
def test_a_malformed_signer_key_is_refused_without_repeating_it(tail: str) -> None:
    """Where the name goes, a malformed string may hold key material (base64 has '+')."""
    with pytest.raises(InvalidInput) as caught:
        NoteSigner.from_private_key_string("PRIVATE+KEY+" + tail)
    assert "SECRET" not in str(caught.value) and "SECRET" not in (caught.value.hint or "")
