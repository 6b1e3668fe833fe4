"""Attachments over HTTP: create, send chunks, complete, fetch, delete (``/v1/blobs``)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse

from secureconnect.blobs.schemas import BlobOut, CreateBlob, UsageOut
from secureconnect.blobs.service import BlobService
from secureconnect.edge.deps import Caller, ServicesDep
from secureconnect.errors import Invalid
from secureconnect.services import Services

router = APIRouter(prefix="/v1/blobs", tags=["attachments"])
BlobId = Path(pattern="^[0-9a-f]{32}$")
CHUNK_PATH = re.compile(r"^/v1/blobs/[^/]+/chunks/[^/]+$")  # bodies up to MAX_CHUNK


def _blobs(services: Services) -> BlobService:
    assert services.blobs is not None  # the router is mounted only where the service runs
    return services.blobs


@router.get("", response_model=UsageOut)
async def usage(caller: Caller, services: ServicesDep) -> UsageOut:
    """The caller's stored attachment bytes, quota and limits."""
    return await _blobs(services).usage(caller.user_id)


@router.post("", response_model=BlobOut, status_code=201)
async def create(body: CreateBlob, caller: Caller, services: ServicesDep) -> BlobOut:
    """Begins an upload into a conversation the caller is in; counts against their quota."""
    return await _blobs(services).create(caller.user_id, body)


@router.put(
    "/{blob_id}/chunks/{n}",
    status_code=204,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def put_chunk(
    request: Request,
    caller: Caller,
    services: ServicesDep,
    blob_id: str = BlobId,
    n: int = Path(ge=0, le=2**31),
) -> Response:
    """One chunk's ciphertext, exactly ``chunk_size`` bytes (the last: the rest). Sending a
    chunk again replaces it: a retry after a lost answer is harmless."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise Invalid("bad_content_length", "Content-Length must be a number of bytes")
    length = int(declared) if declared is not None else None
    await _blobs(services).put_chunk(caller.user_id, blob_id, n, length, request.stream())
    return Response(status_code=204)


@router.post("/{blob_id}/complete", response_model=BlobOut)
async def complete(caller: Caller, services: ServicesDep, blob_id: str = BlobId) -> BlobOut:
    """Every chunk has arrived: the attachment may now be fetched by the conversation."""
    return await _blobs(services).complete(caller.user_id, blob_id)


@router.get("/{blob_id}", response_model=BlobOut)
async def describe(caller: Caller, services: ServicesDep, blob_id: str = BlobId) -> BlobOut:
    """Its size and chunks; to its uploader also during the upload (what to send again)."""
    return await _blobs(services).describe(caller.user_id, blob_id)


@router.get(
    "/{blob_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "ciphertext"}},
)
async def content(caller: Caller, services: ServicesDep, blob_id: str = BlobId) -> Response:
    """The ciphertext, every chunk in order, streamed (the key is in the message, not here)."""
    blob, body = await _blobs(services).open(caller.user_id, blob_id)
    return StreamingResponse(
        body,
        media_type="application/octet-stream",
        headers={"Content-Length": str(blob.size), "Cache-Control": "private, no-store"},
    )


@router.delete("/{blob_id}", status_code=204, response_class=Response)
async def remove(caller: Caller, services: ServicesDep, blob_id: str = BlobId) -> Response:
    """By its uploader only (deleting the message for everyone does this)."""
    await _blobs(services).delete(caller.user_id, blob_id)
    return Response(status_code=204)
