"""Incident logic. Every step is stamped and written to the timeline; closing is refused until
the platform has been healthy for the verification window after "resolved" (no new 5xx, store
and bus ready), unless someone gives a reason to override."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.errors import Conflict, Invalid, NotFound
from secureconnect.incidents.models import incident_events, incidents
from secureconnect.incidents.notify import Notifier
from secureconnect.incidents.platform import PrometheusCheck
from secureconnect.store import Database, now_ms
from secureconnect.store.base import new_id

ORDER = ["open", "acknowledged", "triaged", "mitigated", "resolved", "closed"]
STAMP = {
    "acknowledged": "acknowledged_at",
    "triaged": "triaged_at",
    "mitigated": "mitigated_at",
    "resolved": "resolved_at",
    "closed": "closed_at",
}

# (ready, server errors so far): what "healthy" is measured from.
HealthProbe = Callable[[], Awaitable[tuple[bool, int]]]


@dataclass(frozen=True)
class Severities:
    levels: dict[str, dict[str, Any]]
    verify_s: float
    update_every_s: float
    stakeholders_after_s: float

    @classmethod
    def load(
        cls,
        verify_s: float | None = None,
        update_every_s: float | None = None,
        stakeholders_after_s: float | None = None,
    ) -> Severities:
        raw = tomllib.loads(
            resources.files("secureconnect.incidents").joinpath("severities.toml").read_text()
        )
        levels = {k: v for k, v in raw.items() if isinstance(v, dict)}

        def pick(given: float | None, minutes: float) -> float:
            return given if given is not None else minutes * 60.0

        return cls(
            levels,
            pick(verify_s, raw["verify_minutes"]),
            pick(update_every_s, raw["update_every_minutes"]),
            pick(stakeholders_after_s, raw["stakeholders_after_minutes"]),
        )

    def check(self, severity: str) -> str:
        if severity not in self.levels:
            raise Invalid("invalid_severity", f"severity must be one of {', '.join(self.levels)}")
        return severity


def _alert_time(text: object) -> int | None:
    """Alertmanager's RFC 3339 times carry nanoseconds; Python reads up to microseconds."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        parsed = datetime.fromisoformat(
            whole + (fraction or "")[:7] + ("+00:00" if zone == "Z" else zone)
        )
    except ValueError:
        return None
    return int(parsed.timestamp() * 1000)


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class IncidentService:
    def __init__(
        self,
        db: Database,
        severities: Severities,
        health: HealthProbe,
        platform: PrometheusCheck | None = None,
    ) -> None:
        self.db = db
        self.severities = severities
        self.health = health
        self.platform = platform

    async def open(
        self,
        actor: str,
        title: str,
        severity: str,
        *,
        text: str = "",
        alert_key: str | None = None,
        since: int | None = None,
    ) -> dict[str, Any]:
        """``since``: when the trouble began (an alert's ``startsAt``), if before now."""
        self.severities.check(severity)
        now = min(since, now_ms()) if since else now_ms()
        incident_id = new_id()
        async with self.db.write() as conn:
            number = (
                await conn.execute(select(func.coalesce(func.max(incidents.c.number), 0)))
            ).scalar_one() + 1
            await conn.execute(
                insert(incidents).values(
                    id=incident_id,
                    number=number,
                    title=title[:300],
                    severity=severity,
                    status="open",
                    alert_key=alert_key,
                    opened_at=now,
                    last_update_at=now,
                )
            )
            await self._log(
                conn,
                incident_id,
                "opened",
                actor,
                f"{severity} opened: {title}" + (f". {text}" if text else ""),
                at=now,
            )
        return await self.get(str(number))

    async def advance(
        self, actor: str, ref: str, to: str, text: str = "", **fields: Any
    ) -> dict[str, Any]:
        """Moves the incident forward to ``to`` (steps may be skipped, never undone)."""
        _, errors = await self.health() if to == "resolved" else (True, 0)
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            if ORDER.index(to) <= ORDER.index(row.status):
                raise Conflict("invalid_transition", f"incident is already {row.status}")
            now = now_ms()
            values: dict[str, Any] = {"status": to, STAMP[to]: now, "last_update_at": now}
            if to == "acknowledged" and row.owner is None:
                values["owner"] = actor
            if to == "resolved":
                values["errors_at_resolve"] = errors
            values.update({k: v for k, v in fields.items() if v is not None})
            await conn.execute(update(incidents).where(incidents.c.id == row.id).values(**values))
            detail = ", ".join(
                f"{k.replace('_', ' ')}: {v}" for k, v in fields.items() if v is not None
            )
            await self._log(
                conn, row.id, to, actor, "; ".join(p for p in (text, detail) if p) or to
            )
        return await self.get(ref)

    async def set_severity(
        self, actor: str, ref: str, severity: str, text: str = ""
    ) -> dict[str, Any]:
        self.severities.check(severity)
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            await conn.execute(
                update(incidents)
                .where(incidents.c.id == row.id)
                .values(severity=severity, last_update_at=now_ms())
            )
            await self._log(
                conn,
                row.id,
                "severity",
                actor,
                f"{row.severity} -> {severity}" + (f": {text}" if text else ""),
            )
        return await self.get(ref)

    async def note(self, actor: str, ref: str, text: str, kind: str = "update") -> dict[str, Any]:
        if not text.strip():
            raise Invalid("empty_update", "an update needs some text")
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            await conn.execute(
                update(incidents).where(incidents.c.id == row.id).values(last_update_at=now_ms())
            )
            await self._log(conn, row.id, kind, actor, text)
        return await self.get(ref)

    async def close(
        self, actor: str, ref: str, override_reason: str | None = None
    ) -> dict[str, Any]:
        ready, errors = await self.health()
        async with self.db.read() as conn:
            resolved_at = (await self._row(conn, ref)).resolved_at
        platform_problems = (
            await self.platform.problems_since((now_ms() - resolved_at) / 1000)
            if self.platform is not None and resolved_at is not None
            else []
        )
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            if row.status != "resolved":
                raise Conflict("not_resolved", "resolve the incident before closing it")
            stable_s = (now_ms() - row.resolved_at) / 1000
            problems = []
            if stable_s < self.severities.verify_s:
                problems.append(
                    f"only {stable_s:.0f}s of the {self.severities.verify_s:.0f}s "
                    f"verification window have passed since resolve"
                )
            if errors > (row.errors_at_resolve or 0):
                problems.append(
                    f"{errors - (row.errors_at_resolve or 0)} server errors since resolve"
                )
            if not ready:
                problems.append("the platform is not ready (store or bus failing)")
            problems += platform_problems
            if problems and not override_reason:
                raise Conflict(
                    "not_verified",
                    "; ".join(problems) + ". Wait, or close with an override reason.",
                )
            now = now_ms()
            await conn.execute(
                update(incidents)
                .where(incidents.c.id == row.id)
                .values(
                    status="closed",
                    verified_at=None if problems else now,
                    closed_at=now,
                    last_update_at=now,
                )
            )
            if problems:
                text = f"closed by override: {override_reason} ({'; '.join(problems)})"
            else:
                where = " on every replica (Prometheus)" if self.platform is not None else ""
                await self._log(
                    conn,
                    row.id,
                    "verified",
                    actor,
                    f"verified stable for {stable_s:.0f}s{where}: no new server errors, "
                    "store and bus ready",
                    at=now,
                )
                text = "closed"
            await self._log(conn, row.id, "closed", actor, text, at=now)
        return await self.get(ref)

    async def alert(self, payload: dict[str, Any]) -> list[int]:
        """Alertmanager's webhook: a firing alert opens an incident (or joins the open one for
        the same alert); a resolved one is written on its timeline."""
        touched = []
        for item in payload.get("alerts", []):
            labels = item.get("labels", {})
            name = str(labels.get("alertname", "unnamed alert"))
            severity = str(labels.get("severity", "P3"))
            severity = severity if severity in self.severities.levels else "P3"
            summary = str(item.get("annotations", {}).get("summary") or name)
            status = item.get("status", "firing")
            async with self.db.read() as conn:
                current = (
                    await conn.execute(
                        select(incidents.c.number)
                        .where((incidents.c.alert_key == name) & (incidents.c.status != "closed"))
                        .order_by(incidents.c.number.desc())
                        .limit(1)
                    )
                ).scalar()
            if current is None and status == "firing":
                # Stamped when the alert began: if the store was down then, Alertmanager's retry
                # delivers it late, and the timeline must still say when the trouble started.
                opened = await self.open(
                    "alertmanager",
                    summary,
                    severity,
                    alert_key=name,
                    text=f"alert {name} firing",
                    since=_alert_time(item.get("startsAt")),
                )
                touched.append(opened["number"])
            elif current is not None:
                kind = "alert_resolved" if status == "resolved" else "alert_firing"
                await self.note("alertmanager", str(current), f"alert {name} {status}", kind)
                touched.append(current)
        return touched

    async def remind(self, owner: Notifier, stakeholders: Notifier) -> list[tuple[int, str]]:
        """The runbook's cadence (23.1, 23.10): no update for 15 minutes reminds the owner
        (again every 15 minutes); an incident open for 30 minutes tells stakeholders, once. The
        check runs under the incident's row lock, so several replicas never send it twice."""
        sent: list[tuple[int, str]] = []
        now = now_ms()
        every_ms = self.severities.update_every_s * 1000
        after_ms = self.severities.stakeholders_after_s * 1000
        async with self.db.read() as conn:
            open_ids = list(
                (
                    await conn.execute(
                        select(incidents.c.id).where(
                            incidents.c.status.in_(["open", "acknowledged", "triaged", "mitigated"])
                        )
                    )
                ).scalars()
            )
        for incident_id in open_ids:
            notices: list[tuple[Notifier, str, str, str]] = []
            async with self.db.write() as conn:
                row = (
                    await conn.execute(
                        select(incidents).where(incidents.c.id == incident_id).with_for_update()
                    )
                ).first()
                if row is None:
                    continue
                kinds = {
                    r.kind: r.at
                    for r in await conn.execute(
                        select(incident_events.c.kind, func.max(incident_events.c.at).label("at"))
                        .where(incident_events.c.incident_id == incident_id)
                        .group_by(incident_events.c.kind)
                    )
                }
                last_reminder = kinds.get("reminder", 0)
                if now - row.last_update_at >= every_ms and now - last_reminder >= every_ms:
                    quiet = (now - row.last_update_at) // 60000
                    text = (
                        f"@{row.owner or 'on-call'}: no update on incident #{row.number} "
                        f"({row.severity}, {row.title}) for {quiet} min. Post one, even "
                        f'"no news": secureconnect oncall update {row.number} "..."'
                    )
                    await self._log(conn, incident_id, "reminder", "reminders", text)
                    notices.append((owner, f"Update incident #{row.number}", text, "reminder"))
                if now - row.opened_at >= after_ms and "stakeholders_notified" not in kinds:
                    text = (
                        f"Incident #{row.number} ({row.severity}: {row.title}) has been open "
                        f"for {(now - row.opened_at) // 60000} min; status {row.status}. "
                        f"Status page and updates follow."
                    )
                    await self._log(conn, incident_id, "stakeholders_notified", "reminders", text)
                    notices.append(
                        (stakeholders, f"Incident #{row.number} ongoing", text, "stakeholders")
                    )
            for notifier, subject, text, kind in notices:
                await notifier.send(subject, text)
                sent.append((row.number, kind))
        return sent

    async def postmortem(self, ref: str) -> str:
        """A blameless report in the runbook's six sections (23.11), drafted from the incident's
        own record, ready to edit: facts filled in, judgement left to people."""
        i = await self.get(ref)
        end = i["resolved_at"] or i["closed_at"] or now_ms()
        minutes = max(0, round((end - i["opened_at"]) / 60000))
        by_kind: dict[str, list[str]] = {}
        for event in i["timeline"]:
            by_kind.setdefault(event["kind"], []).append(event["text"])
        users = i["users_affected"]
        measured = (
            await self.platform.impact(i["opened_at"], end) if self.platform is not None else []
        )
        lines = [
            f"# Post-mortem: incident #{i['number']}: {i['title']}",
            "",
            "## 1. Summary",
            f'{i["severity"]} ({i["severity_name"]}) incident "{i["title"]}", opened '
            f"{_stamp(i['opened_at'])}, status {i['status']}.",
            "",
            "## 2. Impact",
            f"- Users affected: {users if users is not None else 'not recorded at triage'}",
            f"- Duration: {minutes} minutes, from opening to "
            f"{'resolution' if i['resolved_at'] else 'now'}",
            f"- A deploy in the hour before: "
            f"{ {True: 'yes', False: 'no', None: 'not recorded'}[i['recent_deploy']] }",
            *measured,
            "",
            "## 3. Timeline",
            *[
                f"- {_stamp(e['at'])} {e['kind']} ({e['actor']}): {e['text']}"
                for e in i["timeline"]
            ],
            "",
            "## 4. Root cause",
            *(f"- {text}" for text in by_kind.get("resolved", [])),
            "- (Why did it happen? Code, hardware or process, never a person.)",
            "",
            "## 5. Immediate actions",
            *(
                f"- {text}"
                for text in by_kind.get("action", [])
                + by_kind.get("mitigated", [])
                + by_kind.get("resolved", [])
            ),
            "",
            "## 6. Lessons and follow-ups",
            "- [ ] What monitor would have caught this sooner?",
            "- [ ] What code change stops it happening again?",
            "- [ ] Does the deploy process need to change?",
            "",
        ]
        return "\n".join(lines)

    async def list(self, include_closed: bool = False) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            query = select(incidents).order_by(incidents.c.number.desc())
            if not include_closed:
                query = query.where(incidents.c.status != "closed")
            return [self._out(r) for r in await conn.execute(query)]

    async def get(self, ref: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = await self._row(conn, ref)
            events = await conn.execute(
                select(incident_events)
                .where(incident_events.c.incident_id == row.id)
                .order_by(incident_events.c.id)
            )
            timeline = [
                {"at": e.at, "kind": e.kind, "actor": e.actor, "text": e.text} for e in events
            ]
        return {**self._out(row), "timeline": timeline}

    def _out(self, row: Any) -> dict[str, Any]:
        level = self.severities.levels[row.severity]
        data = {
            c: getattr(row, c)
            for c in (
                "id",
                "number",
                "title",
                "severity",
                "status",
                "owner",
                "users_affected",
                "recent_deploy",
                "opened_at",
                "acknowledged_at",
                "triaged_at",
                "mitigated_at",
                "resolved_at",
                "verified_at",
                "closed_at",
                "last_update_at",
            )
        }
        data["respond_within_minutes"] = level["respond_minutes"]
        data["severity_name"] = level["name"]
        return data

    async def _row(self, conn: AsyncConnection, ref: str) -> Any:
        query = select(incidents)
        query = (
            query.where(incidents.c.number == int(ref))
            if ref.isdigit()
            else query.where(incidents.c.id == ref)
        )
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound("incident_not_found", f"no incident {ref}")
        return row

    async def _log(
        self,
        conn: AsyncConnection,
        incident_id: str,
        kind: str,
        actor: str,
        text: str,
        at: int | None = None,
    ) -> None:
        await conn.execute(
            insert(incident_events).values(
                incident_id=incident_id, at=at or now_ms(), kind=kind, actor=actor, text=text
            )
        )
