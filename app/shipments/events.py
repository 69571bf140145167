"""Shipment status events (SPEC §2 transitions) and what each does to stock, pledges and requests.

- dispatched (planned →): lot lines ship out of the depot through the ledger (on_hand −, reserved −);
  pledge lines leave the donor's site (no depot stock moves); request lines: reserved → in transit.
- in_transit: position only.
- delivered: quantity received per line (default: as shipped; ≤ shipped; a shortfall needs a reason);
  request lines: in transit → delivered for what arrived, the shortfall returns to remaining.
- failed: request lines' in-transit quantity returns to remaining (the goods are on their way back).
- returned (failed →): lot lines' units are on hand again at their origin lot (ledger `return`);
  pledge lines' units are back with the donor (uncommitted).
- cancelled (planned →, logistics only): reservations released, pledge units uncommitted, request
  lines' reserved quantity returns to remaining.

Lock order: the shipment, then lots (ascending id), pledges (ascending id), requests, request lines,
and the change-feed counter last.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, Forbidden, Unprocessable
from app.inventory import service as inventory
from app.pledges import service as pledges
from app.principal import Principal
from app.shipments import feed, fulfilment
from app.shipments import service as shipments
from app.shipments.fulfilment import LineDelta
from app.shipments.models import TRANSITIONS, Shipment, ShipmentEventCreate, ShipmentLine


def _deltas(lines: Sequence[ShipmentLine], per_line: dict[int, LineDelta]) -> dict[int, LineDelta]:
    """Per request line (a request line may appear on several shipment lines)."""
    out: dict[int, LineDelta] = {}
    for line in lines:
        d = per_line[line.id or 0]
        acc = out.setdefault(line.request_line_id, LineDelta())
        acc.reserved += d.reserved
        acc.in_transit += d.in_transit
        acc.delivered += d.delivered
    return out


def _by_lot(lines: Sequence[ShipmentLine]) -> list[ShipmentLine]:
    return sorted((line for line in lines if line.lot_id is not None), key=lambda line: (line.lot_id, line.id))


def _by_pledge(lines: Sequence[ShipmentLine]) -> list[ShipmentLine]:
    return sorted((line for line in lines if line.pledge_id is not None), key=lambda line: (line.pledge_id, line.id))


def _dispatch(session: Session, actor: Principal, lines: Sequence[ShipmentLine], ref: str) -> None:
    for line in _by_lot(lines):
        inventory.ship(session, actor=actor, lot_id=line.lot_id, quantity=line.quantity, reference=ref)  # type: ignore[arg-type]
    per_line = {line.id or 0: LineDelta(reserved=-line.quantity, in_transit=line.quantity) for line in lines}
    fulfilment.apply(session, actor=actor, deltas=_deltas(lines, per_line), action="request.dispatch")


def _cancel(session: Session, actor: Principal, lines: Sequence[ShipmentLine], ref: str) -> None:
    for line in _by_lot(lines):
        inventory.release(session, actor=actor, lot_id=line.lot_id, quantity=line.quantity, reference=ref)  # type: ignore[arg-type]
    for line in _by_pledge(lines):
        pledges.uncommit(session, actor=actor, pledge_id=line.pledge_id, quantity=line.quantity, reference=ref)  # type: ignore[arg-type]
    per_line = {line.id or 0: LineDelta(reserved=-line.quantity) for line in lines}
    fulfilment.apply(session, actor=actor, deltas=_deltas(lines, per_line), action="request.release")


def _fail(session: Session, actor: Principal, lines: Sequence[ShipmentLine], ref: str) -> None:
    per_line = {line.id or 0: LineDelta(in_transit=-line.quantity) for line in lines}
    fulfilment.apply(session, actor=actor, deltas=_deltas(lines, per_line), action="request.shipment_failed")


def _return(session: Session, actor: Principal, lines: Sequence[ShipmentLine], ref: str) -> None:
    for line in _by_lot(lines):
        inventory.return_stock(
            session,
            actor=actor,
            lot_id=line.lot_id,  # type: ignore[arg-type]
            quantity=line.quantity,
            reference=ref,
            reason="failed shipment returned to its origin",
        )
    for line in _by_pledge(lines):
        pledges.uncommit(session, actor=actor, pledge_id=line.pledge_id, quantity=line.quantity, reference=ref)  # type: ignore[arg-type]


def _receipts(shipment: Shipment, lines: Sequence[ShipmentLine], data: ShipmentEventCreate) -> dict[int, int]:
    """Validated quantity received per shipment line; records shortfall reasons on the lines."""
    by_id = {line.id: line for line in lines}
    received = {line.id or 0: line.quantity for line in lines}
    reasons: dict[int, str | None] = {line.id or 0: None for line in lines}
    seen: set[int] = set()
    for i, receipt in enumerate(data.lines or []):
        line = by_id.get(receipt.line_id)
        if line is None:
            raise Unprocessable(f"line {receipt.line_id} is not on shipment {shipment.id}", field=f"lines[{i}].line_id")
        if receipt.line_id in seen:
            raise Unprocessable(f"line {receipt.line_id} is listed twice", field=f"lines[{i}].line_id")
        seen.add(receipt.line_id)
        if receipt.quantity_received > line.quantity:
            raise Unprocessable(
                f"only {line.quantity} units were shipped on line {line.id}", field=f"lines[{i}].quantity_received"
            )
        short = line.quantity - receipt.quantity_received
        if short > 0 and receipt.shortfall_reason is None:
            raise Unprocessable(
                f"{short} units short: give a reason (damaged, lost or refused)", field=f"lines[{i}].shortfall_reason"
            )
        if short == 0 and receipt.shortfall_reason is not None:
            raise Unprocessable(
                "everything arrived; there is no shortfall to explain", field=f"lines[{i}].shortfall_reason"
            )
        received[receipt.line_id] = receipt.quantity_received
        reasons[receipt.line_id] = receipt.shortfall_reason
    for line in lines:
        line.quantity_received = received[line.id or 0]
        line.shortfall_reason = reasons[line.id or 0]
    return received


def _deliver(session: Session, actor: Principal, lines: Sequence[ShipmentLine], received: dict[int, int]) -> None:
    session.add_all(lines)
    per_line = {line.id or 0: LineDelta(in_transit=-line.quantity, delivered=received[line.id or 0]) for line in lines}
    fulfilment.apply(session, actor=actor, deltas=_deltas(lines, per_line), action="request.deliver")


def report_event(
    session: Session,
    *,
    actor: Principal,
    shipment_id: int,
    data: ShipmentEventCreate,
    precondition: shipments.Precondition = None,
) -> Shipment:
    shipment = shipments.lock_shipment(session, principal=actor, shipment_id=shipment_id)
    if precondition is not None:
        precondition(shipment)
    new, old = data.status, shipment.status
    if new == "cancelled" and actor.role == "driver":
        raise Forbidden("only logistics may cancel a shipment")
    if new not in TRANSITIONS.get(old, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(old, frozenset()))) or "none (final)"
        raise Conflict(f"shipment {shipment_id} is {old}; it cannot become {new} (allowed: {allowed})", field="status")
    if new != "delivered":
        if data.lines is not None:
            raise Unprocessable("received quantities go with status delivered only", field="lines")
        if data.received_by is not None:
            raise Unprocessable("received_by goes with status delivered only", field="received_by")
    if (data.lat is None) != (data.lon is None):
        raise Unprocessable("give both lat and lon, or neither", field="lon" if data.lon is None else "lat")
    lines = shipments.lines_of(session, [shipment_id])[shipment_id]
    before = shipments.snapshot(shipment, lines)
    ref = f"shipment:{shipment_id}"
    if new == "dispatched":
        _dispatch(session, actor, lines, ref)
    elif new == "cancelled":
        _cancel(session, actor, lines, ref)
    elif new == "failed":
        _fail(session, actor, lines, ref)
    elif new == "returned":
        _return(session, actor, lines, ref)
    elif new == "delivered":
        _deliver(session, actor, lines, _receipts(shipment, lines, data))
        shipment.received_by = data.received_by
    shipment.status = new
    shipments.touch(shipment)
    session.add(shipment)
    shipments.add_event(
        session,
        actor=actor,
        shipment=shipment,
        status=new,
        note=data.note,
        at=data.at or utcnow(),
        lat=data.lat,
        lon=data.lon,
    )
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"shipment.{new}",
        obj=shipment,
        before=before,
        after=shipments.snapshot(shipment, lines),
    )
    feed.stamp(session, [shipment])
    return shipment
