"""The runbook's decision trees (23.5 to 23.9) on the Kubernetes API's answers for each failure,
and on facts as the local target reports them. Pure: no cluster, no server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import pytest

from secureconnect.diagnostics.facts import Action, Facts, Suggestions, Workload
from secureconnect.diagnostics.kube import (
    DENYLIST,
    Kubectl,
    cpu_cores,
    denylist_patch,
    facts_from_objects,
    parse_time,
    restart_patch,
    rollback_patch,
    rolled_out,
    scale_patch,
    secret_patch,
    secret_value,
)
from secureconnect.diagnostics.rules import diagnose
from secureconnect.guard.schemas import (
    BlockedNetwork,
    FailedLogins,
    RateLimitState,
    SecurityReport,
)
from secureconnect.ops.schemas import PoolUse, Standby, StoreReport
from tests.fixtures.k8s.generate import build
from tests.helpers import K8S_VERSION, by_kind, render

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
NS = "secureconnect-prod"
KUBECTL = Kubectl(NS)


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def facts_of(name: str) -> Facts:
    objects = load(name)
    return facts_from_objects(objects, NS, parse_time(objects["recorded_at"]))


def by_check(findings, check: str):
    return [f for f in findings if f.check == check]


@pytest.mark.slow  # regenerates every fixture
def test_the_fixtures_are_reproducible_and_valid_api_objects() -> None:
    built = build()
    assert sorted(built) == sorted(p.stem for p in FIXTURES.glob("*.json"))
    for name, state in built.items():
        assert json.loads(json.dumps(state)) == load(name), f"regenerate {name}.json"
        for key in ("deployments", "replicasets", "pods", "ingress_pods"):
            for item in state[key]["items"]:
                kubernetes_validate.validate(item, "1.30.0", strict=True)


def test_a_healthy_cluster_passes_every_check() -> None:
    facts = facts_of("healthy")
    assert {w: (facts.workloads[w].ready, facts.workloads[w].desired) for w in facts.workloads} == {
        "api-gateway": (3, 3),
        "chat-service": (3, 3),
        "video-service": (3, 3),
        "coturn": (2, 2),
    }
    facts.readiness = {"store": "ok", "bus": "ok"}
    found = diagnose("service-down", facts, KUBECTL) + diagnose("deploy", facts, KUBECTL)
    assert [f.status for f in found] == ["ok"] * len(found)
    cpu = diagnose("video", facts, KUBECTL)[0]
    assert (cpu.status, cpu.summary) == ("ok", "video-service CPU at most 6%")


def test_crashloop_points_at_a_crashing_pods_logs() -> None:
    pods = by_check(diagnose("service-down", facts_of("crashloop"), KUBECTL), "pods")[0]
    assert pods.status == "fail"
    assert pods.summary.startswith("3 crashing: chat-service-")
    assert "-00000 (CrashLoopBackOff)" in pods.summary
    assert pods.commands[0].startswith("kubectl logs chat-service-")
    assert pods.commands[0].endswith(f"-n {NS} --tail=100")
    replicas = by_check(diagnose("service-down", facts_of("crashloop"), KUBECTL), "replicas")
    assert [(r.status, r.summary) for r in replicas] == [("fail", "chat-service: 0/3 ready")]


def test_oomkilled_means_more_memory_and_a_restart() -> None:
    pods = by_check(diagnose("service-down", facts_of("oomkilled"), KUBECTL), "pods")[0]
    assert pods.status == "fail"
    assert "OOMKilled (7 restarts)" in pods.summary
    assert pods.action == Action("restart", "api-gateway")
    assert f"kubectl rollout restart deployment/api-gateway -n {NS}" in pods.commands
    assert pods.commands[0].startswith(
        "kubectl set resources deployment/api-gateway --limits=memory"
    )


def test_a_segfault_means_roll_back_now() -> None:
    pods = by_check(diagnose("service-down", facts_of("segfault"), KUBECTL), "pods")[0]
    assert "segmentation fault" in pods.summary
    assert pods.action == Action("rollback", "chat-service")
    assert pods.commands == (
        "secureconnect oncall rollback chat-service",
        f"kubectl rollout undo deployment/chat-service -n {NS}",
    )


def test_an_image_that_cannot_be_pulled_after_a_deploy() -> None:
    facts = facts_of("imagepull")
    pods = by_check(diagnose("service-down", facts, KUBECTL), "pods")[0]
    assert "ImagePullBackOff" in pods.summary
    assert pods.action == Action("rollback", "api-gateway")
    deploy = diagnose("deploy", facts, KUBECTL)
    assert [d.summary for d in deploy] == [
        "api-gateway went from secureconnect/api-gateway:v1.0.0 to "
        "secureconnect/api-gateway:v1.1.0-typo 10 min ago"
    ]


def test_the_ingress_being_down() -> None:
    ingress = by_check(diagnose("service-down", facts_of("ingress-down"), KUBECTL), "ingress")[0]
    assert ingress.status == "fail"
    assert ingress.commands == ("kubectl top nodes", "kubectl get pods -n ingress-nginx")


def test_video_service_over_ninety_percent_cpu_is_scaled() -> None:
    cpu = by_check(diagnose("video", facts_of("video-cpu"), KUBECTL), "video-cpu")[0]
    assert cpu.status == "fail"
    assert cpu.summary.startswith("video-service CPU at 95% of its limit")
    assert cpu.action == Action("scale", "video-service", 6)
    assert f"kubectl scale deployment/video-service --replicas=6 -n {NS}" in cpu.commands


def test_without_metrics_server_cpu_is_unknown_not_fine() -> None:
    facts = facts_of("no-metrics")
    assert facts.gaps == ["metrics.k8s.io not available: no CPU figures"]
    assert diagnose("video", facts, KUBECTL)[0].status == "unknown"


def test_a_deploy_in_the_last_hour_offers_the_rollback() -> None:
    facts = facts_of("bad-deploy")
    deploy = diagnose("deploy", facts, KUBECTL)[0]
    assert deploy.summary == (
        "chat-service went from secureconnect/chat-service:v1.0.0 to "
        "secureconnect/chat-service:v1.1.0 5 min ago"
    )
    assert deploy.commands[1] == f"kubectl rollout undo deployment/chat-service -n {NS}"
    # Two hours later it is no longer a suspect.
    facts.now_ms += 2 * 3600 * 1000
    assert diagnose("deploy", facts, KUBECTL)[0].status == "ok"


def test_the_rollback_patch_is_the_previous_template_without_its_hash() -> None:
    objects = load("bad-deploy")
    patch, image = rollback_patch("chat-service", objects["replicasets"])
    assert image == "secureconnect/chat-service:v1.0.0"
    assert patch[0]["op"] == "replace" and patch[0]["path"] == "/spec/template"
    template = patch[0]["value"]
    assert template["metadata"]["labels"] == {"app": "chat-service"}
    assert template["spec"]["containers"][0]["image"] == image
    with pytest.raises(LookupError, match="no earlier revision"):
        rollback_patch("api-gateway", objects["replicasets"])


def test_restart_and_scale_patches_are_what_kubectl_sends() -> None:
    assert scale_patch(6) == {"spec": {"replicas": 6}}
    stamp = restart_patch(datetime(2026, 11, 29, 3, 0, tzinfo=UTC))
    assert stamp["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "2026-11-29T03:00:00Z"
    }
    assert [cpu_cores(q) for q in ("250m", "2", "1500000n", "20u")] == pytest.approx(
        [0.25, 2.0, 0.0015, 2e-05]
    )


def local_facts(**kw) -> Facts:
    facts = Facts("local data", 1_800_000_000_000, **kw)
    facts.workloads["all"] = Workload("all", 1)
    return facts


def test_database_unreachable_is_named_with_the_restart_that_follows() -> None:
    facts = local_facts(readiness={"store": "failed: StoreUnavailable", "bus": "ok"})
    found = by_check(diagnose("service-down", facts, KUBECTL), "readiness")[0]
    assert found.status == "fail"
    assert (
        found.summary == "the database is unreachable from the service (failed: StoreUnavailable)"
    )
    assert found.commands[0] == "secureconnect oncall diagnose database"
    node = diagnose("database", facts, KUBECTL)[0]
    assert (node.check, node.status) == ("node", "fail")


def test_pool_saturation_scales_the_gateway_out() -> None:
    facts = local_facts(readiness={"store": "ok", "bus": "ok"}, pool=(19, 20))
    pool = by_check(diagnose("service-down", facts, KUBECTL), "db-pool")[0]
    assert (pool.status, pool.summary) == (
        "fail",
        "database pool saturated: 19/20 connections in use",
    )
    assert pool.action == Action("scale", "api-gateway", 2)
    facts.pool = (3, 20)
    assert by_check(diagnose("service-down", facts, KUBECTL), "db-pool")[0].status == "ok"


def test_database_durability_and_timeouts() -> None:
    facts = local_facts(
        readiness={"store": "ok", "bus": "ok"},
        store=StoreReport(
            backend="postgresql",
            latency_ms=250.0,
            role="primary",
            node="10.0.0.5:5432",
            replicas=1,
            standbys=[
                Standby(
                    name="b",
                    address="10.0.0.6",
                    state="streaming",
                    sync="quorum",
                    lag_bytes=4096,
                    lag_ms=0.4,
                )
            ],
            consistency={"synchronous_commit": "local", "synchronous_standby_names": "ANY 1 (*)"},
            pool=PoolUse(in_use=20, max_open=20),
            errors={"db_pool_exhausted": 4},
        ),
        store_errors={"db_pool_exhausted": 4, "store_unavailable": 0},
    )
    findings = diagnose("database", facts, KUBECTL)
    [node], [standby] = by_check(findings, "node"), by_check(findings, "standby b")
    assert node.status == "warn" and "primary at 10.0.0.5:5432, round trip 250.0 ms" in node.summary
    assert (standby.status, standby.summary) == (
        "ok",
        "b at 10.0.0.6: streaming, quorum, 4096 bytes (0 ms) behind",
    )
    [timeouts] = by_check(findings, "timeouts")
    assert (timeouts.status, timeouts.summary) == (
        "fail",
        "requests the store could not serve: db_pool_exhausted 4",
    )
    [consistency] = by_check(findings, "consistency")
    assert consistency.status == "warn" and "synchronous_commit=local" in consistency.summary
    assert consistency.action is not None
    assert consistency.action.cli() == "secureconnect oncall durability sync"


def test_a_primary_waiting_for_a_lost_standby_is_told_to_commit_alone() -> None:
    facts = local_facts(
        readiness={"store": "ok", "bus": "ok"},
        store=StoreReport(
            backend="postgresql",
            latency_ms=2.0,
            role="primary",
            replicas=0,
            consistency={"synchronous_commit": "on", "synchronous_standby_names": "ANY 1 (*)"},
            pool=PoolUse(in_use=1, max_open=20),
            errors={},
        ),
    )
    [standbys] = by_check(diagnose("database", facts, KUBECTL), "standbys")
    assert standbys.status == "fail" and "writes hang" in standbys.summary
    assert standbys.action is not None
    assert standbys.action.cli() == "secureconnect oncall durability local"


def security_report(failures, blocked=(), mode="normal") -> SecurityReport:
    return SecurityReport(
        window_s=900,
        failed_logins=[FailedLogins(ip=ip, count=n, last_at=0) for ip, n in failures],
        failed_logins_total=sum(n for _, n in failures),
        blocked=[
            BlockedNetwork(
                network=b, reason="-", blocked_by="oncall", blocked_at=0, expires_at=None
            )
            for b in blocked
        ],
        rate_limit=RateLimitState(
            mode=mode, set_by=None, set_at=None, emergency_requests_per_min=1
        ),
    )


def test_brute_force_from_one_address_is_blocked() -> None:
    facts = local_facts(security=security_report([("203.0.113.7", 40), ("198.51.100.2", 2)]))
    found = diagnose("security", facts, KUBECTL)
    assert found[0].summary == "203.0.113.7: 40 failed logins in the last 15 min (brute force)"
    assert found[0].action == Action("block", "203.0.113.7")
    assert found[0].commands == (
        'secureconnect oncall block 203.0.113.7 --reason "brute force on /v1/auth/login"'
        f" --target kubernetes -n {NS}",
    )
    facts.security = security_report([("203.0.113.7", 40)], blocked=["203.0.113.7/32"])
    found = diagnose("security", facts, KUBECTL)
    assert [f.status for f in found] == ["ok", "ok", "ok"]
    assert found[1].summary == "1 blocked: 203.0.113.7/32"


def test_a_distributed_attack_turns_on_the_emergency_rate_limit() -> None:
    spread = [(f"198.51.100.{n}", 6) for n in range(12)]
    facts = local_facts(security=security_report(spread))
    first = diagnose("security", facts, KUBECTL)[0]
    assert first.action == Action("rate-limit", "emergency")
    assert "12 addresses" in first.summary
    facts.security = security_report(spread, mode="emergency")
    mode = by_check(diagnose("security", facts, KUBECTL), "rate-limit")[0]
    assert mode.status == "warn" and mode.commands == ("secureconnect oncall rate-limit normal",)


def test_a_block_on_kubernetes_adds_to_the_ingress_deny_list_and_keeps_the_rest() -> None:
    """The patch `oncall block --target kubernetes` sends to our own Ingress (rendered from the
    prod overlay), entry by entry; the patched object is still a valid Ingress."""
    ingress = by_kind(render("prod"), "Ingress")["secureconnect"]
    assert ingress["metadata"]["annotations"][DENYLIST] == ""

    def apply(obj: dict, network: str, add: bool) -> tuple[dict, list[str]]:
        patch, listed = denylist_patch(obj, network, add=add)
        assert set(patch) == {"metadata"}  # only the one annotation: a merge patch
        patched = json.loads(json.dumps(obj))
        patched["metadata"]["annotations"].update(patch["metadata"]["annotations"])
        kubernetes_validate.validate(patched, K8S_VERSION, strict=True)
        return patched, listed

    one, listed = apply(ingress, "203.0.113.7/32", True)
    assert listed == ["203.0.113.7/32"]
    two, listed = apply(one, "198.51.100.0/24", True)
    assert two["metadata"]["annotations"][DENYLIST] == "203.0.113.7/32,198.51.100.0/24"
    again, listed = apply(two, "198.51.100.0/24", True)
    assert listed == ["203.0.113.7/32", "198.51.100.0/24"]  # no double entry
    lifted, listed = apply(again, "203.0.113.7/32", False)
    assert lifted["metadata"]["annotations"][DENYLIST] == "198.51.100.0/24"
    empty, listed = apply(lifted, "198.51.100.0/24", False)
    assert (empty["metadata"]["annotations"][DENYLIST], listed) == ("", [])
    # Every other annotation (timeouts, the normal rate limit) is untouched.
    others = {k: v for k, v in ingress["metadata"]["annotations"].items() if k != DENYLIST}
    assert {k: v for k, v in empty["metadata"]["annotations"].items() if k != DENYLIST} == others


def test_the_database_url_is_read_and_patched_as_one_key_and_a_rollout_is_waited_for() -> None:
    """What `oncall rotate-db-password --target kubernetes` reads and sends: the Secret's one
    key (base64 in the API), a merge patch of that key only, and the rollout's end as
    `kubectl rollout status` sees it, through the states the controller writes on the way."""
    import base64
    import copy

    url = "postgresql+asyncpg://sc:old@db.secureconnect-prod:5432/secureconnect"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "secureconnect-secrets", "namespace": NS},
        "data": {
            k: base64.b64encode(v.encode()).decode()
            for k, v in {"database-url": url, "redis-url": "redis://r:6379/0"}.items()
        },
    }
    assert secret_value(secret, "database-url") == url
    with pytest.raises(LookupError):
        secret_value(secret, "no-such-key")
    assert secret_patch("database-url", "postgresql+asyncpg://sc:new@db/secureconnect") == {
        "stringData": {"database-url": "postgresql+asyncpg://sc:new@db/secureconnect"}
    }

    done = next(
        d for d in load("healthy")["deployments"]["items"] if d["metadata"]["name"] == "api-gateway"
    )
    assert rolled_out(done)
    restarted = copy.deepcopy(done)
    restarted["metadata"]["generation"] = 2  # patched; the controller has not looked yet
    assert not rolled_out(restarted)
    restarted["status"].update(observedGeneration=2, updatedReplicas=1, replicas=4)  # surging
    assert not rolled_out(restarted)
    restarted["status"].update(updatedReplicas=3, replicas=4, availableReplicas=3)  # old pod left
    assert not rolled_out(restarted)
    restarted["status"].update(replicas=3)
    assert rolled_out(restarted)


def test_suggestions_that_clients_cannot_load_and_replicas_that_differ() -> None:
    facts = local_facts()
    facts.suggestions = Suggestions(served=2, versions={"1.0.0", "1.1.0"}, load_failures=7)
    pack, clients = diagnose("suggestions", facts, KUBECTL)
    assert pack.status == "warn" and "replicas serve different packs" in pack.advice
    assert clients.status == "warn" and "7 time(s)" in clients.summary
    facts.suggestions = None
    [unknown] = diagnose("suggestions", facts, KUBECTL)
    assert unknown.status == "unknown"
