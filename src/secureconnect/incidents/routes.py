"""The incident API: admin-only, plus Alertmanager's webhook (authenticated by a shared token)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from secureconnect.edge.deps import Admin, ServicesDep, bearer_token
from secureconnect.errors import Unauthorized
from secureconnect.incidents import alerts
from secureconnect.incidents.html import CSP, render_status
from secureconnect.incidents.postmortem import draft as postmortem_draft
from secureconnect.incidents.schemas import (
    AlertsReceived,
    Close,
    Incident,
    IncidentSummary,
    OpenIncident,
    PublicUpdate,
    Severity,
    StatusPageOut,
    Step,
    Update,
)

router = APIRouter(prefix="/v1/ops", tags=["incidents"])


@router.post("/incidents", status_code=201, response_model=Incident)
async def open_incident(body: OpenIncident, caller: Admin, services: ServicesDep) -> Incident:
    return await services.incidents.open(caller.username, body.title, body.severity, text=body.text)


@router.get("/incidents", response_model=list[IncidentSummary])
async def list_incidents(
    caller: Admin, services: ServicesDep, all: bool = False
) -> list[IncidentSummary]:
    return await services.incidents.list(include_closed=all)


@router.get("/incidents/{ref}", response_model=Incident)
async def show_incident(ref: str, caller: Admin, services: ServicesDep) -> Incident:
    return await services.incidents.get(ref)


@router.post("/incidents/{ref}/steps", response_model=Incident)
async def step(ref: str, body: Step, caller: Admin, services: ServicesDep) -> Incident:
    return await services.incidents.advance(
        caller.username,
        ref,
        body.to,
        body.text,
        users_affected=body.users_affected,
        recent_deploy=body.recent_deploy,
    )


@router.post("/incidents/{ref}/updates", response_model=Incident)
async def add_update(ref: str, body: Update, caller: Admin, services: ServicesDep) -> Incident:
    return await services.incidents.note(caller.username, ref, body.text, body.kind)


@router.post("/incidents/{ref}/severity", response_model=Incident)
async def change_severity(
    ref: str, body: Severity, caller: Admin, services: ServicesDep
) -> Incident:
    return await services.incidents.set_severity(caller.username, ref, body.severity, body.text)


@router.post("/incidents/{ref}/close", response_model=Incident)
async def close(ref: str, body: Close, caller: Admin, services: ServicesDep) -> Incident:
    return await services.incidents.close(caller.username, ref, body.override_reason)


@router.get("/incidents/{ref}/postmortem", response_class=PlainTextResponse)
async def postmortem(ref: str, caller: Admin, services: ServicesDep) -> str:
    return await postmortem_draft(services.incidents, ref)


@router.post("/incidents/{ref}/public", response_model=StatusPageOut)
async def public_update(
    ref: str, body: PublicUpdate, caller: Admin, services: ServicesDep
) -> StatusPageOut:
    return await services.status.post(
        caller.username, ref, body.phase, body.text, body.components, body.template
    )


@router.post("/alertmanager", response_model=AlertsReceived)
async def alertmanager(
    payload: dict[str, Any], request: Request, services: ServicesDep
) -> AlertsReceived:
    expected = services.settings.alert_webhook_token
    token = bearer_token(request.headers.get("authorization"))
    if expected is None or not hmac.compare_digest(token, expected.get_secret_value()):
        raise Unauthorized("invalid_token", "wrong or missing alert webhook token")
    return AlertsReceived(incidents=await alerts.receive(services.incidents, payload))


public = APIRouter(tags=["status"])


@public.get("/v1/status", response_model=StatusPageOut)
async def status_json(services: ServicesDep) -> StatusPageOut:
    return await services.status.page()


@public.get("/status", response_class=HTMLResponse, include_in_schema=False)
async def status_html(services: ServicesDep) -> HTMLResponse:
    return HTMLResponse(
        render_status(await services.status.page()), headers={"Content-Security-Policy": CSP}
    )
