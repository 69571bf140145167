"""Turn a flow on the feasible arcs into a Plan: allocation lines, per-demand reasons, KPIs (SPEC §3.4).

Works for any feasible integer flow (the optimizer's or a baseline's). Definitions:

* ``fill_rate`` = allocated / requested; ``level`` = allocated / (equity_weight × requested).
* ``reason`` (``None`` when unmet = 0), the first that applies:
  ``no_compatible_supply`` — no source with quantity > 0 holds the SKU or a listed substitute;
  ``unreachable_by_deadline`` — such sources exist but no feasible arc (deadline / expiry) reaches it;
  ``lower_priority`` — some source with a feasible arc to this demand sent units to a demand of a
  strictly higher tier in this plan; ``shortage`` — otherwise (reachable supply ran out and was shared).
* Per tier (all three always present): ``requested``, ``allocated``; ``min_fill_rate`` and ``min_level``
  over the tier's demands (0.0 for an empty tier); ``jain_index`` = (Σf)² / (n·Σf²) over fill rates f,
  1.0 for an empty tier or when every fill is 0 (all equal); ``demands_unserved`` = demands given 0.
* ``transport_cost`` = Σ units × distance_km × cost_per_unit_km; ``unit_km`` = Σ units × distance_km;
  ``substituted_units`` = units on substitute arcs; ``substitution_penalty`` = Σ units × penalty.
  An allocation's ``cost`` is its transport plus penalty. Money is rounded to 1e-4, km to 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from optimizer.model import (
    PRIORITIES,
    Allocation,
    DemandResult,
    Kpis,
    Plan,
    PlanStatus,
    Problem,
    Reason,
    SolverStats,
    TierKpis,
)
from optimizer.network import Arcs

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

MONEY_DIGITS = 4
KM_DIGITS = 3


def build_plan(problem: Problem, arcs: Arcs, flow: npt.ArrayLike, *, status: PlanStatus, stats: SolverStats) -> Plan:
    """Assemble the Plan for ``flow`` (integer units per arc of ``arcs``)."""
    f = np.asarray(flow, dtype=np.int64)
    if f.shape != (arcs.n,):
        raise ValueError(f"flow has shape {f.shape}, expected ({arcs.n},)")
    nd = len(problem.demands)
    cpk = problem.settings.cost_per_unit_km
    x = np.bincount(arcs.demand, weights=f, minlength=nd).astype(np.int64) if arcs.n else np.zeros(nd, np.int64)
    q = arcs.demand_qty
    weight = np.array([d.equity_weight for d in problem.demands], dtype=np.float64)
    tier_of = {p: i for i, p in enumerate(PRIORITIES)}
    tier = np.array([tier_of[d.priority] for d in problem.demands], dtype=np.int64)

    pos = np.flatnonzero(f > 0)
    allocations = tuple(
        Allocation(
            source=problem.sources[s].id,
            demand=problem.demands[d].id,
            item=problem.sources[s].item,
            quantity=n,
            distance_km=round(km, KM_DIGITS),
            cost=round(n * uc, MONEY_DIGITS),
        )
        for s, d, n, km, uc in zip(
            arcs.source[pos].tolist(),
            arcs.demand[pos].tolist(),
            f[pos].tolist(),
            arcs.distance_km[pos].tolist(),
            arcs.unit_cost_at(pos).tolist(),
            strict=True,
        )
    )

    reasons = _reasons(arcs, f, x, tier)
    fill = np.divide(x, q, out=np.zeros(nd), where=q > 0)
    demands = tuple(
        DemandResult(id=d.id, allocated=xa, fill_rate=fr, unmet=qa - xa, reason=rs)
        for d, xa, qa, fr, rs in zip(problem.demands, x.tolist(), q.tolist(), fill.tolist(), reasons, strict=True)
    )
    level = x / (weight * q)
    by_priority: dict[str, TierKpis] = {
        name: _tier_kpis(q[tier == t], x[tier == t], fill[tier == t], level[tier == t])
        for t, name in enumerate(PRIORITIES)
    }
    used = f[pos].astype(np.float64)
    unit_km = math.fsum((used * arcs.distance_km[pos]).tolist())
    kpis = Kpis(
        by_priority=by_priority,
        transport_cost=round(unit_km * cpk, MONEY_DIGITS),
        unit_km=round(unit_km, KM_DIGITS),
        substituted_units=int(f[pos][arcs.pair_substitute[arcs.pair[pos]]].sum()),
        substitution_penalty=round(math.fsum((used * arcs.pair_penalty[arcs.pair[pos]]).tolist()), MONEY_DIGITS),
    )
    return Plan(status=status, allocations=allocations, demands=demands, kpis=kpis, solver=stats)


def _reasons(arcs: Arcs, f: I64, x: I64, tier: I64) -> list[Reason | None]:
    ns = arcs.source_qty.size
    # Highest tier (smallest number) each source actually served; len(PRIORITIES) when it served none.
    served = np.full(ns, len(PRIORITIES), dtype=np.int64)
    pos = f > 0
    np.minimum.at(served, arcs.source[pos], tier[arcs.demand[pos]])
    outranked = np.zeros(x.size, dtype=np.bool_)
    outranked[arcs.demand[served[arcs.source] < tier[arcs.demand]]] = True
    reachable = arcs.reachable
    out: list[Reason | None] = []
    for unmet, comp, reach, lower in zip(
        (x < arcs.demand_qty).tolist(), arcs.compatible.tolist(), reachable.tolist(), outranked.tolist(), strict=True
    ):
        if not unmet:
            out.append(None)
        elif not comp:
            out.append("no_compatible_supply")
        elif not reach:
            out.append("unreachable_by_deadline")
        elif lower:
            out.append("lower_priority")
        else:
            out.append("shortage")
    return out


def _tier_kpis(q: I64, x: I64, fill: F64, level: F64) -> TierKpis:
    n = int(q.size)
    if n == 0:
        return TierKpis(requested=0, allocated=0, min_fill_rate=0.0, min_level=0.0, jain_index=1.0, demands_unserved=0)
    sq = math.fsum((fill * fill).tolist())
    jain = 1.0 if sq == 0.0 else min(1.0, math.fsum(fill.tolist()) ** 2 / (n * sq))
    return TierKpis(
        requested=int(q.sum()),
        allocated=int(x.sum()),
        min_fill_rate=float(fill.min()),
        min_level=float(level.min()),
        jain_index=jain,
        demands_unserved=int((x == 0).sum()),
    )


def quantities(arcs: Arcs, flow: npt.ArrayLike) -> I64:
    """Units per demand of a flow vector."""
    nd = arcs.demand_qty.size
    return np.bincount(arcs.demand, weights=np.asarray(flow, dtype=np.float64), minlength=nd).astype(np.int64)
