"""The incident API: admin-only, plus Alertmanager's webhook (authenticated by a shared token)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from secureconnect.edge.deps import Admin, bearer_token, get_services
from secureconnect.errors import Unauthorized
from secureconnect.incidents.schemas import (
    Close,
    OpenIncident,
    PublicUpdate,
    Severity,
    Step,
    Update,
)

router = APIRouter(prefix="/v1/ops", tags=["incidents"])


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
    return await get_services(request).incidents.note(caller.username, ref, body.text, body.kind)


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


@router.post("/incidents/{ref}/public")
async def public_update(ref: str, body: PublicUpdate, caller: Admin, request: Request) -> Any:
    return await get_services(request).status.post(
        caller.username, ref, body.phase, body.text, body.components, body.template
    )


@router.post("/alertmanager")
async def alertmanager(payload: dict[str, Any], request: Request) -> Any:
    services = get_services(request)
    expected = services.settings.alert_webhook_token
    token = bearer_token(request.headers.get("authorization"))
    if expected is None or not hmac.compare_digest(token, expected.get_secret_value()):
        raise Unauthorized("invalid_token", "wrong or missing alert webhook token")
    return {"incidents": await services.incidents.alert(payload)}


public = APIRouter(tags=["status"])


@public.get("/v1/status")
async def status_json(request: Request) -> Any:
    return await get_services(request).status.page()


@public.get("/status", response_class=HTMLResponse, include_in_schema=False)
async def status_html(request: Request) -> HTMLResponse:
    return HTMLResponse(render_status(await get_services(request).status.page()))


def render_status(page: dict[str, Any]) -> str:
    """Plain HTML and CSS: readable on a phone, works with no JavaScript."""

    def when(ms: int | None) -> str:
        return (
            ""
            if ms is None
            else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        )

    def incident(i: dict[str, Any]) -> str:
        updates = "".join(
            f"<li><b>{escape(u['phase'].capitalize())}</b> "
            f"<time>{when(u['at'])}</time><br>{escape(u['text'])}</li>"
            for u in i["updates"]
        )
        return f"<article><h3>{escape(i['title'])}</h3><ul>{updates}</ul></article>"

    overall = page["overall"]
    rows = "".join(
        f"<li class={c['colour']}><span>{escape(c['name'])}</span>"
        f"<span>{escape(c['state'].replace('_', ' '))}</span></li>"
        for c in page["components"]
    )
    active = "".join(incident(i) for i in page["incidents"]) or "<p>No open incidents.</p>"
    history = "".join(incident(i) for i in page["history"]) or "<p>No incidents in 90 days.</p>"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60"><title>SecureConnect status</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;
color:#1b2230}}.banner{{padding:1rem;border-radius:10px;color:#fff;font-weight:700}}
.green{{--c:#137333}}.yellow{{--c:#b06000}}.red{{--c:#b42318}}.banner.green{{background:#137333}}
.banner.yellow{{background:#b06000}}.banner.red{{background:#b42318}}ul.components{{padding:0}}
ul.components li{{list-style:none;display:flex;justify-content:space-between;padding:.6rem 0;
border-bottom:1px solid #e3e7ef}}ul.components li span:last-child{{color:var(--c);
font-weight:600}}article{{border-left:3px solid #c7ccd6;padding-left:1rem;margin:1rem 0}}
time{{color:#687386;font-size:.9rem}}</style></head><body>
<h1>SecureConnect status</h1>
<p class="banner {overall["colour"]}" id="overall">{escape(overall["text"])}</p>
<ul class="components">{rows}</ul>
<h2>Current incidents</h2>{active}
<h2>Past 90 days</h2>{history}
</body></html>"""
