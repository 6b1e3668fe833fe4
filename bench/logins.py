"""What login throttling costs (issue 13): logins per second with throttling on and off, and the
time a throttle decision adds to a login, against the argon2 hash it sits beside.

1. Through real servers on the embedded default with production argon2id (64 MiB): one with
   throttling on, one with it off, alternated round by round; right-password logins from a few
   concurrent clients. The reference is the server without throttling in the same run.
2. The decision alone (``LoginThrottle.admit`` then ``succeeded``, what throttling adds to a
   login) in memory (the embedded default) and on Redis (replicas), against one argon2id
   verify measured in the same run.

    .venv/bin/python bench/logins.py [--logins 40] [--rounds 3] [--decisions 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from argon2 import PasswordHasher

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import QUIET
from tests.server import ServerProcess

from secureconnect.guard.throttle import (
    Counts,
    LoginThrottle,
    MemoryCounts,
    RedisCounts,
    ThrottlePolicy,
)

PASSWORD = "benchmark password"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def logins_per_s(url: str, logins: int, concurrency: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await http.post("/v1/auth/register", json={"username": "bencher", "password": PASSWORD})
        queue = list(range(logins))

        async def client() -> None:
            while queue:
                queue.pop()
                answer = await http.post(
                    "/v1/auth/login", json={"username": "bencher", "password": PASSWORD}
                )
                assert answer.status_code == 200, answer.text

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return logins / (time.perf_counter() - started)


async def through_servers(logins: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        on = ServerProcess(Path(tmp) / "on", dict(QUIET)).start()
        off = ServerProcess(Path(tmp) / "off", {**QUIET, "SECURECONNECT_LOGIN_THROTTLE": "false"})
        off.start()
        try:
            rates: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(rounds):
                for name, server in (("off", off), ("on", on)):
                    rates[name].append(await logins_per_s(server.url, logins, 4))
        finally:
            on.stop()
            off.stop()
    on_rate, off_rate = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(
        f"logins/s (right password, 4 clients, median of {rounds}): "
        f"throttling on {on_rate:.1f}, off {off_rate:.1f} (reference), "
        f"ratio {on_rate / off_rate:.2f}"
    )


async def decisions(kind: str, counts: Counts, count: int, argon2_ms: float) -> None:
    throttle = LoginThrottle(counts, ThrottlePolicy(5, 900, 100), ThrottlePolicy(30, 900))
    took: list[float] = []
    try:
        for i in range(count):
            started = time.perf_counter()
            attempt = await throttle.admit(f"user{i % 50}", f"203.0.113.{i % 200}")
            await throttle.succeeded(attempt)
            took.append((time.perf_counter() - started) * 1000)
    finally:
        await throttle.aclose()
    p50, p99 = pct(took, 0.5), pct(took, 0.99)
    print(
        f"throttle decision, {kind} ({count}): p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
        f"argon2id verify {argon2_ms:.0f} ms (reference); p99 ratio {p99 / argon2_ms:.4f}"
    )


async def redis_ping(url: str, count: int) -> None:
    """The floor on Redis: one round trip; a throttled login costs about two."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    await client.ping()
    took = []
    for _ in range(count):
        started = time.perf_counter()
        await client.ping()
        took.append((time.perf_counter() - started) * 1000)
    await client.aclose()
    print(f"Redis PING ({count}): p50 {pct(took, 0.5):.3f} ms, p99 {pct(took, 0.99):.3f} ms")


def argon2_verify_ms() -> float:
    hasher = PasswordHasher(memory_cost=65536, parallelism=4)
    stored = hasher.hash(PASSWORD)
    took = []
    for _ in range(5):
        started = time.perf_counter()
        hasher.verify(stored, PASSWORD)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    await through_servers(args.logins, args.rounds)
    argon2_ms = argon2_verify_ms()
    await decisions("in memory", MemoryCounts(), args.decisions, argon2_ms)
    if not args.skip_redis:
        from tests.server import RedisProcess

        redis = RedisProcess()
        redis.start()
        try:
            counts = RedisCounts(redis.url, MemoryCounts())
            await decisions("on Redis", counts, args.decisions, argon2_ms)
            await redis_ping(redis.url, args.decisions)
        finally:
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
