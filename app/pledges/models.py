from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

PledgeStatus = Literal["pledged", "confirmed", "received", "cancelled"]
PLEDGE_STATUSES: tuple[str, ...] = ("pledged", "confirmed", "received", "cancelled")


class Pledge(SQLModel, table=True):
    __tablename__ = "pledges"
    __table_args__ = (
        CheckConstraint(in_list("status", PLEDGE_STATUSES), name="status"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("committed >= 0 AND committed <= quantity", name="committed_within_quantity"),
        CheckConstraint(
            "received_quantity IS NULL OR (received_quantity > 0 AND received_quantity <= quantity)",
            name="received_quantity_range",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id", index=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    quantity: int
    committed: int = 0
    available_from: datetime = ts_field()
    expires_at: datetime | None = ts_field(nullable=True, default_now=False)
    status: str = Field(default="pledged", max_length=16, index=True)
    note: str | None = Field(default=None, max_length=2000)
    received_lot_id: int | None = Field(default=None, foreign_key="inventory_lots.id")
    received_quantity: int | None = None
    version: int = 1
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class PledgeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int
    site_id: int
    quantity: int = Field(gt=0, le=1_000_000_000)
    available_from: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    note: str | None = Field(default=None, max_length=2000)


class PledgeReceive(BaseModel):
    """Logistics receives a confirmed pledge into a depot; this opens a lot through the ledger.

    `quantity` defaults to the uncommitted rest (quantity − committed) and may not exceed it: committed
    units ship from the donor site. `lot_code` defaults to `PLEDGE-<id>` so the pledge's stock stays a
    lot of its own; `expires_at` is the stock's shelf-life expiry (not the pledge offer's)."""

    model_config = ConfigDict(extra="forbid")
    depot_site_id: int
    quantity: int | None = Field(default=None, gt=0, le=1_000_000_000)
    lot_code: str | None = Field(default=None, min_length=1, max_length=64)
    expires_at: AwareDatetime | None = None


class PledgePublic(BaseModel):
    id: int
    organization_id: int
    item_id: int
    site_id: int
    quantity: int
    committed: int
    available_from: datetime
    expires_at: datetime | None
    status: str
    note: str | None
    received_lot_id: int | None
    received_quantity: int | None
    version: int
    created_at: datetime
    updated_at: datetime
