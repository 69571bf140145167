"""/v1/requests: headers with their lines inside. The ETag is the request's version, which every
change to the header or any of its lines bumps; If-Match on a line write is checked against it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from app.deps import (
    Allow,
    IfMatch,
    IfMatchRequired,
    ListDep,
    SecuredRoute,
    SessionDep,
    check_if_match,
    etag_for,
    etag_matches,
)
from app.models_common import Timestamp
from app.pagination import PageOut
from app.principal import Principal
from app.requests import service
from app.requests.models import (
    LineStatus,
    Priority,
    RequestCreate,
    RequestLine,
    RequestLinePublic,
    RequestLineUpdate,
    RequestPublic,
    RequestUpdate,
    SupplyRequest,
)

router = APIRouter(prefix="/v1/requests", tags=["requests"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics", "requester")]
Requester = Annotated[Principal, Allow("requester")]
Canceller = Annotated[Principal, Allow("logistics", "requester")]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]


def to_public(request: SupplyRequest, lines: Sequence[RequestLine]) -> RequestPublic:
    return RequestPublic(
        id=request.id,  # type: ignore[arg-type]
        organization_id=request.organization_id,
        site_id=request.site_id,
        justification=request.justification,
        status=request.status,
        version=request.version,
        lines=[RequestLinePublic.model_validate(line, from_attributes=True) for line in lines],
        created_at=request.created_at,
        updated_at=request.updated_at,
    )


def _out(session: SessionDep, request: SupplyRequest, response: Response) -> RequestPublic:
    response.headers["ETag"] = etag_for(request.version)
    return to_public(request, service.lines_of(session, request))


def _if_match(if_match: str | None, *, required: bool = False) -> Callable[[SupplyRequest], None]:
    return lambda request: check_if_match(if_match, etag_for(request.version), required=required)


@router.get("", response_model=PageOut[RequestPublic])
def list_requests(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    organization_id: int | None = None,
    site_id: int | None = None,
    item_id: Annotated[int | None, Query(description="Requests with a line for this item")] = None,
    status: Annotated[LineStatus | None, Query(description="The header's (summarized) status")] = None,
    priority: Annotated[Priority | None, Query(description="Requests with a line of this priority")] = None,
    region: Annotated[str | None, Query(max_length=100, description="The requesting organisation's region")] = None,
    created_after: Timestamp | None = None,
) -> PageOut[RequestPublic]:
    result = service.list_requests(
        session,
        principal=principal,
        limit=page.limit,
        cursor=page.cursor,
        organization_id=organization_id,
        site_id=site_id,
        item_id=item_id,
        status=status,
        priority=priority,
        region=region,
        created_after=created_after,
    )
    lines = service.lines_by_request(session, [r.id for r in result.items if r.id is not None])
    return PageOut(
        items=[to_public(r, lines[r.id]) for r in result.items if r.id is not None], next_cursor=result.next_cursor
    )


@router.post("", status_code=201, response_model=RequestPublic)
def create_request(session: SessionDep, principal: Requester, body: RequestCreate, response: Response) -> RequestPublic:
    """Post a request for your own organisation, delivered to one of its hospital docks or food hubs."""
    request = service.create_request(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/requests/{request.id}"
    return _out(session, request, response)


@router.get("/{request_id}", response_model=RequestPublic)
def get_request(
    session: SessionDep, principal: Reader, request_id: int, response: Response, if_none_match: IfNoneMatch = None
) -> RequestPublic | Response:
    request = service.get_request(session, principal=principal, request_id=request_id)
    etag = etag_for(request.version)
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return _out(session, request, response)


@router.patch("/{request_id}", response_model=RequestPublic)
def update_request(
    session: SessionDep,
    principal: Requester,
    request_id: int,
    body: RequestUpdate,
    response: Response,
    if_match: IfMatchRequired = None,
) -> RequestPublic:
    """Change the delivery site or justification while every line is still open (409 otherwise)."""
    request = service.update_request(
        session, actor=principal, request_id=request_id, data=body, precondition=_if_match(if_match, required=True)
    )
    return _out(session, request, response)


@router.post("/{request_id}/cancel", response_model=RequestPublic)
def cancel_request(
    session: SessionDep, principal: Canceller, request_id: int, response: Response, if_match: IfMatch = None
) -> RequestPublic:
    """Cancel every line still open; lines with stock committed or delivered go on (409 if none is open)."""
    request = service.cancel_request(session, actor=principal, request_id=request_id, precondition=_if_match(if_match))
    return _out(session, request, response)


@router.patch("/{request_id}/lines/{line_id}", response_model=RequestPublic)
def update_line(
    session: SessionDep,
    principal: Requester,
    request_id: int,
    line_id: int,
    body: RequestLineUpdate,
    response: Response,
    if_match: IfMatchRequired = None,
) -> RequestPublic:
    """Change a line's quantity, priority or needed_by while the line is open (409 otherwise)."""
    request = service.update_line(
        session,
        actor=principal,
        request_id=request_id,
        line_id=line_id,
        data=body,
        precondition=_if_match(if_match, required=True),
    )
    return _out(session, request, response)


@router.post("/{request_id}/lines/{line_id}/cancel", response_model=RequestPublic)
def cancel_line(
    session: SessionDep,
    principal: Canceller,
    request_id: int,
    line_id: int,
    response: Response,
    if_match: IfMatch = None,
) -> RequestPublic:
    """Cancel one open line (409 once stock is committed to it)."""
    request = service.cancel_line(
        session, actor=principal, request_id=request_id, line_id=line_id, precondition=_if_match(if_match)
    )
    return _out(session, request, response)
