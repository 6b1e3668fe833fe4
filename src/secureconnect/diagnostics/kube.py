"""The Kubernetes target. Reading the cluster and acting on it go through the ``kubernetes``
client; turning API objects into facts and actions into patches are pure functions, tested on
recorded API answers (tests/fixtures/k8s)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

from secureconnect.diagnostics.facts import Action, Facts, Instance, Rollout, Workload

Obj = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"
INGRESS = "secureconnect"  # deploy/k8s/base/ingress.yaml
SECRETS = "secureconnect-secrets"  # deploy/k8s/base/config.yaml (a name, not a secret)
DATABASE_URL_KEY = "database-url"
# The deployments whose pods read the database URL (deploy/k8s/base/*.yaml).
READS_DATABASE_URL = ("api-gateway", "chat-service", "video-service")
DENYLIST = "nginx.ingress.kubernetes.io/denylist-source-range"
CRASH_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
}
SIGSEGV_EXIT = 139  # 128 + 11


def parse_time(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def cpu_cores(quantity: str) -> float:
    """Kubernetes CPU quantities: ``250m``, ``1``, ``1500000n``, ``20u``."""
    units = {"n": 1e-9, "u": 1e-6, "m": 1e-3}
    if quantity and quantity[-1] in units:
        return float(quantity[:-1]) * units[quantity[-1]]
    return float(quantity)


def instance_of(pod: Obj, usage: dict[str, float]) -> Instance:
    name = pod["metadata"]["name"]
    status = pod.get("status", {})
    problems: list[str] = []
    restarts = 0
    state = status.get("phase", "Unknown")
    ready = False
    for cs in status.get("containerStatuses", []):
        restarts += cs.get("restartCount", 0)
        ready = ready or bool(cs.get("ready"))
        waiting = cs.get("state", {}).get("waiting")
        terminated = cs.get("state", {}).get("terminated")
        last = cs.get("lastState", {}).get("terminated")
        if waiting and waiting.get("reason"):
            state = waiting["reason"]
            if waiting["reason"] in CRASH_WAITING:
                problems.append(waiting["reason"])
        if terminated and terminated.get("reason") == "Error":
            state = "Error"
            problems.append("Error")
        for ended in (terminated, last):
            if not ended:
                continue
            if ended.get("reason") == "OOMKilled" and "OOMKilled" not in problems:
                problems.append("OOMKilled")
            if ended.get("exitCode") == SIGSEGV_EXIT and "Segfault" not in problems:
                problems.append("Segfault")
    ready = ready and all(cs.get("ready") for cs in status.get("containerStatuses", []))
    limit = sum(
        cpu_cores(c.get("resources", {}).get("limits", {}).get("cpu", "0"))
        for c in pod.get("spec", {}).get("containers", [])
    )
    cpu = round(usage[name] / limit * 100, 1) if name in usage and limit else None
    return Instance(name, ready, state, problems, restarts, cpu, status.get("podIP"))


def facts_from_objects(objects: Obj, namespace: str, now_ms: int) -> Facts:
    """``objects``: the API's answers, as JSON: ``deployments``, ``replicasets``, ``pods``,
    ``ingress_pods`` (namespace ingress-nginx) and optionally ``pod_metrics``
    (metrics.k8s.io, what ``kubectl top pods`` reads)."""
    facts = Facts(f"kubernetes {namespace}", now_ms)
    usage: dict[str, float] = {}
    for item in (objects.get("pod_metrics") or {}).get("items", []):
        usage[item["metadata"]["name"]] = sum(
            cpu_cores(c["usage"]["cpu"]) for c in item.get("containers", [])
        )
    if objects.get("pod_metrics") is None:
        facts.gaps.append("metrics.k8s.io not available: no CPU figures")
    selectors: dict[str, dict[str, str]] = {}
    for d in objects["deployments"]["items"]:
        name = d["metadata"]["name"]
        facts.workloads[name] = Workload(name, d["spec"].get("replicas", 1))
        selectors[name] = d["spec"]["selector"].get("matchLabels", {})
    for pod in objects["pods"]["items"]:
        labels = pod["metadata"].get("labels", {})
        for name, selector in selectors.items():
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                facts.workloads[name].instances.append(instance_of(pod, usage))
                break
    ingress = objects.get("ingress_pods")
    if ingress is not None:
        facts.ingress = Workload(
            "ingress-nginx",
            len(ingress["items"]),
            [instance_of(p, usage) for p in ingress["items"]],
        )
    facts.rollouts = rollouts(objects["deployments"], objects["replicasets"])
    return facts


def _revisions(deployment: str, replicasets: Obj) -> list[Obj]:
    owned = [
        rs
        for rs in replicasets["items"]
        if any(
            o.get("kind") == "Deployment" and o.get("name") == deployment
            for o in rs["metadata"].get("ownerReferences", [])
        )
        and REVISION in rs["metadata"].get("annotations", {})
    ]
    return sorted(owned, key=lambda rs: int(rs["metadata"]["annotations"][REVISION]))


def _image(template: Obj) -> str:
    return ", ".join(c["image"] for c in template["spec"]["containers"])


def rollouts(deployments: Obj, replicasets: Obj) -> list[Rollout]:
    """Each deployment's newest revision, with the image it replaced; newest first."""
    found = []
    for d in deployments["items"]:
        revs = _revisions(d["metadata"]["name"], replicasets)
        if not revs:
            continue
        newest = revs[-1]
        previous = _image(revs[-2]["spec"]["template"]) if len(revs) > 1 else None
        found.append(
            Rollout(
                d["metadata"]["name"],
                _image(newest["spec"]["template"]),
                previous,
                parse_time(newest["metadata"]["creationTimestamp"]),
            )
        )
    return sorted(found, key=lambda r: -r.at_ms)


def scale_patch(replicas: int) -> Obj:
    return {"spec": {"replicas": replicas}}


def restart_patch(now: datetime) -> Obj:
    """What ``kubectl rollout restart`` sends: a new annotation rolls every pod."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}
        }
    }


def rollback_patch(deployment: str, replicasets: Obj) -> tuple[list[Obj], str]:
    """What ``kubectl rollout undo`` does: the previous revision's pod template, without the
    ``pod-template-hash`` label the ReplicaSet controller added. Returns (patch, image)."""
    revs = _revisions(deployment, replicasets)
    if len(revs) < 2:
        raise LookupError(f"deployment {deployment} has no earlier revision to roll back to")
    template = copy.deepcopy(revs[-2]["spec"]["template"])
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    return (
        [{"op": "replace", "path": "/spec/template", "value": template}],
        _image(template),
    )


def denylist_patch(ingress: Obj, network: str, *, add: bool) -> tuple[Obj, list[str]]:
    """The merge patch that adds ``network`` (a normalised CIDR) to the ingress's deny list, or
    takes it off, keeping every other entry (what ``kubectl annotate --overwrite`` would send,
    without retyping the list), and the list it leaves. ingress-nginx then refuses those
    addresses before any request reaches a replica (runbook 23.8, "block at the ingress")."""
    current = ingress.get("metadata", {}).get("annotations", {}).get(DENYLIST) or ""
    listed = [n.strip() for n in current.split(",") if n.strip()]
    if add and network not in listed:
        listed.append(network)
    elif not add:
        listed = [n for n in listed if n != network]
    return {"metadata": {"annotations": {DENYLIST: ",".join(listed)}}}, listed


def secret_value(secret: Obj, key: str) -> str:
    """One key of a Secret as the API returns it (``data`` is base64)."""
    data = secret.get("data") or {}
    if key not in data:
        raise LookupError(f"secret {secret['metadata']['name']} has no key {key}")
    return base64.b64decode(data[key]).decode()


def secret_patch(key: str, value: str) -> Obj:
    """A merge patch of one key: the Secret's other keys (redis-url, turn-secret, secret-key)
    stay as they are (runbook 23.8)."""
    return {"stringData": {key: value}}


def rolled_out(deployment: Obj) -> bool:
    """What ``kubectl rollout status`` waits for: the controller has seen the latest spec, and
    every wanted replica is updated, available, and no old one is left."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    wanted = int(spec.get("replicas", 1))
    seen = int(status.get("observedGeneration", 0))
    return seen >= int(deployment["metadata"].get("generation", 0)) and all(
        int(status.get(field, 0)) == wanted
        for field in ("updatedReplicas", "availableReplicas", "replicas")
    )


class Kubectl:
    """The runbook's own commands for each action, for the engineer to read or copy."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def __call__(self, action: Action) -> str:
        if action.kind == "scale":
            n = action.replicas
            return f"kubectl scale deployment/{action.target} --replicas={n} -n {self.ns}"
        if action.kind == "restart":
            return f"kubectl rollout restart deployment/{action.target} -n {self.ns}"
        if action.kind == "rollback":
            return f"kubectl rollout undo deployment/{action.target} -n {self.ns}"
        if action.kind in ("block", "unblock"):
            return f"{action.cli()} --target kubernetes -n {self.ns}"
        return action.cli()

    def logs(self, instance: str) -> str:
        return f"kubectl logs {instance} -n {self.ns} --tail=100"

    def raise_memory(self, workload: str) -> str:
        return f"kubectl set resources deployment/{workload} --limits=memory=<more> -n {self.ns}"


class KubernetesTarget:
    """Reads and changes a namespace through the Kubernetes API (``~/.kube/config`` or the
    in-cluster service account)."""

    deploys_from_service = False

    def __init__(self, namespace: str, ingress_namespace: str = "ingress-nginx") -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config()  # type: ignore[no-untyped-call,unused-ignore]
        except Exception as outside:  # no kube config: perhaps we run inside the cluster
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call,unused-ignore]
            except Exception:
                raise RuntimeError(
                    f"no usable kube config ({outside}) and not running inside a cluster; "
                    "set KUBECONFIG or ~/.kube/config (runbook 23.3)"
                ) from outside
        self.namespace = namespace
        self.ingress_namespace = ingress_namespace
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.networking = client.NetworkingV1Api()
        self.custom = client.CustomObjectsApi()
        self.explain = Kubectl(namespace)

    def _raw(self, call: Any, *args: Any) -> Obj:
        answer: Obj = json.loads(call(*args, _preload_content=False).data)
        return answer

    def _objects(self) -> Obj:
        ns = self.namespace
        objects: Obj = {
            "deployments": self._raw(self.apps.list_namespaced_deployment, ns),
            "replicasets": self._raw(self.apps.list_namespaced_replica_set, ns),
            "pods": self._raw(self.core.list_namespaced_pod, ns),
        }
        try:
            objects["ingress_pods"] = self._raw(
                self.core.list_namespaced_pod, self.ingress_namespace
            )
        except Exception:  # no such namespace, or no right to read it
            objects["ingress_pods"] = None
        try:
            objects["pod_metrics"] = self.custom.list_namespaced_custom_object(
                "metrics.k8s.io", "v1beta1", ns, "pods"
            )
        except Exception:  # metrics-server not installed
            objects["pod_metrics"] = None
        return objects

    async def facts(self, now_ms: int) -> Facts:
        return facts_from_objects(await asyncio.to_thread(self._objects), self.namespace, now_ms)

    def service_urls(self) -> list[str]:
        return []  # through the ingress, at the profile's server URL

    def plan(self, action: Action) -> str:
        return self.explain(action)

    async def apply(self, action: Action) -> str:
        return await asyncio.to_thread(self._apply, action)

    def _apply(self, action: Action) -> str:
        ns = self.namespace
        if action.kind == "scale":
            assert action.replicas is not None
            self.apps.patch_namespaced_deployment_scale(
                action.target, ns, scale_patch(action.replicas)
            )
            return f"deployment/{action.target} scaled to {action.replicas}"
        if action.kind == "restart":
            self.apps.patch_namespaced_deployment(
                action.target, ns, restart_patch(datetime.now(UTC))
            )
            return f"deployment/{action.target} restarting"
        if action.kind == "rollback":
            patch, image = rollback_patch(
                action.target, self._raw(self.apps.list_namespaced_replica_set, ns)
            )
            self.apps.patch_namespaced_deployment(action.target, ns, patch)
            return f"deployment/{action.target} rolling back to {image}"
        if action.kind in ("block", "unblock"):
            ingress = self._raw(self.networking.read_namespaced_ingress, INGRESS, ns)
            edge, listed = denylist_patch(ingress, action.target, add=action.kind == "block")
            self.networking.patch_namespaced_ingress(INGRESS, ns, edge)
            return f"ingress {INGRESS} denies {', '.join(listed) or 'no address'}"
        raise ValueError(f"{action.kind} is not a Kubernetes action")

    # -- the database URL the services read (oncall rotate-db-password) -----------------------

    @property
    def url_home(self) -> str:
        return f"secret/{SECRETS} key {DATABASE_URL_KEY} in {self.namespace}"

    def read_database_url(self) -> str:
        secret = self._raw(self.core.read_namespaced_secret, SECRETS, self.namespace)
        return secret_value(secret, DATABASE_URL_KEY)

    def write_database_url(self, url: str) -> None:
        self.core.patch_namespaced_secret(
            SECRETS, self.namespace, secret_patch(DATABASE_URL_KEY, url)
        )

    async def restart_with_database_url(self, timeout_s: float = 600) -> str:
        """Rolls every deployment that reads the URL and waits until each has rolled out."""
        return await asyncio.to_thread(self._roll, timeout_s)

    def _roll(self, timeout_s: float) -> str:
        ns = self.namespace
        for name in READS_DATABASE_URL:
            self.apps.patch_namespaced_deployment(name, ns, restart_patch(datetime.now(UTC)))
        deadline = time.monotonic() + timeout_s
        waiting = list(READS_DATABASE_URL)
        while waiting and time.monotonic() < deadline:
            time.sleep(2)
            waiting = [
                name
                for name in waiting
                if not rolled_out(self._raw(self.apps.read_namespaced_deployment, name, ns))
            ]
        if waiting:
            raise LookupError(f"not rolled out after {timeout_s:.0f} s: {', '.join(waiting)}")
        return f"{', '.join(READS_DATABASE_URL)} restarted and ready"
