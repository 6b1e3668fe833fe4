"""HTTP routes of the calls API (video-service); the rules are in :mod:`.service`.

A request about a call that another video-service replica hosts is sent on to that replica
(its Janus holds the call's media); if it does not answer, this replica takes the call over and
its devices join again here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from secureconnect.edge.deps import Caller, ServicesDep
from secureconnect.services import Services
from secureconnect.video.schemas import (
    Answer,
    CallOut,
    Configure,
    DecryptFailures,
    JoinOut,
    JsepOut,
    Keyframe,
    Layer,
    Ok,
    Publish,
    StartCall,
    Subscribe,
    SubscribeOut,
    Trickle,
)
from secureconnect.video.service import FORWARDED, CallElsewhere, CallService, calls_unavailable

router = APIRouter(prefix="/v1", tags=["calls"])


def calls(services: Services) -> CallService:
    if services.calls is None:
        raise calls_unavailable()
    return services.calls


async def _ok(step: Awaitable[None]) -> Ok:
    """A step whose answer is only that it was done."""
    await step
    return Ok()


async def on_owner(
    request: Request,
    services: Services,
    call_id: str,
    work: Callable[[CallService], Awaitable[Any]],
) -> Any:
    """Runs ``work`` here, or on the replica that hosts the call."""
    service = calls(services)
    try:
        return await work(service)
    except CallElsewhere as elsewhere:
        if elsewhere.url == service.url:  # a previous run of this very replica: it is gone
            if not await service.take_over(call_id, elsewhere.owner):
                raise
            return await work(service)
        if request.headers.get(FORWARDED) or not elsewhere.url:
            raise
        try:
            answer = await service.forward(
                elsewhere.url,
                request.method,
                request.url.path,
                await request.body(),
                request.headers.get("authorization", ""),
            )
        except httpx.TransportError:
            if not await service.take_over(call_id, elsewhere.owner):
                raise calls_unavailable() from None
            return await work(service)
        return Response(answer.content, answer.status_code, media_type="application/json")


# Everything is under /v1/calls, so that one ingress path reaches video-service.
@router.post(
    "/calls",
    response_model=CallOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "a call was already open in this conversation"}},
)
async def start_call(body: StartCall, caller: Caller, services: ServicesDep) -> Any:
    call, created = await calls(services).start(caller, body.conversation_id, body.media)
    return JSONResponse(call.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/calls", response_model=CallOut)
async def current_call(
    caller: Caller, services: ServicesDep, conversation_id: str = Query(max_length=64)
) -> CallOut:
    """The conversation's open (ringing or live) call; 404 ``no_call`` when there is none."""
    return await calls(services).current(caller, conversation_id)


@router.get("/calls/open", response_model=list[CallOut])
async def open_calls(caller: Caller, services: ServicesDep) -> list[CallOut]:
    """The ringing and live calls in the conversations you accepted (a message request's are
    left out, as their ringing is), oldest first."""
    return await calls(services).open_calls(caller)


@router.get("/calls/{call_id}", response_model=CallOut)
async def get_call(call_id: str, caller: Caller, services: ServicesDep) -> CallOut:
    return await calls(services).describe(caller, call_id)


@router.post("/calls/{call_id}/join", response_model=JoinOut)
async def join(call_id: str, request: Request, caller: Caller, services: ServicesDep) -> Any:
    return await on_owner(request, services, call_id, lambda s: s.join(caller, call_id))


@router.post("/calls/{call_id}/decline", response_model=CallOut)
async def decline(call_id: str, caller: Caller, services: ServicesDep) -> CallOut:
    return await calls(services).decline(caller, call_id)


@router.post("/calls/{call_id}/leave", response_model=CallOut)
async def leave(call_id: str, request: Request, caller: Caller, services: ServicesDep) -> Any:
    return await on_owner(request, services, call_id, lambda s: s.leave(caller, call_id))


@router.post("/calls/{call_id}/heartbeat", response_model=Ok)
async def heartbeat(call_id: str, request: Request, caller: Caller, services: ServicesDep) -> Any:
    return await on_owner(request, services, call_id, lambda s: _ok(s.heartbeat(caller, call_id)))


@router.post("/calls/{call_id}/publish", response_model=JsepOut)
async def publish(
    call_id: str, body: Publish, request: Request, caller: Caller, services: ServicesDep
) -> Any:
    async def work(s: CallService) -> JsepOut:
        jsep = await s.publish(caller, call_id, body.jsep, body.audio, body.video, body.screen)
        return JsepOut(jsep=jsep)

    return await on_owner(request, services, call_id, work)


@router.post("/calls/{call_id}/subscribe", response_model=SubscribeOut)
async def subscribe(
    call_id: str, body: Subscribe, request: Request, caller: Caller, services: ServicesDep
) -> Any:
    return await on_owner(
        request, services, call_id, lambda s: s.subscribe(caller, call_id, body.feeds, body.restart)
    )


@router.post("/calls/{call_id}/answer", response_model=Ok)
async def answer(
    call_id: str, body: Answer, request: Request, caller: Caller, services: ServicesDep
) -> Any:
    return await on_owner(
        request, services, call_id, lambda s: _ok(s.answer(caller, call_id, body.jsep))
    )


@router.post("/calls/{call_id}/ice", response_model=Ok)
async def trickle(
    call_id: str, body: Trickle, request: Request, caller: Caller, services: ServicesDep
) -> Any:
    candidate = body.candidate.model_dump() if body.candidate is not None else None

    return await on_owner(
        request,
        services,
        call_id,
        lambda s: _ok(s.trickle(caller, call_id, body.target, candidate)),
    )


@router.post("/calls/{call_id}/configure", response_model=CallOut)
async def configure(
    call_id: str, body: Configure, request: Request, caller: Caller, services: ServicesDep
) -> Any:
    return await on_owner(
        request,
        services,
        call_id,
        lambda s: s.configure(caller, call_id, body.audio, body.video, body.screen),
    )


@router.post("/calls/{call_id}/layer", response_model=Ok)
async def layer(
    call_id: str, body: Layer, request: Request, caller: Caller, services: ServicesDep
) -> Any:
    return await on_owner(
        request,
        services,
        call_id,
        lambda s: _ok(s.layer(caller, call_id, body.mid, body.substream)),
    )


@router.post("/calls/{call_id}/keyframe", response_model=Ok)
async def keyframe(
    call_id: str,
    request: Request,
    caller: Caller,
    services: ServicesDep,
    body: Keyframe | None = None,
) -> Any:
    feed = body.feed_id if body is not None else None
    return await on_owner(
        request, services, call_id, lambda s: _ok(s.keyframe(caller, call_id, feed))
    )


@router.post("/calls/{call_id}/decrypt-failures", response_model=Ok)
async def decrypt_failures(
    call_id: str, body: DecryptFailures, caller: Caller, services: ServicesDep
) -> Ok:
    """Clients report how many frames they could not decrypt (a count, no content)."""
    service = calls(services)
    await service.describe(caller, call_id)
    service.count_decrypt_failures(body.frames)
    return Ok()
