from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.deps import Allow, IfMatchRequired, ListDep, SecuredRoute, SessionDep, check_if_match, etag_for
from app.organizations import service
from app.organizations.models import (
    EquityWeightUpdate,
    OrganizationCreate,
    OrganizationKind,
    OrganizationPublic,
    OrganizationUpdate,
)
from app.pagination import PageOut
from app.principal import Principal

router = APIRouter(prefix="/v1/organizations", tags=["organizations"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics", "requester", "donor")]
Admin = Annotated[Principal, Allow("admin")]
WeightSetter = Annotated[Principal, Allow("admin", "logistics")]


def _out(org: object, response: Response) -> OrganizationPublic:
    out = OrganizationPublic.model_validate(org, from_attributes=True)
    response.headers["ETag"] = etag_for(out.version)
    return out


@router.get("", response_model=PageOut[OrganizationPublic])
def list_organizations(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    kind: OrganizationKind | None = None,
    region: Annotated[str | None, Query(max_length=100)] = None,
    active: bool | None = None,
) -> PageOut[OrganizationPublic]:
    result = service.list_organizations(
        session, principal=principal, limit=page.limit, cursor=page.cursor, kind=kind, region=region, active=active
    )
    return PageOut(
        items=[OrganizationPublic.model_validate(o, from_attributes=True) for o in result.items],
        next_cursor=result.next_cursor,
    )


@router.post("", status_code=201, response_model=OrganizationPublic)
def create_organization(
    session: SessionDep, principal: Admin, body: OrganizationCreate, response: Response
) -> OrganizationPublic:
    org = service.create_organization(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/organizations/{org.id}"
    return _out(org, response)


@router.get("/{organization_id}", response_model=OrganizationPublic)
def get_organization(
    session: SessionDep, principal: Reader, organization_id: int, response: Response
) -> OrganizationPublic:
    return _out(service.get_organization(session, principal=principal, organization_id=organization_id), response)


@router.patch("/{organization_id}", response_model=OrganizationPublic)
def update_organization(
    session: SessionDep,
    principal: Admin,
    organization_id: int,
    body: OrganizationUpdate,
    response: Response,
    if_match: IfMatchRequired = None,
) -> OrganizationPublic:
    current = service.get_organization(session, principal=principal, organization_id=organization_id)
    check_if_match(if_match, etag_for(current.version), required=True)
    org = service.update_organization(session, actor=principal, organization_id=organization_id, data=body)
    return _out(org, response)


@router.put("/{organization_id}/equity-weight", response_model=OrganizationPublic)
def set_equity_weight(
    session: SessionDep, principal: WeightSetter, organization_id: int, body: EquityWeightUpdate, response: Response
) -> OrganizationPublic:
    org = service.set_equity_weight(
        session, actor=principal, organization_id=organization_id, weight=body.equity_weight
    )
    return _out(org, response)


@router.post("/{organization_id}/leave", response_model=OrganizationPublic)
def leave(session: SessionDep, principal: Admin, organization_id: int, response: Response) -> OrganizationPublic:
    """Deactivate: the organisation's history stays; it stops posting requests or pledges."""
    return _out(
        service.set_membership(session, actor=principal, organization_id=organization_id, active=False), response
    )


@router.post("/{organization_id}/join", response_model=OrganizationPublic)
def join(session: SessionDep, principal: Admin, organization_id: int, response: Response) -> OrganizationPublic:
    return _out(
        service.set_membership(session, actor=principal, organization_id=organization_id, active=True), response
    )
