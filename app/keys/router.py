from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from app.deps import Allow, ListDep, SecuredRoute, SessionDep
from app.keys import service
from app.keys.models import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, Role
from app.pagination import PageOut
from app.principal import Principal

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics", "requester", "donor")]
Admin = Annotated[Principal, Allow("admin")]


@router.get("", response_model=PageOut[ApiKeyPublic])
def list_keys(
    session: SessionDep, principal: Reader, page: ListDep, organization_id: int | None = None, role: Role | None = None
) -> PageOut[ApiKeyPublic]:
    result = service.list_keys(
        session, principal=principal, limit=page.limit, cursor=page.cursor, organization_id=organization_id, role=role
    )
    return PageOut(
        items=[ApiKeyPublic.model_validate(k, from_attributes=True) for k in result.items],
        next_cursor=result.next_cursor,
    )


@router.post("", status_code=201, response_model=ApiKeyCreated)
def create_key(session: SessionDep, principal: Admin, body: ApiKeyCreate, response: Response) -> ApiKeyCreated:
    """Creates a key; the secret is in `key`, shown this once only."""
    key, secret = service.create_key(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/api-keys/{key.id}"
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated(**ApiKeyPublic.model_validate(key, from_attributes=True).model_dump(), key=secret)


@router.get("/{key_id}", response_model=ApiKeyPublic)
def get_key(session: SessionDep, principal: Reader, key_id: int) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(
        service.get_key(session, principal=principal, key_id=key_id), from_attributes=True
    )


@router.post("/{key_id}/revoke", response_model=ApiKeyPublic)
def revoke_key(session: SessionDep, principal: Admin, key_id: int) -> ApiKeyPublic:
    """Revoked keys get 401 on their next request."""
    return ApiKeyPublic.model_validate(
        service.revoke_key(session, actor=principal, key_id=key_id), from_attributes=True
    )
