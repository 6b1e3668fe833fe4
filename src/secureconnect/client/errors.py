"""Errors the SDK raises; all are :class:`secureconnect.errors.SecureConnectError`, whose
docstring draws the whole tree."""

from __future__ import annotations

from secureconnect.errors import SecureConnectError


class ApiError(SecureConnectError):
    """The server refused a request; ``code`` is the stable machine-readable reason, and
    ``retry_after_s`` the wait a 429 asked for (0 otherwise)."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int = 0) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class ConnectionLost(SecureConnectError):
    """The realtime connection closed for a reason that reconnecting will not fix."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason
