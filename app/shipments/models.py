"""Shipments created by plan approval, their lines and their append-only event history."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

SHIPMENT_STATUSES: tuple[str, ...] = (
    "planned",
    "dispatched",
    "in_transit",
    "delivered",
    "failed",
    "returned",
    "cancelled",
)
SHORTFALL_REASONS: tuple[str, ...] = ("damaged", "lost", "refused")
# SPEC §2: anything else is 409.
TRANSITIONS: dict[str, frozenset[str]] = {
    "planned": frozenset({"dispatched", "cancelled"}),
    "dispatched": frozenset({"in_transit", "delivered", "failed"}),
    "in_transit": frozenset({"delivered", "failed"}),
    "failed": frozenset({"returned"}),
    "delivered": frozenset(),
    "returned": frozenset(),
    "cancelled": frozenset(),
}


class Shipment(SQLModel, table=True):
    __tablename__ = "shipments"
    __table_args__ = (CheckConstraint(in_list("status", SHIPMENT_STATUSES), name="status"),)

    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="plans.id", index=True)
    origin_site_id: int = Field(foreign_key="sites.id", index=True)
    destination_site_id: int = Field(foreign_key="sites.id", index=True)
    destination_organization_id: int = Field(foreign_key="organizations.id", index=True)
    status: str = Field(default="planned", max_length=16, index=True)
    driver_key_id: int | None = Field(default=None, foreign_key="api_keys.id", index=True)
    received_by: str | None = Field(default=None, max_length=200)
    # Position in the change feed: assigned under a lock as the last write of each change, so
    # sequence order equals commit order and a poller never misses an update.
    change_seq: int = Field(default=0, index=True)
    version: int = 1
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class ShipmentLine(SQLModel, table=True):
    __tablename__ = "shipment_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "quantity_received IS NULL OR (quantity_received >= 0 AND quantity_received <= quantity)",
            name="received_within_shipped",
        ),
        CheckConstraint(
            "shortfall_reason IS NULL OR " + in_list("shortfall_reason", SHORTFALL_REASONS), name="shortfall_reason"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    shipment_id: int = Field(foreign_key="shipments.id", index=True)
    plan_line_id: int = Field(foreign_key="plan_lines.id")
    request_line_id: int = Field(foreign_key="request_lines.id", index=True)
    lot_id: int | None = Field(default=None, foreign_key="inventory_lots.id")
    pledge_id: int | None = Field(default=None, foreign_key="pledges.id", index=True)
    item_id: int = Field(foreign_key="items.id")
    quantity: int
    quantity_received: int | None = None
    shortfall_reason: str | None = Field(default=None, max_length=16)


class ShipmentEvent(SQLModel, table=True):
    """Append-only status history: who, when, where, note."""

    __tablename__ = "shipment_events"
    __table_args__ = (CheckConstraint(in_list("status", SHIPMENT_STATUSES), name="status"),)

    id: int | None = Field(default=None, primary_key=True)
    shipment_id: int = Field(foreign_key="shipments.id", index=True)
    status: str = Field(max_length=16)
    at: datetime = ts_field()
    lat: float | None = None
    lon: float | None = None
    note: str | None = Field(default=None, max_length=2000)
    actor_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    created_at: datetime = ts_field()


class ChangeCounter(SQLModel, table=True):
    """A single-row counter for the shipment change feed (row name='shipments')."""

    __tablename__ = "change_counters"

    name: str = Field(primary_key=True, max_length=32)
    value: int = 0


# ---------------------------------------------------------------- API schemas (not tables)

ShipmentStatus = Literal["planned", "dispatched", "in_transit", "delivered", "failed", "returned", "cancelled"]
ShortfallReason = Literal["damaged", "lost", "refused"]


class ShipmentLinePublic(BaseModel):
    id: int
    plan_line_id: int
    request_line_id: int
    lot_id: int | None
    pledge_id: int | None
    item_id: int
    quantity: int
    quantity_received: int | None
    shortfall_reason: str | None


class ShipmentPublic(BaseModel):
    id: int
    plan_id: int
    origin_site_id: int
    destination_site_id: int
    destination_organization_id: int
    status: str
    driver_key_id: int | None
    received_by: str | None
    change_seq: int
    version: int
    lines: list[ShipmentLinePublic]
    created_at: datetime
    updated_at: datetime


class ShipmentEventPublic(BaseModel):
    id: int
    shipment_id: int
    status: str
    at: datetime
    lat: float | None
    lon: float | None
    note: str | None
    actor_key_id: int | None
    created_at: datetime


class LineReceipt(BaseModel):
    """What arrived of one shipment line; a shortfall (received < shipped) needs a reason."""

    model_config = ConfigDict(extra="forbid")
    line_id: int
    quantity_received: int = Field(ge=0, le=1_000_000_000)
    shortfall_reason: ShortfallReason | None = None


class ShipmentEventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: ShipmentStatus
    at: AwareDatetime | None = Field(default=None, description="When it happened; defaults to now")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    note: str | None = Field(default=None, max_length=2000)
    lines: list[LineReceipt] | None = Field(
        default=None, max_length=10_000, description="Only with status delivered; unlisted lines arrived in full"
    )
    received_by: str | None = Field(default=None, min_length=1, max_length=200, description="Only with delivered")


class DriverAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    driver_key_id: int | None = Field(description="An active driver key; null unassigns")


class ShipmentFeedOut(BaseModel):
    """A page of the change feed: shipments changed after the cursor, in change order."""

    items: list[ShipmentPublic]
    next_cursor: str
    has_more: bool
