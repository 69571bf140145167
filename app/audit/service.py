"""Every write leaves an audit event: actor, action, object, before/after."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, SQLModel, select

from app.audit.models import AuditEvent
from app.context import request_id_var
from app.pagination import Page, paginate
from app.principal import Principal


def snapshot(obj: SQLModel, *, exclude: set[str] | None = None) -> dict[str, Any]:
    return obj.model_dump(mode="json", exclude=exclude)


def record(
    session: Session,
    *,
    actor: Principal,
    action: str,
    obj: SQLModel,
    before: dict[str, Any] | None,
    exclude: set[str] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    object_type = getattr(obj, "__tablename__", type(obj).__name__)
    event = AuditEvent(
        actor_key_id=actor.key_id,
        actor=f"{actor.role}:{actor.name}",
        action=action,
        object_type=str(object_type),
        object_id=str(getattr(obj, "id", "")),
        before=before,
        after=after if after is not None else snapshot(obj, exclude=exclude),
        request_id=request_id_var.get(),
    )
    session.add(event)
    return event


def list_events(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    object_type: str | None = None,
    object_id: str | None = None,
    actor_key_id: int | None = None,
    action: str | None = None,
) -> Page[AuditEvent]:
    stmt = select(AuditEvent)
    if object_type:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    if actor_key_id is not None:
        stmt = stmt.where(AuditEvent.actor_key_id == actor_key_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return paginate(session, stmt, AuditEvent.id, limit=limit, cursor=cursor)
