"""Request and response shapes of the chat API. Message bodies travel as standard base64."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from secureconnect.schemas import Strict


class CreateConversation(Strict):
    kind: Literal["direct", "group"]
    members: list[str] = Field(
        default_factory=list, max_length=256, description="usernames of the other members"
    )
    name: str | None = Field(None, max_length=200)


class ConversationOut(BaseModel):
    id: str
    kind: str
    name: str | None
    avatar: str | None = Field(
        None, description="a group's picture: its tag (GET /v1/conversations/{id}/avatar)"
    )
    created_at: int
    last_at: int = Field(
        description="when its last event happened (ms; for a former member, the last they "
        "saw): the conversation list is sorted by it, newest first"
    )
    last_seq: int
    role: str
    joined_seq: int
    left: bool
    read_seq: int
    delivered_seq: int
    unread: int
    members: list[str]
    request: bool = Field(
        False,
        description="a message request: someone you are not in contact with put you here; "
        "accept, decline or block (a message you send accepts it)",
    )
    requested_by: str | None = Field(None, description="who asked, while it is a request")


class Rename(Strict):
    name: str = Field(min_length=1, max_length=200, description="the group's new name")


class Decline(Strict):
    block: bool = Field(False, description="also stop them putting you in conversations")


class MemberOut(BaseModel):
    user_id: str
    username: str
    role: str
    joined_seq: int


class AddMember(Strict):
    username: str = Field(min_length=1, max_length=64)


class SendMessage(Strict):
    client_msg_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="chosen by the client; a retry reuses it",
    )
    content_type: str = Field(min_length=3, max_length=100, pattern=r"^[\w.+-]+/[\w.+-]+$")
    body: str = Field(min_length=1, description="the ciphertext, base64")

    @field_validator("body")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError("must be standard base64") from error
        return value

    def body_bytes(self) -> bytes:
        return base64.b64decode(self.body, validate=True)


class EventOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    conversation_id: str
    seq: int
    kind: str
    sender_id: str
    sender: str
    sender_device_id: str | None
    client_msg_id: str | None
    content_type: str
    body: str
    created_at: int


class HistoryOut(BaseModel):
    events: list[EventOut]
    has_more: bool
    last_seq: int
    joined_seq: int


class Mark(Strict):
    delivered_seq: int | None = Field(None, ge=0)
    read_seq: int | None = Field(None, ge=0)


class ReceiptOut(BaseModel):
    conversation_id: str
    user_id: str
    username: str
    delivered_seq: int
    read_seq: int


class Typing(Strict):
    typing: bool
