"""Normal-mode rate limits through real servers: per user across two replicas sharing Redis,
per address on unauthenticated requests, 429 with Retry-After, the others unaffected."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from secureconnect.client import ApiError, Client
from tests.helpers import PASSWORD, error_of, signed_up, ws_url
from tests.server import ServerProcess

LIMITS = {
    "SECURECONNECT_RATE_LIMIT_PER_USER_MIN": "20",
    "SECURECONNECT_RATE_LIMIT_PER_ADDRESS_MIN": "10",
    "SECURECONNECT_TRUSTED_PROXIES": '["127.0.0.1"]',
}


async def until_limited(clients: list[Client], most: int) -> int:
    """Requests that went through, the clients taking turns, before the first 429."""
    for n in range(most):
        try:
            await clients[n % len(clients)].conversations()
        except ApiError as refused:
            assert refused.code == "rate_limited" and refused.status == 429
            assert 1 <= refused.retry_after_s <= 4
            return n
    return most


async def test_a_user_is_limited_and_others_are_not(own_server) -> None:
    own_server.extra_env.update(LIMITS)
    srv = own_server.start()
    busy, calm = await signed_up(Client(srv.url), "busy"), await signed_up(Client(srv.url), "calm")
    started = time.monotonic()
    done = await until_limited([busy], 100)
    # A bucket of 20, refilling one every 3 s while the burst goes out.
    assert 19 <= done <= 20 + (time.monotonic() - started) / 3
    assert await calm.conversations() == []  # someone else is not slowed down
    await busy.aclose()
    await calm.aclose()
    line = srv.log_line(lambda e: e.get("status") == 429 and e.get("uri") == "/v1/conversations")
    assert line["user"] == "busy"
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'secureconnect_rate_limited_total{scope="user"}' in metrics


async def test_sends_on_the_socket_count_against_the_same_limit(own_server) -> None:
    """A send frame is a request like the POST it replaces: the user's one bucket limits both,
    and a refused send is named, with the wait, on a socket that stays open."""
    own_server.extra_env.update(LIMITS)
    srv = own_server.start()
    busy, calm = await signed_up(Client(srv.url), "busy"), await signed_up(Client(srv.url), "calm")
    conv = await busy.direct(calm.login_info.username)
    body = base64.b64encode(b"ciphertext").decode()
    async with connect(ws_url(srv)) as ws:
        await ws.send(json.dumps({"type": "auth", "protocol": 2, "token": busy.token}))
        while json.loads(await ws.recv())["type"] != "ready":
            pass
        for i in range(30):
            frame = {"type": "send", "conversation_id": conv.id, "client_msg_id": f"m{i}"}
            await ws.send(json.dumps({**frame, "content_type": "text/plain", "body": body}))
        answers = []
        while len(answers) < 30:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] in ("sent", "error"):
                answers.append(frame)
        stored = [a for a in answers if a["type"] == "sent"]
        refused = [a for a in answers if a["type"] == "error"]
        # The bucket of 20 had paid for the conversation: about 19 sends, then refusals.
        assert 18 <= len(stored) <= 20, len(stored)
        assert {(a["code"], a["status"]) for a in refused} == {("rate_limited", 429)}
        assert all(1 <= a["retry_after_s"] <= 4 for a in refused)
        await ws.send(json.dumps({"type": "ping"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "pong":
            pass
    with pytest.raises(ApiError) as http:  # the HTTP side of the same bucket is empty too
        await busy.conversations()
    assert http.value.code == "rate_limited"
    assert len((await calm.history(conv.id)).messages) == 1 + len(stored)
    await busy.aclose()
    await calm.aclose()


async def test_unauthenticated_requests_are_limited_per_address(own_server) -> None:
    own_server.extra_env.update(LIMITS)
    srv = own_server.start()
    body = {"username": "nobody-at-all", "password": PASSWORD}
    async with httpx.AsyncClient(base_url=srv.url) as http:
        answers = []
        for _ in range(14):
            answer = await http.post(
                "/v1/auth/register", json=body, headers={"X-Forwarded-For": "203.0.113.9"}
            )
            answers.append(answer)
        codes = [error_of(a)[1] if a.status_code >= 400 else "ok" for a in answers]
        assert codes[0] == "ok" and set(codes[1:10]) == {"username_taken"}
        assert codes[10:] == ["rate_limited"] * 4
        assert int(answers[-1].headers["retry-after"]) >= 1
        # Another address, the status page and the probes are served.
        other = await http.post(
            "/v1/auth/register", json=body, headers={"X-Forwarded-For": "198.51.100.2"}
        )
        assert error_of(other) == (409, "username_taken")
        for path in ("/v1/status", "/readyz"):
            answer = await http.get(path, headers={"X-Forwarded-For": "203.0.113.9"})
            assert answer.status_code == 200


@pytest.fixture
def replicas(replicas_on_redis) -> list[ServerProcess]:
    return replicas_on_redis(LIMITS)


@pytest.mark.slow
async def test_the_limit_holds_across_two_replicas_on_redis(replicas) -> None:
    a, b = Client(replicas[0].url), Client(replicas[1].url)
    await signed_up(a, "shared")
    await b.login("shared", PASSWORD)
    started = time.monotonic()
    done = await until_limited([a, b], 100)  # turns: each replica sees half
    assert 18 <= done <= 20 + (time.monotonic() - started) / 3
    await a.aclose()
    await b.aclose()


async def test_registrations_are_limited_per_address(own_server) -> None:
    own_server.extra_env.update({**LIMITS, "SECURECONNECT_REGISTRATIONS_PER_ADDRESS_HOUR": "3"})
    srv = own_server.start()
    async with httpx.AsyncClient(base_url=srv.url) as http:

        async def register(name: str, ip: str) -> httpx.Response:
            return await http.post(
                "/v1/auth/register",
                json={"username": name, "password": PASSWORD},
                headers={"X-Forwarded-For": ip},
            )

        made = [(await register(f"new{i}", "203.0.113.9")).status_code for i in range(4)]
        assert made == [201, 201, 201, 429]
        refused = await register("new9", "203.0.113.9")
        assert error_of(refused) == (429, "rate_limited")
        assert "3 an hour per address" in refused.json()["error"]["message"]
        assert 1100 <= int(refused.headers["retry-after"]) <= 1200  # one more in 20 minutes
        assert (await register("new9", "198.51.100.2")).status_code == 201
