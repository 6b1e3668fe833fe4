"""Health and metrics, served by every role.

``/healthz`` answers while the process is alive (Kubernetes restarts it otherwise); ``/readyz``
answers 200 only while the store and the bus are reachable (Kubernetes stops routing to it
otherwise, and the runbook's checks read it).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from secureconnect import __version__
from secureconnect.edge.deps import Admin, ServicesDep
from secureconnect.ops.schemas import (
    Deploy,
    Health,
    NewStorePassword,
    PoolUse,
    Readiness,
    SetDurability,
    StorePasswordChanged,
    StorePasswordChecked,
    StorePasswordProbe,
    StoreReport,
)
from secureconnect.services import Services, reachable

router = APIRouter(tags=["ops"])
log = logging.getLogger("secureconnect.ops")


@router.get("/healthz", response_model=Health)
async def healthz(services: ServicesDep) -> Health:
    return Health(status="ok", role=services.settings.role, version=__version__)


async def dependency_checks(services: Services) -> dict[str, str]:
    """``ok`` or ``failed: <reason>`` for the store and the bus, and for video-service its SFU.

    Only video-service is unready without Janus: in the embedded ``all`` role chat must stay up
    while Janus restarts (``secureconnect_janus_up`` says it is away)."""
    checks = await reachable(services.db, services.bus)
    if services.settings.role == "video-service":
        state = services.sfu.state if services.sfu is not None else "disabled"
        checks["sfu"] = "ok" if state == "up" else f"failed: {state}"
    return checks


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: see the checks"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    checks = await dependency_checks(services)
    if services.draining:
        checks["draining"] = "shutting down"
    ready = all(v == "ok" for k, v in checks.items() if k != "draining") and not services.draining
    answer = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(answer.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    # Readiness as a metric, so that Prometheus can alert on "the store is unreachable" while
    # the process itself still answers (runbook 23.7).
    for check, result in (await dependency_checks(services)).items():
        services.metrics.ready.labels(check).set(1 if result == "ok" else 0)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/ops/deploys", response_model=list[Deploy])
async def deploys(
    caller: Admin, services: ServicesDep, since_s: int = Query(3600, ge=60, le=90 * 86400)
) -> list[Deploy]:
    """Releases started recently: the runbook's "was there a deploy in the last hour?"."""
    return await services.deploys.since(since_s)


@router.get("/v1/ops/store", response_model=StoreReport)
async def store(caller: Admin, services: ServicesDep) -> StoreReport:
    """Round trip, primary or standby, and the durability in force (runbook 23.7)."""
    stats = services.db.pool_stats()
    return StoreReport(
        **await services.db.describe(),
        pool=PoolUse(in_use=stats.in_use, max_open=stats.max_open),
        errors=stats.errors,
    )


@router.post("/v1/ops/store/durability", response_model=StoreReport)
async def set_durability(body: SetDurability, caller: Admin, services: ServicesDep) -> StoreReport:
    """Switches commit durability on the primary (``secureconnect oncall durability``)."""
    await services.db.set_durability(body.mode)
    log.warning(
        "store durability changed", extra={"fields": {"mode": body.mode, "actor": caller.username}}
    )
    return await store(caller, services)


@router.post("/v1/ops/store/password", response_model=StorePasswordChanged)
async def change_store_password(
    body: NewStorePassword, caller: Admin, services: ServicesDep
) -> StorePasswordChanged:
    """The service role's new PostgreSQL password, from its SCRAM verifier; the services must
    then restart with the new URL (``secureconnect oncall rotate-db-password`` does it all)."""
    role = await services.db.set_own_password(body.verifier)
    log.warning(
        "store password changed", extra={"fields": {"role": role, "actor": caller.username}}
    )
    return StorePasswordChanged(role=role)


@router.post("/v1/ops/store/password/check", response_model=StorePasswordChecked)
async def check_store_password(
    body: StorePasswordProbe, caller: Admin, services: ServicesDep
) -> StorePasswordChecked:
    """Whether PostgreSQL still accepts a password for the service role (the old one must not)."""
    return StorePasswordChecked(accepted=await services.db.accepts_password(body.password))
