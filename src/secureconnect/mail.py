"""Mail out through the platform's SMTP server (``SECURECONNECT_NOTIFY_SMTP_HOST``): incident
notices to stakeholders and security notices to users. smtplib runs in a thread, so a slow mail
server never holds up the event loop."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid


class Mailer:
    def __init__(self, host: str | None, port: int, sender: str) -> None:
        self.host, self.port, self.sender = host, port, sender

    @property
    def configured(self) -> bool:
        return bool(self.host)

    async def send(self, recipients: list[str], subject: str, text: str) -> None:
        """Raises ``OSError`` or ``smtplib.SMTPException`` when the server does not take it."""
        if not self.host:
            raise OSError("no mail server configured (SECURECONNECT_NOTIFY_SMTP_HOST)")
        host = self.host
        message = EmailMessage()
        message["Subject"], message["From"] = subject, self.sender
        message["To"] = ", ".join(recipients)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(text)

        def deliver() -> None:
            with smtplib.SMTP(host, self.port, timeout=10) as smtp:
                smtp.send_message(message)

        await asyncio.to_thread(deliver)
