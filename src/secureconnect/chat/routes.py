"""HTTP and WebSocket routes of the chat API; the logic is in :mod:`secureconnect.chat.service`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, WebSocket, status
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from secureconnect.chat.realtime import SocketSession
from secureconnect.chat.schemas import (
    AddMember,
    ConversationOut,
    CreateConversation,
    Decline,
    EventOut,
    HistoryOut,
    Mark,
    MemberOut,
    ReceiptOut,
    SendMessage,
    Typing,
)
from secureconnect.edge.deps import Caller, ServicesDep
from secureconnect.edge.guard import admitted
from secureconnect.schemas import INT64_MAX
from secureconnect.services import services_of

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post(
    "/conversations",
    response_model=ConversationOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "the 1:1 conversation already existed"}},
)
async def create_conversation(
    body: CreateConversation, caller: Caller, services: ServicesDep
) -> Any:
    conv, created = await services.chat.create(caller, body.kind, body.members, body.name)
    return JSONResponse(conv.model_dump(), status_code=201 if created else 200)


@router.get("/conversations", response_model=list[ConversationOut])
async def list_conversations(caller: Caller, services: ServicesDep) -> list[ConversationOut]:
    return await services.chat.list_for(caller.user_id)


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
async def get_conversation(
    conversation_id: str, caller: Caller, services: ServicesDep
) -> ConversationOut:
    return await services.chat.describe(caller.user_id, conversation_id)


@router.post("/conversations/{conversation_id}/accept", response_model=ConversationOut)
async def accept_request(
    conversation_id: str, caller: Caller, services: ServicesDep
) -> ConversationOut:
    """Accepts a message request: the conversation becomes an ordinary one."""
    return await services.chat.accept(caller, conversation_id)


@router.post(
    "/conversations/{conversation_id}/decline",
    status_code=204,
    responses={409: {"description": "not_a_request: the conversation is not a request"}},
)
async def decline_request(
    conversation_id: str, body: Decline, caller: Caller, services: ServicesDep
) -> Response:
    """Declines a message request (leaving it), and with ``block`` blocks who asked."""
    await services.chat.decline(caller, conversation_id, body.block)
    return Response(status_code=204)


@router.get("/blocks", response_model=list[str])
async def blocked(caller: Caller, services: ServicesDep) -> list[str]:
    """The people you blocked: they cannot put you in a conversation."""
    return await services.chat.blocked(caller)


@router.delete("/blocks/{username}", status_code=204)
async def unblock(username: str, caller: Caller, services: ServicesDep) -> Response:
    await services.chat.unblock(caller, username)
    return Response(status_code=204)


@router.get("/conversations/{conversation_id}/members", response_model=list[MemberOut])
async def list_members(
    conversation_id: str, caller: Caller, services: ServicesDep
) -> list[MemberOut]:
    return await services.chat.members_of(caller.user_id, conversation_id)


@router.post(
    "/conversations/{conversation_id}/members",
    response_model=EventOut,
    status_code=status.HTTP_201_CREATED,
)
async def add_member(
    conversation_id: str, body: AddMember, caller: Caller, services: ServicesDep
) -> Any:
    return await services.chat.add_member(caller, conversation_id, body.username)


@router.delete("/conversations/{conversation_id}/members/{username}", response_model=EventOut)
async def remove_member(
    conversation_id: str, username: str, caller: Caller, services: ServicesDep
) -> Any:
    return await services.chat.remove_member(caller, conversation_id, username)


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=EventOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "a retry: the message stored the first time"}},
)
async def send_message(
    conversation_id: str, body: SendMessage, caller: Caller, services: ServicesDep
) -> Any:
    event, created = await services.chat.send(
        caller, conversation_id, body.client_msg_id, body.content_type, body.body_bytes()
    )
    if created:
        services.metrics.messages.inc()
    return JSONResponse(event, status_code=201 if created else 200)


@router.get("/conversations/{conversation_id}/messages", response_model=HistoryOut)
async def history(
    conversation_id: str,
    caller: Caller,
    services: ServicesDep,
    after: int | None = Query(
        None, ge=-INT64_MAX - 1, le=INT64_MAX, description="exclusive: events with seq > after"
    ),
    before: int | None = Query(
        None,
        ge=-INT64_MAX - 1,
        le=INT64_MAX,
        description="exclusive: the newest events with seq < before",
    ),
    limit: int = Query(100, ge=-INT64_MAX, le=INT64_MAX, description="page size"),
) -> Any:
    return await services.chat.history(
        caller.user_id, conversation_id, after=after, before=before, limit=limit
    )


@router.post("/conversations/{conversation_id}/receipts", response_model=ReceiptOut)
async def mark(conversation_id: str, body: Mark, caller: Caller, services: ServicesDep) -> Any:
    return await services.chat.mark(caller, conversation_id, body.delivered_seq, body.read_seq)


@router.get("/conversations/{conversation_id}/receipts", response_model=list[ReceiptOut])
async def list_receipts(
    conversation_id: str, caller: Caller, services: ServicesDep
) -> list[ReceiptOut]:
    return await services.chat.receipts_of(caller.user_id, conversation_id)


@router.post("/conversations/{conversation_id}/typing", status_code=204)
async def typing(
    conversation_id: str, body: Typing, caller: Caller, services: ServicesDep
) -> Response:
    await services.chat.typing(caller, conversation_id, body.typing)
    return Response(status_code=204)


REALTIME_PATH = "/v1/events"


async def events(scope: Scope, receive: Receive, send: Send) -> None:
    """The realtime stream, served ahead of the app's middleware and router (``app.py``): each
    of thousands of idle sockets would otherwise hold a suspended frame of every layer (about
    7 KiB), and every frame sent would pass through them; this socket needs only the guard,
    and logs its own line when it closes (decision 0023)."""
    services = services_of(scope["app"])
    if not await admitted(scope, send, services.guard):
        return
    # The upgrade's headers have been read (the guard and, behind a proxy, the client's
    # address): let them go rather than keep them for the socket's life, ~1.5 KiB each.
    scope["headers"] = []
    ws = WebSocket(scope, receive, send)
    await SocketSession(
        ws,
        services.accounts,
        services.chat,
        services.inbox,
        services.hub,
        auth_timeout=services.settings.ws_auth_timeout_s,
        queue_size=services.settings.ws_send_queue,
        send_buffer_bytes=services.settings.ws_send_buffer_bytes,
        limits=services.limits,
    ).run()
