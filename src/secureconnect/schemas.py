"""What every domain's request schemas share."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The stores keep integers in 64 bits: a larger number from a client is refused (422) where it
# arrives, never handed to the database to fail there as a 500.
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]


def _has_wide_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -INT64_MAX - 1 <= value <= INT64_MAX
    if isinstance(value, dict):
        return any(_has_wide_int(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_wide_int(v) for v in value)
    return False


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Strict(BaseModel):
    """A request body that names a field the API does not know is refused (422, naming it),
    rather than silently ignored: a typo in a client must not look like success.

    Text with a NUL character is refused too (422): PostgreSQL cannot store one, and no client
    of this API has a reason to send one (message bodies are base64). So is an integer beyond
    64 bits, which no column can hold."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        if _has_wide_int(data):
            raise ValueError(f"numbers must be between {-INT64_MAX - 1} and {INT64_MAX}")
        return data


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, for clients to match (see docs/api.md)")
    message: str = Field(description="for people: what was wrong and what to do")


class ErrorOut(BaseModel):
    """Every refusal's body."""

    error: ErrorDetail


# The refusals any route may give (the edge's limits answer 413 and 429 anywhere, an
# unreachable database 503), documented on every route so that a generated client knows them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in (
        (400, "the request breaks a rule: `error.code` names it"),
        (401, "no caller, or a token that is no longer valid"),
        (403, "a known caller who may not do this"),
        (404, "no such thing, or none the caller may see"),
        (409, "the state does not allow it"),
        (413, "over a size limit"),
        (422, "a field is missing, of the wrong type, or unknown"),
        (429, "over a rate limit: wait for Retry-After"),
        (503, "a dependency (the database, the bus, the SFU) is away: try again"),
    )
}
