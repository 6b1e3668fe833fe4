"""Request and response shapes of the incident API (the SDK returns the response ones too)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict


class OpenIncident(Strict):
    title: str = Field(min_length=1, max_length=300)
    severity: str = Field(min_length=2, max_length=4)
    text: str = Field("", max_length=4000)


class Step(Strict):
    to: Literal["acknowledged", "triaged", "mitigated", "resolved"]
    text: str = Field("", max_length=4000)
    users_affected: int | None = Field(None, ge=0)
    recent_deploy: bool | None = None


class Update(Strict):
    text: str = Field(min_length=1, max_length=4000)
    kind: Literal["update", "action"] = Field(
        "update", description="action: something done through the tooling (scale, block, ...)"
    )


class Severity(Strict):
    severity: str = Field(min_length=2, max_length=4)
    text: str = Field("", max_length=4000)


class Close(Strict):
    override_reason: str | None = Field(None, min_length=3, max_length=1000)


class PublicUpdate(Strict):
    phase: str | None = Field(None, max_length=16)
    text: str | None = Field(None, max_length=2000)
    components: dict[str, str] = Field(default_factory=dict)
    template: str | None = Field(None, description="red, yellow or green: the runbook's messages")


class TimelineEntry(BaseModel):
    at: int
    kind: str = Field(description="opened, acknowledged, ..., update, action, reminder, closed")
    actor: str
    text: str


class IncidentSummary(BaseModel):
    """An incident as listed: its state and every stamp, without the timeline."""

    id: str
    number: int
    title: str
    severity: str
    severity_name: str
    respond_within_minutes: int
    status: str
    owner: str | None
    users_affected: int | None
    recent_deploy: bool | None
    opened_at: int
    acknowledged_at: int | None
    triaged_at: int | None
    mitigated_at: int | None
    resolved_at: int | None
    verified_at: int | None  # None when closed by an override, or not closed yet
    closed_at: int | None
    last_update_at: int


class Incident(IncidentSummary):
    timeline: list[TimelineEntry]


class AlertsReceived(BaseModel):
    incidents: list[int] = Field(description="the incidents the alerts opened or were added to")


class PublicNote(BaseModel):
    at: int
    phase: str  # investigating | identified | monitoring | resolved
    text: str


class PublicIncident(BaseModel):
    number: int
    title: str
    severity: str
    active: bool
    opened_at: int
    resolved_at: int | None
    updates: list[PublicNote] = Field(description="newest first")


class ComponentState(BaseModel):
    name: str
    state: str  # operational | degraded | partial_outage | major_outage | not_available
    colour: str  # green | yellow | red | grey (not available: the function does not exist yet)


class Overall(BaseModel):
    state: str
    colour: str
    text: str


class StatusPageOut(BaseModel):
    """The public status page: never more than what is true (health and posted updates)."""

    overall: Overall
    components: list[ComponentState]
    incidents: list[PublicIncident] = Field(description="active, with a public update")
    history: list[PublicIncident] = Field(description="the last 90 days")
