"""The small plan world shared by the plan, shipment, precondition and ledger tests: a hand-built
snapshot stored through `plans_service.create_plan` (what the worker calls), stock through the ledger."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import select

from app.allocation import plans_service
from app.allocation.models import AllocationRun
from app.db import transaction, utcnow
from app.inventory import service as inventory
from app.inventory.models import InventoryLot, InventoryMovement
from app.items.models import Item, ItemSubstitute
from app.pledges.models import Pledge
from app.principal import SYSTEM, Principal
from app.requests.models import RequestLine, SupplyRequest
from app.sites.models import Site
from optimizer.explain import build_plan
from optimizer.io import format_time, load_problem, plan_to_dict
from optimizer.model import SolverStats
from optimizer.network import build_arcs
from tests.factories import Factory

LOGISTICS = Principal(key_id=None, name="test-logistics", role="logistics", organization_id=None)
_seq = itertools.count(1)


# ---------------------------------------------------------------- a small coalition


@dataclass
class World:
    engine: Engine
    depot: Site
    donor_site: Site
    site_a: Site
    site_b: Site
    org_a: int
    org_b: int
    donor_org: int
    n95: Item
    kn95: Item
    gloves: Item
    lot_n: int  # 100 N95 at the depot
    lot_k: int  # 50 KN95 at the depot (KN95 may fill N95 at penalty 0.3)
    pledge: int  # 40 N95 confirmed, at the donor's site
    a1: int  # org A: 80 N95 critical
    a2: int  # org A: 30 N95 routine (same request as a1)
    b1: int  # org B: 60 N95 high
    g1: int  # org A: 10 gloves (nobody has gloves)
    request_a: int
    request_b: int


def build_world(engine: Engine, factory: Factory) -> World:
    operator = factory.org(kind="depot_operator", region="north")
    org_a = factory.org(kind="hospital", region="north")
    org_b = factory.org(kind="hospital", region="south")
    donor = factory.org(kind="donor", region="north")
    n = next(_seq)
    with transaction(engine) as s:
        depot = Site(organization_id=operator.id, name=f"depot-{n}", kind="depot", lat=40.70, lon=-74.00)
        donor_site = Site(organization_id=donor.id, name=f"=donor-{n}", kind="donor_site", lat=40.75, lon=-73.90)
        site_a = Site(organization_id=org_a.id, name=f"dock-a-{n}", kind="hospital_dock", lat=40.80, lon=-73.95)
        site_b = Site(organization_id=org_b.id, name=f"dock-b-{n}", kind="hospital_dock", lat=40.60, lon=-74.10)
        n95 = Item(sku=f"N95-{n}", name="N95 respirator", category="ppe")
        kn95 = Item(sku=f"KN95-{n}", name="KN95 respirator", category="ppe")
        gloves = Item(sku=f"GLOVES-{n}", name="Nitrile gloves", category="ppe")
        s.add_all([depot, donor_site, site_a, site_b, n95, kn95, gloves])
        s.flush()
        s.add(ItemSubstitute(item_id=n95.id, substitute_item_id=kn95.id, penalty=0.3))
        lot_n, _ = inventory.receive(s, actor=SYSTEM, site_id=depot.id, item_id=n95.id, quantity=100, lot_code="N-1")
        lot_k, _ = inventory.receive(s, actor=SYSTEM, site_id=depot.id, item_id=kn95.id, quantity=50, lot_code="K-1")
        pledge = Pledge(
            organization_id=donor.id, site_id=donor_site.id, item_id=n95.id, quantity=40, status="confirmed"
        )
        request_a = SupplyRequest(organization_id=org_a.id, site_id=site_a.id)
        request_b = SupplyRequest(organization_id=org_b.id, site_id=site_b.id)
        s.add_all([pledge, request_a, request_b])
        s.flush()
        a1 = RequestLine(request_id=request_a.id, item_id=n95.id, quantity=80, priority="critical")
        a2 = RequestLine(request_id=request_a.id, item_id=n95.id, quantity=30, priority="routine")
        g1 = RequestLine(request_id=request_a.id, item_id=gloves.id, quantity=10, priority="routine")
        b1 = RequestLine(request_id=request_b.id, item_id=n95.id, quantity=60, priority="high")
        s.add_all([a1, a2, g1, b1])
        s.flush()
        return World(
            engine, depot, donor_site, site_a, site_b, org_a.id, org_b.id, donor.id, n95, kn95, gloves,
            lot_n.id, lot_k.id, pledge.id, a1.id, a2.id, b1.id, g1.id, request_a.id, request_b.id,
        )  # fmt: skip


def snapshot(w: World) -> dict[str, Any]:
    """Problem JSON v1 for the world as it is now (written here, independently of the service's snapshot)."""
    now = utcnow()

    def where(site: Site) -> dict[str, float]:
        return {"lat": site.lat, "lon": site.lon}

    with transaction(w.engine) as s:
        lots = [s.get(InventoryLot, i) for i in (w.lot_n, w.lot_k)]
        pledge = s.get(Pledge, w.pledge)
        lines = {i: s.get(RequestLine, i) for i in (w.a1, w.a2, w.b1, w.g1)}
    sku = {w.n95.id: w.n95.sku, w.kn95.id: w.kn95.sku, w.gloves.id: w.gloves.sku}
    sources = [
        {"id": f"lot-{lot.id}", "item": sku[lot.item_id], "quantity": lot.on_hand - lot.reserved, **where(w.depot)}
        for lot in lots
        if lot is not None
    ]
    if pledge is not None and pledge.status == "confirmed":
        free = pledge.quantity - pledge.committed
        sources.append({"id": f"pledge-{pledge.id}", "item": w.n95.sku, "quantity": free, **where(w.donor_site)})
    site_of = {w.a1: w.site_a, w.a2: w.site_a, w.g1: w.site_a, w.b1: w.site_b}
    org_of = {w.a1: w.org_a, w.a2: w.org_a, w.g1: w.org_a, w.b1: w.org_b}
    demands = [
        {
            "id": f"line-{i}",
            "requester": f"org-{org_of[i]}",
            "item": sku[line.item_id],
            "quantity": line.remaining,
            "priority": line.priority,
            **where(site_of[i]),
        }
        for i, line in lines.items()
        if line is not None and line.remaining > 0 and line.status != "cancelled"
    ]
    return {
        "version": 1,
        "now": format_time(now),
        "settings": {"speed_kmh": 50, "cost_per_unit_km": 0.01},
        "items": [
            {"sku": w.n95.sku, "substitutes": [{"sku": w.kn95.sku, "penalty": 0.3}]},
            {"sku": w.kn95.sku, "substitutes": []},
            {"sku": w.gloves.sku, "substitutes": []},
        ],
        "sources": sources,
        "demands": demands,
    }


def plan_dict(snap: dict[str, Any], allocations: list[tuple[str, str, int]]) -> dict[str, Any]:
    """A Plan JSON for chosen (source, demand, quantity) allocations, reported by the optimizer's explain."""
    problem = load_problem(snap)
    arcs = build_arcs(problem)
    src = {s.id: i for i, s in enumerate(problem.sources)}
    dem = {d.id: i for i, d in enumerate(problem.demands)}
    flow = np.zeros(arcs.n, dtype=np.int64)
    for source, demand, qty in allocations:
        k = np.flatnonzero((arcs.source == src[source]) & (arcs.demand == dem[demand]))
        flow[int(k[0])] += qty
    return plan_to_dict(build_plan(problem, arcs, flow, status="optimal", stats=SolverStats(wall_s=0.01)))


def store_run(
    engine: Engine,
    snap: dict[str, Any],
    plan: dict[str, Any] | None,
    *,
    regions: list[str] | None = None,
    created_at: datetime | None = None,
    baseline: dict[str, Any] | None = None,
) -> int:
    """A succeeded run with its snapshot, and its plan stored the way the worker stores it."""
    with transaction(engine) as s:
        run = AllocationRun(
            status="succeeded" if plan is not None else "running",
            scope_regions=regions or [],
            problem=snap,
            created_at=created_at or utcnow(),
        )
        s.add(run)
        s.flush()
        if plan is not None:
            plans_service.create_plan(s, run=run, plan=plan, baseline_kpis=baseline)
        return run.id or 0


def the_plan(w: World) -> dict[str, Any]:
    """lot-N: 80 → a1, 20 → b1; lot-K: 30 → b1 (b1 gets 50 of 60); pledge: 30 → a2."""
    snap = snapshot(w)
    return plan_dict(
        snap,
        [
            (f"lot-{w.lot_n}", f"line-{w.a1}", 80),
            (f"lot-{w.lot_n}", f"line-{w.b1}", 20),
            (f"lot-{w.lot_k}", f"line-{w.b1}", 30),
            (f"pledge-{w.pledge}", f"line-{w.a2}", 30),
        ],
    )


def line_id(plan: dict[str, Any], source: str, request_line: int) -> int:
    return next(x["id"] for x in plan["lines"] if x["source"] == source and x["request_line_id"] == request_line)


def demand(plan: dict[str, Any], request_line: int) -> dict[str, Any]:
    return next(d for d in plan["demands"] if d["request_line_id"] == request_line)


def url(run_id: int, tail: str = "") -> str:
    return f"/v1/allocation-runs/{run_id}/plan{tail}"


def approve(client: TestClient, run_id: int, headers: dict[str, str]) -> Any:
    """POST …/plan/approve with the If-Match of a fresh read (approval requires it)."""
    etag = client.get(url(run_id), headers=headers).headers.get("ETag", '"none"')
    return client.post(url(run_id, "/approve"), headers=headers | {"If-Match": etag})


def errors_field(r: Any) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.json()["errors"][0]["field"]


def counter(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT value FROM change_counters WHERE name = 'shipments'")).scalar_one())


# ---------------------------------------------------------------- review


def movements(engine: Engine, kind: str) -> list[InventoryMovement]:
    with transaction(engine) as s:
        return list(s.exec(select(InventoryMovement).where(InventoryMovement.kind == kind)).all())
