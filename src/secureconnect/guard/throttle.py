"""Login throttling per account and per client address (ASVS 4.0 2.2.1, the OWASP
Authentication Cheat Sheet).

A few failures are free; after them every failure doubles a wait, up to ``max_wait_s``; an
account also has an hourly cap. Nothing locks for good: waits end by themselves, and an hour
without a failure forgets the count, so an attacker can slow an owner down but never lock them
out. During a wait the password is not even checked, so a throttled guess costs no argon2.

An attempt is counted *before* its password is checked and forgiven when it turns out right.
Counting afterwards would let a hundred guesses sent at once all pass the check before the first
of them is recorded as a failure.

The counts live in Redis when the platform has one, so that every replica agrees, and in this
process's memory otherwise (the embedded default is one process). They are not kept in the
database: a decision there took two transactions, 14-16 ms a login on this machine
(``bench/logins.py``), against well under a millisecond in memory or on Redis. If Redis is away,
each replica throttles with its own memory until it is back: slower attackers, never a login
refused for an outage.

The account is keyed by a hash of the normalised name, whether or not the account exists, so
that throttling answers the same for both and no store or log lists the names tried.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import TooManyRequests
from secureconnect.guard.limits import OutageWarning

log = logging.getLogger("secureconnect.guard")

HOUR_MS = 3_600_000
ACCOUNT = "account"
ADDRESS = "address"


@dataclass(frozen=True)
class Count:
    """One account's or address's recent failures (attempts in flight included)."""

    failures: int = 0
    hour: int = 0
    hour_failures: int = 0
    last_at: int = 0
    wait_until: int = 0


@dataclass(frozen=True)
class ThrottlePolicy:
    """``free`` failures before the first wait; waits double from 1 s up to ``max_wait_s``;
    ``per_hour`` failures at most in a clock hour (0: no hourly cap)."""

    free: int
    max_wait_s: int
    per_hour: int = 0

    def failed(self, count: Count, now: int) -> Count:
        """The count after one more failure at ``now``, with the wait it earns."""
        hour = now // HOUR_MS
        failures, hour_failures = 1, 1
        if now - count.last_at < HOUR_MS:
            failures = count.failures + 1
            hour_failures = count.hour_failures + 1 if count.hour == hour else 1
        wait = 0
        if failures > self.free:
            wait = min(self.max_wait_s, 2 ** min(failures - self.free - 1, 30)) * 1000
        if self.per_hour and hour_failures >= self.per_hour:
            wait = max(wait, (hour + 1) * HOUR_MS - now)
        return Count(failures, hour, hour_failures, now, now + wait)

    def forgiven(self, count: Count, hour: int) -> Count:
        """The count with one attempt (of ``hour``) taken back: it was the right password."""
        failures = max(0, count.failures - 1)
        hour_failures = count.hour_failures
        if count.hour == hour:
            hour_failures = max(0, hour_failures - 1)
        # Back under the free failures: the wait this attempt started is lifted.
        wait_until = count.wait_until if failures > self.free else 0
        return replace(count, failures=failures, hour_failures=hour_failures, wait_until=wait_until)


Change = Callable[[list[Count]], list[Count] | None]


class Counts(Protocol):
    """Where counts are kept. ``change`` sees the current counts of ``keys`` and returns new
    ones (or None to leave them); no other change to those keys runs in between."""

    async def change(self, keys: list[str], change: Change) -> list[Count]: ...

    async def aclose(self) -> None: ...


class MemoryCounts:
    """This process's counts; bounded by dropping those idle for over an hour."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.counts: dict[str, Count] = {}
        self._swept = 0

    async def change(self, keys: list[str], change: Change) -> list[Count]:
        # No await from reading to writing: nothing else runs in between on this loop.
        now = self.clock.now_ms()
        if now - self._swept > HOUR_MS // 6:
            self._swept = now
            self.counts = {
                k: c
                for k, c in self.counts.items()
                if c.last_at > now - HOUR_MS or c.wait_until > now
            }
        current = [self.counts.get(k, Count()) for k in keys]
        new = change(current)
        if new is None:
            return current
        for key, count in zip(keys, new, strict=True):
            if count.failures or count.wait_until:
                self.counts[key] = count
            else:
                self.counts.pop(key, None)
        return new

    async def aclose(self) -> None:
        self.counts.clear()


# Compare-and-set of several keys in one round trip: if every key still holds what the caller
# last saw, write the new values; else answer what they hold. The policy stays in Python.
_COMPARE_AND_SET = """
local n = #KEYS
local held = redis.call('MGET', unpack(KEYS))
for i = 1, n do
  if (held[i] or '') ~= ARGV[i] then
    for j = 1, n do held[j] = held[j] or '' end
    return held
  end
end
for i = 1, n do
  if ARGV[n + i] == '' then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], ARGV[n + i], 'PXAT', ARGV[2 * n + i])
  end
end
return 1
"""


class RedisCounts:
    """Counts every replica shares, one string per key, changed by compare-and-set.

    A login is usually two round trips: this replica guesses what a key holds from what it last
    saw (nothing, for a name it has not seen), and the script writes the change only if the
    guess was right, or answers what the key really holds, and the change is tried again on that.
    (WATCH/MULTI took eight round trips, 3.6 ms a login on this machine.) Each key expires an
    hour after its last failure or wait.
    """

    PREFIX = "sc:login:"
    RETRIES = 20
    SEEN_MAX = 10_000

    def __init__(self, url: str, fallback: MemoryCounts) -> None:
        self._client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._script = self._client.register_script(_COMPARE_AND_SET)
        self.fallback = fallback
        self.seen: dict[str, str] = {}
        self._warn = OutageWarning("login throttle on this replica's memory: Redis unavailable")

    async def change(self, keys: list[str], change: Change) -> list[Count]:
        names = [self.PREFIX + k for k in keys]
        held = [self.seen.get(n, "") for n in names]
        try:
            for _ in range(self.RETRIES):
                current = [_decode(h) for h in held]
                new = change(current)
                wanted = [_encode(c) for c in new] if new is not None else held
                expiry = [str(max(c.last_at, c.wait_until) + HOUR_MS) for c in (new or current)]
                answer = await self._script(keys=names, args=[*held, *wanted, *expiry])
                if answer == 1:
                    self._remember(names, wanted)
                    return new if new is not None else current
                held = [h.decode() if isinstance(h, bytes) else str(h) for h in answer]
                self._remember(names, held)
        except (RedisError, OSError) as error:
            self._warn(error)
            return await self.fallback.change(keys, change)
        raise RedisError("login throttle: too much contention on one key")  # pragma: no cover

    def _remember(self, names: list[str], values: list[str]) -> None:
        if len(self.seen) > self.SEEN_MAX:
            self.seen.clear()  # only guesses: a wrong one costs a round trip
        self.seen.update(zip(names, values, strict=True))

    async def aclose(self) -> None:
        await self._client.aclose()
        await self.fallback.aclose()


def _encode(count: Count) -> str:
    if not (count.failures or count.wait_until):
        return ""  # nothing to remember: the key is deleted
    return ",".join(str(v) for v in astuple(count))


def _decode(held: str) -> Count:
    return Count(*(int(v) for v in held.split(","))) if held else Count()


@dataclass(frozen=True)
class Attempt:
    """A login attempt that was let through; hand it back to :meth:`LoginThrottle.succeeded`."""

    keys: tuple[str, str]
    hour: int


class LoginThrottled(TooManyRequests):
    """429 with ``Retry-After``; one body for every account, known or not."""

    def __init__(self, wait_s: int) -> None:
        super().__init__(
            "login_throttled", f"too many failed logins; try again in {wait_s} s", wait_s
        )


def account_key(username: str) -> str:
    """What the counts and the log know of an account: not its name."""
    return hashlib.sha256(b"login:" + username.encode()).hexdigest()[:32]


class LoginThrottle:
    def __init__(
        self,
        counts: Counts,
        account: ThrottlePolicy,
        address: ThrottlePolicy,
        clock: Clock = SYSTEM_CLOCK,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        """``on_refused(scope)`` is told of every refusal (the metrics count them)."""
        self.counts = counts
        self.clock = clock
        self.account = account
        self.address = address
        self.on_refused = on_refused

    async def admit(self, username: str, address: str) -> Attempt:
        """Counts the attempt as a failure in advance, or raises :class:`LoginThrottled`."""
        now = self.clock.now_ms()
        account = account_key(username)
        keys = (f"{ACCOUNT}:{account}", f"{ADDRESS}:{address}")
        waits: list[int] = []

        def count(current: list[Count]) -> list[Count] | None:
            waits[:] = [c.wait_until - now for c in current]
            if max(waits) > 0:
                return None
            return [self.account.failed(current[0], now), self.address.failed(current[1], now)]

        await self.counts.change(list(keys), count)
        if max(waits) > 0:
            scope = ACCOUNT if waits[0] >= waits[1] else ADDRESS
            wait_s = -(-max(waits) // 1000)
            if self.on_refused is not None:
                self.on_refused(scope)
            log.warning(
                "login throttled",
                extra={
                    "fields": {"ip": address, "account": account, "scope": scope, "wait_s": wait_s}
                },
            )
            raise LoginThrottled(wait_s)
        return Attempt(keys, now // HOUR_MS)

    async def succeeded(self, attempt: Attempt) -> None:
        """The right password: the account starts afresh, the address gets this attempt back.

        The address is only forgiven this one attempt, not reset: otherwise an attacker could
        wipe its address's count by logging in to an account of its own between guesses.
        """
        await self.counts.change(
            list(attempt.keys),
            lambda current: [Count(), self.address.forgiven(current[1], attempt.hour)],
        )

    async def aclose(self) -> None:
        await self.counts.aclose()
