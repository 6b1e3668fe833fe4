"""Errors the SDK raises."""

from __future__ import annotations


class ApiError(Exception):
    """The server refused a request; ``code`` is the stable machine-readable reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ConnectionLost(Exception):
    """The realtime connection closed for a reason that reconnecting will not fix."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason
