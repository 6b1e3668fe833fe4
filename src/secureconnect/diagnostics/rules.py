"""The runbook's decision trees (23.5 to 23.9) as pure functions from facts to findings.

Each finding says what was seen, what the runbook prescribes, and the exact commands: the
``secureconnect oncall`` mitigation (which asks before acting) and the target's own command
(``kubectl ...``) that it stands for.
"""

from __future__ import annotations

from typing import Protocol

from secureconnect.diagnostics.facts import CORE, Action, Facts, Finding, Rollout


class Explain(Protocol):
    """The target's own commands, printed beside the tooling's."""

    def __call__(self, action: Action) -> str: ...

    def logs(self, instance: str) -> str: ...

    def raise_memory(self, workload: str) -> str: ...


CRASHING = {"CrashLoopBackOff", "Error", "ImagePullBackOff", "ErrImagePull", "exited"}
POOL_SATURATED = 0.9
HOUR_MS = 3600 * 1000
LAGGING_BYTES = 16 * 1024 * 1024  # a standby this far behind is worth a look
SLOW_STORE_MS = 100.0
BRUTE_FORCE = 20  # failed logins from one address in the window
DISTRIBUTED = 10  # addresses each failing at least 5 times: a spread-out attack


def diagnose(scenario: str, facts: Facts, explain: Explain) -> list[Finding]:
    return {
        "service-down": service_down,
        "video": video,
        "database": database,
        "security": security,
        "deploy": deploy,
        "suggestions": suggestions,
    }[scenario](facts, explain)


def _act(action: Action, explain: Explain) -> tuple[str, ...]:
    return (action.cli(), explain(action))


def service_down(f: Facts, explain: Explain) -> list[Finding]:
    s, rb = "service-down", "23.5"
    out: list[Finding] = []
    crashing = [
        (w, i) for w in f.workloads.values() for i in w.instances if CRASHING & set(i.problems)
    ]
    oom = [(w, i) for w in f.workloads.values() for i in w.instances if "OOMKilled" in i.problems]
    segv = [(w, i) for w in f.workloads.values() for i in w.instances if "Segfault" in i.problems]
    if segv:
        w, i = segv[0]
        out.append(
            Finding(
                s,
                "pods",
                "fail",
                f"{i.name} ({w.name}) crashed with a segmentation fault: a code bug",
                rb,
                "The runbook says ROLL BACK NOW (scenario 5, 23.9).",
                _act(Action("rollback", w.name), explain),
                Action("rollback", w.name),
            )
        )
    if oom:
        w, i = oom[0]
        out.append(
            Finding(
                s,
                "pods",
                "fail",
                f"{i.name} ({w.name}) was OOMKilled ({i.restarts} restarts)",
                rb,
                "Raise the memory limit of the deployment, then restart it.",
                (
                    explain.raise_memory(w.name),
                    *_act(Action("restart", w.name), explain),
                ),
                Action("restart", w.name),
            )
        )
    if crashing and not (oom or segv):
        w, i = crashing[0]
        names = ", ".join(f"{x.name} ({'/'.join(x.problems)})" for _, x in crashing[:5])
        pull = "ImagePullBackOff" in i.problems or "ErrImagePull" in i.problems
        out.append(
            Finding(
                s,
                "pods",
                "fail",
                f"{len(crashing)} crashing: {names}",
                rb,
                "The image cannot be pulled: roll back to the last good image (23.9)."
                if pull
                else "Read the newest crashing instance's last 100 log lines: OOM means more "
                "memory and a restart, a segmentation fault means roll back.",
                _act(Action("rollback", w.name), explain) if pull else (explain.logs(i.name),),
                Action("rollback", w.name) if pull else None,
            )
        )
    if not (crashing or oom or segv):
        seen = sum(len(w.instances) for w in f.workloads.values())
        out.append(Finding(s, "pods", "ok", f"{seen} instances, none crashing", rb))
    for w in f.workloads.values():
        if w.desired and w.ready < w.desired:
            out.append(
                Finding(
                    s,
                    "replicas",
                    "warn" if w.ready else "fail",
                    f"{w.name}: {w.ready}/{w.desired} ready",
                    rb,
                )
            )
    if f.ingress is not None:
        if f.ingress.ready == 0:
            out.append(
                Finding(
                    s,
                    "ingress",
                    "fail",
                    "no ingress-nginx pod is ready: nothing reaches the services",
                    rb,
                    "Check the nodes' CPU: an overloaded node cannot schedule pods.",
                    ("kubectl top nodes", "kubectl get pods -n ingress-nginx"),
                )
            )
        else:
            out.append(Finding(s, "ingress", "ok", f"{f.ingress.ready} ingress pod(s) ready", rb))
    if f.readiness is None:
        out.append(Finding(s, "readiness", "fail", "the service did not answer /readyz at all", rb))
    else:
        failed = {k: v for k, v in f.readiness.items() if v != "ok"}
        if "store" in failed:
            out.append(
                Finding(
                    s,
                    "readiness",
                    "fail",
                    f"the database is unreachable from the service ({failed['store']})",
                    rb,
                    "Restore the database first (scenario 3, 23.7); then restart the services "
                    "so that every replica reconnects.",
                    (
                        "secureconnect oncall diagnose database",
                        *_act(Action("restart", CORE[0]), explain),
                    ),
                    Action("restart", CORE[0]),
                )
            )
        if "bus" in failed:
            out.append(
                Finding(
                    s,
                    "readiness",
                    "fail",
                    f"the message bus (Redis) is unreachable ({failed['bus']}): live delivery "
                    "between replicas stops; clients catch up when it returns",
                    rb,
                    "Bring Redis back; replicas reconnect and resync by themselves.",
                )
            )
        if not failed:
            out.append(Finding(s, "readiness", "ok", "store and bus ready", rb))
    if f.pool is not None:
        in_use, max_open = f.pool
        if max_open and in_use / max_open >= POOL_SATURATED:
            target = f.workloads.get(CORE[0])
            double = max(2, (target.desired if target else 1) * 2)
            out.append(
                Finding(
                    s,
                    "db-pool",
                    "fail",
                    f"database pool saturated: {in_use}/{max_open} connections in use",
                    rb,
                    "Add replicas to share the load, or raise SECURECONNECT_DB_POOL_SIZE / "
                    "_DB_MAX_OVERFLOW (a redeploy), or restart so pods reconnect.",
                    _act(Action("scale", CORE[0], double), explain),
                    Action("scale", CORE[0], double),
                )
            )
        else:
            out.append(Finding(s, "db-pool", "ok", f"database pool {in_use}/{max_open} in use", rb))
    recent = _recent_deploys(f)
    if recent:
        r = recent[0]
        out.append(
            Finding(
                s,
                "rollouts",
                "warn",
                f"{r.workload} went to {r.release} {_ago(f.now_ms - r.at_ms)} ago",
                "23.9",
                "Alerts right after a deploy: roll back first, investigate later.",
                _act(Action("rollback", r.workload), explain),
                Action("rollback", r.workload),
            )
        )
    if any(x.status == "fail" for x in out) and not any(x.action for x in out):
        out.append(
            Finding(
                s,
                "fallback",
                "warn",
                "no single cause found",
                rb,
                "Scale every core service to double while you look further.",
                tuple(
                    explain(
                        Action(
                            "scale",
                            n,
                            max(2, f.workloads[n].desired * 2 if n in f.workloads else 6),
                        )
                    )
                    for n in CORE
                ),
            )
        )
    return out


def video(f: Facts, explain: Explain) -> list[Finding]:
    s, rb = "video", "23.6"
    out: list[Finding] = []
    # Locally one "all" process serves video-service too.
    w = f.workloads.get("video-service") or f.workloads.get("all")
    if w is None or not w.instances:
        out.append(Finding(s, "video-cpu", "unknown", "no video-service instances found", rb))
    else:
        cpus = [i.cpu_percent for i in w.instances if i.cpu_percent is not None]
        if not cpus:
            out.append(Finding(s, "video-cpu", "unknown", "no CPU figures for video-service", rb))
        elif max(cpus) > 90:
            target = max(w.desired * 2, w.desired + 2)
            out.append(
                Finding(
                    s,
                    "video-cpu",
                    "fail",
                    f"video-service CPU at {max(cpus):.0f}% of its limit: the SFU is overloaded",
                    rb,
                    "Scale video-service out (video-service-hpa will keep it there).",
                    _act(Action("scale", "video-service", target), explain),
                    Action("scale", "video-service", target),
                )
            )
        else:
            out.append(
                Finding(s, "video-cpu", "ok", f"video-service CPU at most {max(cpus):.0f}%", rb)
            )
    for check, probe, advice in (
        ("turn", f.turn, "Check the coturn pod (or the provider's status page if external)."),
        ("udp-5004", f.udp, "A NetworkPolicy may block UDP between nodes: test from another node."),
    ):
        if probe is None:
            out.append(Finding(s, check, "unknown", "not checked (no address given)", rb))
        else:
            out.append(
                Finding(
                    s,
                    check,
                    "ok" if probe.ok else "fail",
                    f"{probe.target}: {probe.detail}",
                    rb,
                    "" if probe.ok else advice,
                    () if probe.ok else (f"nc -uz {probe.target.replace(':', ' ')}",),
                )
            )
    if any(x.status == "fail" for x in out) and not any(x.action for x in out):
        out.append(
            Finding(
                s,
                "restart",
                "warn",
                "video is failing for everyone",
                rb,
                "Restart the video-service deployment.",
                _act(Action("restart", "video-service"), explain),
                Action("restart", "video-service"),
            )
        )
    return out


def database(f: Facts, explain: Explain) -> list[Finding]:
    s, rb = "database", "23.7"
    out: list[Finding] = []
    store_check = (f.readiness or {}).get("store")
    if f.readiness is None:
        out.append(Finding(s, "node", "unknown", "the service did not answer /readyz", rb))
    elif store_check != "ok":
        out.append(
            Finding(
                s,
                "node",
                "fail",
                f"the database does not answer the service ({store_check})",
                rb,
                "The database node is down or refusing connections: bring it back (check its "
                "host, disk and 'pg_isready'); nothing in this tool deletes data.",
                ("pg_isready -h <database host>",),
            )
        )
    elif f.store is not None:
        latency = f.store.latency_ms
        role = f.store.role
        at = f" at {f.store.node}" if f.store.node else ""
        out.append(
            Finding(
                s,
                "node",
                "warn" if latency > SLOW_STORE_MS or role != "primary" else "ok",
                f"{f.store.backend} {role}{at}, round trip {latency:.1f} ms, "
                f"{f.store.replicas} streaming replica(s)",
                rb,
            )
        )
        out.extend(_standbys(f, s, rb))
    else:
        out.append(Finding(s, "node", "ok", "the database answers the service", rb))
    errors = {k: v for k, v in f.store_errors.items() if v}
    if errors:
        out.append(
            Finding(
                s,
                "timeouts",
                "fail" if errors.get("db_pool_exhausted") else "warn",
                "requests the store could not serve: "
                + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())),
                rb,
                "Pool exhausted means slow queries hold connections: see db-pool in 23.5.",
            )
        )
    else:
        out.append(Finding(s, "timeouts", "ok", "no store timeouts or refusals counted", rb))
    consistency = f.store.consistency if f.store is not None else {}
    if consistency:
        shown = ", ".join(f"{k}={v}" for k, v in consistency.items())
        relaxed = consistency.get("synchronous_commit") in ("local", "off") or consistency.get(
            "synchronous"
        ) in ("OFF", "NORMAL")
        postgres = "synchronous_commit" in consistency
        out.append(
            Finding(
                s,
                "consistency",
                "warn" if relaxed else "ok",
                f"durability in force: {shown}"
                + (" (relaxed: a commit does not wait for a standby)" if relaxed else ""),
                rb,
                "Relaxed is the emergency LOCAL_ONE: set it back once a standby streams again."
                if relaxed
                else "",
                (Action("durability", "sync").cli(),) if relaxed and postgres else (),
                Action("durability", "sync") if relaxed and postgres else None,
            )
        )
    else:
        out.append(Finding(s, "consistency", "unknown", "not readable (store down?)", rb))
    return out


def _standbys(f: Facts, s: str, rb: str) -> list[Finding]:
    """Each standby and its lag; a primary that waits for a standby it does not have."""
    store = f.store
    if store is None or store.backend != "postgresql" or store.role != "primary":
        return []
    out = [
        Finding(
            s,
            f"standby {sb.name}",
            "ok" if sb.state == "streaming" and sb.lag_bytes < LAGGING_BYTES else "warn",
            f"{sb.name} at {sb.address}: {sb.state}, {sb.sync}, {sb.lag_bytes} bytes "
            f"({sb.lag_ms:.0f} ms) behind",
            rb,
        )
        for sb in store.standbys
    ]
    waits = store.consistency.get("synchronous_commit") not in (
        "local",
        "off",
    ) and store.consistency.get("synchronous_standby_names")
    if waits and not any(sb.state == "streaming" for sb in store.standbys):
        out.append(
            Finding(
                s,
                "standbys",
                "fail",
                "every commit waits for a standby, and none streams: writes hang",
                rb,
                "Emergency (LOCAL_ONE): commit on the primary alone until a standby is rebuilt "
                "from a base backup (pg_basebackup) and streams; then switch back to sync.",
                (Action("durability", "local").cli(),),
                Action("durability", "local"),
            )
        )
    elif not store.standbys:
        out.append(
            Finding(
                s,
                "standbys",
                "warn",
                "no standby: losing this node loses what it has not backed up",
                rb,
                "Rebuild a standby from a base backup, then switch back to sync.",
                (
                    f"pg_basebackup -h {store.node.split(':')[0]} -D <data dir> "
                    "-R -X stream -c fast",
                ),
            )
        )
    return out


def security(f: Facts, explain: Explain) -> list[Finding]:
    s, rb = "security", "23.8"
    if f.security is None:
        return [Finding(s, "failed-logins", "unknown", "the security report was not readable", rb)]
    report = f.security
    out: list[Finding] = []
    failures = report.failed_logins
    window = report.window_s // 60
    attackers = [x for x in failures if x.count >= BRUTE_FORCE]
    spread = [x for x in failures if x.count >= 5]
    blocked = {b.network for b in report.blocked}
    if len(spread) >= DISTRIBUTED and report.rate_limit.mode != "emergency":
        out.append(
            Finding(
                s,
                "failed-logins",
                "fail",
                f"{len(spread)} addresses failing logins in the last {window} min "
                f"({report.failed_logins_total} failures): a distributed attack",
                rb,
                "Turn on the emergency rate limit (1 request a minute per address) on the API.",
                ("secureconnect oncall rate-limit emergency",),
                Action("rate-limit", "emergency"),
            )
        )
    for x in attackers:
        net = f"{x.ip}/32" if ":" not in x.ip else f"{x.ip}/128"
        if net in blocked:
            continue
        out.append(
            Finding(
                s,
                "failed-logins",
                "fail",
                f"{x.ip}: {x.count} failed logins in the last {window} min (brute force)",
                rb,
                "Block the address at the API (and, on Kubernetes, at the ingress).",
                (
                    explain(Action("block", x.ip)).replace(
                        '"..."', '"brute force on /v1/auth/login"'
                    ),
                ),
                Action("block", x.ip),
            )
        )
    if not out:
        top = failures[0] if failures else None
        out.append(
            Finding(
                s,
                "failed-logins",
                "ok",
                f"{report.failed_logins_total} failed logins in the last {window} min"
                + (f" (most from {top.ip}: {top.count})" if top else ""),
                rb,
            )
        )
    out.append(
        Finding(
            s,
            "blocked",
            "ok",
            f"{len(blocked)} blocked: {', '.join(sorted(blocked))}" if blocked else "none blocked",
            rb,
        )
    )
    mode = report.rate_limit.mode
    out.append(
        Finding(
            s,
            "rate-limit",
            "warn" if mode == "emergency" else "ok",
            f"rate-limit mode {mode}"
            + (f" (set by {report.rate_limit.set_by})" if report.rate_limit.set_by else ""),
            rb,
            "Turn it back off once the attack stops." if mode == "emergency" else "",
            ("secureconnect oncall rate-limit normal",) if mode == "emergency" else (),
        )
    )
    return out


def deploy(f: Facts, explain: Explain) -> list[Finding]:
    s, rb = "deploy", "23.9"
    recent = _recent_deploys(f)
    if not recent:
        return [Finding(s, "rollouts", "ok", "no deploy in the last hour: not a bad deploy", rb)]
    out = []
    for r in recent:
        came_from = f" from {r.previous}" if r.previous else ""
        out.append(
            Finding(
                s,
                "rollouts",
                "warn",
                f"{r.workload} went{came_from} to {r.release} {_ago(f.now_ms - r.at_ms)} ago",
                rb,
                "Stop: do not fix forward under pressure. Roll back, watch for 10 minutes, then "
                "investigate on develop.",
                _act(Action("rollback", r.workload), explain),
                Action("rollback", r.workload),
            )
        )
    return out


def _recent_deploys(f: Facts) -> list[Rollout]:
    """Changes of release in the last hour. A first release replaced nothing: nothing to roll
    back to, so it is not a candidate."""
    return [r for r in f.rollouts if r.previous and f.now_ms - r.at_ms <= HOUR_MS]


def _ago(ms: int) -> str:
    minutes = ms // 60000
    return f"{minutes} min" if minutes else f"{ms // 1000} s"


def suggestions(f: Facts, explain: Explain) -> list[Finding]:
    """AI suggested replies (runbook 23.2, P3). They are computed on devices: the server's only
    part is handing out a verified pack, so chat never depends on them."""
    s, rb = "suggestions", "23.2"
    seen = f.suggestions
    if seen is None:
        return [Finding(s, "pack", "unknown", "no replica serving the web client answered", rb)]
    if seen.broken:
        gateway = "api-gateway" if "api-gateway" in f.workloads else "all"
        return [
            Finding(
                s,
                "pack",
                "fail",
                f"AI suggestions down (P3): {'; '.join(seen.broken)}",
                rb,
                "Chat is unaffected. The suggestion pack in the image is missing or altered "
                "(SECURECONNECT_SUGGEST_DIR, pack.json against pack.sha256). Restart to reload "
                "it; if it is wrong in the release, roll back.",
                _act(Action("restart", gateway), explain),
                Action("restart", gateway),
            )
        ]
    out = [
        Finding(
            s,
            "pack",
            "ok" if len(seen.versions) == 1 else "warn",
            f"pack {', '.join(sorted(seen.versions))} served and verified by {seen.served} "
            f"replica(s); {seen.shown:.0f} rows of chips shown, {seen.taken:.0f} taken",
            rb,
            ""
            if len(seen.versions) == 1
            else "replicas serve different packs: a rollout is under way, or one was left behind",
        )
    ]
    if seen.load_failures:
        out.append(
            Finding(
                s,
                "clients",
                "warn",
                f"clients failed to load or verify the pack {seen.load_failures:.0f} time(s)",
                rb,
                "A proxy or cache in front of the service may alter /v1/suggest/pack/...: "
                "compare its bytes with the manifest's sha256.",
            )
        )
    return out
