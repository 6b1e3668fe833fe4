"""Admin API of the guard: what the security diagnosis reads and the switches it offers."""

from __future__ import annotations

from fastapi import APIRouter, Query

from secureconnect.edge.deps import Admin, ServicesDep
from secureconnect.guard.schemas import (
    Block,
    Blocked,
    Lift,
    Lifted,
    ModeSet,
    RateLimit,
    SecurityReport,
)

router = APIRouter(prefix="/v1/ops", tags=["guard"])


@router.get("/security", response_model=SecurityReport)
async def security(
    caller: Admin, services: ServicesDep, window_s: int = Query(900, ge=60, le=86400)
) -> SecurityReport:
    return await services.guard.report(window_s)


@router.post("/blocks", status_code=201, response_model=Blocked)
async def block(body: Block, caller: Admin, services: ServicesDep) -> Blocked:
    return await services.guard.block(caller.username, body.network, body.reason, body.expires_in_s)


@router.post("/blocks/lift", response_model=Lifted)
async def lift(body: Lift, caller: Admin, services: ServicesDep) -> Lifted:
    return await services.guard.lift(caller.username, body.network)


@router.put("/rate-limit", response_model=ModeSet)
async def rate_limit(body: RateLimit, caller: Admin, services: ServicesDep) -> ModeSet:
    return await services.guard.set_mode(caller.username, body.mode)
