"""Stage 3: minimum transport + substitution cost at fixed per-demand quantities (SPEC §3.3).

One OR-Tools ``SimpleMinCostFlow`` per group of fairness blocks: a block's demands can only be served
by its own sources in any plan with the fair quantities (see ``optimizer.fairness``), so arcs between
blocks are dropped and each block is an independent transportation problem. Costs must be integers:
``round(unit_cost × scale)`` with ``scale = min(cost_scale, max_scaled_cost / max unit cost)``, so the
rounding error is at most ``0.5 / scale`` per unit (1e-4 × 0.5 by default — far inside 0.1%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ortools.graph.python import max_flow, min_cost_flow

from optimizer.network import Arcs

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RoutingOptions:
    cost_scale: float = 1e4  # integer cost units per currency unit
    max_scaled_cost: float = 1e8  # keeps OR-Tools' internal cost arithmetic far from int64 overflow
    group_arcs: int = 50_000  # small blocks are merged into one solve up to this many arcs


def route_min_cost(
    arcs: Arcs, quantity: I64, block_of_demand: I32, block_of_source: I32, options: RoutingOptions | None = None
) -> tuple[I64, int]:
    """Integer flow per arc meeting ``quantity`` exactly at minimum (scaled) cost; also the solve count."""
    opts = options or RoutingOptions()
    flow = np.zeros(arcs.n, dtype=np.int64)
    use = np.flatnonzero((quantity[arcs.demand] > 0) & (block_of_source[arcs.source] == block_of_demand[arcs.demand]))
    if use.size == 0:
        return flow, 0
    top = float(arcs.unit_cost[use].max()) if use.size else 0.0
    scale = opts.cost_scale if top <= 0 else min(opts.cost_scale, opts.max_scaled_cost / top)
    cost = np.rint(arcs.unit_cost * scale).astype(np.int64)
    blk = block_of_demand[arcs.demand[use]]
    order = np.argsort(blk, kind="stable")
    use, blk = use[order], blk[order]
    bounds = np.flatnonzero(np.diff(blk)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [use.size]])
    solves = 0
    group_start = 0
    for k in range(starts.size):
        # Merge consecutive blocks until the group is big enough to be worth one solve.
        if k + 1 < starts.size and ends[k] - starts[group_start] < opts.group_arcs:
            continue
        sel = use[starts[group_start] : ends[k]]
        flow[sel] = _solve_group(arcs, quantity, sel, cost)
        solves += 1
        group_start = k + 1
    return flow, solves


def _solve_group(arcs: Arcs, quantity: I64, sel: npt.NDArray[np.int64], cost: I64) -> I64:
    src, dem = arcs.source[sel], arcs.demand[sel]
    u_src, l_src = np.unique(src, return_inverse=True)
    u_dem, l_dem = np.unique(dem, return_inverse=True)
    ns, nd = u_src.size, u_dem.size
    # node 0 = super source, 1…ns = sources, ns+1… = demands
    mcf = min_cost_flow.SimpleMinCostFlow()
    mcf.add_arcs_with_capacity_and_unit_cost(
        np.concatenate([np.zeros(ns, np.int32), 1 + l_src.astype(np.int32)]),
        np.concatenate([1 + np.arange(ns, dtype=np.int32), 1 + ns + l_dem.astype(np.int32)]),
        np.concatenate([arcs.source_qty[u_src], quantity[dem]]).astype(np.int64),
        np.concatenate([np.zeros(ns, np.int64), cost[sel]]),
    )
    need = quantity[u_dem]
    supplies = np.concatenate([[need.sum()], np.zeros(ns, np.int64), -need]).astype(np.int64)
    mcf.set_nodes_supplies(np.arange(1 + ns + nd, dtype=np.int32), supplies)
    status = mcf.solve()
    if status != mcf.OPTIMAL:
        raise RuntimeError(f"min-cost flow failed with status {status}")
    ids = ns + np.arange(sel.size, dtype=np.int32)
    return np.asarray(mcf.flows(ids), dtype=np.int64)


def route_any(arcs: Arcs, quantity: I64) -> I64:
    """Some integer flow meeting ``quantity`` (one max-flow, cost ignored): the time-limit fallback."""
    ns, nd = int(arcs.source_qty.size), int(quantity.size)
    g = max_flow.SimpleMaxFlow()
    src_nodes = 2 + np.arange(ns, dtype=np.int32)
    dem_nodes = 2 + ns + np.arange(nd, dtype=np.int32)
    ids = g.add_arcs_with_capacity(
        np.concatenate([np.zeros(ns, np.int32), src_nodes[arcs.source], dem_nodes]),
        np.concatenate([src_nodes, dem_nodes[arcs.demand], np.ones(nd, np.int32)]),
        np.concatenate([arcs.source_qty, np.full(arcs.n, int(arcs.source_qty.sum()) + 1), quantity]).astype(np.int64),
    )
    status = g.solve(0, 1)
    if status != g.OPTIMAL or g.optimal_flow() != int(quantity.sum()):
        raise RuntimeError("quantities are not feasible")
    return np.asarray(g.flows(ids[ns : ns + arcs.n]), dtype=np.int64)
