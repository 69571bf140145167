"""/v1/shipments: reads for every role (each sees its own), status events, driver assignment and the
change feed mobile clients poll (`updated_since`, optional long-poll `wait`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.deps import Allow, IfMatch, ListDep, SecuredRoute, SessionDep, check_if_match, etag_for, etag_matches
from app.errors import Unprocessable
from app.pagination import PageOut
from app.principal import Principal
from app.shipments import events, feed, service
from app.shipments.models import (
    DriverAssignment,
    Shipment,
    ShipmentEventCreate,
    ShipmentEventPublic,
    ShipmentFeedOut,
    ShipmentPublic,
    ShipmentStatus,
)

router = APIRouter(prefix="/v1/shipments", tags=["shipments"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics", "requester", "donor", "driver")]
Reporter = Annotated[Principal, Allow("logistics", "driver")]
Logistics = Annotated[Principal, Allow("logistics")]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]


def _if_match(if_match: str | None) -> Callable[[Shipment], None]:
    return lambda shipment: check_if_match(if_match, etag_for(shipment.version))


def _out(session: SessionDep, shipment: Shipment, response: Response) -> ShipmentPublic:
    response.headers["ETag"] = etag_for(shipment.version)
    return service.publish(session, [shipment])[0]


@router.get("", response_model=ShipmentFeedOut | PageOut[ShipmentPublic])
async def list_shipments(
    request: Request,
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    status: ShipmentStatus | None = None,
    origin_site_id: int | None = None,
    destination_site_id: int | None = None,
    driver_key_id: int | None = None,
    plan_id: int | None = None,
    updated_since: Annotated[
        str | None,
        Query(max_length=200, description="Change feed: a next_cursor from an earlier feed read, or 0 to start"),
    ] = None,
    wait: Annotated[
        float, Query(ge=0, le=feed.MAX_WAIT_S, description="Long-poll seconds (with updated_since) when nothing new")
    ] = 0,
) -> ShipmentFeedOut | PageOut[ShipmentPublic]:
    """Without `updated_since`: a page in id order. With it: the change feed — shipments you can see
    that changed after the cursor, oldest change first; `next_cursor` is where to continue (the same
    cursor when nothing changed). `wait` holds the request until something changes (≤ 30 s)."""
    filters = service.Filters(
        status=status,
        origin_site_id=origin_site_id,
        destination_site_id=destination_site_id,
        driver_key_id=driver_key_id,
        plan_id=plan_id,
    )
    if updated_since is None:
        if wait:
            raise Unprocessable("wait goes with updated_since (the change feed)", field="wait")

        def read_page() -> PageOut[ShipmentPublic]:
            result = service.list_shipments(
                session, principal=principal, limit=page.limit, cursor=page.cursor, filters=filters
            )
            return PageOut(items=service.publish(session, result.items), next_cursor=result.next_cursor)

        return await run_in_threadpool(read_page)

    if page.cursor is not None:
        raise Unprocessable("use updated_since alone to page through the change feed", field="cursor")
    after = feed.decode_cursor(updated_since)
    # The authentication transaction ends here: waiting must never hold one (SQLite: it blocks writers).
    await run_in_threadpool(session.commit)

    def read(s: Session) -> list[ShipmentPublic]:
        rows = service.changed_since(s, principal=principal, after=after, limit=page.limit, filters=filters)
        return service.publish(s, rows)

    found = await feed.poll(request.app.state.engine, read, after=after, wait_s=wait)
    items, has_more = found[: page.limit], len(found) > page.limit
    next_cursor = feed.encode_cursor(items[-1].change_seq) if items else updated_since
    return ShipmentFeedOut(items=items, next_cursor=next_cursor, has_more=has_more)


@router.get("/{shipment_id}", response_model=ShipmentPublic)
def get_shipment(
    session: SessionDep,
    principal: Reader,
    shipment_id: int,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> ShipmentPublic | Response:
    shipment = service.get_shipment(session, principal=principal, shipment_id=shipment_id)
    etag = etag_for(shipment.version)
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return _out(session, shipment, response)


@router.get("/{shipment_id}/events", response_model=PageOut[ShipmentEventPublic])
def list_events(
    session: SessionDep, principal: Reader, shipment_id: int, page: ListDep
) -> PageOut[ShipmentEventPublic]:
    result = service.list_events(
        session, principal=principal, shipment_id=shipment_id, limit=page.limit, cursor=page.cursor
    )
    return PageOut(
        items=[ShipmentEventPublic.model_validate(e, from_attributes=True) for e in result.items],
        next_cursor=result.next_cursor,
    )


@router.post("/{shipment_id}/events", status_code=201, response_model=ShipmentPublic)
def report_event(
    session: SessionDep,
    principal: Reporter,
    shipment_id: int,
    body: ShipmentEventCreate,
    response: Response,
    if_match: IfMatch = None,
) -> ShipmentPublic:
    """A status change by the assigned driver or logistics (SPEC §2 transitions; others → 409)."""
    shipment = events.report_event(
        session, actor=principal, shipment_id=shipment_id, data=body, precondition=_if_match(if_match)
    )
    response.headers["Location"] = f"/v1/shipments/{shipment_id}/events"
    return _out(session, shipment, response)


@router.post("/{shipment_id}/assign", response_model=ShipmentPublic)
def assign_driver(
    session: SessionDep,
    principal: Logistics,
    shipment_id: int,
    body: DriverAssignment,
    response: Response,
    if_match: IfMatch = None,
) -> ShipmentPublic:
    shipment = service.assign_driver(
        session,
        actor=principal,
        shipment_id=shipment_id,
        driver_key_id=body.driver_key_id,
        precondition=_if_match(if_match),
    )
    return _out(session, shipment, response)
