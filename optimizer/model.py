"""Frozen data types of the allocation problem and its plan (SPEC §3.1, §3.4).

Pure data: no solver, no I/O. Times are timezone-aware UTC datetimes; quantities whole units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Priority = Literal["critical", "high", "routine"]
PRIORITIES: tuple[Priority, ...] = ("critical", "high", "routine")

Reason = Literal["no_compatible_supply", "unreachable_by_deadline", "lower_priority", "shortage"]
PlanStatus = Literal["optimal", "time_limit"]

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True, slots=True)
class Substitute:
    sku: str
    penalty: float


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    substitutes: tuple[Substitute, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    speed_kmh: float = 50.0
    cost_per_unit_km: float = 0.01
    time_limit_s: float | None = None


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    item: str
    quantity: int
    lat: float
    lon: float
    available_at: datetime | None = None  # None = now
    expires_at: datetime | None = None  # None = never


@dataclass(frozen=True, slots=True)
class Demand:
    id: str
    requester: str
    item: str
    quantity: int
    priority: Priority
    lat: float
    lon: float
    needed_by: datetime | None = None  # None = no deadline
    equity_weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Problem:
    now: datetime
    items: tuple[Item, ...]
    sources: tuple[Source, ...]
    demands: tuple[Demand, ...]
    settings: Settings = field(default_factory=Settings)
    version: int = 1


@dataclass(frozen=True, slots=True)
class Allocation:
    source: str
    demand: str
    item: str
    quantity: int
    distance_km: float
    cost: float  # transport (distance × cost_per_unit_km × quantity) + substitution penalty × quantity


@dataclass(frozen=True, slots=True)
class DemandResult:
    id: str
    allocated: int
    fill_rate: float
    unmet: int
    reason: Reason | None


@dataclass(frozen=True, slots=True)
class TierKpis:
    requested: int
    allocated: int
    min_fill_rate: float
    min_level: float
    jain_index: float
    demands_unserved: int


@dataclass(frozen=True, slots=True)
class Kpis:
    by_priority: dict[str, TierKpis]
    transport_cost: float
    unit_km: float
    substituted_units: int
    substitution_penalty: float = 0.0


@dataclass(frozen=True, slots=True)
class StageStats:
    name: str
    wall_s: float
    detail: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SolverStats:
    wall_s: float
    stages: tuple[StageStats, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    status: PlanStatus
    allocations: tuple[Allocation, ...]
    demands: tuple[DemandResult, ...]
    kpis: Kpis
    solver: SolverStats
