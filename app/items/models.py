from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

ItemCategory = Literal["ppe", "sanitation", "food", "medical", "other"]
ITEM_CATEGORIES: tuple[str, ...] = ("ppe", "sanitation", "food", "medical", "other")
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class ItemBase(SQLModel):
    # schema_extra, not regex=: SQLModel drops `regex` under pydantic 2, so the pattern was never checked.
    sku: str = Field(min_length=1, max_length=64, schema_extra={"pattern": SKU_PATTERN})
    name: str = Field(min_length=1, max_length=200)
    category: ItemCategory
    unit: str = Field(default="each", min_length=1, max_length=32)
    pack_size: int = Field(default=1, ge=1, le=1_000_000)
    shelf_life_days: int | None = Field(default=None, ge=1, le=36500)


class Item(ItemBase, table=True):
    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint(in_list("category", ITEM_CATEGORIES), name="category"),
        CheckConstraint("pack_size >= 1", name="pack_size_positive"),
        CheckConstraint("shelf_life_days IS NULL OR shelf_life_days >= 1", name="shelf_life_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(max_length=64, unique=True)
    category: str = Field(max_length=32)
    active: bool = True
    version: int = 1
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class ItemSubstitute(SQLModel, table=True):
    """`substitute_item_id` may fill a demand for `item_id` at `penalty` per unit (not transitive)."""

    __tablename__ = "item_substitutes"
    __table_args__ = (
        UniqueConstraint("item_id", "substitute_item_id"),
        CheckConstraint("item_id <> substitute_item_id", name="not_self"),
        CheckConstraint("penalty >= 0", name="penalty_nonnegative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    substitute_item_id: int = Field(foreign_key="items.id", index=True)
    penalty: float = 0.0


class SubstituteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64)
    penalty: float = Field(default=0.0, ge=0, le=1_000_000)


class ItemCreate(ItemBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    substitutes: list[SubstituteIn] = Field(default_factory=list, max_length=50)


class ItemUpdate(SQLModel):
    """The SKU is fixed at creation (plans and snapshots name items by SKU); activity changes only
    through the deactivate/activate actions."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    name: str | None = Field(default=None, min_length=1, max_length=200)
    category: ItemCategory | None = None
    unit: str | None = Field(default=None, min_length=1, max_length=32)
    pack_size: int | None = Field(default=None, ge=1, le=1_000_000)
    shelf_life_days: int | None = Field(default=None, ge=1, le=36500)
    # Given: replaces the whole list ([] clears it). Omitted: unchanged.
    substitutes: list[SubstituteIn] | None = Field(default=None, max_length=50)


class SubstitutePublic(BaseModel):
    sku: str
    item_id: int
    penalty: float


class ItemPublic(ItemBase):
    id: int
    active: bool
    version: int
    substitutes: list[SubstitutePublic] = []
    created_at: datetime
    updated_at: datetime
