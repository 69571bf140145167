"""Allocation runs over HTTP: trigger (202), the snapshot's contents, scope overlap, cancel, roles."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.allocation import runs_service, snapshot, worker
from app.allocation.runs_schemas import RunCreate
from app.allocation.runs_service import scopes_overlap
from app.db import transaction, utcnow
from app.errors import Conflict
from app.principal import Principal
from tests.factories import Factory
from tests.runs_world import SmallWorld, later, small_world


@pytest.fixture
def world(engine: Engine) -> SmallWorld:
    return small_world(engine)


def _trigger(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/allocation-runs", json=body, headers=headers)


def _problem(client: TestClient, headers: dict[str, str], run_id: int) -> dict[str, Any]:
    r = client.get(f"/v1/allocation-runs/{run_id}/problem", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_trigger_returns_202_with_location_and_a_queued_run(
    client: TestClient, factory: Factory, world: SmallWorld
) -> None:
    logistics = factory.actor("logistics")
    world.rows.lot(world.depot, world.n95, 100)
    world.rows.line(world.north, world.north_site, world.n95, 30, "critical")
    r = _trigger(client, logistics.headers, settings={"time_limit_s": 5, "speed_kmh": 40})
    assert r.status_code == 202, r.text
    run = r.json()
    assert r.headers["Location"] == f"/v1/allocation-runs/{run['id']}"
    assert run["status"] == "queued" and run["attempts"] == 0 and run["plan_id"] is None
    assert run["scope"] == {"regions": [], "item_ids": []}
    assert run["settings"] == {"speed_kmh": 40.0, "cost_per_unit_km": 0.01, "time_limit_s": 5.0}
    assert run["progress"]["stage"] == "queued"
    assert "1 sources, 1 demands" in run["progress"]["message"]
    fetched = client.get(r.headers["Location"], headers=logistics.headers)
    assert fetched.status_code == 200 and fetched.json()["id"] == run["id"]
    assert fetched.headers["ETag"] == f'"v{run["version"]}"'
    listed = client.get("/v1/allocation-runs", params={"status": "queued"}, headers=logistics.headers).json()
    assert [x["id"] for x in listed["items"]] == [run["id"]]
    assert client.get("/v1/allocation-runs", params={"status": "failed"}, headers=logistics.headers).json() == {
        "items": [],
        "next_cursor": None,
    }


def test_snapshot_holds_allocatable_supply_and_remaining_demand(
    client: TestClient, factory: Factory, world: SmallWorld
) -> None:
    rows = world.rows
    expiry = later(24 * 90)
    lot = rows.lot(world.depot, world.n95, 100, reserved=30, expires_at=expiry)
    rows.lot(world.depot, world.n95, 50, expires_at=utcnow() - timedelta(days=1))  # expired
    rows.lot(world.depot, world.kn95, 40, reserved=40)  # all reserved
    rows.lot(world.north_site, world.n95, 500)  # a hospital's own stock is not coalition supply
    pledge = rows.pledge(world.donor, world.donor_site, world.kn95, 80, committed=20, available_from=later(6))
    rows.pledge(world.donor, world.donor_site, world.kn95, 99, status="pledged")  # not confirmed yet
    needed_by = later(48)
    line = rows.line(world.north, world.north_site, world.n95, 70, "critical", needed_by=needed_by, reserved=25)
    rows.line(world.south, world.south_site, world.n95, 10, status="cancelled")
    rows.line(world.south, world.south_site, world.n95, 10, delivered=10, status="fulfilled")

    r = _trigger(client, factory.actor("logistics").headers)
    assert r.status_code == 202, r.text
    problem = _problem(client, factory.actor("admin").headers, r.json()["id"])

    assert problem["version"] == 1
    assert problem["sources"] == [
        {
            "id": f"lot-{lot.id}",
            "item": "N95",
            "quantity": 70,  # on-hand − reserved
            "lat": 40.70,
            "lon": -74.00,
            "available_at": problem["now"],
            "expires_at": snapshot.format_time(expiry),
        },
        {
            "id": f"pledge-{pledge.id}",
            "item": "KN95",
            "quantity": 60,  # quantity − committed
            "lat": 40.75,
            "lon": -73.90,
            "available_at": snapshot.format_time(pledge.available_from),
        },
    ]
    assert problem["demands"] == [
        {
            "id": f"line-{line.id}",
            "requester": f"org-{world.north.id}",
            "item": "N95",
            "quantity": 45,  # requested − reserved
            "priority": "critical",
            "needed_by": snapshot.format_time(needed_by),
            "lat": 40.80,
            "lon": -73.95,
            "equity_weight": 1.5,
        }
    ]
    items = {it["sku"]: it["substitutes"] for it in problem["items"]}
    assert items["N95"] == [{"sku": "KN95", "penalty": 0.3}] and items["KN95"] == []
    assert "capped" not in problem
    snapshot.load_snapshot(problem)  # the optimizer accepts it as is


def test_scope_filters_demand_by_region_and_item_but_supply_only_by_item(
    client: TestClient, factory: Factory, world: SmallWorld
) -> None:
    rows = world.rows
    n95_lot = rows.lot(world.depot, world.n95, 10)
    kn95_lot = rows.lot(world.depot, world.kn95, 10)
    rows.lot(world.depot, world.gloves, 10)
    north_n95 = rows.line(world.north, world.north_site, world.n95, 5)
    rows.line(world.north, world.north_site, world.gloves, 5)
    rows.line(world.south, world.south_site, world.n95, 5)
    r = _trigger(client, factory.actor("logistics").headers, scope={"regions": ["north"], "item_ids": [world.n95.id]})
    assert r.status_code == 202, r.text
    assert r.json()["scope"] == {"regions": ["north"], "item_ids": [world.n95.id]}
    problem = _problem(client, factory.actor("admin").headers, r.json()["id"])
    assert [d["id"] for d in problem["demands"]] == [f"line-{north_n95.id}"]
    # N95 and its substitute KN95 from the depot (which serves every region); no gloves.
    assert [s["id"] for s in problem["sources"]] == [f"lot-{n95_lot.id}", f"lot-{kn95_lot.id}"]


def test_lines_are_capped_at_justified_need(client: TestClient, factory: Factory, world: SmallWorld) -> None:
    rows = world.rows
    rows.lot(world.depot, world.n95, 1000)
    rows.lot(world.depot, world.gloves, 1000)
    # north burns 10 N95 a day and holds 20: need over 14 days = 10 × 14 − 20 = 120, shared by its lines.
    rows.usage(world.north, world.n95, on_hand=20, daily=10)
    routine = rows.line(world.north, world.north_site, world.n95, 100, "routine")
    critical = rows.line(world.north, world.north_site, world.n95, 100, "critical")
    # south holds more gloves than two weeks of use: its request is left out entirely.
    rows.usage(world.south, world.gloves, on_hand=500, daily=5)
    gloves = rows.line(world.south, world.south_site, world.gloves, 50)
    # a report older than 30 days does not cap.
    rows.usage(world.south, world.n95, on_hand=0, daily=1, age=timedelta(days=40))
    south_n95 = rows.line(world.south, world.south_site, world.n95, 300)

    r = _trigger(client, factory.actor("logistics").headers)
    problem = _problem(client, factory.actor("admin").headers, r.json()["id"])
    quantities = {d["id"]: d["quantity"] for d in problem["demands"]}
    assert quantities == {f"line-{critical.id}": 100, f"line-{routine.id}": 20, f"line-{south_n95.id}": 300}
    assert problem["capped"] == [
        {"demand": f"line-{routine.id}", "requested": 100, "capped_to": 20},
        {"demand": f"line-{gloves.id}", "requested": 50, "capped_to": 0},
    ]
    assert "2 capped" in r.json()["progress"]["message"]
    snapshot.load_snapshot(problem)  # `capped` is stripped before the optimizer sees it


def test_scopes_overlap_on_a_shared_region_item_pair() -> None:
    assert scopes_overlap(["a"], [], [], [7])  # all items in a × all regions with item 7
    assert scopes_overlap([], [], ["b"], [1])
    assert scopes_overlap(["a", "b"], [1, 2], ["b"], [2, 3])
    assert not scopes_overlap(["a"], [], ["b"], [])
    assert not scopes_overlap([], [1], [], [2])
    assert not scopes_overlap(["a"], [1], ["b"], [1])


def test_overlapping_scope_is_refused_while_a_run_is_active(
    client: TestClient, factory: Factory, world: SmallWorld, engine: Engine
) -> None:
    headers = factory.actor("logistics").headers
    first = _trigger(client, headers, scope={"regions": ["north"]}).json()
    r = _trigger(client, headers, scope={"item_ids": [world.gloves.id]})
    assert r.status_code == 409, r.text
    assert r.json()["conflicting_run_id"] == first["id"] and f"run {first['id']}" in r.json()["detail"]
    assert _trigger(client, headers, scope={"regions": ["south"]}).status_code == 202  # disjoint regions
    # Running counts too: claim the first run, still refused.
    assert worker.claim_next(engine, "test-worker") == first["id"]
    assert _trigger(client, headers, scope={"regions": ["north"], "item_ids": [world.n95.id]}).status_code == 409
    listed = client.get("/v1/allocation-runs", headers=headers).json()["items"]
    assert len(listed) == 2  # nothing was written by the refused triggers


def test_finished_runs_do_not_block_a_new_overlapping_run(client: TestClient, factory: Factory) -> None:
    headers = factory.actor("logistics").headers
    first = _trigger(client, headers).json()
    assert client.post(f"/v1/allocation-runs/{first['id']}/cancel", headers=headers).status_code == 200
    assert _trigger(client, headers).status_code == 202


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"settings": {"time_limit_s": 0}}, "settings.time_limit_s"),
        ({"settings": {"time_limit_s": 3601}}, "settings.time_limit_s"),
        ({"settings": {"speed_kmh": 0}}, "settings.speed_kmh"),
        ({"settings": {"cost_per_unit_km": -1}}, "settings.cost_per_unit_km"),
        ({"scope": {"regions": "north"}}, "scope.regions"),
        ({"scope": {"item_ids": ["x"]}}, "scope.item_ids[0]"),
        ({"scope": {"colour": "red"}}, "scope.colour"),
    ],
)
def test_bad_trigger_bodies_name_the_field(
    client: TestClient, factory: Factory, body: dict[str, Any], field: str
) -> None:
    r = _trigger(client, factory.actor("logistics").headers, **body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]]


def test_unknown_item_in_scope_is_422_naming_its_index(client: TestClient, factory: Factory, world: SmallWorld) -> None:
    headers = factory.actor("logistics").headers
    r = _trigger(client, headers, scope={"item_ids": [world.n95.id, 999_999]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "scope.item_ids[1]"
    assert client.get("/v1/allocation-runs", headers=headers).json()["items"] == []


def test_cancel_rules(client: TestClient, factory: Factory, engine: Engine, world: SmallWorld) -> None:
    headers = factory.actor("logistics").headers
    queued = _trigger(client, headers, scope={"regions": ["north"]}).json()
    r = client.post(f"/v1/allocation-runs/{queued['id']}/cancel", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert client.post(f"/v1/allocation-runs/{queued['id']}/cancel", headers=headers).status_code == 409

    running = _trigger(client, headers, scope={"regions": ["south"]}).json()
    assert worker.claim_next(engine, "w1") == running["id"]
    r = client.post(f"/v1/allocation-runs/{running['id']}/cancel", headers=headers)
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert worker.process_run(engine, running["id"], "w1", heartbeat_interval=0.05) == "cancelled"
    after = client.get(f"/v1/allocation-runs/{running['id']}", headers=headers).json()
    assert after["status"] == "cancelled" and after["plan_id"] is None
    assert client.post(f"/v1/allocation-runs/{running['id']}/cancel", headers=headers).status_code == 409
    assert client.post("/v1/allocation-runs/999999/cancel", headers=headers).status_code == 404


def test_roles(client: TestClient, factory: Factory) -> None:
    logistics, admin = factory.actor("logistics"), factory.actor("admin")
    run = _trigger(client, logistics.headers).json()
    base = f"/v1/allocation-runs/{run['id']}"
    assert _trigger(client, admin.headers).status_code == 403  # admin reads only
    assert client.post(f"{base}/cancel", headers=admin.headers).status_code == 403
    for path in ("/v1/allocation-runs", base, f"{base}/problem"):
        assert client.get(path, headers=admin.headers).status_code == 200
    for role in ("requester", "donor", "driver"):
        other = factory.actor(role)
        assert client.get(base, headers=other.headers).status_code == 403
        assert client.get("/v1/allocation-runs", headers=other.headers).status_code == 403
        assert _trigger(client, other.headers).status_code == 403
    assert client.get(base).status_code == 401
    assert client.get("/v1/allocation-runs/999999", headers=admin.headers).status_code == 404
    assert client.get("/v1/allocation-runs/999999/problem", headers=admin.headers).status_code == 404


def test_simultaneous_overlapping_triggers_admit_exactly_one(engine: Engine, factory: Factory) -> None:
    actor = factory.actor("logistics")
    principal = Principal(key_id=actor.key_id, name="logistics", role="logistics", organization_id=None)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def trigger(regions: list[str]) -> None:
        data = RunCreate.model_validate({"scope": {"regions": regions}})
        barrier.wait()
        try:
            with transaction(engine) as session:
                runs_service.create_run(session, actor=principal, data=data)
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    # Every pair of these scopes overlaps (all regions, or north).
    threads = [threading.Thread(target=trigger, args=(["north"] if i % 2 else [],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["created"]
