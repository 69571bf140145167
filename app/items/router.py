from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlmodel import Session

from app.deps import Allow, IfMatch, IfMatchRequired, ListDep, SecuredRoute, SessionDep, check_if_match, etag_for
from app.items import service
from app.items.models import SKU_PATTERN, Item, ItemCategory, ItemCreate, ItemPublic, ItemUpdate
from app.pagination import PageOut
from app.principal import Principal

router = APIRouter(prefix="/v1/items", tags=["items"], route_class=SecuredRoute)

# The catalog is shared reading for everyone who posts demand or supply; drivers have no use for it.
Reader = Annotated[Principal, Allow("admin", "logistics", "requester", "donor")]
Writer = Annotated[Principal, Allow("admin", "logistics")]


def _out(session: Session, item: Item, response: Response) -> ItemPublic:
    out = service.to_public(session, [item])[0]
    response.headers["ETag"] = etag_for(out.version)
    return out


@router.get("", response_model=PageOut[ItemPublic])
def list_items(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    category: ItemCategory | None = None,
    sku: Annotated[str | None, Query(max_length=64, pattern=SKU_PATTERN)] = None,
    active: bool | None = None,
) -> PageOut[ItemPublic]:
    result = service.list_items(
        session, limit=page.limit, cursor=page.cursor, category=category, sku=sku, active=active
    )
    return PageOut(items=service.to_public(session, result.items), next_cursor=result.next_cursor)


@router.post("", status_code=201, response_model=ItemPublic)
def create_item(session: SessionDep, principal: Writer, body: ItemCreate, response: Response) -> ItemPublic:
    """SKUs are unique (409); every substitute SKU must name another active item (422)."""
    item = service.create_item(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/items/{item.id}"
    return _out(session, item, response)


@router.get("/{item_id}", response_model=ItemPublic)
def get_item(session: SessionDep, principal: Reader, item_id: int, response: Response) -> ItemPublic:
    return _out(session, service.get_item(session, item_id=item_id), response)


@router.patch("/{item_id}", response_model=ItemPublic)
def update_item(
    session: SessionDep,
    principal: Writer,
    item_id: int,
    body: ItemUpdate,
    response: Response,
    if_match: IfMatchRequired = None,
) -> ItemPublic:
    """`substitutes`, when given, replaces the whole list."""
    current = service.get_item(session, item_id=item_id)
    check_if_match(if_match, etag_for(current.version), required=True)
    return _out(session, service.update_item(session, actor=principal, item_id=item_id, data=body), response)


@router.post("/{item_id}/deactivate", response_model=ItemPublic)
def deactivate_item(
    session: SessionDep, principal: Writer, item_id: int, response: Response, if_match: IfMatch = None
) -> ItemPublic:
    """Never deletes: existing lots and requests keep the item; new ones may not name it, and it is
    no longer offered as a substitute to allocation."""
    current = service.get_item(session, item_id=item_id)
    check_if_match(if_match, etag_for(current.version))
    return _out(session, service.set_active(session, actor=principal, item_id=item_id, active=False), response)


@router.post("/{item_id}/activate", response_model=ItemPublic)
def activate_item(
    session: SessionDep, principal: Writer, item_id: int, response: Response, if_match: IfMatch = None
) -> ItemPublic:
    current = service.get_item(session, item_id=item_id)
    check_if_match(if_match, etag_for(current.version))
    return _out(session, service.set_active(session, actor=principal, item_id=item_id, active=True), response)
