"""Alertmanager's webhook: a firing alert opens an incident, or is added to the open one for the
same alert; a resolved alert is written on its timeline. An alert whose firing never got through
(the store it would be written to was down, so every delivery failed until after it resolved)
still opens its incident when its resolution arrives: an outage must leave a record. Alertmanager
sends that resolution only beside an alert of its group that still fires, so the rules keep the
alerts that stop this webhook firing for a while after recovery (decision 0011). Nothing is
closed automatically: a person closes an incident, after the verification window."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select

from secureconnect.incidents.models import incidents as incident_rows
from secureconnect.incidents.service import IncidentService


async def receive(incidents: IncidentService, payload: dict[str, Any]) -> list[int]:
    """Alertmanager's webhook: a firing alert opens an incident (or joins the open one for
    the same alert); a resolved one is written on its timeline."""
    touched = []
    for item in payload.get("alerts", []):
        labels = item.get("labels", {})
        name = str(labels.get("alertname", "unnamed alert"))
        severity = str(labels.get("severity", "P3"))
        severity = severity if severity in incidents.severities.levels else "P3"
        summary = str(item.get("annotations", {}).get("summary") or name)
        status = item.get("status", "firing")
        async with incidents.db.read() as conn:
            current = (
                await conn.execute(
                    select(incident_rows.c.number)
                    .where(
                        (incident_rows.c.alert_key == name) & (incident_rows.c.status != "closed")
                    )
                    .order_by(incident_rows.c.number.desc())
                    .limit(1)
                )
            ).scalar()
        began = _alert_time(item.get("startsAt"))
        missed = (
            current is None
            and status == "resolved"
            and began is not None
            and not await _recorded_since(incidents, name, began)
        )
        if missed or (current is None and status == "firing"):
            # Stamped when the alert began: if the store was down then, Alertmanager's retry
            # delivers it late (or only its resolution gets through), and the timeline must
            # still say when the trouble started.
            opened = await incidents.open(
                "alertmanager",
                summary,
                severity,
                alert_key=name,
                text=f"alert {name} firing",
                since=began,
            )
            if missed:
                await incidents.note(
                    "alertmanager", str(opened.number), f"alert {name} resolved", "alert_resolved"
                )
            touched.append(opened.number)
        elif current is not None:
            kind = "alert_resolved" if status == "resolved" else "alert_firing"
            await incidents.note("alertmanager", str(current), f"alert {name} {status}", kind)
            touched.append(current)
    return touched


async def _recorded_since(incidents: IncidentService, name: str, began: int) -> bool:
    """Whether an incident for this alert was opened since it began firing (one a person has
    closed since included): then its resolution is no news."""
    async with incidents.db.read() as conn:
        found = (
            await conn.execute(
                select(incident_rows.c.number)
                .where((incident_rows.c.alert_key == name) & (incident_rows.c.opened_at >= began))
                .limit(1)
            )
        ).scalar()
    return found is not None


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
