from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

Priority = Literal["critical", "high", "routine"]
PRIORITIES: tuple[str, ...] = ("critical", "high", "routine")
LineStatus = Literal["open", "partially_allocated", "allocated", "partially_fulfilled", "fulfilled", "cancelled"]
LINE_STATUSES: tuple[str, ...] = (
    "open",
    "partially_allocated",
    "allocated",
    "partially_fulfilled",
    "fulfilled",
    "cancelled",
)


class SupplyRequest(SQLModel, table=True):
    """A request header; its status summarizes its lines."""

    __tablename__ = "requests"
    __table_args__ = (CheckConstraint(in_list("status", LINE_STATUSES), name="status"),)

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id", index=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    justification: str | None = Field(default=None, max_length=2000)
    status: str = Field(default="open", max_length=32, index=True)
    created_by_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    version: int = 1
    created_at: datetime = ts_field(index=True)
    updated_at: datetime = ts_field()


class RequestLine(SQLModel, table=True):
    """remaining = quantity − (reserved + in_transit + delivered)."""

    __tablename__ = "request_lines"
    __table_args__ = (
        CheckConstraint(in_list("status", LINE_STATUSES), name="status"),
        CheckConstraint(in_list("priority", PRIORITIES), name="priority"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "quantity_reserved >= 0 AND quantity_in_transit >= 0 AND quantity_delivered >= 0",
            name="progress_nonnegative",
        ),
        CheckConstraint(
            "quantity_reserved + quantity_in_transit + quantity_delivered <= quantity",
            name="progress_within_quantity",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="requests.id", index=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    quantity: int
    priority: str = Field(max_length=16, index=True)
    needed_by: datetime | None = ts_field(nullable=True, default_now=False)
    status: str = Field(default="open", max_length=32, index=True)
    quantity_reserved: int = 0
    quantity_in_transit: int = 0
    quantity_delivered: int = 0
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()

    @property
    def remaining(self) -> int:
        return self.quantity - self.quantity_reserved - self.quantity_in_transit - self.quantity_delivered


class RequestLineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int
    quantity: int = Field(gt=0, le=1_000_000_000)
    priority: Priority = "routine"
    needed_by: AwareDatetime | None = None


class RequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site_id: int
    justification: str | None = Field(default=None, max_length=2000)
    lines: list[RequestLineCreate] = Field(min_length=1, max_length=1000)
    organization_id: int | None = Field(
        default=None, description="Optional; when given it must be the caller's own organization (else 422)"
    )


class RequestUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site_id: int | None = None
    justification: str | None = Field(default=None, max_length=2000)


class RequestLineUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantity: int | None = Field(default=None, gt=0, le=1_000_000_000)
    priority: Priority | None = None
    needed_by: AwareDatetime | None = None


class RequestLinePublic(BaseModel):
    id: int
    request_id: int
    item_id: int
    quantity: int
    priority: str
    needed_by: datetime | None
    status: str
    quantity_reserved: int
    quantity_in_transit: int
    quantity_delivered: int
    remaining: int


class RequestPublic(BaseModel):
    id: int
    organization_id: int
    site_id: int
    justification: str | None
    status: str
    version: int
    lines: list[RequestLinePublic]
    created_at: datetime
    updated_at: datetime
