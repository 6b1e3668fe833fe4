"""FastAPI dependencies every role shares: the service container and the authenticated caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from secureconnect.accounts.service import AuthContext
from secureconnect.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from secureconnect.app import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing_token", "send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing_token", "send 'Authorization: Bearer <token>'")
    return token.strip()


async def authenticated(request: Request) -> AuthContext:
    token = bearer_token(request.headers.get("authorization"))
    ctx = await get_services(request).accounts.authenticate(token)
    request.state.username = ctx.username
    return ctx


Caller = Annotated[AuthContext, Depends(authenticated)]


async def admin(request: Request) -> AuthContext:
    """Only the on-call admins (``SECURECONNECT_ADMINS``) may use the ops API."""
    caller = await authenticated(request)
    if caller.username not in get_services(request).settings.admins:
        raise Forbidden("not_admin", "only on-call admins may use the ops API")
    return caller


Admin = Annotated[AuthContext, Depends(admin)]
