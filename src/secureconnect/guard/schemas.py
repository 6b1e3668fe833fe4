"""Request bodies of the guard's admin API."""

from __future__ import annotations

from pydantic import Field

from secureconnect.schemas import Strict


class Block(Strict):
    network: str = Field(max_length=64, description="an address or CIDR, e.g. 203.0.113.0/24")
    reason: str = Field(min_length=1, max_length=500)
    expires_in_s: int | None = Field(None, gt=0, description="lift by itself after this long")


class Lift(Strict):
    network: str = Field(max_length=64)


class RateLimit(Strict):
    mode: str = Field(max_length=16, description="normal | emergency")
