"""FHIR SupplyDelivery over shipment lines: mapping, status, visibility per role, search."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.supplydelivery import SupplyDelivery
from sqlalchemy.engine import Engine

from app.db import transaction
from app.shipments.models import Shipment, ShipmentEvent, ShipmentLine
from tests.conftest import Actor
from tests.factories import Factory
from tests.fhir_support import (
    World,
    bundle,
    delivery,
    identifier,
    make_world,
    outcome,
    ship,
)


@pytest.fixture
def w(factory: Factory, engine: Engine) -> World:
    return make_world(factory, engine)


def test_supply_delivery_maps_a_shipment_line(client: TestClient, engine: Engine, w: World) -> None:
    d = ship(client, engine, w)
    res = delivery(client, w.logistics, d.lot_line)
    assert res.status == "in-progress"
    assert [ref.reference for ref in res.basedOn] == [f"SupplyRequest/{d.request_line_id}"]
    assert res.suppliedItem.quantity.value == 200
    assert res.suppliedItem.itemCodeableConcept.coding[0].code == w.item.sku
    assert res.supplier.reference == f"Organization/{d.depot_org.id}"
    assert res.destination.reference == f"Location/{w.dock.id}"
    assert res.receiver[0].identifier.value == str(w.requester.organization_id)
    assert res.occurrenceDateTime == datetime(2026, 11, 22, 8, tzinfo=UTC)
    assert identifier(res, "shipment") == str(d.shipment.id)

    # Delivered short: the received quantity, the time of the delivery event and who signed.
    with transaction(engine) as s:
        sh = s.get(Shipment, d.shipment.id)
        line = s.get(ShipmentLine, d.lot_line.id)
        assert sh is not None and line is not None
        sh.status, sh.received_by, sh.version = "delivered", "J. Ortiz", 2
        line.quantity_received, line.shortfall_reason = 180, "damaged"
        s.add(ShipmentEvent(shipment_id=sh.id, status="delivered", at=datetime(2026, 11, 22, 15, tzinfo=UTC)))
    res = delivery(client, w.requester, d.lot_line)
    assert res.status == "completed" and res.suppliedItem.quantity.value == 180
    assert res.occurrenceDateTime == datetime(2026, 11, 22, 15, tzinfo=UTC)
    assert res.receiver[0].display == "J. Ortiz"
    assert res.meta.versionId == "2"


def test_undelivered_shipments_are_abandoned(client: TestClient, engine: Engine, w: World) -> None:
    for status in ("failed", "returned", "cancelled"):
        d = ship(client, engine, w, status=status)
        assert delivery(client, w.admin, d.pledge_line).status == "abandoned", status


def test_supply_delivery_visibility_and_search(client: TestClient, engine: Engine, w: World, factory: Factory) -> None:
    d = ship(client, engine, w, driver_key_id=w.driver.key_id)
    other_driver = factory.actor("driver")
    other_donor = factory.actor("donor")
    both = sorted([str(d.lot_line.id), str(d.pledge_line.id)])

    def ids(actor: Actor, **params: str) -> list[str]:
        found = bundle(client.get("/fhir/R4/SupplyDelivery", params=params, headers=actor.headers))
        assert found.total == len(found.entry or [])
        return sorted(SupplyDelivery.model_validate(e.resource.model_dump()).id for e in found.entry or [])

    assert ids(w.admin) == both and ids(w.requester) == both and ids(w.driver) == both
    assert ids(w.donor) == [str(d.pledge_line.id)]  # only the line carrying its own pledge
    assert ids(w.other) == [] and ids(other_driver) == [] and ids(other_donor) == []
    for actor, line in [(w.other, d.lot_line), (other_driver, d.lot_line), (w.donor, d.lot_line)]:
        r = client.get(f"/fhir/R4/SupplyDelivery/{line.id}", headers=actor.headers)
        assert r.status_code == 404 and outcome(r).issue[0].code == "not-found"
    delivery(client, w.donor, d.pledge_line)

    assert ids(w.logistics, status="in-progress") == both
    assert ids(w.logistics, status="completed,abandoned") == []
    assert ids(w.logistics, receiver=f"Organization/{w.requester.organization_id}") == both
    assert ids(w.logistics, receiver=str(w.other.organization_id)) == []
    with transaction(engine) as s:
        sh = s.get(Shipment, d.shipment.id)
        assert sh is not None
        sh.status = "delivered"
    assert ids(w.requester, status="completed") == both
