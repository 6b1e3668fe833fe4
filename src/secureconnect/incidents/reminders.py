"""The runbook's cadence for open incidents: the owner is reminded to post updates, and
stakeholders are told once when an incident has been open for long."""

from __future__ import annotations

from sqlalchemy import func, select

from secureconnect.incidents.models import incident_events
from secureconnect.incidents.models import incidents as incident_rows
from secureconnect.incidents.notify import Notifier
from secureconnect.incidents.service import IncidentService, log_event


async def remind(
    incidents: IncidentService, owner: Notifier, stakeholders: Notifier
) -> list[tuple[int, str]]:
    """The runbook's cadence (23.1, 23.10): no update for 15 minutes reminds the owner
    (again every 15 minutes); an incident open for 30 minutes tells stakeholders, once. The
    check runs under the incident's row lock, so several replicas never send it twice."""
    sent: list[tuple[int, str]] = []
    now = incidents.clock.now_ms()
    every_ms = incidents.severities.update_every_s * 1000
    after_ms = incidents.severities.stakeholders_after_s * 1000
    async with incidents.db.read() as conn:
        open_ids = list(
            (
                await conn.execute(
                    select(incident_rows.c.id).where(
                        incident_rows.c.status.in_(["open", "acknowledged", "triaged", "mitigated"])
                    )
                )
            ).scalars()
        )
    for incident_id in open_ids:
        notices: list[tuple[Notifier, str, str, str]] = []
        async with incidents.db.write() as conn:
            row = (
                await conn.execute(
                    select(incident_rows).where(incident_rows.c.id == incident_id).with_for_update()
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
                await log_event(incidents.clock, conn, incident_id, "reminder", "reminders", text)
                notices.append((owner, f"Update incident #{row.number}", text, "reminder"))
            if now - row.opened_at >= after_ms and "stakeholders_notified" not in kinds:
                text = (
                    f"Incident #{row.number} ({row.severity}: {row.title}) has been open "
                    f"for {(now - row.opened_at) // 60000} min; status {row.status}. "
                    f"Status page and updates follow."
                )
                await log_event(
                    incidents.clock, conn, incident_id, "stakeholders_notified", "reminders", text
                )
                notices.append(
                    (stakeholders, f"Incident #{row.number} ongoing", text, "stakeholders")
                )
        for notifier, subject, text, kind in notices:
            await notifier.send(subject, text)
            sent.append((row.number, kind))
    return sent
