"""Profiles over HTTP: one's own name and picture, others' (where shared), groups' pictures.

Pictures are uploaded as the raw bytes of an image (up to 5 MiB) and served as JPEG at 64 or 256
pixels, with the picture's tag as its ETag."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from secureconnect.chat.schemas import ConversationOut, Rename
from secureconnect.edge.deps import Caller, ServicesDep
from secureconnect.profiles.images import MAX_UPLOAD_BYTES
from secureconnect.profiles.schemas import ProfileOut, ProfilesQuery, SetProfile

router = APIRouter(prefix="/v1", tags=["profiles"])
# Served where the chat is: /v1/conversations/... belongs to chat-service.
groups = APIRouter(prefix="/v1/conversations", tags=["profiles"])
PICTURE_PATHS = re.compile(r"^/v1/(me/avatar|conversations/[^/]+/avatar)$")  # bodies to 5 MiB
IMAGE = {
    "required": True,
    "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
}
JPEG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "the picture"}
}
Size = Query(256, description="64 or 256 pixels a side")


def _picture(request: Request, image: bytes, tag: str) -> Response:
    headers = {"ETag": f'"{tag}"', "Cache-Control": "private, no-cache"}
    if request.headers.get("if-none-match") == f'"{tag}"':
        return Response(status_code=304, headers=headers)
    return Response(image, media_type="image/jpeg", headers=headers)


@router.get("/me/profile", response_model=ProfileOut)
async def mine(caller: Caller, services: ServicesDep) -> ProfileOut:
    return await services.profiles.mine(caller)


@router.put("/me/profile", response_model=ProfileOut)
async def set_profile(body: SetProfile, caller: Caller, services: ServicesDep) -> ProfileOut:
    """The display name; every conversation one is in is told of a change."""
    return await services.profiles.set_name(caller, body.display_name)


@router.put("/me/avatar", response_model=ProfileOut, openapi_extra={"requestBody": IMAGE})
async def set_avatar(request: Request, caller: Caller, services: ServicesDep) -> ProfileOut:
    """JPEG, PNG, WebP or GIF; cropped square, re-encoded, its metadata dropped."""
    return await services.profiles.set_picture(caller, await request.body())


@router.delete("/me/avatar", response_model=ProfileOut)
async def remove_avatar(caller: Caller, services: ServicesDep) -> ProfileOut:
    return await services.profiles.set_picture(caller, None)


@router.post("/profiles", response_model=list[ProfileOut])
async def read(body: ProfilesQuery, caller: Caller, services: ServicesDep) -> list[ProfileOut]:
    """Of those named, the ones the caller shares a conversation with (and their own)."""
    return await services.profiles.read(caller, body.usernames)


@router.get("/users/{username}/avatar", response_class=Response, responses=JPEG)
async def avatar(
    username: str, request: Request, caller: Caller, services: ServicesDep, size: int = Size
) -> Response:
    image, tag = await services.profiles.picture(caller, username, size)
    return _picture(request, image, tag)


@groups.patch("/{conversation_id}", response_model=ConversationOut)
async def rename(
    conversation_id: str, body: Rename, caller: Caller, services: ServicesDep
) -> ConversationOut:
    """A group's admins rename it; its members see who did, in the timeline."""
    await services.chat.rename(caller, conversation_id, body.name)
    return await services.chat.describe(caller.user_id, conversation_id)


@groups.put(
    "/{conversation_id}/avatar",
    response_model=ConversationOut,
    openapi_extra={"requestBody": IMAGE},
)
async def set_group_avatar(
    conversation_id: str, request: Request, caller: Caller, services: ServicesDep
) -> ConversationOut:
    await services.profiles.set_group_picture(caller, conversation_id, await request.body())
    return await services.chat.describe(caller.user_id, conversation_id)


@groups.delete("/{conversation_id}/avatar", response_model=ConversationOut)
async def remove_group_avatar(
    conversation_id: str, caller: Caller, services: ServicesDep
) -> ConversationOut:
    await services.profiles.set_group_picture(caller, conversation_id, None)
    return await services.chat.describe(caller.user_id, conversation_id)


@groups.get("/{conversation_id}/avatar", response_class=Response, responses=JPEG)
async def group_avatar(
    conversation_id: str, request: Request, caller: Caller, services: ServicesDep, size: int = Size
) -> Response:
    image, tag = await services.profiles.group_picture(caller, conversation_id, size)
    return _picture(request, image, tag)


__all__ = ["MAX_UPLOAD_BYTES", "PICTURE_PATHS", "groups", "router"]
