"""The two baselines a plan is compared with (SPEC §3.5), as ordinary Plans (status "optimal").

* ``greedy`` — first come, first served: demands in priority order, then input (submission) order;
  each takes whole units from its feasible sources nearest first (ties: the demanded SKU before a
  substitute, then source order) until it is satisfied or nothing it can reach is left.
* ``proportional`` — per SKU, the supply of that SKU is split among the demands *for that SKU* in
  proportion to their requested quantities, ignoring geography, priority and substitution: target
  t_j = min(q_j, S · q_j / Q) in whole units by largest remainder (ties in input order), where S is
  the SKU's total stock and Q its total request. The targets are then shipped over feasible arcs of
  that SKU only, so the plan is valid: one max-flow with demand capacities t_j delivers as much of the
  targets as the deadlines and expiry dates allow (a demand whose share cannot reach it in time simply
  gets less; the stock stays where it is).

Both use the solver's feasible arcs (``network.build_arcs``) and ``explain.build_plan``, so their
reasons and KPIs are computed exactly like the optimizer's.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
from ortools.graph.python import max_flow

from optimizer.explain import build_plan
from optimizer.model import PRIORITIES, Plan, Problem, SolverStats, StageStats
from optimizer.network import Arcs, build_arcs

I64 = npt.NDArray[np.int64]


def greedy(problem: Problem) -> Plan:
    """First-come-first-served, nearest feasible source first (see the module docstring)."""
    started = time.monotonic()
    arcs = build_arcs(problem)
    rank = {name: k for k, name in enumerate(PRIORITIES)}
    tier = np.array([rank[d.priority] for d in problem.demands], dtype=np.int64)
    left = arcs.source_qty.copy()
    flow = np.zeros(arcs.n, dtype=np.int64)
    start = arcs.demand_start.tolist()
    src, dist, sub, qty = arcs.source, arcs.distance_km, arcs.substitute, arcs.demand_qty.tolist()
    for d in np.lexsort((np.arange(tier.size), tier)).tolist():
        lo, hi = start[d], start[d + 1]
        if lo == hi:
            continue
        # A demand's arcs are in source order, and lexsort is stable: nearest, then primary SKU, then source.
        idx = lo + np.lexsort((sub[lo:hi], dist[lo:hi]))
        srcs = src[idx]
        avail = left[srcs]
        before = np.cumsum(avail) - avail  # units offered by nearer sources
        take = np.minimum(np.maximum(qty[d] - before, 0), avail)
        left[srcs] -= take  # a source appears at most once per demand
        flow[idx] = take
    return _plan(problem, arcs, flow, "greedy", started)


def proportional_targets(supply: int, requested: I64) -> I64:
    """min(q_j, S·q_j/Q) in whole units, largest remainders first (ties by position); Σ = min(S, Q)."""
    total = int(requested.sum())
    if total == 0:
        return np.zeros_like(requested)
    give = min(supply, total)
    exact = requested.astype(object) * give  # Python ints: S·q_j can exceed int64
    base = np.array([v // total for v in exact], dtype=np.int64)
    rem = np.array([v % total for v in exact], dtype=np.int64)
    extra = give - int(base.sum())
    winners = np.lexsort((np.arange(requested.size), -rem))[:extra]
    base[winners] += 1
    return base


def proportional(problem: Problem) -> Plan:
    """Per-SKU proportional split of supply, shipped over feasible same-SKU arcs (module docstring)."""
    started = time.monotonic()
    arcs = build_arcs(problem)
    ns, nd = len(problem.sources), len(problem.demands)
    target = np.zeros(nd, dtype=np.int64)
    s_item = np.array([s.item for s in problem.sources], dtype=object)
    d_item = np.array([d.item for d in problem.demands], dtype=object)
    for it in problem.items:
        dem = np.flatnonzero(d_item == it.sku)
        if dem.size:
            supply = int(arcs.source_qty[s_item == it.sku].sum()) if ns else 0
            target[dem] = proportional_targets(supply, arcs.demand_qty[dem])
    use = np.flatnonzero(~arcs.substitute & (target[arcs.demand] > 0))
    flow = np.zeros(arcs.n, dtype=np.int64)
    if use.size:
        flow[use] = _max_flow(arcs, use, target, ns, nd)
    return _plan(problem, arcs, flow, "proportional", started)


def _max_flow(arcs: Arcs, use: I64, target: I64, ns: int, nd: int) -> I64:
    """Integer flow on arcs ``use``: sources ≤ stock, demands ≤ target, as much as possible."""
    graph = max_flow.SimpleMaxFlow()
    src_node = 2 + np.arange(ns, dtype=np.int64)
    dem_node = 2 + ns + np.arange(nd, dtype=np.int64)
    big = int(arcs.source_qty.sum()) + 1
    tails = np.concatenate([np.zeros(ns, np.int64), src_node[arcs.source[use]], dem_node])
    heads = np.concatenate([src_node, dem_node[arcs.demand[use]], np.ones(nd, np.int64)])
    caps = np.concatenate([arcs.source_qty, np.full(use.size, big, np.int64), target])
    ids = np.asarray(graph.add_arcs_with_capacity(tails, heads, caps), dtype=np.int64)
    if graph.solve(0, 1) != graph.OPTIMAL:
        raise RuntimeError("max-flow failed in the proportional baseline")
    return np.asarray(graph.flows(ids[ns : ns + use.size]), dtype=np.int64)


def _plan(problem: Problem, arcs: Arcs, flow: I64, name: str, started: float) -> Plan:
    wall = time.monotonic() - started
    stats = SolverStats(wall_s=wall, stages=(StageStats(name, wall, {"arcs": arcs.n}),))
    return build_plan(problem, arcs, flow, status="optimal", stats=stats)
