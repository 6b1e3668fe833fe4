"""What the suggestion endpoints take and answer: never a word of anyone's text."""

from __future__ import annotations

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict


class SuggestManifest(BaseModel):
    """Where the web client finds the pack, and the hash it must have."""

    version: str
    sha256: str
    size: int
    url: str
    computed_on: str = Field(
        "device", description="where suggestions are computed: always on the person's device"
    )


class SuggestReport(Strict):
    """Counts a client adds up and sends now and then; no text, no conversation, no intent."""

    pack_version: str = Field(max_length=40)
    shown: int = Field(0, ge=0, le=10_000, description="times a row of chips was shown")
    taken: list[int] = Field(
        default_factory=list,
        max_length=1000,
        description="for each chip a person tapped, its position (1-3)",
    )
    load_failures: int = Field(0, ge=0, le=100, description="packs that would not load or verify")


class SuggestCheck(BaseModel):
    """The status page's and the diagnosis's view: is the pack here, whole, and served."""

    ok: bool
    detail: str
    version: str | None = None
    sha256: str | None = None
