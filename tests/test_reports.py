"""Reports: hand-made coalitions with numbers worked out by hand, the CSV/XLSX shape, and who sees what."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import timedelta
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from app.allocation.models import AllocationRun, Plan, PlanLine
from app.db import transaction, utcnow
from app.inventory.models import InventoryLot, InventoryMovement
from app.items.models import Item
from app.organizations.models import Organization
from app.pledges.models import Pledge
from app.reports.schemas import AgeingRow, DaysOfSupplyRow, DonorImpactRow, GapRow, columns_of
from app.requests.models import RequestLine, SupplyRequest
from app.shipments.models import Shipment, ShipmentLine
from app.sites.models import Site
from app.usage.models import UsageReport
from tests.factories import Factory

_seq = itertools.count(1)


def add(engine: Engine, *rows: SQLModel) -> Any:
    with transaction(engine) as session:
        for row in rows:
            session.add(row)
            session.flush()
    return rows[0] if len(rows) == 1 else rows


class World:
    """Rows written directly: fast, and the figures below are exactly what was written."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def org(self, kind: str, region: str, name: str | None = None) -> Organization:
        return add(self.engine, Organization(name=name or f"{kind}-{next(_seq)}", kind=kind, region=region))

    def site(self, org: Organization, kind: str) -> Site:
        return add(self.engine, Site(organization_id=org.id, name=f"{kind}-{next(_seq)}", kind=kind, lat=40, lon=-74))

    def item(self, sku: str) -> Item:
        return add(self.engine, Item(sku=sku, name=f"{sku} name", category="ppe"))

    def lot(self, site: Site, item: Item, on_hand: int, reserved: int = 0, expired: bool = False) -> InventoryLot:
        expires = utcnow() + timedelta(days=-1 if expired else 30)
        return add(
            self.engine,
            InventoryLot(site_id=site.id, item_id=item.id, on_hand=on_hand, reserved=reserved, expires_at=expires),
        )

    def line(self, org: Organization, site: Site, item: Item, quantity: int, **kw: Any) -> RequestLine:
        age = kw.pop("age", timedelta(0))
        kw.setdefault("priority", "routine")
        request = add(
            self.engine, SupplyRequest(organization_id=org.id, site_id=site.id, status=kw.get("status", "open"))
        )
        return add(
            self.engine,
            RequestLine(request_id=request.id, item_id=item.id, quantity=quantity, created_at=utcnow() - age, **kw),
        )

    def pledge(self, org: Organization, site: Site, item: Item, quantity: int, **kw: Any) -> Pledge:
        return add(
            self.engine, Pledge(organization_id=org.id, site_id=site.id, item_id=item.id, quantity=quantity, **kw)
        )

    def usage(self, org: Organization, item: Item, on_hand: int, daily: float | None, age_days: float = 0) -> None:
        at = utcnow() - timedelta(days=age_days)
        add(
            self.engine,
            UsageReport(organization_id=org.id, item_id=item.id, on_hand=on_hand, daily_usage=daily, reported_at=at),
        )


def get(client: TestClient, path: str, actor: Any, **params: Any) -> Any:
    r = client.get(f"/v1/reports/{path}", params=params, headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def by(rows: list[dict[str, Any]], *keys: str) -> dict[Any, dict[str, Any]]:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


@pytest.fixture
def gap_world(engine: Engine) -> dict[str, Any]:
    w = World(engine)
    n95, gloves = w.item("N95"), w.item("GLOVES")
    north_op, south_op = w.org("depot_operator", "north"), w.org("depot_operator", "south")
    north_depot, south_depot = w.site(north_op, "depot"), w.site(south_op, "depot")
    w.lot(north_depot, n95, 100, reserved=30)  # available 70
    w.lot(north_depot, n95, 50, expired=True)  # expired: never supply
    w.lot(north_depot, gloves, 20)
    w.lot(south_depot, n95, 40)
    h1, h2, h3 = w.org("hospital", "north"), w.org("hospital", "south"), w.org("hospital", "north")
    h1_dock, h2_dock = w.site(h1, "hospital_dock"), w.site(h2, "hospital_dock")
    w.line(h1, h1_dock, n95, 200, quantity_reserved=20, quantity_in_transit=30, status="partially_allocated")
    w.line(h1, h1_dock, n95, 50, status="cancelled")
    w.line(h1, h1_dock, gloves, 10)
    w.line(h2, h2_dock, n95, 60)
    donor = w.org("donor", "north")
    donor_site = w.site(donor, "donor_site")
    w.pledge(donor, donor_site, n95, 50, committed=10, status="confirmed")  # 40 uncommitted
    w.pledge(donor, donor_site, n95, 100, status="pledged")  # not confirmed: not supply
    w.usage(h1, n95, 500, 1, age_days=3)  # superseded by the next report
    w.usage(h1, n95, 100, 20)
    w.usage(h3, n95, 50, 5)
    return {"n95": n95, "gloves": gloves, "h1": h1, "h2": h2, "h3": h3, "donor": donor}


def test_gap_by_region_and_coalition(client: TestClient, factory: Factory, gap_world: dict[str, Any]) -> None:
    logistics = factory.actor("logistics")
    rows = get(client, "gap", logistics)
    assert [(r["region"], r["item_sku"]) for r in rows] == [("north", "GLOVES"), ("north", "N95"), ("south", "N95")]
    cells = by(rows, "region", "item_sku")
    pick = ("requested", "available", "pledged", "in_transit", "days_of_supply", "gap", "surplus")
    assert [cells[("north", "N95")][k] for k in pick] == [150, 70, 40, 30, 6.0, 40, 0]
    assert [cells[("north", "GLOVES")][k] for k in pick] == [10, 20, 0, 0, None, 0, 10]
    assert [cells[("south", "N95")][k] for k in pick] == [60, 40, 0, 0, None, 20, 0]

    state = get(client, "gap", logistics, group_by="coalition")
    assert [(r["region"], r["item_sku"]) for r in state] == [(None, "GLOVES"), (None, "N95")]
    assert [by(state, "item_sku")["N95"][k] for k in pick] == [210, 110, 40, 30, 6.0, 60, 0]

    only = get(client, "gap", logistics, region="south", item_id=gap_world["n95"].id)
    assert [(r["region"], r["item_sku"], r["gap"]) for r in only] == [("south", "N95", 20)]


def test_requester_sees_only_its_own_organisation(
    client: TestClient, factory: Factory, gap_world: dict[str, Any]
) -> None:
    h1 = factory.actor("requester", organization_id=gap_world["h1"].id)
    rows = by(get(client, "gap", h1), "item_sku")
    assert set(rows) == {"N95", "GLOVES"}
    pick = ("region", "requested", "available", "pledged", "in_transit", "days_of_supply", "gap")
    assert [rows["N95"][k] for k in pick] == ["north", 150, 0, 0, 30, 5.0, 150]
    assert get(client, "gap", h1, organization_id=gap_world["h2"].id) == []
    dos = get(client, "days-of-supply", h1)
    assert [(r["organization_id"], r["item_sku"]) for r in dos] == [(gap_world["h1"].id, "N95")]
    ageing = get(client, "request-ageing", h1, group_by="organization")
    assert {r["organization_id"] for r in ageing} == {gap_world["h1"].id}


def test_days_of_supply_threshold(
    client: TestClient, factory: Factory, engine: Engine, gap_world: dict[str, Any]
) -> None:
    w = World(engine)
    w.usage(gap_world["h2"], gap_world["gloves"], 30, None)  # usage unknown: no days of supply, never flagged
    admin = factory.actor("admin")
    rows = get(client, "days-of-supply", admin)
    found = {(r["organization_id"], r["item_sku"]): (r["days_of_supply"], r["below_threshold"]) for r in rows}
    h1, h2, h3 = gap_world["h1"].id, gap_world["h2"].id, gap_world["h3"].id
    assert found == {(h1, "N95"): (5.0, True), (h3, "N95"): (10.0, False), (h2, "GLOVES"): (None, False)}
    assert by(rows, "organization_id")[h1]["on_hand"] == 100  # the latest report, not the older one

    raised = get(client, "days-of-supply", admin, threshold_days=12)
    assert {r["organization_id"] for r in raised if r["below_threshold"]} == {h1, h3}
    flagged = get(client, "days-of-supply", admin, below_threshold="true")
    assert [r["organization_id"] for r in flagged] == [h1]
    bad = client.get("/v1/reports/days-of-supply", params={"threshold_days": 0}, headers=admin.headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "threshold_days"


def test_request_ageing_buckets(client: TestClient, factory: Factory, engine: Engine) -> None:
    w = World(engine)
    item = w.item("N95")
    a, b = w.org("hospital", "north", name="A hospital"), w.org("food_hub", "south", name="B hub")
    a_dock, b_hub = w.site(a, "hospital_dock"), w.site(b, "food_hub")
    days = lambda d: timedelta(days=d)  # noqa: E731
    w.line(a, a_dock, item, 10, priority="critical", age=days(0.5))
    old = w.line(a, a_dock, item, 20, priority="critical", age=days(10))
    w.line(b, b_hub, item, 5, priority="critical", age=days(2))
    w.line(b, b_hub, item, 7, priority="routine", age=days(5), quantity_reserved=3, status="partially_allocated")
    w.line(
        b, b_hub, item, 9, priority="routine", age=days(20), quantity_reserved=9, status="allocated"
    )  # waits for nothing
    w.line(b, b_hub, item, 9, priority="high", age=days(20), status="cancelled")

    logistics = factory.actor("logistics")
    rows = get(client, "request-ageing", logistics)
    assert [r["priority"] for r in rows] == ["critical", "high", "routine"]
    crit, high, routine = rows
    buckets = ("open_lines", "remaining", "age_0_1d", "age_1_3d", "age_3_7d", "age_over_7d")
    assert [crit[k] for k in buckets] == [3, 35, 1, 1, 0, 1]
    assert (crit["oldest_line_id"], round(crit["oldest_age_days"])) == (old.id, 10)
    assert [high[k] for k in buckets] == [0, 0, 0, 0, 0, 0] and high["oldest_age_days"] is None
    assert [routine[k] for k in buckets] == [1, 4, 0, 0, 1, 0]

    per_org = get(client, "request-ageing", logistics, group_by="organization")
    assert [(r["organization_name"], r["priority"], r["open_lines"]) for r in per_org] == [
        ("A hospital", "critical", 2),
        ("B hub", "critical", 1),
        ("B hub", "routine", 1),
    ]
    south = get(client, "request-ageing", logistics, group_by="organization", region="south")
    assert {r["organization_name"] for r in south} == {"B hub"}


def _shipment(
    engine: Engine, origin: Site, dest: Site, org: Organization, status: str, lines: list[dict[str, Any]]
) -> None:
    run = add(engine, AllocationRun(status="succeeded"))
    plan = add(engine, Plan(run_id=run.id, solver_status="optimal", state="approved"))
    shipment = add(
        engine,
        Shipment(
            plan_id=plan.id,
            origin_site_id=origin.id,
            destination_site_id=dest.id,
            destination_organization_id=org.id,
            status=status,
        ),
    )
    for spec in lines:
        request_line = spec.pop("request_line")
        plan_line = add(
            engine,
            PlanLine(
                plan_id=plan.id,
                source_ref="x",
                request_line_id=request_line.id,
                item_id=request_line.item_id,
                origin_site_id=origin.id,
                destination_site_id=dest.id,
                quantity=spec["quantity"],
                distance_km=1,
                cost=1,
                lot_id=spec.get("lot_id"),
                pledge_id=spec.get("pledge_id"),
            ),
        )
        add(
            engine,
            ShipmentLine(
                shipment_id=shipment.id,
                plan_line_id=plan_line.id,
                request_line_id=request_line.id,
                item_id=request_line.item_id,
                **spec,
            ),
        )


@pytest.fixture
def donor_world(engine: Engine) -> dict[str, Any]:
    w = World(engine)
    n95, gloves = w.item("N95"), w.item("GLOVES")
    donor, other = w.org("donor", "north", name="Acme donor"), w.org("donor", "south", name="Zed donor")
    donor_site, other_site = w.site(donor, "donor_site"), w.site(other, "donor_site")
    depot = w.site(w.org("depot_operator", "north"), "depot")
    h1, h2 = w.org("hospital", "north", name="H1"), w.org("hospital", "south", name="H2")
    h1_dock, h2_dock = w.site(h1, "hospital_dock"), w.site(h2, "hospital_dock")
    need1, need2 = w.line(h1, h1_dock, n95, 500), w.line(h2, h2_dock, n95, 500)

    direct = w.pledge(donor, donor_site, n95, 100, committed=30, status="confirmed")
    lot = w.lot(depot, n95, 60)
    via_depot = w.pledge(donor, donor_site, n95, 80, status="received", received_lot_id=lot.id, received_quantity=80)
    add(
        engine,
        InventoryMovement(lot_id=lot.id, kind="receive", quantity=80, delta_on_hand=80),
        InventoryMovement(lot_id=lot.id, kind="receive", quantity=20, delta_on_hand=20),  # someone else's stock
    )
    w.pledge(donor, donor_site, n95, 999, status="cancelled")
    w.pledge(donor, donor_site, gloves, 10)
    w.pledge(other, other_site, n95, 5, status="confirmed")

    _shipment(
        engine,
        donor_site,
        h1_dock,
        h1,
        "delivered",
        [
            {
                "request_line": need1,
                "pledge_id": direct.id,
                "quantity": 30,
                "quantity_received": 25,
                "shortfall_reason": "damaged",
            }
        ],
    )
    _shipment(
        engine,
        depot,
        h2_dock,
        h2,
        "delivered",
        [{"request_line": need2, "lot_id": lot.id, "quantity": 50, "quantity_received": 50}],
    )
    _shipment(engine, depot, h1_dock, h1, "dispatched", [{"request_line": need1, "lot_id": lot.id, "quantity": 10}])
    _shipment(engine, depot, h1_dock, h1, "cancelled", [{"request_line": need1, "lot_id": lot.id, "quantity": 7}])
    return {"donor": donor, "other": other, "via_depot": via_depot}


def test_donor_impact(client: TestClient, factory: Factory, donor_world: dict[str, Any]) -> None:
    logistics = factory.actor("logistics")
    rows = get(client, "donor-impact", logistics)
    assert [(r["organization_name"], r["item_sku"]) for r in rows] == [
        ("Acme donor", "GLOVES"),
        ("Acme donor", "N95"),
        ("Zed donor", "N95"),
    ]
    n95 = by(rows, "organization_name", "item_sku")[("Acme donor", "N95")]
    pick = ("pledges", "pledged", "confirmed", "committed", "received", "in_transit", "delivered", "destinations")
    # delivered: 25 straight from the donor + 80% (its share of the lot's receipts) of 50 via the depot
    assert [n95[k] for k in pick] == [2, 180, 180, 30, 80, 8, 65, ["H1", "H2"]]
    gloves = by(rows, "organization_name", "item_sku")[("Acme donor", "GLOVES")]
    assert [gloves[k] for k in pick] == [1, 10, 0, 0, 0, 0, 0, []]

    donor = factory.actor("donor", organization_id=donor_world["donor"].id)
    mine = get(client, "donor-impact", donor)
    assert {r["organization_name"] for r in mine} == {"Acme donor"}
    assert get(client, "donor-impact", donor, organization_id=donor_world["other"].id) == []

    text = client.get("/v1/reports/donor-impact", params={"format": "csv"}, headers=donor.headers).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["destinations"] for r in table] == ["", "H1; H2"]


def test_csv_and_xlsx_carry_the_json_rows(client: TestClient, factory: Factory, gap_world: dict[str, Any]) -> None:
    admin = factory.actor("admin")
    rows = get(client, "gap", admin)
    r = client.get("/v1/reports/gap", params={"format": "csv"}, headers=admin.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "gap-report.csv" in r.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == columns_of(GapRow)
    assert len(table) == len(rows) + 1
    north = dict(zip(table[0], table[2], strict=True))
    assert (north["region"], north["item_sku"], north["gap"], north["days_of_supply"]) == ("north", "N95", "40", "6.0")
    assert dict(zip(table[0], table[1], strict=True))["days_of_supply"] == ""  # null → empty cell

    by_accept = client.get("/v1/reports/gap", headers=admin.headers | {"Accept": "text/csv"})
    assert by_accept.text == r.text

    x = client.get("/v1/reports/days-of-supply", params={"format": "xlsx"}, headers=admin.headers)
    assert x.status_code == 200 and x.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = openpyxl.load_workbook(io.BytesIO(x.content), read_only=True).active
    values = list(sheet.iter_rows(values_only=True))
    assert list(values[0]) == columns_of(DaysOfSupplyRow) and len(values) == 3
    for path, row_type in (("request-ageing", AgeingRow), ("donor-impact", DonorImpactRow)):
        header = client.get(f"/v1/reports/{path}", params={"format": "csv"}, headers=admin.headers).text.splitlines()[0]
        assert header.split(",") == columns_of(row_type)


def test_roles(client: TestClient, factory: Factory) -> None:
    paths = ("gap", "days-of-supply", "request-ageing", "donor-impact")
    allowed = {
        "admin": set(paths),
        "logistics": set(paths),
        "requester": {"gap", "days-of-supply", "request-ageing"},
        "donor": {"donor-impact"},
        "driver": set(),
    }
    for role, ok in allowed.items():
        actor = factory.actor(role)
        for path in paths:
            status = client.get(f"/v1/reports/{path}", headers=actor.headers).status_code
            assert status == (200 if path in ok else 403), (role, path, status)
    assert client.get("/v1/reports/gap").status_code == 401
