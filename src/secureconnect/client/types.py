"""What the SDK returns, built from the API's JSON.

Where the server has a response schema, the SDK returns that very model (re-exported here
under a plain name), so the contract is written once: ``User``, ``Me``, ``Device``,
``Session``, ``TotpStatus``, ``TotpEnrolment``, ``Member``, ``Incident``, ``IncidentSummary``,
``SecurityReport``, ``Blocked``, ``Lifted``, ``ModeSet``, ``StoreReport``, ``Deploy``,
``Blob``, ``AttachmentUsage``, ``Profile``.
Unknown fields from a newer server are ignored. The rest are frozen dataclasses of the SDK's own.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from secureconnect.accounts.schemas import CompromiseOut as CompromiseReport
from secureconnect.accounts.schemas import DeviceOut as Device
from secureconnect.accounts.schemas import EmailOut as EmailState
from secureconnect.accounts.schemas import MailingOut as MailingProgress
from secureconnect.accounts.schemas import MeResponse as Me
from secureconnect.accounts.schemas import SessionOut as Session
from secureconnect.accounts.schemas import TotpEnrolmentOut as TotpEnrolment
from secureconnect.accounts.schemas import TotpStatusOut as TotpStatus
from secureconnect.accounts.schemas import UserOut as User
from secureconnect.blobs.schemas import BlobOut as Blob
from secureconnect.blobs.schemas import UsageOut as AttachmentUsage
from secureconnect.chat.schemas import MemberOut as Member
from secureconnect.guard.schemas import Blocked, Lifted, ModeSet, SecurityReport
from secureconnect.incidents.schemas import (
    Incident,
    IncidentSummary,
    StatusPageOut,
    TimelineEntry,
)
from secureconnect.keys.schemas import BundleOut as PrekeyBundle
from secureconnect.keys.schemas import DeviceKeysOut as DeviceKeys
from secureconnect.ops.schemas import (
    Deploy,
    StorePasswordChanged,
    StorePasswordChecked,
    StoreReport,
)
from secureconnect.profiles.schemas import ProfileOut as Profile
from secureconnect.video.schemas import CallOut as Call
from secureconnect.video.schemas import JoinOut as CallJoined
from secureconnect.video.schemas import ParticipantOut as Participant
from secureconnect.video.schemas import SubscribeOut as Subscription


@dataclass(frozen=True)
class Login:
    token: str
    user_id: str
    username: str
    device_id: str
    session_id: str
    expires_at: int
    new_device: bool
    # The breach procedure ran: call change_password before anything else.
    must_change_password: bool = False


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
        return membership_of(self.kind, self.body)

    @property
    def call(self) -> dict[str, Any] | None:
        """A call entry's summary (outcome, who, when, how long); None for anything else."""
        if self.kind != "call":
            return None
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


def membership_of(kind: str, body: bytes) -> dict[str, Any] | None:
    """A membership event's body (the server writes it, in the clear); None for a message."""
    if kind != "membership":
        return None
    parsed: dict[str, Any] = json.loads(body)
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
    last_at: int = 0  # when its last event happened (ms): the list is newest first
    request: bool = False  # a message request from ``requested_by``, not yet accepted
    requested_by: str | None = None
    avatar: str | None = None  # a group's picture's tag (Client.group_avatar)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


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


@dataclass(frozen=True)
class CallChanged:
    """A call of one of this user's conversations rang, changed its roster, or ended."""

    call: Call


Event = Message | Receipt | Typing | Ready | InboxMessage | PrekeysLow | CallChanged


__all__ = [
    "AttachmentUsage",
    "Blob",
    "Blocked",
    "Call",
    "CallChanged",
    "CallJoined",
    "CompromiseReport",
    "Conversation",
    "Deploy",
    "Device",
    "DeviceKeys",
    "EmailState",
    "Event",
    "InboxMessage",
    "Incident",
    "IncidentSummary",
    "Lifted",
    "Login",
    "MailingProgress",
    "Me",
    "Member",
    "Message",
    "ModeSet",
    "Page",
    "Participant",
    "PrekeyBundle",
    "PrekeysLow",
    "Profile",
    "Ready",
    "Receipt",
    "SecurityReport",
    "Session",
    "StatusPageOut",
    "StorePasswordChanged",
    "StorePasswordChecked",
    "StoreReport",
    "Subscription",
    "TimelineEntry",
    "TotpEnrolment",
    "TotpStatus",
    "Typing",
    "User",
]
