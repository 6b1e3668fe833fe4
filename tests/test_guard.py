"""The runbook's security switches (23.8) through a real server: failed logins per address, the
deny list and the emergency rate limit. Client addresses arrive in X-Forwarded-For from a trusted
proxy (127.0.0.1), as they do behind the ingress."""

from __future__ import annotations

import httpx
import pytest
import websockets

from secureconnect.client import ApiError, Client
from secureconnect.guard.schemas import Blocked, Lifted, ModeSet
from tests.helpers import PASSWORD, error_of, signed_up

ATTACKER = "203.0.113.7"
NEIGHBOUR = "203.0.113.8"
USER = "198.51.100.20"


@pytest.fixture
def guarded(own_server):
    own_server.extra_env.update(
        {
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_TRUSTED_PROXIES": '["127.0.0.1"]',
            "SECURECONNECT_GUARD_REFRESH_S": "0.2",
        }
    )
    return own_server.start()


async def admin_client(url: str) -> Client:
    return await signed_up(Client(url), "oncall")


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def test_failed_logins_are_counted_per_address_for_admins_only(guarded) -> None:
    oncall = await admin_client(guarded.url)
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        await http.post("/v1/auth/register", json={"username": "victim", "password": PASSWORD})
        # Four guesses at the victim and three at a name nobody has: under the free failures
        # of an account (5), so all are checked and counted (test_login_throttle has the rest).
        for name in ["victim"] * 4 + ["nobody"] * 3:
            wrong = await http.post(
                "/v1/auth/login",
                json={"username": name, "password": "not-the-password"},
                headers=from_ip(ATTACKER),
            )
            assert error_of(wrong) == (401, "invalid_credentials")
        await http.post(
            "/v1/auth/login",
            json={"username": "victim", "password": "typo-once"},
            headers=from_ip(USER),
        )
        ok = await http.post(
            "/v1/auth/login",
            json={"username": "victim", "password": PASSWORD},
            headers=from_ip(USER),
        )
        assert ok.status_code == 200
        # The victim is not an admin: the report is not theirs to read.
        victim_token = ok.json()["token"]
        refused = await http.get(
            "/v1/ops/security", headers={"Authorization": f"Bearer {victim_token}"}
        )
        assert error_of(refused) == (403, "not_admin")
    report = await oncall.security_report(window_s=600)
    assert [(f.ip, f.count) for f in report.failed_logins[:2]] == [(ATTACKER, 7), (USER, 1)]
    assert report.failed_logins_total == 8
    assert report.rate_limit.mode == "normal"
    assert report.blocked == []
    await oncall.aclose()


async def test_a_blocked_network_is_refused_everywhere_but_the_probes(guarded) -> None:
    oncall = await admin_client(guarded.url)
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        with pytest.raises(ApiError) as bad:
            await oncall.block("203.0.113.999", "brute force")
        assert (bad.value.status, bad.value.code) == (400, "invalid_network")
        # Numbers beyond 64 bits are refused, not handed to the database (they were 500s).
        with pytest.raises(ApiError) as bad:
            await oncall.block("203.0.113.5", "brute force", expires_in_s=2**63)
        assert (bad.value.status, bad.value.code) == (422, "invalid_request")
        with pytest.raises(ApiError) as bad:
            await oncall.incident(str(2**64))
        assert (bad.value.status, bad.value.code) == (404, "incident_not_found")

        blocked = await oncall.block("203.0.113.0/28", "brute force on /v1/auth/login")
        assert blocked == Blocked(network="203.0.113.0/28", blocked=True, already=False)
        for ip in (ATTACKER, NEIGHBOUR):
            refused = await http.post(
                "/v1/auth/login",
                json={"username": "x", "password": "y" * 12},
                headers=from_ip(ip),
            )
            assert error_of(refused) == (403, "ip_blocked")
        page = await http.get("/", headers=from_ip(ATTACKER))
        assert page.status_code == 403
        # Kubelet and Prometheus keep seeing the replica.
        assert (await http.get("/readyz", headers=from_ip(ATTACKER))).status_code == 200
        # Everyone else is served.
        fine = await http.get("/v1/status", headers=from_ip(USER))
        assert fine.status_code == 200

        # The WebSocket upgrade is refused too.
        ws_url = guarded.url.replace("http", "ws") + "/v1/events"
        with pytest.raises(websockets.exceptions.InvalidStatus) as upgrade:
            async with websockets.connect(
                ws_url, additional_headers=from_ip(ATTACKER), open_timeout=5
            ):
                pass
        assert upgrade.value.response.status_code == 403

        # The block is stored: it survives a restart.
        guarded.restart()
        refused = await http.get("/v1/status", headers=from_ip(ATTACKER))
        assert error_of(refused) == (403, "ip_blocked")

        report = await oncall.security_report()
        assert [(b.network, b.blocked_by) for b in report.blocked] == [("203.0.113.0/28", "oncall")]
        assert await oncall.unblock("203.0.113.0/28") == Lifted(
            network="203.0.113.0/28", blocked=False
        )
        assert (await http.get("/v1/status", headers=from_ip(ATTACKER))).status_code == 200
        with pytest.raises(ApiError) as again:
            await oncall.unblock("203.0.113.0/28")
        assert (again.value.status, again.value.code) == (404, "not_blocked")
    # Lifting keeps the history: the row is still there, stamped.
    rows = guarded.query("SELECT network, lifted_by FROM blocked_networks")
    assert rows == [("203.0.113.0/28", "oncall")]
    await oncall.aclose()


async def test_emergency_rate_limit_allows_one_request_a_minute_per_address(guarded) -> None:
    oncall = await admin_client(guarded.url)
    with pytest.raises(ApiError) as bad:
        await oncall.set_rate_limit("panic")
    assert (bad.value.status, bad.value.code) == (400, "invalid_mode")
    assert await oncall.set_rate_limit("emergency") == ModeSet(mode="emergency")
    login = {"username": "someone", "password": "wrong-password"}
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        first = await http.post("/v1/auth/login", json=login, headers=from_ip(ATTACKER))
        assert first.status_code == 401
        second = await http.post("/v1/auth/login", json=login, headers=from_ip(ATTACKER))
        assert error_of(second) == (429, "rate_limited")
        assert 1 <= int(second.headers["retry-after"]) <= 60
        # Another address has its own minute.
        other = await http.post("/v1/auth/login", json=login, headers=from_ip(NEIGHBOUR))
        assert other.status_code == 401
        # The status page and the on-call tools stay usable, so the switch can be turned off.
        for _ in range(3):
            assert (await http.get("/v1/status", headers=from_ip(ATTACKER))).status_code == 200
        report = await oncall.security_report()
        assert report.rate_limit.mode == "emergency"
        assert report.rate_limit.set_by == "oncall"
        assert report.rate_limit.emergency_requests_per_min == 1
        assert await oncall.set_rate_limit("normal") == ModeSet(mode="normal")
        third = await http.post("/v1/auth/login", json=login, headers=from_ip(ATTACKER))
        assert third.status_code == 401
    await oncall.aclose()
