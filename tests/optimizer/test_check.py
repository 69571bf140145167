"""``optimizer.check`` accepts the solver's plans and rejects corrupted, infeasible or unfair ones."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from optimizer import Allocation, Plan, Problem, load_problem, solve
from optimizer.baselines import greedy, proportional, proportional_targets
from optimizer.check import CheckReport, check, great_circle_km
from optimizer.explain import build_plan
from optimizer.model import SolverStats
from optimizer.network import build_arcs
from tests.optimizer.problem_strategies import problems

EXAMPLE = Path("/work/shared/examples/problem-small.json")
NOW = "2026-11-22T08:00:00Z"
ITEMS = [{"sku": "N95", "substitutes": [{"sku": "KN95", "penalty": 0.3}]}, {"sku": "KN95", "substitutes": []}]


def place(km_east: float) -> dict[str, float]:
    return {"lat": 40.0, "lon": -75.0 + km_east / (111.195 * np.cos(np.radians(40.0)))}


def make(sources: list[dict[str, Any]], demands: list[dict[str, Any]]) -> Problem:
    return load_problem({"version": 1, "now": NOW, "settings": {"speed_kmh": 50, "cost_per_unit_km": 0.01},
                         "items": ITEMS, "sources": sources, "demands": demands})


def src(ident: str, qty: int, km: float = 0.0, item: str = "N95", **extra: Any) -> dict[str, Any]:
    return {"id": ident, "item": item, "quantity": qty, **place(km), **extra}


def dem(ident: str, qty: int, km: float = 0.0, priority: str = "critical", **extra: Any) -> dict[str, Any]:
    return {"id": ident, "requester": "o", "item": "N95", "quantity": qty, "priority": priority, **place(km),
            **extra}


def plan_from_flow(problem: Problem, flow_by_pair: dict[tuple[str, str], int]) -> Plan:
    """A plan with the given units per (source id, demand id), reasons and KPIs filled by explain."""
    arcs = build_arcs(problem)
    flow = np.zeros(arcs.n, dtype=np.int64)
    for k in range(arcs.n):
        key = (problem.sources[arcs.source[k]].id, problem.demands[arcs.demand[k]].id)
        flow[k] = flow_by_pair.get(key, 0)
    assert int(flow.sum()) == sum(flow_by_pair.values()), "every pair must be a feasible arc"
    return build_plan(problem, arcs, flow, status="optimal", stats=SolverStats(wall_s=0.0))


def kinds(report: CheckReport) -> set[str]:
    return {e.split(":", 1)[0] for e in report.errors}


@pytest.fixture(scope="module")
def scarce() -> Problem:
    """Eleven equal demands of 10 sharing 60 units (the fair answer: five 6s and six 5s)."""
    return make([src("L0", 60)], [dem(f"R{k}", 10, km=k) for k in range(11)])


def test_great_circle_one_degree_of_latitude() -> None:
    assert great_circle_km(40.0, -75.0, 41.0, -75.0) == pytest.approx(6371.0 * np.pi / 180, rel=1e-12)
    assert great_circle_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(6371.0 * np.pi, rel=1e-12)


def test_solver_plans_pass(scarce: Problem) -> None:
    for problem in (scarce, load_problem(__import__("json").loads(EXAMPLE.read_text()))):
        report = check(problem, solve(problem))
        assert report.ok, report.errors
        assert report.certificate_complete and report.certificate_checked == report.certificate_candidates
        assert report.certificate_candidates > 0


@pytest.mark.parametrize("bitsets", [True, False])
def test_floor_and_top_up_fails_the_certificate(
    scarce: Problem, bitsets: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not bitsets:  # the search's fallback for huge problems: gather arc lists instead of bit rows
        monkeypatch.setattr("optimizer.certificate.BITS_LIMIT", 0)
    # Fractional optimum 60/11 each; floors give 5 each and the 5 leftovers top up R0 to 10.
    flows = {("L0", f"R{k}"): 5 for k in range(11)} | {("L0", "R0"): 10}
    report = check(scarce, plan_from_flow(scarce, flows))
    assert not report.ok
    assert kinds(report) == {"certificate"}
    assert set(report.certificate_failures) == {f"R{k}" for k in range(1, 11)}
    assert check(scarce, solve(scarce)).ok


def test_moving_one_unit_between_ties_keeps_the_certificate(scarce: Problem) -> None:
    # Which five get 6 is a tie-break: any choice is fair; so is 6/5 in any positions.
    flows = {("L0", f"R{k}"): 6 if k in (1, 3, 5, 7, 9) else 5 for k in range(11)}
    assert check(scarce, plan_from_flow(scarce, flows)).ok
    uneven = flows | {("L0", "R1"): 7, ("L0", "R0"): 4}  # 7 vs 4: a unit can move back
    report = check(scarce, plan_from_flow(scarce, uneven))
    assert report.certificate_failures == ("R0", "R10", "R2", "R4", "R6", "R8")


def test_weights_and_tiers_in_the_certificate() -> None:
    problem = make([src("L0", 30)], [dem("A", 20, equity_weight=2.0), dem("B", 20), dem("C", 10, priority="high")])
    # Weighted fair: A's fill twice B's → A 20, B 10 (levels 0.5, 0.5); C (lower tier) gets nothing.
    assert check(problem, plan_from_flow(problem, {("L0", "A"): 20, ("L0", "B"): 10})).ok
    equal = check(problem, plan_from_flow(problem, {("L0", "A"): 15, ("L0", "B"): 15}))
    assert equal.certificate_failures == ("A",)
    lower_first = check(problem, plan_from_flow(problem, {("L0", "A"): 20, ("L0", "C"): 10}))
    assert lower_first.certificate_failures == ("B",)


def test_greedy_on_a_scarce_instance_fails_but_is_feasible() -> None:
    # FCFS: the first demand empties the nearest source; the fair plan shares it.
    problem = make([src("L0", 10)], [dem("R0", 10), dem("R1", 10, km=5)])
    plan = greedy(problem)
    assert [r.allocated for r in plan.demands] == [10, 0]
    assert check(problem, plan, certificate=False).ok
    assert check(problem, plan).certificate_failures == ("R1",)


def test_stranded_stock_is_reported(scarce: Problem) -> None:
    flows = {("L0", f"R{k}"): 5 for k in range(11)}  # 5 units left at L0
    report = check(scarce, plan_from_flow(scarce, flows))
    assert kinds(report) == {"stranded"} and len(report.certificate_failures) == 11


def _replace_alloc(plan: Plan, k: int, **changes: Any) -> Plan:
    allocs = list(plan.allocations)
    allocs[k] = dataclasses.replace(allocs[k], **changes)
    return dataclasses.replace(plan, allocations=tuple(allocs))


def test_corruptions_are_rejected() -> None:
    problem = make(
        [src("L0", 8), src("L1", 8, km=400), src("K0", 5, item="KN95", km=1)],
        [dem("R0", 10, needed_by="2026-11-22T10:00:00Z"), dem("R1", 10, km=2, priority="high")],
    )
    plan = solve(problem)
    assert check(problem, plan).ok
    first = next(k for k, a in enumerate(plan.allocations) if a.source == "L0")
    a = plan.allocations[first]
    cases: dict[str, Plan] = {
        "source_over": dataclasses.replace(plan, allocations=plan.allocations + (dataclasses.replace(a, demand="R1"),)),
        "late": _replace_alloc(plan, first, source="L1"),  # 400 km takes 8 h, R0 is due in 2 h
        "unknown_id": _replace_alloc(plan, first, source="nowhere"),
        "quantity": _replace_alloc(plan, first, quantity=-1),
        "item": _replace_alloc(plan, first, item="KN95"),
        "distance_km": _replace_alloc(plan, first, distance_km=a.distance_km + 1.0),
        "cost": _replace_alloc(plan, first, cost=a.cost * 1.01 + 0.01),
    }
    for kind, bad in cases.items():
        report = check(problem, bad)
        assert not report.ok and kind in kinds(report), (kind, report.errors)
    assert "certificate" in kinds(check(problem, cases["late"]))  # "not examined: infeasible"


def test_incompatible_item_is_rejected() -> None:
    problem = load_problem({"version": 1, "now": NOW, "items": [{"sku": "A"}, {"sku": "B"}],
                            "sources": [src("S", 5, item="B")],
                            "demands": [dem("R", 5) | {"item": "A"}]})
    bad = Plan(status="optimal", allocations=(Allocation("S", "R", "B", 5, 0.0, 0.0),),
               demands=solve(problem).demands, kpis=solve(problem).kpis, solver=SolverStats(0.0))
    assert "incompatible" in kinds(check(problem, bad))


def test_wrong_reported_numbers_are_rejected(scarce: Problem) -> None:
    plan = solve(scarce)
    rows = list(plan.demands)
    tests = {
        "fill_rate": dataclasses.replace(rows[0], fill_rate=rows[0].fill_rate + 0.01),
        "demand_numbers": dataclasses.replace(rows[0], allocated=rows[0].allocated + 1),
        "reason": dataclasses.replace(rows[0], reason=None),
    }
    for kind, row in tests.items():
        bad = dataclasses.replace(plan, demands=(row, *rows[1:]))
        assert kind in kinds(check(scarce, bad)), kind
    missing = dataclasses.replace(plan, demands=tuple(rows[1:]))
    assert "demand_rows" in kinds(check(scarce, missing))
    crit = plan.kpis.by_priority["critical"]
    for field in ("min_level", "jain_index", "allocated", "demands_unserved"):
        tier = dataclasses.replace(crit, **{field: getattr(crit, field) + 1})
        kpis = dataclasses.replace(plan.kpis, by_priority=plan.kpis.by_priority | {"critical": tier})
        assert "kpi" in kinds(check(scarce, dataclasses.replace(plan, kpis=kpis))), field
    kpis = dataclasses.replace(plan.kpis, unit_km=plan.kpis.unit_km * 1.001 + 1)
    assert "kpi" in kinds(check(scarce, dataclasses.replace(plan, kpis=kpis)))


def test_reasons_follow_the_spec_order() -> None:
    problem = make(
        [src("L0", 5), src("K0", 5, item="KN95", km=600, expires_at="2026-11-22T10:00:00Z")],
        [dem("crit", 5), dem("late", 3, km=800, needed_by="2026-11-22T09:00:00Z"),
         dem("high", 4, km=1, priority="high"), dem("kn", 2, km=600, priority="routine") | {"item": "KN95"}],
    )
    plan = solve(problem)
    assert check(problem, plan).ok
    reasons = {r.id: r.reason for r in plan.demands}
    assert reasons == {"crit": None, "late": "unreachable_by_deadline", "high": "lower_priority", "kn": None}
    lied = dataclasses.replace(plan, demands=tuple(dataclasses.replace(r, reason="shortage") if r.id == "high" else r
                                                   for r in plan.demands))
    assert "reason" in kinds(check(problem, lied))


def test_sampling_beyond_the_limit(scarce: Problem) -> None:
    flows = {("L0", f"R{k}"): 5 for k in range(11)} | {("L0", "R0"): 10}
    report = check(scarce, plan_from_flow(scarce, flows), sample_limit=5, sample_size=2)
    assert not report.certificate_complete
    assert report.certificate_checked == 2 + 2  # the 2 lowest levels of the tier + 2 seeded others
    assert not report.ok  # the lowest levels are exactly where floor-and-top-up is unfair


def test_proportional_targets_largest_remainder() -> None:
    got = proportional_targets(10, np.array([1, 1, 1], dtype=np.int64))
    assert got.tolist() == [1, 1, 1]
    got = proportional_targets(10, np.array([5, 5, 5], dtype=np.int64))
    assert got.tolist() == [4, 3, 3] and got.sum() == 10
    assert proportional_targets(7, np.array([10**9, 10**9], dtype=np.int64)).tolist() == [4, 3]


def _random_flow(problem: Problem, seed: int) -> Plan:
    """A random feasible (usually unfair) plan: random demand order, random takes along random arcs."""
    rng = random.Random(seed)
    arcs = build_arcs(problem)
    left = arcs.source_qty.copy()
    need = arcs.demand_qty.copy()
    flow = np.zeros(arcs.n, dtype=np.int64)
    for k in rng.sample(range(arcs.n), arcs.n):
        s, d = arcs.source[k], arcs.demand[k]
        take = rng.randint(0, int(min(left[s], need[d])))
        flow[k], left[s], need[d] = take, left[s] - take, need[d] - take
    return build_plan(problem, arcs, flow, status="optimal", stats=SolverStats(wall_s=0.0))


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_residual_search_and_max_flow_agree(problem: Problem) -> None:
    # Two formulations of the same certificate must flag exactly the same demands, on fair and unfair plans.
    for plan in (solve(problem), greedy(problem), proportional(problem), _random_flow(problem, len(problem.demands))):
        fast = check(problem, plan, method="residual")
        slow = check(problem, plan, method="maxflow")
        assert fast.certificate_failures == slow.certificate_failures
        assert check(problem, plan, certificate=False).ok, plan
