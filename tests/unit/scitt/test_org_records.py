"""Organization records: certificate anchors of every size users bring (RSA, ML-DSA), and
strings over their limits refused by name."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sealtrail.errors import InvalidInput
from sealtrail.scitt import parse_org_record

from .conftest import ISSUER


def _rsa_ca(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"RSA-{bits} CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _record(**changes: object) -> bytes:
    doc: dict[str, object] = {"org": "maker", "version": 1, "issuers": [ISSUER]}
    doc.update(changes)
    return json.dumps(doc).encode()


def test_an_rsa_4096_anchor_longer_than_other_strings_is_accepted() -> None:
    pem = _rsa_ca(4096)
    assert len(pem) > 1024
    org = parse_org_record(_record(anchors=[pem], device_anchors=[pem]))
    assert len(org.anchors) == 1 and len(org.device_anchors) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("issuers", ["x" * 1025]),
        ("anchors", ["-----BEGIN CERTIFICATE-----\n" + "A" * 40_000]),
        ("issuers", [""]),
    ],
)
def test_strings_over_their_limits_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_org_record(_record(**{field: value}))
    assert caught.value.code == "org-record-invalid"
    assert field in str(caught.value)


def test_a_new_record_may_not_list_no_algorithm_and_a_logged_one_reads_as_the_defaults() -> None:
    """An empty ``algorithms`` would read as "none" to some and "the defaults" to others: a
    record registered now is refused for it, and one logged before the rule (read back by
    the registry, the audit and passports) keeps the meaning it had, the defaults."""
    policy = {"content_types": ["application/json"], "subjects": ["urn:maker:*"]}
    empties: list[list[str] | None] = [[], None]
    for empty in empties:
        record = _record(policy={**policy, "algorithms": empty})
        with pytest.raises(InvalidInput) as caught:
            parse_org_record(record, new=True)
        assert caught.value.code == "org-record-invalid"
        assert "at least one algorithm" in caught.value.message
        logged = parse_org_record(record)
        assert set(logged.policy.algorithms) == {"ES256", "ES384", "Ed25519"}
    default = parse_org_record(_record(policy=policy), new=True)
    assert set(default.policy.algorithms) == {"ES256", "ES384", "Ed25519"}
