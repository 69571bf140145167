"""crisis-supply allocation optimizer: a pure package (numpy + OR-Tools), SPEC §3.

``solve(problem) -> Plan`` computes the priority-lexicographic, weighted max-min fair, minimum-cost
plan; ``load_problem`` / ``plan_to_dict`` handle the JSON v1 formats; ``check`` verifies a plan.
"""

from optimizer.check import CheckReport, check
from optimizer.io import (
    ProblemError,
    load_plan,
    load_plan_file,
    load_problem,
    load_problem_file,
    plan_to_dict,
    problem_to_dict,
)
from optimizer.model import (
    Allocation,
    Demand,
    DemandResult,
    Item,
    Kpis,
    Plan,
    Problem,
    Settings,
    SolverStats,
    Source,
    StageStats,
    Substitute,
    TierKpis,
)
from optimizer.solve import SolveOptions, solve

__all__ = [
    "Allocation",
    "CheckReport",
    "Demand",
    "DemandResult",
    "Item",
    "Kpis",
    "Plan",
    "Problem",
    "ProblemError",
    "Settings",
    "SolveOptions",
    "SolverStats",
    "Source",
    "StageStats",
    "Substitute",
    "TierKpis",
    "check",
    "load_plan",
    "load_plan_file",
    "load_problem",
    "load_problem_file",
    "plan_to_dict",
    "problem_to_dict",
    "solve",
]
