"""Every exception SecureConnect raises on purpose, in one tree under :class:`SecureConnectError`,
so that a caller of the SDK, the CLI or the services can catch "ours" in one clause.

On the server each :class:`Problem` names its refusal with a stable ``code`` that clients can
match; the edge turns it into ``{"error": {"code", "message"}}`` with the status below::

    SecureConnectError
    ├── Problem                   400  a refusal with a code and a message
    │   ├── Invalid               400  the request is wrong (names the field or the rule)
    │   ├── Unauthorized          401  no caller, or a token that is no longer valid
    │   ├── Forbidden             403  a known caller who may not do this
    │   ├── NotFound              404  no such thing, or not one the caller may see
    │   ├── Conflict              409  the state does not allow it (already exists, closed)
    │   ├── TooLarge              413  over a size limit from the settings
    │   ├── TooManyRequests       429  over a limit; ``retry_after_s`` says when to try again
    │   ├── Unavailable           503  a dependency is down; try again later
    │   │   └── store.StoreUnavailable  the database (down, or its pool exhausted)
    │   └── video.janus.JanusError  400 or 503  the SFU refused (bad SDP) or is away
    ├── crypto.primitives.CryptoError   a message or key that does not verify or decrypt
    └── the SDK's (secureconnect.client):
        ├── client.errors.ApiError            the server refused: ``status``, ``code``, ``message``
        ├── client.errors.ConnectionLost      the realtime stream closed for good (close code)
        ├── client.devicestore.DeviceStoreError  the device's key file cannot be read
        ├── client.secure.MessageTooLong         refused before sending: over the server's limit
        ├── client.secure.CannotChangeMessage    an edit or deletion of another's or too old
        └── client.secure.IdentityChangedError   a contact's keys changed (compare safety numbers)
"""

from __future__ import annotations


class SecureConnectError(Exception):
    """The base of every exception above."""


class Problem(SecureConnectError):
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


class TooManyRequests(Problem):
    """Answered with a ``Retry-After`` header, so that clients wait rather than guess."""

    status = 429

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(code, message)
        self.retry_after_s = max(1, retry_after_s)


class Unavailable(Problem):
    status = 503
