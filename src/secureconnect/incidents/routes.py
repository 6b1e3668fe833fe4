"""The incident API: admin-only, plus Alertmanager's webhook (authenticated by a shared token)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from secureconnect.accounts.service import AuthContext
from secureconnect.edge.deps import authenticated, bearer_token, get_services
from secureconnect.errors import Forbidden, Unauthorized
from secureconnect.incidents.schemas import Close, OpenIncident, Severity, Step, Update

router = APIRouter(prefix="/v1/ops", tags=["incidents"])


async def admin(request: Request) -> AuthContext:
    caller = await authenticated(request)
    if caller.username not in get_services(request).settings.admins:
        raise Forbidden("not_admin", "only on-call admins may manage incidents")
    return caller


Admin = Annotated[AuthContext, Depends(admin)]


@router.post("/incidents", status_code=201)
async def open_incident(body: OpenIncident, caller: Admin, request: Request) -> Any:
    return await get_services(request).incidents.open(
        caller.username, body.title, body.severity, text=body.text
    )


@router.get("/incidents")
async def list_incidents(caller: Admin, request: Request, all: bool = False) -> Any:
    return await get_services(request).incidents.list(include_closed=all)


@router.get("/incidents/{ref}")
async def show_incident(ref: str, caller: Admin, request: Request) -> Any:
    return await get_services(request).incidents.get(ref)


@router.post("/incidents/{ref}/steps")
async def step(ref: str, body: Step, caller: Admin, request: Request) -> Any:
    return await get_services(request).incidents.advance(
        caller.username,
        ref,
        body.to,
        body.text,
        users_affected=body.users_affected,
        recent_deploy=body.recent_deploy,
    )


@router.post("/incidents/{ref}/updates")
async def add_update(ref: str, body: Update, caller: Admin, request: Request) -> Any:
    return await get_services(request).incidents.note(caller.username, ref, body.text)


@router.post("/incidents/{ref}/severity")
async def change_severity(ref: str, body: Severity, caller: Admin, request: Request) -> Any:
    return await get_services(request).incidents.set_severity(
        caller.username, ref, body.severity, body.text
    )


@router.post("/incidents/{ref}/close")
async def close(ref: str, body: Close, caller: Admin, request: Request) -> Any:
    return await get_services(request).incidents.close(caller.username, ref, body.override_reason)


@router.get("/incidents/{ref}/postmortem", response_class=PlainTextResponse)
async def postmortem(ref: str, caller: Admin, request: Request) -> str:
    return await get_services(request).incidents.postmortem(ref)


@router.post("/alertmanager")
async def alertmanager(payload: dict[str, Any], request: Request) -> Any:
    services = get_services(request)
    expected = services.settings.alert_webhook_token
    token = bearer_token(request.headers.get("authorization"))
    if expected is None or not hmac.compare_digest(token, expected.get_secret_value()):
        raise Unauthorized("invalid_token", "wrong or missing alert webhook token")
    return {"incidents": await services.incidents.alert(payload)}
