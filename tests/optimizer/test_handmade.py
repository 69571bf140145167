"""Hand-made allocation cases with known answers (issue 3 §5, SPEC §3.2–§3.4)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ortools.graph.python import max_flow

from optimizer import Plan, Problem, load_problem, plan_to_dict, solve
from optimizer.io import load_plan
from optimizer.network import build_arcs

NOW = "2026-11-22T08:00:00Z"
BASE = (40.0, -75.0)
EXAMPLE = Path("/work/shared/examples/problem-small.json")
ITEMS = [
    {"sku": "N95", "substitutes": [{"sku": "KN95", "penalty": 0.3}]},
    {"sku": "KN95", "substitutes": []},
    {"sku": "FOOD", "substitutes": []},
]


def east(km: float) -> tuple[float, float]:
    """A point ``km`` east of BASE along the parallel (close enough to a great circle at this scale)."""
    return BASE[0], BASE[1] + km / (111.195 * np.cos(np.radians(BASE[0])))


def src(ident: str, qty: int, km: float = 0.0, item: str = "N95", **extra: Any) -> dict[str, Any]:
    lat, lon = east(km)
    return {"id": ident, "item": item, "quantity": qty, "lat": lat, "lon": lon, **extra}


def dem(
    ident: str, qty: int, km: float = 0.0, item: str = "N95", priority: str = "critical", **extra: Any
) -> dict[str, Any]:
    lat, lon = east(km)
    return {
        "id": ident,
        "requester": "org",
        "item": item,
        "quantity": qty,
        "priority": priority,
        "lat": lat,
        "lon": lon,
        **extra,
    }


def problem(sources: list[dict[str, Any]], demands: list[dict[str, Any]], **settings: Any) -> Problem:
    return load_problem(
        {
            "version": 1,
            "now": NOW,
            "settings": {"speed_kmh": 50, "cost_per_unit_km": 0.01, **settings},
            "items": ITEMS,
            "sources": sources,
            "demands": demands,
        }
    )


def allocated(plan: Plan) -> dict[str, int]:
    return {d.id: d.allocated for d in plan.demands}


def reasons(plan: Plan) -> dict[str, str | None]:
    return {d.id: d.reason for d in plan.demands}


def assert_feasible(p: Problem, plan: Plan) -> None:
    supply = {s.id: s.quantity for s in p.sources}
    asked = {d.id: d.quantity for d in p.demands}
    used: dict[str, int] = {}
    got: dict[str, int] = {}
    for a in plan.allocations:
        assert a.quantity > 0
        used[a.source] = used.get(a.source, 0) + a.quantity
        got[a.demand] = got.get(a.demand, 0) + a.quantity
    assert all(used[s] <= supply[s] for s in used)
    assert all(got.get(d, 0) <= asked[d] for d in asked)
    assert {d.id: d.allocated for d in plan.demands} == {d: got.get(d, 0) for d in asked}


def test_two_hospitals_share_scarce_n95_equally() -> None:
    p = problem([src("lot", 100, km=10)], [dem("h1", 100), dem("h2", 100, km=20)])
    plan = solve(p)
    assert allocated(plan) == {"h1": 50, "h2": 50}
    assert [d.fill_rate for d in plan.demands] == [0.5, 0.5]
    assert reasons(plan) == {"h1": "shortage", "h2": "shortage"}
    assert plan.status == "optimal"


def test_eleven_equal_demands_share_sixty_units_by_input_order() -> None:
    # Ties in level are broken by input order: the first five demands get the sixth units.
    p = problem([src("lot", 60)], [dem(f"d{i}", 10, km=i) for i in range(11)])
    assert list(allocated(solve(p)).values()) == [6] * 5 + [5] * 6


def test_equity_weight_two_gets_twice_the_fill_until_it_saturates() -> None:
    demands = [dem("vulnerable", 100, equity_weight=2.0), dem("other", 100)]
    assert allocated(solve(problem([src("lot", 90)], demands))) == {"vulnerable": 60, "other": 30}
    assert allocated(solve(problem([src("lot", 150)], demands))) == {"vulnerable": 100, "other": 50}


def test_unreachable_demand_does_not_lower_anyone_else() -> None:
    far_deadline = {"needed_by": "2026-11-22T09:00:00Z"}  # 1 h at 50 km/h, but 500 km away
    p = problem([src("lot", 100)], [dem("a", 50, km=5), dem("far", 50, km=500, **far_deadline), dem("b", 50, km=5)])
    plan = solve(p)
    assert allocated(plan) == {"a": 50, "far": 0, "b": 50}
    assert reasons(plan) == {"a": None, "far": "unreachable_by_deadline", "b": None}
    assert plan.kpis.by_priority["critical"].demands_unserved == 1


def test_lot_expiring_before_arrival_is_not_used() -> None:
    expiring = src("expiring", 100, km=200, expires_at="2026-11-22T10:00:00Z")  # arrives 12:00
    fresh = src("fresh", 30, km=300)
    plan = solve(problem([expiring, fresh], [dem("h", 100)]))
    assert [(a.source, a.quantity) for a in plan.allocations] == [("fresh", 30)]
    alone = solve(problem([expiring], [dem("h", 100)]))
    assert alone.allocations == () and reasons(alone) == {"h": "unreachable_by_deadline"}


def test_no_compatible_supply_reason() -> None:
    plan = solve(problem([src("lot", 10, item="FOOD")], [dem("h", 5)]))
    assert reasons(plan) == {"h": "no_compatible_supply"}
    assert build_arcs(problem([src("lot", 10, item="FOOD")], [dem("h", 5)])).n == 0


def test_primary_item_before_substitute_at_equal_distance() -> None:
    p = problem([src("kn95", 50, km=10, item="KN95"), src("n95", 50, km=10)], [dem("h", 70)])
    plan = solve(p)
    assert {a.source: a.quantity for a in plan.allocations} == {"n95": 50, "kn95": 20}
    assert plan.kpis.substituted_units == 20
    assert plan.kpis.substitution_penalty == pytest.approx(20 * 0.3)
    # Substitution is one-way: a KN95 demand cannot take N95.
    assert allocated(solve(problem([src("n95", 50)], [dem("h", 10, item="KN95")]))) == {"h": 0}


def test_critical_is_served_before_high_even_when_farther() -> None:
    p = problem([src("lot", 100)], [dem("near", 80, km=1, priority="high"), dem("far", 80, km=300)])
    plan = solve(p)
    assert allocated(plan) == {"near": 20, "far": 80}
    assert reasons(plan) == {"near": "lower_priority", "far": None}


def test_minimum_cost_routing_at_fixed_quantities() -> None:
    p = problem([src("west", 50, km=0), src("east", 50, km=100)], [dem("e", 50, km=100), dem("w", 50, km=0)])
    plan = solve(p)
    assert {(a.source, a.demand): a.quantity for a in plan.allocations} == {("west", "w"): 50, ("east", "e"): 50}
    assert plan.kpis.transport_cost == 0.0
    assert plan.allocations[0].cost == 0.0


def stranded(p: Problem, plan: Plan) -> list[tuple[str, str]]:
    """(source, demand) pairs where a reachable source keeps stock while the demand is short."""
    arcs = build_arcs(p)
    left = {s.id: s.quantity for s in p.sources}
    for a in plan.allocations:
        left[a.source] -= a.quantity
    short = {d.id for d in plan.demands if d.unmet > 0}
    return [
        (p.sources[s].id, p.demands[d].id)
        for s, d in zip(arcs.source.tolist(), arcs.demand.tolist(), strict=True)
        if left[p.sources[s].id] > 0 and p.demands[d].id in short
    ]


def test_leftover_supply_is_never_stranded() -> None:
    p = problem(
        [src("s1", 10, km=0), src("s2", 100, km=400)],
        [dem("a", 50, km=0, needed_by="2026-11-22T09:00:00Z"), dem("b", 50, km=200)],
    )
    plan = solve(p)
    assert allocated(plan) == {"a": 10, "b": 50}
    assert stranded(p, plan) == []
    for seed in range(20):
        rp = random_problem(random.Random(seed))
        assert stranded(rp, solve(rp)) == []


def test_same_input_gives_the_same_plan() -> None:
    p = load_problem(json.loads(EXAMPLE.read_text()))
    first, second = plan_to_dict(solve(p)), plan_to_dict(solve(p))
    first.pop("solver"), second.pop("solver")
    assert json.dumps(first) == json.dumps(second)


@pytest.mark.parametrize("limit", [1e-9, 0.01])
def test_time_limit_returns_a_feasible_plan(limit: float) -> None:
    p = load_problem(json.loads(EXAMPLE.read_text()))
    plan = solve(p, time_limit_s=limit)
    assert plan.status in ("time_limit", "optimal")
    assert_feasible(p, plan)
    if limit < 1e-6:
        assert plan.status == "time_limit"


# ----------------------------------------------------------------- whole-unit certificate (SPEC §3.3)

TIER = {"critical": 0, "high": 1, "routine": 2}


def random_problem(rng: random.Random) -> Problem:
    sources = [
        src(
            f"s{i}",
            rng.randint(0, 25),
            km=rng.uniform(0, 150),
            item=rng.choice(["N95", "KN95"]),
            **({"expires_at": "2026-11-22T10:00:00Z"} if rng.random() < 0.2 else {}),
        )
        for i in range(rng.randint(1, 5))
    ]
    demands = [
        dem(
            f"d{i}",
            rng.randint(1, 15),
            km=rng.uniform(0, 150),
            item=rng.choice(["N95", "KN95"]),
            priority=rng.choice(list(TIER)),
            equity_weight=rng.choice([0.5, 1.0, 1.0, 1.5, 2.0, 3.0]),
            **({"needed_by": "2026-11-22T10:00:00Z"} if rng.random() < 0.3 else {}),
        )
        for i in range(rng.randint(1, 8))
    ]
    return problem(sources, demands)


def max_flow_value(p: Problem, caps: np.ndarray) -> int:
    arcs = build_arcs(p)
    ns, nd = len(p.sources), len(p.demands)
    g = max_flow.SimpleMaxFlow()
    g.add_arcs_with_capacity(
        np.concatenate([np.zeros(ns, np.int32), 2 + arcs.source, 2 + ns + np.arange(nd, dtype=np.int32)]),
        np.concatenate([2 + np.arange(ns, dtype=np.int32), 2 + ns + arcs.demand, np.ones(nd, np.int32)]),
        np.concatenate([arcs.source_qty, np.full(arcs.n, 10**9), caps]).astype(np.int64),
    )
    g.solve(0, 1)
    return int(g.optimal_flow())


def unit_greedy(p: Problem) -> list[int]:
    """Reference: accept units one by one in (tier, (k)/(w q), input order) order while feasible."""
    units = sorted(
        (TIER[d.priority], k / (d.equity_weight * d.quantity), r)
        for r, d in enumerate(p.demands)
        for k in range(1, d.quantity + 1)
    )
    x = np.zeros(len(p.demands), dtype=np.int64)
    blocked: set[int] = set()
    for _, _, r in units:
        if r in blocked:
            continue
        x[r] += 1
        if max_flow_value(p, x) < x.sum():
            x[r] -= 1
            blocked.add(r)
    return x.tolist()


def certificate_violations(p: Problem, x: list[int]) -> list[str]:
    """Demands that could gain a unit without any protected demand (SPEC §3.3) losing one."""
    c = [d.equity_weight * d.quantity for d in p.demands]
    bad = []
    for r, d in enumerate(p.demands):
        if x[r] >= d.quantity:
            continue
        protected = [
            TIER[s.priority] < TIER[d.priority] or (s.priority == d.priority and x[i] / c[i] <= (x[r] + 1) / c[r])
            for i, s in enumerate(p.demands)
        ]
        caps = np.array([x[i] if protected[i] else 0 for i in range(len(x))], dtype=np.int64)
        caps[r] = x[r] + 1
        if max_flow_value(p, caps) == caps.sum():
            bad.append(d.id)
    return bad


@pytest.mark.parametrize("seed", range(40))
def test_random_small_problems_meet_the_whole_unit_certificate(seed: int) -> None:
    p = random_problem(random.Random(seed))
    plan = solve(p)
    assert_feasible(p, plan)
    x = [d.allocated for d in plan.demands]
    assert certificate_violations(p, x) == []
    assert x == unit_greedy(p)


# ----------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "optimizer", *args], capture_output=True, text=True, timeout=120)


def test_cli_solve_then_check(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    done = run_cli("solve", str(EXAMPLE), "-o", str(out), "--time-limit", "60")
    assert done.returncode == 0, done.stderr
    plan = load_plan(json.loads(out.read_text()))
    assert plan.status == "optimal" and len(plan.demands) == 1500
    checked = run_cli("check", str(EXAMPLE), str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_cli_bad_input_is_one_line_naming_the_field(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    data["demands"][3]["quantity"] = -5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    done = run_cli("solve", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "demands[3].quantity" in done.stderr
    assert "Traceback" not in done.stderr
    missing = run_cli("solve", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


# ----------------------------------------------------------------- solver internals


def test_pricing_and_helper_process_give_the_same_minimum_cost() -> None:
    # Force the column-generation path (1–2 candidate arcs per demand) and the forked helper on small
    # problems: the integer cost must equal a direct min-cost flow over all arcs.
    from optimizer.fairness import fair_quantities
    from optimizer.parallel import ParallelOptions
    from optimizer.routing import RoutingOptions, route_min_cost

    for seed in range(12):
        p = random_problem(random.Random(1000 + seed))
        arcs = build_arcs(p)
        fair = fair_quantities(p, arcs)
        assert np.array_equal(np.bincount(arcs.demand, weights=fair.witness, minlength=len(p.demands)), fair.quantity)
        args = (arcs, fair.quantity, fair.block_of_demand, fair.block_of_source, fair.witness)
        full = route_min_cost(*args, RoutingOptions(pricing_min_arcs=10**9))
        cost = np.rint(arcs.unit_cost * 1e4).astype(np.int64)
        for opts, par in (
            (RoutingOptions(pricing_min_arcs=0, candidates=1, group_arcs=1), ParallelOptions(workers=1)),
            (RoutingOptions(pricing_min_arcs=0, candidates=2, group_arcs=1), ParallelOptions(workers=2, min_arcs=0)),
        ):
            routed = route_min_cost(*args, opts, parallel=par)
            assert routed.optimal
            assert int((routed.flow * cost).sum()) == int((full.flow * cost).sum())
            assert np.array_equal(
                np.bincount(arcs.demand, weights=routed.flow, minlength=len(p.demands)), fair.quantity
            )


def test_fairness_gives_the_same_answer_with_a_helper_process() -> None:
    from optimizer.fairness import fair_quantities
    from optimizer.parallel import ParallelOptions

    p = load_problem(json.loads(EXAMPLE.read_text()))
    arcs = build_arcs(p)
    alone = fair_quantities(p, arcs, parallel=ParallelOptions(workers=1))
    shared = fair_quantities(p, arcs, parallel=ParallelOptions(workers=2, min_arcs=0))
    assert alone.exact and shared.exact
    for field in ("quantity", "block_of_demand", "block_of_source", "witness"):
        assert np.array_equal(getattr(alone, field), getattr(shared, field)), field
