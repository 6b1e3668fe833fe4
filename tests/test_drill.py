"""The drill: the runbook end to end, on this machine, with real Prometheus and Alertmanager.

Topology: an api-gateway and a chat-service on one PostgreSQL database, each with its own
database role (as in production, least privilege per service). Prometheus scrapes both with the
checked-in alert rules; Alertmanager routes with the checked-in configuration to the incident
webhook. Only time is compressed: the rules' ``for:``, Alertmanager's waits and the 10-minute
verification window.

The fault is real: the chat-service's database role loses its login and its sessions are cut, so
the chat-service cannot reach the store. Then the on-call engineer's commands, in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from secureconnect.ops.runfile import load_all
from tests.conftest import PASSWORD, PG_ADMIN, backend_env, drop_database, in_ci
from tests.server import ServerProcess, run_in_thread
from tests.test_oncall_local import _exists, oncall
from tests.test_scale import free_port

ROOT = Path(__file__).parents[1]
TOKEN = "drill-webhook-token-0123456789"
VERIFY_S = 6


def tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    if in_ci():
        pytest.fail(f"{names[0]} is required in CI (.ci/run installs it)")
    pytest.skip(f"{names[0]} not installed")


def pg(database: str, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{database}", timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_in_thread(run())


def wait_for(what: str, check, timeout: float = 60.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def compressed_rules(path: Path) -> None:
    text = (ROOT / "deploy/prometheus/rules.yml").read_text()
    path.write_text(re.sub(r"for: \d+m", "for: 2s", text))


def compressed_alertmanager(path: Path, webhook: str, token_file: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "1s"
        route["group_interval"] = "2s"
        route["repeat_interval"] = "1m"
    hook = config["receivers"][0]["webhook_configs"][0]
    hook["url"] = webhook
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    path.write_text(yaml.safe_dump(config))


class Daemon:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_the_drill_from_fault_to_post_mortem(tmp_path) -> None:
    prometheus = tool("prometheus")
    alertmanager = tool("prometheus-alertmanager", "alertmanager")
    env, database = backend_env("postgresql")
    assert database is not None
    chat_role = f"sc_chat_{secrets.token_hex(4)}"
    data = tmp_path / "platform"
    data.mkdir()
    daemons: list[Daemon] = []
    servers: list[ServerProcess] = []
    home = tmp_path / "oncall-home"
    try:
        prom_port, am_port = free_port(), free_port()
        gateway = ServerProcess(
            data,
            {
                **env,
                "SECURECONNECT_ROLE": "api-gateway",
                "SECURECONNECT_LOG_FILE": str(data / "api-gateway.log"),
                "SECURECONNECT_ADMINS": '["oncall"]',
                "SECURECONNECT_ALERT_WEBHOOK_TOKEN": TOKEN,
                "SECURECONNECT_INCIDENT_VERIFY_S": str(VERIFY_S),
                "SECURECONNECT_PROMETHEUS_URL": f"http://127.0.0.1:{prom_port}",
            },
        )
        servers.append(gateway.start())
        pg(
            database,
            f"CREATE ROLE {chat_role} LOGIN",
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {chat_role}",
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {chat_role}",
        )
        chat_url = env["SECURECONNECT_DATABASE_URL"].replace("postgres@", f"{chat_role}@")
        chat = ServerProcess(
            data,
            {
                **env,
                "SECURECONNECT_DATABASE_URL": chat_url,
                "SECURECONNECT_ROLE": "chat-service",
                "SECURECONNECT_AUTO_MIGRATE": "false",
                "SECURECONNECT_LOG_FILE": str(data / "chat-service.log"),
                "SECURECONNECT_DB_POOL_TIMEOUT_S": "2",
            },
        )
        servers.append(chat.start())

        # Monitoring, as checked in, with time compressed.
        compressed_rules(tmp_path / "rules.yml")
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(tmp_path / "rules.yml")],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "secureconnect",
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{gateway.port}", f"127.0.0.1:{chat.port}"]}
                            ],
                        }
                    ],
                }
            )
        )
        (tmp_path / "token").write_text(TOKEN)
        compressed_alertmanager(
            tmp_path / "alertmanager.yml",
            f"{gateway.url}/v1/ops/alertmanager",
            tmp_path / "token",
        )
        daemons.append(
            Daemon(
                [
                    alertmanager,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
            )
        )
        daemons.append(
            Daemon(
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        prom = httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=5)

        def query(q: str) -> list:
            try:
                return prom.get("/api/v1/query", params={"query": q}).json()["data"]["result"]
            except (httpx.HTTPError, ValueError, KeyError):
                return []

        wait_for("Prometheus to scrape both services", lambda: len(query("up == 1")) == 2, 60)

        # A user chatting through the chat-service.
        with httpx.Client(timeout=10) as http:
            http.post(
                f"{gateway.url}/v1/auth/register", json={"username": "dora", "password": PASSWORD}
            )
            token = http.post(
                f"{gateway.url}/v1/auth/login", json={"username": "dora", "password": PASSWORD}
            ).json()["token"]
        user = httpx.Client(
            base_url=chat.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        conv = user.post(
            "/v1/conversations", json={"kind": "group", "members": [], "name": "notes"}
        ).json()["id"]
        accepted: list[str] = []

        def send(n: int) -> int:
            try:
                status = user.post(
                    f"/v1/conversations/{conv}/messages",
                    json={
                        "client_msg_id": f"drill-{n}",
                        "content_type": "application/octet-stream",
                        "body": "Y2lwaGVydGV4dA==",
                    },
                ).status_code
            except httpx.HTTPError:
                return 0
            if status == 201:
                accepted.append(f"drill-{n}")
            return status

        assert send(0) == 201
        assert oncall(gateway, home, "register", "oncall").returncode == 0
        assert oncall(gateway, home, "login", "oncall").returncode == 0

        # ---- the fault -----------------------------------------------------------------------
        t_fault = time.monotonic()
        pg(
            database,
            f"ALTER ROLE {chat_role} NOLOGIN",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{chat_role}'",
        )
        failed_sends = 0
        n = 1

        def alert_firing() -> bool:
            nonlocal failed_sends, n
            n += 1
            if send(n) >= 500:  # users keep trying, and fail
                failed_sends += 1
            alerts = query('ALERTS{alertname="StoreUnreachable", alertstate="firing"}')
            return bool(alerts)

        wait_for("StoreUnreachable to fire", alert_firing, 90)
        t_alert = time.monotonic()

        def incident() -> dict | None:
            shown = oncall(gateway, home, "oncall", "list")
            return {"line": shown.stdout} if "#1" in shown.stdout else None

        listed = wait_for("the incident to open", incident, 60)["line"]
        t_incident = time.monotonic()
        assert "P1 Critical open" in listed
        assert "cannot reach the database" in listed
        assert failed_sends > 0

        # ---- the on-call engineer ------------------------------------------------------------
        assert oncall(gateway, home, "oncall", "ack", "1").returncode == 0
        triage = oncall(
            gateway, home, "oncall", "triage", "1", "--users-affected", "1", "--no-recent-deploy"
        )
        assert triage.returncode == 0, triage.stderr
        diagnosed = oncall(gateway, home, "oncall", "diagnose", "--json", "--data-dir", str(data))
        assert diagnosed.returncode == 3, diagnosed.stderr
        report = json.loads(diagnosed.stdout)
        readiness = next(f for f in report["findings"] if f["check"] == "readiness")
        assert readiness["status"] == "fail"
        assert readiness["summary"].startswith("the database is unreachable from the service")
        assert f"(failed: StoreUnavailable at {chat.url})" in readiness["summary"]
        node = next(
            f for f in report["findings"] if f["scenario"] == "database" and f["check"] == "node"
        )
        assert node["status"] == "fail"
        t_diagnosed = time.monotonic()
        oncall(gateway, home, "oncall", "update", "1", f"Diagnosed: {readiness['summary']}")

        # The fix: give the chat-service its database login back, then restart it so that it
        # reconnects at once (runbook 23.5 step 3), through the tooling.
        pg(database, f"ALTER ROLE {chat_role} LOGIN")
        # The shell holds the chat-service's settings (a restart needs them); the CLI talks to
        # the gateway.
        restarted = oncall(
            chat,
            home,
            "oncall",
            "restart",
            "chat-service",
            "--yes",
            "--incident",
            "1",
            "--data-dir",
            str(data),
            url=gateway.url,
        )
        assert restarted.returncode == 0, restarted.stderr + restarted.stdout
        chat.proc = None  # the tooling stopped it and started a successor
        wait_for("messages to be accepted again", lambda: send(n + 1) == 201, 60)
        t_recovered = time.monotonic()
        oncall(gateway, home, "oncall", "mitigate", "1", "chat-service reconnected after restart")
        wait_for(
            "the alert to resolve",
            lambda: not query('ALERTS{alertname="StoreUnreachable"}'),
            60,
        )
        resolved = oncall(
            gateway,
            home,
            "oncall",
            "resolve",
            "1",
            "chat-service's database role had lost its login; restored",
        )
        assert resolved.returncode == 0
        early = oncall(gateway, home, "oncall", "close", "1")
        assert early.returncode == 1 and "verification window" in early.stderr

        def closed() -> bool:
            return oncall(gateway, home, "oncall", "close", "1").returncode == 0

        wait_for("the verified close", closed, VERIFY_S + 30, every=1.0)
        t_closed = time.monotonic()

        shown = oncall(gateway, home, "oncall", "show", "1").stdout
        for step in (
            "opened",
            "alert_resolved",
            "acknowledged",
            "triaged",
            "action",
            "mitigated",
            "resolved",
            "closed",
        ):
            assert step in shown, step
        draft = oncall(gateway, home, "oncall", "postmortem", "1").stdout
        artifacts = ROOT / "artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "drill-postmortem.md").write_text(draft)
        assert "# Post-mortem: incident #1" in draft
        assert "secureconnect oncall restart chat-service" in draft
        assert "alert StoreUnreachable firing" in draft
        assert "on every replica (Prometheus), closed" in draft
        # Nothing was lost: every accepted message is there.
        history = user.get(f"/v1/conversations/{conv}/messages").json()["events"]
        assert [e["client_msg_id"] for e in history if e["kind"] == "message"] == accepted

        print(
            "\ndrill timings: "
            f"fault->alert {t_alert - t_fault:.1f}s, "
            f"alert->incident {t_incident - t_alert:.1f}s, "
            f"incident->diagnosed {t_diagnosed - t_incident:.1f}s, "
            f"fault->recovered {t_recovered - t_fault:.1f}s, "
            f"recovered->closed {t_closed - t_recovered:.1f}s "
            f"(verification window {VERIFY_S}s), "
            f"{failed_sends} user sends refused during the outage"
        )
    finally:
        for daemon in daemons:
            daemon.stop()
        for server in servers:
            server.stop()
        for run in load_all(data):
            if _exists(run.pid):
                os.kill(run.pid, signal.SIGTERM)
        drop_database(database)
        with contextlib.suppress(asyncpg.PostgresError):
            pg("postgres", f"DROP ROLE IF EXISTS {chat_role}")
