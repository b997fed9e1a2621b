"""User records (docs/auth.md): parsing, the canonical form, and the fold that maps tokens
and TLS client certificates to users."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.errors import InvalidInput
from sealtrail.scitt import (
    MAX_CERTIFICATES,
    PERSONAS,
    User,
    Users,
    certificate_hash,
    new_token,
    parse_user_record,
    token_hash,
    user_record,
    with_article,
)

CERT_A, CERT_B = certificate_hash(b"certificate a"), certificate_hash(b"certificate b")


def _record(**fields: object) -> bytes:
    doc = {"user": "olivia", "version": 1, "persona": "operator", "org": "op", **fields}
    return json.dumps(doc).encode()


def test_a_record_without_certificates_reads_and_writes_as_before() -> None:
    user = parse_user_record(_record())
    assert user.certificates == ()
    assert b"certificates" not in user_record(user)
    assert parse_user_record(user_record(user)) == user


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_CERTIFICATES, unique=True))
def test_certificates_round_trip(certificates: list[bytes]) -> None:
    user = User("olivia", 2, "auditor", certificates=tuple(certificates))
    assert parse_user_record(user_record(user)) == user


@pytest.mark.parametrize(
    "certificates",
    [
        "ab" * 32,
        ["AB" * 32],
        ["ab" * 31],
        [7],
        ["ab" * 32, "ab" * 32],
        [f"{i:064x}" for i in range(MAX_CERTIFICATES + 1)],
    ],
)
def test_bad_certificates_are_named(certificates: object) -> None:
    with pytest.raises(InvalidInput, match="certificate") as caught:
        parse_user_record(_record(certificates=certificates))
    assert caught.value.code == "user-record-invalid"


def test_a_certificate_maps_to_its_user_until_a_newer_record_drops_it() -> None:
    users = Users()
    users.apply(User("olivia", 1, "operator", "op", certificates=(CERT_A,)))
    found = users.by_certificate(CERT_A)
    assert found is not None and found.name == "olivia"
    assert users.by_certificate(CERT_B) is None
    users.apply(User("olivia", 2, "operator", "op", certificates=(CERT_B,)))
    assert users.by_certificate(CERT_A) is None
    found = users.by_certificate(CERT_B)
    assert found is not None and found.version == 2


def test_a_certificate_names_one_user() -> None:
    users = Users()
    users.apply(User("olivia", 1, "operator", "op", certificates=(CERT_A,)))
    with pytest.raises(InvalidInput) as caught:
        users.apply(User("mallory", 1, "auditor", certificates=(CERT_B, CERT_A)))
    assert caught.value.code == "certificate-taken"
    assert users.get("mallory") is None
    assert users.by_certificate(CERT_B) is None  # nothing of the refused record applied
    # Once olivia lets it go, it is free.
    users.apply(User("olivia", 2, "operator", "op"))
    users.apply(User("mallory", 1, "auditor", certificates=(CERT_A,)))
    found = users.by_certificate(CERT_A)
    assert found is not None and found.name == "mallory"


def test_versions_follow_one_another_and_tokens_map_to_users() -> None:
    users = Users()
    secret, token = new_token(expires=2_000_000_000)
    with pytest.raises(InvalidInput) as caught:
        users.apply(User("olivia", 2, "auditor"))
    assert caught.value.code == "user-version"
    users.apply(User("olivia", 1, "auditor", tokens=(token,)))
    found = users.by_token(token_hash(secret))
    assert found is not None and found[0].name == "olivia" and found[1] == token
    with pytest.raises(InvalidInput):
        users.apply(User("olivia", 1, "auditor"))  # replayed
    users.apply(User("olivia", 2, "auditor"))  # the token revoked
    assert users.by_token(token_hash(secret)) is None


def test_messages_name_a_persona_with_its_article() -> None:
    assert [with_article(p) for p in PERSONAS] == [
        "an admin",
        "a supplier",
        "a carrier",
        "an operator",
        "an auditor",
    ]
    with pytest.raises(InvalidInput, match="user record: an operator acts for an organization"):
        parse_user_record(_record(org=None))
