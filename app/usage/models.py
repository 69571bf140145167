from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import ts_field


class UsageReport(SQLModel, table=True):
    """On-hand and burn rate reported by a requesting organisation for one item."""

    __tablename__ = "usage_reports"
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="on_hand_nonnegative"),
        CheckConstraint("daily_usage IS NULL OR daily_usage >= 0", name="daily_usage_nonnegative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id", index=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    on_hand: int
    daily_usage: float | None = None
    estimated_daily_usage: float | None = None
    reported_at: datetime = ts_field(index=True)
    created_by_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    created_at: datetime = ts_field()


class UsageReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int
    on_hand: int = Field(ge=0, le=1_000_000_000)
    daily_usage: float | None = Field(default=None, ge=0, le=1_000_000_000)
    reported_at: AwareDatetime | None = None
    organization_id: int | None = Field(
        default=None, description="Optional; when given it must be the caller's own organization (else 422)"
    )


class UsageReportPublic(BaseModel):
    id: int
    organization_id: int
    item_id: int
    on_hand: int
    daily_usage: float | None
    estimated_daily_usage: float | None
    days_of_supply: float | None
    reported_at: datetime
    created_at: datetime
