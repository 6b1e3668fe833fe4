"""Response shapes of the ops API (the SDK returns them as they are)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict


class Health(BaseModel):
    status: str
    role: str
    version: str


class Readiness(BaseModel):
    status: str  # ready | not ready
    checks: dict[str, str] = Field(description="store, bus: ok or failed: <reason>; draining")


class Deploy(BaseModel):
    role: str
    release: str
    previous: str | None = Field(description="the release it replaced; None for the first")
    host: str
    started_at: int


class PoolUse(BaseModel):
    in_use: int
    max_open: int


class Standby(BaseModel):
    """A standby streaming from the primary, as ``pg_stat_replication`` shows it."""

    name: str
    address: str
    state: str  # streaming, catchup, ...
    sync: str  # sync, quorum, potential, async
    lag_bytes: int = Field(description="WAL the standby has not replayed yet")
    lag_ms: float = Field(description="how long its last replay took to follow (replay_lag)")


class StoreReport(BaseModel):
    """Round trip, primary or standby, and the durability in force (runbook 23.7)."""

    backend: str  # sqlite | postgresql
    latency_ms: float
    role: str  # primary | standby
    node: str = Field("", description="the node the services reach (host:port)")
    standbys: list[Standby] = Field(default_factory=list)
    consistency: dict[str, str] = Field(
        description="synchronous/journal_mode (SQLite) or synchronous_commit and "
        "synchronous_standby_names (PostgreSQL)"
    )
    replicas: int
    pool: PoolUse
    errors: dict[str, int] = Field(description="store errors by code since start")


class SetDurability(Strict):
    mode: Literal["sync", "local"] = Field(
        description="sync: every commit waits for a standby (LOCAL_QUORUM); local: for the "
        "primary's disk only (LOCAL_ONE, the emergency while a standby is lost)"
    )


class NewStorePassword(Strict):
    verifier: str = Field(
        max_length=300,
        description="the new password as a SCRAM-SHA-256 verifier, made on the operator's "
        "machine: the password itself is never sent",
    )


class StorePasswordChanged(BaseModel):
    role: str = Field(description="the PostgreSQL role whose password changed")


class StorePasswordProbe(Strict):
    password: str = Field(min_length=1, max_length=200)


class StorePasswordChecked(BaseModel):
    accepted: bool = Field(description="whether PostgreSQL lets the store's role in with it")
