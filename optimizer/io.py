"""Problem and Plan JSON v1 (SPEC §3.1, §3.4): load with field-naming errors, dump.

Validation decisions (the contract the service and the CLI rely on):

* ``version`` must be the integer 1; ``now`` is required.
* Objects are strict: an unknown key is an error (a typo such as ``equity_wieght`` must not be
  silently ignored and change the plan).
* Quantities are whole numbers: a JSON integer, or a float with no fractional part (``5.0``).
  Booleans are not numbers. A **source** quantity may be 0 (an empty lot is harmless and simply
  produces no arcs); a **demand** quantity must be ≥ 1 (a zero request has no fill rate). Both are
  at most ``MAX_QUANTITY`` so that the solver's scaled integer capacities cannot overflow int64.
* ``equity_weight`` is a finite number in (0, 10]; defaults to 1.0.
* Timestamps are RFC 3339 date-times *with* an offset (``Z`` or ``±hh:mm``); naive times are
  rejected. They are converted to UTC.
* Ids are non-empty strings, unique across sources *and* demands together (plan lines name both).
* Every SKU named anywhere (sources, demands, substitutes) is declared in ``items``; item SKUs are
  unique; an item may not list itself or the same substitute twice; penalties are finite and ≥ 0.
* lat ∈ [−90, 90], lon ∈ [−180, 180], finite. ``speed_kmh`` > 0 and finite;
  ``cost_per_unit_km`` ≥ 0 and finite; ``time_limit_s`` null or > 0 and finite.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from optimizer.model import (
    PRIORITIES,
    Allocation,
    Demand,
    DemandResult,
    Item,
    Kpis,
    Plan,
    Priority,
    Problem,
    Reason,
    Settings,
    SolverStats,
    Source,
    StageStats,
    Substitute,
    TierKpis,
)

MAX_QUANTITY = 10**9
MAX_EQUITY_WEIGHT = 10.0
REASONS: tuple[str, ...] = ("no_compatible_supply", "unreachable_by_deadline", "lower_priority", "shortage")
STATUSES: tuple[str, ...] = ("optimal", "time_limit")

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

T = TypeVar("T")


class ProblemError(ValueError):
    """Invalid Problem/Plan JSON; ``field`` is a JSON path such as ``demands[3].quantity``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- field readers


def _obj(v: Any, path: str, allowed: Collection[str], required: Collection[str] = ()) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProblemError(path or "$", "must be an object")
    for k in v:
        if k not in allowed:
            raise ProblemError(_join(path, str(k)), "unknown field")
    for k in sorted(required):
        if k not in v:
            raise ProblemError(_join(path, k), "is required")
    return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _list(v: Any, path: str) -> list[Any]:
    if not isinstance(v, list):
        raise ProblemError(path, "must be a list")
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise ProblemError(path, "must be a non-empty string")
    return v


def _num(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProblemError(path, "must be a number")
    f = float(v)
    if not math.isfinite(f):
        raise ProblemError(path, "must be finite")
    return f


def _whole(v: Any, path: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProblemError(path, "must be a whole number")
    if isinstance(v, float):
        if not math.isfinite(v) or not v.is_integer():
            raise ProblemError(path, "must be a whole number")
        v = int(v)
    if v < minimum:
        raise ProblemError(path, f"must be ≥ {minimum}")
    if v > MAX_QUANTITY:
        raise ProblemError(path, f"must be ≤ {MAX_QUANTITY}")
    return int(v)


def _in_range(v: Any, path: str, lo: float, hi: float) -> float:
    f = _num(v, path)
    if not lo <= f <= hi:
        raise ProblemError(path, f"must be between {lo:g} and {hi:g}")
    return f


@lru_cache(maxsize=4096)
def _parse_time(s: str) -> datetime | None:
    if not _RFC3339.match(s):
        return None
    try:
        t = datetime.fromisoformat(s.upper().replace(" ", "T"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo is not None else None


def _time(v: Any, path: str) -> datetime:
    if not isinstance(v, str):
        raise ProblemError(path, "must be an RFC 3339 timestamp string")
    t = _parse_time(v)
    if t is None:
        raise ProblemError(path, "must be an RFC 3339 timestamp with an offset (e.g. 2026-11-22T08:00:00Z)")
    return t


def _opt(d: dict[str, Any], key: str, path: str, read: Callable[[Any, str], T]) -> T | None:
    v = d.get(key)
    return None if v is None else read(v, _join(path, key))


# --------------------------------------------------------------------------- problem


def load_problem(data: Any) -> Problem:
    """Validate a Problem JSON v1 document (already parsed) and build the frozen Problem."""
    root = _obj(
        data,
        "",
        {"version", "now", "settings", "items", "sources", "demands"},
        {"version", "now", "items", "sources", "demands"},
    )
    version = root["version"]
    if isinstance(version, bool) or version != 1:
        raise ProblemError("version", "must be 1")
    now = _time(root["now"], "now")
    settings = _settings(root.get("settings"))
    items = _items(_list(root["items"], "items"))
    skus = {it.sku for it in items}
    ids: set[str] = set()
    sources = tuple(
        _source(s, f"sources[{i}]", skus, ids) for i, s in enumerate(_list(root["sources"], "sources"))
    )
    demands = tuple(
        _demand(d, f"demands[{i}]", skus, ids) for i, d in enumerate(_list(root["demands"], "demands"))
    )
    return Problem(now=now, items=items, sources=sources, demands=demands, settings=settings, version=1)


def _settings(v: Any) -> Settings:
    if v is None:
        return Settings()
    d = _obj(v, "settings", {"speed_kmh", "cost_per_unit_km", "time_limit_s"})
    speed = _opt(d, "speed_kmh", "settings", _num)
    if speed is not None and speed <= 0:
        raise ProblemError("settings.speed_kmh", "must be > 0")
    cost = _opt(d, "cost_per_unit_km", "settings", _num)
    if cost is not None and cost < 0:
        raise ProblemError("settings.cost_per_unit_km", "must be ≥ 0")
    limit = _opt(d, "time_limit_s", "settings", _num)
    if limit is not None and limit <= 0:
        raise ProblemError("settings.time_limit_s", "must be > 0")
    default = Settings()
    return Settings(
        speed_kmh=default.speed_kmh if speed is None else speed,
        cost_per_unit_km=default.cost_per_unit_km if cost is None else cost,
        time_limit_s=limit,
    )


def _items(raw: list[Any]) -> tuple[Item, ...]:
    declared: dict[str, int] = {}
    for i, it in enumerate(raw):
        d = _obj(it, f"items[{i}]", {"sku", "substitutes"}, {"sku"})
        sku = _str(d["sku"], f"items[{i}].sku")
        if sku in declared:
            raise ProblemError(f"items[{i}].sku", f"duplicate SKU {sku!r} (also items[{declared[sku]}])")
        declared[sku] = i
    items = []
    for i, it in enumerate(raw):
        sku = it["sku"]
        subs: list[Substitute] = []
        seen: set[str] = set()
        for j, s in enumerate(_list(it.get("substitutes", []), f"items[{i}].substitutes")):
            p = f"items[{i}].substitutes[{j}]"
            sd = _obj(s, p, {"sku", "penalty"}, {"sku"})
            ssku = _str(sd["sku"], f"{p}.sku")
            if ssku not in declared:
                raise ProblemError(f"{p}.sku", f"unknown SKU {ssku!r}")
            if ssku == sku:
                raise ProblemError(f"{p}.sku", "an item cannot substitute for itself")
            if ssku in seen:
                raise ProblemError(f"{p}.sku", f"duplicate substitute {ssku!r}")
            seen.add(ssku)
            pen = _opt(sd, "penalty", p, _num)
            if pen is not None and pen < 0:
                raise ProblemError(f"{p}.penalty", "must be ≥ 0")
            subs.append(Substitute(sku=ssku, penalty=0.0 if pen is None else pen))
        items.append(Item(sku=sku, substitutes=tuple(subs)))
    return tuple(items)


def _sku(v: Any, path: str, skus: set[str]) -> str:
    sku = _str(v, path)
    if sku not in skus:
        raise ProblemError(path, f"unknown SKU {sku!r}")
    return sku


def _id(v: Any, path: str, ids: set[str]) -> str:
    ident = _str(v, path)
    if ident in ids:
        raise ProblemError(path, f"duplicate id {ident!r}")
    ids.add(ident)
    return ident


_SOURCE_KEYS = {"id", "item", "quantity", "lat", "lon", "available_at", "expires_at"}
_DEMAND_KEYS = {"id", "requester", "item", "quantity", "priority", "needed_by", "lat", "lon", "equity_weight"}


def _source(v: Any, p: str, skus: set[str], ids: set[str]) -> Source:
    d = _obj(v, p, _SOURCE_KEYS, {"id", "item", "quantity", "lat", "lon"})
    return Source(
        id=_id(d["id"], f"{p}.id", ids),
        item=_sku(d["item"], f"{p}.item", skus),
        quantity=_whole(d["quantity"], f"{p}.quantity", 0),
        lat=_in_range(d["lat"], f"{p}.lat", -90.0, 90.0),
        lon=_in_range(d["lon"], f"{p}.lon", -180.0, 180.0),
        available_at=_opt(d, "available_at", p, _time),
        expires_at=_opt(d, "expires_at", p, _time),
    )


def _demand(v: Any, p: str, skus: set[str], ids: set[str]) -> Demand:
    d = _obj(v, p, _DEMAND_KEYS, {"id", "item", "quantity", "priority", "lat", "lon"})
    prio = d["priority"]
    if prio not in PRIORITIES:
        raise ProblemError(f"{p}.priority", "must be one of critical, high, routine")
    w = _opt(d, "equity_weight", p, _num)
    if w is not None and not 0.0 < w <= MAX_EQUITY_WEIGHT:
        raise ProblemError(f"{p}.equity_weight", "must be in (0, 10]")
    requester = d.get("requester")
    if requester is not None and not isinstance(requester, str):
        raise ProblemError(f"{p}.requester", "must be a string")
    return Demand(
        id=_id(d["id"], f"{p}.id", ids),
        requester=requester or "",
        item=_sku(d["item"], f"{p}.item", skus),
        quantity=_whole(d["quantity"], f"{p}.quantity", 1),
        priority=cast(Priority, prio),
        lat=_in_range(d["lat"], f"{p}.lat", -90.0, 90.0),
        lon=_in_range(d["lon"], f"{p}.lon", -180.0, 180.0),
        needed_by=_opt(d, "needed_by", p, _time),
        equity_weight=1.0 if w is None else w,
    )


def load_problem_file(path: str | Path) -> Problem:
    """Read and validate a Problem JSON file; unreadable or malformed JSON is a ProblemError too."""
    return load_problem(_read_json(path))


def _read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ProblemError("", f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProblemError("", f"{path} is not valid JSON: {e}") from None


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix (microseconds only when present)."""
    t = t.astimezone(UTC)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{t.microsecond:06d}Z" if t.microsecond else f"{base}Z"


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    """Problem JSON v1; ``load_problem(problem_to_dict(p)) == p`` for every valid Problem."""
    settings: dict[str, Any] = {
        "speed_kmh": problem.settings.speed_kmh,
        "cost_per_unit_km": problem.settings.cost_per_unit_km,
    }
    if problem.settings.time_limit_s is not None:
        settings["time_limit_s"] = problem.settings.time_limit_s
    sources = []
    for s in problem.sources:
        sd: dict[str, Any] = {"id": s.id, "item": s.item, "quantity": s.quantity, "lat": s.lat, "lon": s.lon}
        if s.available_at is not None:
            sd["available_at"] = format_time(s.available_at)
        if s.expires_at is not None:
            sd["expires_at"] = format_time(s.expires_at)
        sources.append(sd)
    demands = []
    for d in problem.demands:
        dd: dict[str, Any] = {
            "id": d.id,
            "requester": d.requester,
            "item": d.item,
            "quantity": d.quantity,
            "priority": d.priority,
        }
        if d.needed_by is not None:
            dd["needed_by"] = format_time(d.needed_by)
        dd.update(lat=d.lat, lon=d.lon, equity_weight=d.equity_weight)
        demands.append(dd)
    return {
        "version": problem.version,
        "now": format_time(problem.now),
        "settings": settings,
        "items": [
            {"sku": it.sku, "substitutes": [{"sku": s.sku, "penalty": s.penalty} for s in it.substitutes]}
            for it in problem.items
        ],
        "sources": sources,
        "demands": demands,
    }


# --------------------------------------------------------------------------- plan


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """Plan JSON (SPEC §3.4). Stage ``detail`` entries are flattened next to ``name``/``wall_s``."""
    return {
        "status": plan.status,
        "allocations": [
            {
                "source": a.source,
                "demand": a.demand,
                "item": a.item,
                "quantity": a.quantity,
                "distance_km": a.distance_km,
                "cost": a.cost,
            }
            for a in plan.allocations
        ],
        "demands": [
            {
                "id": r.id,
                "allocated": r.allocated,
                "fill_rate": r.fill_rate,
                "unmet": r.unmet,
                "reason": r.reason,
            }
            for r in plan.demands
        ],
        "kpis": {
            "by_priority": {
                tier: {
                    "requested": k.requested,
                    "allocated": k.allocated,
                    "min_fill_rate": k.min_fill_rate,
                    "min_level": k.min_level,
                    "jain_index": k.jain_index,
                    "demands_unserved": k.demands_unserved,
                }
                for tier, k in plan.kpis.by_priority.items()
            },
            "transport_cost": plan.kpis.transport_cost,
            "unit_km": plan.kpis.unit_km,
            "substituted_units": plan.kpis.substituted_units,
            "substitution_penalty": plan.kpis.substitution_penalty,
        },
        "solver": {
            "wall_s": plan.solver.wall_s,
            "stages": [{"name": s.name, "wall_s": s.wall_s, **s.detail} for s in plan.solver.stages],
        },
    }


def load_plan(data: Any) -> Plan:
    """Parse Plan JSON (as written by ``plan_to_dict``); shape errors name the field.

    Only the shape is checked here; whether the numbers are right is ``optimizer.check``'s job.
    """
    root = _obj(
        data, "", {"status", "allocations", "demands", "kpis", "solver"}, {"status", "allocations", "demands"}
    )
    if root["status"] not in STATUSES:
        raise ProblemError("status", "must be optimal or time_limit")
    allocations = []
    for i, a in enumerate(_list(root["allocations"], "allocations")):
        p = f"allocations[{i}]"
        d = _obj(
            a,
            p,
            {"source", "demand", "item", "quantity", "distance_km", "cost"},
            {"source", "demand", "quantity"},
        )
        allocations.append(
            Allocation(
                source=_str(d["source"], f"{p}.source"),
                demand=_str(d["demand"], f"{p}.demand"),
                item=str(d.get("item") or ""),
                quantity=_whole(d["quantity"], f"{p}.quantity", 0),
                distance_km=_opt(d, "distance_km", p, _num) or 0.0,
                cost=_opt(d, "cost", p, _num) or 0.0,
            )
        )
    results = []
    for i, r in enumerate(_list(root["demands"], "demands")):
        p = f"demands[{i}]"
        d = _obj(r, p, {"id", "allocated", "fill_rate", "unmet", "reason"}, {"id", "allocated"})
        reason = d.get("reason")
        if reason is not None and reason not in REASONS:
            raise ProblemError(f"{p}.reason", "must be null or one of " + ", ".join(REASONS))
        results.append(
            DemandResult(
                id=_str(d["id"], f"{p}.id"),
                allocated=_whole(d["allocated"], f"{p}.allocated", 0),
                fill_rate=_opt(d, "fill_rate", p, _num) or 0.0,
                unmet=_whole(d.get("unmet", 0), f"{p}.unmet", 0),
                reason=cast(Reason | None, reason),
            )
        )
    return Plan(
        status=root["status"],
        allocations=tuple(allocations),
        demands=tuple(results),
        kpis=_kpis(root.get("kpis")),
        solver=_solver(root.get("solver")),
    )


def _kpis(v: Any) -> Kpis:
    if v is None:
        return Kpis(by_priority={}, transport_cost=0.0, unit_km=0.0, substituted_units=0)
    d = _obj(
        v, "kpis", {"by_priority", "transport_cost", "unit_km", "substituted_units", "substitution_penalty"}
    )
    tiers: dict[str, TierKpis] = {}
    bp = d.get("by_priority") or {}
    if not isinstance(bp, dict):
        raise ProblemError("kpis.by_priority", "must be an object")
    for tier, k in bp.items():
        p = f"kpis.by_priority.{tier}"
        if tier not in PRIORITIES:
            raise ProblemError(p, "unknown priority")
        kd = _obj(
            k, p, {"requested", "allocated", "min_fill_rate", "min_level", "jain_index", "demands_unserved"}
        )
        tiers[tier] = TierKpis(
            requested=_whole(kd.get("requested", 0), f"{p}.requested", 0),
            allocated=_whole(kd.get("allocated", 0), f"{p}.allocated", 0),
            min_fill_rate=_opt(kd, "min_fill_rate", p, _num) or 0.0,
            min_level=_opt(kd, "min_level", p, _num) or 0.0,
            jain_index=_opt(kd, "jain_index", p, _num) or 0.0,
            demands_unserved=_whole(kd.get("demands_unserved", 0), f"{p}.demands_unserved", 0),
        )
    return Kpis(
        by_priority=tiers,
        transport_cost=_opt(d, "transport_cost", "kpis", _num) or 0.0,
        unit_km=_opt(d, "unit_km", "kpis", _num) or 0.0,
        substituted_units=int(_opt(d, "substituted_units", "kpis", _num) or 0),
        substitution_penalty=_opt(d, "substitution_penalty", "kpis", _num) or 0.0,
    )


def _solver(v: Any) -> SolverStats:
    if v is None:
        return SolverStats(wall_s=0.0)
    d = _obj(v, "solver", {"wall_s", "stages"})
    stages = []
    for i, s in enumerate(_list(d.get("stages", []), "solver.stages")):
        p = f"solver.stages[{i}]"
        if not isinstance(s, dict):
            raise ProblemError(p, "must be an object")
        detail = {
            k: x for k, x in s.items() if k not in ("name", "wall_s") and isinstance(x, str | int | float)
        }
        stages.append(
            StageStats(
                name=_str(s.get("name"), f"{p}.name"), wall_s=_opt(s, "wall_s", p, _num) or 0.0, detail=detail
            )
        )
    return SolverStats(wall_s=_opt(d, "wall_s", "solver", _num) or 0.0, stages=tuple(stages))


def load_plan_file(path: str | Path) -> Plan:
    """Read and parse a Plan JSON file (errors as ProblemError)."""
    return load_plan(_read_json(path))
