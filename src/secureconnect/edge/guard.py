"""Applies the guard's deny list and emergency rate limit before any route runs.

Blocked addresses get 403 ``ip_blocked`` everywhere but the probes (kubelet and Prometheus must
still see the replica). The emergency limit covers the API (``/v1/``) but not the on-call's own
tools (``/v1/ops/``) or the status page, so the switch can always be turned back off.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from secureconnect.edge.errors import send_error
from secureconnect.edge.logging import client_ip
from secureconnect.guard.limits import RateLimited, RateLimits
from secureconnect.guard.service import GuardService

PROBES = ("/healthz", "/readyz", "/metrics")
UNLIMITED = ("/v1/ops/", "/v1/status")


class GuardMiddleware:
    def __init__(self, app: ASGIApp, guard: GuardService, limits: RateLimits | None = None) -> None:
        """``limits``: the normal-mode limit per address on unauthenticated API requests (the
        per-user one is applied once the caller is known, in ``edge.deps``)."""
        self.app = app
        self.guard = guard
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or await admitted(
            scope, send, self.guard, self.limits
        ):
            await self.app(scope, receive, send)


async def admitted(
    scope: Scope, send: Send, guard: GuardService, limits: RateLimits | None = None
) -> bool:
    """Whether the guard lets this request or WebSocket upgrade through; if not, it has been
    refused (403 ``ip_blocked`` or 429 ``rate_limited``, a close before accept on a socket)."""
    path: str = scope["path"]
    ip = client_ip(scope)
    if path not in PROBES and guard.blocked(ip):
        await _refuse(scope, send, 403, "ip_blocked", "requests from this address are blocked")
        return False
    if path.startswith("/v1/") and not path.startswith(UNLIMITED):
        wait = guard.rate_limited(ip)
        if wait:
            await _refuse(
                scope,
                send,
                429,
                "rate_limited",
                "emergency rate limit in force: "
                f"{guard.limiter.per_minute} request(s) a minute; retry in {wait} s",
                retry_after=wait,
            )
            return False
        # WebSocket upgrades are not counted: a whole office reconnecting after a restart
        # must not be refused; their frames have a limit of their own (realtime).
        if limits is not None and scope["type"] == "http" and not _has_bearer(scope):
            try:
                await limits.address(ip)
            except RateLimited as limited:
                await _refuse(
                    scope, send, 429, limited.code, limited.message, limited.retry_after_s
                )
                return False
    return True


def _has_bearer(scope: Scope) -> bool:
    return any(k == b"authorization" for k, _ in scope.get("headers") or [])


async def _refuse(
    scope: Scope, send: Send, status: int, code: str, message: str, retry_after: int = 0
) -> None:
    if scope["type"] == "websocket":
        # Refusing before accept makes the server answer the upgrade with HTTP 403.
        await send({"type": "websocket.close", "code": 4403 if status == 403 else 4429})
        return
    await send_error(
        send,
        status,
        code,
        message,
        [(b"retry-after", str(retry_after).encode())] if retry_after else [],
    )
