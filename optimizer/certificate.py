"""SPEC §3.3's whole-unit certificate, searched independently of the solver (used by ``optimizer.check``).

For a demand r with x_r < q_r: is there a feasible plan where r gets x_r + 1, every *protected*
demand s — a higher tier, or the same tier with x_s/(w_s q_s) ≤ (x_r+1)/(w_r q_r) — keeps ≥ x_s, and
the rest may get anything? Lower bounds sit only on demand→sink arcs, and any flow meeting them can
be thinned (cut back along its paths) to meet them exactly, so the question is the max-flow

    S → source i (cap: stock)  →  demand j (feasible arcs, ∞)  →  T (cap L_j)
    L_j = x_j if j is protected, x_r + 1 for r, 0 otherwise — unprotected demands drop out;

the answer is "yes" iff its max flow is ΣL. Two ways to decide it:

* ``residual`` (default, fast): the plan's flow without the unprotected demands' lines is a feasible
  flow of value ΣL − 1, so by the augmenting-path theorem the max flow is ΣL iff the residual network
  has a path S → … → r → T (r's sink arc is the only one with room). Such a path starts at a source
  with stock to spare and alternates "source i → demand j over a feasible arc" and "demand j → source
  i' when f_{i'j} > 0" (j takes the unit from i instead, freeing one at i'). One breadth-first search
  backwards from r, a numpy frontier at a time, finds it; it only touches r's part of the network.
* ``maxflow``: solves the max-flow above from scratch with OR-Tools ``SimpleMaxFlow`` (the graph is
  built once; only the sink capacities change per r). Slower; the tests use it to cross-check.

Before either, a stranded-stock pass checks every unfilled demand at once: if a source it can reach
has stock left after the whole plan, r can take it whatever is protected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from ortools.graph.python import max_flow

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

LEVEL_RTOL = 1e-12  # levels this close count as ties, and ties are protected (in the plan's favour)
N_TIERS = 3
BITS_LIMIT = 256 << 20  # bytes for the per-demand source bitsets; beyond, gather arc lists instead
Method = Literal["residual", "maxflow"]


@dataclass(frozen=True)
class Network:
    """What the certificate needs; arcs sorted by demand with CSR offsets ``dem_ptr``."""

    cap: I64  # per source
    q: I64  # per demand
    w: F64
    tier: I64  # 0 = critical
    arc_src: I64
    arc_dem: I64
    dem_ptr: I64


@dataclass
class Outcome:
    candidates: int = 0  # reachable demands below full fill
    checked: int = 0  # of those, how many were searched
    complete: bool = False
    stranded_checked: int = 0
    stranded: list[tuple[int, int, int]] = field(default_factory=list)  # demand, source, spare units
    improvable: list[tuple[int, int]] = field(default_factory=list)  # demand, source with spare (−1: max-flow)


def gather(ptr: I64, values: I64, rows: I64) -> I64:
    """Concatenation of values[ptr[r]:ptr[r+1]] for r in rows, vectorized."""
    starts, lens = ptr[rows], ptr[rows + 1] - ptr[rows]
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total, dtype=np.int64)
    return np.asarray(values[offsets], dtype=np.int64)


def certify(
    net: Network,
    x: I64,
    f_src: I64,
    f_dem: I64,
    f_qty: I64,
    *,
    sample_limit: int,
    sample_size: int,
    method: Method = "residual",
) -> Outcome:
    """Search for violations; ``f_*`` is the plan's (feasible) flow aggregated per (source, demand)."""
    out = Outcome()
    below = x < net.q
    reachable = np.diff(net.dem_ptr) > 0
    cand = np.flatnonzero(below & reachable)
    out.candidates = int(cand.size)

    spare_all = net.cap - np.bincount(f_src, weights=f_qty, minlength=net.cap.size).astype(np.int64)
    out.stranded_checked = int(below.sum())
    hit = np.flatnonzero((spare_all[net.arc_src] > 0) & below[net.arc_dem])
    flagged = np.zeros(net.q.size, dtype=np.bool_)
    for a in hit:
        j = int(net.arc_dem[a])
        if not flagged[j]:
            flagged[j] = True
            out.stranded.append((j, int(net.arc_src[a]), int(spare_all[net.arc_src[a]])))

    chosen = _choose(net, x, cand, sample_limit, sample_size)
    out.complete = chosen.size == cand.size
    chosen = chosen[~flagged[chosen]]  # already a proven violation
    out.checked = int(chosen.size) + int(flagged[cand].sum())
    if chosen.size == 0:
        return out

    level = x / (net.w * net.q)
    search = _Search(net, level, f_src, f_dem, f_qty)
    solver = _MaxFlow(net) if method == "maxflow" else None
    for r in chosen.tolist():
        # s is protected ⇔ higher tier, or same tier and x_s / (w_s q_s) ≤ θ = (x_r + 1) / (w_r q_r).
        theta = (x[r] + 1) / (net.w[r] * net.q[r]) * (1.0 + LEVEL_RTOL)
        if solver is not None:
            protected = (net.tier < net.tier[r]) | ((net.tier == net.tier[r]) & (level <= theta))
            if solver.improvable(r, x, protected):
                out.improvable.append((r, -1))
            continue
        witness = search.find(r, theta)
        if witness is not None:
            out.improvable.append((r, witness))
    return out


def _choose(net: Network, x: I64, cand: I64, sample_limit: int, sample_size: int) -> I64:
    """All candidates, or per tier the ``sample_size`` lowest levels plus ``sample_size`` seeded others."""
    if net.q.size <= sample_limit:
        return cand
    level = x[cand] / (net.w[cand] * net.q[cand])
    picked: list[I64] = []
    for t in np.unique(net.tier[cand]):
        in_t = cand[net.tier[cand] == t]
        lv = level[net.tier[cand] == t]
        picked.append(in_t[np.lexsort((in_t, lv))[:sample_size]])
    low = np.concatenate(picked)
    rest = np.setdiff1d(cand, low)
    rng = np.random.default_rng(0)
    extra = rng.choice(rest, size=min(sample_size, rest.size), replace=False) if rest.size else rest
    return np.asarray(np.concatenate([low, np.sort(extra)]), dtype=np.int64)


class _Search:
    """Backward breadth-first search for an augmenting path to r (see the module docstring).

    Protection is evaluated lazily, only for the demands a search meets, and the stock that protected
    demands hold is a prefix sum over the tier's flows sorted by level: a search costs what it visits,
    not the size of the problem.
    """

    def __init__(self, net: Network, level: F64, f_src: I64, f_dem: I64, f_qty: I64) -> None:
        self.net, self.level = net, level
        ns, nd = net.cap.size, net.q.size
        order = np.argsort(f_src, kind="stable")
        self.src_ptr = np.searchsorted(f_src[order], np.arange(ns + 1)).astype(np.int64)
        self.flow_dem = f_dem[order]  # per source (CSR): the demands it serves in the plan
        f_tier = net.tier[f_dem]
        self.held_above = [
            np.bincount(f_src[f_tier < t], weights=f_qty[f_tier < t], minlength=ns) for t in range(N_TIERS)
        ]
        self.tier_flows = []  # per tier: (levels ascending, source, quantity) of its flows
        for t in range(N_TIERS):
            idx = np.flatnonzero(f_tier == t)
            idx = idx[np.argsort(level[f_dem[idx]], kind="stable")]
            self.tier_flows.append((level[f_dem[idx]], f_src[idx], f_qty[idx]))
        self.marker = np.zeros(nd, dtype=np.int64)  # scratch for de-duplication, never read before written
        # Feasible sources per demand as packed bit rows: OR-ing rows is far cheaper than gathering
        # ~100 arc indices per demand, and searches revisit the same demands hundreds of times.
        width = (ns + 7) // 8
        self.bits: npt.NDArray[np.uint8] | None = None
        if nd * width <= BITS_LIMIT:
            self.bits = np.zeros((nd, width), dtype=np.uint8)
            step = max(1, (1 << 24) // max(1, ns))
            for lo in range(0, nd, step):
                hi = min(nd, lo + step)
                a, b = int(net.dem_ptr[lo]), int(net.dem_ptr[hi])
                block = np.zeros((hi - lo, ns), dtype=np.bool_)
                block[net.arc_dem[a:b] - lo, net.arc_src[a:b]] = True
                self.bits[lo:hi] = np.packbits(block, axis=1)

    def _sources_of(self, demands: I64) -> B:
        ns = self.net.cap.size
        if self.bits is not None:
            row = np.bitwise_or.reduce(self.bits[demands], axis=0)
            return np.unpackbits(row, count=ns).astype(np.bool_)
        mask = np.zeros(ns, dtype=np.bool_)
        mask[gather(self.net.dem_ptr, self.net.arc_src, demands)] = True
        return mask

    def find(self, r: int, theta: float) -> int | None:
        """A source with spare stock from which an augmenting path leads to r, or None."""
        net, t = self.net, int(self.net.tier[r])
        lv, fs, fq = self.tier_flows[t]
        k = int(np.searchsorted(lv, theta, side="right"))  # same-tier flows of protected demands
        held = self.held_above[t] + np.bincount(fs[:k], weights=fq[:k], minlength=net.cap.size)
        spare = net.cap - held.astype(np.int64)  # r itself is protected: its level is below θ
        seen_d = np.zeros(net.q.size, dtype=np.bool_)
        seen_s = np.zeros(net.cap.size, dtype=np.bool_)
        seen_d[r] = True
        frontier = np.array([r], dtype=np.int64)
        while frontier.size:
            s = np.flatnonzero(self._sources_of(frontier) & ~seen_s)
            if s.size == 0:
                return None
            seen_s[s] = True
            free = s[spare[s] > 0]
            if free.size:
                return int(free[0])
            d = gather(self.src_ptr, self.flow_dem, s)  # demands these sources serve: they can give back
            d_tier = net.tier[d]
            d = d[~seen_d[d] & ((d_tier < t) | ((d_tier == t) & (self.level[d] <= theta)))]
            pos = np.arange(d.size)
            self.marker[d] = pos
            d = d[self.marker[d] == pos]  # drop duplicates (the last occurrence stays)
            seen_d[d] = True
            frontier = d
        return None


class _MaxFlow:
    """The from-scratch formulation: one SimpleMaxFlow graph, sink capacities reset per demand."""

    def __init__(self, net: Network) -> None:
        ns, nd = net.cap.size, net.q.size
        src_node = 2 + np.arange(ns, dtype=np.int64)
        dem_node = 2 + ns + np.arange(nd, dtype=np.int64)
        big = int(net.cap.sum()) + 1
        self.graph = max_flow.SimpleMaxFlow()
        tails = np.concatenate([np.zeros(ns, np.int64), src_node[net.arc_src], dem_node])
        heads = np.concatenate([src_node, dem_node[net.arc_dem], np.ones(nd, np.int64)])
        caps = np.concatenate([net.cap, np.full(net.arc_src.size, big, np.int64), np.zeros(nd, np.int64)])
        ids = self.graph.add_arcs_with_capacity(tails, heads, caps)
        self.sink_arcs = np.asarray(ids, dtype=np.int64)[ns + net.arc_src.size :]

    def improvable(self, r: int, x: I64, protected: B) -> bool:
        need = np.where(protected, x, 0).astype(np.int64)
        need[r] = x[r] + 1
        self.graph.set_arcs_capacity(self.sink_arcs, need)
        if self.graph.solve(0, 1) != self.graph.OPTIMAL:
            raise RuntimeError("max-flow failed")
        return int(self.graph.optimal_flow()) == int(need.sum())
