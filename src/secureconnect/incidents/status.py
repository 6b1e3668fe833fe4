"""The status page (runbook 23.10): components in green, yellow or red, the overall state, open
incidents with their public updates, and 90 days of history. Components follow the platform's
own health; an incident's public update can set them by hand until the incident resolves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import insert, select

from secureconnect.errors import Conflict, Invalid
from secureconnect.incidents.models import incidents, status_updates
from secureconnect.incidents.platform import PrometheusCheck
from secureconnect.incidents.schemas import (
    ComponentState,
    Overall,
    PublicIncident,
    PublicNote,
    StatusPageOut,
)
from secureconnect.incidents.service import HealthProbe, IncidentService
from secureconnect.store import Database, StoreUnavailable

COMPONENTS = ["Login & API", "Chat", "Video calls", "AI suggestions", "Avatars"]
# The runbook's components whose function the platform does not offer yet: shown as "not
# available", never "operational", and left out of the overall state, so that the page claims
# nothing that is not true. A component leaves this set in the change that builds its function.
NOT_YET: set[str] = set()
NOT_AVAILABLE = "not_available"
STATES = {
    "operational": "green",
    "degraded": "yellow",
    "partial_outage": "yellow",
    "major_outage": "red",
}
PHASES = ["investigating", "identified", "monitoring", "resolved"]
# The runbook's three example messages (23.10), offered as templates.
TEMPLATES = {
    "red": (
        "investigating",
        "Investigating connectivity issues with Video Calls.",
        {"Video calls": "major_outage"},
    ),
    "yellow": (
        "identified",
        "Some users are experiencing slow message delivery. We are working on it.",
        {"Chat": "degraded"},
    ),
    "green": ("resolved", "Systems are operational.", {}),
}
HISTORY_DAYS = 90
# Which components each role serves, for the platform-wide view through Prometheus.
ROLE_COMPONENTS = {
    "api-gateway": ["Login & API", "AI suggestions", "Avatars"],
    "chat-service": ["Chat"],
    "video-service": ["Video calls"],
    "all": ["Login & API", "Chat", "Video calls", "AI suggestions", "Avatars"],
}
PLATFORM_CACHE_S = 10.0
RANK = ["operational", "degraded", "partial_outage", "major_outage"]


class StatusPage:
    def __init__(
        self,
        db: Database,
        incidents_service: IncidentService,
        health: HealthProbe,
        platform: PrometheusCheck | None = None,
        video: Callable[[], str] | None = None,
        suggest: Callable[[], bool] | None = None,
        avatars: Callable[[], bool] | None = None,
    ) -> None:
        """``video``: this process's own view of calls (its SFU up, down, or calls switched
        off: "not_available"), where it runs one. ``suggest``: whether the suggestion pack is
        here, verified and served (AI suggestions)."""
        self.video = video
        self.suggest = suggest
        self.avatars = avatars  # whether pictures can be made here (Pillow decodes and encodes)
        self.db = db
        self.incidents = incidents_service
        self.health = health
        self.platform = platform
        self._roles: tuple[float, dict[str, tuple[int, int]]] | None = None

    async def _platform_states(self) -> dict[str, str] | None:
        """Every replica's readiness, by role, through Prometheus; cached, because the page is
        public and must not turn visitors into queries. None when unknown."""
        if self.platform is None:
            return None
        now = time.monotonic()
        if self._roles is None or now - self._roles[0] > PLATFORM_CACHE_S:
            try:
                self._roles = (now, await self.platform.roles())
            except (httpx.HTTPError, KeyError, ValueError):
                return None
        states: dict[str, str] = {}
        for role, (ready, seen) in self._roles[1].items():
            state = (
                "operational" if ready == seen else "partial_outage" if ready else "major_outage"
            )
            for name in ROLE_COMPONENTS.get(role, []):
                if RANK.index(state) > RANK.index(states.get(name, "operational")):
                    states[name] = state
        return states or None

    async def post(
        self,
        actor: str,
        ref: str,
        phase: str | None,
        text: str | None,
        components: dict[str, str],
        template: str | None = None,
    ) -> StatusPageOut:
        if template is not None:
            if template not in TEMPLATES:
                raise Invalid("invalid_template", f"template is one of {', '.join(TEMPLATES)}")
            t_phase, t_text, t_components = TEMPLATES[template]
            phase, text = phase or t_phase, text or t_text
            components = {**t_components, **components}
        if phase not in PHASES:
            raise Invalid("invalid_phase", f"phase is one of {', '.join(PHASES)}")
        if not text:
            raise Invalid("empty_update", "a public update needs text")
        for name, state in components.items():
            if name not in COMPONENTS or state not in STATES:
                raise Invalid(
                    "invalid_component",
                    f"components are {', '.join(COMPONENTS)}; states are {', '.join(STATES)}",
                )
        incident = await self.incidents.get(ref)
        if incident.status in ("resolved", "closed") and phase != "resolved":
            # It would put a resolved incident back to "investigating" on the public page.
            raise Conflict(
                "incident_resolved",
                f"incident {incident.number} is {incident.status}: its public updates can only "
                "say it is resolved (phase resolved, or the green template); reopen it first",
            )
        async with self.db.write() as conn:
            await conn.execute(
                insert(status_updates).values(
                    incident_id=incident.id,
                    at=self.incidents.clock.now_ms(),
                    phase=phase,
                    text=text,
                    components=json.dumps(components),
                )
            )
        await self.incidents.note(actor, ref, f"public update ({phase}): {text}", "public_update")
        return await self.page()

    async def page(self) -> StatusPageOut:
        ready, _ = await self.health()
        states = dict.fromkeys(COMPONENTS, "operational")
        if not ready:  # the store or the bus is failing: logging in and chatting are down
            states["Login & API"] = states["Chat"] = "major_outage"
        for name, state in (await self._platform_states() or {}).items():
            if RANK.index(state) > RANK.index(states[name]):
                states[name] = state
        since = self.incidents.clock.now_ms() - HISTORY_DAYS * 86_400_000
        try:
            async with self.db.read() as conn:
                rows = (
                    await conn.execute(
                        select(incidents)
                        .where(incidents.c.opened_at >= since)
                        .order_by(incidents.c.opened_at.desc())
                    )
                ).all()
                updates = (
                    await conn.execute(
                        select(status_updates)
                        .where(status_updates.c.incident_id.in_([r.id for r in rows]))
                        .order_by(status_updates.c.id)
                    )
                ).all()
        except StoreUnavailable:
            # The page matters most when things are broken: show what health says.
            rows, updates = [], []
        by_incident: dict[str, list[Any]] = {}
        for u in updates:
            by_incident.setdefault(u.incident_id, []).append(u)
        shown: list[PublicIncident] = []
        for row in rows:
            public = by_incident.get(row.id, [])
            if not public:
                continue  # internal until someone posts a public update
            active = row.status not in ("resolved", "closed") and public[-1].phase != "resolved"
            if active:
                for name, state in json.loads(public[-1].components).items():
                    if RANK.index(state) > RANK.index(states[name]):
                        states[name] = state
            shown.append(
                PublicIncident(
                    number=row.number,
                    title=row.title,
                    severity=row.severity,
                    active=active,
                    opened_at=row.opened_at,
                    resolved_at=row.resolved_at,
                    updates=[
                        PublicNote(at=u.at, phase=u.phase, text=u.text) for u in reversed(public)
                    ],
                )
            )
        if self.video is not None:
            here = self.video()
            if here == NOT_AVAILABLE or RANK.index(here) > RANK.index(states["Video calls"]):
                states["Video calls"] = here
        if self.suggest is not None and not self.suggest():
            states["AI suggestions"] = "major_outage"
        if self.avatars is not None and not self.avatars():
            states["Avatars"] = "major_outage"
        for name in NOT_YET:
            states[name] = NOT_AVAILABLE
        worst = max((st for st in states.values() if st in RANK), key=RANK.index)
        overall = {
            "operational": "All systems operational",
            "degraded": "Some systems degraded",
            "partial_outage": "Partial outage",
            "major_outage": "Major outage",
        }[worst]
        return StatusPageOut(
            overall=Overall(state=worst, colour=STATES[worst], text=overall),
            components=[
                ComponentState(name=n, state=st, colour=STATES.get(st, "grey"))
                for n, st in states.items()
            ],
            incidents=[i for i in shown if i.active],
            history=[i for i in shown if not i.active],
        )
