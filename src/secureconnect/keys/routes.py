"""HTTP routes of the key directory and inbox; the logic is in :mod:`secureconnect.keys.service`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from secureconnect.edge.deps import Caller, ServicesDep
from secureconnect.keys.schemas import (
    BundleOut,
    Claim,
    DeviceKeysOut,
    InboxAck,
    InboxAcked,
    InboxMessageOut,
    InboxSent,
    PrekeyCount,
    PublishKeys,
    SendInbox,
    UploadPrekeys,
    raw,
)
from secureconnect.schemas import INT64_MAX

router = APIRouter(prefix="/v1", tags=["keys"])


@router.put("/keys/device", status_code=204)
async def publish(body: PublishKeys, caller: Caller, services: ServicesDep) -> Response:
    spk = body.signed_prekey
    await services.keys.publish(
        caller,
        raw(body.identity_key),
        raw(body.signing_key),
        raw(body.identity_sig),
        spk.id,
        raw(spk.key),
        raw(spk.signature),
    )
    return Response(status_code=204)


@router.post("/keys/one-time", response_model=PrekeyCount)
async def upload_prekeys(body: UploadPrekeys, caller: Caller, services: ServicesDep) -> Any:
    left = await services.keys.upload_prekeys(caller, [(p.id, raw(p.key)) for p in body.prekeys])
    return {"one_time_prekeys": left}


@router.get("/keys/count", response_model=PrekeyCount)
async def prekey_count(caller: Caller, services: ServicesDep) -> Any:
    return {"one_time_prekeys": await services.keys.stock(caller)}


@router.get("/users/{username}/devices", response_model=list[DeviceKeysOut])
async def user_devices(username: str, caller: Caller, services: ServicesDep) -> Any:
    return await services.keys.user_devices(caller, username)


@router.get("/conversations/{conversation_id}/devices", response_model=list[DeviceKeysOut])
async def conversation_devices(conversation_id: str, caller: Caller, services: ServicesDep) -> Any:
    return await services.keys.conversation_devices(caller, conversation_id)


@router.post("/keys/claim", response_model=list[BundleOut])
async def claim(body: Claim, caller: Caller, services: ServicesDep) -> Any:
    return await services.keys.claim(caller, body.device_ids)


@router.post("/inbox", response_model=InboxSent, status_code=201)
async def send_inbox(body: SendInbox, caller: Caller, services: ServicesDep) -> Any:
    ids = await services.inbox.send(caller, [(m.device_id, raw(m.body)) for m in body.messages])
    return {"ids": ids}


@router.get("/inbox", response_model=list[InboxMessageOut])
async def pending(
    caller: Caller,
    services: ServicesDep,
    after: int = Query(0, ge=0, le=INT64_MAX),
    limit: int = Query(500, ge=1, le=1000),
) -> Any:
    return await services.inbox.pending(caller, after, limit)


@router.post("/inbox/ack", response_model=InboxAcked)
async def ack_inbox(body: InboxAck, caller: Caller, services: ServicesDep) -> Any:
    return {"deleted": await services.inbox.ack(caller, body.up_to)}
