from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlmodel import Session

from app.deps import Allow, IfMatch, ListDep, SecuredRoute, SessionDep, check_if_match, etag_for
from app.pagination import PageOut
from app.pledges import service
from app.pledges.models import Pledge, PledgeCreate, PledgePublic, PledgeReceive, PledgeStatus
from app.principal import Principal

router = APIRouter(prefix="/v1/pledges", tags=["pledges"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics", "donor")]
Donor = Annotated[Principal, Allow("donor")]
Logistics = Annotated[Principal, Allow("logistics")]
Canceller = Annotated[Principal, Allow("logistics", "donor")]


def _out(pledge: Pledge, response: Response) -> PledgePublic:
    out = PledgePublic.model_validate(pledge, from_attributes=True)
    response.headers["ETag"] = etag_for(out.version)
    return out


def _check_current(session: Session, principal: Principal, pledge_id: int, if_match: str | None) -> None:
    """404 for a pledge the caller cannot see comes before 412, so a stale ETag never reveals a foreign id."""
    current = service.get_pledge(session, principal=principal, pledge_id=pledge_id)
    check_if_match(if_match, etag_for(current.version))


@router.get("", response_model=PageOut[PledgePublic])
def list_pledges(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    organization_id: int | None = None,
    item_id: int | None = None,
    site_id: int | None = None,
    status: PledgeStatus | None = None,
    region: Annotated[str | None, Query(max_length=100, description="Region of the donor organisation")] = None,
) -> PageOut[PledgePublic]:
    result = service.list_pledges(
        session,
        principal=principal,
        limit=page.limit,
        cursor=page.cursor,
        organization_id=organization_id,
        item_id=item_id,
        site_id=site_id,
        status=status,
        region=region,
    )
    return PageOut(
        items=[PledgePublic.model_validate(p, from_attributes=True) for p in result.items],
        next_cursor=result.next_cursor,
    )


@router.post("", status_code=201, response_model=PledgePublic)
def create_pledge(session: SessionDep, principal: Donor, body: PledgeCreate, response: Response) -> PledgePublic:
    pledge = service.create_pledge(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/pledges/{pledge.id}"
    return _out(pledge, response)


@router.get("/{pledge_id}", response_model=PledgePublic)
def get_pledge(session: SessionDep, principal: Reader, pledge_id: int, response: Response) -> PledgePublic:
    return _out(service.get_pledge(session, principal=principal, pledge_id=pledge_id), response)


@router.post("/{pledge_id}/confirm", response_model=PledgePublic)
def confirm_pledge(
    session: SessionDep, principal: Logistics, pledge_id: int, response: Response, if_match: IfMatch = None
) -> PledgePublic:
    _check_current(session, principal, pledge_id, if_match)
    return _out(service.confirm(session, actor=principal, pledge_id=pledge_id), response)


@router.post("/{pledge_id}/receive", response_model=PledgePublic)
def receive_pledge(
    session: SessionDep,
    principal: Logistics,
    pledge_id: int,
    body: PledgeReceive,
    response: Response,
    if_match: IfMatch = None,
) -> PledgePublic:
    """Receive the uncommitted units into a depot; the new lot's id is `received_lot_id`."""
    _check_current(session, principal, pledge_id, if_match)
    return _out(service.receive(session, actor=principal, pledge_id=pledge_id, data=body), response)


@router.post("/{pledge_id}/cancel", response_model=PledgePublic)
def cancel_pledge(
    session: SessionDep, principal: Canceller, pledge_id: int, response: Response, if_match: IfMatch = None
) -> PledgePublic:
    _check_current(session, principal, pledge_id, if_match)
    return _out(service.cancel(session, actor=principal, pledge_id=pledge_id), response)
