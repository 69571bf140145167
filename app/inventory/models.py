from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

MovementKind = Literal["receive", "adjust", "reserve", "release", "ship", "return"]
MOVEMENT_KINDS: tuple[str, ...] = ("receive", "adjust", "reserve", "release", "ship", "return")


class InventoryLot(SQLModel, table=True):
    """Stock of one item at one depot; balances equal the sums of the lot's movements."""

    __tablename__ = "inventory_lots"
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="on_hand_nonnegative"),
        CheckConstraint("reserved >= 0 AND reserved <= on_hand", name="reserved_within_on_hand"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    lot_code: str | None = Field(default=None, max_length=64)
    expires_at: datetime | None = ts_field(nullable=True, default_now=False)
    on_hand: int = 0
    reserved: int = 0
    version: int = 1
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class InventoryMovement(SQLModel, table=True):
    """Append-only ledger row. `delta_*` are signed changes to the lot's balances."""

    __tablename__ = "inventory_movements"
    __table_args__ = (
        CheckConstraint(in_list("kind", MOVEMENT_KINDS), name="kind"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("delta_on_hand <> 0 OR delta_reserved <> 0", name="changes_something"),
    )

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(foreign_key="inventory_lots.id", index=True)
    kind: str = Field(max_length=16)
    quantity: int
    delta_on_hand: int
    delta_reserved: int = 0
    reason: str | None = Field(default=None, max_length=500)
    reference: str | None = Field(default=None, max_length=100)
    actor_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    created_at: datetime = ts_field(index=True)


class LotPublic(BaseModel):
    id: int
    site_id: int
    item_id: int
    lot_code: str | None
    expires_at: datetime | None
    on_hand: int
    reserved: int
    available: int
    version: int
    created_at: datetime
    updated_at: datetime


class MovementPublic(BaseModel):
    id: int
    lot_id: int
    kind: str
    quantity: int
    delta_on_hand: int
    delta_reserved: int
    reason: str | None
    reference: str | None
    actor_key_id: int | None
    created_at: datetime


PositiveQty = Annotated[int, Field(gt=0, le=1_000_000_000)]


class ReceiveCreate(BaseModel):
    """Stock arriving at a depot: adds to the matching lot (same site, item, lot code, expiry) or opens one."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["receive"]
    site_id: int
    item_id: int
    quantity: PositiveQty
    lot_code: str | None = Field(default=None, max_length=64)
    expires_at: AwareDatetime | None = None
    reason: str | None = Field(default=None, max_length=500)


class AdjustCreate(BaseModel):
    """A counted correction of a lot's on-hand (damage, recount, theft); reason required."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["adjust"]
    lot_id: int
    delta: int = Field(ge=-1_000_000_000, le=1_000_000_000)
    reason: str = Field(min_length=1, max_length=500)


MovementCreate = Annotated[ReceiveCreate | AdjustCreate, Field(discriminator="kind")]
