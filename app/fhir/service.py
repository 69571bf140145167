"""Reads and writes behind the FHIR facade. Writes go through `app.requests.service` (so every rule
and the audit trail of /v1 apply); reads are read-only queries with the same visibility as /v1.

SupplyRequest = one request line (its request gives requester, delivery site and authoredOn).
SupplyDelivery = one shipment line (SupplyDelivery.suppliedItem holds one item, a shipment many).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.errors import NotFound, Unprocessable
from app.fhir.mapping import DeliveryView, RequestInput, RequestLineView
from app.fhir.outcome import FhirError, Issue
from app.items import service as items
from app.items.models import Item
from app.organizations.models import Organization
from app.pagination import decode_cursor, encode_cursor
from app.pledges.models import Pledge
from app.principal import Principal
from app.requests import service as requests
from app.requests.models import RequestCreate, RequestLine, RequestLineCreate
from app.requests.models import SupplyRequest as RequestRow
from app.shipments.models import Shipment, ShipmentEvent, ShipmentLine
from app.sites.models import Site

T = TypeVar("T")
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns

# Field names of the requests service → the SupplyRequest element they came from.
REQUEST_FIELDS = {
    "site_id": "SupplyRequest.deliverTo",
    "organization_id": "SupplyRequest.requester",
    "lines[0].item_id": "SupplyRequest.itemCodeableConcept",
    "lines[0].needed_by": "SupplyRequest.occurrenceDateTime",
    "lines[0].quantity": "SupplyRequest.quantity.value",
    "justification": "SupplyRequest.reasonCode",
}


@dataclass(frozen=True)
class SearchPage(Generic[T]):
    items: list[T]
    total: int
    next_cursor: str | None


def _by_id(session: Session, model: Any, ids: Iterable[int]) -> dict[int, Any]:
    wanted = set(ids)
    if not wanted:
        return {}
    return {row.id: row for row in session.exec(select(model).where(col(model.id).in_(wanted))).all()}


def _after(cursor: str) -> int:
    """The last id of the previous page; a tampered cursor is a bad search parameter (400)."""
    try:
        after = decode_cursor(cursor)
    except Unprocessable:
        after = -1
    if not 0 <= after <= MAX_ID:
        raise FhirError(400, [Issue("not a cursor this server issued; follow the Bundle's next link", "_cursor")])
    return after


def _page(
    session: Session, stmt: Any, id_column: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], int, str | None]:
    """Keyset page over `stmt` (rows are tuples whose first element has the id) plus the total count."""
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    if cursor:
        stmt = stmt.where(id_column > _after(cursor))
    rows = list(session.exec(stmt.order_by(id_column).limit(limit + 1)).all())
    next_cursor = encode_cursor(rows[limit - 1][0].id) if len(rows) > limit else None
    return rows[:limit], total, next_cursor


# --------------------------------------------------------------------------- SupplyRequest


def _request_line_views(session: Session, pairs: Sequence[tuple[RequestLine, RequestRow]]) -> list[RequestLineView]:
    item_map = _by_id(session, Item, (line.item_id for line, _ in pairs))
    org_map = _by_id(session, Organization, (request.organization_id for _, request in pairs))
    site_map = _by_id(session, Site, (request.site_id for _, request in pairs))
    return [
        RequestLineView(
            line=line,
            request=request,
            item=item_map[line.item_id],
            organization=org_map[request.organization_id],
            site=site_map[request.site_id],
        )
        for line, request in pairs
    ]


def get_supply_request(session: Session, *, principal: Principal, line_id: int) -> RequestLineView:
    line = session.get(RequestLine, line_id)
    if line is None:
        raise NotFound(f"SupplyRequest/{line_id} not found")
    try:
        request = requests.get_request(session, principal=principal, request_id=line.request_id)
    except NotFound:  # another organisation's line: exactly like a missing one
        raise NotFound(f"SupplyRequest/{line_id} not found") from None
    return _request_line_views(session, [(line, request)])[0]


def search_supply_requests(
    session: Session,
    *,
    principal: Principal,
    line_statuses: set[str] | None,
    organization_id: int | None,
    limit: int,
    cursor: str | None,
) -> SearchPage[RequestLineView]:
    stmt = select(RequestLine, RequestRow).join(RequestRow, col(RequestRow.id) == col(RequestLine.request_id))
    if principal.org_bound:  # as requests.service: org-bound callers see their organisation's requests only
        stmt = stmt.where(RequestRow.organization_id == principal.organization_id)
    if line_statuses is not None:
        stmt = stmt.where(col(RequestLine.status).in_(line_statuses or {""}))
    if organization_id is not None:
        stmt = stmt.where(RequestRow.organization_id == organization_id)
    rows, total, next_cursor = _page(session, stmt, col(RequestLine.id), limit=limit, cursor=cursor)
    return SearchPage(_request_line_views(session, rows), total, next_cursor)


def create_supply_request(session: Session, *, actor: Principal, data: RequestInput) -> RequestLineView:
    """A request with one line, through the requests service (rules, audit); errors name FHIR elements."""
    item = items.get_by_sku(session, data.sku)
    if item is None:
        raise FhirError(422, [Issue(f"unknown SKU '{data.sku}'", data.sku_expression)])
    if data.unit is not None and data.unit.casefold() != item.unit.casefold():
        raise FhirError(
            422, [Issue(f"{item.sku} is counted in '{item.unit}', not '{data.unit}'", "SupplyRequest.quantity.unit")]
        )
    body = RequestCreate(
        site_id=data.site_id,
        justification=data.justification,
        organization_id=data.organization_id,
        lines=[
            RequestLineCreate(
                item_id=item.id or 0, quantity=data.quantity, priority=data.priority, needed_by=data.needed_by
            )
        ],
    )
    try:
        request = requests.create_request(session, actor=actor, data=body)
    except Unprocessable as exc:
        raise FhirError(422, [Issue(exc.detail, REQUEST_FIELDS.get(exc.field or "", "SupplyRequest"))]) from exc
    (line,) = requests.lines_of(session, request)
    return _request_line_views(session, [(line, request)])[0]


# --------------------------------------------------------------------------- SupplyDelivery


def _visible_delivery_lines(principal: Principal) -> Any:
    """Shipment lines the caller may see, with their shipment. Same rules as app.shipments.service,
    per line: a donor sees the lines carrying its own pledges, not other donors' lines on the truck."""
    stmt = select(ShipmentLine, Shipment).join(Shipment, col(Shipment.id) == col(ShipmentLine.shipment_id))
    if principal.role == "driver":
        return stmt.where(Shipment.driver_key_id == principal.key_id)
    if principal.role == "requester":
        return stmt.where(Shipment.destination_organization_id == principal.organization_id)
    if principal.role == "donor":
        own_pledges = select(Pledge.id).where(Pledge.organization_id == principal.organization_id)
        return stmt.where(col(ShipmentLine.pledge_id).in_(own_pledges))
    if principal.org_bound:  # an org-bound role not listed above sees nothing
        return stmt.where(col(Shipment.id).is_(None))
    return stmt


def _last_event_times(session: Session, shipment_ids: Iterable[int]) -> dict[int, datetime]:
    ids = set(shipment_ids)
    if not ids:
        return {}
    stmt = (
        select(ShipmentEvent.shipment_id, func.max(ShipmentEvent.at))
        .where(col(ShipmentEvent.shipment_id).in_(ids))
        .group_by(col(ShipmentEvent.shipment_id))
    )
    return {shipment_id: at for shipment_id, at in session.exec(stmt).all()}


def _delivery_views(session: Session, pairs: Sequence[tuple[ShipmentLine, Shipment]]) -> list[DeliveryView]:
    item_map = _by_id(session, Item, (line.item_id for line, _ in pairs))
    site_map = _by_id(
        session, Site, [s for _, shipment in pairs for s in (shipment.origin_site_id, shipment.destination_site_id)]
    )
    org_ids = [site_map[shipment.origin_site_id].organization_id for _, shipment in pairs]
    org_map = _by_id(session, Organization, org_ids + [shipment.destination_organization_id for _, shipment in pairs])
    events = _last_event_times(session, (shipment.id for _, shipment in pairs if shipment.id is not None))
    views = []
    for line, shipment in pairs:
        origin = site_map[shipment.origin_site_id]
        occurred_at = events.get(shipment.id or 0) or shipment.updated_at
        views.append(
            DeliveryView(
                line=line,
                shipment=shipment,
                item=item_map[line.item_id],
                origin=origin,
                supplier=org_map[origin.organization_id],
                destination=site_map[shipment.destination_site_id],
                receiver=org_map[shipment.destination_organization_id],
                occurred_at=_aware(occurred_at),
            )
        )
    return views


def _aware(value: Any) -> datetime:
    """Aggregates bypass the column type on SQLite (a naive or string UTC value comes back)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def get_supply_delivery(session: Session, *, principal: Principal, line_id: int) -> DeliveryView:
    row = session.exec(_visible_delivery_lines(principal).where(ShipmentLine.id == line_id)).first()
    if row is None:
        raise NotFound(f"SupplyDelivery/{line_id} not found")
    return _delivery_views(session, [row])[0]


def search_supply_deliveries(
    session: Session,
    *,
    principal: Principal,
    shipment_statuses: set[str] | None,
    receiver_organization_id: int | None,
    limit: int,
    cursor: str | None,
) -> SearchPage[DeliveryView]:
    stmt = _visible_delivery_lines(principal)
    if shipment_statuses is not None:
        stmt = stmt.where(col(Shipment.status).in_(shipment_statuses or {""}))
    if receiver_organization_id is not None:
        stmt = stmt.where(Shipment.destination_organization_id == receiver_organization_id)
    rows, total, next_cursor = _page(session, stmt, col(ShipmentLine.id), limit=limit, cursor=cursor)
    return SearchPage(_delivery_views(session, rows), total, next_cursor)
