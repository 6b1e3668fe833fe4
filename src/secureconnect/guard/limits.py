"""Request rate limits in normal mode: per user on authenticated requests, per client address on
the rest (Zulip's starting point: 200 a minute per user, 100 per address), shared by every
replica through Redis when the platform has one, and in this process's memory otherwise.

Each limit is a GCRA token bucket (the generic cell rate algorithm, as in Redis's redis-cell
and Stripe's limiter): one stored number per key, the time at which the bucket will be full
again, so a decision is one read and one write, atomic in one Lua script on Redis. A bucket
holds ``burst`` requests and refills at ``per_minute``. The emergency limit (guard.service)
keeps working on top of these.

If Redis is away, each replica limits with its own memory until it is back (logged once a
minute): the limits are looser for a while, never a request refused for an outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import TooManyRequests

log = logging.getLogger("secureconnect.guard")


@dataclass(frozen=True)
class Rate:
    per_minute: float
    burst: int

    def described(self) -> str:
        if self.per_minute >= 1:
            return f"{self.per_minute:g} a minute"
        return f"{self.per_minute * 60:g} an hour"

    @property
    def interval_ms(self) -> float:
        return 60_000 / self.per_minute

    @property
    def tolerance_ms(self) -> float:
        return self.interval_ms * (self.burst - 1)


class Buckets(Protocol):
    async def take(self, key: str, rate: Rate) -> int:
        """0 when the request may go on, else the milliseconds until it would."""
        ...

    async def aclose(self) -> None: ...


class MemoryBuckets:
    MAX_KEYS = 100_000

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.full_at: dict[str, float] = {}

    async def take(self, key: str, rate: Rate) -> int:
        now = float(self.clock.now_ms())
        if len(self.full_at) > self.MAX_KEYS:  # bounded: full buckets carry no state
            self.full_at = {k: v for k, v in self.full_at.items() if v > now}
        tat = max(self.full_at.get(key, now), now)
        if tat - now > rate.tolerance_ms:
            return int(tat - rate.tolerance_ms - now) + 1
        self.full_at[key] = tat + rate.interval_ms
        return 0

    async def aclose(self) -> None:
        self.full_at.clear()


# GCRA on Redis's own clock, so that replicas whose clocks differ agree.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return math.floor(tat - tolerance - now) + 1
end
local full = tat + interval
redis.call('SET', KEYS[1], tostring(full), 'PX', math.ceil(full - now) + 1000)
return 0
"""


class OutageWarning:
    """Logs that a Redis-backed guard fell back to this replica's memory, once a minute at most
    (each request would otherwise log it)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self._last = 0.0

    def __call__(self, error: Exception) -> None:
        if time.monotonic() - self._last > 60:
            self._last = time.monotonic()
            log.warning(self.message, extra={"fields": {"error": type(error).__name__}})


class RedisBuckets:
    PREFIX = "sc:rate:"

    def __init__(self, url: str, fallback: MemoryBuckets) -> None:
        self._client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._script = self._client.register_script(_TAKE)
        self.fallback = fallback
        self._warn = OutageWarning("rate limits on this replica's memory: Redis unavailable")

    async def take(self, key: str, rate: Rate) -> int:
        try:
            wait = await self._script(
                keys=[self.PREFIX + key], args=[rate.interval_ms, rate.tolerance_ms]
            )
            return int(wait)
        except (RedisError, OSError) as error:
            self._warn(error)
            return await self.fallback.take(key, rate)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self.fallback.aclose()


class RateLimited(TooManyRequests):
    def __init__(self, scope: str, rate: Rate, wait_ms: int) -> None:
        super().__init__(
            "rate_limited",
            f"too many requests: {rate.described()} per {scope}; retry in {-(-wait_ms // 1000)} s",
            -(-wait_ms // 1000),
        )


class RateLimits:
    """``per_user`` on every authenticated request, ``per_address`` on the API's others,
    ``registrations`` on account creation."""

    def __init__(
        self,
        buckets: Buckets,
        per_user: Rate,
        per_address: Rate,
        registrations: Rate,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        """``registrations``: new accounts per address, on top of its request limit (a
        registration answers whether a name is taken, so it must not be a directory to
        walk). ``on_refused(scope)`` is told of every refusal (the metrics count them)."""
        self.buckets = buckets
        self.per_user = per_user
        self.per_address = per_address
        self.registrations = registrations
        self.on_refused = on_refused

    async def user(self, user_id: str) -> None:
        await self._take("user", f"u:{user_id}", self.per_user)

    async def address(self, ip: str) -> None:
        await self._take("address", f"a:{ip}", self.per_address)

    async def registration(self, ip: str) -> None:
        await self._take("address", f"r:{ip}", self.registrations)

    async def _take(self, scope: str, key: str, rate: Rate) -> None:
        wait = await self.buckets.take(key, rate)
        if wait:
            if self.on_refused is not None:
                self.on_refused(scope)
            raise RateLimited(scope, rate, wait)

    async def aclose(self) -> None:
        await self.buckets.aclose()
