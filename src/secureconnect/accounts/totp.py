"""The second factor: TOTP (RFC 6238, through pyotp) and single-use recovery codes.

What an authenticator app and Keycloak or GitHub users expect: enrolment shows a QR code (and
the secret for typing in), the first code confirms it, codes of the step before and after are
accepted for clock drift, a code that worked once never works again (the last accepted step is
stored), and ten recovery codes are shown once, stored as hashes, each good for one login.

The TOTP secret must be readable by the server to check codes, so it is encrypted at rest with
the server's secret key (AES-256-GCM, bound to its user): a copy of the database alone gives no
codes. Recovery codes carry 50 random bits each, so a SHA-256 of them is enough (a password
needs argon2 because people choose them; these are not chosen).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pyotp
import segno
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.accounts.models import recovery_codes, totp_secrets
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Conflict, Invalid
from secureconnect.store import Database

STEP_S = 30
DIGITS = 6
DRIFT_STEPS = 1  # the step before and after: phones whose clock is up to 30 s off
RECOVERY_CODES = 10
ISSUER = "SecureConnect"


class SecretBox:
    """AES-256-GCM with a random nonce; the context (the user id) is bound as associated data,
    so a secret copied to another user's row does not open."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the server secret key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, context.encode())
        return base64.b64encode(sealed).decode()

    def open(self, sealed: str, context: str) -> bytes:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], context.encode())


def server_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key (base64 of 32 bytes: every replica must have the same one), or one
    made on first start and kept beside the embedded database, readable by this user only."""
    if configured:
        key = base64.b64decode(configured)
        if len(key) != 32:
            raise ValueError("SECURECONNECT_SECRET_KEY must be the base64 of 32 bytes")
        return key
    path = data_dir / "server-secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(secrets.token_bytes(32)))
    return base64.b64decode(path.read_bytes())


@dataclass(frozen=True)
class Enrolment:
    secret: str  # base32, for typing into an app that cannot scan
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class TotpStatus:
    enabled: bool
    recovery_codes_left: int


def _code_hash(code: str) -> str:
    return hashlib.sha256(b"recovery:" + code.encode()).hexdigest()


def normalise_code(raw: str) -> str:
    return "".join(ch for ch in raw.lower() if ch.isalnum())


def _new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]  # 50 bits
    return f"{raw[:5]}-{raw[5:]}"


def matching_step(secret: str, code: str, now_s: int, after_step: int) -> int | None:
    """The time step whose code this is (within the drift window), if it is later than
    ``after_step``, the last one accepted; else None."""
    if not (len(code) == DIGITS and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)
    now_step = now_s // STEP_S
    for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
        if step > after_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


class TotpService:
    def __init__(self, db: Database, box: SecretBox, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.box = box
        self.clock = clock

    async def status(self, user_id: str) -> TotpStatus:
        async with self.db.read() as conn:
            confirmed = await conn.scalar(
                select(totp_secrets.c.confirmed_at).where(totp_secrets.c.user_id == user_id)
            )
            left = len(
                (
                    await conn.execute(
                        select(recovery_codes.c.code_hash).where(
                            and_(
                                recovery_codes.c.user_id == user_id,
                                recovery_codes.c.used_at.is_(None),
                            )
                        )
                    )
                ).all()
            )
        return TotpStatus(enabled=confirmed is not None, recovery_codes_left=left)

    async def enabled(self, user_id: str) -> bool:
        """One indexed read: asked on every login and admin request, unlike :meth:`status`."""
        async with self.db.read() as conn:
            confirmed = await conn.scalar(
                select(totp_secrets.c.confirmed_at).where(totp_secrets.c.user_id == user_id)
            )
        return confirmed is not None

    async def begin(self, user_id: str, username: str) -> Enrolment:
        """A new secret, not yet in force: the first code from it turns it on. Beginning again
        before confirming replaces it."""
        secret = pyotp.random_base32()
        uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
            name=username, issuer_name=ISSUER
        )
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(totp_secrets.c.confirmed_at).where(totp_secrets.c.user_id == user_id)
                )
            ).first()
            if row is not None and row.confirmed_at is not None:
                raise Conflict("totp_enabled", "two-step verification is already on")
            await conn.execute(delete(totp_secrets).where(totp_secrets.c.user_id == user_id))
            await conn.execute(
                insert(totp_secrets).values(
                    user_id=user_id,
                    secret_sealed=self.box.seal(secret.encode(), user_id),
                    created_at=self.clock.now_ms(),
                    confirmed_at=None,
                    last_step=0,
                )
            )
        svg = io.BytesIO()  # a whole SVG document (with its namespace), usable as an image
        segno.make(uri, error="m").save(svg, kind="svg", xmldecl=False, scale=5, border=2)
        return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=svg.getvalue().decode())

    async def confirm(self, user_id: str, code: str) -> list[str]:
        """Turns the begun secret on with its first code; returns the recovery codes, shown
        this once."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(select(totp_secrets).where(totp_secrets.c.user_id == user_id))
            ).first()
            if row is None:
                raise Invalid("totp_not_begun", "begin two-step verification first")
            if row.confirmed_at is not None:
                raise Conflict("totp_enabled", "two-step verification is already on")
            secret = self.box.open(row.secret_sealed, user_id).decode()
            step = matching_step(secret, normalise_code(code), self._now_s(), row.last_step)
            if step is None:
                raise Invalid("invalid_totp_code", "that code is not the current one; try again")
            await conn.execute(
                update(totp_secrets)
                .where(totp_secrets.c.user_id == user_id)
                .values(confirmed_at=self.clock.now_ms(), last_step=step)
            )
            return await self._new_recovery_codes(conn, user_id)

    async def new_recovery_codes(self, user_id: str) -> list[str]:
        async with self.db.write() as conn:
            return await self._new_recovery_codes(conn, user_id)

    async def _new_recovery_codes(self, conn: AsyncConnection, user_id: str) -> list[str]:
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        await conn.execute(
            insert(recovery_codes),
            [{"user_id": user_id, "code_hash": _code_hash(normalise_code(c))} for c in codes],
        )
        return codes

    async def verify(self, user_id: str, code: str) -> bool:
        """A current code not used before, or an unused recovery code; either is used up."""
        given = normalise_code(code)
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(totp_secrets).where(totp_secrets.c.user_id == user_id).with_for_update()
                )
            ).first()
            if row is None or row.confirmed_at is None:
                return False
            if len(given) == DIGITS:
                secret = self.box.open(row.secret_sealed, user_id).decode()
                step = matching_step(secret, given, self._now_s(), row.last_step)
                if step is None:
                    return False
                await conn.execute(
                    update(totp_secrets)
                    .where(totp_secrets.c.user_id == user_id)
                    .values(last_step=step)
                )
                return True
            used = await conn.execute(
                update(recovery_codes)
                .where(
                    and_(
                        recovery_codes.c.user_id == user_id,
                        recovery_codes.c.code_hash == _code_hash(given),
                        recovery_codes.c.used_at.is_(None),
                    )
                )
                .values(used_at=self.clock.now_ms())
            )
            return bool(used.rowcount)

    async def remove(self, user_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(totp_secrets).where(totp_secrets.c.user_id == user_id))
            await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))

    def _now_s(self) -> int:
        return self.clock.now_ms() // 1000
