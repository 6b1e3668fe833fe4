"""The Kubernetes manifests render, validate against the Kubernetes schemas offline, and carry
the names and settings that the runbook's commands rely on."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.helpers import K8S_VERSION, by_kind, render

ROLES = ("api-gateway", "chat-service", "video-service")


@pytest.mark.parametrize("overlay", ["prod", "dev"])
def test_manifests_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    namespace = f"secureconnect-{overlay}"
    assert {d["metadata"].get("namespace", namespace) for d in docs} == {namespace}


def test_the_runbook_names_exist_in_prod() -> None:
    docs = render("prod")
    assert "secureconnect-prod" in by_kind(docs, "Namespace")
    deployments = by_kind(docs, "Deployment")
    for role in ROLES:  # kubectl scale/rollout undo deployment/<role> -n secureconnect-prod
        spec = deployments[role]["spec"]
        container = spec["template"]["spec"]["containers"][0]
        assert container["args"] == ["--role", role]
        assert container["image"] == f"secureconnect/{role}:v1.0.0"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["limits"]["memory"]  # OOMKilled is diagnosable
        assert spec["replicas"] >= 3
        assert role in by_kind(docs, "PodDisruptionBudget")
        assert role in by_kind(docs, "Service")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["video-service-hpa"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "video-service"
    assert "coturn" in deployments


def test_secrets_are_referenced_never_inlined() -> None:
    docs = render("prod")
    assert by_kind(docs, "Secret") == {}
    text = yaml.safe_dump_all(docs)
    assert "postgresql://" not in text and "redis://" not in text
    for role in ROLES:
        env = by_kind(docs, "Deployment")[role]["spec"]["template"]["spec"]["containers"][0]["env"]
        # Secrets come from secretKeyRef; the only plain value is the pod's own address.
        plain = [e for e in env if "valueFrom" not in e]
        assert all(e["name"] == "SECURECONNECT_INTERNAL_URL" for e in plain), plain
        assert all(e["value"] == "http://$(POD_IP):8000" for e in plain)


def test_ingress_routes_by_path_and_keeps_websockets_open() -> None:
    ingress = by_kind(render("prod"), "Ingress")["secureconnect"]
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert "nginx.ingress.kubernetes.io/limit-rps" in notes
    assert "nginx.ingress.kubernetes.io/denylist-source-range" in notes
    routes = {
        p["path"]: p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert routes["/v1/events"] == "chat-service"
    assert routes["/v1/conversations"] == "chat-service"
    assert routes["/v1/blobs"] == "chat-service"  # attachments: a chunk is up to 8 MiB + 1 KiB
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "9m"
    assert routes["/"] == "api-gateway"  # /v1/auth/login, keys, inbox


def test_video_udp_5004_is_allowed() -> None:
    policy = by_kind(render("prod"), "NetworkPolicy")["video-service-media"]
    ports = [
        (p["protocol"], p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]
    ]
    assert ("UDP", 5004) in ports
    media = [p for rule in policy["spec"]["ingress"] for p in rule["ports"] if "endPort" in p]
    assert [(p["protocol"], p["port"], p["endPort"]) for p in media] == [("UDP", 20000, 20999)]


def test_pods_drain_before_they_stop() -> None:
    """A terminating pod keeps serving while it leaves the endpoints (preStop), then has the
    shutdown grace to close its sockets (1012) before Kubernetes kills it."""
    docs = render("prod")
    config = by_kind(docs, "ConfigMap")
    grace = float(next(iter(config.values()))["data"]["SECURECONNECT_SHUTDOWN_GRACE_S"])
    for role in ROLES:
        pod = by_kind(docs, "Deployment")[role]["spec"]["template"]["spec"]
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + grace


def test_backups_run_nightly_one_at_a_time_onto_their_own_volume() -> None:
    docs = render("prod")
    job = by_kind(docs, "CronJob")["secureconnect-backup"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["secureconnect", "backup", "--to", "/backups"]
    url = next(e for e in container["env"] if e["name"] == "SECURECONNECT_DATABASE_URL")
    assert url["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(docs, "PersistentVolumeClaim")
