"""An independent LP oracle for the optimizer's property tests (OR-Tools GLOP, in-process).

Shares no code with the optimizer: feasible arcs come from a plain-Python loop with ``math``, and the
fairness stage is the textbook progressive-filling LP (not the solver's max-flow decomposition):

* for each tier in order, with the higher tiers held at ≥ the plan's quantities (lower tiers free):
  maximise t subject to y_j ≥ t·w_j·q_j for every still-rising demand j of the tier; then, at t*,
  every rising demand that cannot exceed t*·w_j·q_j on its own (one LP each) is *blocked* and frozen
  at that amount; repeat until all are frozen. The frozen amounts are the fractional weighted max-min
  fair (lexicographically optimal) quantities of the tier;
* the min-cost LP routes fixed per-demand quantities at minimum transport + penalty cost.

GLOP instead of scipy's HiGHS because HiGHS must not share a process with OR-Tools (symbol clash).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from optimizer import Problem

PRIORITIES = ("critical", "high", "routine")
EPS = 1e-7


@dataclass(frozen=True)
class Arc:
    source: int
    demand: int
    unit_cost: float


def arcs_of(problem: Problem) -> list[Arc]:
    """Feasible arcs by SPEC §3.2, computed the slow, obvious way."""
    items = {it.sku: it for it in problem.items}
    out = []
    speed, cpk = problem.settings.speed_kmh, problem.settings.cost_per_unit_km
    for j, d in enumerate(problem.demands):
        pen = {d.item: 0.0, **{s.sku: s.penalty for s in items[d.item].substitutes}}
        for i, s in enumerate(problem.sources):
            if s.item not in pen or s.quantity <= 0:
                continue
            p1, p2 = math.radians(s.lat), math.radians(d.lat)
            h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(
                math.radians(d.lon - s.lon) / 2) ** 2
            km = 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))
            start = max(problem.now, s.available_at or problem.now)
            arrival_h = (start - problem.now).total_seconds() / 3600 + km / speed
            limits = [(t - problem.now).total_seconds() / 3600 for t in (d.needed_by, s.expires_at) if t]
            if all(arrival_h <= lim for lim in limits):
                out.append(Arc(i, j, km * cpk + pen[s.item]))
    return out


class _Lp:
    """Flow variables on the arcs with source capacities and demand caps (low-level GLOP API)."""

    def __init__(self, problem: Problem, arcs: Sequence[Arc]) -> None:
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        inf = self.solver.infinity()
        self.inf = inf
        self.f = [self.solver.NumVar(0.0, inf, "") for _ in arcs]
        self.into: list[list[pywraplp.Variable]] = [[] for _ in problem.demands]
        out: list[list[pywraplp.Variable]] = [[] for _ in problem.sources]
        for var, a in zip(self.f, arcs, strict=True):
            self.into[a.demand].append(var)
            out[a.source].append(var)
        for i, src in enumerate(problem.sources):
            self.row(out[i], -inf, src.quantity)
        for j, dem in enumerate(problem.demands):
            self.row(self.into[j], -inf, dem.quantity)

    def row(self, variables: Sequence[pywraplp.Variable], lo: float, hi: float,
            extra: tuple[pywraplp.Variable, float] | None = None) -> None:
        """lo ≤ Σ variables (+ coef · extra) ≤ hi."""
        ct = self.solver.Constraint(lo, hi)
        for v in variables:
            ct.SetCoefficient(v, 1.0)
        if extra is not None:
            ct.SetCoefficient(*extra)

    def objective(self, coefs: Sequence[tuple[pywraplp.Variable, float]], maximize: bool) -> None:
        obj = self.solver.Objective()
        for v, k in coefs:
            obj.SetCoefficient(v, k)
        if maximize:
            obj.SetMaximization()
        else:
            obj.SetMinimization()

    def run(self) -> float:
        if self.solver.Solve() != pywraplp.Solver.OPTIMAL:
            raise AssertionError("LP oracle: not optimal")
        return float(self.solver.Objective().Value())


def water_fill(problem: Problem, arcs: Sequence[Arc], tier: str, floor: dict[int, float]) -> dict[int, float]:
    """Fractional weighted max-min fair quantities of ``tier``'s demands; ``floor`` = higher tiers' ≥."""
    members = [j for j, d in enumerate(problem.demands) if d.priority == tier]
    c = {j: problem.demands[j].equity_weight * problem.demands[j].quantity for j in members}
    frozen: dict[int, float] = {}
    rising = list(members)

    def base(t_fixed: float | None) -> tuple[_Lp, pywraplp.Variable]:
        lp = _Lp(problem, arcs)
        t = lp.solver.NumVar(0.0 if t_fixed is None else t_fixed - EPS, lp.inf, "t")
        for j, v in (floor | frozen).items():
            lp.row(lp.into[j], v - EPS, lp.inf)
        for j in rising:
            lp.row(lp.into[j], 0.0, lp.inf, (t, -c[j]))  # y_j − c_j·t ≥ 0
        return lp, t

    while rising:
        lp, t = base(None)
        lp.objective([(t, 1.0)], maximize=True)
        t_star = lp.run()
        blocked = []
        for j in rising:
            lp, _ = base(t_star)
            lp.objective([(v, 1.0) for v in lp.into[j]], maximize=True)
            if lp.run() <= t_star * c[j] + 1e-6 * max(1.0, c[j]):
                blocked.append(j)
        if not blocked:  # impossible in exact arithmetic; freeze all rather than loop forever
            blocked = list(rising)
        for j in blocked:
            frozen[j] = min(t_star * c[j], float(problem.demands[j].quantity))
            rising.remove(j)
    return frozen


def min_cost(problem: Problem, arcs: Sequence[Arc], quantity: Sequence[int]) -> float:
    """Minimum transport + substitution cost of delivering exactly ``quantity`` per demand."""
    lp = _Lp(problem, arcs)
    for j, x in enumerate(quantity):
        lp.row(lp.into[j], x, lp.inf)
    lp.objective([(var, a.unit_cost) for var, a in zip(lp.f, arcs, strict=True)], maximize=False)
    return lp.run()
