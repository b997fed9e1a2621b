"""The signing-certificate rules hold alike for chains of every key type: Ed25519 chains
are walked by hand (the X.509 library's verifier takes no Ed25519), ECDSA chains by the
library, and an anchor's own path length and validity bind both."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from sealtrail.errors import VerificationError
from sealtrail.scitt import ChainValidator

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
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
        .add_extension(
            x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    digest = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, digest)


def _chain(kind: str, **root: object) -> tuple[list[bytes], x509.Certificate]:
    """root -> intermediate -> leaf, and the root (made with ``root``'s options)."""
    new = KINDS[kind]
    root_key, inter_key, leaf_key = new(), new(), new()
    anchor = _cert("root", root_key, ca=True, **root)  # type: ignore[arg-type]
    inter = _cert("inter", inter_key, ("root", root_key), ca=True)
    leaf = _cert("leaf", leaf_key, ("inter", inter_key), ca=False)
    return [c.public_bytes(serialization.Encoding.DER) for c in (leaf, inter)], anchor


def _validate(kind: str, **root: object) -> None:
    chain, anchor = _chain(kind, **root)
    ChainValidator().validate(chain, [anchor])


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
