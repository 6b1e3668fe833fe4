"""Account logic: registration, password login, opaque bearer tokens, devices and sessions.

Tokens are 256-bit random strings shown to the client once; the server keeps only their SHA-256,
so a leaked database does not leak working tokens. Passwords are hashed with argon2id on a small
pool of low-priority threads, so that a burst of logins waits its turn instead of taking the CPU
that delivers messages (decision 0012).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Row, and_, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.accounts.email import EmailService
from secureconnect.accounts.models import compromised_users, devices, sessions, users
from secureconnect.accounts.totp import TotpService
from secureconnect.bus import user_topic
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from secureconnect.guard.throttle import Attempt, LoginThrottle, LoginThrottled
from secureconnect.store import Database
from secureconnect.store.base import new_id

log = logging.getLogger("secureconnect.accounts")

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
TOKEN_PREFIX = "sct_"  # noqa: S105 - a marker, not a secret
# How stale ``last_used_at`` may get before an authenticated request writes it again.
TOUCH_EVERY_MS = 60_000


NewDeviceHook = Callable[[AsyncConnection, str, str], Awaitable[None]]
FailedLoginHook = Callable[[str], Awaitable[None]]
# Below the event loop's priority (nice 0): argon2 is meant to be slow, message delivery is not.
HASHING_NICE = 10


def _yield_to_the_loop() -> None:
    # Linux nice values are per thread, and argon2's own lane threads inherit this one's.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICE)


# One core is left for the event loop: with N cores, at most N-1 hashes run at once and the rest
# queue here, however many logins arrive together.
HASHING_THREADS = max(1, (os.cpu_count() or 2) - 1)
_hashing = ThreadPoolExecutor(
    max_workers=HASHING_THREADS,
    thread_name_prefix="argon2",
    initializer=_yield_to_the_loop,
)


async def _hashed(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_hashing, fn, *args)


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: the user, the device they logged in on, and the session behind the token."""

    user_id: str
    username: str
    device_id: str
    session_id: str
    # Set by the breach procedure: until the password changes, this session may do nothing else.
    must_change_password: bool = False


@dataclass(frozen=True)
class LoginResult:
    token: str
    expires_at: int
    context: AuthContext
    new_device: bool


@dataclass(frozen=True)
class CompromiseReport:
    """What ``oncall compromise`` did (or, with ``dry_run``, would do)."""

    users: int
    already: int
    sessions_revoked: int
    devices_revoked: int
    mailed: int
    no_address: int
    dry_run: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_username(raw: str) -> str:
    return raw.strip().lower()


def check_username(raw: str) -> str:
    username = normalise_username(raw)
    if not USERNAME.match(username):
        raise Invalid(
            "invalid_username",
            "username must be 3-32 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return username


# The most common long passwords of the public breach lists: refused, as ASVS 2.1.7 asks (the
# length rule already refuses the far longer list of short ones).
COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456789123",
        "qwertyuiopas",
        "qwertyuiop123",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "passwordpassword",
        "password1234",
        "password12345",
        "password123456",
        "iloveyou1234",
        "administrator",
        "letmein12345",
        "welcome12345",
        "qwerty123456",
        "abcdefghijkl",
        "abc123456789",
        "changeme1234",
        "secureconnect",
        "secureconnect1",
        "secureconnect123",
    }
)


def check_password(password: str, username: str = "") -> None:
    """ASVS 4.0 2.1: at least 12 characters, any characters, no composition rules; not the
    username, not one character repeated, not a well-known password."""
    if len(password) < MIN_PASSWORD:
        raise Invalid("weak_password", f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise Invalid("invalid_password", f"password must be at most {MAX_PASSWORD} characters")
    folded = password.lower()
    if len(username) >= 4 and normalise_username(username) in folded:
        raise Invalid("weak_password", "password must not contain the username")
    if len(set(folded)) <= 2 or folded in COMMON_PASSWORDS:
        raise Invalid("weak_password", "this password is too easy to guess; choose another")


class AccountService:
    """Accounts, devices and sessions.

    What other domains must do when something happens here is wired in by the service
    container, one hook per action: a new device gets chat cursors (``on_new_device``, in the
    same transaction); a failed login is counted by the guard and the metrics
    (``on_failed_login``); a revoked session's live sockets are closed by an event published
    once the revocation has committed.
    """

    def __init__(
        self,
        db: Database,
        token_ttl_s: int,
        on_new_device: NewDeviceHook | None = None,
        on_failed_login: FailedLoginHook | None = None,
        clock: Clock = SYSTEM_CLOCK,
        hasher: PasswordHasher | None = None,
        throttle: LoginThrottle | None = None,
        totp: TotpService | None = None,
        email: EmailService | None = None,
    ) -> None:
        """``hasher``: argon2id, the library's RFC 9106 defaults unless the settings say
        otherwise (never below OWASP's minimums, see ``Settings.argon2_memory_kib``).
        ``throttle``: logins per account and address (off only when the settings say so).
        ``totp``: the second factor, for the accounts that turned it on. ``email``: security
        notices, to the users who gave an address."""
        self.db = db
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        # Verified against on an unknown username so that its timing matches a wrong password.
        self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        self.token_ttl_ms = token_ttl_s * 1000
        self.on_new_device = on_new_device
        self.on_failed_login = on_failed_login
        self.throttle = throttle
        self.totp = totp
        self.email = email
        # A login is admitted by the throttle when a hashing thread is free for it, not when
        # it arrives: a hundred logins at once (an office at 9:00 behind one address) then
        # count as at most this many attempts in flight, not a hundred failures in advance.
        self._login_slots = asyncio.Semaphore(HASHING_THREADS)

    async def register(self, username: str, password: str) -> dict[str, Any]:
        name = check_username(username)
        check_password(password, name)
        password_hash: str = await _hashed(self.hasher.hash, password)
        row = {
            "id": new_id(),
            "username": name,
            "password_hash": password_hash,
            "created_at": self.clock.now_ms(),
        }
        try:
            async with self.db.write() as conn:
                await conn.execute(insert(users).values(**row))
        except IntegrityError as error:
            raise Conflict("username_taken", f"username '{name}' is already taken") from error
        return {"id": row["id"], "username": name, "created_at": row["created_at"]}

    async def login(
        self,
        username: str,
        password: str,
        device_name: str,
        device_id: str | None,
        address: str = "-",
        totp_code: str | None = None,
    ) -> LoginResult:
        """``address`` is the client's, for counting failures per address. An account with
        two-step verification also needs ``totp_code`` (a current code or a recovery code)."""
        user = await self._check_password(username, password, address, totp_code)
        now = self.clock.now_ms()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.db.write() as conn:
            new_device = True
            if device_id is not None:
                existing = (
                    await conn.execute(
                        select(devices.c.id).where(
                            and_(
                                devices.c.id == device_id,
                                devices.c.user_id == user.id,
                                devices.c.revoked_at.is_(None),
                            )
                        )
                    )
                ).first()
                if existing is None:
                    raise NotFound("device_not_found", "no such active device on this account")
                new_device = False
                await conn.execute(
                    update(devices).where(devices.c.id == device_id).values(last_seen_at=now)
                )
            else:
                device_id = new_id()
                await conn.execute(
                    insert(devices).values(
                        id=device_id,
                        user_id=user.id,
                        name=device_name[:100],
                        created_at=now,
                        last_seen_at=now,
                    )
                )
                if self.on_new_device is not None:
                    await self.on_new_device(conn, user.id, device_id)
            session_id = new_id()
            expires = now + self.token_ttl_ms
            await conn.execute(
                insert(sessions).values(
                    id=session_id,
                    user_id=user.id,
                    device_id=device_id,
                    token_hash=hash_token(token),
                    created_at=now,
                    expires_at=expires,
                    last_used_at=now,
                )
            )
        if self.hasher.check_needs_rehash(user.password_hash):
            await self._rehash(user.id, password)
        if new_device and self.email is not None:
            self.email.notify_later(
                user.id,
                "a new device logged in",
                f'A new device, "{device_name[:100]}", logged in to your account from {address}. '
                "If this was not you, change your password now and remove the device.\n",
            )
        ctx = AuthContext(
            user.id, user.username, device_id, session_id, bool(user.must_change_password)
        )
        return LoginResult(token, expires, ctx, new_device)

    async def _check_password(
        self,
        username: str,
        password: str,
        address: str,
        totp_code: str | None,
        second_factor: bool = True,
    ) -> Row[Any]:
        """The user row, once the password (and the second factor, if on and asked for) are
        right; throttled per account and address, password and code failures together."""
        name = normalise_username(username)
        async with self.db.read() as conn:
            user = (await conn.execute(select(users).where(users.c.username == name))).first()
        stored = user.password_hash if user else self._dummy_hash
        async with self._login_slots:
            try:
                attempt = await self.throttle.admit(name, address) if self.throttle else None
            except LoginThrottled:
                # Still an attempt to get in: the security diagnosis and FailedLoginSpike must
                # see a brute force at its real rate, not at the rate the throttle lets through.
                await self._failed(address)
                raise
            ok: bool = await _hashed(self._verify, stored, password)
        if user is None or not ok:
            await self._failed(address)
            # One answer for both, so that the login form does not reveal who has an account.
            raise Unauthorized("invalid_credentials", "wrong username or password")
        if second_factor and self.totp is not None and await self.totp.enabled(user.id):
            if not totp_code:
                # The password was right: not a failure; the client now asks for the code.
                await self._forgive(attempt)
                raise Unauthorized("totp_required", "enter the code from your authenticator app")
            if not await self.totp.verify(user.id, totp_code):
                await self._failed(address)
                raise Unauthorized("invalid_totp_code", "that code is wrong or was already used")
        await self._forgive(attempt)
        return user

    async def _failed(self, address: str) -> None:
        if self.on_failed_login is not None:
            await self.on_failed_login(address)

    async def _forgive(self, attempt: Attempt | None) -> None:
        if self.throttle is not None and attempt is not None:
            await self.throttle.succeeded(attempt)

    async def disable_totp(
        self, ctx: AuthContext, password: str, code: str, address: str = "-"
    ) -> None:
        """Needs the password and a code: a stolen session alone cannot turn it off."""
        if self.totp is None or not await self.totp.enabled(ctx.user_id):
            raise Conflict("totp_not_enabled", "two-step verification is not on")
        try:
            await self._check_password(ctx.username, password, address, code)
        except Unauthorized as refused:
            # 403, not 401: the session is fine, and clients log out on a 401.
            raise Forbidden(refused.code, refused.message) from None
        await self.totp.remove(ctx.user_id)
        self._notice(
            ctx.user_id,
            "two-step verification is off",
            "Two-step verification was turned off for your account: logins need only the "
            "password now. If this was not you, change your password now.\n",
        )

    async def change_password(
        self,
        ctx: AuthContext,
        current: str,
        new: str,
        address: str = "-",
        keep_other_sessions: bool = False,
    ) -> int:
        """Returns how many other sessions were revoked: all of them unless kept (ASVS 3.3.3),
        so that whoever knew the old password is logged out everywhere but here."""
        check_password(new, ctx.username)
        if hmac.compare_digest(current.encode(), new.encode()):
            raise Invalid("same_password", "the new password must differ from the current one")
        try:
            # This session already passed the second factor; the password proves the person.
            await self._check_password(ctx.username, current, address, None, second_factor=False)
        except Unauthorized as refused:
            raise Forbidden(refused.code, refused.message) from None
        fresh: str = await _hashed(self.hasher.hash, new)
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            await conn.execute(
                update(users)
                .where(users.c.id == ctx.user_id)
                .values(password_hash=fresh, must_change_password=False)
            )
            live: list[str] = []
            if not keep_other_sessions:
                others = and_(
                    sessions.c.user_id == ctx.user_id,
                    sessions.c.id != ctx.session_id,
                    sessions.c.revoked_at.is_(None),
                )
                live = list((await conn.execute(select(sessions.c.id).where(others))).scalars())
                await conn.execute(update(sessions).where(others).values(revoked_at=now))
                self._close_sockets(conn, ctx.user_id, live)
        self._notice(
            ctx.user_id,
            "your password was changed",
            "The password of your account was just changed"
            + (f", and {len(live)} other session(s) were logged out" if live else "")
            + ". If this was not you, contact your administrator now.\n",
        )
        return len(live)

    async def enable_totp(self, ctx: AuthContext, code: str) -> list[str]:
        """Confirms the begun enrolment; the recovery codes, shown once."""
        if self.totp is None:
            raise NotFound("not_found", "two-step verification is on the api-gateway")
        codes = await self.totp.confirm(ctx.user_id, code)
        self._notice(
            ctx.user_id,
            "two-step verification is on",
            "Two-step verification was turned on for your account: logins now need a code "
            "from your authenticator app. If this was not you, contact your administrator.\n",
        )
        return codes

    def _notice(self, user_id: str, subject: str, text: str) -> None:
        if self.email is not None:
            self.email.notify_later(user_id, subject, text)

    async def compromise(
        self, actor: str, usernames: list[str] | None, reason: str, dry_run: bool = False
    ) -> CompromiseReport:
        """The breach procedure (runbook 23.8) for every user but the actor, or the named
        ones: their sessions and devices are revoked (clients make new keys; contacts see the
        change), they must change their password before anything else, and each with an
        address is mailed the reason. Keyed by scope and reason: the same command again does
        nothing twice."""
        names = sorted({normalise_username(n) for n in usernames}) if usernames else None
        key = hashlib.sha256(f"{','.join(names) if names else '*'}\n{reason}".encode()).hexdigest()
        now = self.clock.now_ms()
        # Subqueries, not lists of ids: --all over a large instance stays one statement each
        # (SQLite allows some 32,000 parameters in one).
        scope = (
            users.c.username.in_(names)
            if names is not None
            # The on-call running it keeps their session to finish the procedure (and the
            # incident's timeline); they change their own password after.
            else users.c.username != actor
        )
        dealt = exists(
            select(compromised_users.c.user_id).where(
                compromised_users.c.compromise_key == key,
                compromised_users.c.user_id == users.c.id,
            )
        )
        todo_ids = select(users.c.id).where(scope, ~dealt)
        async with self.db.write() as conn:
            if names is not None:
                found = set((await conn.execute(select(users.c.username).where(scope))).scalars())
                if len(found) != len(names):
                    missing = sorted(set(names) - found)
                    raise NotFound("user_not_found", f"no such user: {', '.join(missing)}")
                targets = len(found)
            else:
                count = select(func.count()).select_from(users).where(scope)
                targets = int(await conn.scalar(count) or 0)
            todo = (
                await conn.execute(
                    select(users.c.id, users.c.username, users.c.email).where(scope, ~dealt)
                )
            ).all()
            open_sessions = and_(sessions.c.user_id.in_(todo_ids), sessions.c.revoked_at.is_(None))
            live = (
                await conn.execute(select(sessions.c.id, sessions.c.user_id).where(open_sessions))
            ).all()
            open_devices = and_(devices.c.user_id.in_(todo_ids), devices.c.revoked_at.is_(None))
            device_count = int(
                await conn.scalar(select(func.count()).select_from(devices).where(open_devices))
                or 0
            )
            if not dry_run and todo:
                await conn.execute(update(sessions).where(open_sessions).values(revoked_at=now))
                await conn.execute(update(devices).where(open_devices).values(revoked_at=now))
                await conn.execute(
                    update(users).where(users.c.id.in_(todo_ids)).values(must_change_password=True)
                )
                await conn.execute(
                    insert(compromised_users).from_select(
                        ["compromise_key", "user_id", "reason", "actor", "at", "mailed"],
                        select(
                            literal(key),
                            users.c.id,
                            literal(reason),
                            literal(actor),
                            literal(now),
                            literal(False),
                        ).where(scope, ~dealt),
                    )
                )
                by_user: dict[str, list[str]] = {}
                for session in live:
                    by_user.setdefault(session.user_id, []).append(session.id)
                for user_id, session_ids in by_user.items():
                    self._close_sockets(conn, user_id, session_ids)
        with_address = [t for t in todo if t.email]
        mailed = 0
        if not dry_run and self.email is not None:
            for target in with_address:
                sent = await self.email.notify(
                    target.id,
                    "action needed on your account",
                    f"Your administrator logged every device of your account out because: "
                    f"{reason}\n\nWhat to do: log in again and choose a new password; your "
                    "devices will make new security keys, and your contacts will be asked to "
                    "check your safety number again.\n",
                )
                if sent:
                    mailed += 1
                    async with self.db.write() as conn:
                        await conn.execute(
                            update(compromised_users)
                            .where(
                                compromised_users.c.compromise_key == key,
                                compromised_users.c.user_id == target.id,
                            )
                            .values(mailed=True)
                        )
        log.warning(
            "accounts compromised",
            extra={
                "fields": {
                    "actor": actor,
                    "users": len(todo),
                    "already": targets - len(todo),
                    "dry_run": dry_run,
                }
            },
        )
        return CompromiseReport(
            users=len(todo),
            already=targets - len(todo),
            sessions_revoked=len(live),
            devices_revoked=device_count,
            mailed=mailed if not dry_run else 0,
            no_address=len(todo) - len(with_address),
            dry_run=dry_run,
        )

    async def _rehash(self, user_id: str, password: str) -> None:
        fresh: str = await _hashed(self.hasher.hash, password)
        async with self.db.write() as conn:
            await conn.execute(
                update(users).where(users.c.id == user_id).values(password_hash=fresh)
            )

    async def authenticate(self, token: str) -> AuthContext:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            raise Unauthorized("invalid_token", "the access token is not valid")
        digest = hash_token(token)
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        sessions.c.id,
                        sessions.c.token_hash,
                        sessions.c.expires_at,
                        sessions.c.revoked_at,
                        sessions.c.last_used_at,
                        sessions.c.device_id,
                        users.c.id.label("user_id"),
                        users.c.username,
                        users.c.must_change_password,
                    )
                    .join(users, users.c.id == sessions.c.user_id)
                    .where(sessions.c.token_hash == digest)
                )
            ).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise Unauthorized("invalid_token", "the access token is not valid")
        now = self.clock.now_ms()
        if row.revoked_at is not None:
            raise Unauthorized("token_revoked", "this session was logged out or revoked")
        if row.expires_at <= now:
            raise Unauthorized("token_expired", "this session has expired; log in again")
        if now - row.last_used_at > TOUCH_EVERY_MS:
            async with self.db.write() as conn:
                await conn.execute(
                    update(sessions).where(sessions.c.id == row.id).values(last_used_at=now)
                )
                await conn.execute(
                    update(devices).where(devices.c.id == row.device_id).values(last_seen_at=now)
                )
        return AuthContext(
            row.user_id, row.username, row.device_id, row.id, bool(row.must_change_password)
        )

    async def logout(self, ctx: AuthContext) -> None:
        await self.revoke_session(ctx.user_id, ctx.session_id)

    async def list_devices(self, user_id: str) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(
                    devices.c.id,
                    devices.c.name,
                    devices.c.created_at,
                    devices.c.last_seen_at,
                    devices.c.revoked_at,
                )
                .where(devices.c.user_id == user_id)
                .order_by(devices.c.created_at)
            )
            return [dict(r._mapping) for r in rows]

    async def list_sessions(self, user_id: str) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(
                    sessions.c.id,
                    sessions.c.device_id,
                    sessions.c.created_at,
                    sessions.c.expires_at,
                    sessions.c.last_used_at,
                    sessions.c.revoked_at,
                )
                .where(sessions.c.user_id == user_id)
                .order_by(sessions.c.created_at)
            )
            return [dict(r._mapping) for r in rows]

    async def revoke_session(self, user_id: str, session_id: str) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(sessions)
                .where(and_(sessions.c.id == session_id, sessions.c.user_id == user_id))
                .values(revoked_at=self.clock.now_ms())
            )
            if result.rowcount == 0:
                raise NotFound("session_not_found", "no such session on this account")
            self._close_sockets(conn, user_id, [session_id])

    async def revoke_device(self, user_id: str, device_id: str) -> None:
        """Revokes the device and every session on it."""
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            result = await conn.execute(
                update(devices)
                .where(and_(devices.c.id == device_id, devices.c.user_id == user_id))
                .values(revoked_at=now)
            )
            if result.rowcount == 0:
                raise NotFound("device_not_found", "no such device on this account")
            live = (
                (
                    await conn.execute(
                        select(sessions.c.id).where(
                            and_(sessions.c.device_id == device_id, sessions.c.revoked_at.is_(None))
                        )
                    )
                )
                .scalars()
                .all()
            )
            await conn.execute(
                update(sessions)
                .where(and_(sessions.c.device_id == device_id, sessions.c.revoked_at.is_(None)))
                .values(revoked_at=now)
            )
            self._close_sockets(conn, user_id, list(live))

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _close_sockets(self, conn: AsyncConnection, user_id: str, session_ids: list[str]) -> None:
        """Every replica closes these sessions' live WebSockets, once the revocation commits."""
        if session_ids:
            self.db.publish_on_commit(
                conn, [user_topic(user_id)], {"type": "_revoked", "session_ids": session_ids}
            )
