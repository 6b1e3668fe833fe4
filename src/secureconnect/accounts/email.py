"""Users' email addresses, proven by a mailed code, and the security notices sent to them.

An address is optional and used only to tell its owner about their account: a new device
logged in, the password changed, two-step verification turned on or off, the on-call's breach
procedure. It is in force only once the code mailed to it has come back (30 minutes, 5 tries),
so nobody can point another person's notices, or their own, at an address they do not read.

Notices are sent after the change they describe has committed, in the background: a slow or
absent mail server never delays or fails a login. Each is logged without the address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, exists, insert, literal, select, update

from secureconnect.accounts.models import email_codes, mailing_recipients, users
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Invalid, Unavailable
from secureconnect.mail import Mailer
from secureconnect.store import Database

log = logging.getLogger("secureconnect.accounts")

CODE_TTL_MS = 30 * 60 * 1000
CODE_TRIES = 5
# Deliberately loose (RFC 5321's sizes, one @, a dot in the domain): the mailed code is the
# real check.
ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class MailingProgress:
    """Where a mailing to every user stands after one batch."""

    sent_now: int
    sent: int  # in all, this batch included
    remaining: int
    failed: int  # refused by the mail server in this batch: tried again next time
    no_address: int  # users without a verified address, never mailed


@dataclass(frozen=True)
class EmailState:
    email: str | None  # the verified address
    pending: str | None  # an address waiting for its code


def _code_hash(user_id: str, code: str) -> str:
    return hashlib.sha256(f"email:{user_id}:{code}".encode()).hexdigest()


class EmailService:
    def __init__(self, db: Database, mailer: Mailer, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.mailer = mailer
        self.clock = clock
        self._sending: set[asyncio.Task[None]] = set()

    async def state(self, user_id: str) -> EmailState:
        async with self.db.read() as conn:
            email = await conn.scalar(select(users.c.email).where(users.c.id == user_id))
            pending = await conn.scalar(
                select(email_codes.c.email).where(
                    email_codes.c.user_id == user_id,
                    email_codes.c.expires_at > self.clock.now_ms(),
                )
            )
        return EmailState(email=email, pending=pending)

    async def begin(self, user_id: str, username: str, address: str) -> None:
        """Mails a code to ``address``; the address is the user's once the code comes back."""
        address = address.strip()
        if len(address) > 254 or not ADDRESS.match(address):
            raise Invalid("invalid_email", "that is not an email address")
        if not self.mailer.configured:
            raise Unavailable("mail_unavailable", "this server cannot send mail")
        code = f"{secrets.randbelow(10**6):06d}"
        row = {
            "user_id": user_id,
            "email": address,
            "code_hash": _code_hash(user_id, code),
            "expires_at": self.clock.now_ms() + CODE_TTL_MS,
            "attempts": 0,
        }
        async with self.db.write() as conn:
            await conn.execute(delete(email_codes).where(email_codes.c.user_id == user_id))
            await conn.execute(insert(email_codes).values(**row))
        try:
            await self.mailer.send(
                [address],
                "Your SecureConnect verification code",
                f"Hello {username},\n\nyour code is {code}. Enter it in SecureConnect to use this "
                "address for security notices about your account. It works for 30 minutes.\n\n"
                "If you did not ask for this, ignore this mail.\n",
            )
        except Exception as error:  # smtplib raises OSError and SMTPException
            log.warning("verification mail failed", extra={"fields": {"error": str(error)[:200]}})
            raise Unavailable("mail_unavailable", "the mail server did not take the mail") from None

    async def verify(self, user_id: str, code: str) -> str:
        """The address now in force."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(select(email_codes).where(email_codes.c.user_id == user_id))
            ).first()
            if row is None or row.expires_at <= self.clock.now_ms():
                raise Invalid("no_email_code", "ask for a new code first")
            if row.attempts >= CODE_TRIES:
                raise Invalid("no_email_code", "too many wrong codes; ask for a new one")
            if not hmac.compare_digest(row.code_hash, _code_hash(user_id, code.strip())):
                await conn.execute(
                    update(email_codes)
                    .where(email_codes.c.user_id == user_id)
                    .values(attempts=row.attempts + 1)
                )
                raise Invalid("invalid_email_code", "that code is wrong")
            await conn.execute(update(users).where(users.c.id == user_id).values(email=row.email))
            await conn.execute(delete(email_codes).where(email_codes.c.user_id == user_id))
            return str(row.email)

    async def remove(self, user_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(users).where(users.c.id == user_id).values(email=None))
            await conn.execute(delete(email_codes).where(email_codes.c.user_id == user_id))

    async def notify(self, user_id: str, subject: str, text: str) -> bool:
        """Mails the user's verified address now; False when there is none, or no mail server,
        or it refused (logged)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(users.c.username, users.c.email).where(users.c.id == user_id)
                )
            ).first()
        if row is None or not row.email or not self.mailer.configured:
            return False
        try:
            await self.mailer.send(
                [row.email], f"SecureConnect: {subject}", f"Hello {row.username},\n\n{text}"
            )
        except Exception as error:  # smtplib raises OSError and SMTPException
            log.warning(
                "security notice failed",
                extra={"fields": {"user_id": user_id, "error": str(error)[:200]}},
            )
            return False
        log.info("security notice sent", extra={"fields": {"user_id": user_id, "subject": subject}})
        return True

    def notify_later(self, user_id: str, subject: str, text: str) -> None:
        """:meth:`notify` in the background: called once the change has committed."""

        async def send() -> None:
            await self.notify(user_id, subject, text)

        task = asyncio.get_running_loop().create_task(send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def mail_everyone(
        self, subject: str, text: str, batch: int = 50, dry_run: bool = False
    ) -> MailingProgress:
        """Mails the next ``batch`` users with a verified address who have not had this mail
        (the same subject and text); call again until nothing remains."""
        if not self.mailer.configured:
            raise Unavailable("mail_unavailable", "this server cannot send mail")
        key = hashlib.sha256(f"{subject}\n{text}".encode()).hexdigest()
        had = select(mailing_recipients.c.user_id).where(mailing_recipients.c.mailing_key == key)
        async with self.db.read() as conn:
            sent = len((await conn.execute(had)).all())
            no_address = len(
                (await conn.execute(select(users.c.id).where(users.c.email.is_(None)))).all()
            )
            todo = (
                await conn.execute(
                    select(users.c.id, users.c.username, users.c.email)
                    .where(users.c.email.is_not(None), users.c.id.not_in(had))
                    .order_by(users.c.id)
                )
            ).all()
        if dry_run:
            return MailingProgress(0, sent, len(todo), 0, no_address)
        sent_now = failed = 0
        for user in todo[:batch]:
            async with self.db.write() as conn:  # claimed before sending: never twice
                claimed = await conn.execute(
                    insert(mailing_recipients).from_select(
                        ["mailing_key", "user_id", "sent_at"],
                        select(literal(key), literal(user.id), literal(self.clock.now_ms())).where(
                            ~exists(had.where(mailing_recipients.c.user_id == user.id))
                        ),
                    )
                )
            if not claimed.rowcount:
                continue  # another run took this one
            try:
                await self.mailer.send([user.email], subject, f"Hello {user.username},\n\n{text}")
                sent_now += 1
            except Exception as error:  # smtplib raises OSError and SMTPException
                failed += 1
                log.warning("mailing failed", extra={"fields": {"error": str(error)[:200]}})
                async with self.db.write() as conn:
                    await conn.execute(
                        delete(mailing_recipients).where(
                            mailing_recipients.c.mailing_key == key,
                            mailing_recipients.c.user_id == user.id,
                        )
                    )
        return MailingProgress(
            sent_now=sent_now,
            sent=sent + sent_now,
            remaining=len(todo) - sent_now,
            failed=failed,
            no_address=no_address,
        )

    async def drain(self) -> None:
        """Waits for notices still being sent (at shutdown)."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=10)
