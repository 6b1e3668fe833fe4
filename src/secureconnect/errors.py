"""Errors the services raise. Each names its problem with a stable ``code`` that clients can match;
the edge turns them into ``{"error": {"code", "message"}}`` with the status below.
"""

from __future__ import annotations


class Problem(Exception):
    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Invalid(Problem):
    status = 400


class Unauthorized(Problem):
    status = 401


class Forbidden(Problem):
    status = 403


class NotFound(Problem):
    status = 404


class Conflict(Problem):
    status = 409


class TooLarge(Problem):
    status = 413


class Unavailable(Problem):
    status = 503
