"""What every domain's request schemas share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A request body that names a field the API does not know is refused (422, naming it),
    rather than silently ignored: a typo in a client must not look like success."""

    model_config = ConfigDict(extra="forbid")
