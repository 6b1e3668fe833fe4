"""Request shapes of the incident API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
