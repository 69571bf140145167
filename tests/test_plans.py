"""Plan review, edits, approval, rejection and exports. Plans are stored straight through
`plans_service.create_plan` (what the worker calls) from a hand-built snapshot, so these tests do not
depend on the worker. Stock enters through the real ledger (`inventory.receive`)."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import select

import optimizer
from app.allocation import plan_approval
from app.allocation.models import Plan, PlanLine
from app.db import transaction, utcnow
from app.errors import Conflict
from app.inventory import service as inventory
from app.inventory.models import InventoryLot
from app.pledges.models import Pledge
from app.requests.models import RequestLine, SupplyRequest
from app.shipments.models import Shipment, ShipmentLine
from optimizer.io import load_problem, plan_to_dict
from tests.factories import Factory
from tests.plan_world import (
    LOGISTICS,
    approve,
    build_world,
    counter,
    demand,
    errors_field,
    line_id,
    movements,
    plan_dict,
    snapshot,
    store_run,
    the_plan,
    url,
)


def test_review_shows_lines_results_kpis_baseline_and_caches(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    baseline = {"by_priority": {}, "transport_cost": 1.0, "unit_km": 100.0, "substituted_units": 0}
    run_id = store_run(w.engine, snapshot(w), the_plan(w), baseline=baseline)
    logistics, admin = factory.actor("logistics"), factory.actor("admin")

    r = client.get(url(run_id), headers=logistics.headers)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["state"] == "proposed" and plan["solver_status"] == "optimal" and not plan["edited"]
    got = {(x["source"], x["request_line_id"], x["quantity"]) for x in plan["lines"]}
    assert got == {
        (f"lot-{w.lot_n}", w.a1, 80),
        (f"lot-{w.lot_n}", w.b1, 20),
        (f"lot-{w.lot_k}", w.b1, 30),
        (f"pledge-{w.pledge}", w.a2, 30),
    }
    kn95_line = next(x for x in plan["lines"] if x["source"] == f"lot-{w.lot_k}")
    assert kn95_line["item_id"] == w.kn95.id and kn95_line["origin_site_id"] == w.depot.id
    assert kn95_line["destination_site_id"] == w.site_b.id and kn95_line["cost"] > 30 * 0.3
    pledge_line = next(x for x in plan["lines"] if x["pledge_id"] == w.pledge)
    assert pledge_line["origin_site_id"] == w.donor_site.id and pledge_line["lot_id"] is None
    assert demand(plan, w.b1) | {"fill_rate": 0} == {
        "id": f"line-{w.b1}", "request_line_id": w.b1, "requested": 60, "allocated": 50,
        "fill_rate": 0, "unmet": 10, "reason": "lower_priority",  # lot-N also served critical a1
    }  # fmt: skip
    assert demand(plan, w.g1)["reason"] == "no_compatible_supply"
    assert plan["kpis"]["by_priority"]["critical"]["allocated"] == 80
    assert plan["baseline_kpis"] == baseline
    assert plan["diff_from_last_approved"] == {"approved_plan_id": None, "lines": []}
    assert plan["shipment_ids"] == []

    etag = r.headers["ETag"]
    cached = client.get(url(run_id), headers=logistics.headers | {"If-None-Match": etag})
    assert cached.status_code == 304 and cached.headers["ETag"] == etag and cached.content == b""
    assert client.get(url(run_id), headers=admin.headers).status_code == 200
    for role in ("requester", "donor", "driver"):
        assert client.get(url(run_id), headers=factory.actor(role).headers).status_code == 403
    assert client.get(url(run_id + 999), headers=logistics.headers).status_code == 404
    queued = store_run(w.engine, snapshot(w), None)
    missing = client.get(url(queued), headers=logistics.headers)
    assert missing.status_code == 404 and "has no plan" in missing.json()["detail"]


# ---------------------------------------------------------------- edits


def test_edits_are_revalidated_against_the_snapshot_and_recompute_kpis(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    run_id = store_run(w.engine, snapshot(w), the_plan(w))
    h = factory.actor("logistics").headers
    first = client.get(url(run_id), headers=h)
    plan, etag = first.json(), first.headers["ETag"]
    n_a1 = line_id(plan, f"lot-{w.lot_n}", w.a1)

    r = client.patch(url(run_id, f"/lines/{n_a1}"), json={"quantity": 70}, headers=h | {"If-Match": etag})
    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited["edited"] and edited["version"] == plan["version"] + 1 and r.headers["ETag"] != etag
    line = next(x for x in edited["lines"] if x["id"] == n_a1)
    assert line["quantity"] == 70 and line["manual"]
    assert sum(x["manual"] for x in edited["lines"]) == 1
    assert demand(edited, w.a1) | {"fill_rate": 0} == {
        "id": f"line-{w.a1}", "request_line_id": w.a1, "requested": 80, "allocated": 70,
        "fill_rate": 0, "unmet": 10, "reason": "shortage",
    }  # fmt: skip
    assert edited["kpis"]["by_priority"]["critical"]["allocated"] == 70
    assert edited["kpis"]["unit_km"] < plan["kpis"]["unit_km"]

    # stale If-Match → 412, nothing changes
    stale = client.patch(url(run_id, f"/lines/{n_a1}"), json={"quantity": 60}, headers=h | {"If-Match": etag})
    assert stale.status_code == 412
    blind = client.patch(url(run_id, f"/lines/{n_a1}"), json={"quantity": 60}, headers=h)
    assert blind.status_code == 428
    h = h | {"If-Match": r.headers["ETag"]}
    # lot-N now gives 70 + 20; 31 more to b1 would take 101 of its 100 units
    n_b1 = line_id(plan, f"lot-{w.lot_n}", w.b1)
    over = client.patch(url(run_id, f"/lines/{n_b1}"), json={"quantity": 31}, headers=h)
    assert over.status_code == 422 and errors_field(over) == "quantity" and "lot-" in over.json()["detail"]
    # the pledge has 40, but a2 asked for 30
    p_a2 = line_id(plan, f"pledge-{w.pledge}", w.a2)
    too_much = client.patch(url(run_id, f"/lines/{p_a2}"), json={"quantity": 31}, headers=h)
    assert too_much.status_code == 422 and errors_field(too_much) == "quantity"
    assert "asked for 30" in too_much.json()["detail"]
    bad = client.patch(url(run_id, f"/lines/{p_a2}"), json={"quantity": 0}, headers=h)
    assert bad.status_code == 422 and errors_field(bad) == "quantity"
    assert client.patch(url(run_id, "/lines/999999"), json={"quantity": 1}, headers=h).status_code == 404
    assert client.get(url(run_id), headers=h).json()["version"] == edited["version"]

    assert client.delete(url(run_id, f"/lines/{p_a2}"), headers=h | {"If-Match": etag}).status_code == 412
    removed = client.delete(url(run_id, f"/lines/{p_a2}"), headers=h)
    assert removed.status_code == 200, removed.text
    after = removed.json()
    assert p_a2 not in {x["id"] for x in after["lines"]}
    assert demand(after, w.a2)["allocated"] == 0 and demand(after, w.a2)["reason"] is not None
    assert after["kpis"]["by_priority"]["routine"]["allocated"] == 0

    for role in ("admin", "requester", "driver"):
        other = factory.actor(role).headers
        assert client.patch(url(run_id, f"/lines/{n_a1}"), json={"quantity": 5}, headers=other).status_code == 403
        assert client.delete(url(run_id, f"/lines/{n_a1}"), headers=other).status_code == 403


def test_an_infeasible_line_cannot_be_edited(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    snap = snapshot(w)
    plan = the_plan(w)
    # A hand-written plan claiming KN95 can fill a gloves demand: the snapshot says it cannot.
    plan["allocations"].append(
        {"source": f"lot-{w.lot_k}", "demand": f"line-{w.g1}", "item": w.kn95.sku, "quantity": 5,
         "distance_km": 12.0, "cost": 1.0}
    )  # fmt: skip
    run_id = store_run(w.engine, snap, plan)
    h = factory.actor("logistics").headers
    bogus = line_id(client.get(url(run_id), headers=h).json(), f"lot-{w.lot_k}", w.g1)
    etag = client.get(url(run_id), headers=h).headers["ETag"]
    r = client.patch(url(run_id, f"/lines/{bogus}"), json={"quantity": 4}, headers=h | {"If-Match": etag})
    assert r.status_code == 409 and "may not fill" in r.json()["detail"]


def test_only_a_proposed_plan_changes_and_reject_keeps_it(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    run_id = store_run(w.engine, snapshot(w), the_plan(w))
    h = factory.actor("logistics").headers
    plan = client.get(url(run_id), headers=h).json()
    assert client.post(url(run_id, "/reject"), headers=h | {"If-Match": '"v0-a0"'}).status_code == 412
    assert client.post(url(run_id, "/reject"), headers=factory.actor("admin").headers).status_code == 403
    r = client.post(url(run_id, "/reject"), headers=h)
    assert r.status_code == 200 and r.json()["state"] == "rejected" and r.json()["decided_at"] is not None
    line = plan["lines"][0]["id"]
    assert client.patch(url(run_id, f"/lines/{line}"), json={"quantity": 1}, headers=h).status_code == 409
    assert client.delete(url(run_id, f"/lines/{line}"), headers=h).status_code == 409
    assert client.post(url(run_id, "/approve"), headers=h).status_code == 409
    assert client.post(url(run_id, "/reject"), headers=h).status_code == 409
    kept = client.get(url(run_id), headers=h).json()
    assert kept["state"] == "rejected" and len(kept["lines"]) == len(plan["lines"])
    with transaction(w.engine) as s:
        assert s.exec(select(func.count()).select_from(Shipment)).one() == 0


# ---------------------------------------------------------------- approval


def test_approve_reserves_commits_ships_and_supersedes(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    snap, now = snapshot(w), utcnow()
    older_overlapping = store_run(w.engine, snap, plan_dict(snap, []), created_at=now - timedelta(hours=3))
    older_elsewhere = store_run(
        w.engine, snap, plan_dict(snap, []), regions=["east"], created_at=now - timedelta(hours=2)
    )
    run_id = store_run(w.engine, snap, the_plan(w), regions=["north", "south"], created_at=now - timedelta(hours=1))
    newer = store_run(w.engine, snap, plan_dict(snap, [(f"lot-{w.lot_n}", f"line-{w.a1}", 50)]), created_at=now)
    h = factory.actor("logistics").headers
    etag = client.get(url(run_id), headers=h).headers["ETag"]

    r = client.post(url(run_id, "/approve"), headers=h | {"If-Match": etag})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["state"] == "approved" and plan["decided_at"] is not None and len(plan["shipment_ids"]) == 3

    with transaction(w.engine) as s:
        lot_n, lot_k, pledge = s.get(InventoryLot, w.lot_n), s.get(InventoryLot, w.lot_k), s.get(Pledge, w.pledge)
        lines = {i: s.get(RequestLine, i) for i in (w.a1, w.a2, w.b1, w.g1)}
        requests = {i: s.get(SupplyRequest, i) for i in (w.request_a, w.request_b)}
        shipments = s.exec(select(Shipment).order_by(Shipment.id)).all()
        shipment_lines = s.exec(select(ShipmentLine)).all()
    assert (lot_n.on_hand, lot_n.reserved, lot_k.on_hand, lot_k.reserved) == (100, 100, 50, 30)
    reserves = movements(w.engine, "reserve")
    assert sorted((m.lot_id, m.quantity, m.delta_reserved) for m in reserves) == sorted(
        [(w.lot_n, 80, 80), (w.lot_n, 20, 20), (w.lot_k, 30, 30)]
    )
    assert all(m.reference and m.reference.startswith("shipment:") for m in reserves)
    assert pledge.committed == 30
    assert {i: (x.quantity_reserved, x.status) for i, x in lines.items()} == {
        w.a1: (80, "allocated"), w.a2: (30, "allocated"), w.b1: (50, "partially_allocated"), w.g1: (0, "open"),
    }  # fmt: skip
    assert (
        requests[w.request_a].status == "partially_allocated" and requests[w.request_b].status == "partially_allocated"
    )
    groups = {(x.origin_site_id, x.destination_site_id): x for x in shipments}
    assert set(groups) == {(w.depot.id, w.site_a.id), (w.depot.id, w.site_b.id), (w.donor_site.id, w.site_a.id)}
    assert all(x.status == "planned" for x in shipments)
    assert groups[(w.depot.id, w.site_b.id)].destination_organization_id == w.org_b
    per_shipment = {
        x.id: sorted((ln.request_line_id, ln.quantity) for ln in shipment_lines if ln.shipment_id == x.id)
        for x in shipments
    }
    assert per_shipment[groups[(w.depot.id, w.site_b.id)].id] == [(w.b1, 20), (w.b1, 30)]
    assert per_shipment[groups[(w.donor_site.id, w.site_a.id)].id] == [(w.a2, 30)]
    assert len(shipment_lines) == 4 and {ln.plan_line_id for ln in shipment_lines} == {x["id"] for x in plan["lines"]}
    # each shipment has its own feed position, taken last
    assert sorted(x.change_seq for x in shipments) == [1, 2, 3] and counter(w.engine) == 3

    states = {i: client.get(url(i), headers=h).json()["state"] for i in (older_overlapping, older_elsewhere, newer)}
    assert states == {older_overlapping: "superseded", older_elsewhere: "proposed", newer: "proposed"}
    diff = client.get(url(newer), headers=h).json()["diff_from_last_approved"]
    assert diff == {
        "approved_plan_id": plan["id"],
        "lines": [
            {"request_line_id": w.a1, "quantity": 50, "approved_quantity": 80, "delta": -30},
            {"request_line_id": w.a2, "quantity": 0, "approved_quantity": 30, "delta": -30},
            {"request_line_id": w.b1, "quantity": 0, "approved_quantity": 50, "delta": -50},
        ],
    }
    assert client.post(url(run_id, "/approve"), headers=h).status_code == 409


def test_approve_when_the_world_changed_lists_every_conflict_and_writes_nothing(
    client: TestClient, factory: Factory
) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    run_id = store_run(w.engine, snapshot(w), the_plan(w))
    h = factory.actor("logistics").headers
    with transaction(w.engine) as s:
        inventory.adjust(s, actor=LOGISTICS, lot_id=w.lot_n, delta=-10, reason="water damage")
        s.get(Pledge, w.pledge).status = "cancelled"  # type: ignore[union-attr]
        line = s.get(RequestLine, w.a2)
        line.status = "cancelled"  # type: ignore[union-attr]
    before = client.get(url(run_id), headers=h).json()

    r = approve(client, run_id, h)
    assert r.status_code == 409, r.text
    conflicts = {(c["kind"], c["id"], c["reason"]): c for c in r.json()["conflicts"]}
    assert set(conflicts) == {
        ("lot", w.lot_n, "insufficient_stock"),
        ("pledge", w.pledge, "not_confirmed"),
        ("request_line", w.a2, "cancelled"),
    }
    lot_conflict = conflicts[("lot", w.lot_n, "insufficient_stock")]
    assert (lot_conflict["needed"], lot_conflict["available"], len(lot_conflict["plan_line_ids"])) == (100, 90, 2)

    after = client.get(url(run_id), headers=h).json()
    assert after["state"] == "proposed" and after["version"] == before["version"]
    assert movements(w.engine, "reserve") == [] and counter(w.engine) == 0
    with transaction(w.engine) as s:
        assert s.get(InventoryLot, w.lot_n).reserved == 0  # type: ignore[union-attr]
        assert s.get(RequestLine, w.a1).quantity_reserved == 0  # type: ignore[union-attr]
        assert s.exec(select(func.count()).select_from(Shipment)).one() == 0


def test_concurrent_approvals_of_one_plan_succeed_exactly_once(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    run_id = store_run(w.engine, snapshot(w), the_plan(w))
    results: list[str] = []
    gate = threading.Barrier(8)

    def approve() -> None:
        gate.wait()
        try:
            with transaction(w.engine) as s:
                plan_approval.approve(s, actor=LOGISTICS, run_id=run_id)
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=approve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    with transaction(w.engine) as s:
        assert s.exec(select(func.count()).select_from(Shipment)).one() == 3
        assert s.get(InventoryLot, w.lot_n).reserved == 100  # type: ignore[union-attr]


def test_plans_competing_for_the_same_stock_the_second_loses(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    snap = snapshot(w)
    first = store_run(w.engine, snap, plan_dict(snap, [(f"lot-{w.lot_n}", f"line-{w.a1}", 80)]), regions=["north"])
    second = store_run(w.engine, snap, plan_dict(snap, [(f"lot-{w.lot_n}", f"line-{w.b1}", 60)]), regions=["south"])
    h = factory.actor("logistics").headers
    assert approve(client, first, h).status_code == 200
    lost = approve(client, second, h)
    assert lost.status_code == 409
    assert lost.json()["conflicts"][0] | {"detail": ""} == {
        "kind": "lot", "id": w.lot_n, "plan_line_ids": lost.json()["conflicts"][0]["plan_line_ids"],
        "needed": 60, "available": 20, "reason": "insufficient_stock", "detail": "",
    }  # fmt: skip


def test_a_solved_plan_round_trips_and_approves(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    snap = snapshot(w)
    solved = plan_to_dict(optimizer.solve(load_problem(snap)))
    run_id = store_run(w.engine, snap, solved)
    h = factory.actor("logistics").headers
    plan = client.get(url(run_id), headers=h).json()
    assert sum(x["quantity"] for x in plan["lines"]) == sum(a["quantity"] for a in solved["allocations"])
    assert plan["kpis"] == solved["kpis"]
    r = approve(client, run_id, h)
    assert r.status_code == 200, r.text
    with transaction(w.engine) as s:
        reserved = s.exec(select(func.sum(RequestLine.quantity_reserved))).one()
        planned = s.exec(select(func.sum(PlanLine.quantity))).one()
        assert reserved == planned == s.exec(select(func.sum(ShipmentLine.quantity))).one()
        assert s.get(Plan, plan["id"]).state == "approved"  # type: ignore[union-attr]


# ---------------------------------------------------------------- exports


def test_pick_list_and_manifest_csv(client: TestClient, factory: Factory) -> None:
    w = build_world(client.app.state.engine, factory)  # type: ignore[attr-defined]
    run_id = store_run(w.engine, snapshot(w), the_plan(w))
    h = factory.actor("admin").headers

    r = client.get(url(run_id, "/pick-list.csv"), params={"site_id": w.depot.id}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    columns = ("lot_id", "lot_code", "item_sku", "quantity", "destination_site_id")
    picked = [tuple(int(x[c]) if c.endswith(("id", "quantity")) else x[c] for c in columns) for x in rows]
    assert picked == [
        (w.lot_n, "N-1", w.n95.sku, 80, w.site_a.id),
        (w.lot_n, "N-1", w.n95.sku, 20, w.site_b.id),
        (w.lot_k, "K-1", w.kn95.sku, 30, w.site_b.id),
    ]
    everything = list(csv.DictReader(io.StringIO(client.get(url(run_id, "/pick-list.csv"), headers=h).text)))
    donor_rows = [x for x in everything if x["pledge_id"]]
    assert len(everything) == 4 and donor_rows[0]["depot_site_name"].startswith("'=")  # no formula injection

    m = client.get(url(run_id, "/manifest.csv"), params={"site_id": w.site_b.id}, headers=h)
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/csv")
    manifest = list(csv.DictReader(io.StringIO(m.text)))
    assert [(x["item_sku"], int(x["quantity"]), int(x["origin_site_id"])) for x in manifest] == [
        (w.n95.sku, 20, w.depot.id),
        (w.kn95.sku, 30, w.depot.id),
    ]
    unknown = client.get(url(run_id, "/manifest.csv"), params={"site_id": 999999}, headers=h)
    assert unknown.status_code == 422 and errors_field(unknown) == "site_id"
    assert client.get(url(run_id, "/manifest.csv"), headers=factory.actor("donor").headers).status_code == 403
