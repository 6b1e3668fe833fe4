"""Incidents the runbook's way, through a real server: lifecycle, verification before close,
admin-only access, and Alertmanager's webhook opening and joining incidents."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

import httpx
import pytest
from aiosmtpd.controller import Controller

from secureconnect.client import ApiError, Client
from tests.helpers import run_cli, signed_up
from tests.server import ServerProcess, free_port

TOKEN = "alert-webhook-secret-123"


@pytest.fixture
def ops_server(own_server):
    own_server.extra_env.update(
        {
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_ALERT_WEBHOOK_TOKEN": TOKEN,
            "SECURECONNECT_INCIDENT_VERIFY_S": "2",
        }
    )
    return own_server.start()


async def logged_in(url: str, name: str) -> Client:
    return await signed_up(Client(url), name)


async def test_closing_early_needs_a_reason(ops_server) -> None:
    oncall = await logged_in(ops_server.url, "oncall")
    try:
        ref = str((await oncall.incident_open("Avatars broken", "P3")).number)
        with pytest.raises(ApiError) as unresolved:
            await oncall.incident_close(ref, "whatever")
        assert unresolved.value.code == "not_resolved"
        await oncall.incident_step(ref, "resolved", "CDN purged")
        closed = await oncall.incident_close(ref, "false alarm, confirmed by the CDN vendor")
        assert "override: false alarm" in closed.timeline[-1].text
        assert closed.verified_at is None  # closed, but never verified
        assert "verified" not in [e.kind for e in closed.timeline]
        with pytest.raises(ApiError) as bad:
            await oncall.incident_open("x", "P9")
        assert (bad.value.status, bad.value.code) == (400, "invalid_severity")
    finally:
        await oncall.aclose()


async def test_only_admins_manage_incidents(ops_server) -> None:
    oncall = await logged_in(ops_server.url, "oncall")
    mallory = await logged_in(ops_server.url, "mallory")
    try:
        ref = str((await oncall.incident_open("DB slow", "P2")).number)
        for attempt in (
            mallory.incidents(),
            mallory.incident(ref),
            mallory.incident_open("fake", "P1"),
            mallory.incident_close(ref, "nope"),
        ):
            with pytest.raises(ApiError) as refused:
                await attempt
            assert (refused.value.status, refused.value.code) == (403, "not_admin")
        assert httpx.get(ops_server.url + "/v1/ops/incidents").status_code == 401
    finally:
        await oncall.aclose()
        await mallory.aclose()


STARTED = "2026-11-29T03:04:05.123456789Z"  # Alertmanager's nanoseconds
STARTED_MS = 1795921445123


def alert(status: str, name: str = "High5xxRate", severity: str = "P1") -> dict[str, object]:
    return {
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": name, "severity": severity},
                "annotations": {"summary": "More than 5% of requests fail with 5xx"},
                "startsAt": STARTED,
            }
        ],
    }


async def test_alertmanager_opens_joins_and_resolves_incidents(ops_server) -> None:
    hook = ops_server.url + "/v1/ops/alertmanager"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(hook, json=alert("firing")).status_code == 401
    assert (
        httpx.post(
            hook, json=alert("firing"), headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    first = httpx.post(hook, json=alert("firing"), headers=auth).json()["incidents"]
    again = httpx.post(hook, json=alert("firing"), headers=auth).json()["incidents"]
    assert first == again  # the same alert joins its open incident
    httpx.post(hook, json=alert("resolved"), headers=auth)
    other = httpx.post(hook, json=alert("firing", "SlowRequests", "P2"), headers=auth).json()
    assert other["incidents"] != first
    oncall = await logged_in(ops_server.url, "oncall")
    try:
        incident = await oncall.incident(str(first[0]))
        assert (incident.severity, incident.title) == (
            "P1",
            "More than 5% of requests fail with 5xx",
        )
        assert [e.kind for e in incident.timeline] == [
            "opened",
            "alert_firing",
            "alert_resolved",
        ]
        # Stamped when the alert began, even if it reached us later (Alertmanager retries).
        assert incident.opened_at == incident.timeline[0].at == STARTED_MS
        assert len(await oncall.incidents()) == 2
    finally:
        await oncall.aclose()


async def test_an_alert_whose_firing_never_got_through_still_opens_its_incident(
    ops_server,
) -> None:
    """The store was down while the alert fired (every delivery failed), and the first of
    Alertmanager's retries to get through says "resolved": the outage still gets its incident,
    dated from when the alert began, once and only once."""
    hook = ops_server.url + "/v1/ops/alertmanager"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    late = httpx.post(hook, json=alert("resolved", "StoreUnreachable"), headers=auth).json()
    assert len(late["incidents"]) == 1
    again = httpx.post(hook, json=alert("resolved", "StoreUnreachable"), headers=auth).json()
    assert again["incidents"] == late["incidents"]  # a retried resolution opens nothing new
    oncall = await logged_in(ops_server.url, "oncall")
    try:
        incident = await oncall.incident(str(late["incidents"][0]))
        assert incident.opened_at == STARTED_MS
        assert incident.timeline[0].text.endswith("alert StoreUnreachable firing")
        assert [e.kind for e in incident.timeline][-1] == "alert_resolved"
        before = len(await oncall.incidents())
        # An alert whose incident was opened when it fired is no news when it resolves.
        httpx.post(hook, json=alert("firing", "SlowRequests", "P2"), headers=auth)
        httpx.post(hook, json=alert("resolved", "SlowRequests", "P2"), headers=auth)
        assert len(await oncall.incidents()) == before + 1
    finally:
        await oncall.aclose()


@pytest.mark.slow  # a CLI process per step
def test_oncall_from_the_terminal(ops_server, tmp_path) -> None:
    def cli(*args: str) -> str:
        return run_cli(ops_server.url, tmp_path, *args, check=True, timeout=60).stdout

    cli("register", "oncall")
    cli("login", "oncall")
    assert "#1 P1 Critical open: Video calls dropping" in cli(
        "oncall", "open", "Video calls dropping", "--severity", "P1"
    )
    cli("oncall", "ack", "1")
    cli("oncall", "update", "1", "Restarted video-service")
    listed = cli("oncall", "list")
    assert "#1 P1 Critical acknowledged" in listed
    shown = cli("oncall", "show", "1")
    assert "Restarted video-service" in shown
    assert "owner oncall" in shown
    cli("oncall", "triage", "1", "--users-affected", "340", "--no-recent-deploy")
    cli("oncall", "mitigate", "1", "scaled video-service to 10 replicas")
    cli("oncall", "resolve", "1", "SFU memory leak fixed in 1.0.1")
    report = cli("oncall", "postmortem", "1")
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections == [
        "## 1. Summary",
        "## 2. Impact",
        "## 3. Timeline",
        "## 4. Root cause",
        "## 5. Immediate actions",
        "## 6. Lessons and follow-ups",
    ]
    assert "Users affected: 340" in report
    assert "A deploy in the hour before: no" in report
    assert "SFU memory leak fixed in 1.0.1" in report.split("## 4. Root cause")[1]
    assert "scaled video-service to 10 replicas" in report.split("## 5. Immediate actions")[1]
    assert report.count("\n- 20") >= 6  # every timeline step, stamped


class SlackReceiver:
    """A Slack-compatible incoming webhook on this machine, recording what it is sent."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


class Mailbox:
    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"

    def __init__(self) -> None:
        self.messages = []


@pytest.mark.slow  # waits for real reminder rounds
async def test_reminders_reach_slack_email_and_the_log(own_server) -> None:
    slack, mailbox = SlackReceiver(), Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    own_server.extra_env.update(
        {
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_INCIDENT_UPDATE_EVERY_S": "1",  # the runbook's 15 minutes, compressed
            "SECURECONNECT_INCIDENT_STAKEHOLDERS_AFTER_S": "2",  # and its 30
            "SECURECONNECT_REMINDER_CHECK_S": "0.2",
            "SECURECONNECT_NOTIFY_SLACK_WEBHOOK_URL": slack.url,
            "SECURECONNECT_NOTIFY_SMTP_HOST": "127.0.0.1",
            "SECURECONNECT_NOTIFY_SMTP_PORT": str(smtp_port),
            "SECURECONNECT_NOTIFY_STAKEHOLDER_EMAILS": '["cto@example.org"]',
        }
    )
    own_server.start()
    oncall = await logged_in(own_server.url, "oncall")
    try:
        opened = await oncall.incident_open("Chat very slow", "P2")
        await oncall.incident_step(str(opened.number), "acknowledged")
        for _ in range(100):
            if mailbox.messages and any("no update" in m["text"] for m in slack.received):
                break
            await asyncio.sleep(0.1)
        reminders = [m["text"] for m in slack.received if "no update" in m["text"]]
        assert reminders
        assert "@oncall" in reminders[0]
        assert "secureconnect oncall update 1" in reminders[0]
        assert any("has been open for" in m["text"] for m in slack.received)
        assert [m.rcpt_tos for m in mailbox.messages] == [["cto@example.org"]]
        assert b"Incident #1 ongoing" in mailbox.messages[0].content
        await asyncio.sleep(1.0)  # more rounds: stakeholders are told once, not every round
        assert len(mailbox.messages) == 1
        timeline = [e.kind for e in (await oncall.incident("1")).timeline]
        assert "reminder" in timeline
        assert timeline.count("stakeholders_notified") == 1
        assert any(e.get("msg") == "incident notice" for e in own_server.logs())
    finally:
        await oncall.aclose()
        smtp.stop()
        slack.close()


async def test_status_page_follows_public_updates_and_works_without_javascript(ops_server) -> None:
    page = httpx.get(ops_server.url + "/v1/status").json()
    assert page["overall"] == {
        "state": "operational",
        "colour": "green",
        "text": "All systems operational",
    }
    assert [c["name"] for c in page["components"]] == [
        "Login & API",
        "Chat",
        "Video calls",
        "AI suggestions",
        "Avatars",
    ]
    # A function not offered here (this server runs no SFU) is never shown as working;
    # suggested replies follow their pack's own check, avatars whether pictures can be made.
    states = {c["name"]: (c["state"], c["colour"]) for c in page["components"]}
    assert states["Video calls"] == ("not_available", "grey")
    assert states["AI suggestions"] == ("operational", "green")
    assert states["Avatars"] == ("operational", "green")
    assert states["Chat"] == ("operational", "green")
    assert "not available" in httpx.get(ops_server.url + "/status").text
    oncall = await logged_in(ops_server.url, "oncall")
    mallory = await logged_in(ops_server.url, "mallory")
    try:
        ref = str((await oncall.incident_open("Slow delivery", "P2")).number)
        assert httpx.get(ops_server.url + "/v1/status").json()["incidents"] == []  # internal
        with pytest.raises(ApiError) as refused:
            await mallory.incident_public_update(ref, template="yellow")
        assert refused.value.code == "not_admin"
        with pytest.raises(ApiError) as bad:
            await oncall.incident_public_update(
                ref, phase="investigating", text="x", components={"Chat": "purple"}
            )
        assert (bad.value.status, bad.value.code) == (400, "invalid_component")
        posted = await oncall.incident_public_update(ref, template="yellow")
        chat = next(c for c in posted.components if c.name == "Chat")
        assert (chat.state, chat.colour) == ("degraded", "yellow")
        assert posted.overall.colour == "yellow"
        [shown] = posted.incidents
        assert shown.updates[0].text == (
            "Some users are experiencing slow message delivery. We are working on it."
        )
        html = httpx.get(ops_server.url + "/status")
        assert html.status_code == 200
        assert "<script" not in html.text
        assert "Some systems degraded" in html.text
        assert "slow message delivery" in html.text
        assert 'name="viewport"' in html.text
        # Once resolved, a stray update must not put it back to "identified" in public.
        for step in ("acknowledged", "mitigated", "resolved"):
            await oncall.incident_step(ref, step, "done")
        with pytest.raises(ApiError) as late:
            await oncall.incident_public_update(ref, template="yellow")
        assert (late.value.status, late.value.code) == (409, "incident_resolved")
        assert httpx.get(ops_server.url + "/v1/status").json()["overall"]["colour"] == "green"
        await oncall.incident_public_update(ref, template="green")
        after = httpx.get(ops_server.url + "/v1/status").json()
        assert after["overall"]["colour"] == "green"
        assert after["incidents"] == []
        assert [i["title"] for i in after["history"]] == ["Slow delivery"]
        assert [e.kind for e in (await oncall.incident(ref)).timeline].count("public_update") == 2
    finally:
        await oncall.aclose()
        await mallory.aclose()


def test_status_page_still_answers_when_the_database_is_down(tmp_path) -> None:
    srv = ServerProcess(
        tmp_path,
        {
            "SECURECONNECT_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
            "SECURECONNECT_AUTO_MIGRATE": "false",
            "SECURECONNECT_DB_POOL_TIMEOUT_S": "1",
        },
    )
    srv.wait_ready = lambda timeout: None
    srv.start()
    try:
        page = httpx.get(srv.url + "/v1/status", timeout=20)
        assert page.status_code == 200
        states = {c["name"]: c["state"] for c in page.json()["components"]}
        assert states["Login & API"] == states["Chat"] == "major_outage"
        assert page.json()["overall"]["colour"] == "red"
        assert "Major outage" in httpx.get(srv.url + "/status", timeout=20).text
    finally:
        srv.stop()
