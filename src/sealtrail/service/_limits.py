"""Per-client request budgets: token buckets in front of the app, as ASGI middleware.

Every request costs one token from its client's bucket for its kind: a *write* (POST, PUT,
PATCH, DELETE) from the write budget, anything else from the read budget. A bucket holds
at most ``burst`` seconds' worth of requests and refills at ``rate`` per second; an empty
bucket refuses the request with :class:`~sealtrail.errors.RateLimited` (HTTP 429 with
``Retry-After``) before the app sees it, so a refused request changes nothing.

Who a client is:

* a request whose ``Authorization: Bearer`` token the service knows (``token_known`` says
  so, given the token's SHA-256) is charged to that token: ``token:<hex SHA-256>``. The
  token itself is never kept;
* a request without one, over a connection whose TLS client certificate names a user
  (``certificate_known`` says so, given the certificate's SHA-256), is charged to that
  certificate: ``cert:<hex SHA-256>``;
* any other request is charged to the peer address the server sees (``addr:<host>``).
  An unknown token counts against the address, so sending a new made-up token with every
  request does not buy a new budget. Forwarding headers (``X-Forwarded-For``) are not
  trusted: behind a reverse proxy every client shares the proxy's budget.

Memory is bounded: each budget tracks at most ``max_clients`` clients, and adding one more
forgets the least recently seen. A forgotten client comes back with a full bucket, so the
bound can only make the limiter more lenient, never refuse a client that is within budget.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from sealtrail.errors import InvalidInput, RateLimited, Unauthorized
from sealtrail.scitt import certificate_hash

from ._auth import bearer_token
from ._peer import client_certificate

__all__ = [
    "BURST",
    "MAX_CLIENTS",
    "WRITE_METHODS",
    "RateLimitMiddleware",
    "RateLimiter",
    "RateLimits",
    "TokenBucket",
    "client_key",
]

#: A bucket holds this many seconds' worth of requests: a client may send twice its rate
#: at once after a quiet spell.
BURST = 2.0
#: Most clients tracked per budget (reads, writes): about 250 bytes each, so some 25 MB per
#: budget when full.
MAX_CLIENTS = 100_000
#: Methods charged to the write budget; every other method is a read.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class RateLimits:
    """Requests per second per client, for reads and for writes; 0 means unlimited."""

    reads: float
    writes: float
    burst: float = BURST
    max_clients: int = MAX_CLIENTS

    def __post_init__(self) -> None:
        for name in ("reads", "writes"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInput(f"rate limit {name} must be a finite number >= 0")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise InvalidInput("rate limit burst must be at least 1 second")
        if self.max_clients < 1:
            raise InvalidInput("rate limit max_clients must be at least 1")


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; starts full.

    Times come from the caller (a monotonic clock), so the bucket itself keeps no clock.
    """

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, *, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise InvalidInput("a token bucket needs rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be one
        (nothing is taken then)."""
        elapsed = now - self.updated
        if elapsed > 0:  # a clock that stood still or went back refills nothing
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class _Budget:
    """One kind of request's buckets, by client, least recently seen first."""

    def __init__(self, *, rate: float, burst: float, max_clients: int) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * burst)
        self.max_clients = max_clients
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.max_clients:
                self.buckets.popitem(last=False)
            bucket = self.buckets[client] = TokenBucket(
                rate=self.rate, capacity=self.capacity, now=now
            )
        else:
            self.buckets.move_to_end(client)
        return bucket.take(now)


class RateLimiter:
    """The read and write budgets of every client. Not thread-safe: one event loop uses it."""

    def __init__(self, limits: RateLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._reads = self._budget(limits.reads)
        self._writes = self._budget(limits.writes)

    def _budget(self, rate: float) -> _Budget | None:
        if rate == 0:
            return None
        return _Budget(rate=rate, burst=self.limits.burst, max_clients=self.limits.max_clients)

    def check(self, client: str, *, write: bool) -> None:
        """Charge one request to ``client``; raises :class:`RateLimited` (nothing charged)
        when its budget is spent."""
        budget = self._writes if write else self._reads
        if budget is None:
            return
        wait = budget.take(client, self._clock())
        if wait > 0:
            kind = "write" if write else "read"
            raise RateLimited(
                f"too many {kind} requests: this server allows {budget.rate:g} per second "
                f"per client (bursts of {budget.capacity:g})",
                retry_after=wait,
            )

    def tracked(self, *, write: bool) -> int:
        """How many clients the read (or write) budget tracks now."""
        budget = self._writes if write else self._reads
        return 0 if budget is None else len(budget.buckets)


def client_key(
    scope: Scope,
    token_known: Callable[[bytes], bool],
    certificate_known: Callable[[bytes], bool] | None = None,
) -> str:
    """Whom a request is charged to: a known bearer token's SHA-256, else a known TLS
    client certificate's, else the peer address."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            try:  # read as the access check reads it: a token it accepts is the one charged
                token = bearer_token(value.decode("latin-1"))
            except Unauthorized:
                break
            digest = hashlib.sha256(token.encode("ascii")).digest()
            if token_known(digest):
                return "token:" + digest.hex()
            break
    else:
        der = None if certificate_known is None else client_certificate(scope)
        if der is not None and certificate_known is not None:
            digest = certificate_hash(der)
            if certificate_known(digest):
                return "cert:" + digest.hex()
    peer = scope.get("client")
    return "addr:" + (str(peer[0]) if peer else "unknown")


class RateLimitMiddleware:
    """Refuses a request over its client's budget with ``refuse(error, scope)``'s response
    (the scope: for the answer to negotiate its encoding)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        refuse: Callable[[RateLimited, Scope], ASGIApp],
        token_known: Callable[[bytes], bool],
        certificate_known: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.refuse = refuse
        self.token_known = token_known
        self.certificate_known = certificate_known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                self.limiter.check(
                    client_key(scope, self.token_known, self.certificate_known),
                    write=scope["method"] in WRITE_METHODS,
                )
            except RateLimited as exc:
                # Refused before the app runs: nothing was read, stored or queued.
                await self.refuse(exc, scope)(scope, receive, send)
                return
        await self.app(scope, receive, send)
