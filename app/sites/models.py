from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

SiteKind = Literal["depot", "hospital_dock", "food_hub", "donor_site"]
SITE_KINDS: tuple[str, ...] = ("depot", "hospital_dock", "food_hub", "donor_site")


class SiteBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    kind: SiteKind
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    address: str | None = Field(default=None, max_length=500)


class Site(SiteBase, table=True):
    __tablename__ = "sites"
    __table_args__ = (
        CheckConstraint(in_list("kind", SITE_KINDS), name="kind"),
        CheckConstraint("lat >= -90 AND lat <= 90", name="lat_range"),
        CheckConstraint("lon >= -180 AND lon <= 180", name="lon_range"),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id", index=True)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=32)
    lat: float
    lon: float
    address: str | None = Field(default=None, max_length=500)
    active: bool = True
    version: int = 1
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class SiteCreate(SiteBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    organization_id: int


class SiteUpdate(SQLModel):
    """Kind and owner are fixed at creation (stock and shipments depend on them); activity changes
    only through the deactivate/activate actions."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    name: str | None = Field(default=None, min_length=1, max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    address: str | None = Field(default=None, max_length=500)


class SitePublic(SiteBase):
    id: int
    organization_id: int
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime
