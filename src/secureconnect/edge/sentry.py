"""Unexpected errors reported to Sentry when ``SECURECONNECT_SENTRY_DSN`` is set (issue 15).

What goes: the error, its stack (without local variables), the route, the release and the role.
What never goes: request bodies (messages are ciphertext, but passwords and codes are not),
headers that carry credentials, query strings, cookies, or any variable's value."""

from __future__ import annotations

import logging
from typing import Any

from secureconnect.config import Settings

SECRET_HEADERS = {"authorization", "cookie", "x-forwarded-for", "x-real-ip"}


def scrub(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("data", "cookies", "query_string", "env"):
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                k: v for k, v in headers.items() if k.lower() not in SECRET_HEADERS
            }
    event.pop("user", None)
    return event


def start_sentry(settings: Settings) -> bool:
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        release=settings.effective_release,
        environment=settings.role,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub,  # type: ignore[arg-type]
        # Our own log.error lines ("database unreachable", ...) are events; info is context.
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        traces_sample_rate=0.0,
    )
    return True
