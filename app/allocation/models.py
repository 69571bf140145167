"""Allocation runs (queued solves over a scope) and their plans (proposed allocation lines)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

RUN_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_RUN_STATUSES: tuple[str, ...] = ("queued", "running")
PLAN_STATES: tuple[str, ...] = ("proposed", "approved", "rejected", "superseded")


class AllocationRun(SQLModel, table=True):
    __tablename__ = "allocation_runs"
    __table_args__ = (
        CheckConstraint(in_list("status", RUN_STATUSES), name="status"),
        CheckConstraint("progress_percent >= 0 AND progress_percent <= 100", name="progress_range"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default="queued", max_length=16, index=True)
    # Scope: empty list = all. Two scopes overlap when they share a (region, item) pair.
    scope_regions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    scope_item_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    time_limit_s: float = 60.0
    problem: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    progress_stage: str | None = Field(default=None, max_length=64)
    progress_percent: float = 0.0
    progress_message: str | None = Field(default=None, max_length=500)
    solver_stats: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0
    worker_id: str | None = Field(default=None, max_length=128)
    heartbeat_at: datetime | None = ts_field(nullable=True, default_now=False)
    cancel_requested: bool = False
    created_by_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    version: int = 1
    created_at: datetime = ts_field(index=True)
    started_at: datetime | None = ts_field(nullable=True, default_now=False)
    finished_at: datetime | None = ts_field(nullable=True, default_now=False)
    updated_at: datetime = ts_field()


class Plan(SQLModel, table=True):
    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint(in_list("state", PLAN_STATES), name="state"),
        CheckConstraint(in_list("solver_status", ("optimal", "time_limit")), name="solver_status"),
        UniqueConstraint("run_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="allocation_runs.id")
    state: str = Field(default="proposed", max_length=16, index=True)
    solver_status: str = Field(max_length=16)
    # Per-demand results (fill, unmet, reason) and KPIs, as in Plan JSON v1, kept current on edits.
    demands: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    kpis: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    baseline_kpis: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    edited: bool = False
    decided_by_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    decided_at: datetime | None = ts_field(nullable=True, default_now=False)
    version: int = 1
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class PlanLine(SQLModel, table=True):
    """One allocation: a depot lot or a confirmed pledge → a request line."""

    __tablename__ = "plan_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("(lot_id IS NULL) <> (pledge_id IS NULL)", name="one_source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="plans.id", index=True)
    source_ref: str = Field(max_length=32)  # the Problem's source id, e.g. "lot-17" or "pledge-3"
    lot_id: int | None = Field(default=None, foreign_key="inventory_lots.id", index=True)
    pledge_id: int | None = Field(default=None, foreign_key="pledges.id", index=True)
    request_line_id: int = Field(foreign_key="request_lines.id", index=True)
    item_id: int = Field(foreign_key="items.id")
    origin_site_id: int = Field(foreign_key="sites.id")
    destination_site_id: int = Field(foreign_key="sites.id")
    quantity: int
    distance_km: float
    cost: float
    manual: bool = False
