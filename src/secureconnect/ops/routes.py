"""Health and metrics, served by every role.

``/healthz`` answers while the process is alive (Kubernetes restarts it otherwise); ``/readyz``
answers 200 only while the store and the bus are reachable (Kubernetes stops routing to it
otherwise, and the runbook's checks read it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from secureconnect import __version__
from secureconnect.edge.deps import get_services

router = APIRouter(tags=["ops"])
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    services = get_services(request)
    return {"status": "ok", "role": services.settings.role, "version": __version__}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    services = get_services(request)
    checks: dict[str, str] = {}
    for name, probe in (("store", services.db.ping), ("bus", services.bus.ping)):
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as error:  # any failure means "not ready"; the reason is shown
            checks[name] = f"failed: {type(error).__name__}"
    if services.draining:
        checks["draining"] = "shutting down"
    ready = all(v == "ok" for k, v in checks.items() if k != "draining") and not services.draining
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_services(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
