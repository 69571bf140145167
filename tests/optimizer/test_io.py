"""Problem/Plan JSON v1 (SPEC §3.1, §3.4): round trips and validation errors that name the field."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from optimizer import ProblemError, load_plan, load_problem, plan_to_dict, problem_to_dict, solve
from optimizer.io import load_problem_file

EXAMPLE = Path("/work/shared/examples/problem-small.json")

VALID: dict[str, Any] = {
    "version": 1,
    "now": "2026-11-22T08:00:00Z",
    "settings": {"speed_kmh": 50, "cost_per_unit_km": 0.01, "time_limit_s": 60},
    "items": [{"sku": "N95", "substitutes": [{"sku": "KN95", "penalty": 0.3}]}, {"sku": "KN95", "substitutes": []}],
    "sources": [
        {
            "id": "lot-17",
            "item": "N95",
            "quantity": 12000,
            "lat": 40.71,
            "lon": -74.00,
            "available_at": "2026-11-22T08:00:00Z",
            "expires_at": "2027-03-01T00:00:00Z",
        }
    ],
    "demands": [
        {
            "id": "line-431",
            "requester": "org-12",
            "item": "N95",
            "quantity": 3000,
            "priority": "critical",
            "needed_by": "2026-11-23T12:00:00Z",
            "lat": 40.84,
            "lon": -73.94,
            "equity_weight": 1.2,
        }
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """VALID with the value at a dotted path (list indexes as numbers) replaced; ``...`` deletes it."""
    data = copy.deepcopy(VALID)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = data
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_spec_example_loads_with_defaults_and_utc_times() -> None:
    p = load_problem(VALID)
    assert p.now == datetime(2026, 11, 22, 8, tzinfo=UTC)
    assert p.demands[0].equity_weight == 1.2 and p.sources[0].quantity == 12000
    minimal = load_problem(
        with_change("demands.0", {"id": "d", "item": "KN95", "quantity": 1, "priority": "routine", "lat": 0, "lon": 0})
    )
    d = minimal.demands[0]
    assert (d.needed_by, d.equity_weight, d.requester) == (None, 1.0, "")
    assert load_problem(with_change("settings", ...)).settings.speed_kmh == 50.0


def test_offsets_are_converted_to_utc() -> None:
    p = load_problem(with_change("now", "2026-11-22T03:00:00-05:00"))
    assert p.now == datetime(2026, 11, 22, 8, tzinfo=UTC)


def test_round_trip_of_problem() -> None:
    p = load_problem_file(EXAMPLE)
    assert load_problem(json.loads(json.dumps(problem_to_dict(p)))) == p
    assert load_problem(problem_to_dict(load_problem(VALID))) == load_problem(VALID)


def test_round_trip_of_plan() -> None:
    plan = solve(load_problem(VALID))
    data = json.loads(json.dumps(plan_to_dict(plan)))
    assert set(data) == {"status", "allocations", "demands", "kpis", "solver"}
    assert set(data["kpis"]["by_priority"]) == {"critical", "high", "routine"}
    assert data["allocations"][0] == {
        "source": "lot-17",
        "demand": "line-431",
        "item": "N95",
        "quantity": 3000,
        "distance_km": pytest.approx(15.313, abs=1e-3),
        "cost": pytest.approx(459.385, abs=1e-3),
    }
    assert data["demands"] == [{"id": "line-431", "allocated": 3000, "fill_rate": 1.0, "unmet": 0, "reason": None}]
    assert {"name", "wall_s"} <= set(data["solver"]["stages"][0])
    assert plan_to_dict(load_plan(data)) == data


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("version", 2, "version"),
        ("version", True, "version"),
        ("now", ..., "now"),
        ("now", "2026-11-22T08:00:00", "now"),
        ("now", "2026-11-22", "now"),
        ("now", "yesterday", "now"),
        ("now", 1700000000, "now"),
        ("sources.0.available_at", "2026-11-22T08:00:00", "sources[0].available_at"),
        ("sources.0.expires_at", "2027-02-30T00:00:00Z", "sources[0].expires_at"),
        ("demands.0.needed_by", "2026-11-23 12:00", "demands[0].needed_by"),
        ("sources.0.item", "FFP2", "sources[0].item"),
        ("demands.0.item", "FFP2", "demands[0].item"),
        ("items.0.substitutes.0.sku", "FFP2", "items[0].substitutes[0].sku"),
        ("items.0.substitutes.0.sku", "N95", "items[0].substitutes[0].sku"),
        ("items.0.substitutes.0.penalty", -0.1, "items[0].substitutes[0].penalty"),
        ("items.0.substitutes.0.penalty", math.nan, "items[0].substitutes[0].penalty"),
        ("items.1.sku", "N95", "items[1].sku"),
        ("sources.0.quantity", -1, "sources[0].quantity"),
        ("sources.0.quantity", 2.5, "sources[0].quantity"),
        ("sources.0.quantity", "12", "sources[0].quantity"),
        ("sources.0.quantity", 10**12, "sources[0].quantity"),
        ("demands.0.quantity", 0, "demands[0].quantity"),
        ("demands.0.quantity", True, "demands[0].quantity"),
        ("demands.0.equity_weight", 0, "demands[0].equity_weight"),
        ("demands.0.equity_weight", 10.5, "demands[0].equity_weight"),
        ("demands.0.equity_weight", math.inf, "demands[0].equity_weight"),
        ("demands.0.priority", "urgent", "demands[0].priority"),
        ("demands.0.lat", math.nan, "demands[0].lat"),
        ("demands.0.lat", 91, "demands[0].lat"),
        ("sources.0.lon", -180.5, "sources[0].lon"),
        ("sources.0.lon", None, "sources[0].lon"),
        ("demands.0.id", "lot-17", "demands[0].id"),
        ("demands.0.id", "", "demands[0].id"),
        ("demands.0.requester", 12, "demands[0].requester"),
        ("demands.0.equity_wieght", 2, "demands[0].equity_wieght"),
        ("settings.speed_kmh", 0, "settings.speed_kmh"),
        ("settings.speed_kmh", -50, "settings.speed_kmh"),
        ("settings.cost_per_unit_km", -0.01, "settings.cost_per_unit_km"),
        ("settings.time_limit_s", 0, "settings.time_limit_s"),
        ("sources", {}, "sources"),
        ("demands.0", [], "demands[0]"),
    ],
)
def test_invalid_problem_names_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(ProblemError) as info:
        load_problem(with_change(path, value))
    assert info.value.field == field
    assert info.value.message and field in str(info.value)


def test_duplicate_ids_across_sources_and_demands() -> None:
    data = copy.deepcopy(VALID)
    data["sources"].append(dict(data["sources"][0]))
    with pytest.raises(ProblemError) as info:
        load_problem(data)
    assert info.value.field == "sources[1].id"
    data = copy.deepcopy(VALID)
    data["demands"].append(dict(data["demands"][0], id="line-432"))
    data["demands"].append(dict(data["demands"][0]))
    with pytest.raises(ProblemError) as info:
        load_problem(data)
    assert info.value.field == "demands[2].id"


def test_whole_valued_floats_are_accepted_and_zero_stock_is_allowed() -> None:
    assert load_problem(with_change("demands.0.quantity", 3000.0)).demands[0].quantity == 3000
    assert load_problem(with_change("sources.0.quantity", 0)).sources[0].quantity == 0


def test_files_that_are_not_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProblemError, match="not valid JSON"):
        load_problem_file(bad)
    with pytest.raises(ProblemError, match="cannot read"):
        load_problem_file(tmp_path / "missing.json")
    with pytest.raises(ProblemError) as info:
        load_problem([])
    assert info.value.field == "$"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "done"}, "status"),
        ({"allocations": [{"source": "a", "demand": "b", "quantity": -1}]}, "allocations[0].quantity"),
        ({"demands": [{"id": "b", "allocated": 1, "reason": "bad_luck"}]}, "demands[0].reason"),
    ],
)
def test_invalid_plan_names_the_field(change: dict[str, Any], field: str) -> None:
    data = {"status": "optimal", "allocations": [], "demands": [], **change}
    with pytest.raises(ProblemError) as info:
        load_plan(data)
    assert info.value.field == field
