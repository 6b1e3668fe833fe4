"""Request and response shapes of the accounts API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict


class RegisterRequest(Strict):
    # Bounded only against abuse: the rule itself (3-32, its letters) is checked by the service,
    # whose answer says what the rule is (a schema's "at most 64 characters" would not).
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=4096)


class UserOut(BaseModel):
    id: str
    username: str
    created_at: int


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=4096)
    device_name: str = Field("unnamed device", min_length=1, max_length=100)
    device_id: str | None = Field(
        None, max_length=64, description="log in again on a device this account already has"
    )
    totp_code: str | None = Field(
        None,
        max_length=32,
        description="with two-step verification on: the app's current code or a recovery code",
    )


class LoginResponse(BaseModel):
    token: str
    expires_at: int
    user_id: str
    username: str
    device_id: str
    session_id: str
    new_device: bool
    must_change_password: bool = Field(
        False, description="the breach procedure ran: change the password before anything else"
    )


class MeResponse(BaseModel):
    user_id: str
    username: str
    device_id: str
    session_id: str
    max_message_bytes: int = Field(
        65536,
        description="the largest message body (ciphertext) the server accepts: clients check "
        "the text a person typed against it before sending",
    )
    edit_window_s: int = Field(
        86400,
        description="how long after sending a message its sender may edit it or delete it "
        "for everyone: clients apply an edit or deletion only within it",
    )


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


class TotpStatusOut(BaseModel):
    enabled: bool
    recovery_codes_left: int


class TotpEnrolmentOut(BaseModel):
    secret: str = Field(description="base32, for apps that cannot scan the QR code")
    otpauth_uri: str
    qr_svg: str = Field(description="the otpauth URI as a QR code (SVG)")


class TotpConfirmRequest(Strict):
    code: str = Field(min_length=1, max_length=32)


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(description="each works once instead of a code; shown once")


class TotpDisableRequest(Strict):
    password: str = Field(min_length=1, max_length=4096)
    code: str = Field(min_length=1, max_length=32)


class PasswordChangeRequest(Strict):
    current_password: str = Field(min_length=1, max_length=4096)
    new_password: str = Field(min_length=1, max_length=4096)
    keep_other_sessions: bool = Field(
        False, description="leave the account's other sessions logged in (default: log them out)"
    )


class PasswordChanged(BaseModel):
    revoked_sessions: int = Field(description="other sessions logged out")


class EmailOut(BaseModel):
    email: str | None = Field(description="the verified address security notices go to")
    pending: str | None = Field(description="an address waiting for its mailed code")


class EmailRequest(Strict):
    email: str = Field(min_length=3, max_length=254)


class EmailVerifyRequest(Strict):
    code: str = Field(min_length=1, max_length=16)


class CompromiseRequest(Strict):
    all: bool = Field(False, description="every user")
    usernames: list[str] = Field(default_factory=list, max_length=10_000)
    reason: str = Field(min_length=3, max_length=1000)
    dry_run: bool = False


class CompromiseOut(BaseModel):
    users: int = Field(description="users dealt with now")
    already: int = Field(description="users this same command had already dealt with")
    sessions_revoked: int
    devices_revoked: int
    mailed: int
    no_address: int = Field(description="users dealt with now who have no verified address")
    dry_run: bool


class MailingRequest(Strict):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=100_000)
    batch: int = Field(50, ge=1, le=1000)
    dry_run: bool = False


class MailingOut(BaseModel):
    sent_now: int
    sent: int = Field(description="users this mail went to, in all")
    remaining: int
    failed: int = Field(description="refused by the mail server in this batch; tried again later")
    no_address: int
