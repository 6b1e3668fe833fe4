"""HTTP routes of the accounts API; the logic is in :mod:`secureconnect.accounts.service`."""

from __future__ import annotations

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
from secureconnect.accounts.service import AuthContext, normalise_username
from secureconnect.edge.deps import Caller, ServicesDep
from secureconnect.edge.logging import client_ip

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def register(body: RegisterRequest, services: ServicesDep) -> UserOut:
    user = await services.accounts.register(body.username, body.password)
    return UserOut(**user)


@router.post("/auth/login", response_model=LoginResponse)
async def login(body: LoginRequest, request: Request, services: ServicesDep) -> LoginResponse:
    request.state.username = normalise_username(body.username)[:64]
    result = await services.accounts.login(
        body.username, body.password, body.device_name, body.device_id, client_ip(request.scope)
    )
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
async def logout(caller: Caller, services: ServicesDep) -> Response:
    await services.accounts.logout(caller)
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
async def list_devices(caller: Caller, services: ServicesDep) -> list[DeviceOut]:
    rows = await services.accounts.list_devices(caller.user_id)
    return [DeviceOut(**r, current=r["id"] == caller.device_id) for r in rows]


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_device(device_id: str, caller: Caller, services: ServicesDep) -> Response:
    await services.accounts.revoke_device(caller.user_id, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions", response_model=list[SessionOut])
async def list_sessions(caller: Caller, services: ServicesDep) -> list[SessionOut]:
    rows = await services.accounts.list_sessions(caller.user_id)
    return [SessionOut(**r, current=r["id"] == caller.session_id) for r in rows]


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_session(session_id: str, caller: Caller, services: ServicesDep) -> Response:
    await services.accounts.revoke_session(caller.user_id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


__all__ = ["AuthContext", "router"]
