"""Where reminders and stakeholder notices go: a Slack-compatible incoming webhook, email over
SMTP, and always the log. Each adapter is tested against a real local receiver."""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from secureconnect.config import Settings
from secureconnect.mail import Mailer

log = logging.getLogger("secureconnect.incidents")


class Notifier(Protocol):
    async def send(self, subject: str, text: str) -> None: ...


class LogNotifier:
    async def send(self, subject: str, text: str) -> None:
        log.warning("incident notice", extra={"fields": {"subject": subject, "text": text}})


class SlackWebhook:
    """Slack's incoming-webhook format ({"text": ...}), which Mattermost and others accept."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def send(self, subject: str, text: str) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(self.url, json={"text": f"*{subject}*\n{text}"})
            response.raise_for_status()


class Email:
    def __init__(self, host: str, port: int, sender: str, recipients: list[str]) -> None:
        self.mailer = Mailer(host, port, sender)
        self.recipients = recipients

    async def send(self, subject: str, text: str) -> None:
        await self.mailer.send(self.recipients, subject, text)


class Fanout:
    """Sends through every adapter; one failing does not stop the others (and is logged)."""

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers

    async def send(self, subject: str, text: str) -> None:
        for notifier in self.notifiers:
            try:
                await notifier.send(subject, text)
            except Exception as error:  # a broken channel must not silence the others
                log.error(
                    "notification failed",
                    extra={
                        "fields": {"adapter": type(notifier).__name__, "error": str(error)[:200]}
                    },
                )


def notifiers(settings: Settings) -> tuple[Notifier, Notifier]:
    """(owner, stakeholders): the log always; Slack and email when configured."""
    chat: list[Notifier] = [LogNotifier()]
    if settings.notify_slack_webhook_url is not None:
        chat.append(SlackWebhook(settings.notify_slack_webhook_url.get_secret_value()))
    wide = list(chat)
    if settings.notify_smtp_host and settings.notify_stakeholder_emails:
        wide.append(
            Email(
                settings.notify_smtp_host,
                settings.notify_smtp_port,
                settings.notify_email_from,
                settings.notify_stakeholder_emails,
            )
        )
    return Fanout(chat), Fanout(wide)
