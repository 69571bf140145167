"""Shared helpers for the FHIR tests: a small world (actors, sites, an item), SupplyRequests built with
fhir.resources' R4B models, and parsers that insist on application/fhir+json."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.supplydelivery import SupplyDelivery
from fhir.resources.R4B.supplyrequest import SupplyRequest
from httpx import Response
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from app.allocation.models import AllocationRun, Plan, PlanLine
from app.db import transaction
from app.inventory.models import InventoryLot
from app.items.models import Item
from app.organizations.models import Organization
from app.pledges.models import Pledge
from app.shipments.models import Shipment, ShipmentEvent, ShipmentLine
from app.sites.models import Site
from tests.conftest import Actor
from tests.factories import Factory

SKU_SYSTEM = "https://crisis-supply.example/sku"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
NEEDED_BY = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
_seq = itertools.count(1)


def add(engine: Engine, row: SQLModel) -> Any:
    with transaction(engine) as session:
        session.add(row)
        session.flush()
        return row


def site(engine: Engine, organization_id: int | None, kind: str = "hospital_dock") -> Site:
    assert organization_id is not None
    return add(engine, Site(organization_id=organization_id, name=f"{kind}-{next(_seq)}", kind=kind, lat=40, lon=-74))


@dataclass
class World:
    requester: Actor
    other: Actor  # a requester of another organisation
    admin: Actor
    logistics: Actor
    donor: Actor
    driver: Actor
    dock: Site
    other_dock: Site
    item: Item


def make_world(factory: Factory, engine: Engine) -> World:
    requester, other = factory.actor("requester"), factory.actor("requester")
    return World(
        requester=requester,
        other=other,
        admin=factory.actor("admin"),
        logistics=factory.actor("logistics"),
        donor=factory.actor("donor"),
        driver=factory.actor("driver"),
        dock=site(engine, requester.organization_id),
        other_dock=site(engine, other.organization_id),
        item=add(engine, Item(sku=f"N95-{next(_seq)}", name="N95 respirator", category="ppe", unit="each")),
    )


def resource(w: World, **changes: Any) -> SupplyRequest:
    """A valid SupplyRequest for the world's requester, built with the R4B models."""
    fields: dict[str, Any] = {
        "status": "active",
        "priority": "urgent",
        "itemCodeableConcept": CodeableConcept(coding=[Coding(system=SKU_SYSTEM, code=w.item.sku)]),
        "quantity": Quantity(value=Decimal(250), unit="each"),
        "occurrenceDateTime": NEEDED_BY,
        "requester": Reference(reference=f"Organization/{w.requester.organization_id}"),
        "deliverTo": Reference(reference=f"Location/{w.dock.id}"),
        "reasonCode": [CodeableConcept(text="ICU surge")],
    }
    fields.update(changes)
    return SupplyRequest(**fields)


def post(client: TestClient, actor: Actor, body: SupplyRequest | dict[str, Any]) -> Response:
    content = body.model_dump_json() if isinstance(body, SupplyRequest) else json.dumps(body)
    return client.post("/fhir/R4/SupplyRequest", content=content, headers=FHIR_JSON | actor.headers)


def outcome(r: Response) -> OperationOutcome:
    assert r.headers["content-type"].startswith("application/fhir+json")
    return OperationOutcome.model_validate(r.json())


def expressions(r: Response) -> list[str]:
    return [e for issue in outcome(r).issue for e in (issue.expression or [])]


def bundle(r: Response) -> Bundle:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    parsed = Bundle.model_validate(r.json())
    assert parsed.type == "searchset"
    return parsed


def created(client: TestClient, w: World, **changes: Any) -> SupplyRequest:
    r = post(client, w.requester, resource(w, **changes))
    assert r.status_code == 201, r.text
    return SupplyRequest.model_validate(r.json())


def identifier(res: Any, suffix: str) -> str:
    return next(i.value for i in res.identifier if i.system.endswith("/" + suffix))


@dataclass
class Delivery:
    shipment: Shipment
    lot_line: ShipmentLine  # from a depot lot
    pledge_line: ShipmentLine  # from the donor's pledge
    depot_org: Organization
    request_line_id: int


def ship(client: TestClient, engine: Engine, w: World, **shipment: Any) -> Delivery:
    """A shipment of two lines to the requester, written as rows (plan approval is tested elsewhere)."""
    line_id = int(created(client, w).id)
    depot_org = add(engine, Organization(name=f"depot-{next(_seq)}", kind="depot_operator", region="north"))
    depot = site(engine, depot_org.id, kind="depot")
    donor_site = site(engine, w.donor.organization_id, kind="donor_site")
    lot = add(engine, InventoryLot(site_id=depot.id, item_id=w.item.id, on_hand=500))
    pledge = add(
        engine,
        Pledge(
            organization_id=w.donor.organization_id,
            item_id=w.item.id,
            site_id=donor_site.id,
            quantity=50,
            status="confirmed",
        ),
    )
    run = add(engine, AllocationRun(status="succeeded"))
    plan = add(engine, Plan(run_id=run.id, solver_status="optimal", state="approved"))
    common = {
        "plan_id": plan.id,
        "request_line_id": line_id,
        "item_id": w.item.id,
        "destination_site_id": w.dock.id,
        "distance_km": 5.0,
        "cost": 1.0,
    }
    from_lot = add(
        engine, PlanLine(source_ref=f"lot-{lot.id}", lot_id=lot.id, origin_site_id=depot.id, quantity=200, **common)
    )
    from_pledge = add(
        engine,
        PlanLine(
            source_ref=f"pledge-{pledge.id}", pledge_id=pledge.id, origin_site_id=donor_site.id, quantity=50, **common
        ),
    )
    values = {"status": "planned"} | shipment
    sh = add(
        engine,
        Shipment(
            plan_id=plan.id,
            origin_site_id=depot.id,
            destination_site_id=w.dock.id,
            destination_organization_id=w.requester.organization_id,
            **values,
        ),
    )
    lot_line = add(
        engine,
        ShipmentLine(
            shipment_id=sh.id,
            plan_line_id=from_lot.id,
            request_line_id=line_id,
            lot_id=lot.id,
            item_id=w.item.id,
            quantity=200,
        ),
    )
    pledge_line = add(
        engine,
        ShipmentLine(
            shipment_id=sh.id,
            plan_line_id=from_pledge.id,
            request_line_id=line_id,
            pledge_id=pledge.id,
            item_id=w.item.id,
            quantity=50,
        ),
    )
    add(engine, ShipmentEvent(shipment_id=sh.id, status="planned", at=datetime(2026, 11, 22, 8, tzinfo=UTC)))
    return Delivery(sh, lot_line, pledge_line, depot_org, line_id)


def delivery(client: TestClient, actor: Actor, line: ShipmentLine) -> SupplyDelivery:
    r = client.get(f"/fhir/R4/SupplyDelivery/{line.id}", headers=actor.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    return SupplyDelivery.model_validate(r.json())
