"""Hypothesis strategies for small random allocation problems (Problem JSON v1 → ``load_problem``).

Problems are small (≤ 6 sources, ≤ 9 demands, ≤ 3 SKUs) but hit the interesting cases: scarce and
abundant supply, substitutes, all three tiers, equity weights, co-located sites, deadlines and expiry
dates that cut some arcs (positions within ~150 km; 50 km/h), pledges available later, empty lots.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from optimizer import Problem, load_problem

NOW = "2026-11-22T08:00:00Z"
SKUS = ("A", "B", "C")
WEIGHTS = (0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 3.0)


def _at(hours: float) -> str:
    minutes = round(hours * 60)
    day, rest = divmod(8 * 60 + minutes, 24 * 60)
    return f"2026-11-{22 + day:02d}T{rest // 60:02d}:{rest % 60:02d}:00Z"


@st.composite
def problem_dicts(draw: st.DrawFn, max_sources: int = 6, max_demands: int = 9) -> dict[str, Any]:
    n_skus = draw(st.integers(1, len(SKUS)))
    skus = SKUS[:n_skus]
    items = []
    for sku in skus:
        others = [s for s in skus if s != sku]
        subs = draw(st.lists(st.sampled_from(others), unique=True, max_size=len(others))) if others else []
        items.append({"sku": sku, "substitutes": [
            {"sku": s, "penalty": draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))} for s in subs]})
    # A few candidate places so that several sites share coordinates (distance 0, exact deadlines).
    places = draw(st.lists(st.tuples(st.floats(39.5, 40.5), st.floats(-75.8, -74.2)), min_size=1, max_size=5))
    place = st.sampled_from(places)
    sources = []
    stock = draw(st.sampled_from([6, 15, 40]))  # mostly scarce: fairness only matters when supply is short
    for i in range(draw(st.integers(1, max_sources))):
        lat, lon = draw(place)
        s: dict[str, Any] = {"id": f"s{i}", "item": draw(st.sampled_from(skus)),
                             "quantity": draw(st.integers(0, stock)), "lat": lat, "lon": lon}
        if draw(st.booleans()):
            s["available_at"] = _at(draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])))
        if draw(st.integers(0, 3)) == 0:
            s["expires_at"] = _at(draw(st.sampled_from([0.0, 1.0, 2.0, 3.0])))
        sources.append(s)
    demands = []
    for j in range(draw(st.integers(1, max_demands))):
        lat, lon = draw(place)
        d: dict[str, Any] = {"id": f"d{j}", "requester": f"org{j % 3}", "item": draw(st.sampled_from(skus)),
                             "quantity": draw(st.integers(1, 25)),
                             "priority": draw(st.sampled_from(["critical", "high", "routine"])),
                             "lat": lat, "lon": lon, "equity_weight": draw(st.sampled_from(WEIGHTS))}
        if draw(st.booleans()):
            d["needed_by"] = _at(draw(st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, 24.0])))
        demands.append(d)
    return {"version": 1, "now": NOW,
            "settings": {"speed_kmh": 50.0, "cost_per_unit_km": draw(st.sampled_from([0.01, 0.1, 1.0]))},
            "items": items, "sources": sources, "demands": demands}


def problems(max_sources: int = 6, max_demands: int = 9) -> st.SearchStrategy[Problem]:
    return problem_dicts(max_sources, max_demands).map(load_problem)
