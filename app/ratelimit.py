"""Per-API-key rate limits and failed-authentication limits, as pure ASGI middleware.

- Writes (POST/PUT/PATCH/DELETE) and reads (everything else: GET polling) each have a token bucket per API
  key: `rate_limit_writes_per_minute` / `rate_limit_reads_per_minute` tokens, refilled continuously,
  so a client may burst up to a minute's allowance and then goes at the steady rate. Beyond it: 429
  problem+json with `Retry-After` (seconds until the next token), before any work is done.
- Failed authentication: every 401 takes a token from its client address's bucket
  (`auth_failures_per_minute`). When the bucket is empty, further *failures* from that address are
  answered 429 instead of 401; requests with a valid key from the same address (many phones behind
  one hospital NAT) are never held back by someone else's bad key.

The buckets live in each API process's memory: with N processes behind a load balancer a client may
get up to N times the configured rate. That is deliberate (docs/reliability.md): the limits protect
each process from a runaway or hostile client at no cost per request, whereas a limit shared through
PostgreSQL would add a write to every request — including every poll — and in SQLite mode every
write takes the database's single write lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import problem
from app.keys.service import hash_key
from app.principal import bearer_token

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Beyond this many buckets, full ones (clients idle for a minute) are dropped: memory stays bounded.
MAX_BUCKETS = 10_000


class TokenBucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, capacity: float, now: float) -> None:
        self.tokens = capacity
        self.updated = now


class RateLimiter:
    """Token buckets by key: `per_minute` capacity, refilled at per_minute/60 tokens a second."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def take(self, key: str) -> float | None:
        """Take one token: None when allowed, else the seconds until one is available."""
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._prune(now)
                bucket = self._buckets[key] = TokenBucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.capacity]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # all busy: start over rather than grow without bound
            self._buckets.clear()


def retry_after(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))


def _too_many(scope: Scope, wait_s: float, detail: str) -> Any:
    response = problem(429, "Rate limit exceeded", detail, slug="too-many-requests", instance=scope["path"])
    response.headers["Retry-After"] = str(retry_after(wait_s))
    return response


@dataclass(frozen=True)
class RateLimits:
    """One app's buckets; shared with the shipment poll fast path, which takes read tokens itself."""

    writes: RateLimiter
    reads: RateLimiter
    auth_failures: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            writes=RateLimiter(settings.rate_limit_writes_per_minute),
            reads=RateLimiter(settings.rate_limit_reads_per_minute),
            auth_failures=RateLimiter(settings.auth_failures_per_minute),
        )


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limits: RateLimits) -> None:
        self.app = app
        self.writes = limits.writes
        self.reads = limits.reads
        self.auth_failures = limits.auth_failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bearer_token(Headers(scope=scope).get("authorization"))
        limiter = self.writes if scope["method"] in WRITE_METHODS else self.reads
        if token is not None and limiter.enabled:
            # The key's hash identifies the API key without a database read (it is what the table stores).
            wait = limiter.take(hash_key(token))
            if wait is not None:
                kind = "reads" if limiter is self.reads else "writes"
                detail = f"too many {kind} for this API key; retry after the time in Retry-After"
                await _too_many(scope, wait, detail)(scope, receive, send)
                return
        if not self.auth_failures.enabled:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._limit_failures(scope, receive, send))

    def _limit_failures(self, scope: Scope, receive: Receive, send: Send) -> Send:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        replaced = False

        async def checked_send(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 401:
                wait = self.auth_failures.take(address)
                if wait is not None:
                    replaced = True
                    detail = "too many failed authentications from this address; retry after Retry-After"
                    await _too_many(scope, wait, detail)(scope, receive, send)
                    return
            if replaced:  # the 401's body: already answered with the 429
                return
            await send(message)

        return checked_send
