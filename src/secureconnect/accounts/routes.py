"""HTTP routes of the accounts API; the logic is in :mod:`secureconnect.accounts.service`."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request, Response, status

from secureconnect.accounts.email import EmailService
from secureconnect.accounts.schemas import (
    CompromiseOut,
    CompromiseRequest,
    DeviceOut,
    EmailOut,
    EmailRequest,
    EmailVerifyRequest,
    LoginRequest,
    LoginResponse,
    MailingOut,
    MailingRequest,
    MeResponse,
    PasswordChanged,
    PasswordChangeRequest,
    RecoveryCodesOut,
    RegisterRequest,
    SessionOut,
    TotpConfirmRequest,
    TotpDisableRequest,
    TotpEnrolmentOut,
    TotpStatusOut,
    UserOut,
)
from secureconnect.accounts.service import AuthContext, normalise_username
from secureconnect.accounts.totp import TotpService
from secureconnect.edge.deps import Admin, Caller, ServicesDep
from secureconnect.edge.logging import client_ip
from secureconnect.errors import Invalid, NotFound

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def register(body: RegisterRequest, request: Request, services: ServicesDep) -> UserOut:
    if services.limits is not None:
        await services.limits.registration(client_ip(request.scope))
    user = await services.accounts.register(body.username, body.password)
    return UserOut(**user)


@router.post("/auth/login", response_model=LoginResponse)
async def login(body: LoginRequest, request: Request, services: ServicesDep) -> LoginResponse:
    request.state.username = normalise_username(body.username)[:64]
    result = await services.accounts.login(
        body.username,
        body.password,
        body.device_name,
        body.device_id,
        client_ip(request.scope),
        body.totp_code,
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
        must_change_password=ctx.must_change_password,
    )


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(caller: Caller, services: ServicesDep) -> Response:
    await services.accounts.logout(caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/password", response_model=PasswordChanged)
async def change_password(
    body: PasswordChangeRequest, request: Request, caller: Caller, services: ServicesDep
) -> PasswordChanged:
    revoked = await services.accounts.change_password(
        caller,
        body.current_password,
        body.new_password,
        client_ip(request.scope),
        body.keep_other_sessions,
    )
    return PasswordChanged(revoked_sessions=revoked)


@router.get("/me", response_model=MeResponse)
async def me(caller: Caller, services: ServicesDep) -> MeResponse:
    return MeResponse(
        user_id=caller.user_id,
        username=caller.username,
        device_id=caller.device_id,
        session_id=caller.session_id,
        max_message_bytes=services.settings.max_message_bytes,
        edit_window_s=services.settings.edit_window_s,
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


def _totp(services: ServicesDep) -> TotpService:
    if services.accounts.totp is None:  # a role without logins
        raise NotFound("not_found", "two-step verification is on the api-gateway")
    return services.accounts.totp


@router.get("/auth/totp", response_model=TotpStatusOut)
async def totp_status(caller: Caller, services: ServicesDep) -> TotpStatusOut:
    status_ = await _totp(services).status(caller.user_id)
    return TotpStatusOut(enabled=status_.enabled, recovery_codes_left=status_.recovery_codes_left)


@router.post("/auth/totp", response_model=TotpEnrolmentOut)
async def totp_begin(caller: Caller, services: ServicesDep) -> TotpEnrolmentOut:
    enrolment = await _totp(services).begin(caller.user_id, caller.username)
    return TotpEnrolmentOut(
        secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri, qr_svg=enrolment.qr_svg
    )


@router.post("/auth/totp/confirm", response_model=RecoveryCodesOut)
async def totp_confirm(
    body: TotpConfirmRequest, caller: Caller, services: ServicesDep
) -> RecoveryCodesOut:
    return RecoveryCodesOut(recovery_codes=await services.accounts.enable_totp(caller, body.code))


@router.post("/auth/totp/disable", status_code=status.HTTP_204_NO_CONTENT)
async def totp_disable(
    body: TotpDisableRequest, request: Request, caller: Caller, services: ServicesDep
) -> Response:
    _totp(services)
    await services.accounts.disable_totp(caller, body.password, body.code, client_ip(request.scope))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _email(services: ServicesDep) -> EmailService:
    if services.accounts.email is None:  # pragma: no cover - every role has one
        raise NotFound("not_found", "no email here")
    return services.accounts.email


@router.get("/me/email", response_model=EmailOut)
async def email_state(caller: Caller, services: ServicesDep) -> EmailOut:
    state = await _email(services).state(caller.user_id)
    return EmailOut(email=state.email, pending=state.pending)


@router.put("/me/email", status_code=status.HTTP_202_ACCEPTED, response_model=EmailOut)
async def email_begin(body: EmailRequest, caller: Caller, services: ServicesDep) -> EmailOut:
    await _email(services).begin(caller.user_id, caller.username, body.email)
    state = await _email(services).state(caller.user_id)
    return EmailOut(email=state.email, pending=state.pending)


@router.post("/me/email/verify", response_model=EmailOut)
async def email_verify(body: EmailVerifyRequest, caller: Caller, services: ServicesDep) -> EmailOut:
    await _email(services).verify(caller.user_id, body.code)
    state = await _email(services).state(caller.user_id)
    return EmailOut(email=state.email, pending=state.pending)


@router.delete("/me/email", status_code=status.HTTP_204_NO_CONTENT)
async def email_remove(caller: Caller, services: ServicesDep) -> Response:
    await _email(services).remove(caller.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/ops/compromise", response_model=CompromiseOut, tags=["ops"])
async def compromise(
    body: CompromiseRequest, caller: Admin, services: ServicesDep
) -> CompromiseOut:
    if body.all == bool(body.usernames):
        raise Invalid("invalid_scope", "name the users, or say all, not both")
    report = await services.accounts.compromise(
        caller.username, None if body.all else body.usernames, body.reason, body.dry_run
    )
    return CompromiseOut(**dataclasses.asdict(report))


@router.post("/ops/notify-users", response_model=MailingOut, tags=["ops"])
async def notify_users(body: MailingRequest, caller: Admin, services: ServicesDep) -> MailingOut:
    progress = await _email(services).mail_everyone(
        body.subject, body.body, body.batch, body.dry_run
    )
    return MailingOut(**dataclasses.asdict(progress))


__all__ = ["AuthContext", "router"]
