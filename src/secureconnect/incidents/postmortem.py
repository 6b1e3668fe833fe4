"""The blameless post-mortem draft (runbook 23.11), written from the incident's own record."""

from __future__ import annotations

from datetime import UTC, datetime

from secureconnect.incidents.service import IncidentService


async def draft(incidents: IncidentService, ref: str) -> str:
    """A blameless report in the runbook's six sections (23.11), drafted from the incident's
    own record, ready to edit: facts filled in, judgement left to people."""
    i = await incidents.get(ref)
    end = i.resolved_at or i.closed_at or incidents.clock.now_ms()
    minutes = max(0, round((end - i.opened_at) / 60000))
    by_kind: dict[str, list[str]] = {}
    for event in i.timeline:
        by_kind.setdefault(event.kind, []).append(event.text)
    users = i.users_affected
    measured = (
        await incidents.platform.impact(i.opened_at, end) if incidents.platform is not None else []
    )
    lines = [
        f"# Post-mortem: incident #{i.number}: {i.title}",
        "",
        "## 1. Summary",
        f'{i.severity} ({i.severity_name}) incident "{i.title}", opened '
        f"{_stamp(i.opened_at)}, status {i.status}.",
        "",
        "## 2. Impact",
        f"- Users affected: {users if users is not None else 'not recorded at triage'}",
        f"- Duration: {minutes} minutes, from opening to "
        f"{'resolution' if i.resolved_at else 'now'}",
        f"- A deploy in the hour before: "
        f"{ {True: 'yes', False: 'no', None: 'not recorded'}[i.recent_deploy] }",
        *measured,
        "",
        "## 3. Timeline",
        *[f"- {_stamp(e.at)} {e.kind} ({e.actor}): {e.text}" for e in i.timeline],
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


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
