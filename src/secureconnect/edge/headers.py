"""Security headers on every HTTP answer.

The web client's scripts, styles and worker are all served by the platform itself, so its
Content-Security-Policy allows nothing else: no inline script, no third-party origin, no
framing (a privacy product must not run anyone else's code next to its keys). The status page
carries its own, allowing only its one inline style by hash. The API viewer at ``/docs`` is
served from the package too (``edge/apidocs.py``) and gets the same policy. HSTS only on answers
that went out over TLS (behind the ingress: the forwarded scheme), since a browser must not be
told to insist on HTTPS for a plain-HTTP installation.
"""

from __future__ import annotations

from starlette.types import Scope

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
HSTS = (b"strict-transport-security", b"max-age=31536000")


def with_security_headers(scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
    """Adds what an answer lacks of the headers above (a route may set its own CSP)."""
    present = {name.lower() for name, _ in headers}
    headers.extend(h for h in ALWAYS if h[0] not in present)
    if b"content-security-policy" not in present:
        headers.append((b"content-security-policy", CSP.encode()))
    if scope.get("scheme") == "https" and HSTS[0] not in present:
        headers.append(HSTS)
