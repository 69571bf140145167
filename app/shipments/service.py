"""Shipments: reads with per-role visibility, driver assignment, creation from an approved plan.

Visibility (SPEC §1): admin and logistics see every shipment; a driver those assigned to its key; a
requester those delivered to its organisation; a donor those carrying lines from its pledges. Anything
else is 404, exactly like a missing id. Status changes live in `app.shipments.events`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.keys.models import ApiKey
from app.pagination import Page, paginate
from app.pledges.models import Pledge
from app.principal import Principal
from app.shipments import feed
from app.shipments.models import (
    Shipment,
    ShipmentEvent,
    ShipmentLine,
    ShipmentLinePublic,
    ShipmentPublic,
)

# Called with the locked shipment before a write: the router's If-Match check, race-free under the lock.
Precondition = Callable[[Shipment], None] | None
TERMINAL = frozenset({"delivered", "returned", "cancelled"})


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    origin_site_id: int | None = None
    destination_site_id: int | None = None
    driver_key_id: int | None = None
    plan_id: int | None = None

    def apply(self, stmt: Any) -> Any:
        for column, value in (
            (Shipment.status, self.status),
            (Shipment.origin_site_id, self.origin_site_id),
            (Shipment.destination_site_id, self.destination_site_id),
            (Shipment.driver_key_id, self.driver_key_id),
            (Shipment.plan_id, self.plan_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        return stmt


def _visible(principal: Principal) -> Any:
    stmt = select(Shipment)
    if principal.role == "driver":
        return stmt.where(Shipment.driver_key_id == principal.key_id)
    if principal.role == "requester":
        return stmt.where(Shipment.destination_organization_id == principal.organization_id)
    if principal.role == "donor":
        from_own_pledges = (
            select(ShipmentLine.shipment_id)
            .join(Pledge, col(Pledge.id) == col(ShipmentLine.pledge_id))
            .where(Pledge.organization_id == principal.organization_id)
        )
        return stmt.where(col(Shipment.id).in_(from_own_pledges))
    if principal.org_bound:  # a role this module does not know sees nothing
        return stmt.where(col(Shipment.id).is_(None))
    return stmt


def get_shipment(session: Session, *, principal: Principal, shipment_id: int) -> Shipment:
    shipment = session.exec(_visible(principal).where(Shipment.id == shipment_id)).first()
    if shipment is None:
        raise NotFound(f"shipment {shipment_id} not found")
    return shipment


def lock_shipment(session: Session, *, principal: Principal, shipment_id: int) -> Shipment:
    """The shipment row, locked for this transaction and freshly read, or 404 when not visible."""
    stmt = _visible(principal).where(Shipment.id == shipment_id).with_for_update()
    shipment = session.exec(stmt.execution_options(populate_existing=True)).first()
    if shipment is None:
        raise NotFound(f"shipment {shipment_id} not found")
    return shipment


def lines_of(session: Session, shipment_ids: Iterable[int]) -> dict[int, list[ShipmentLine]]:
    ids = list(shipment_ids)
    out: dict[int, list[ShipmentLine]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = select(ShipmentLine).where(col(ShipmentLine.shipment_id).in_(ids)).order_by(col(ShipmentLine.id))
    for line in session.exec(stmt).all():
        out[line.shipment_id].append(line)
    return out


def to_public(shipment: Shipment, lines: Sequence[ShipmentLine]) -> ShipmentPublic:
    data = shipment.model_dump()
    return ShipmentPublic(
        **data, lines=[ShipmentLinePublic.model_validate(line, from_attributes=True) for line in lines]
    )


def publish(session: Session, shipments: Sequence[Shipment]) -> list[ShipmentPublic]:
    """Shipments with their lines, loaded in one query."""
    lines = lines_of(session, [s.id for s in shipments if s.id is not None])
    return [to_public(s, lines.get(s.id or 0, [])) for s in shipments]


def list_shipments(
    session: Session, *, principal: Principal, limit: int, cursor: str | None, filters: Filters
) -> Page[Shipment]:
    return paginate(session, filters.apply(_visible(principal)), Shipment.id, limit=limit, cursor=cursor)


def changed_since(
    session: Session, *, principal: Principal, after: int, limit: int, filters: Filters
) -> list[Shipment]:
    """Visible shipments whose last change is after feed position `after`, in change order; one row
    more than `limit` so the caller knows whether more are waiting."""
    stmt = filters.apply(_visible(principal)).where(Shipment.change_seq > after)
    return list(session.exec(stmt.order_by(col(Shipment.change_seq)).limit(limit + 1)).all())


def list_events(
    session: Session, *, principal: Principal, shipment_id: int, limit: int, cursor: str | None
) -> Page[ShipmentEvent]:
    get_shipment(session, principal=principal, shipment_id=shipment_id)
    stmt = select(ShipmentEvent).where(ShipmentEvent.shipment_id == shipment_id)
    return paginate(session, stmt, ShipmentEvent.id, limit=limit, cursor=cursor)


def driver_site_ids(session: Session, *, driver_key_id: int | None) -> set[int]:
    """Origins and destinations of the shipments assigned to a driver key (what a driver may read)."""
    if driver_key_id is None:
        return set()
    rows = session.exec(
        select(Shipment.origin_site_id, Shipment.destination_site_id).where(Shipment.driver_key_id == driver_key_id)
    ).all()
    return {site for pair in rows for site in pair}


def snapshot(shipment: Shipment, lines: Sequence[ShipmentLine]) -> dict[str, Any]:
    return audit.snapshot(shipment) | {"lines": [audit.snapshot(line) for line in lines]}


def add_event(
    session: Session, *, actor: Principal, shipment: Shipment, status: str, note: str | None, **where: Any
) -> ShipmentEvent:
    event = ShipmentEvent(shipment_id=shipment.id, status=status, note=note, actor_key_id=actor.key_id, **where)
    session.add(event)
    return event


def touch(shipment: Shipment) -> None:
    shipment.version += 1
    shipment.updated_at = utcnow()


def _driver_key(session: Session, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.role != "driver":
        raise Unprocessable(f"API key {key_id} is not a driver key", field="driver_key_id")
    if key.revoked_at is not None:
        raise Unprocessable(f"API key {key_id} is revoked", field="driver_key_id")
    return key


def assign_driver(
    session: Session,
    *,
    actor: Principal,
    shipment_id: int,
    driver_key_id: int | None,
    precondition: Precondition = None,
) -> Shipment:
    shipment = lock_shipment(session, principal=actor, shipment_id=shipment_id)
    if precondition is not None:
        precondition(shipment)
    if shipment.status in TERMINAL:
        raise Conflict(f"shipment {shipment_id} is {shipment.status}; its driver can no longer change")
    if driver_key_id is not None:
        _driver_key(session, driver_key_id)
    if shipment.driver_key_id == driver_key_id:
        return shipment
    lines = lines_of(session, [shipment_id])[shipment_id]
    before = snapshot(shipment, lines)
    shipment.driver_key_id = driver_key_id
    touch(shipment)
    session.add(shipment)
    note = f"driver assigned: key {driver_key_id}" if driver_key_id is not None else "driver unassigned"
    add_event(session, actor=actor, shipment=shipment, status=shipment.status, note=note)
    session.flush()
    audit.record(
        session, actor=actor, action="shipment.assign", obj=shipment, before=before, after=snapshot(shipment, lines)
    )
    feed.stamp(session, [shipment])
    return shipment


@dataclass(frozen=True)
class PlannedLine:
    """One plan line to ship: where from, where to, what, how much."""

    plan_line_id: int
    request_line_id: int
    lot_id: int | None
    pledge_id: int | None
    item_id: int
    quantity: int
    origin_site_id: int
    destination_site_id: int
    destination_organization_id: int


def create_for_plan(
    session: Session, *, actor: Principal, plan_id: int, lines: Sequence[PlannedLine]
) -> list[tuple[Shipment, list[ShipmentLine]]]:
    """One planned shipment per (origin, destination) with one line per plan line. The caller
    stamps the feed as the last write of its transaction."""
    groups: dict[tuple[int, int, int], list[PlannedLine]] = defaultdict(list)
    for line in lines:
        groups[(line.origin_site_id, line.destination_site_id, line.destination_organization_id)].append(line)
    created: list[tuple[Shipment, list[ShipmentLine]]] = []
    for origin, destination, organization in sorted(groups):
        shipment = Shipment(
            plan_id=plan_id,
            origin_site_id=origin,
            destination_site_id=destination,
            destination_organization_id=organization,
        )
        session.add(shipment)
        created.append((shipment, []))
    session.flush()
    for (shipment, out), members in zip(created, [groups[k] for k in sorted(groups)], strict=True):
        for m in members:
            line = ShipmentLine(
                shipment_id=shipment.id,
                plan_line_id=m.plan_line_id,
                request_line_id=m.request_line_id,
                lot_id=m.lot_id,
                pledge_id=m.pledge_id,
                item_id=m.item_id,
                quantity=m.quantity,
            )
            session.add(line)
            out.append(line)
        add_event(
            session, actor=actor, shipment=shipment, status="planned", note=f"created by approval of plan {plan_id}"
        )
    session.flush()
    for shipment, out in created:
        audit.record(
            session, actor=actor, action="shipment.create", obj=shipment, before=None, after=snapshot(shipment, out)
        )
    return created
