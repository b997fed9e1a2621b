"""sealtrail.client's users and tokens against a service with ``[auth] required`` on loopback:
typed answers, the client's token on every request, a per-call token first, 401 and 403 as
Unauthorized and Forbidden with the service's code, and no secret in any repr or message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from sealtrail.client import (
    AsyncClient,
    Client,
    Forbidden,
    IssuedToken,
    TokenInfo,
    Unauthorized,
    UserChange,
)
from sealtrail.errors import Error, InvalidInput, NotFound
from sealtrail.storage import MemoryStore
from tests._server import serve_in_thread

from .conftest import ADMIN_TOKEN, ORG, Maker, make_maker, service_application, statement


@dataclass
class Live:
    url: str
    maker: Maker


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """A service with ``[auth] required`` on 127.0.0.1, the maker onboarded."""
    app = service_application(MemoryStore(), auth_required=True)
    maker = make_maker()
    with serve_in_thread(app) as url:
        with Client(url, token=ADMIN_TOKEN) as admin:
            admin.put_organization(ORG, maker.record())
        yield Live(url, maker)


def test_users_tokens_and_a_supplier_registering(live: Live) -> None:
    with Client(live.url, token=ADMIN_TOKEN) as admin:
        created = admin.put_user("alice", "supplier", ORG)
        assert isinstance(created, UserChange)
        assert created.user.name == "alice" and created.user.version == 1
        assert (created.user.persona, created.user.org) == ("supplier", ORG)
        assert not created.user.disabled and created.user.tokens == ()
        assert len(created.registration.entry_id) == 64

        issued = admin.issue_token("alice", 7)
        assert isinstance(issued, IssuedToken)
        assert issued.user == "alice" and issued.token.startswith(f"stk_{issued.id}_")
        assert issued.token not in repr(issued)
        assert issued.registration.index == created.registration.index + 1

        (alice,) = [u for u in admin.users() if u.name == "alice"]
        assert alice.version == 2
        assert alice.tokens == (TokenInfo(issued.id, issued.expires),)

    with Client(live.url, token=issued.token) as supplier:
        registered = supplier.register(statement(live.maker.issuer, subject="urn:maker:device:c1"))
        assert registered.leaf_index is not None
        # A supplier may not administer: 403 with the service's code.
        with pytest.raises(Forbidden) as forbidden:
            supplier.users()
        assert forbidden.value.code == "persona-forbidden"
        # A per-call token takes priority over the client's own.
        assert any(u.name == "alice" for u in supplier.users(token=ADMIN_TOKEN))

    with Client(live.url) as public:
        with pytest.raises(Unauthorized) as required:
            public.register(statement(live.maker.issuer, subject="urn:maker:device:c2"))
        assert required.value.code == "token-required"
        revoked = public.revoke_token("alice", issued.id, token=ADMIN_TOKEN)
        assert revoked.user.tokens == () and revoked.user.version == 3

    with (
        Client(live.url, token=issued.token) as supplier,
        pytest.raises(Unauthorized) as unknown,
    ):
        supplier.register(statement(live.maker.issuer, subject="urn:maker:device:c3"))
    assert unknown.value.code == "token-unknown"
    assert issued.token not in str(unknown.value) and "users token" in unknown.value.hint


def test_disabled_users_and_refusals_keep_their_codes(live: Live) -> None:
    with Client(live.url, token=ADMIN_TOKEN) as admin:
        admin.put_user("olga", "operator", ORG)
        token = admin.issue_token("olga").token
        with Client(live.url, token=token) as olga:
            assert olga.compliance()["servers"] == []
            disabled = admin.put_user("olga", "operator", ORG, disabled=True)
            assert disabled.user.disabled
            with pytest.raises(Unauthorized) as refused:
                olga.compliance()
            assert refused.value.code == "user-disabled"

        refusals: list[tuple[Callable[[], object], type[Error], str]] = [
            (lambda: admin.put_user("bob", "wizard"), InvalidInput, "admin-request-invalid"),
            # Records say "admin" for the administrator token: no user may pass for it.
            (lambda: admin.put_user("admin", "auditor"), InvalidInput, "admin-request-invalid"),
            (lambda: admin.issue_token("olga", 0), InvalidInput, "admin-request-invalid"),
            (lambda: admin.put_user("bob", "supplier", "nowhere"), NotFound, "org-unknown"),
            (lambda: admin.issue_token("nobody"), NotFound, "user-unknown"),
            (lambda: admin.revoke_token("olga", "0123456789abcdef"), NotFound, "token-unknown"),
        ]
        for call, kind, code in refusals:
            with pytest.raises(kind) as refused_call:
                call()
            assert refused_call.value.code == code
        with pytest.raises(InvalidInput) as bad_name:
            admin.put_user("a/b", "auditor")
        assert bad_name.value.code == "user-name-invalid"


@pytest.mark.parametrize("token", ["has space", "line\nbreak", "", "é"])
def test_a_malformed_token_is_refused_without_being_echoed(live: Live, token: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        Client(live.url, token=token)
    assert bad.value.code == "token-malformed"
    assert token not in bad.value.message or not token
    with Client(live.url) as client, pytest.raises(InvalidInput) as per_call:
        client.users(token=token)
    assert per_call.value.code == "token-malformed"


def test_the_async_client_has_the_same_methods(live: Live) -> None:
    async def journey() -> None:
        async with AsyncClient(live.url, token=ADMIN_TOKEN) as admin:
            created = await admin.put_user("carl", "carrier", ORG)
            assert created.user.persona == "carrier"
            issued = await admin.issue_token("carl", days=1)
            assert [t.id for u in await admin.users() if u.name == "carl" for t in u.tokens] == [
                issued.id
            ]
        async with AsyncClient(live.url, token=issued.token) as carl:
            with pytest.raises(Forbidden) as forbidden:
                await carl.compliance()
            assert forbidden.value.code == "persona-forbidden"
            with pytest.raises(Forbidden):
                await carl.revoke_token("carl", issued.id)
            revoked = await carl.revoke_token("carl", issued.id, token=ADMIN_TOKEN)
            assert revoked.user.tokens == ()
            with pytest.raises(Unauthorized) as unknown:
                await carl.compliance()
            assert unknown.value.code == "token-unknown"

    asyncio.run(journey())
