"""PKCS#11 keys against SoftHSM2: each test gets its own token in its temporary directory.

Signatures made on the token are checked with our software verifiers and with
``cryptography`` directly. Skipped, with the reason, when python-pkcs11 or SoftHSM2 is
missing (see ``tests/unit/keys/_softhsm.py``).
"""

from __future__ import annotations

import logging
import pickle
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sealtrail.errors import ConfigError, InvalidInput
from sealtrail.keys import (
    ED25519,
    ES256,
    ES384,
    ML_DSA_65,
    PKCS11_ALGORITHMS,
    Pkcs11Signer,
    Signer,
    generate_signer,
    read_pin,
    verifier_from_bytes,
)
from sealtrail.keys._files import pkcs8_pem
from tests.unit.keys._softhsm import PIN, SO_PIN, TOKEN, SoftHsm

WRONG_PIN = "0000-wrong-9999"
HASHES: dict[str, hashes.HashAlgorithm] = {ES256: hashes.SHA256(), ES384: hashes.SHA384()}


def open_signer(hsm: SoftHsm, **selector: Any) -> Pkcs11Signer:
    return Pkcs11Signer(module=hsm.module, token_label=TOKEN, pin=PIN, **selector)


def generate(hsm: SoftHsm, algorithm: str, label: str = "service") -> Pkcs11Signer:
    return Pkcs11Signer.generate(
        module=hsm.module, token_label=TOKEN, pin=PIN, key_label=label, algorithm=algorithm
    )


def verify_with_cryptography(signer: Signer, signature: bytes, message: bytes) -> None:
    """An independent check: cryptography's own verifier on the token's public key."""
    public = signer.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = len(signature) // 2
        der = encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        public.verify(der, message, ec.ECDSA(HASHES[signer.algorithm]))
    else:
        assert isinstance(public, Ed25519PublicKey)
        public.verify(signature, message)


def assert_no_pin(error: ConfigError) -> None:
    shown = error.diagnostics() + repr(error) + str(error.args)
    for pin in (PIN, WRONG_PIN, SO_PIN):
        assert pin not in shown
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# --- signing --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", PKCS11_ALGORITHMS)
def test_generated_key_signs_and_both_verifiers_agree(softhsm: SoftHsm, algorithm: str) -> None:
    with generate(softhsm, algorithm) as signer:
        assert isinstance(signer, Signer)
        assert signer.algorithm == algorithm
        software = verifier_from_bytes(algorithm, signer.public_key_bytes())
        assert software == signer.verifier()
        for message in (b"", b"checkpoint", bytes(range(256)) * 64):
            signature = signer.sign(message)
            assert len(signature) == {ES256: 64, ES384: 96, ED25519: 64}[algorithm]
            software.verify(signature=signature, message=message)
            verify_with_cryptography(signer, signature, message)
        public = signer.public_key_bytes()
    # Reopened by its label, it is the same key.
    with open_signer(softhsm, key_label="service") as again:
        assert again.public_key_bytes() == public
        software.verify(signature=again.sign(b"again"), message=b"again")


@pytest.mark.parametrize("algorithm", PKCS11_ALGORITHMS)
def test_imported_software_key_is_found_by_label_and_id(
    softhsm: SoftHsm, tmp_path: Path, algorithm: str
) -> None:
    software = generate_signer(algorithm)
    pem = tmp_path / "import.pem"
    pem.write_bytes(pkcs8_pem(software))  # type: ignore[arg-type]
    softhsm.import_key(pem, label="imported", key_id=b"\x0a\x0b")
    for selector in ({"key_label": "imported"}, {"key_id": b"\x0a\x0b"},
                     {"key_label": "imported", "key_id": b"\x0a\x0b"}):  # fmt: skip
        with open_signer(softhsm, **selector) as signer:
            assert signer.algorithm == algorithm
            assert signer.public_key_bytes() == software.public_key_bytes()
            software.verifier().verify(signature=signer.sign(b"m"), message=b"m")


def test_signing_from_many_threads(softhsm: SoftHsm) -> None:
    failures: list[BaseException] = []
    with generate(softhsm, ES256) as signer:
        verifier = signer.verifier()

        def work(n: int) -> None:
            try:
                for i in range(25):
                    message = b"%d/%d" % (n, i)
                    verifier.verify(signature=signer.sign(message), message=message)
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


# --- what never leaves the HSM --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", PKCS11_ALGORITHMS)
def test_generated_private_key_cannot_be_read_out(softhsm: SoftHsm, algorithm: str) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    generate(softhsm, algorithm).close()
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=TOKEN)
    with token.open(user_pin=PIN) as session:
        (key,) = session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.PRIVATE] is True
        assert key[Attribute.DERIVE] is False
        with pytest.raises(pkcs11.AttributeSensitive):
            _ = key[Attribute.VALUE]


def test_signer_holds_no_pin(softhsm: SoftHsm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with generate(softhsm, ES256) as signer:
        shown = repr(signer) + str(signer)
        for name in Pkcs11Signer.__slots__:
            shown += repr(getattr(signer, name, None))
        assert PIN not in shown
        assert "service" in repr(signer)
        assert TOKEN in repr(signer)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(signer)
        with pytest.raises(AttributeError):
            _ = signer.__dict__
    assert "closed" in repr(signer)
    assert all(PIN not in record.getMessage() for record in caplog.records)


# --- configuration errors -------------------------------------------------------------------


def test_wrong_pin(softhsm: SoftHsm) -> None:
    generate(softhsm, ES256).close()
    with pytest.raises(ConfigError, match=f"token '{TOKEN}' rejected the PIN") as info:
        Pkcs11Signer(module=softhsm.module, token_label=TOKEN, pin=WRONG_PIN, key_label="service")
    assert_no_pin(info.value)
    assert "lock" in info.value.hint


def test_wrong_pin_while_another_signer_is_logged_in(softhsm: SoftHsm) -> None:
    with generate(softhsm, ES256):
        # The token would not ask: the process is logged in. The PIN is checked anyway.
        with pytest.raises(ConfigError, match="rejected the PIN") as info:
            Pkcs11Signer(
                module=softhsm.module, token_label=TOKEN, pin=WRONG_PIN, key_label="service"
            )
        assert_no_pin(info.value)


def test_missing_key(softhsm: SoftHsm) -> None:
    generate(softhsm, ES256).close()
    with pytest.raises(ConfigError, match="no private key labelled 'absent' on PKCS#11 token"):
        open_signer(softhsm, key_label="absent")
    with pytest.raises(ConfigError, match="no private key with id 0102") as info:
        open_signer(softhsm, key_id=b"\x01\x02")
    assert_no_pin(info.value)
    with pytest.raises(ConfigError, match="labelled 'service' and with id 0102"):
        open_signer(softhsm, key_label="service", key_id=b"\x01\x02")


def test_missing_token(softhsm: SoftHsm) -> None:
    import pkcs11

    softhsm.init_token("second-token")
    lib = pkcs11.lib(str(softhsm.module))
    lib.finalize()  # SoftHSM2 reads its tokens when the module is initialized
    lib.initialize()
    with pytest.raises(ConfigError, match="no PKCS#11 token labelled 'absent'") as info:
        Pkcs11Signer(module=softhsm.module, token_label="absent", pin=PIN, key_label="k")
    assert f"Tokens present: {TOKEN}, second-token." in info.value.hint
    assert_no_pin(info.value)


def test_missing_or_broken_module(tmp_path: Path) -> None:
    # No SoftHSM2 needed: the module is checked before anything is loaded.
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")
    with pytest.raises(ConfigError, match="PKCS#11 module not found") as info:
        Pkcs11Signer(module=tmp_path / "libnothing.so", token_label="t", pin=PIN, key_label="k")
    assert "SEALTRAIL_PKCS11_MODULE" in info.value.hint
    assert_no_pin(info.value)
    not_a_library = tmp_path / "libfake.so"
    not_a_library.write_bytes(b"not an ELF file")
    with pytest.raises(ConfigError, match="cannot load PKCS#11 module") as info:
        Pkcs11Signer(module=not_a_library, token_label="t", pin=PIN, key_label="k")
    assert_no_pin(info.value)


def test_without_python_pkcs11(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sealtrail.keys import _pkcs11

    monkeypatch.setattr(_pkcs11, "pkcs11_supported", lambda: False)
    with pytest.raises(ConfigError, match="need the python-pkcs11 package") as info:
        Pkcs11Signer(module=tmp_path / "lib.so", token_label="t", pin=PIN, key_label="k")
    assert "sealtrail[hsm]" in info.value.hint
    with pytest.raises(ConfigError, match="need the python-pkcs11 package"):
        Pkcs11Signer.generate(module=tmp_path / "lib.so", token_label="t", pin=PIN, key_label="k")


def test_selector_and_pin_are_required(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="key_label, key_id or both"):
        Pkcs11Signer(module=tmp_path / "lib.so", token_label="t", pin=PIN)
    with pytest.raises(InvalidInput, match="non-empty string"):
        Pkcs11Signer(module=tmp_path / "lib.so", token_label="t", pin="", key_label="k")


def test_unsupported_key_types_on_the_token(softhsm: SoftHsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=TOKEN)
    with token.open(rw=True, user_pin=PIN) as session:
        session.generate_keypair(KeyType.RSA, 2048, store=True, label="rsa", id=b"\x01")
        session.generate_keypair(
            KeyType.EC,
            store=True,
            label="p521",
            id=b"\x02",
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp521r1")},
        )
    with pytest.raises(ConfigError, match="is a key of type RSA; Sealtrail signs with ES256"):
        open_signer(softhsm, key_label="rsa")
    with pytest.raises(ConfigError, match="curve other than P-256 or P-384"):
        open_signer(softhsm, key_label="p521")


def test_unsupported_mechanism_is_named() -> None:
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")
    from pkcs11 import Mechanism

    from sealtrail.keys._pkcs11 import _require_mechanism

    token: Any = SimpleNamespace(
        label="no-ecdsa", slot=SimpleNamespace(get_mechanisms=lambda: {Mechanism.EDDSA})
    )
    with pytest.raises(ConfigError, match="does not offer CKM_ECDSA, needed for ES256"):
        _require_mechanism(token, Mechanism.ECDSA, "ES256 signatures")
    _require_mechanism(token, Mechanism.EDDSA, "Ed25519 signatures")


def test_ambiguous_label_needs_an_id(softhsm: SoftHsm, tmp_path: Path) -> None:
    for n, key_id in enumerate((b"\x01", b"\x02")):
        pem = tmp_path / f"{n}.pem"
        pem.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        softhsm.import_key(pem, label="twin", key_id=key_id)
    with pytest.raises(ConfigError, match="2 private keys labelled 'twin'") as info:
        open_signer(softhsm, key_label="twin")
    assert "key id" in info.value.hint
    with open_signer(softhsm, key_label="twin", key_id=b"\x02") as signer:
        signer.verifier().verify(signature=signer.sign(b"m"), message=b"m")


def _replace_public_key(hsm: SoftHsm, label: str, point: bytes | None) -> None:
    """Destroy ``label``'s public key object and, with ``point``, store another in its place."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    token = pkcs11.lib(str(hsm.module)).get_token(token_label=TOKEN)
    with token.open(rw=True, user_pin=PIN) as session:
        (public,) = session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})
        key_id, params = public[Attribute.ID], public[Attribute.EC_PARAMS]
        public.destroy()
        if point is not None:
            session.create_object({
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: KeyType.EC,
                Attribute.TOKEN: True,
                Attribute.LABEL: label,
                Attribute.ID: key_id,
                Attribute.EC_PARAMS: params,
                Attribute.EC_POINT: bytes([0x04, len(point)]) + point,
                Attribute.VERIFY: True,
            })  # fmt: skip


def test_a_mismatched_public_key_object_is_caught(softhsm: SoftHsm) -> None:
    generate(softhsm, ES256).close()
    _replace_public_key(softhsm, "service", generate_signer(ES256).public_key_bytes())
    with pytest.raises(ConfigError, match="do not belong together"):
        open_signer(softhsm, key_label="service")


def test_a_missing_public_key_object_is_named(softhsm: SoftHsm) -> None:
    generate(softhsm, ES256).close()
    _replace_public_key(softhsm, "service", None)
    with pytest.raises(ConfigError, match="no public key object for the private key"):
        open_signer(softhsm, key_label="service")


# --- generation -----------------------------------------------------------------------------


def test_generate_never_replaces_a_key(softhsm: SoftHsm) -> None:
    with generate(softhsm, ES256) as first:
        public = first.public_key_bytes()
    with pytest.raises(ConfigError, match="already holds an object labelled 'service'"):
        generate(softhsm, ED25519)
    Pkcs11Signer.generate(
        module=softhsm.module, token_label=TOKEN, pin=PIN, key_label="a", key_id=b"\x0a"
    ).close()
    with pytest.raises(ConfigError, match="already holds an object with id 0a"):
        Pkcs11Signer.generate(
            module=softhsm.module, token_label=TOKEN, pin=PIN, key_label="b", key_id=b"\x0a"
        )
    with open_signer(softhsm, key_label="service") as again:
        assert again.public_key_bytes() == public


def test_generate_refuses_software_only_algorithms(softhsm: SoftHsm) -> None:
    with pytest.raises(ConfigError, match="cannot create a ML-DSA-65 key on a PKCS#11 token"):
        generate(softhsm, ML_DSA_65)


# --- sessions and logins --------------------------------------------------------------------


def test_signers_on_one_token_share_the_login(softhsm: SoftHsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    first = generate(softhsm, ES256, "log")
    second = generate(softhsm, ED25519, "receipts")
    first.close()
    first.close()  # idempotent
    with pytest.raises(ConfigError, match="is closed"):
        first.sign(b"m")
    # Closing one signer does not log the other out.
    second.verifier().verify(signature=second.sign(b"m"), message=b"m")
    second.close()
    # The last one out logs the token out: private objects are invisible again.
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=TOKEN)
    with token.open() as session:
        assert list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})) == []


def test_pin_from_a_file_opens_the_key(softhsm: SoftHsm, tmp_path: Path) -> None:
    generate(softhsm, ES384).close()
    pin_file = tmp_path / "hsm.pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    with Pkcs11Signer(
        module=softhsm.module, token_label=TOKEN, pin=read_pin(path=pin_file), key_label="service"
    ) as signer:
        assert signer.algorithm == ES384
        assert signer.token_label == TOKEN
