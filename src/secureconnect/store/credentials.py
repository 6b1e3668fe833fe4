"""The service role's PostgreSQL password: changed by the database from a SCRAM verifier made on
the operator's machine, so that the new password itself never travels to the server or reaches
PostgreSQL's statement log (what ``psql``'s ``\\password`` does).

A verifier is PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802, RFC 7677):
``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, base64. Given one, ``ALTER ROLE
... PASSWORD`` stores it as it is.
"""

from __future__ import annotations

import base64
import os
import re

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
_B64 = r"[A-Za-z0-9+/]+={0,2}"
VERIFIER = re.compile(rf"^SCRAM-SHA-256\$[1-9][0-9]{{3,6}}:{_B64}\${_B64}:{_B64}$")


def scram_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    salt = salt if salt is not None else os.urandom(16)
    salted = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password.encode())
    client_key = _hmac(salted, b"Client Key")
    digest = hashes.Hash(hashes.SHA256())
    digest.update(client_key)
    stored_key = digest.finalize()
    server_key = _hmac(salted, b"Server Key")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def _hmac(key: bytes, message: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize()
