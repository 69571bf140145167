"""Stage 3: minimum transport + substitution cost at fixed per-demand quantities (SPEC §3.3).

**Blocks.** A fairness block's demands can only be served by its own sources in any plan with the fair
quantities (see ``optimizer.fairness``), so arcs between blocks are dropped and every block is an independent
transportation problem: super source → source (its stock, cost 0) → demand (cost c_sr) with each demand's
supply fixed at its quantity. Small blocks are merged into one solve.

**Integer costs.** OR-Tools needs integers: ``round(unit_cost × scale)`` with ``scale = min(cost_scale,
max_scaled_cost / max unit cost)``; the error is ≤ 0.5 / scale per unit.

**Pricing (exact, fewer arcs).** On large blocks the min-cost flow is solved first over each demand's
``candidates`` cheapest arcs plus the arcs of a known feasible flow (the fairness stage's witness, so the
reduced problem is feasible). Node potentials π are then the shortest-path distances in the residual graph of
that optimum (Bellman–Ford from a virtual root, vectorized, exact in integers). If every omitted arc has
reduced cost c_sr + π_s − π_r ≥ 0, the flow is optimal for the full block (LP duality); otherwise the
violating arcs (and all arcs within ``pricing_margin`` of violating) are added and the reduced problem is
solved again. If that does not settle within ``pricing_rounds`` the full block is solved directly, so the
answer is always the exact optimum for the scaled costs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ortools.graph.python import min_cost_flow

from optimizer.network import Arcs
from optimizer.parallel import ParallelOptions, fork_map

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RoutingOptions:
    cost_scale: float = 1e4  # integer cost units per currency unit
    max_scaled_cost: float = 1e8  # keeps OR-Tools' internal cost arithmetic far from int64 overflow
    group_arcs: int = 50_000  # small blocks are merged into one solve up to this many arcs
    candidates: int = 15  # cheapest arcs per demand in the first pricing round
    pricing_margin: float = 0.1  # currency/unit: arcs this close to attractive join with the violators
    pricing_min_arcs: int = 500_000  # blocks with fewer arcs are solved directly
    pricing_rounds: int = 8


def route_min_cost(
    arcs: Arcs,
    quantity: I64,
    block_of_demand: I32,
    block_of_source: I32,
    witness: I64 | None = None,
    options: RoutingOptions | None = None,
    deadline: float | None = None,
    parallel: ParallelOptions | None = None,
) -> RouteResult:
    """Integer flow per arc meeting ``quantity`` exactly at minimum (scaled) cost.

    ``witness`` is any flow meeting ``quantity`` (e.g. from the fairness stage): its arcs join the first
    pricing round so that the reduced problem is feasible, and once ``deadline`` (a ``time.monotonic()``
    value) has passed, groups not yet solved keep the witness's routing (``optimal`` is then False).
    Without a witness, large blocks are solved whole and the deadline is ignored. Groups may be shared
    with a forked helper process (``parallel``; default: none).
    """
    opts = options or RoutingOptions()
    flow = np.zeros(arcs.n, dtype=np.int64)
    use = np.flatnonzero((quantity[arcs.demand] > 0) & (block_of_source[arcs.source] == block_of_demand[arcs.demand]))
    if use.size == 0:
        return RouteResult(flow, 0, True)
    unit_cost = arcs.unit_cost_at(use)
    top = float(unit_cost.max())
    scale = opts.cost_scale if top <= 0 else min(opts.cost_scale, opts.max_scaled_cost / top)
    cost = np.rint(unit_cost * scale).astype(np.int64)  # aligned with ``use``
    margin = int(round(opts.pricing_margin * scale))
    blk_raw = block_of_demand[arcs.demand[use]]
    _, blk = _compact(blk_raw, int(blk_raw.max()) + 1)
    # Stable, so arcs stay demand-major inside a block; 16-bit keys let numpy use a radix sort.
    order = np.argsort(blk.astype(np.int16) if blk.max() < 2**15 else blk, kind="stable")
    use, blk, cost = use[order], blk[order], cost[order]
    bounds = np.flatnonzero(np.diff(blk)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [use.size]])
    groups: list[slice] = []
    group_start = 0
    for k in range(starts.size):
        # Merge consecutive blocks until the group is big enough to be worth one solve.
        if k + 1 < starts.size and ends[k] - starts[group_start] < opts.group_arcs:
            continue
        groups.append(slice(int(starts[group_start]), int(ends[k])))
        group_start = k + 1

    def run(g: slice) -> tuple[I64, int]:
        start = None if witness is None else witness[use[g]]
        return _Group(arcs, quantity, use[g], cost[g], start).solve(opts, deadline, margin)

    sizes = [g.stop - g.start for g in groups]
    par = parallel or ParallelOptions(workers=1)
    results = fork_map(run, groups, sizes, workers=par.workers, min_weight=par.min_arcs, pack=_pack, unpack=_unpack)
    solves, optimal = 0, True
    for g, (f, n) in zip(groups, results, strict=True):
        flow[use[g]] = f
        solves += max(n, 0)
        optimal &= n >= 0
    return RouteResult(flow, solves, optimal)


@dataclass(frozen=True)
class RouteResult:
    flow: I64  # per arc
    solves: int  # min-cost-flow solves
    optimal: bool  # False when the deadline left some group on the witness's routing


def _pack(result: tuple[I64, int]) -> tuple[int, I64, I64, int]:
    """A group's flow as (length, used positions, their values, solves): most arcs carry nothing."""
    flow, solves = result
    pos = np.flatnonzero(flow)
    return flow.size, pos, flow[pos], solves


def _unpack(packed: tuple[int, I64, I64, int]) -> tuple[I64, int]:
    size, pos, values, solves = packed
    flow = np.zeros(size, dtype=np.int64)
    flow[pos] = values
    return flow, solves


def _compact(ids: npt.NDArray[np.integer], n: int) -> tuple[I64, I32]:
    """Distinct values of ``ids`` (ascending) and each entry's index among them; O(len + n), no sort."""
    present = np.zeros(n, dtype=np.bool_)
    present[ids] = True
    local = np.cumsum(present, dtype=np.int32) - 1
    return np.flatnonzero(present), local[ids]


class _Group:
    """One transportation problem over the arcs ``sel`` with local node numbers."""

    def __init__(self, arcs: Arcs, quantity: I64, sel: npt.NDArray[np.int64], cost: I64, start: I64 | None) -> None:
        self.cost = cost
        self.start = start  # a feasible flow on these arcs, when known
        u_src, l_src = _compact(arcs.source[sel], arcs.source_qty.size)
        u_dem, l_dem = _compact(arcs.demand[sel], arcs.demand_qty.size)
        self.ns, self.nd = int(u_src.size), int(u_dem.size)
        # node 0 = super source, 1…ns = sources, ns+1… = demands
        self.tail = 1 + l_src
        self.head = 1 + self.ns + l_dem
        self.stock = arcs.source_qty[u_src]
        self.need = quantity[u_dem]
        self.arc_cap = quantity[arcs.demand[sel]]

    def _mcf(self, idx: npt.NDArray[np.int64] | None) -> I64:
        """Min-cost flow over the arcs ``idx`` (all when None), aligned with ``idx``."""
        ns, nd = self.ns, self.nd
        tail, head, cap, cost = (
            (self.tail, self.head, self.arc_cap, self.cost)
            if idx is None
            else (self.tail[idx], self.head[idx], self.arc_cap[idx], self.cost[idx])
        )
        mcf = min_cost_flow.SimpleMinCostFlow()
        mcf.add_arcs_with_capacity_and_unit_cost(
            np.concatenate([np.zeros(ns, np.int32), tail]),
            np.concatenate([1 + np.arange(ns, dtype=np.int32), head]),
            np.concatenate([self.stock, cap]).astype(np.int64),
            np.concatenate([np.zeros(ns, np.int64), cost]),
        )
        supplies = np.concatenate([[self.need.sum()], np.zeros(ns, np.int64), -self.need]).astype(np.int64)
        mcf.set_nodes_supplies(np.arange(1 + ns + nd, dtype=np.int32), supplies)
        status = mcf.solve()
        if status != mcf.OPTIMAL:
            raise RuntimeError(f"min-cost flow failed with status {status}")
        return np.asarray(mcf.flows(np.arange(ns, ns + tail.size, dtype=np.int32)), dtype=np.int64)

    def solve(self, opts: RoutingOptions, deadline: float | None, margin: int) -> tuple[I64, int]:
        """Optimal flow aligned with the group's arcs and the number of min-cost-flow solves; past the
        deadline, the known feasible flow and −1."""
        n = self.cost.size
        if self.start is None:
            return self._mcf(None), 1
        if deadline is not None and time.monotonic() > deadline:
            return self.start, -1
        if n < opts.pricing_min_arcs:
            return self._mcf(None), 1
        # Rank of each arc among its demand's arcs, cheapest first (ties: arc order). One stable argsort
        # of a composite integer key is several times faster than lexsort.
        key = self.head.astype(np.int64) * (int(self.cost.max()) + 1) + self.cost
        order = np.argsort(key, kind="stable")
        del key
        run = np.flatnonzero(np.diff(self.head[order], prepend=-1))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.repeat(run, np.diff(run, append=n))
        active = (rank < opts.candidates) | (self.start > 0)
        for round_ in range(opts.pricing_rounds):
            if round_ and deadline is not None and time.monotonic() > deadline:
                return self.start, -1
            idx = np.flatnonzero(active)
            f_act = self._mcf(idx)
            pi = self._potentials(idx, f_act)
            if pi is None:
                break
            reduced = self.cost + pi[self.tail] - pi[self.head]
            violated = reduced < 0
            violated &= ~active
            if not violated.any():
                flow = np.zeros(n, dtype=np.int64)
                flow[idx] = f_act
                return flow, round_ + 1
            # Also take arcs that are nearly attractive: the next optimum tends to want them, and one
            # more round costs more than the extra arcs.
            active |= violated | (reduced < margin)
        return self._mcf(None), opts.pricing_rounds + 1

    def _potentials(self, idx: npt.NDArray[np.int64], f: I64) -> I64 | None:
        """Shortest residual-path distances from a virtual root (Bellman–Ford), or None if unsettled.

        Residual graph of the reduced optimum: a real arc forward while below capacity and backward
        (negated cost) while carrying flow; super source → source while it has stock left, and back
        while it gives any. Without negative cycles (the flow is optimal) the distances settle.
        """
        ns, nd = self.ns, self.nd
        tail, head, cost, cap = self.tail[idx], self.head[idx], self.cost[idx], self.arc_cap[idx]
        used = np.bincount(tail - 1, weights=f, minlength=ns).astype(np.int64)
        src = np.arange(1, ns + 1, dtype=np.int32)
        fwd, back = f < cap, f > 0
        spare, busy = src[used < self.stock], src[used > 0]
        t = np.concatenate([tail[fwd], head[back], np.zeros(spare.size, np.int32), busy])
        h = np.concatenate([head[fwd], tail[back], spare, np.zeros(busy.size, np.int32)])
        w = np.concatenate([cost[fwd], -cost[back], np.zeros(spare.size + busy.size, np.int64)])
        order = np.argsort(h, kind="stable")
        t, h, w = t[order], h[order], w[order]
        heads, first = np.unique(h, return_index=True)
        pi = np.zeros(1 + ns + nd, dtype=np.int64)
        for _ in range(2 * (1 + ns + nd) + 2):
            best = np.minimum(pi[heads], np.minimum.reduceat(pi[t] + w, first))
            if np.array_equal(best, pi[heads]):
                return pi
            pi[heads] = best
        return None
