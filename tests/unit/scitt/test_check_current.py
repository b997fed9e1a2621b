"""``TransparencyService.check_current`` on a shared store: a refused check reads anew what
the refusal rests on (the organization records, or the history a payload rule judges by),
each at most once, and checks again only when that read taught something; an accepted
statement reads nothing more, and a process with a store of its own reads nothing at all.

The other process is played here: what it registered is handed to the service at its next
read of the organization records, or of the history."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from sealtrail.errors import RetryLater, StorageError, VerificationError
from sealtrail.scitt import Organization, Registry, SignedStatement, TransparencyService
from sealtrail.scitt._service import ORG_READ_SPACING

from .conftest import Running
from .test_registration import JSON, good

pytestmark = pytest.mark.anyio


class Refused(VerificationError):
    """A payload rule's refusal on the history (as the provenance ledger's)."""

    depends_on_history = True


@dataclass
class Elsewhere:
    """What another process registered, learned at this process's next read of it."""

    service: TransparencyService
    org: Organization
    #: Whether the organization's record / the history is waiting to be read.
    onboarded: bool = False
    history: bool = False
    #: The history as this process knows it (the payload rule accepts once it is True).
    known: bool = False
    generation: int = 0
    checks: int = 0
    folds: int = 0
    refreshes: int = 0
    log: list[str] = field(default_factory=list)

    async def fold(self) -> None:
        self.folds += 1
        if self.onboarded:
            self.onboarded = False
            self.service.registry.apply(self.org)

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.history:
            self.history, self.known = False, True
            self.generation += 1

    def rule(self, statement: SignedStatement, org: Organization, context: object) -> None:
        if not self.known:
            raise Refused("no manifest holds this device", code="assembly-unknown-device")


@pytest.fixture
def elsewhere(running: Running, monkeypatch: pytest.MonkeyPatch) -> Elsewhere:
    """The service as one of several on a shared store, its organization forgotten (not
    read yet: onboarded elsewhere), its JSON statements judged by a rule on the history."""
    service = running.service
    org = service.registry.get("maker")
    assert org is not None
    other = Elsewhere(service, org)
    monkeypatch.setattr(service, "registry", Registry())
    monkeypatch.setattr(service, "shared", True)
    monkeypatch.setattr(service, "_fold_orgs", other.fold)
    monkeypatch.setattr(service, "payload_rules", {JSON: other.rule})
    service.history = other
    check = service.check_async

    async def counted(*args: object, **kwargs: object) -> tuple[SignedStatement, Organization]:
        other.checks += 1
        return await check(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "check_async", counted)
    return other


async def test_an_accepted_statement_reads_nothing_more(
    running: Running, elsewhere: Elsewhere
) -> None:
    running.service.registry.apply(elsewhere.org)
    elsewhere.known = True
    await running.service.check_current(good(running.issuer))
    assert (elsewhere.checks, elsewhere.folds, elsewhere.refreshes) == (1, 0, 0)


async def test_an_issuer_and_a_history_registered_elsewhere_are_read_once_each(
    running: Running, elsewhere: Elsewhere
) -> None:
    elsewhere.onboarded = elsewhere.history = True
    _, org = await running.service.check_current(good(running.issuer))
    assert org.name == "maker"
    assert (elsewhere.checks, elsewhere.folds, elsewhere.refreshes) == (3, 1, 1)


async def test_a_read_that_teaches_nothing_is_not_followed_by_a_check(
    running: Running, elsewhere: Elsewhere
) -> None:
    with pytest.raises(VerificationError) as unknown:
        await running.service.check_current(good(running.issuer))
    assert unknown.value.code == "issuer-unknown"
    assert (elsewhere.checks, elsewhere.folds, elsewhere.refreshes) == (1, 1, 0)
    running.service.registry.apply(elsewhere.org)
    elsewhere.checks = elsewhere.folds = 0
    with pytest.raises(Refused) as rogue:
        await running.service.check_current(good(running.issuer))
    assert rogue.value.code == "assembly-unknown-device"
    assert (elsewhere.checks, elsewhere.folds, elsewhere.refreshes) == (1, 0, 1)


async def test_each_read_is_made_once_however_the_refusals_go(
    running: Running, elsewhere: Elsewhere, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history that grows at every read, and a rule that refuses all the same: the
    history is read once, and the statement checked at most three times in all."""

    async def grows() -> None:
        elsewhere.refreshes += 1
        elsewhere.generation += 1

    def refuses(statement: SignedStatement, org: Organization, context: object) -> None:
        raise Refused("still no manifest", code="assembly-unknown-device")

    monkeypatch.setattr(elsewhere, "refresh", grows)
    monkeypatch.setattr(running.service, "payload_rules", {JSON: refuses})
    elsewhere.onboarded = True
    with pytest.raises(Refused):
        await running.service.check_current(good(running.issuer))
    assert (elsewhere.checks, elsewhere.folds, elsewhere.refreshes) == (3, 1, 1)


async def test_a_process_with_a_store_of_its_own_reads_nothing(
    running: Running, elsewhere: Elsewhere, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(running.service, "shared", False)
    elsewhere.onboarded = elsewhere.history = True
    with pytest.raises(VerificationError) as unknown:
        await running.service.check_current(good(running.issuer))
    assert unknown.value.code == "issuer-unknown"
    assert (elsewhere.checks, elsewhere.folds, elsewhere.refreshes) == (1, 0, 0)


async def test_refusals_waiting_together_share_one_read_of_the_records(
    running: Running, elsewhere: Elsewhere, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refusals that come while a read of the organization records runs wait for it, then
    share the next one (the first may have read before what they look for was stored)."""
    running_fold = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        elsewhere.folds += 1
        running_fold.set()
        await release.wait()

    monkeypatch.setattr(running.service, "_fold_orgs", slow)
    first = asyncio.create_task(running.service.refresh_orgs())
    await running_fold.wait()
    waiting = [asyncio.create_task(running.service.refresh_orgs()) for _ in range(8)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiting)
    assert elsewhere.folds == 2


async def test_a_read_that_began_before_a_refusal_is_not_its_even_when_it_fails(
    running: Running, elsewhere: Elsewhere, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of the records that began before a refusal may have missed what it looks
    for: whether it ends well or fails, the refusal waits for it and then gets the next
    one, rather than be refused on records read before the ones it looks for were
    stored."""
    running_fold = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def fails_first() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            running_fold.set()
            await release.wait()
            raise StorageError("the database went away")
        await elsewhere.fold()

    monkeypatch.setattr(running.service, "_fold_orgs", fails_first)
    first = asyncio.create_task(running.service.refresh_orgs())
    await running_fold.wait()
    elsewhere.onboarded = True  # stored elsewhere after the failing read began
    waiting = asyncio.create_task(running.service.check_current(good(running.issuer)))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(StorageError):
        await first
    elsewhere.known = True
    _, org = await waiting
    assert org.name == "maker"
    assert calls == 2


async def test_a_caller_that_goes_away_leaves_the_read_to_the_others(
    running: Running, elsewhere: Elsewhere, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller cancelled while it waits does not cancel the read it shares: the read runs
    to its end for the others, and those that came while it ran get the next one."""
    reading = asyncio.Event()
    release = asyncio.Event()
    ended: list[str] = []

    async def slow() -> None:
        reading.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        ended.append("read")

    monkeypatch.setattr(running.service, "_fold_orgs", slow)
    gone = asyncio.create_task(running.service.refresh_orgs())
    sharing = asyncio.create_task(running.service.refresh_orgs())  # asked before it began
    await reading.wait()
    after = asyncio.create_task(running.service.refresh_orgs())  # asked after it began
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    monkeypatch.setattr(running.service, "_fold_orgs", elsewhere.fold)
    await asyncio.sleep(0)
    assert not sharing.done() and not after.done() and ended == []
    release.set()
    await sharing
    assert ended == ["read"]
    await after
    assert elsewhere.folds == 1  # the next read, after the one that was its caller's


async def test_a_read_that_is_cancelled_leaves_its_callers_to_the_next(
    running: Running, elsewhere: Elsewhere, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read cancelled under its callers (not by them) serves none of them: they take the
    next read, and later callers read as before."""
    calls = 0

    async def cancelled_first() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError
        await elsewhere.fold()

    monkeypatch.setattr(running.service, "_fold_orgs", cancelled_first)
    await asyncio.gather(*(running.service.refresh_orgs() for _ in range(3)))
    assert (calls, elsewhere.folds) == (2, 1)
    await running.service.refresh_orgs()
    assert (calls, elsewhere.folds) == (3, 2)


async def test_a_read_that_fails_fails_those_that_shared_it_and_the_next_caller_reads_again(
    running: Running, elsewhere: Elsewhere, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callers that shared a read that failed get its error (the store's: retryable),
    not a refusal taken from records read before; the next caller reads anew, not held to
    that failure."""
    reading = asyncio.Event()
    release = asyncio.Event()

    async def fails() -> None:
        elsewhere.folds += 1
        reading.set()
        await release.wait()
        raise StorageError("the database went away")

    monkeypatch.setattr(running.service, "_fold_orgs", fails)
    elsewhere.known = True
    loop = asyncio.get_running_loop()
    before = loop.time()
    sharing = [
        asyncio.create_task(running.service.check_current(good(running.issuer))),
        asyncio.create_task(running.service.refresh_orgs()),
    ]
    await reading.wait()
    # A caller whose lookup failed before the read began is served by it too.
    sharing.append(asyncio.create_task(running.service.refresh_orgs(before)))
    await asyncio.sleep(0)
    release.set()
    for task in sharing:
        with pytest.raises(StorageError):
            await task
    assert elsewhere.folds == 1

    monkeypatch.setattr(running.service, "_fold_orgs", elsewhere.fold)
    elsewhere.onboarded = True
    _, org = await running.service.check_current(good(running.issuer))
    assert org.name == "maker"
    assert elsewhere.folds == 2


async def test_a_refusal_a_record_cannot_lift_reads_nothing(
    running: Running, elsewhere: Elsewhere
) -> None:
    """A bad signature of a known issuer (or any refusal after the organization's checks)
    reads no records: a flood of such statements costs the store nothing."""
    running.service.registry.apply(elsewhere.org)
    elsewhere.known = True
    statement = bytearray(good(running.issuer))
    statement[-1] ^= 1  # the signature's last byte
    for _ in range(20):
        with pytest.raises(VerificationError) as bad:
            await running.service.check_current(bytes(statement))
        assert bad.value.code == "cose-bad-signature"
    assert (elsewhere.folds, elsewhere.refreshes) == (0, 0)


async def test_reads_of_the_records_are_spaced(running: Running, elsewhere: Elsewhere) -> None:
    """Unknown issuers, one after another, read the records at most once per
    ORG_READ_SPACING."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        with pytest.raises(VerificationError):
            await running.service.check_current(good(running.issuer))
    assert elsewhere.folds == 5
    assert loop.time() - start >= 4 * ORG_READ_SPACING * 0.9


async def test_no_read_begins_once_the_service_closes(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller waiting for the next read while the service closes gets RetryLater, and no
    read of the records begins after close() has returned."""
    service = running.service
    began: list[float] = []
    loop = asyncio.get_running_loop()

    async def slow_fold() -> None:
        began.append(loop.time())
        await asyncio.sleep(0.3)

    monkeypatch.setattr(service, "_fold_orgs", slow_fold)
    first = asyncio.create_task(service.refresh_orgs())
    await asyncio.sleep(0.1)  # the first read runs
    late = asyncio.create_task(service.refresh_orgs())  # asked after it began: the next
    await asyncio.sleep(0)
    await service.close()
    closed = loop.time()
    for caller in (first, late):
        with pytest.raises((RetryLater, asyncio.CancelledError)):
            await asyncio.wait_for(caller, 2)
    await asyncio.sleep(0.2)
    assert [t for t in began if t >= closed] == []
    with pytest.raises(RetryLater):
        await service.refresh_orgs()
