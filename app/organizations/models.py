from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

OrganizationKind = Literal["hospital", "clinic", "food_hub", "donor", "depot_operator", "coalition"]
ORGANIZATION_KINDS: tuple[str, ...] = ("hospital", "clinic", "food_hub", "donor", "depot_operator", "coalition")
EquityWeight = float


class OrganizationBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    kind: OrganizationKind
    region: str = Field(min_length=1, max_length=100)


class Organization(OrganizationBase, table=True):
    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint(in_list("kind", ORGANIZATION_KINDS), name="kind"),
        CheckConstraint("equity_weight > 0 AND equity_weight <= 10", name="equity_weight_range"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=32)
    region: str = Field(max_length=100, index=True)
    equity_weight: float = 1.0
    active: bool = True
    version: int = 1
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class OrganizationCreate(OrganizationBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    equity_weight: float = Field(default=1.0, gt=0, le=10)


class OrganizationUpdate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    name: str | None = Field(default=None, min_length=1, max_length=200)
    kind: OrganizationKind | None = None
    region: str | None = Field(default=None, min_length=1, max_length=100)
    equity_weight: float | None = Field(default=None, gt=0, le=10)


class EquityWeightUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    equity_weight: float = Field(gt=0, le=10)


class OrganizationPublic(OrganizationBase):
    id: int
    equity_weight: float
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime
