"""API shapes of a plan under review (not tables; those are in app.allocation.models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PlanLinePublic(BaseModel):
    id: int
    source: str = Field(description="The snapshot's source id: lot-<id> or pledge-<id>")
    lot_id: int | None
    pledge_id: int | None
    request_line_id: int
    item_id: int = Field(description="The item that ships (may be a substitute for the requested one)")
    origin_site_id: int
    destination_site_id: int
    quantity: int
    distance_km: float
    cost: float
    manual: bool = Field(description="Changed by hand after the solve")


class DemandResultPublic(BaseModel):
    id: str = Field(description="The snapshot's demand id: line-<request line id>")
    request_line_id: int | None
    requested: int = Field(description="Quantity the snapshot asked for (remaining, capped at justified need)")
    allocated: int
    fill_rate: float
    unmet: int
    reason: str | None


class DiffLine(BaseModel):
    request_line_id: int
    quantity: int = Field(description="Units for the line in this plan")
    approved_quantity: int = Field(description="Units for the line in the last approved plan")
    delta: int


class PlanDiff(BaseModel):
    approved_plan_id: int | None = Field(description="The most recently approved other plan (null: none yet)")
    lines: list[DiffLine] = Field(description="Only request lines whose quantity differs")


class PlanPublic(BaseModel):
    id: int
    run_id: int
    state: str
    solver_status: str
    edited: bool
    version: int
    decided_by_key_id: int | None
    decided_at: datetime | None
    created_at: datetime
    updated_at: datetime
    lines: list[PlanLinePublic]
    demands: list[DemandResultPublic]
    kpis: dict[str, Any]
    baseline_kpis: dict[str, Any] | None = Field(description="KPIs of the first-come-first-served greedy baseline")
    diff_from_last_approved: PlanDiff
    shipment_ids: list[int] = Field(description="Shipments created when this plan was approved")


class PlanLineUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantity: int = Field(gt=0, le=1_000_000_000)
