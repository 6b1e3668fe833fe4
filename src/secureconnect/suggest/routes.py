"""Suggested replies: the pack for web clients, and their counts (never text)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Response

from secureconnect.edge.deps import Caller, ServicesDep
from secureconnect.services import Services
from secureconnect.suggest.schemas import SuggestManifest, SuggestReport
from secureconnect.suggest.service import SuggestService

router = APIRouter(prefix="/v1/suggest", tags=["suggest"])
IMMUTABLE = "public, max-age=31536000, immutable"


def _suggest(services: Services) -> SuggestService:
    assert services.suggest is not None  # the router is mounted only where the service runs
    return services.suggest


@router.get("", response_model=SuggestManifest)
async def manifest(services: ServicesDep, response: Response) -> SuggestManifest:
    response.headers["Cache-Control"] = "no-cache"
    return _suggest(services).manifest()


@router.get(
    "/pack/{sha256}.json",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the pack's bytes"}},
)
async def pack(services: ServicesDep, sha256: str = Path(pattern="^[0-9a-f]{64}$")) -> Response:
    """Named by its hash, so a client may keep it for ever; the client checks the hash too."""
    body = _suggest(services).pack_bytes(sha256)
    return Response(body, media_type="application/json", headers={"Cache-Control": IMMUTABLE})


@router.post("/report", status_code=204, response_class=Response)
async def report(body: SuggestReport, caller: Caller, services: ServicesDep) -> Response:
    _suggest(services).report(body)
    return Response(status_code=204)
