"""Priority tiers and weighted max-min fair quantities in whole units (SPEC §3.3, stages 1 and 2).

**What is computed.** Every demand r has units k = 1 … q_r; unit k of r has the key
``(tier_r, k / (w_r q_r), r)`` (``fl(k / c_r)`` in float64 with ``c_r = w_r * q_r``; ties broken by input
order). The result is the vector the *unit greedy* produces: take units in key order and accept one
iff the demands' quantities stay jointly feasible (a flow from the sources exists). Achievable vectors
form an integral polymatroid, so the greedy is well defined and meets SPEC §3.3's certificate: if r
could gain a unit while s loses one, then key(s, x_s) < key(r, x_r + 1) — s is in a higher tier, or in
the same tier with x_s / c_s ≤ (x_r + 1) / c_r, i.e. exactly the protected demands.

**How (decomposition, not unit by unit).** A *subproblem* is a set of demands with the sources that
can serve them, start quantities L (units already settled) and end quantities T (units that may still
be added), and F = its max-flow with caps T when known. One step:

* F unknown: max-flow with caps T. All caps met → done at T. Otherwise the sink side A of the min
  cut (demands not reachable from S in the residual graph) is tight — it receives exactly the supply Y of
  the sink-side sources, which serve nothing else — and every demand outside A is at its cap T in
  every maximal vector, so it is done at T; A continues with F = flow into A.
* F known: let θ be the key of the (F − ΣL)-th unit above L and t the caps "units with key ≤ θ", so
  Σt = F. Max-flow with caps t: all met → done at t (a vector of total F is maximal). Otherwise split
  along the min cut: A (sink side) keeps only units ≤ θ (T := t) and the supply Y; the rest B starts
  at L := t (each of its demands reaches t in every greedy outcome) with F − flow(A) and the
  source-side supply. Neither part can take units from the other in any plan with these totals, and
  every cross exchange B-gains/A-loses has key(A unit) ≤ θ < key(B's next unit), so certificates of
  the parts combine into a certificate of the whole.

* F known and ΣL = F already: done at L.

Item components (SKUs linked by substitution) are independent networks from the start. Within one,
subproblems are disjoint networks, so every pending subproblem of a round is solved by **one**
OR-Tools max-flow over the component's graph (cross arcs at capacity 0). The min-cut side sets do not
depend on which max flow the solver finds, so the result is deterministic. The final subproblems
(``block_of_demand`` / ``block_of_source``) also partition the min-cost stage: in every plan with these
quantities a block's demands are served only by its own sources.

The ``witness`` flow keeps, per arc, the value of the last max-flow in which its demand's subproblem
took part. It is always feasible as a whole (an arc from one part of a split into the other carries no
flow in that round's max flow: cut arcs point from the source side to the sink side only), and for a
finished block it realizes the final quantities. If the deadline passes, the rounds stop and the
quantities are the witness's: exact for finished blocks, the last round's max flow elsewhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ortools.graph.python import max_flow

from optimizer.model import PRIORITIES, Problem
from optimizer.network import Arcs
from optimizer.parallel import ParallelOptions, fork_map

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

N_TIERS = len(PRIORITIES)


@dataclass(frozen=True)
class FairResult:
    quantity: I64  # per demand, whole units
    block_of_demand: I32  # final subproblem id per demand
    block_of_source: I32  # final subproblem id per source
    exact: bool  # False when the deadline stopped the rounds early
    rounds: int
    max_flows: int  # subproblem max-flows (several share one OR-Tools solve per round)
    witness: I64  # per arc: a flow realizing ``quantity`` when exact (each block's last max-flow)


def item_components(problem: Problem) -> tuple[I32, I32]:
    """Component id per source and per demand: items linked by a substitution are one component."""
    index = {it.sku: k for k, it in enumerate(problem.items)}
    parent = list(range(len(problem.items)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for k, it in enumerate(problem.items):
        for s in it.substitutes:
            ra, rb = find(k), find(index[s.sku])
            parent[max(ra, rb)] = min(ra, rb)
    comp = np.array([find(k) for k in range(len(problem.items))], dtype=np.int32)
    s_comp = comp[np.array([index[s.item] for s in problem.sources], dtype=np.int64)] if problem.sources else None
    d_comp = comp[np.array([index[d.item] for d in problem.demands], dtype=np.int64)] if problem.demands else None
    return (np.zeros(0, np.int32) if s_comp is None else s_comp, np.zeros(0, np.int32) if d_comp is None else d_comp)


def _count(mu: F64, c: F64, lo: I64, hi: I64) -> I64:
    """Per demand: how many of its units k in (lo, hi] have fl(k / c) ≤ mu (exact, float-consistent)."""
    with np.errstate(over="ignore", invalid="ignore"):
        k = np.floor(np.minimum(mu * c, np.float64(2**62)))
    k = np.clip(k, lo, hi).astype(np.int64)
    # mu * c may round across an integer; one step each way restores k = max{k : fl(k / c) ≤ mu}.
    k = np.where((k < hi) & ((k + 1) / c <= mu), k + 1, k)
    k = np.where((k > lo) & (k / c > mu), k - 1, k)
    return np.asarray(k - lo, dtype=np.int64)


def select_caps(sub: I32, n_sub: int, m: I64, tier: npt.NDArray[np.int8], c: F64, lo: I64, hi: I64) -> I64:
    """Caps t = L + (the m_j smallest-key units in (L, T]) for every subproblem j, vectorized.

    ``sub`` maps each listed demand to its subproblem 0…n_sub−1 and must be ordered by demand index
    within a subproblem (ties go to the lower index). Requires 0 < m_j < Σ(T − L) over j.
    """
    units = hi - lo
    per_tier = np.zeros((n_sub, N_TIERS), dtype=np.int64)
    np.add.at(per_tier, (sub, tier), units)
    cum = np.cumsum(per_tier, axis=1)
    sel_tier = np.argmax(cum >= m[:, None], axis=1)  # first tier whose units reach m
    before = np.take_along_axis(cum, sel_tier[:, None], axis=1)[:, 0] - per_tier[np.arange(n_sub), sel_tier]
    need = m - before  # units to take inside the selected tier, ≥ 1
    my_tier = sel_tier[sub]
    caps = np.where(tier < my_tier, hi, lo)
    idx = np.flatnonzero(tier == my_tier)
    if idx.size == 0:
        return np.asarray(caps, dtype=np.int64)
    s_sub, s_c, s_lo, s_hi = sub[idx], c[idx], lo[idx], hi[idx]
    # Bisection on the bit patterns of non-negative doubles (monotone as int64): exact in ≤ 64 steps.
    top = np.zeros(n_sub, dtype=np.float64)
    np.maximum.at(top, s_sub, np.where(s_hi > s_lo, s_hi / s_c, 0.0))
    lo_bits = np.zeros(n_sub, dtype=np.int64)
    hi_bits = top.view(np.int64).copy()
    while True:
        open_ = hi_bits - lo_bits > 1
        if not open_.any():
            break
        mid = lo_bits + (hi_bits - lo_bits) // 2
        got = np.bincount(s_sub, weights=_count(mid.view(np.float64)[s_sub], s_c, s_lo, s_hi), minlength=n_sub)
        ok = got >= need
        hi_bits = np.where(open_ & ok, mid, hi_bits)
        lo_bits = np.where(open_ & ~ok, mid, lo_bits)
    below = _count(lo_bits.view(np.float64)[s_sub], s_c, s_lo, s_hi)
    at = _count(hi_bits.view(np.float64)[s_sub], s_c, s_lo, s_hi) - below  # 0 or 1: a unit exactly at θ
    short = need - np.bincount(s_sub, weights=below, minlength=n_sub).astype(np.int64)
    order = np.lexsort((idx, s_sub))  # by subproblem, then demand index
    grp, tie_sorted = s_sub[order], at[order]
    rank = np.cumsum(tie_sorted) - tie_sorted  # tied units before this row, all groups together
    first_row = np.searchsorted(grp, np.arange(n_sub), side="left")
    base = rank[np.minimum(first_row, grp.size - 1)]
    take_sorted = (tie_sorted > 0) & (rank - base[grp] < short[grp])
    take = np.empty_like(take_sorted)
    take[order] = take_sorted
    caps[idx] = s_lo + below + take.astype(np.int64)
    return np.asarray(caps, dtype=np.int64)


@dataclass(frozen=True)
class _Net:
    """One item component as an independent network, in local indices."""

    arc_src: I32
    arc_dem: I32
    supply: I64
    q: I64
    tier: npt.NDArray[np.int8]
    c: F64  # w · q


@dataclass(frozen=True)
class _Part:
    x: I64
    d_block: I32
    s_block: I32
    witness: I64
    exact: bool
    rounds: int
    max_flows: int


def fair_quantities(
    problem: Problem, arcs: Arcs, *, deadline: float | None = None, parallel: ParallelOptions | None = None
) -> FairResult:
    """Lexicographic-tier, weighted max-min fair whole-unit quantities (see the module docstring).

    Item components (SKUs linked by substitution) are independent and decomposed separately, the
    largest shared with a forked helper (``parallel``; default: no helper). ``deadline`` is a
    ``time.monotonic()`` value; past it, no new round starts.
    """
    ns, nd, na = len(problem.sources), len(problem.demands), arcs.n
    tier_of = {p: i for i, p in enumerate(PRIORITIES)}
    tier = np.array([tier_of[d.priority] for d in problem.demands], dtype=np.int8)
    weight = np.array([d.equity_weight for d in problem.demands], dtype=np.float64)
    c = weight * arcs.demand_qty.astype(np.float64)
    s_comp, d_comp = item_components(problem)
    arc_comp = d_comp[arcs.demand]
    comps = [int(k) for k in np.unique(d_comp)]
    members = [(np.flatnonzero(s_comp == k), np.flatnonzero(d_comp == k), np.flatnonzero(arc_comp == k)) for k in comps]

    def run(m: tuple[I64, I64, I64]) -> _Part:
        src, dem, arc = m
        s_local = np.full(ns, -1, dtype=np.int32)
        s_local[src] = np.arange(src.size, dtype=np.int32)
        d_local = np.full(nd, -1, dtype=np.int32)
        d_local[dem] = np.arange(dem.size, dtype=np.int32)
        net = _Net(
            s_local[arcs.source[arc]],
            d_local[arcs.demand[arc]],
            arcs.source_qty[src],
            arcs.demand_qty[dem],
            tier[dem],
            c[dem],
        )
        return _decompose(net, deadline)

    par = parallel or ParallelOptions(workers=1)
    parts = fork_map(run, members, [m[2].size for m in members], workers=par.workers, min_weight=par.min_arcs)
    x = np.zeros(nd, dtype=np.int64)
    block_of_demand = np.zeros(nd, dtype=np.int32)
    block_of_source = np.full(ns, -1, dtype=np.int32)  # sources of SKUs nobody asks for: no block
    witness = np.zeros(na, dtype=np.int64)
    offset = 0
    for (src, dem, arc), part in zip(members, parts, strict=True):
        x[dem] = part.x
        block_of_demand[dem] = offset + part.d_block
        block_of_source[src] = offset + part.s_block
        witness[arc] = part.witness
        offset += int(max(part.d_block.max(initial=-1), part.s_block.max(initial=-1))) + 1
    return FairResult(
        quantity=x,
        block_of_demand=block_of_demand,
        block_of_source=block_of_source,
        exact=all(p.exact for p in parts),
        rounds=max((p.rounds for p in parts), default=0),
        max_flows=sum(p.max_flows for p in parts),
        witness=witness,
    )


def _decompose(net: _Net, deadline: float | None) -> _Part:
    """The decomposition of the module docstring on one network: one max-flow per round."""
    ns, nd, na = net.supply.size, net.q.size, net.arc_src.size
    tier, c, supply = net.tier, net.c, net.supply
    s_sub = np.zeros(ns, dtype=np.int32)
    d_sub = np.zeros(nd, dtype=np.int32)
    n_subs = 1
    f_known = np.full(n_subs, -1, dtype=np.int64)
    done = np.zeros(n_subs, dtype=np.bool_)
    lo = np.zeros(nd, dtype=np.int64)
    hi = net.q.copy()
    x = np.zeros(nd, dtype=np.int64)
    witness = np.zeros(na, dtype=np.int64)
    if na == 0:  # nothing can move: everyone stays at 0
        return _Part(x, d_sub, s_sub, witness, exact=True, rounds=0, max_flows=0)
    if deadline is not None and time.monotonic() > deadline:  # not even worth building the graph
        return _Part(x, d_sub, s_sub, witness, exact=False, rounds=0, max_flows=0)
    inf = int(supply.sum()) + 1
    graph = max_flow.SimpleMaxFlow()
    src_nodes = 2 + np.arange(ns, dtype=np.int32)
    dem_nodes = 2 + ns + np.arange(nd, dtype=np.int32)
    arc_ids = graph.add_arcs_with_capacity(
        np.concatenate([np.zeros(ns, np.int32), src_nodes[net.arc_src], dem_nodes]),
        np.concatenate([src_nodes, dem_nodes[net.arc_dem], np.ones(nd, np.int32)]),
        np.zeros(ns + na + nd, dtype=np.int64),
    )
    sink_ids = arc_ids[ns + na :]
    mid_ids = arc_ids[ns : ns + na]
    buf = np.zeros(ns + na + nd, dtype=np.int64)  # capacities, reused every round
    rounds = max_flows = 0
    exact = True
    while not done.all():
        if deadline is not None and time.monotonic() > deadline:
            exact = False
            break
        act_d = ~done[d_sub]
        caps = np.where(act_d & (f_known[d_sub] < 0), hi, 0)
        known = np.flatnonzero(~done & (f_known >= 0))
        if known.size:
            m = f_known[known] - np.bincount(d_sub, weights=lo, minlength=n_subs)[known].astype(np.int64)
            settled = known[m == 0]  # the start quantities are already maximal
            if settled.size:
                in_settled = np.isin(d_sub, settled)
                x[in_settled] = lo[in_settled]
                done[settled] = True
                act_d &= ~in_settled
            known, m = known[m > 0], m[m > 0]
        if known.size:
            rows = np.flatnonzero(act_d & np.isin(d_sub, known))
            local = np.searchsorted(known, d_sub[rows]).astype(np.int32)
            caps[rows] = select_caps(local, known.size, m, tier[rows], c[rows], lo[rows], hi[rows])
        if done.all():
            break
        # Arcs between different subproblems (or into finished ones) are closed.
        live_arc = s_sub[net.arc_src] == d_sub[net.arc_dem]
        live_arc &= act_d[net.arc_dem]
        np.copyto(buf[:ns], np.where(done[s_sub], 0, supply))
        np.multiply(live_arc, inf, out=buf[ns : ns + na])
        buf[ns + na :] = caps
        del live_arc
        graph.set_arcs_capacity(arc_ids, buf)
        status = graph.solve(0, 1)
        if status != graph.OPTIMAL:
            raise RuntimeError(f"max-flow failed with status {status}")
        rounds += 1
        max_flows += int((~done).sum())
        inflow = np.asarray(graph.flows(sink_ids), dtype=np.int64)
        # Keep this round's flow on the arcs of the subproblems just solved: a block's last one realizes
        # its final quantities (met caps, or the saturated source side of a split), for the router.
        solved = act_d[net.arc_dem]
        witness[solved] = np.asarray(graph.flows(mid_ids), dtype=np.int64)[solved]
        want = np.bincount(d_sub, weights=caps, minlength=n_subs)
        got = np.bincount(d_sub, weights=inflow, minlength=n_subs)
        met = ~done & (got == want)
        in_met = met[d_sub]
        x[in_met] = caps[in_met]
        done |= met
        split = np.flatnonzero(~done)
        if split.size == 0:
            break
        reach = np.zeros(2 + ns + nd, dtype=np.bool_)
        reach[np.asarray(graph.get_source_side_min_cut(), dtype=np.int64)] = True
        # New ids: the sink side A of subproblem split[k] becomes n_subs + 2k, the rest B n_subs + 2k + 1.
        new_a = np.full(n_subs, -1, dtype=np.int64)
        new_a[split] = n_subs + 2 * np.arange(split.size)
        d_moving = new_a[d_sub] >= 0
        s_moving = new_a[s_sub] >= 0
        d_new = new_a[d_sub] + reach[dem_nodes]
        s_new = new_a[s_sub] + reach[src_nodes]
        n_new = n_subs + 2 * split.size
        flow_new = np.bincount(np.where(d_moving, d_new, 0), weights=np.where(d_moving, inflow, 0), minlength=n_new)
        old_f = f_known[split]
        f_known = np.concatenate([f_known, np.full(2 * split.size, -1, dtype=np.int64)])
        done = np.concatenate([done, np.zeros(2 * split.size, dtype=np.bool_)])
        a_ids, b_ids = new_a[split], new_a[split] + 1
        f_known[a_ids] = flow_new[a_ids].astype(np.int64)
        was_unknown = old_f < 0
        # F unknown: the source side is at its caps T in every maximal vector → finished.
        done[b_ids[was_unknown]] = True
        f_known[b_ids[~was_unknown]] = old_f[~was_unknown] - f_known[a_ids[~was_unknown]]
        side_b = reach[dem_nodes]
        unknown_d = d_moving & (f_known[d_sub] < 0)  # old ids: their F entries are untouched above
        known_d = d_moving & ~unknown_d
        x = np.where(unknown_d & side_b, caps, x)
        hi = np.where(known_d & ~side_b, caps, hi)  # A keeps only the units with key ≤ θ
        lo = np.where(known_d & side_b, caps, lo)  # B starts from t
        d_sub = np.where(d_moving, d_new, d_sub).astype(np.int32)
        s_sub = np.where(s_moving, s_new, s_sub).astype(np.int32)
        n_subs = n_new
    if not exact:
        x = np.bincount(net.arc_dem, weights=witness, minlength=nd).astype(np.int64)
    return _Part(x, d_sub, s_sub, witness, exact=exact, rounds=rounds, max_flows=max_flows)
