"""The per-client request budgets: token buckets, the limiter, whom a request is charged to.

Time comes from a fake clock: nothing here sleeps.
"""

from __future__ import annotations

import hashlib
import math
import ssl

import pytest

from sealtrail.errors import InvalidInput, RateLimited, RetryLater
from sealtrail.service._limits import RateLimiter, RateLimits, TokenBucket, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10.0, capacity=20.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(20)] == [0.0] * 20
    assert bucket.take(0.0) == pytest.approx(0.1)  # one token is 1/rate away
    assert bucket.take(0.05) == pytest.approx(0.05)  # refused takes take nothing
    assert bucket.take(0.1) == 0.0
    assert bucket.take(0.1) > 0


def test_a_bucket_never_holds_more_than_its_capacity() -> None:
    bucket = TokenBucket(rate=10.0, capacity=3.0, now=0.0)
    allowed = sum(bucket.take(3600.0) == 0.0 for _ in range(10))
    assert allowed == 3


def test_a_clock_going_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1.0, capacity=1.0, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) == pytest.approx(1.0)
    assert bucket.updated == 10.0
    assert bucket.take(11.0) == 0.0


def test_reads_and_writes_have_separate_budgets_with_a_burst_of_twice_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(reads=5, writes=2), clock=clock)
    for _ in range(10):
        limiter.check("addr:a", write=False)
    for _ in range(4):
        limiter.check("addr:a", write=True)
    with pytest.raises(RateLimited) as refused:
        limiter.check("addr:a", write=False)
    assert refused.value.retry_after == pytest.approx(0.2)
    assert refused.value.code == "rate-limited"
    assert isinstance(refused.value, RetryLater)
    assert "read" in refused.value.message and "addr:a" not in refused.value.message
    with pytest.raises(RateLimited, match="write"):
        limiter.check("addr:a", write=True)
    clock.now += 0.5  # half a second: 2.5 reads and one write
    for _ in range(2):
        limiter.check("addr:a", write=False)
    limiter.check("addr:a", write=True)
    with pytest.raises(RateLimited):
        limiter.check("addr:a", write=True)


def test_clients_have_separate_budgets() -> None:
    limiter = RateLimiter(RateLimits(reads=1, writes=1), clock=Clock())
    limiter.check("addr:a", write=True)
    limiter.check("addr:a", write=True)
    with pytest.raises(RateLimited):
        limiter.check("addr:a", write=True)
    limiter.check("addr:b", write=True)
    limiter.check("token:" + "00" * 32, write=True)


def test_zero_is_unlimited_and_tracks_nobody() -> None:
    limiter = RateLimiter(RateLimits(reads=0, writes=1), clock=Clock())
    for _ in range(10_000):
        limiter.check("addr:a", write=False)
    assert limiter.tracked(write=False) == 0
    limiter.check("addr:a", write=True)
    assert limiter.tracked(write=True) == 1


def test_a_slow_rate_still_allows_one_request() -> None:
    limiter = RateLimiter(RateLimits(reads=0.01, writes=0.01), clock=Clock())
    limiter.check("addr:a", write=False)
    with pytest.raises(RateLimited) as refused:
        limiter.check("addr:a", write=False)
    assert refused.value.retry_after == pytest.approx(100.0)


def test_memory_is_bounded_and_the_least_recently_seen_client_is_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(reads=1, writes=1, max_clients=2), clock=clock)
    for _ in range(2):
        limiter.check("addr:a", write=False)
        limiter.check("addr:b", write=False)
    with pytest.raises(RateLimited):
        limiter.check("addr:a", write=False)  # a refused request still counts as seen
    limiter.check("addr:c", write=False)  # evicts b, seen least recently
    assert limiter.tracked(write=False) == 2
    with pytest.raises(RateLimited):
        limiter.check("addr:a", write=False)  # a was kept, still spent
    # b comes back with a full bucket: the bound only ever makes the limiter more lenient.
    limiter.check("addr:b", write=False)
    limiter.check("addr:b", write=False)
    assert limiter.tracked(write=False) == 2


def test_many_clients_stay_within_the_bound() -> None:
    limiter = RateLimiter(RateLimits(reads=1, writes=1, max_clients=100), clock=Clock())
    for n in range(1000):
        limiter.check(f"addr:{n}", write=n % 2 == 0)
    assert limiter.tracked(write=False) == 100
    assert limiter.tracked(write=True) == 100


@pytest.mark.parametrize(
    "limits",
    [
        {"reads": -1, "writes": 1},
        {"reads": 1, "writes": math.inf},
        {"reads": math.nan, "writes": 1},
        {"reads": 1, "writes": 1, "burst": 0.5},
        {"reads": 1, "writes": 1, "max_clients": 0},
    ],
)
def test_limits_are_checked(limits: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        RateLimits(**limits)  # type: ignore[arg-type]


TOKEN = b"the-admin-token"
DIGEST = hashlib.sha256(TOKEN).digest()


def _scope(
    *headers: tuple[bytes, bytes], client: tuple[str, int] | None = ("192.0.2.1", 5)
) -> dict[str, object]:
    return {"type": "http", "method": "GET", "headers": list(headers), "client": client}


def _known(digest: bytes) -> bool:
    return digest == DIGEST


def test_a_known_bearer_token_is_its_own_client_and_is_never_kept() -> None:
    key = client_key(_scope((b"authorization", b"Bearer " + TOKEN)), _known)
    assert key == "token:" + DIGEST.hex()
    assert client_key(_scope((b"authorization", b"bearer  " + TOKEN + b" ")), _known) == key


@pytest.mark.parametrize(
    "headers",
    [
        (),
        ((b"authorization", b"Bearer made-up-token"),),
        ((b"authorization", b"Basic " + TOKEN),),
        ((b"authorization", b"Bearer"),),
    ],
)
def test_anyone_else_is_charged_to_the_address(headers: tuple[tuple[bytes, bytes], ...]) -> None:
    assert client_key(_scope(*headers), _known) == "addr:192.0.2.1"


def test_a_request_without_a_peer_address_shares_one_budget() -> None:
    assert client_key(_scope(client=None), _known) == "addr:unknown"


CERT_DER = b"a client certificate, as DER"
CERT_DIGEST = hashlib.sha256(CERT_DER).digest()


def _with_certificate(scope: dict[str, object]) -> dict[str, object]:
    pem = ssl.DER_cert_to_PEM_cert(CERT_DER)
    return {**scope, "extensions": {"tls": {"client_cert_chain": [pem]}}}


def test_a_known_client_certificate_is_its_own_client() -> None:
    def cert_known(digest: bytes) -> bool:
        return digest == CERT_DIGEST

    scope = _with_certificate(_scope())
    assert client_key(scope, _known, cert_known) == "cert:" + CERT_DIGEST.hex()
    # A known token goes first; an unknown certificate is the address.
    with_token = _with_certificate(_scope((b"authorization", b"Bearer " + TOKEN)))
    assert client_key(with_token, _known, cert_known) == "token:" + DIGEST.hex()
    assert client_key(scope, _known, lambda _: False) == "addr:192.0.2.1"
    assert client_key(scope, _known) == "addr:192.0.2.1"
