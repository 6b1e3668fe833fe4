"""Janus's HTTP API, as video-service speaks it: one Janus session per call participant.

Synchronous VideoRoom requests (create, kick, allowed, destroy) answer in the POST. Asynchronous
ones (join, publish, start, update) answer "ack" there and their result later, on the session's
long poll, under the same transaction: :meth:`JanusSession.message` waits for it. Events nobody
waits for (``webrtcup``, ``hangup``) go to the ``on_event`` callback. The long poll is also what
keeps the session alive in Janus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from secureconnect.errors import Problem
from secureconnect.video.sfu import VIDEOROOM, JanusSupervisor

log = logging.getLogger("secureconnect.video")

ASYNC_TIMEOUT_S = 10.0
# A Janus event nobody awaited: (handle id, the event).
EventHandler = Callable[[int, dict[str, Any]], None]


# Codes for a request the client got wrong, a 400: Janus's own for SDP, ICE and negotiation
# state (464-471, apierror.h) and VideoRoom's (bad SDP, unknown feed, not published...).
CLIENT_MISTAKES = {464, 465, 466, 467, 469, 471}
CLIENT_MISTAKES |= {422, 423, 424, 425, 428, 429, 430, 431, 434, 435, 437, 438}


class JanusError(Problem):
    """Janus, or its VideoRoom plugin, refused a request (``janus_code`` and ``reason`` are its
    own): a 400 ``bad_media`` for what the client sent, else a 503 ``calls_unavailable``."""

    def __init__(self, janus_code: int, reason: str) -> None:
        if janus_code in CLIENT_MISTAKES:
            super().__init__("bad_media", f"the SFU refused this: {reason}")
            self.status = 400
        else:
            super().__init__("calls_unavailable", f"the SFU could not do this: {reason}")
            self.status = 503
        self.janus_code = janus_code
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    """A VideoRoom answer: the plugin's data and, for negotiations, the SDP it returned."""

    data: dict[str, Any]
    jsep: dict[str, Any] | None


def _plugin_answer(message: dict[str, Any]) -> Answer:
    if message.get("janus") == "error":
        error = message.get("error", {})
        raise JanusError(int(error.get("code", 0)), str(error.get("reason", "unknown")))
    data = message.get("plugindata", {}).get("data", {})
    if "error_code" in data:
        raise JanusError(int(data["error_code"]), str(data.get("error", "unknown")))
    return Answer(data, message.get("jsep"))


class JanusSession:
    """One Janus session, with its handles, on one generation of the supervised Janus."""

    def __init__(self, sfu: JanusSupervisor, on_event: EventHandler | None = None) -> None:
        if sfu.config is None or sfu.state != "up":
            raise JanusError(0, "janus is not running")
        self.sfu = sfu
        self.generation = sfu.generation
        self.url = sfu.config.api_url
        self.on_event = on_event
        self.id = 0
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        transaction = body.setdefault("transaction", secrets.token_hex(8))
        body["token"] = self.sfu.token()
        try:
            response = await self.sfu.http.post(f"{self.url}{path}", json=body, timeout=5.0)
            answer: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise JanusError(0, f"janus did not answer: {type(error).__name__}") from error
        if answer.get("transaction") not in (None, transaction):
            raise JanusError(0, "janus answered another transaction")
        return answer

    async def open(self) -> JanusSession:
        answer = await self._post("", {"janus": "create"})
        _plugin_answer(answer)
        self.id = int(answer["data"]["id"])
        self._poll = asyncio.create_task(self._long_poll())
        return self

    async def attach(self) -> int:
        answer = await self._post(f"/{self.id}", {"janus": "attach", "plugin": VIDEOROOM})
        _plugin_answer(answer)
        return int(answer["data"]["id"])

    async def detach(self, handle: int) -> None:
        """Hangs up a handle's peer connection and drops the handle."""
        _plugin_answer(await self._post(f"/{self.id}/{handle}", {"janus": "detach"}))

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous VideoRoom request; its data, or :class:`JanusError`."""
        answer = await self._post(f"/{self.id}/{handle}", {"janus": "message", "body": body})
        return _plugin_answer(answer).data

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> Answer:
        """An asynchronous VideoRoom request: waits for its event on the long poll."""
        transaction = secrets.token_hex(8)
        waiting = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = waiting
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        try:
            first = await self._post(f"/{self.id}/{handle}", request)
            if first.get("janus") != "ack":
                return _plugin_answer(first)
            return _plugin_answer(await asyncio.wait_for(waiting, ASYNC_TIMEOUT_S))
        except TimeoutError as error:
            raise JanusError(0, "janus did not answer in time") from error
        finally:
            self._waiting.pop(transaction, None)

    async def trickle(self, handle: int, candidate: dict[str, Any] | None) -> None:
        body: dict[str, Any] = {"janus": "trickle"}
        body["candidate"] = candidate if candidate is not None else {"completed": True}
        _plugin_answer(await self._post(f"/{self.id}/{handle}", body))

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        if self.id and self.sfu.generation == self.generation and self.sfu.state == "up":
            with contextlib.suppress(JanusError):
                await self._post(f"/{self.id}", {"janus": "destroy"})

    async def _long_poll(self) -> None:
        while True:
            try:
                response = await self.sfu.http.get(
                    f"{self.url}/{self.id}", params={"maxev": 10, "token": self.sfu.token()}
                )
                events = response.json()
            except (httpx.HTTPError, ValueError):
                if self.sfu.generation != self.generation or self.sfu.state != "up":
                    return  # this Janus is gone, and its sessions with it
                await asyncio.sleep(0.5)
                continue
            for event in events if isinstance(events, list) else [events]:
                if not isinstance(event, dict):
                    continue
                if event.get("janus") == "error" and event.get("error", {}).get("code") == 458:
                    return  # "no such session": destroyed or timed out
                waiting = self._waiting.get(str(event.get("transaction")))
                if waiting is not None and event.get("janus") in ("event", "error", "success"):
                    if not waiting.done():
                        waiting.set_result(event)
                elif self.on_event is not None and "sender" in event:
                    self.on_event(int(event["sender"]), event)
