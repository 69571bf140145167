"""Request and response bodies of the allocation-run endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Region = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class RunScope(BaseModel):
    """Empty list = all. Regions are the requesting organisations' regions."""

    model_config = ConfigDict(extra="forbid")
    regions: list[Region] = Field(default_factory=list, max_length=1000)
    item_ids: list[int] = Field(default_factory=list, max_length=10_000)


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_limit_s: float | None = Field(default=None, gt=0, le=3600, description="Solver time limit (default 60 s)")
    speed_kmh: float | None = Field(default=None, gt=0, le=10_000, description="Travel speed (default 50 km/h)")
    cost_per_unit_km: float | None = Field(default=None, ge=0, le=1_000_000, description="Default 0.01")


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: RunScope = Field(default_factory=RunScope)
    settings: RunSettings = Field(default_factory=RunSettings)


class RunProgress(BaseModel):
    stage: str | None
    percent: float
    message: str | None


class RunPublic(BaseModel):
    id: int
    status: RunStatus
    scope: RunScope
    settings: dict[str, Any]
    time_limit_s: float
    progress: RunProgress
    solver_stats: dict[str, Any] | None
    error: str | None
    attempts: int
    worker_id: str | None
    cancel_requested: bool
    plan_id: int | None
    version: int
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
