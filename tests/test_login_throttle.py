"""Login throttling through a real server on both backends: brute force simulated on loopback,
bounded in count and time. Client addresses arrive in X-Forwarded-For from a trusted proxy
(127.0.0.1), as they do behind the ingress, so one test process can be many attackers."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from secureconnect.client import ApiError, Client
from secureconnect.guard.throttle import account_key
from tests.helpers import PASSWORD, error_of
from tests.server import RedisProcess, ServerProcess

ATTACKER = "203.0.113.7"
OWNER = "198.51.100.20"


SMALL = {
    "SECURECONNECT_TRUSTED_PROXIES": '["127.0.0.1"]',
    "SECURECONNECT_LOGIN_FREE_FAILURES": "3",
    "SECURECONNECT_LOGIN_FREE_FAILURES_PER_ADDRESS": "6",
    "SECURECONNECT_LOGIN_MAX_WAIT_S": "4",
}
# 3 free failures; then each failure doubles the wait: 1, 2, 4 s; 4 s is the cap.
BACKOFF = [
    (401, 0),
    (401, 0),
    (401, 0),
    (401, 0),
    (429, 1),
    (401, 0),
    (429, 2),
    (401, 0),
    (429, 4),
    (401, 0),
]


@pytest.fixture
def throttled(own_server):
    own_server.extra_env.update(SMALL)
    return own_server.start()


@pytest.fixture
def replicas(replicas_on_redis) -> list[ServerProcess]:
    return replicas_on_redis(SMALL)


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def attempt(http: httpx.AsyncClient, name: str, password: str, ip: str) -> httpx.Response:
    return await http.post(
        "/v1/auth/login", json={"username": name, "password": password}, headers=from_ip(ip)
    )


async def backoff(
    https: list[httpx.AsyncClient], name: str, ips: list[str]
) -> list[tuple[int, int]]:
    """Wrong passwords until 7 have been checked, each address (and server) in turn; waiting
    out every 429. Returns (status, Retry-After) of each answer."""
    seen: list[tuple[int, int]] = []
    checked = 0
    deadline = time.monotonic() + 60
    while checked < 7 and time.monotonic() < deadline:
        http = https[len(seen) % len(https)]
        answer = await attempt(http, name, "not-the-password", ips[len(seen) % len(ips)])
        wait = int(answer.headers.get("retry-after", 0))
        seen.append((answer.status_code, wait))
        if answer.status_code == 429:
            await asyncio.sleep(wait)
        else:
            checked += 1
    return seen


async def test_failures_double_the_wait_up_to_the_cap_and_the_owner_gets_in(throttled) -> None:
    async with httpx.AsyncClient(base_url=throttled.url) as http:
        await http.post("/v1/auth/register", json={"username": "victim", "password": PASSWORD})
        # One account, guessed from a new address every time: the account's count holds. An
        # account nobody has, guessed at the same time, answers alike, step by step.
        known, unknown = await asyncio.gather(
            backoff([http], "victim", [f"203.0.113.{i}" for i in range(1, 50)]),
            backoff([http], "nobody-here", [f"203.0.113.{i}" for i in range(100, 150)]),
        )
        assert known == unknown == BACKOFF
        refused = await attempt(http, "victim", PASSWORD, OWNER)
        assert error_of(refused) == (429, "login_throttled")
        also = await attempt(http, "nobody-here", PASSWORD, OWNER)
        assert also.json() == refused.json()
        assert also.headers["retry-after"] == refused.headers["retry-after"]

        # The right password after the wait works, and the account starts afresh.
        await asyncio.sleep(int(refused.headers["retry-after"]))
        ok = await attempt(http, "victim", PASSWORD, OWNER)
        assert ok.status_code == 200
        for _ in range(3):
            assert (await attempt(http, "victim", "typo", OWNER)).status_code == 401

    # Both accounts were throttled at once: the victim's line, whichever came first.
    line = throttled.log_line(
        lambda e: e.get("msg") == "login throttled" and e.get("account") == account_key("victim")
    )
    assert line["scope"] == "account"
    assert line["wait_s"] >= 1 and line["ip"].startswith("203.0.113.")
    metrics = (await httpx.AsyncClient(base_url=throttled.url).get("/metrics")).text
    assert 'secureconnect_logins_throttled_total{scope="account"}' in metrics


async def test_many_accounts_from_one_address_wait_and_other_addresses_do_not(throttled) -> None:
    async with httpx.AsyncClient(base_url=throttled.url) as http:
        await http.post("/v1/auth/register", json={"username": "bystander", "password": PASSWORD})
        # Credential stuffing: one address, a new name every time (6 free for an address).
        answers = [
            (await attempt(http, f"name{i}", "guess-123", ATTACKER)).status_code for i in range(9)
        ]
        assert answers == [401] * 7 + [429] * 2
        # The address waits even for an account it never tried, with the right password.
        assert error_of(await attempt(http, "bystander", PASSWORD, ATTACKER)) == (
            429,
            "login_throttled",
        )
        # Everyone else logs in, and the names tried are not locked for their owners.
        assert (await attempt(http, "bystander", PASSWORD, OWNER)).status_code == 200
        assert (await attempt(http, "name0", "guess-123", OWNER)).status_code == 401


async def test_guesses_sent_at_once_are_counted_one_by_one(throttled) -> None:
    async with httpx.AsyncClient(base_url=throttled.url, timeout=60) as http:
        await http.post("/v1/auth/register", json={"username": "target", "password": PASSWORD})
        answers = await asyncio.gather(
            *(attempt(http, "target", f"guess-{i:04d}", f"203.0.113.{i}") for i in range(24))
        )
    statuses = sorted(a.status_code for a in answers)
    # 3 free failures and the one that starts the first wait: no more guesses were checked.
    assert statuses == [401] * 4 + [429] * 20


async def test_the_hourly_cap_holds_and_ends_with_the_hour(own_server) -> None:
    own_server.extra_env.update(
        {
            "SECURECONNECT_LOGIN_FREE_FAILURES": "50",
            "SECURECONNECT_LOGIN_FAILURES_PER_HOUR": "5",
        }
    )
    srv = own_server.start()
    async with httpx.AsyncClient(base_url=srv.url) as http:
        await http.post("/v1/auth/register", json={"username": "capped", "password": PASSWORD})
        answers = [await attempt(http, "capped", "wrong-guess", "127.0.0.1") for _ in range(6)]
        assert [a.status_code for a in answers] == [401] * 5 + [429]
        until_the_hour = 3600 - int(time.time()) % 3600
        wait = int(answers[-1].headers["retry-after"])
        assert abs(wait - until_the_hour) <= 2 and wait <= 3600
        # The cap is per account: the owner's right password waits too (the SDK says how
        # long); another account does not.
        async with Client(srv.url) as sdk:
            with pytest.raises(ApiError) as refused:
                await sdk.login("capped", PASSWORD)
        assert refused.value.code == "login_throttled"
        assert abs(refused.value.retry_after_s - wait) <= 2
        await http.post("/v1/auth/register", json={"username": "other", "password": PASSWORD})
        assert (await attempt(http, "other", PASSWORD, "127.0.0.1")).status_code == 200


async def test_throttling_can_be_turned_off_for_measuring(own_server) -> None:
    own_server.extra_env.update(
        {"SECURECONNECT_LOGIN_THROTTLE": "false", "SECURECONNECT_LOGIN_FREE_FAILURES": "1"}
    )
    srv = own_server.start()
    async with httpx.AsyncClient(base_url=srv.url) as http:
        answers = [await attempt(http, "anyone", "wrong-guess", "127.0.0.1") for _ in range(4)]
    assert [a.status_code for a in answers] == [401] * 4


@pytest.mark.slow
async def test_replicas_on_redis_share_the_counts_and_an_outage_refuses_no_login(
    replicas: list[ServerProcess], redis_server: RedisProcess
) -> None:
    a, b = (httpx.AsyncClient(base_url=r.url) for r in replicas)
    async with a, b:
        await a.post("/v1/auth/register", json={"username": "shared", "password": PASSWORD})
        # Guesses alternate between the replicas: the sequence is the one of a single server.
        assert await backoff([a, b], "shared", [ATTACKER]) == BACKOFF
        assert error_of(await attempt(b, "shared", PASSWORD, OWNER)) == (429, "login_throttled")

        redis_server.stop()
        await b.post("/v1/auth/register", json={"username": "calm", "password": PASSWORD})
        # Redis away: logins are still answered, throttled by each replica's own memory.
        assert (await attempt(a, "calm", PASSWORD, OWNER)).status_code == 200
        answers = [(await attempt(a, "calm", "wrong-guess", OWNER)).status_code for _ in range(5)]
        assert answers == [401] * 4 + [429]
        assert (await attempt(b, "calm", PASSWORD, OWNER)).status_code == 200
    line = replicas[0].log_line(lambda e: "Redis unavailable" in e.get("msg", ""))
    assert line["level"] == "warning"


async def test_an_office_logging_in_at_once_behind_one_address_is_not_throttled(throttled) -> None:
    names = [f"colleague{i}" for i in range(16)]  # over the address's 6 free failures
    async with httpx.AsyncClient(base_url=throttled.url, timeout=60) as http:
        for name in names:
            await http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
        answers = await asyncio.gather(*(attempt(http, n, PASSWORD, OWNER) for n in names))
        assert [a.status_code for a in answers] == [200] * len(names)
        # And their address's count came back to nothing: a typo is a plain 401.
        assert (await attempt(http, names[0], "typo", OWNER)).status_code == 401
