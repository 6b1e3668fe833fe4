"""Request and response shapes of the guard's admin API (the SDK returns the response ones)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict


class Block(Strict):
    network: str = Field(max_length=64, description="an address or CIDR, e.g. 203.0.113.0/24")
    reason: str = Field(min_length=1, max_length=500)
    expires_in_s: int | None = Field(None, gt=0, description="lift by itself after this long")


class Lift(Strict):
    network: str = Field(max_length=64)


class RateLimit(Strict):
    mode: str = Field(max_length=16, description="normal | emergency")


class FailedLogins(BaseModel):
    ip: str
    count: int
    last_at: int


class BlockedNetwork(BaseModel):
    network: str
    reason: str
    blocked_by: str
    blocked_at: int
    expires_at: int | None


class RateLimitState(BaseModel):
    mode: str
    set_by: str | None
    set_at: int | None
    emergency_requests_per_min: int


class SecurityReport(BaseModel):
    """What the security diagnosis reads: who fails to log in, who is blocked, which mode."""

    window_s: int
    failed_logins: list[FailedLogins] = Field(description="per address, most failures first")
    failed_logins_total: int
    blocked: list[BlockedNetwork]
    rate_limit: RateLimitState


class Blocked(BaseModel):
    network: str
    blocked: bool = True
    already: bool = Field(description="it was on the deny list before this request")


class Lifted(BaseModel):
    network: str
    blocked: bool = False


class ModeSet(BaseModel):
    mode: str
