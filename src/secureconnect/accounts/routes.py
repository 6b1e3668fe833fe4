"""HTTP routes of the accounts API; the logic is in :mod:`secureconnect.accounts.service`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response, status

from secureconnect.accounts.schemas import (
    DeviceOut,
    LoginRequest,
    LoginResponse,
    MeResponse,
    RegisterRequest,
    SessionOut,
    UserOut,
)
from secureconnect.accounts.service import AuthContext
from secureconnect.edge.deps import Caller, get_services
from secureconnect.edge.logging import client_ip
from secureconnect.errors import Unauthorized
from secureconnect.store import StoreUnavailable

router = APIRouter(prefix="/v1", tags=["accounts"])
log = logging.getLogger("secureconnect.accounts")


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def register(body: RegisterRequest, request: Request) -> UserOut:
    user = await get_services(request).accounts.register(body.username, body.password)
    return UserOut(**user)


@router.post("/auth/login", response_model=LoginResponse)
async def login(body: LoginRequest, request: Request) -> LoginResponse:
    services = get_services(request)
    request.state.username = body.username.strip().lower()[:64]
    try:
        result = await services.accounts.login(
            body.username, body.password, body.device_name, body.device_id
        )
    except Unauthorized:
        services.metrics.failed_logins.inc()
        try:
            await services.guard.record_failed_login(client_ip(request.scope))
        except StoreUnavailable:  # counting must not turn "wrong password" into a 503
            log.warning("could not count a failed login")
        raise
    ctx = result.context
    return LoginResponse(
        token=result.token,
        expires_at=result.expires_at,
        user_id=ctx.user_id,
        username=ctx.username,
        device_id=ctx.device_id,
        session_id=ctx.session_id,
        new_device=result.new_device,
    )


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(caller: Caller, request: Request) -> Response:
    services = get_services(request)
    await services.accounts.logout(caller)
    await services.hub.announce_revoked(caller.user_id, [caller.session_id])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=MeResponse)
async def me(caller: Caller) -> MeResponse:
    return MeResponse(
        user_id=caller.user_id,
        username=caller.username,
        device_id=caller.device_id,
        session_id=caller.session_id,
    )


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(caller: Caller, request: Request) -> list[DeviceOut]:
    rows = await get_services(request).accounts.list_devices(caller.user_id)
    return [DeviceOut(**r, current=r["id"] == caller.device_id) for r in rows]


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_device(device_id: str, caller: Caller, request: Request) -> Response:
    services = get_services(request)
    live = await services.accounts.revoke_device(caller.user_id, device_id)
    await services.hub.announce_revoked(caller.user_id, live)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions", response_model=list[SessionOut])
async def list_sessions(caller: Caller, request: Request) -> list[SessionOut]:
    rows = await get_services(request).accounts.list_sessions(caller.user_id)
    return [SessionOut(**r, current=r["id"] == caller.session_id) for r in rows]


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_session(session_id: str, caller: Caller, request: Request) -> Response:
    services = get_services(request)
    await services.accounts.revoke_session(caller.user_id, session_id)
    await services.hub.announce_revoked(caller.user_id, [session_id])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


__all__ = ["AuthContext", "router"]
