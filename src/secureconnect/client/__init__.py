"""The Python SDK: an async, typed client for SecureConnect's API and realtime events.

    async with Client("http://127.0.0.1:8000") as client:
        await client.login("alice", "correct horse battery")
        conv = await client.direct("bob")
        await client.send(conv.id, b"...ciphertext...")
        async for event in client.events():
            ...

Bodies are bytes that the server stores and relays without reading them.
"""

from secureconnect.client.api import Client
from secureconnect.client.errors import ApiError, ConnectionLost
from secureconnect.client.events import EventStream
from secureconnect.client.types import (
    Call,
    CallChanged,
    CallJoined,
    Conversation,
    Device,
    Event,
    Incident,
    IncidentSummary,
    Login,
    Me,
    Member,
    Message,
    Page,
    Participant,
    Ready,
    Receipt,
    Session,
    Typing,
    User,
)
from secureconnect.errors import SecureConnectError

__all__ = [
    "ApiError",
    "Call",
    "CallChanged",
    "CallJoined",
    "Client",
    "ConnectionLost",
    "Conversation",
    "Device",
    "Event",
    "EventStream",
    "Incident",
    "IncidentSummary",
    "Login",
    "Me",
    "Member",
    "Message",
    "Page",
    "Participant",
    "Ready",
    "Receipt",
    "SecureConnectError",
    "Session",
    "Typing",
    "User",
]
