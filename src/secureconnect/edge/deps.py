"""FastAPI dependencies every role shares: the service container and the authenticated caller.

A route declares what it needs by type: ``services: ServicesDep``, ``caller: Caller`` or
``caller: Admin``; nothing else reaches into ``app.state``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from secureconnect.accounts.service import AuthContext
from secureconnect.errors import Forbidden, Unauthorized
from secureconnect.services import Services, services_of


def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing_token", "send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing_token", "send 'Authorization: Bearer <token>'")
    return token.strip()


# What a session that must change its password may still do.
WHILE_MUST_CHANGE = ("/v1/auth/password", "/v1/auth/logout", "/v1/me")


async def authenticated(request: Request, services: ServicesDep) -> AuthContext:
    token = bearer_token(request.headers.get("authorization"))
    ctx = await services.accounts.authenticate(token)
    request.state.username = ctx.username
    if services.limits is not None:
        await services.limits.user(ctx.user_id)
    if ctx.must_change_password and request.url.path not in WHILE_MUST_CHANGE:
        raise Forbidden(
            "must_change_password",
            "your administrator asks you to choose a new password before anything else",
        )
    return ctx


Caller = Annotated[AuthContext, Depends(authenticated)]


async def admin(caller: Caller, services: ServicesDep) -> AuthContext:
    """Only the on-call admins (``SECURECONNECT_ADMINS``) may use the ops API."""
    if caller.username not in services.settings.admins:
        raise Forbidden("not_admin", "only on-call admins may use the ops API")
    totp = services.accounts.totp
    if services.settings.require_totp_for_admins and (
        totp is None or not await totp.enabled(caller.user_id)
    ):
        raise Forbidden(
            "totp_required_for_admins",
            "turn on two-step verification to use the ops API (secureconnect totp enable)",
        )
    return caller


Admin = Annotated[AuthContext, Depends(admin)]
