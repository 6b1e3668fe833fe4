"""What the SDK returns: plain frozen dataclasses built from the API's JSON."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Self


class _FromJson:
    """Built from the API's JSON by field name; a field the server adds later is ignored, so an
    older SDK keeps working against a newer server."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        return cls(**{k: data[k] for k in fields})


@dataclass(frozen=True)
class User(_FromJson):
    id: str
    username: str
    created_at: int


@dataclass(frozen=True)
class Me(_FromJson):
    """Who this client is logged in as, and on which device and session."""

    user_id: str
    username: str
    device_id: str
    session_id: str


@dataclass(frozen=True)
class Device(_FromJson):
    id: str
    name: str
    created_at: int
    last_seen_at: int
    revoked_at: int | None
    current: bool  # the device this client is logged in on


@dataclass(frozen=True)
class Session(_FromJson):
    id: str
    device_id: str
    created_at: int
    expires_at: int
    last_used_at: int
    revoked_at: int | None
    current: bool


@dataclass(frozen=True)
class Member(_FromJson):
    user_id: str
    username: str
    role: str  # "admin" or "member"
    joined_seq: int  # they see the timeline after this


@dataclass(frozen=True)
class Login:
    token: str
    user_id: str
    username: str
    device_id: str
    session_id: str
    expires_at: int
    new_device: bool


@dataclass(frozen=True)
class Message:
    """One timeline event: a client message (opaque ``body``) or a membership change."""

    conversation_id: str
    seq: int
    kind: str
    sender_id: str
    sender: str
    sender_device_id: str | None
    client_msg_id: str | None
    content_type: str
    body: bytes
    created_at: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            conversation_id=data["conversation_id"],
            seq=data["seq"],
            kind=data["kind"],
            sender_id=data["sender_id"],
            sender=data["sender"],
            sender_device_id=data.get("sender_device_id"),
            client_msg_id=data.get("client_msg_id"),
            content_type=data["content_type"],
            body=base64.b64decode(data["body"]),
            created_at=data["created_at"],
        )

    @property
    def membership(self) -> dict[str, Any] | None:
        """The change a membership event describes (action, actor, user or members)."""
        if self.kind != "membership":
            return None
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass(frozen=True)
class Conversation:
    id: str
    kind: str
    name: str | None
    members: list[str]
    last_seq: int
    read_seq: int
    delivered_seq: int
    unread: int
    role: str
    left: bool
    joined_seq: int
    created_at: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Page:
    messages: list[Message]
    has_more: bool
    last_seq: int
    joined_seq: int


@dataclass(frozen=True)
class Receipt:
    conversation_id: str
    user_id: str
    username: str
    delivered_seq: int
    read_seq: int


@dataclass(frozen=True)
class Typing:
    conversation_id: str
    user_id: str
    username: str
    typing: bool


@dataclass(frozen=True)
class InboxMessage:
    """A pairwise-encrypted message for this device alone (key distribution, key requests)."""

    id: int
    sender_id: str
    sender: str
    sender_device_id: str
    body: bytes
    created_at: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InboxMessage:
        return cls(
            data["id"],
            data["sender_id"],
            data["sender"],
            data["sender_device_id"],
            base64.b64decode(data["body"]),
            data["created_at"],
        )


@dataclass(frozen=True)
class PrekeysLow:
    """The directory is running out of this device's one-time prekeys."""

    remaining: int


@dataclass(frozen=True)
class Ready:
    """Everything missed while away has been delivered; what follows is live."""


Event = Message | Receipt | Typing | Ready | InboxMessage | PrekeysLow
