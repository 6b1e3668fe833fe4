"""Monitoring as code: alert rules pass promtool's unit tests, Alertmanager's routing passes
amtool, every alert links a real runbook section, and the dashboard and the rules only name
metrics that the platform really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import in_ci

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
RUNBOOK = ROOT / "docs" / "runbook" / "RUNBOOK.vi.md"
OWN_METRIC = re.compile(r"\b((?:secureconnect|go_sql)_[a-z_]+)")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return path


def rules() -> list[dict[str, object]]:
    data = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def github_anchor(heading: str) -> str:
    kept = "".join(ch for ch in heading.strip().lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def test_promtool_checks_and_unit_tests_pass() -> None:
    promtool = tool("promtool")
    for args in (["check", "rules", "rules.yml"], ["test", "rules", "rules_test.yml"]):
        done = subprocess.run(
            [promtool, *args],
            cwd=DEPLOY / "prometheus",
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_routes_every_severity_to_the_incident_webhook() -> None:
    done = subprocess.run(
        [tool("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    routed = {m for r in config["route"]["routes"] for m in r["matchers"]}
    assert routed == {'severity="P1"', 'severity="P2"', 'severity="P3"'}
    [receiver] = config["receivers"]
    assert receiver["webhook_configs"][0]["send_resolved"] is True


def test_every_alert_has_a_runbook_severity_and_a_real_runbook_section() -> None:
    anchors = {
        github_anchor(line[3:])
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in rules():
        assert rule["labels"]["severity"] in {"P1", "P2", "P3"}, rule["alert"]
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert (ROOT / path).exists(), url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor}"


def test_dashboard_has_the_runbooks_charts() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "secureconnect.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for chart in (
        "Active Users",
        "5xx rate",
        "Latency (p50, p99)",
        "DB connections: in use vs max open",
        "video-service CPU",
        "Failed logins",
    ):
        assert chart in titles
    assert all(p["targets"] for p in dashboard["panels"])


def test_rules_and_dashboard_name_only_metrics_the_platform_exports(calls_server) -> None:
    """Against the server that runs everything, calls included (Janus and coturn)."""
    text = httpx.get(calls_server.url + "/metrics").text.splitlines()
    exported = {
        line.split("{")[0].split(" ")[0] for line in text if line and not line.startswith("#")
    }
    # A labelled family with no samples yet is still declared by its TYPE line.
    exported |= {line.split()[2] for line in text if line.startswith("# TYPE ")}
    families = {re.sub(r"_(bucket|count|sum|total|created)$", "", m) for m in exported}
    used = set(OWN_METRIC.findall((DEPLOY / "prometheus" / "rules.yml").read_text()))
    used |= set(OWN_METRIC.findall((DEPLOY / "grafana" / "secureconnect.json").read_text()))
    assert used
    missing = {
        m
        for m in used
        if m not in exported and re.sub(r"_(bucket|count|sum|total)$", "", m) not in families
    }
    assert missing == set()
