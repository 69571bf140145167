"""Storing a solved plan (`plan_create.create_plan`): every allocation becomes one line with its origin,
destination and item looked up from the database — by `COPY` on PostgreSQL, a Core executemany on
SQLite — and a plan naming an unknown source or line is refused whole."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select

from app.allocation import plan_create
from app.allocation.models import AllocationRun, Plan, PlanLine
from app.allocation.plan_schemas import PlanLinePublic
from app.db import transaction, utcnow
from tests.factories import Factory
from tests.plan_world import build_world, snapshot, store_run, the_plan


@pytest.mark.parametrize("chunk", [plan_create.SQLITE_IN_CHUNK, 1], ids=["one-lookup", "chunked-lookups"])
def test_every_allocation_becomes_a_line_with_its_sites_and_item(
    client: TestClient, factory: Factory, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(plan_create, "SQLITE_IN_CHUNK", chunk)  # PostgreSQL always sends one array
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    plan = the_plan(w)
    run_id = store_run(w.engine, snapshot(w), plan)
    with transaction(w.engine) as s:
        stored = s.exec(select(Plan).where(Plan.run_id == run_id)).one()
        lines = s.exec(select(PlanLine).where(PlanLine.plan_id == stored.id).order_by(col(PlanLine.id))).all()
        got = [
            (x.source_ref, x.lot_id, x.pledge_id, x.request_line_id, x.item_id, x.origin_site_id)
            + (x.destination_site_id, x.quantity, x.distance_km, x.cost, x.manual)
            for x in lines
        ]
    expected_origin = {
        f"lot-{w.lot_n}": (w.lot_n, None, w.n95.id, w.depot.id),
        f"lot-{w.lot_k}": (w.lot_k, None, w.kn95.id, w.depot.id),
        f"pledge-{w.pledge}": (None, w.pledge, w.n95.id, w.donor_site.id),
    }
    destination = {w.a1: w.site_a.id, w.a2: w.site_a.id, w.b1: w.site_b.id}
    want = []
    for a in plan["allocations"]:
        lot, pledge, item, origin = expected_origin[a["source"]]
        line = int(a["demand"].removeprefix("line-"))
        want.append(
            (a["source"], lot, pledge, line, item, origin)
            + (destination[line], a["quantity"], a["distance_km"], a["cost"], False)
        )
    assert got == want  # in allocation order, every column as the plan and the database say


@pytest.mark.parametrize("bad", ["lot-999999", "pledge-999999", "depot-1"])
def test_an_allocation_naming_an_unknown_source_stores_nothing(client: TestClient, factory: Factory, bad: str) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    plan = the_plan(w)
    plan["allocations"][-1] = plan["allocations"][-1] | {"source": bad}
    with pytest.raises(ValueError, match="names no known lot, pledge or line"):
        store_run(w.engine, snapshot(w), plan)
    with transaction(w.engine) as s:
        assert s.exec(select(Plan)).all() == [] and s.exec(select(PlanLine)).all() == []


def test_an_allocation_to_an_unknown_request_line_stores_nothing(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    plan = the_plan(w)
    plan["allocations"][0] = plan["allocations"][0] | {"demand": "line-999999"}
    with transaction(w.engine) as s:
        run = AllocationRun(status="running", problem=snapshot(w), created_at=utcnow())
        s.add(run)
        s.flush()
        with pytest.raises(ValueError, match="line-999999 names no known"):
            plan_create.create_plan(s, run=run, plan=plan, baseline_kpis=None)
        s.rollback()
    with transaction(w.engine) as s:
        assert s.exec(select(PlanLine)).all() == []


def test_the_review_serves_every_stored_line_and_demand_result_in_order(client: TestClient, factory: Factory) -> None:
    """GET …/plan reads lines with a column select (no ORM object per line): same fields, same order."""
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    plan = the_plan(w)
    run_id = store_run(w.engine, snapshot(w), plan)
    body = client.get(f"/v1/allocation-runs/{run_id}/plan", headers=factory.actor("logistics").headers).json()
    with transaction(w.engine) as s:
        stored = s.exec(select(PlanLine).order_by(col(PlanLine.id))).all()
        want_lines = [x.model_dump(exclude={"plan_id", "source_ref"}) | {"source": x.source_ref} for x in stored]
    assert body["lines"] == want_lines
    assert [list(x) for x in body["lines"]] == [list(PlanLinePublic.model_fields)] * len(stored)
    assert [d["id"] for d in body["demands"]] == [d["id"] for d in plan["demands"]]
    for got, d in zip(body["demands"], plan["demands"], strict=True):
        assert got == {
            "id": d["id"],
            "request_line_id": int(d["id"].removeprefix("line-")),
            "requested": d["allocated"] + d["unmet"],
            "allocated": d["allocated"],
            "fill_rate": d["fill_rate"],
            "unmet": d["unmet"],
            "reason": d["reason"],
        }
