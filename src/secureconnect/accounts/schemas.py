"""Request and response shapes of the accounts API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict


class RegisterRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=4096)


class UserOut(BaseModel):
    id: str
    username: str
    created_at: int


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=4096)
    device_name: str = Field("unnamed device", min_length=1, max_length=100)
    device_id: str | None = Field(
        None, max_length=64, description="log in again on a device this account already has"
    )


class LoginResponse(BaseModel):
    token: str
    expires_at: int
    user_id: str
    username: str
    device_id: str
    session_id: str
    new_device: bool


class MeResponse(BaseModel):
    user_id: str
    username: str
    device_id: str
    session_id: str


class DeviceOut(BaseModel):
    id: str
    name: str
    created_at: int
    last_seen_at: int
    revoked_at: int | None
    current: bool


class SessionOut(BaseModel):
    id: str
    device_id: str
    created_at: int
    expires_at: int
    last_used_at: int
    revoked_at: int | None
    current: bool
