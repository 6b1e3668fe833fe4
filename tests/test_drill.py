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
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from secureconnect.ops.runfile import load_all
from tests.conftest import PG_ADMIN, backend_env, drop_database, in_ci
from tests.helpers import PASSWORD, run_cli
from tests.server import ServerProcess, free_port, pid_alive, run_statements

pytestmark = [pytest.mark.slow, pytest.mark.solo]  # starts servers, breaks them and restores them

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
    run_statements(*statements, dsn=PG_ADMIN.rsplit("/", 1)[0] + f"/{database}", timeout=5)


def wait_for(what: str, check, timeout: float = 60.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def compressed_rules(path: Path) -> None:
    """`for:` to 2 s; `keep_firing_for:` to 20 s, longer than the test Alertmanager's longest
    gap between retries (about 6 s: a 10 s notify timeout with exponential backoff)."""
    text = (ROOT / "deploy/prometheus/rules.yml").read_text()
    text = re.sub(r"keep_firing_for: \d+m", "keep_firing_for: 20s", text)
    path.write_text(re.sub(r"(?<!keep_firing_)for: \d+m", "for: 2s", text))


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


class Platform:
    """An api-gateway and a chat-service on one PostgreSQL database (each with its own role),
    a user chatting through the chat-service, an on-call admin, Prometheus and Alertmanager."""

    def __init__(self, tmp_path: Path) -> None:
        self.prometheus = tool("prometheus")
        self.alertmanager = tool("prometheus-alertmanager", "alertmanager")
        env, database = backend_env("postgresql")
        assert database is not None
        self.env, self.database = env, database
        self.chat_role = f"sc_chat_{secrets.token_hex(4)}"
        self.data = tmp_path / "platform"
        self.data.mkdir()
        self.home = tmp_path / "oncall-home"
        self.tmp = tmp_path
        self.daemons: list[Daemon] = []
        self.servers: list[ServerProcess] = []
        self.accepted: list[str] = []
        self.refused = 0
        self.sent = 0
        self._sending: threading.Thread | None = None
        self._stop_sending = threading.Event()

    def start(self) -> Platform:
        tmp_path, data, env = self.tmp, self.data, self.env
        prom_port, am_port = free_port(), free_port()
        self.gateway = gateway = ServerProcess(
            data,
            {
                **env,
                "SECURECONNECT_ROLE": "api-gateway",
                "SECURECONNECT_LOG_FILE": str(data / "api-gateway.log"),
                "SECURECONNECT_ADMINS": '["oncall"]',
                "SECURECONNECT_ALERT_WEBHOOK_TOKEN": TOKEN,
                "SECURECONNECT_INCIDENT_VERIFY_S": str(VERIFY_S),
                "SECURECONNECT_PROMETHEUS_URL": f"http://127.0.0.1:{prom_port}",
                "SECURECONNECT_DB_POOL_TIMEOUT_S": "2",
            },
        )
        self.servers.append(gateway.start())
        pg(
            self.database,
            f"CREATE ROLE {self.chat_role} LOGIN",
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {self.chat_role}",
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {self.chat_role}",
        )
        chat_url = env["SECURECONNECT_DATABASE_URL"].replace("postgres@", f"{self.chat_role}@")
        self.chat = chat = ServerProcess(
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
        self.servers.append(chat.start())

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
        self.daemons.append(
            Daemon(
                [
                    self.alertmanager,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
            )
        )
        self.daemons.append(
            Daemon(
                [
                    self.prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        self.prom = httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=5)
        wait_for("Prometheus to scrape both services", lambda: len(self.query("up == 1")) == 2)

        # A user chatting through the chat-service, and the on-call admin.
        with httpx.Client(timeout=10) as http:
            login = {"username": "dora", "password": PASSWORD}
            http.post(f"{gateway.url}/v1/auth/register", json=login)
            token = http.post(f"{gateway.url}/v1/auth/login", json=login).json()["token"]
        self.user = httpx.Client(
            base_url=chat.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        self.conv = self.user.post(
            "/v1/conversations", json={"kind": "group", "members": [], "name": "notes"}
        ).json()["id"]
        assert self.send() == 201
        assert self.oncall("register", "oncall").returncode == 0
        assert self.oncall("login", "oncall").returncode == 0
        return self

    def query(self, q: str) -> list:
        try:
            return self.prom.get("/api/v1/query", params={"query": q}).json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError):
            return []

    def firing(self, alert: str) -> list:
        return self.query(f'ALERTS{{alertname="{alert}", alertstate="firing"}}')

    def send(self) -> int:
        """The user sends a message; the status code (0: no answer)."""
        self.sent += 1
        ref = f"drill-{self.sent}"
        try:
            status = self.user.post(
                f"/v1/conversations/{self.conv}/messages",
                json={
                    "client_msg_id": ref,
                    "content_type": "application/octet-stream",
                    "body": "Y2lwaGVydGV4dA==",
                },
            ).status_code
        except httpx.HTTPError:
            return 0
        if status == 201:
            self.accepted.append(ref)
        elif status >= 500:
            self.refused += 1
        return status

    def users_keep_sending(self) -> None:
        """From now on a user sends a message every 0.3 s, as people retry during an outage."""

        def loop() -> None:
            while not self._stop_sending.wait(0.3):
                self.send()

        self._sending = threading.Thread(target=loop, daemon=True)
        self._sending.start()

    def users_stop(self) -> None:
        self._stop_sending.set()
        if self._sending is not None:
            self._sending.join(timeout=15)

    def accepted_after(self, count: int) -> bool:
        return len(self.accepted) > count

    def stored_messages(self) -> list[str]:
        events = self.user.get(f"/v1/conversations/{self.conv}/messages").json()["events"]
        return [e["client_msg_id"] for e in events if e["kind"] == "message"]

    def oncall(self, *args: str, shell: ServerProcess | None = None):
        """The engineer's CLI, talking to the gateway (with ``shell``'s settings set)."""
        return run_cli(self.gateway.url, self.home, *args, env=(shell or self.gateway).env())

    def close_when_verified(self, incident: str) -> None:
        """Tries ``oncall close`` until the verification window has passed and it is accepted."""
        wait_for(
            "the verified close",
            lambda: self.oncall("oncall", "close", incident).returncode == 0,
            VERIFY_S + 30,
            every=1.0,
        )

    def stop(self) -> None:
        self.users_stop()
        for daemon in self.daemons:
            daemon.stop()
        for server in self.servers:
            server.stop()
        for run in load_all(self.data):
            if pid_alive(run.pid):
                os.kill(run.pid, signal.SIGTERM)
        drop_database(self.database)
        with contextlib.suppress(asyncpg.PostgresError):
            pg("postgres", f"DROP ROLE IF EXISTS {self.chat_role}")


@pytest.fixture
def platform(tmp_path):
    running = Platform(tmp_path)
    try:
        yield running.start()
    finally:
        running.stop()


def test_the_drill_from_fault_to_post_mortem(platform) -> None:
    p = platform
    chat, data = p.chat, p.data

    # ---- the fault: the chat-service's database login is taken away ------------------------
    t_fault = time.monotonic()
    pg(
        p.database,
        f"ALTER ROLE {p.chat_role} NOLOGIN",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{p.chat_role}'",
    )
    before = len(p.accepted)
    p.users_keep_sending()
    wait_for("StoreUnreachable to fire", lambda: p.firing("StoreUnreachable"), 90)
    t_alert = time.monotonic()

    def incident() -> str | None:
        shown = p.oncall("oncall", "list").stdout
        return shown if "#1" in shown else None

    listed = wait_for("the incident to open", incident)
    t_incident = time.monotonic()
    assert "P1 Critical open" in listed
    assert "cannot reach the database" in listed
    assert p.refused > 0

    # The public status page, served by the healthy gateway, shows Chat down: it reads every
    # replica's readiness through Prometheus, not only its own.
    components = {
        c["name"]: c["state"] for c in httpx.get(f"{p.gateway.url}/v1/status").json()["components"]
    }
    assert components["Chat"] == "major_outage"
    assert components["Login & API"] == "operational"

    # ---- the on-call engineer --------------------------------------------------------------
    assert p.oncall("oncall", "ack", "1").returncode == 0
    triage = p.oncall("oncall", "triage", "1", "--users-affected", "1", "--no-recent-deploy")
    assert triage.returncode == 0, triage.stderr
    diagnosed = p.oncall("oncall", "diagnose", "--json", "--data-dir", str(data))
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
    p.oncall("oncall", "update", "1", f"Diagnosed: {readiness['summary']}")

    # The fix: give the chat-service its database login back, then restart it so that it
    # reconnects at once (runbook 23.5 step 3), through the tooling. The shell holds the
    # chat-service's settings (a restart needs them).
    pg(p.database, f"ALTER ROLE {p.chat_role} LOGIN")
    restarted = p.oncall(
        "oncall",
        "restart",
        "chat-service",
        "--yes",
        "--incident",
        "1",
        "--data-dir",
        str(data),
        shell=chat,
    )
    assert restarted.returncode == 0, restarted.stderr + restarted.stdout
    chat.proc = None  # the tooling stopped it and started a successor
    wait_for("messages to be accepted again", lambda: p.accepted_after(before))
    t_recovered = time.monotonic()
    p.users_stop()
    p.oncall("oncall", "mitigate", "1", "chat-service reconnected after restart")
    wait_for("the alert to resolve", lambda: not p.query('ALERTS{alertname="StoreUnreachable"}'))
    resolved = p.oncall(
        "oncall", "resolve", "1", "chat-service's database role had lost its login; restored"
    )
    assert resolved.returncode == 0
    early = p.oncall("oncall", "close", "1")
    assert early.returncode == 1 and "verification window" in early.stderr
    p.close_when_verified("1")
    t_closed = time.monotonic()

    shown = p.oncall("oncall", "show", "1").stdout
    for step in (
        "opened",
        "alert_resolved",
        "acknowledged",
        "triaged",
        "action",
        "mitigated",
        "resolved",
        "verified",
        "closed",
    ):
        assert step in shown, step
    draft = p.oncall("oncall", "postmortem", "1").stdout
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "drill-postmortem.md").write_text(draft)
    assert "# Post-mortem: incident #1" in draft
    assert "secureconnect oncall restart chat-service" in draft
    assert "alert StoreUnreachable firing" in draft
    assert "on every replica (Prometheus): no new server errors" in draft
    # The impact, measured: the refused sends are among the failed requests Prometheus counted.
    failed = re.search(r"Failed requests \(5xx\) across the platform: about (\d+)", draft)
    assert failed is not None and int(failed.group(1)) >= p.refused * 0.5
    # Nothing was lost: every accepted message is there, once.
    assert p.stored_messages() == p.accepted

    print(
        "\ndrill (chat-service loses its database): "
        f"fault->alert {t_alert - t_fault:.1f}s, "
        f"alert->incident {t_incident - t_alert:.1f}s, "
        f"incident->diagnosed {t_diagnosed - t_incident:.1f}s, "
        f"fault->recovered {t_recovered - t_fault:.1f}s, "
        f"recovered->closed {t_closed - t_recovered:.1f}s "
        f"(verification window {VERIFY_S}s), "
        f"{p.refused} user sends refused during the outage"
    )


def test_the_drill_with_the_whole_database_down(platform) -> None:
    """The incident store is the database that is down: the tooling must still diagnose, say
    plainly what it cannot do, and lose no alert."""
    p = platform
    t_fault = time.monotonic()
    pg(
        "postgres",
        f'ALTER DATABASE "{p.database}" ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{p.database}'",
    )
    before = len(p.accepted)
    p.users_keep_sending()
    wait_for("StoreUnreachable on both", lambda: len(p.firing("StoreUnreachable")) == 2, 90)
    t_alert = time.monotonic()

    # Incidents live in that database: the CLI says so in one line, no traceback.
    listed = p.oncall("oncall", "list")
    assert listed.returncode == 1
    assert "the database is unreachable" in listed.stderr
    assert "Traceback" not in listed.stderr + listed.stdout

    # The diagnosis needs no database: endpoints, metrics and run files.
    diagnosed = p.oncall("oncall", "diagnose", "--json", "--data-dir", str(p.data))
    assert diagnosed.returncode == 3, diagnosed.stderr
    report = json.loads(diagnosed.stdout)
    readiness = next(f for f in report["findings"] if f["check"] == "readiness")
    assert readiness["summary"].startswith("the database is unreachable from the service")
    node = next(
        f for f in report["findings"] if f["scenario"] == "database" and f["check"] == "node"
    )
    assert node["status"] == "fail"
    assert any(g.startswith("store report") for g in report["gaps"])
    t_diagnosed = time.monotonic()

    # The fix: the database accepts connections again. The services reconnect by themselves.
    wall_fixed = time.time() * 1000  # nothing could be written in the store before this
    pg("postgres", f'ALTER DATABASE "{p.database}" ALLOW_CONNECTIONS true')
    wait_for("messages to be accepted again", lambda: p.accepted_after(before))
    t_recovered = time.monotonic()
    p.users_stop()
    wall_recovered = time.time() * 1000

    # Alertmanager kept retrying the webhook: the incident opens, stamped when the alert began.
    # Other alerts of the outage (High5xxRate) may come back first and take number 1: the one
    # this drill follows is StoreUnreachable's.
    token = json.loads((p.home / "default.json").read_text())["token"]
    auth = {"Authorization": f"Bearer {token}"}

    def incident() -> dict | None:
        with httpx.Client(base_url=p.gateway.url, headers=auth) as http:
            for summary in http.get("/v1/ops/incidents").json():
                detail = http.get(f"/v1/ops/incidents/{summary['number']}").json()
                if detail["timeline"][0]["text"].endswith("alert StoreUnreachable firing"):
                    return detail
        return None

    detail = wait_for("the retried alert to open the incident", incident)
    t_incident = time.monotonic()
    number = str(detail["number"])
    assert f"#{number}" in p.oncall("oncall", "list").stdout
    assert detail["severity"] == "P1"
    # Stamped when the alert began, not when the retried webhook got through: the store could
    # not take the incident before the fix, yet it dates from before it.
    assert detail["opened_at"] < wall_fixed < wall_recovered
    assert detail["timeline"][0]["kind"] == "opened"

    assert p.oncall("oncall", "ack", number).returncode == 0
    p.oncall("oncall", "mitigate", number, "database accepting connections again")
    wait_for("the alert to resolve", lambda: not p.query('ALERTS{alertname="StoreUnreachable"}'))
    assert p.oncall("oncall", "resolve", number, "database refused connections").returncode == 0
    p.close_when_verified(number)
    t_closed = time.monotonic()
    assert p.stored_messages() == p.accepted
    print(
        "\ndrill (whole database down): "
        f"fault->alert {t_alert - t_fault:.1f}s, "
        f"alert->diagnosed {t_diagnosed - t_alert:.1f}s, "
        f"fault->recovered {t_recovered - t_fault:.1f}s, "
        f"recovered->incident (Alertmanager's retry) {t_incident - t_recovered:.1f}s, "
        f"recovered->closed {t_closed - t_recovered:.1f}s, "
        f"{p.refused} user sends refused during the outage"
    )
