"""Donor impact: per donor organisation and item, what was pledged and where it went.

Units reach requesters two ways: straight from the donor's site (shipment lines drawn from the
pledge), or through a depot after the pledge was received (shipment lines drawn from the lot the
pledge was received into). A lot may also hold other receipts (same lot code and expiry), so a lot's
shipments are credited to each pledge in proportion to its share of everything received into the lot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.inventory.models import InventoryMovement
from app.pledges.models import Pledge
from app.reports.schemas import DonorImpactRow
from app.reports.service import Scope, items_by_id, organizations_by_id
from app.shipments.models import Shipment, ShipmentLine

MOVING = ("dispatched", "in_transit")


@dataclass
class _Flow:
    in_transit: float = 0.0
    delivered: float = 0.0
    destinations: set[int] = field(default_factory=set)

    def add(self, status: str, line: ShipmentLine, destination: int, share: float) -> None:
        if status in MOVING:
            self.in_transit += line.quantity * share
        elif status == "delivered":
            received = line.quantity if line.quantity_received is None else line.quantity_received
            self.delivered += received * share
            if received > 0 and share > 0:
                self.destinations.add(destination)


def _lines(session: Session, column: object, ids: Sequence[int]) -> list[tuple[ShipmentLine, Shipment]]:
    if not ids:
        return []
    stmt = (
        select(ShipmentLine, Shipment)
        .join(Shipment, col(Shipment.id) == col(ShipmentLine.shipment_id))
        .where(col(column).in_(list(ids)), col(Shipment.status).in_((*MOVING, "delivered")))
        .order_by(col(ShipmentLine.id))
    )
    return list(session.exec(stmt).all())


def _flows(session: Session, pledges: Sequence[Pledge]) -> dict[int, _Flow]:
    flows: dict[int, _Flow] = defaultdict(_Flow)
    for line, shipment in _lines(session, ShipmentLine.pledge_id, [p.id for p in pledges if p.id is not None]):
        flows[line.pledge_id or 0].add(shipment.status, line, shipment.destination_organization_id, 1.0)

    by_lot: dict[int, list[Pledge]] = defaultdict(list)
    for p in pledges:
        if p.received_lot_id is not None and p.received_quantity:
            by_lot[p.received_lot_id].append(p)
    if not by_lot:
        return flows
    receipts = dict(
        session.exec(
            select(InventoryMovement.lot_id, func.sum(InventoryMovement.quantity))
            .where(col(InventoryMovement.lot_id).in_(sorted(by_lot)), InventoryMovement.kind == "receive")
            .group_by(col(InventoryMovement.lot_id))
        ).all()
    )
    for line, shipment in _lines(session, ShipmentLine.lot_id, sorted(by_lot)):
        total = int(receipts.get(line.lot_id or 0, 0))
        for p in by_lot[line.lot_id or 0]:
            share = min(1.0, (p.received_quantity or 0) / total) if total > 0 else 0.0
            flows[p.id or 0].add(shipment.status, line, shipment.destination_organization_id, share)
    return flows


@dataclass
class _Totals:
    pledges: int = 0
    pledged: int = 0
    confirmed: int = 0
    committed: int = 0
    received: int = 0
    in_transit: float = 0.0
    delivered: float = 0.0
    destinations: set[int] = field(default_factory=set)


def donor_impact_report(session: Session, *, scope: Scope) -> list[DonorImpactRow]:
    """`pledged`: units on pledges not cancelled; `confirmed`: of those, confirmed by logistics (still
    confirmed or since received); `committed`: promised to approved plans; `received`: taken into a
    depot; `in_transit` / `delivered`: on shipments now moving / delivered to requesters (received
    quantities), directly or through the depot lot; `destinations`: organisations reached."""
    if scope.nothing:
        return []
    orgs = organizations_by_id(session)
    stmt = select(Pledge).where(Pledge.status != "cancelled").order_by(col(Pledge.id))
    if scope.organization_id is not None:
        stmt = stmt.where(Pledge.organization_id == scope.organization_id)
    if scope.item_id is not None:
        stmt = stmt.where(Pledge.item_id == scope.item_id)
    found = [p for p in session.exec(stmt).all() if scope.region_ok(orgs[p.organization_id].region)]
    flows = _flows(session, found)
    totals: dict[tuple[int, int], _Totals] = defaultdict(_Totals)
    for p in found:
        t = totals[(p.organization_id, p.item_id)]
        t.pledges += 1
        t.pledged += p.quantity
        t.confirmed += p.quantity if p.status in ("confirmed", "received") else 0
        t.committed += p.committed
        t.received += p.received_quantity or 0
        flow = flows.get(p.id or 0)
        if flow is not None:
            t.in_transit += flow.in_transit
            t.delivered += flow.delivered
            t.destinations |= flow.destinations
    items = items_by_id(session, (item_id for _, item_id in totals))
    rows = [
        DonorImpactRow(
            organization_id=org_id,
            organization_name=orgs[org_id].name,
            region=orgs[org_id].region,
            item_id=item_id,
            item_sku=items[item_id].sku,
            item_name=items[item_id].name,
            pledges=t.pledges,
            pledged=t.pledged,
            confirmed=t.confirmed,
            committed=t.committed,
            received=t.received,
            in_transit=round(t.in_transit),
            delivered=round(t.delivered),
            destinations=sorted(orgs[d].name for d in t.destinations if d in orgs),
        )
        for (org_id, item_id), t in totals.items()
    ]
    return sorted(rows, key=lambda r: (r.organization_name, r.item_sku, r.item_id))
