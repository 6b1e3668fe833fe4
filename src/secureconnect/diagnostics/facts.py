"""What a diagnosis knows, the same shape whichever target gathered it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from secureconnect.guard.schemas import SecurityReport
from secureconnect.ops.schemas import StoreReport

SCENARIOS = ("service-down", "video", "database", "security", "deploy", "suggestions")
CORE = ("api-gateway", "chat-service")


@dataclass
class Instance:
    """A pod, or a local ``serve`` process."""

    name: str
    ready: bool
    state: str  # Running, CrashLoopBackOff, exited, not answering ...
    problems: list[str] = field(default_factory=list)  # CrashLoopBackOff, OOMKilled, Segfault ...
    restarts: int = 0
    cpu_percent: float | None = None  # of its limit (Kubernetes) or of one core (local)
    address: str | None = None


@dataclass
class Workload:
    """A Deployment, or the local processes of one role."""

    name: str
    desired: int
    instances: list[Instance] = field(default_factory=list)

    @property
    def ready(self) -> int:
        return sum(1 for i in self.instances if i.ready)


@dataclass
class Rollout:
    workload: str
    release: str
    previous: str | None
    at_ms: int


@dataclass
class Probe:
    """A network check made from where the tool runs (STUN binding, UDP port)."""

    target: str
    ok: bool
    detail: str


@dataclass
class Suggestions:
    """The suggestion pack as the replicas that serve the web client hand it out."""

    served: int = 0  # replicas whose pack answered with the hash their manifest names
    broken: list[str] = field(default_factory=list)  # "<url>: why"
    versions: set[str] = field(default_factory=set)
    load_failures: float = 0.0  # clients that could not load or verify it (since start)
    shown: float = 0.0
    taken: float = 0.0


@dataclass
class Facts:
    target: str  # "kubernetes secureconnect-prod", "local ./data"
    now_ms: int
    workloads: dict[str, Workload] = field(default_factory=dict)
    ingress: Workload | None = None  # None: this target has no ingress of its own
    rollouts: list[Rollout] = field(default_factory=list)
    readiness: dict[str, str] | None = None  # /readyz checks; None when it did not answer
    pool: tuple[int, int] | None = None  # (in use, max open)
    store_errors: dict[str, int] = field(default_factory=dict)
    store: StoreReport | None = None  # /v1/ops/store
    security: SecurityReport | None = None  # /v1/ops/security
    turn: Probe | None = None
    udp: Probe | None = None
    suggestions: Suggestions | None = None  # None: no replica serves the web client
    logs: dict[str, list[str]] = field(default_factory=dict)  # instance -> last log lines
    gaps: list[str] = field(default_factory=list)  # what could not be read, and why


Status = Literal["ok", "warn", "fail", "unknown"]


@dataclass(frozen=True)
class Action:
    """A mitigation the tooling can carry out (after asking)."""

    kind: Literal[
        "scale",
        "restart",
        "rollback",
        "block",
        "unblock",
        "rate-limit",
        "compromise",
        "notify-users",
        "rotate-db-password",
        "durability",
    ]
    target: str  # a workload, a network, or a mode
    replicas: int | None = None

    def cli(self) -> str:
        if self.kind == "scale":
            return f"secureconnect oncall scale {self.target} {self.replicas}"
        if self.kind in ("block", "compromise"):
            return f'secureconnect oncall {self.kind} {self.target} --reason "..."'
        if self.kind == "rotate-db-password":  # the target is the role, not an argument
            return "secureconnect oncall rotate-db-password"
        return f"secureconnect oncall {self.kind} {self.target}"


@dataclass(frozen=True)
class Finding:
    scenario: str
    check: str
    status: Status
    summary: str
    runbook: str  # section, e.g. "23.5"
    advice: str = ""
    commands: tuple[str, ...] = ()
    action: Action | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "check": self.check,
            "status": self.status,
            "summary": self.summary,
            "runbook": self.runbook,
            "advice": self.advice,
            "commands": list(self.commands),
            "action": None
            if self.action is None
            else {
                "kind": self.action.kind,
                "target": self.action.target,
                "replicas": self.action.replicas,
                "command": self.action.cli(),
            },
        }
