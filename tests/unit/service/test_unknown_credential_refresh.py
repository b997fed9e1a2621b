"""A shared store: requests whose credential a server does not know share the reads of the
user records another server may have written (docs/auth.md), instead of one read each.

Each request waits for one read that began after it came, so a user or token recorded
elsewhere before it is still found; however many such requests come at once, or one after
another, the store is read once per ``ORG_READ_SPACING`` at most. The reads are the
service's own (``TransparencyService.refresh_orgs``), shared with the registration checks'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from sealtrail.errors import Unauthorized
from sealtrail.keys import ES256, Ed25519Signer, generate_signer
from sealtrail.log import CheckpointSigner, Sequencer
from sealtrail.scitt import Token, TransparencyService, User
from sealtrail.scitt._service import ORG_READ_SPACING
from sealtrail.service._auth import Auth
from sealtrail.storage import MemoryStore

pytestmark = pytest.mark.anyio

#: How long one read of the records takes here (a PostgreSQL round trip or four).
FOLD_TIME = 0.01


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class OtherServers:
    """The records other servers stored, and this server's reads of them: a read sees what
    was stored when it began."""

    def __init__(self, service: TransparencyService) -> None:
        self.service = service
        self.stored: list[User] = []
        self.folds = 0

    async def fold(self) -> None:
        self.folds += 1
        seen = list(self.stored)
        await asyncio.sleep(FOLD_TIME)
        for user in seen:
            if self.service.users.get(user.name) is None:
                self.service.users.apply(user)

    def record(self, name: str) -> str:
        """A user with a token, stored by another server; its token."""
        token_id = hashlib.sha256(name.encode()).hexdigest()[:16]
        token = f"stk_{token_id}_" + "s" * 43
        issued = Token(token_id, hashlib.sha256(token.encode()).digest(), int(time.time()) + 3600)
        self.stored.append(User(name, 1, "auditor", None, (issued,)))
        return token


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Auth, OtherServers]]:
    store = MemoryStore()
    signer = CheckpointSigner(origin="ts.sealtrail.localhost/test", signer=Ed25519Signer.generate())
    service = TransparencyService(
        store=store,
        sequencer=Sequencer(store, signer=signer),
        signer=generate_signer(ES256),
        issuer="https://ts.sealtrail.localhost",
    )
    others = OtherServers(service)
    monkeypatch.setattr(service, "shared", True)
    monkeypatch.setattr(service, "_fold_orgs", others.fold)
    yield Auth(service, None), others
    store.close()


def _request(token: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/log/v1/info",
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
        }
    )


def _made_up(n: int) -> str:
    return f"stk_{n:016x}_" + "x" * 43


async def _refused(auth: Auth, token: str) -> str:
    with pytest.raises(Unauthorized) as refused:
        await auth.authorize(_request(token))
    return refused.value.code


async def test_many_unknown_tokens_at_once_cost_one_read(
    shared: tuple[Auth, OtherServers],
) -> None:
    auth, others = shared
    codes = await asyncio.gather(*(_refused(auth, _made_up(n)) for n in range(200)))
    assert set(codes) == {"token-unknown"}
    # The first request's read, and at most one more for those that came once it had begun.
    assert others.folds <= 2, others.folds


async def test_a_stream_of_unknown_tokens_is_read_for_once_per_spacing(
    shared: tuple[Auth, OtherServers],
) -> None:
    auth, others = shared
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = [0]

    async def client(n: int) -> None:
        while loop.time() - start < 0.5:
            sent[0] += 1
            assert await _refused(auth, _made_up(n * 10_000 + sent[0])) == "token-unknown"

    await asyncio.gather(*(client(n) for n in range(16)))
    elapsed = loop.time() - start
    assert sent[0] > 2 * others.folds
    assert others.folds <= elapsed / ORG_READ_SPACING + 2, (others.folds, sent[0])


async def test_a_token_recorded_elsewhere_before_the_request_is_found(
    shared: tuple[Auth, OtherServers],
) -> None:
    auth, others = shared
    token = others.record("olivia")
    request = _request(token)
    await auth.authorize(request)
    assert request.state.principal.user == "olivia"
    assert others.folds == 1


async def test_a_request_that_comes_during_a_read_waits_for_the_next_one(
    shared: tuple[Auth, OtherServers],
) -> None:
    """A read that began before the request may have missed its token: the request is
    answered from one that began after it came."""
    auth, others = shared
    first = asyncio.create_task(_refused(auth, _made_up(1)))
    while others.folds == 0:
        await asyncio.sleep(0)
    token = others.record("olivia")  # stored once that read had begun
    request = _request(token)
    await auth.authorize(request)
    assert request.state.principal.user == "olivia"
    assert others.folds == 2
    assert await first == "token-unknown"


async def test_one_server_reads_nothing_for_an_unknown_token(
    shared: tuple[Auth, OtherServers], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, others = shared
    assert auth.service is not None
    monkeypatch.setattr(auth.service, "shared", False)
    assert await _refused(auth, _made_up(1)) == "token-unknown"
    assert others.folds == 0


async def test_a_write_is_authorized_against_the_records_as_they_are_when_checked(
    shared: tuple[Auth, OtherServers],
) -> None:
    """The sender is resolved once, before the checks; a check that reads the records anew
    (an issuer this server did not know) may learn meanwhile that the user was disabled or
    its token revoked elsewhere: the write is then refused, not authorized on the old
    records."""
    auth, others = shared
    auth.required = True
    token = others.record("writer")
    await others.fold()
    user = auth.service.users.get("writer") if auth.service else None
    assert user is not None
    user = dataclasses.replace(user, persona="supplier", org="maker")
    auth.service.users.apply(dataclasses.replace(user, version=2))  # type: ignore[union-attr]
    principal = auth.principal(_request(token))
    authorize = auth.registers_for(principal)
    statement = SimpleNamespace(content_type="application/json")
    org = SimpleNamespace(name="maker")
    authorize(statement, org)  # type: ignore[arg-type]
    for later, code in (
        (dataclasses.replace(user, version=3, disabled=True), "user-disabled"),
        (dataclasses.replace(user, version=4, tokens=()), "token-unknown"),
    ):
        auth.service.users.apply(later)  # type: ignore[union-attr]
        with pytest.raises(Unauthorized) as refused:
            authorize(statement, org)  # type: ignore[arg-type]
        assert refused.value.code == code
