from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.deps import Allow, IfMatch, IfMatchRequired, ListDep, SecuredRoute, SessionDep, check_if_match, etag_for
from app.pagination import PageOut
from app.principal import Principal
from app.sites import service
from app.sites.models import SiteCreate, SiteKind, SitePublic, SiteUpdate

router = APIRouter(prefix="/v1/sites", tags=["sites"], route_class=SecuredRoute)

# Requester and donor see their own organisation's sites, a driver those on shipments assigned to it.
Reader = Annotated[Principal, Allow("admin", "logistics", "requester", "donor", "driver")]
Writer = Annotated[Principal, Allow("admin", "logistics")]


def _out(site: object, response: Response) -> SitePublic:
    out = SitePublic.model_validate(site, from_attributes=True)
    response.headers["ETag"] = etag_for(out.version)
    return out


@router.get("", response_model=PageOut[SitePublic])
def list_sites(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    organization_id: int | None = None,
    kind: SiteKind | None = None,
    region: Annotated[str | None, Query(max_length=100, description="The owning organisation's region")] = None,
    active: bool | None = None,
) -> PageOut[SitePublic]:
    result = service.list_sites(
        session,
        principal=principal,
        limit=page.limit,
        cursor=page.cursor,
        organization_id=organization_id,
        kind=kind,
        region=region,
        active=active,
    )
    return PageOut(
        items=[SitePublic.model_validate(s, from_attributes=True) for s in result.items],
        next_cursor=result.next_cursor,
    )


@router.post("", status_code=201, response_model=SitePublic)
def create_site(session: SessionDep, principal: Writer, body: SiteCreate, response: Response) -> SitePublic:
    """The owning organisation must be an active member."""
    site = service.create_site(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/sites/{site.id}"
    return _out(site, response)


@router.get("/{site_id}", response_model=SitePublic)
def get_site(session: SessionDep, principal: Reader, site_id: int, response: Response) -> SitePublic:
    return _out(service.get_site(session, principal=principal, site_id=site_id), response)


@router.patch("/{site_id}", response_model=SitePublic)
def update_site(
    session: SessionDep,
    principal: Writer,
    site_id: int,
    body: SiteUpdate,
    response: Response,
    if_match: IfMatchRequired = None,
) -> SitePublic:
    current = service.get_site(session, principal=principal, site_id=site_id)
    check_if_match(if_match, etag_for(current.version), required=True)
    return _out(service.update_site(session, actor=principal, site_id=site_id, data=body), response)


@router.post("/{site_id}/deactivate", response_model=SitePublic)
def deactivate_site(
    session: SessionDep, principal: Writer, site_id: int, response: Response, if_match: IfMatch = None
) -> SitePublic:
    """Never deletes: the site keeps its history; new lots, requests and pledges may no longer name it."""
    current = service.get_site(session, principal=principal, site_id=site_id)
    check_if_match(if_match, etag_for(current.version))
    return _out(service.set_active(session, actor=principal, site_id=site_id, active=False), response)


@router.post("/{site_id}/activate", response_model=SitePublic)
def activate_site(
    session: SessionDep, principal: Writer, site_id: int, response: Response, if_match: IfMatch = None
) -> SitePublic:
    """Undo a deactivation; 409 while the owning organisation has left the coalition."""
    current = service.get_site(session, principal=principal, site_id=site_id)
    check_if_match(if_match, etag_for(current.version))
    return _out(service.set_active(session, actor=principal, site_id=site_id, active=True), response)
