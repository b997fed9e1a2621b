"""The signing-certificate rules hold alike for chains of every key type: Ed25519 chains
are walked by hand (the X.509 library's verifier takes no Ed25519), ECDSA chains by the
library, and an anchor's own path length and validity bind both."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from sealtrail.errors import VerificationError
from sealtrail.scitt import ChainValidator
from sealtrail.scitt import _chain as _chain_module

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)

Key = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _p256() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


KINDS: dict[str, Callable[[], Key]] = {
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
    "ES256": _p256,
}


def _cert(
    cn: str,
    key: Key,
    issuer: tuple[str, Key] | None = None,
    *,
    ca: bool,
    path_length: int | None = None,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 30 * DAY,
    bc_critical: bool = True,
    key_usage: bool = True,
    extra: tuple[x509.ExtensionType, bool] | None = None,
) -> x509.Certificate:
    issuer_cn, issuer_key = issuer or (cn, key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
            critical=bc_critical,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False), critical=True
        )
    if extra is not None:
        builder = builder.add_extension(*extra)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    digest = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, digest)


def _der(*certs: x509.Certificate) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def _chain(
    kind: str,
    *,
    inter: dict[str, Any] | None = None,
    leaf: dict[str, Any] | None = None,
    root_kind: str | None = None,
    **root: Any,
) -> tuple[list[bytes], x509.Certificate]:
    """root -> intermediate -> leaf (each made with its options), and the root."""
    new = KINDS[kind]
    root_key, inter_key, leaf_key = KINDS[root_kind or kind](), new(), new()
    anchor = _cert("root", root_key, ca=True, **root)
    middle = _cert("inter", inter_key, ("root", root_key), ca=True, **(inter or {}))
    signer = _cert("leaf", leaf_key, ("inter", inter_key), ca=False, **(leaf or {}))
    return _der(signer, middle), anchor


def _validate(kind: str, **options: Any) -> None:
    chain, anchor = _chain(kind, **options)
    ChainValidator().validate(chain, [anchor])


#: A self-signed Ed25519 CA certificate on no path: appended to an ECDSA chain, it must not
#: change which rules the chain is judged by.
STRAY = _der(_cert("stray", ed25519.Ed25519PrivateKey.generate(), ca=True))[0]
NAMES = x509.NameConstraints(permitted_subtrees=[x509.DNSName("a.example")], excluded_subtrees=None)
OUTSIDE = x509.SubjectAlternativeName([x509.DNSName("b.example")])

FLAWED: dict[str, dict[str, Any]] = {
    "intermediate basicConstraints not critical": {"inter": {"bc_critical": False}},
    "intermediate without key usage": {"inter": {"key_usage": False}},
    "anchor basicConstraints not critical": {"bc_critical": False},
    "anchor name constraints the leaf is outside": {
        "extra": (NAMES, True),
        "leaf": {"extra": (OUTSIDE, False)},
    },
    "intermediate with an unknown critical extension": {
        "inter": {
            "extra": (
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
                ),
                True,
            )
        }
    },
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flaw", FLAWED)
def test_a_flawed_chain_is_refused_whatever_its_keys(kind: str, flaw: str) -> None:
    chain, anchor = _chain(kind, **FLAWED[flaw])
    for presented in (chain, [*chain, STRAY]):
        with pytest.raises(VerificationError) as refused:
            ChainValidator().validate(presented, [anchor])
        assert refused.value.code in ("chain-untrusted", "chain-invalid"), flaw


def test_an_ed25519_chain_holds_only_certificates_on_its_path() -> None:
    chain, anchor = _chain("Ed25519")
    ChainValidator().validate([*chain, _der(anchor)[0]], [anchor])  # the root itself may be sent
    with pytest.raises(VerificationError) as refused:
        ChainValidator().validate([*chain, STRAY], [anchor])
    assert refused.value.code == "chain-invalid"


def test_an_ecdsa_chain_under_an_ed25519_anchor_is_walked() -> None:
    chain, anchor = _chain("ES256", root_kind="Ed25519")
    other_root = _cert("other", _p256(), ca=True)
    ChainValidator().validate(chain, [other_root, anchor])
    ChainValidator().validate(chain, [anchor])
    flawed, flawed_anchor = _chain("ES256", root_kind="Ed25519", inter={"bc_critical": False})
    with pytest.raises(VerificationError):
        ChainValidator().validate(flawed, [other_root, flawed_anchor])


@pytest.mark.parametrize("kind", KINDS)
def test_a_chain_under_a_valid_anchor_is_accepted(kind: str) -> None:
    _validate(kind)
    _validate(kind, path_length=1)


@pytest.mark.parametrize("kind", KINDS)
def test_an_anchor_whose_path_length_forbids_the_intermediate_is_refused(kind: str) -> None:
    with pytest.raises(VerificationError) as refused:
        _validate(kind, path_length=0)
    assert refused.value.code == "chain-untrusted"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - 400 * DAY, NOW - 10 * DAY), (NOW + 10 * DAY, NOW + 400 * DAY)],
    ids=["expired", "not-yet-valid"],
)
def test_an_anchor_outside_its_validity_is_refused(
    kind: str, not_before: dt.datetime, not_after: dt.datetime
) -> None:
    with pytest.raises(VerificationError) as refused:
        _validate(kind, not_before=not_before, not_after=not_after)
    assert refused.value.code == "chain-untrusted"


@pytest.mark.parametrize("kind", KINDS)
def test_a_chain_validated_before_its_anchor_expired_is_not_taken_from_the_cache(
    kind: str,
) -> None:
    chain, anchor = _chain(kind, not_after=NOW + 5 * DAY)  # the chain itself lasts 30 days
    validator = ChainValidator()
    validator.validate(chain, [anchor])
    with pytest.raises(VerificationError) as refused:
        validator.validate(chain, [anchor], now=NOW + 10 * DAY)
    assert refused.value.code == "chain-untrusted"


def test_an_expired_anchor_beside_the_current_one_leaves_the_cache_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An old root kept after a rotation takes no part in a chain to the new one: the
    validation is cached as before, not done afresh for every statement."""
    chain, anchor = _chain("ES256")
    old = _cert("old root", _p256(), ca=True, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    validator = ChainValidator()
    validator.validate(chain, [old, anchor])
    checks: list[object] = []
    monkeypatch.setattr(_chain_module, "_check_path", lambda *a: checks.append(a))
    validator.validate(chain, [old, anchor])
    assert not checks
