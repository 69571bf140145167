"""A coalition for object- and property-level authorization tests: two hospitals (requesters A, B),
two donors (D1, D2), two drivers (V1, V2: keys of the coalition organisation, each assigned different
shipments), with objects of every kind per owner, built through the API (shipments through a real
plan approval). `visible()` says, from the ownership columns alone and SPEC §1, who may see what."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from app.db import utcnow
from optimizer.io import format_time
from tests.conftest import Actor
from tests.factories import Factory
from tests.plan_world import approve, plan_dict, store_run

ORG_BOUND = ("A", "B", "D1", "D2", "V1", "V2")  # the principals that may be foreign to something


def ok(r: Any) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    return r.json()


@dataclass
class Coalition:
    client: TestClient
    engine: Engine
    actors: dict[str, Actor]  # A, B, D1, D2, V1, V2, admin, logistics
    sites: dict[str, int]  # depot, A, B, D1, D2, hub (the coalition's own)
    items: dict[str, int]  # N95, GLOVES
    lots: dict[str, int]  # N95, GLOVES
    requests: dict[str, int]  # A, B
    lines: dict[str, list[int]]  # A, B: [N95 line, GLOVES line]
    pledges: dict[str, int]  # D1, D1-open, D2, D2-open
    usage: dict[str, int]  # A, B
    shipments: dict[str, int]  # depot>A, depot>B, D1>B, D2>A
    approved_run: int
    proposed_run: int
    site_xy: dict[int, tuple[float, float]] = field(default_factory=dict)
    reads: dict[str, Any] = field(default_factory=dict)  # cached admin reads (see test_authz_objects)

    def h(self, who: str) -> dict[str, str]:
        return self.actors[who].headers


def _site(c: TestClient, admin: Actor, org_id: int, kind: str, name: str, lat: float, lon: float) -> int:
    body = {"organization_id": org_id, "name": name, "kind": kind, "lat": lat, "lon": lon}
    return int(ok(c.post("/v1/sites", json=body, headers=admin.headers))["id"])


def _problem(
    w: Coalition, sources: list[tuple[str, str, int, int]], demands: list[tuple[str, str, int, int, int]]
) -> Any:
    """Problem JSON v1: sources (id, sku, quantity, site), demands (id, sku, quantity, site, org)."""

    def at(site: int) -> dict[str, float]:
        lat, lon = w.site_xy[site]
        return {"lat": lat, "lon": lon}

    return {
        "version": 1,
        "now": format_time(utcnow()),
        "settings": {"speed_kmh": 50, "cost_per_unit_km": 0.01},
        "items": [{"sku": "N95", "substitutes": []}, {"sku": "GLOVES", "substitutes": []}],
        "sources": [{"id": i, "item": sku, "quantity": q, **at(site)} for i, sku, q, site in sources],
        "demands": [
            {"id": i, "requester": f"org-{org}", "item": sku, "quantity": q, "priority": "high", **at(site)}
            for i, sku, q, site, org in demands
        ],
    }


def build(client: TestClient, engine: Engine, factory: Factory) -> Coalition:
    orgs = {
        "A": factory.org(kind="hospital", region="north").id,
        "B": factory.org(kind="hospital", region="south").id,
        "D1": factory.org(kind="donor", region="north").id,
        "D2": factory.org(kind="donor", region="south").id,
        "coalition": factory.org(kind="coalition", region="north").id,
        "operator": factory.org(kind="depot_operator", region="north").id,
    }
    actors = {name: factory.actor(role, orgs[name]) for name, role in (("A", "requester"), ("B", "requester"))}
    actors |= {name: factory.actor("donor", orgs[name]) for name in ("D1", "D2")}
    actors |= {name: factory.actor("driver", orgs["coalition"]) for name in ("V1", "V2")}
    actors |= {"admin": factory.actor("admin"), "logistics": factory.actor("logistics")}
    admin, lg = actors["admin"], actors["logistics"]
    c = client

    xy = {"depot": (40.70, -74.00), "A": (40.80, -73.95), "B": (40.60, -74.10), "D1": (40.75, -73.90)}
    xy |= {"D2": (40.65, -73.85), "hub": (40.72, -74.02)}
    kinds = {"depot": "depot", "A": "hospital_dock", "B": "hospital_dock", "D1": "donor_site", "D2": "donor_site"}
    kinds["hub"] = "food_hub"
    owner = {"depot": "operator", "A": "A", "B": "B", "D1": "D1", "D2": "D2", "hub": "coalition"}
    sites = {k: _site(c, admin, orgs[owner[k]], kinds[k], f"{k} site", *xy[k]) for k in kinds}

    items = {
        sku: int(ok(c.post("/v1/items", json={"sku": sku, "name": sku, "category": "ppe"}, headers=lg.headers))["id"])
        for sku in ("N95", "GLOVES")
    }
    lots = {}
    for sku, qty in (("N95", 100), ("GLOVES", 50)):
        body = {"kind": "receive", "site_id": sites["depot"], "item_id": items[sku], "quantity": qty}
        lots[sku] = int(ok(c.post("/v1/inventory/movements", json=body, headers=lg.headers))["lot_id"])

    requests, lines, usage = {}, {}, {}
    for who, (n95, gloves) in (("A", (30, 10)), ("B", (20, 5))):
        body = {
            "site_id": sites[who],
            "justification": f"{who} needs it",
            "lines": [{"item_id": items["N95"], "quantity": n95}, {"item_id": items["GLOVES"], "quantity": gloves}],
        }
        r = ok(c.post("/v1/requests", json=body, headers=actors[who].headers))
        requests[who], lines[who] = r["id"], [x["id"] for x in r["lines"]]
        report = {"item_id": items["N95"], "on_hand": 12, "daily_usage": 3}
        usage[who] = ok(c.post("/v1/usage-reports", json=report, headers=actors[who].headers))["id"]

    pledges = {}
    for who, qty in (("D1", 25), ("D2", 15)):
        body = {"item_id": items["N95"], "site_id": sites[who], "quantity": qty}
        pledges[who] = ok(c.post("/v1/pledges", json=body, headers=actors[who].headers))["id"]
        ok(c.post(f"/v1/pledges/{pledges[who]}/confirm", headers=lg.headers))
        body = {"item_id": items["GLOVES"], "site_id": sites[who], "quantity": 7}
        pledges[f"{who}-open"] = ok(c.post("/v1/pledges", json=body, headers=actors[who].headers))["id"]

    w = Coalition(c, engine, actors, sites, items, lots, requests, lines, pledges, usage, {}, 0, 0)
    w.site_xy = {sites[k]: xy[k] for k in sites}
    a_n95, a_gloves = lines["A"]
    b_n95, b_gloves = lines["B"]
    snap = _problem(
        w,
        [
            (f"lot-{lots['N95']}", "N95", 100, sites["depot"]),
            (f"lot-{lots['GLOVES']}", "GLOVES", 50, sites["depot"]),
            (f"pledge-{pledges['D1']}", "N95", 25, sites["D1"]),
            (f"pledge-{pledges['D2']}", "N95", 15, sites["D2"]),
        ],
        [
            (f"line-{a_n95}", "N95", 30, sites["A"], orgs["A"]),
            (f"line-{a_gloves}", "GLOVES", 10, sites["A"], orgs["A"]),
            (f"line-{b_n95}", "N95", 20, sites["B"], orgs["B"]),
            (f"line-{b_gloves}", "GLOVES", 5, sites["B"], orgs["B"]),
        ],
    )
    allocations = [
        (f"lot-{lots['N95']}", f"line-{a_n95}", 20),  # depot > A
        (f"lot-{lots['GLOVES']}", f"line-{b_gloves}", 5),  # depot > B
        (f"pledge-{pledges['D1']}", f"line-{b_n95}", 10),  # D1 > B
        (f"pledge-{pledges['D2']}", f"line-{a_n95}", 10),  # D2 > A
    ]
    w.approved_run = store_run(engine, snap, plan_dict(snap, allocations))
    plan = ok(approve(c, w.approved_run, lg.headers))
    origin_of = {v: k for k, v in sites.items()}
    for sid in plan["shipment_ids"]:
        s = ok(c.get(f"/v1/shipments/{sid}", headers=lg.headers))
        w.shipments[f"{origin_of[s['origin_site_id']]}>{origin_of[s['destination_site_id']]}"] = sid
    assert set(w.shipments) == {"depot>A", "depot>B", "D1>B", "D2>A"}
    # V1 drives depot>A and D1>B, V2 drives depot>B; D2>A has no driver yet.
    for label, driver in (("depot>A", "V1"), ("D1>B", "V1"), ("depot>B", "V2")):
        body = {"driver_key_id": actors[driver].key_id}
        ok(c.post(f"/v1/shipments/{w.shipments[label]}/assign", json=body, headers=lg.headers))
    ok(c.post(f"/v1/shipments/{w.shipments['depot>A']}/events", json={"status": "dispatched"}, headers=w.h("V1")))

    later = _problem(
        w,
        [(f"lot-{lots['N95']}", "N95", 80, sites["depot"])],
        [(f"line-{b_n95}", "N95", 10, sites["B"], orgs["B"])],
    )
    w.proposed_run = store_run(engine, later, plan_dict(later, [(f"lot-{lots['N95']}", f"line-{b_n95}", 10)]))
    return w


# ---------------------------------------------------------------- who owns what (from the rows)


def _rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql)).all()]


def ownership(engine: Engine) -> dict[str, dict[Any, Any]]:
    """Every object by kind, with what decides who may see it (raw columns, not the services)."""
    shipment_lines = _rows(
        engine,
        "SELECT sl.id, sl.shipment_id, p.organization_id FROM shipment_lines sl "
        "LEFT JOIN pledges p ON p.id = sl.pledge_id",
    )
    pledge_orgs: dict[int, set[int]] = {}
    for _, shipment_id, org in shipment_lines:
        pledge_orgs.setdefault(shipment_id, set()).update({org} if org is not None else set())
    return {
        "organization": {i: i for (i,) in _rows(engine, "SELECT id FROM organizations")},
        "site": dict(_rows(engine, "SELECT id, organization_id FROM sites")),
        "item": {i: None for (i,) in _rows(engine, "SELECT id FROM items")},
        "lot": {i: None for (i,) in _rows(engine, "SELECT id FROM inventory_lots")},
        "movement": {i: None for (i,) in _rows(engine, "SELECT id FROM inventory_movements")},
        "request": dict(_rows(engine, "SELECT id, organization_id FROM requests")),
        "request_line": {
            (r, ln): org
            for ln, r, org in _rows(
                engine,
                "SELECT l.id, l.request_id, r.organization_id FROM request_lines l "
                "JOIN requests r ON r.id = l.request_id",
            )
        },
        "pledge": dict(_rows(engine, "SELECT id, organization_id FROM pledges")),
        "usage_report": dict(_rows(engine, "SELECT id, organization_id FROM usage_reports")),
        "api_key": dict(_rows(engine, "SELECT id, organization_id FROM api_keys")),
        "run": {i: None for (i,) in _rows(engine, "SELECT id FROM allocation_runs")},
        "plan_line": {
            (run, ln): None
            for ln, run in _rows(engine, "SELECT pl.id, p.run_id FROM plan_lines pl JOIN plans p ON p.id = pl.plan_id")
        },
        "shipment": {
            sid: (dest, driver, frozenset(pledge_orgs.get(sid, set())), (origin, destination))
            for sid, dest, driver, origin, destination in _rows(
                engine,
                "SELECT id, destination_organization_id, driver_key_id, origin_site_id, destination_site_id "
                "FROM shipments",
            )
        },
        # FHIR SupplyDelivery ids are shipment line ids: (shipment, the donor whose pledge the line carries)
        "delivery_line": {ln: (sid, org) for ln, sid, org in shipment_lines},
        "export_kind": {k: None for k in ("organizations", "sites", "items", "inventory", "requests", "pledges")},
        "export_report": {k: None for k in ("gap", "days-of-supply", "request-ageing", "donor-impact")},
    }


def visible(actor: Actor, kind: str, key: Any, owners: dict[str, dict[Any, Any]]) -> bool:
    """SPEC §1 for an organisation-bound key, from the ownership columns alone."""
    org, role = actor.organization_id, actor.role
    shipments = owners["shipment"]

    def sees_shipment(sid: int) -> bool:
        dest, driver, pledge_orgs, _ = shipments[sid]
        return {"requester": dest == org, "donor": org in pledge_orgs, "driver": driver == actor.key_id}[role]

    if kind == "shipment":
        return sees_shipment(key)
    if kind == "delivery_line":
        sid, pledge_org = owners["delivery_line"][key]
        # a donor sees the lines carrying its own pledges; the others, the line's shipment
        return pledge_org == org if role == "donor" else sees_shipment(sid)
    if kind == "site" and role == "driver":
        return any(key in s[3] for s in shipments.values() if s[1] == actor.key_id)
    if kind in {"item", "lot", "movement", "run", "plan_line", "export_kind", "export_report"}:
        return True  # not owned by an organisation: the role decides (403), never the object
    return owners[kind][key] == org


def db_state(engine: Engine, skip: Iterable[str] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: a rejected call must change none of it."""
    out = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in skip:
                continue
            order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{table.name}" ORDER BY {order}'))]
    return out
