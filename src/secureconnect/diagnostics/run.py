"""Puts a diagnosis together: the target's facts, the service's own endpoints and reports,
the network probes, then the rules."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from secureconnect.client import Client
from secureconnect.clock import SYSTEM_CLOCK
from secureconnect.diagnostics.facts import SCENARIOS, Action, Facts, Finding
from secureconnect.diagnostics.probes import (
    read_deploys,
    read_endpoints,
    read_reports,
    turn_probe,
    udp_probe,
)
from secureconnect.diagnostics.rules import Explain, diagnose


class Target(Protocol):
    """Where the platform runs: Kubernetes or this machine. Same questions, same actions."""

    @property
    def explain(self) -> Explain: ...

    @property
    def deploys_from_service(self) -> bool:
        """Kubernetes knows its rollouts from ReplicaSets; a local machine asks the service."""
        ...

    async def facts(self, now_ms: int) -> Facts: ...

    def service_urls(self) -> list[str]: ...

    def plan(self, action: Action) -> str: ...

    async def apply(self, action: Action) -> str: ...

    # The database URL the services read, for `oncall rotate-db-password` (runbook 23.8).
    @property
    def url_home(self) -> str:
        """Where that URL is kept, in words."""
        ...

    def read_database_url(self) -> str: ...

    def write_database_url(self, url: str) -> None: ...

    async def restart_with_database_url(self) -> str:
        """Restarts every service that reads the URL and waits until they are ready again."""
        ...


def make_target(kind: str, namespace: str, data_dir: Path) -> Target:
    if kind == "kubernetes":
        from secureconnect.diagnostics.kube import KubernetesTarget

        return KubernetesTarget(namespace)
    if kind == "local":
        from secureconnect.diagnostics.local import LocalTarget

        return LocalTarget(data_dir)
    raise ValueError("target must be kubernetes or local")


async def collect(
    target: Target,
    client: Client,
    *,
    turn: str | None = None,
    udp: str | None = None,
    turn_secret: str | None = None,
) -> Facts:
    facts = await target.facts(SYSTEM_CLOCK.now_ms())
    answered = [
        await read_endpoints(facts, url) for url in target.service_urls() or [client.base_url]
    ]
    if any(answered):
        await read_reports(facts, client)
        if target.deploys_from_service:
            await read_deploys(facts, client)
    else:
        # The client would try each report again for seconds (a restart's worth) before giving
        # up: a diagnosis of a service that is down must say so at once, not after 12 s.
        facts.gaps.append(
            "admin reports and deploy history: not asked for, the service did not answer"
        )
    if turn:
        facts.turn = await turn_probe(turn, turn_secret)
    if udp:
        facts.udp = await udp_probe(udp)
    return facts


def findings(facts: Facts, scenarios: list[str], explain: Explain) -> list[Finding]:
    return [f for s in scenarios for f in diagnose(s, facts, explain)]


def scenarios_for(name: str | None) -> list[str]:
    if name is None or name == "all":
        return list(SCENARIOS)
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of: all, {', '.join(SCENARIOS)}")
    return [name]
