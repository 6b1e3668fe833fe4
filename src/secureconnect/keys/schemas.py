"""Request and response shapes of the key directory and inbox. Keys travel as standard base64."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from secureconnect.schemas import Strict


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("must be standard base64") from error
    return value


B64 = Annotated[str, Field(min_length=1, max_length=90_000), AfterValidator(_base64)]
KeyId = Annotated[int, Field(ge=0, lt=2**32)]


def raw(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


class SignedPrekey(Strict):
    id: KeyId
    key: B64
    signature: B64


class PublishKeys(Strict):
    identity_key: B64
    signing_key: B64
    identity_sig: B64
    signed_prekey: SignedPrekey


class OneTimePrekey(Strict):
    id: KeyId
    key: B64


class UploadPrekeys(Strict):
    prekeys: list[OneTimePrekey] = Field(max_length=1000)


class PrekeyCount(BaseModel):
    one_time_prekeys: int


class DeviceKeysOut(BaseModel):
    user_id: str
    username: str
    device_id: str
    identity_key: str
    signing_key: str
    identity_sig: str
    spk_id: int
    spk: str
    spk_sig: str


class BundleOut(DeviceKeysOut):
    opk_id: int | None
    opk: str | None


class Claim(Strict):
    device_ids: list[str] = Field(min_length=1, max_length=500)


class InboxItem(Strict):
    device_id: str = Field(min_length=1, max_length=64)
    body: B64


class SendInbox(Strict):
    messages: list[InboxItem] = Field(min_length=1, max_length=1000)


class InboxSent(BaseModel):
    ids: list[int]


class InboxMessageOut(BaseModel):
    type: str
    id: int
    device_id: str
    sender_id: str
    sender: str
    sender_device_id: str
    body: str
    created_at: int


class InboxAck(Strict):
    up_to: int = Field(ge=0)


class InboxAcked(BaseModel):
    deleted: int
