"""The greedy baseline a plan is compared with (SPEC §3.5), computed beside the solve.

The first-come-first-served greedy plan's KPIs are stored with the plan (`baseline_kpis`), in the same
transaction, so a plan is never visible without its comparison. Computing it after the solve put
~0.7–1.3 s on the trigger-to-plan-ready path of a state-size run; it needs no result of the solve,
so for big snapshots a forked helper process computes it while this process solves (the optimizer's
`parallel.fork_map`: OR-Tools holds the GIL, so a thread would not overlap). The solve's own helper
still forks from this process, so on the 2-core target three processes share the cores; the helper
runs at a lower CPU priority (nice) and takes mostly what the solve leaves idle. Measured on the state
scenario (medians of 4): solve alone 2.36 s; solve with the helper beside it 2.72 s, against
2.36 + 0.9 s one after the other. Small snapshots, one-core machines, or a platform without `fork`
compute it after the solve, as before. A baseline that fails leaves the plan without a comparison
(`None`); it never fails the run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from optimizer.model import Problem
from optimizer.parallel import default_workers, fork_map

log = logging.getLogger("app.worker")

# Below this many demands the greedy baseline takes milliseconds: a fork would cost more than it saves.
BESIDE_MIN_DEMANDS = 2_000

# The helper yields the cores to the solve, which decides when the plan is ready: measured on 2 cores,
# the helper slowed the solve by 0.57 s at equal priority and by 0.36 s niced.
HELPER_NICE = 10

SolveFn = Callable[[Problem, float], dict[str, Any]]


def _lower_priority() -> None:
    try:
        os.nice(HELPER_NICE)
    except (AttributeError, OSError):  # no nice() on this platform, or not permitted: run as is
        pass


def greedy_kpis(problem: Problem) -> dict[str, Any]:
    """KPIs of the first-come-first-served greedy baseline on the same snapshot (SPEC §3.5)."""
    from optimizer.baselines import greedy
    from optimizer.io import plan_to_dict

    return plan_to_dict(greedy(problem))["kpis"]


def timed_baseline(problem: Problem, run_id: int) -> tuple[dict[str, Any] | None, float]:
    """(greedy KPIs or None when it failed, wall seconds)."""
    started = time.monotonic()
    try:
        kpis: dict[str, Any] | None = greedy_kpis(problem)
    except Exception:  # noqa: BLE001  (the comparison is informative; the plan stands without it)
        log.warning("greedy baseline failed for run %s", run_id, exc_info=True)
        kpis = None
    return kpis, time.monotonic() - started


def solve_with_baseline(
    problem: Problem,
    time_limit_s: float,
    *,
    solve: SolveFn,
    run_id: int,
    after_solve: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, float]:
    """(Plan JSON, greedy KPIs or None, the baseline's wall seconds): the solve runs in this process
    (its errors propagate, and the helper is stopped); the baseline beside it when the snapshot is big
    enough, else after it (`after_solve` is then called between the two, for progress)."""
    if len(problem.demands) < BESIDE_MIN_DEMANDS or default_workers() < 2:
        plan = solve(problem, time_limit_s)
        if after_solve is not None:
            after_solve()
        return (plan, *timed_baseline(problem, run_id))

    # Runs in this process for "solve" and in the forked helper for "baseline" (fork_map gives the
    # helper the lighter item). If the helper cannot start or dies, fork_map computes it here instead.
    parent = os.getpid()

    def task(name: str) -> Any:
        if name == "solve":
            return solve(problem, time_limit_s)
        if os.getpid() != parent:
            _lower_priority()
        return timed_baseline(problem, run_id)

    plan, (kpis, wall_s) = fork_map(task, ["solve", "baseline"], [2, 1], workers=2, min_weight=0)
    return plan, kpis, wall_s
