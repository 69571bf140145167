"""``solve(problem) -> Plan``: arcs → fair quantities → min-cost routing → explained plan (SPEC §3)."""

from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from optimizer.explain import build_plan
from optimizer.fairness import fair_quantities
from optimizer.model import Plan, PlanStatus, Problem, SolverStats, StageStats
from optimizer.network import build_arcs
from optimizer.parallel import ParallelOptions
from optimizer.routing import RoutingOptions, route_min_cost


@dataclass(frozen=True)
class SolveOptions:
    """Every solver knob, with its default. ``time_limit_s`` None = the problem's setting."""

    time_limit_s: float | None = None
    routing: RoutingOptions = field(default_factory=RoutingOptions)
    parallel: ParallelOptions = field(default_factory=ParallelOptions)


def solve(problem: Problem, *, time_limit_s: float | None = None, options: SolveOptions | None = None) -> Plan:
    """The optimal plan of SPEC §3.3, or the best feasible one found when the time limit runs out.

    Time limit precedence: the ``time_limit_s`` argument, then ``options.time_limit_s``, then
    ``problem.settings.time_limit_s``; None everywhere = no limit. The limit is checked between steps:
    past it, fairness stops with feasible (not yet fair) quantities, or routing keeps a feasible but not
    cheapest flow for the blocks it has not solved yet; either makes the status ``time_limit``. A solve
    overruns the limit by at most one max-flow round or one min-cost-flow solve, plus the output.
    """
    opts = options or SolveOptions()
    started = time.monotonic()
    limit = next((v for v in (time_limit_s, opts.time_limit_s, problem.settings.time_limit_s) if v is not None), None)
    deadline = None if limit is None else started + limit
    stages: list[StageStats] = []

    t = time.monotonic()
    arcs = build_arcs(problem)
    release_memory()
    stages.append(StageStats("arcs", time.monotonic() - t, {"arcs": arcs.n}))

    t = time.monotonic()
    fair = fair_quantities(problem, arcs, deadline=deadline, parallel=opts.parallel)
    n_blocks = int(np.unique(fair.block_of_demand).size)
    stages.append(
        StageStats(
            "fairness",
            time.monotonic() - t,
            {"rounds": fair.rounds, "max_flows": fair.max_flows, "blocks": n_blocks, "exact": int(fair.exact)},
        )
    )

    release_memory()  # the max-flow graph is gone
    t = time.monotonic()
    status: PlanStatus = "optimal"
    if fair.exact:
        routed = route_min_cost(
            arcs,
            fair.quantity,
            fair.block_of_demand,
            fair.block_of_source,
            fair.witness,
            opts.routing,
            deadline,
            opts.parallel,
        )
        flow = routed.flow
        if not routed.optimal:
            status = "time_limit"
        stages.append(StageStats("routing", time.monotonic() - t, {"min_cost_flows": routed.solves}))
    else:
        status = "time_limit"
        flow = fair.witness  # feasible and realizes fair.quantity; not cost-optimized
        stages.append(StageStats("routing", time.monotonic() - t, {"min_cost_flows": 0}))

    t = time.monotonic()
    draft = build_plan(problem, arcs, flow, status=status, stats=SolverStats(wall_s=0.0))
    stages.append(StageStats("explain", time.monotonic() - t))
    stats = SolverStats(wall_s=time.monotonic() - started, stages=tuple(stages))
    return Plan(status=status, allocations=draft.allocations, demands=draft.demands, kpis=draft.kpis, solver=stats)


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    The stages allocate and free hundreds of MB of mid-sized numpy temporaries, which glibc keeps in
    the process heap; trimming between stages keeps the peak resident size of big solves well lower.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
