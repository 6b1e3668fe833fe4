"""Request and response shapes of profiles. Pictures travel as raw image bytes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict


class SetProfile(Strict):
    display_name: str | None = Field(
        None, max_length=64, description="shown instead of the username; null or empty: none"
    )


class ProfilesQuery(Strict):
    usernames: list[str] = Field(max_length=256, description="whose profiles to read")


class ProfileOut(BaseModel):
    username: str
    display_name: str | None
    avatar: str | None = Field(
        None, description="the picture's tag (GET /v1/users/{username}/avatar); null: none"
    )
