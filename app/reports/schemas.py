"""Report rows. JSON and CSV carry the same rows; the CSV columns are the row fields in this order."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

GapGroup = Literal["region", "coalition"]
AgeingGroup = Literal["priority", "organization"]
R = TypeVar("R", bound=BaseModel)


class GapRow(BaseModel):
    """One (item × region) cell of the gap analysis, or one item of the coalition-wide roll-up
    (`region` null). See docs/api-reports.md for the definitions."""

    region: str | None
    item_id: int
    item_sku: str
    item_name: str
    requested: int
    available: int
    pledged: int
    in_transit: int
    days_of_supply: float | None
    gap: int
    surplus: int


class DaysOfSupplyRow(BaseModel):
    organization_id: int
    organization_name: str
    region: str
    item_id: int
    item_sku: str
    item_name: str
    on_hand: int
    daily_usage: float | None
    usage_estimated: bool
    days_of_supply: float | None
    below_threshold: bool
    reported_at: datetime


class AgeingRow(BaseModel):
    organization_id: int | None
    organization_name: str | None
    priority: str
    open_lines: int
    remaining: int
    age_0_1d: int
    age_1_3d: int
    age_3_7d: int
    age_over_7d: int
    oldest_age_days: float | None
    oldest_line_id: int | None


class DonorImpactRow(BaseModel):
    organization_id: int
    organization_name: str
    region: str
    item_id: int
    item_sku: str
    item_name: str
    pledges: int
    pledged: int
    confirmed: int
    committed: int
    received: int
    in_transit: int
    delivered: int
    destinations: list[str]


class ReportOut(BaseModel, Generic[R]):
    report: str
    generated_at: datetime
    parameters: dict[str, Any]
    items: list[R]


def columns_of(row_type: type[BaseModel]) -> list[str]:
    return list(row_type.model_fields)
