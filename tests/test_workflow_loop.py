"""The daily loop on the demo coalition, end to end (issue 4, item 6):

run → plan → edit a line → approve → dispatch → partial delivery (shortfall, damaged) → new stock
arrives → re-run picks up the shortfall → approve → deliver in full → the line is fulfilled.

The API is driven through the test client; the solve runs in-process through the worker's own
functions (claim + process), as a worker process would. After every step the database is compared
with an expected model the test keeps itself — lot balances, pledge commitments, request line
quantities and statuses, and the exact ledger rows the workflow should have written — and every lot's
balances are checked against the sums of its movements.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from app.allocation import worker
from app.db import transaction
from app.inventory.models import InventoryLot, InventoryMovement
from app.items.models import Item
from app.pledges.models import Pledge
from app.requests.models import RequestLine
from tests.conftest import Actor

SKU = "DISINFECTANT_WIPES"  # few lines and lots in the demo: a solve takes well under a second
SHORTFALL = 25


# ---------------------------------------------------------------- the expected model


def expected_status(q: dict[str, int]) -> str:
    """SPEC §2 line status from quantities (written here independently of the requests domain)."""
    if q["delivered"] >= q["quantity"]:
        return "fulfilled"
    if q["delivered"] > 0:
        return "partially_fulfilled"
    committed = q["reserved"] + q["in_transit"]
    if committed == 0:
        return "open"
    return "allocated" if committed >= q["quantity"] else "partially_allocated"


def remaining(q: dict[str, int]) -> int:
    return q["quantity"] - q["reserved"] - q["in_transit"] - q["delivered"]


@dataclass
class Model:
    lots: dict[int, list[int]]  # lot id → [on_hand, reserved]
    committed: dict[int, int]  # pledge id → committed units
    lines: dict[int, dict[str, int]]  # request line id → quantity, reserved, in_transit, delivered
    cancelled: set[int]
    first_movement: int  # ledger rows after this id are the workflow's
    movements: Counter[tuple[Any, ...]] = field(default_factory=Counter)

    def movement(self, lot_id: int, kind: str, qty: int, d_on_hand: int, d_reserved: int, ref: str | None) -> None:
        self.lots[lot_id][0] += d_on_hand
        self.lots[lot_id][1] += d_reserved
        self.movements[(lot_id, kind, qty, d_on_hand, d_reserved, ref)] += 1

    def approve(self, shipments: list[dict[str, Any]]) -> None:
        for s in shipments:
            for ln in s["lines"]:
                if ln["lot_id"] is not None:
                    self.movement(ln["lot_id"], "reserve", ln["quantity"], 0, ln["quantity"], f"shipment:{s['id']}")
                else:
                    self.committed[ln["pledge_id"]] += ln["quantity"]
                self.lines[ln["request_line_id"]]["reserved"] += ln["quantity"]

    def dispatch(self, s: dict[str, Any]) -> None:
        for ln in s["lines"]:
            q = ln["quantity"]
            if ln["lot_id"] is not None:
                self.movement(ln["lot_id"], "ship", q, -q, -q, f"shipment:{s['id']}")
            line = self.lines[ln["request_line_id"]]
            line["reserved"] -= q
            line["in_transit"] += q

    def deliver(self, s: dict[str, Any], received: dict[int, int]) -> None:
        for ln in s["lines"]:
            line = self.lines[ln["request_line_id"]]
            line["in_transit"] -= ln["quantity"]
            line["delivered"] += received.get(ln["id"], ln["quantity"])


def read_model(engine: Engine) -> Model:
    with transaction(engine) as s:
        lots = {x.id: [x.on_hand, x.reserved] for x in s.exec(select(InventoryLot)).all()}
        committed = {x.id: x.committed for x in s.exec(select(Pledge)).all()}
        rows = s.exec(select(RequestLine)).all()
        last = s.exec(select(func.max(InventoryMovement.id))).one() or 0
    lines = {
        x.id: {
            "quantity": x.quantity,
            "reserved": x.quantity_reserved,
            "in_transit": x.quantity_in_transit,
            "delivered": x.quantity_delivered,
        }
        for x in rows
    }
    cancelled = {x.id for x in rows if x.status == "cancelled"}
    return Model(lots, committed, lines, cancelled, last)  # type: ignore[arg-type]


def check(engine: Engine, model: Model, step: str) -> None:
    """The whole database against the model: every lot, pledge and request line, and the new ledger rows."""
    actual = read_model(engine)
    assert actual.lots == model.lots, step
    assert actual.committed == model.committed, step
    assert actual.lines == model.lines, step
    with transaction(engine) as s:
        statuses = dict(s.exec(select(RequestLine.id, RequestLine.status)).all())
        sums = {
            lot_id: [int(on_hand), int(reserved)]
            for lot_id, on_hand, reserved in s.exec(
                select(
                    InventoryMovement.lot_id,
                    func.sum(InventoryMovement.delta_on_hand),
                    func.sum(InventoryMovement.delta_reserved),
                ).group_by(InventoryMovement.lot_id)
            ).all()
        }
        new = s.exec(select(InventoryMovement).where(InventoryMovement.id > model.first_movement)).all()
    want = {i: "cancelled" if i in model.cancelled else expected_status(q) for i, q in model.lines.items()}
    assert statuses == want, step
    assert sums == {i: b for i, b in actual.lots.items() if i in sums} and set(sums) == set(actual.lots), step
    for on_hand, reserved in actual.lots.values():
        assert on_hand >= 0 and 0 <= reserved <= on_hand, step
    got = Counter((m.lot_id, m.kind, m.quantity, m.delta_on_hand, m.delta_reserved, m.reference) for m in new)
    assert got == model.movements, step


# ---------------------------------------------------------------- API helpers


def ok(r: Any, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return r.json()


def run_and_solve(client: TestClient, engine: Engine, logistics: Actor, item_id: int) -> int:
    body = {"scope": {"item_ids": [item_id]}, "settings": {"time_limit_s": 5}}
    r = client.post("/v1/allocation-runs", json=body, headers=logistics.headers)
    run = ok(r, 202)
    assert r.headers["Location"] == f"/v1/allocation-runs/{run['id']}" and run["status"] == "queued"
    assert worker.claim_next(engine, "loop-worker") == run["id"]
    assert worker.process_run(engine, run["id"], "loop-worker", heartbeat_interval=0.1) == "succeeded"
    done = ok(client.get(f"/v1/allocation-runs/{run['id']}", headers=logistics.headers))
    assert done["status"] == "succeeded" and done["plan_id"] is not None and done["attempts"] == 1
    return int(run["id"])


def plan_of(client: TestClient, run_id: int, who: Actor) -> tuple[dict[str, Any], str]:
    r = client.get(f"/v1/allocation-runs/{run_id}/plan", headers=who.headers)
    return ok(r), r.headers["ETag"]


def shipments_of(client: TestClient, plan: dict[str, Any], who: Actor) -> list[dict[str, Any]]:
    out = [ok(client.get(f"/v1/shipments/{i}", headers=who.headers)) for i in plan["shipment_ids"]]
    assert all(s["status"] == "planned" and s["plan_id"] == plan["id"] for s in out)
    return out


def etag(client: TestClient, who: Actor, shipment: dict[str, Any]) -> str:
    """The shipment's current ETag, as a client reads it before changing the shipment."""
    return client.get(f"/v1/shipments/{shipment['id']}", headers=who.headers).headers["ETag"]


def event(client: TestClient, who: Actor, shipment: dict[str, Any], status: str, **body: Any) -> dict[str, Any]:
    headers = who.headers | {"If-Match": etag(client, who, shipment)}
    r = client.post(f"/v1/shipments/{shipment['id']}/events", json={"status": status, **body}, headers=headers)
    return ok(r, 201)


def current(client: TestClient, who: Actor, shipment: dict[str, Any]) -> dict[str, Any]:
    return ok(client.get(f"/v1/shipments/{shipment['id']}", headers=who.headers))


def demand_of(plan: dict[str, Any], line_id: int) -> dict[str, Any]:
    return next(d for d in plan["demands"] if d["request_line_id"] == line_id)


def check_shipments_match_plan(plan: dict[str, Any], shipments: list[dict[str, Any]]) -> None:
    """One shipment per (origin, destination), one shipment line per plan line, same quantities."""
    routes = [(s["origin_site_id"], s["destination_site_id"]) for s in shipments]
    assert sorted(routes) == sorted({(x["origin_site_id"], x["destination_site_id"]) for x in plan["lines"]})
    shipped = sorted(
        (ln["plan_line_id"], ln["request_line_id"], ln["lot_id"], ln["pledge_id"], ln["quantity"])
        for s in shipments
        for ln in s["lines"]
    )
    planned = sorted((x["id"], x["request_line_id"], x["lot_id"], x["pledge_id"], x["quantity"]) for x in plan["lines"])
    assert shipped == planned


# ---------------------------------------------------------------- the loop


def test_daily_loop_on_the_demo_coalition(client: TestClient, engine: Engine, demo: dict[str, Actor]) -> None:
    logistics, driver = demo["logistics"], demo["driver"]
    with transaction(engine) as s:
        item = s.exec(select(Item).where(Item.sku == SKU)).one()
    model = read_model(engine)
    check(engine, model, "demo loaded")

    # 1. run → plan
    run1 = run_and_solve(client, engine, logistics, item.id or 0)
    check(engine, model, "run 1 solved (nothing reserved yet)")
    plan, plan_etag = plan_of(client, run1, logistics)
    assert plan["state"] == "proposed" and plan["lines"] and plan["baseline_kpis"] is not None
    problem = ok(client.get(f"/v1/allocation-runs/{run1}/problem", headers=logistics.headers))
    capped = {c["demand"] for c in problem.get("capped", [])}
    for d in problem["demands"]:  # the snapshot asks for each open line's remaining quantity (or its cap)
        q = model.lines[int(d["id"].removeprefix("line-"))]
        assert d["quantity"] == remaining(q) or (d["id"] in capped and d["quantity"] < remaining(q))

    # The line we follow: fully planned, from one depot lot, not capped (its demand = its remaining).
    def single_lot_line(x: dict[str, Any]) -> bool:
        same = [y for y in plan["lines"] if y["request_line_id"] == x["request_line_id"]]
        d = demand_of(plan, x["request_line_id"])
        return len(same) == 1 and x["lot_id"] is not None and d["fill_rate"] == 1.0 and d["id"] not in capped

    target_plan_line = next(x for x in plan["lines"] if single_lot_line(x) and x["quantity"] > SHORTFALL)
    target = target_plan_line["request_line_id"]
    assert target_plan_line["quantity"] == model.lines[target]["quantity"]

    # 2. edit another line: logistics takes 10 units off it; re-checked, KPIs recomputed, marked manual
    other = next(x for x in plan["lines"] if x["request_line_id"] != target and x["quantity"] > 10)
    before = demand_of(plan, other["request_line_id"])
    headers = logistics.headers | {"If-Match": plan_etag}
    r = client.patch(
        f"/v1/allocation-runs/{run1}/plan/lines/{other['id']}",
        json={"quantity": other["quantity"] - 10},
        headers=headers,
    )
    edited = ok(r)
    assert edited["edited"] and r.headers["ETag"] != plan_etag
    changed = next(x for x in edited["lines"] if x["id"] == other["id"])
    assert changed["manual"] and changed["quantity"] == other["quantity"] - 10
    after = demand_of(edited, other["request_line_id"])
    assert (after["allocated"], after["unmet"]) == (before["allocated"] - 10, before["unmet"] + 10)
    assert edited["kpis"] != plan["kpis"]
    check(engine, model, "plan edited (nothing reserved yet)")

    # 3. approve → stock reserved through the ledger, pledges committed, shipments created
    plan1 = ok(
        client.post(
            f"/v1/allocation-runs/{run1}/plan/approve", headers=logistics.headers | {"If-Match": r.headers["ETag"]}
        )
    )
    assert plan1["state"] == "approved" and plan1["shipment_ids"]
    shipments1 = shipments_of(client, plan1, logistics)
    check_shipments_match_plan(edited, shipments1)
    model.approve(shipments1)
    check(engine, model, "plan 1 approved")
    assert model.lines[target]["reserved"] == model.lines[target]["quantity"]

    # 4. the driver is assigned and dispatches the shipment carrying the target line
    [s1] = [s for s in shipments1 if any(ln["request_line_id"] == target for ln in s["lines"])]
    assigned = ok(
        client.post(
            f"/v1/shipments/{s1['id']}/assign",
            json={"driver_key_id": driver.key_id},
            headers=logistics.headers | {"If-Match": etag(client, logistics, s1)},
        )
    )
    s1 = event(client, driver, assigned, "dispatched", lat=41.9, lon=-73.98, note="left the depot")
    model.dispatch(s1)
    check(engine, model, "shipment dispatched")
    s1 = event(client, driver, s1, "in_transit", lat=41.8, lon=-73.9)
    check(engine, model, "shipment in transit (position only)")

    # 5. partial delivery: the target line arrives 25 short (damaged), other lines in full
    target_ship_line = next(ln for ln in s1["lines"] if ln["request_line_id"] == target)
    received = {target_ship_line["id"]: target_ship_line["quantity"] - SHORTFALL}
    receipt = [
        {
            "line_id": target_ship_line["id"],
            "quantity_received": received[target_ship_line["id"]],
            "shortfall_reason": "damaged",
        }
    ]
    s1 = event(client, driver, s1, "delivered", lines=receipt, received_by="night dock")
    model.deliver(s1, received)
    check(engine, model, "partial delivery")
    got = next(ln for ln in current(client, logistics, s1)["lines"] if ln["id"] == target_ship_line["id"])
    assert (got["quantity_received"], got["shortfall_reason"]) == (received[target_ship_line["id"]], "damaged")
    assert remaining(model.lines[target]) == SHORTFALL
    assert expected_status(model.lines[target]) == "partially_fulfilled"

    # 6. new stock arrives (enough for every open line of the item), through the ledger
    open_demand = sum(
        remaining(q) for i, q in model.lines.items() if i in {int(d["id"][5:]) for d in problem["demands"]}
    )
    depot = target_plan_line["origin_site_id"]
    body = {"kind": "receive", "site_id": depot, "item_id": item.id, "quantity": open_demand + 50, "lot_code": "LOOP-1"}
    movement = ok(client.post("/v1/inventory/movements", json=body, headers=logistics.headers), 201)
    model.lots[movement["lot_id"]] = [0, 0]
    model.movement(movement["lot_id"], "receive", open_demand + 50, open_demand + 50, 0, None)
    check(engine, model, "stock received")

    # 7. re-run: the new snapshot asks for exactly the shortfall on the target line
    run2 = run_and_solve(client, engine, logistics, item.id or 0)
    problem2 = ok(client.get(f"/v1/allocation-runs/{run2}/problem", headers=logistics.headers))
    [d2] = [d for d in problem2["demands"] if d["id"] == f"line-{target}"]
    assert d2["quantity"] == SHORTFALL
    assert f"line-{target}" not in {c["demand"] for c in problem2.get("capped", [])}
    check(engine, model, "run 2 solved")

    # 8. approve the new plan: the target's shortfall is planned in full
    plan2, etag2 = plan_of(client, run2, logistics)
    assert plan2["diff_from_last_approved"]["approved_plan_id"] == plan1["id"]
    assert demand_of(plan2, target)["allocated"] == SHORTFALL
    plan2 = ok(client.post(f"/v1/allocation-runs/{run2}/plan/approve", headers=logistics.headers | {"If-Match": etag2}))
    shipments2 = shipments_of(client, plan2, logistics)
    check_shipments_match_plan(plan2, shipments2)
    model.approve(shipments2)
    check(engine, model, "plan 2 approved")
    assert plan_of(client, run1, logistics)[0]["state"] == "approved"  # the approved plan stays approved

    # 9. deliver the target's new shipment(s) in full (logistics reports it this time) → fulfilled
    for s in [s for s in shipments2 if any(ln["request_line_id"] == target for ln in s["lines"])]:
        s = event(client, logistics, s, "dispatched")
        model.dispatch(s)
        check(engine, model, f"shipment {s['id']} dispatched")
        s = event(client, logistics, s, "delivered")
        model.deliver(s, {})
        check(engine, model, f"shipment {s['id']} delivered")
    assert model.lines[target]["delivered"] == model.lines[target]["quantity"]
    assert expected_status(model.lines[target]) == "fulfilled"
    with transaction(engine) as s:
        line = s.get(RequestLine, target)
        assert line is not None and line.status == "fulfilled" and line.remaining == 0
