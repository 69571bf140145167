"""Problem and Plan JSON v1 (SPEC §3.1, §3.4): load with field-naming errors, dump.

The Plan side lives in ``optimizer.plan_json`` and is re-exported here.

Validation decisions (the contract the service and the CLI rely on):

* ``version`` must be the integer 1; ``now`` is required.
* Objects are strict: an unknown key is an error (a typo such as ``equity_wieght`` must not be
  silently ignored and change the plan).
* Quantities are whole numbers: a JSON integer, or a float with no fractional part (``5.0``).
  Booleans are not numbers. A **source** quantity may be 0 (an empty lot is harmless and simply
  produces no arcs); a **demand** quantity must be ≥ 1 (a zero request has no fill rate). Both are
  at most ``MAX_QUANTITY`` so that the solver's integer sums stay far from int64 overflow.
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

from pathlib import Path
from typing import Any, cast

from optimizer.jsonfields import (
    MAX_QUANTITY,
    ProblemError,
    _in_range,
    _list,
    _num,
    _obj,
    _opt,
    _read_json,
    _str,
    _time,
    _whole,
    format_time,
)
from optimizer.model import PRIORITIES, Demand, Item, Priority, Problem, Settings, Source, Substitute
from optimizer.plan_json import load_plan, load_plan_file, plan_to_dict

__all__ = [
    "MAX_EQUITY_WEIGHT",
    "MAX_QUANTITY",
    "ProblemError",
    "format_time",
    "load_plan",
    "load_plan_file",
    "load_problem",
    "load_problem_file",
    "plan_to_dict",
    "problem_to_dict",
]

MAX_EQUITY_WEIGHT = 10.0


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
    sources = tuple(_source(s, f"sources[{i}]", skus, ids) for i, s in enumerate(_list(root["sources"], "sources")))
    demands = tuple(_demand(d, f"demands[{i}]", skus, ids) for i, d in enumerate(_list(root["demands"], "demands")))
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
