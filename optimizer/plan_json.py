"""Plan JSON (SPEC §3.4): dump, and load with shape errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from optimizer.jsonfields import ProblemError, _list, _num, _obj, _opt, _read_json, _str, _whole
from optimizer.model import (
    PRIORITIES,
    Allocation,
    DemandResult,
    Kpis,
    Plan,
    Reason,
    SolverStats,
    StageStats,
    TierKpis,
)

REASONS: tuple[str, ...] = ("no_compatible_supply", "unreachable_by_deadline", "lower_priority", "shortage")
STATUSES: tuple[str, ...] = ("optimal", "time_limit")


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
    root = _obj(data, "", {"status", "allocations", "demands", "kpis", "solver"}, {"status", "allocations", "demands"})
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
    d = _obj(v, "kpis", {"by_priority", "transport_cost", "unit_km", "substituted_units", "substitution_penalty"})
    tiers: dict[str, TierKpis] = {}
    bp = d.get("by_priority") or {}
    if not isinstance(bp, dict):
        raise ProblemError("kpis.by_priority", "must be an object")
    for tier, k in bp.items():
        p = f"kpis.by_priority.{tier}"
        if tier not in PRIORITIES:
            raise ProblemError(p, "unknown priority")
        kd = _obj(k, p, {"requested", "allocated", "min_fill_rate", "min_level", "jain_index", "demands_unserved"})
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
        detail = {k: x for k, x in s.items() if k not in ("name", "wall_s") and isinstance(x, str | int | float)}
        stages.append(
            StageStats(name=_str(s.get("name"), f"{p}.name"), wall_s=_opt(s, "wall_s", p, _num) or 0.0, detail=detail)
        )
    return SolverStats(wall_s=_opt(d, "wall_s", "solver", _num) or 0.0, stages=tuple(stages))


def load_plan_file(path: str | Path) -> Plan:
    """Read and parse a Plan JSON file (errors as ProblemError)."""
    return load_plan(_read_json(path))
