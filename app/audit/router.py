from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import service
from app.audit.models import AuditEventPublic
from app.deps import Allow, ListDep, SecuredRoute, SessionDep
from app.pagination import PageOut
from app.principal import Principal

router = APIRouter(prefix="/v1/audit-events", tags=["audit"], route_class=SecuredRoute)


@router.get("", response_model=PageOut[AuditEventPublic])
def list_audit_events(
    session: SessionDep,
    principal: Annotated[Principal, Allow("admin")],
    page: ListDep,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    actor_key_id: int | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> PageOut[AuditEventPublic]:
    result = service.list_events(
        session,
        limit=page.limit,
        cursor=page.cursor,
        object_type=object_type,
        object_id=object_id,
        actor_key_id=actor_key_id,
        action=action,
    )
    return PageOut(
        items=[AuditEventPublic.model_validate(e, from_attributes=True) for e in result.items],
        next_cursor=result.next_cursor,
    )
