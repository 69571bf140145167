"""Organisations: open membership — joining creates or reactivates, leaving deactivates, never deletes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.organizations.models import Organization, OrganizationCreate, OrganizationUpdate
from app.pagination import Page, paginate
from app.principal import Principal


def _visible(principal: Principal) -> Any:
    stmt = select(Organization)
    if principal.org_bound:
        stmt = stmt.where(Organization.id == principal.organization_id)
    return stmt


def get_organization(session: Session, *, principal: Principal, organization_id: int) -> Organization:
    org = session.exec(_visible(principal).where(Organization.id == organization_id)).first()
    if org is None:
        raise NotFound(f"organization {organization_id} not found")
    return org


def get_active_for_reference(session: Session, organization_id: int, *, field: str) -> Organization:
    """An organisation named in another record's body: unknown or inactive is a 422 on that field."""
    org = session.get(Organization, organization_id)
    if org is None:
        raise Unprocessable(f"organization {organization_id} does not exist", field=field)
    if not org.active:
        raise Unprocessable(f"organization {organization_id} has left the coalition", field=field)
    return org


def list_organizations(
    session: Session,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    kind: str | None = None,
    region: str | None = None,
    active: bool | None = None,
) -> Page[Organization]:
    stmt = _visible(principal)
    if kind is not None:
        stmt = stmt.where(Organization.kind == kind)
    if region is not None:
        stmt = stmt.where(Organization.region == region)
    if active is not None:
        stmt = stmt.where(Organization.active == active)
    return paginate(session, stmt, Organization.id, limit=limit, cursor=cursor)


def _name_taken(session: Session, name: str, exclude_id: int | None = None) -> bool:
    stmt = select(Organization.id).where(Organization.name == name)
    if exclude_id is not None:
        stmt = stmt.where(Organization.id != exclude_id)
    return session.exec(stmt).first() is not None


def create_organization(session: Session, *, actor: Principal, data: OrganizationCreate) -> Organization:
    if _name_taken(session, data.name):
        raise Conflict(f"an organization named {data.name!r} already exists", field="name")
    org = Organization.model_validate(data)
    session.add(org)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent insert won the unique name
        raise Conflict(f"an organization named {data.name!r} already exists", field="name") from exc
    audit.record(session, actor=actor, action="organization.create", obj=org, before=None)
    return org


def _apply(session: Session, actor: Principal, org: Organization, changes: dict[str, Any], action: str) -> Organization:
    before = audit.snapshot(org)
    if not changes:
        return org
    for key, value in changes.items():
        setattr(org, key, value)
    org.version += 1
    org.updated_at = utcnow()
    session.add(org)
    session.flush()
    audit.record(session, actor=actor, action=action, obj=org, before=before)
    return org


def update_organization(
    session: Session, *, actor: Principal, organization_id: int, data: OrganizationUpdate
) -> Organization:
    org = get_organization(session, principal=actor, organization_id=organization_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name") is None:
        changes.pop("name", None)
    elif _name_taken(session, changes["name"], exclude_id=org.id):
        raise Conflict(f"an organization named {changes['name']!r} already exists", field="name")
    for required in ("kind", "region", "equity_weight"):
        if required in changes and changes[required] is None:
            raise Unprocessable("may not be null", field=required)
    return _apply(session, actor, org, changes, "organization.update")


def set_equity_weight(session: Session, *, actor: Principal, organization_id: int, weight: float) -> Organization:
    org = get_organization(session, principal=actor, organization_id=organization_id)
    return _apply(session, actor, org, {"equity_weight": weight}, "organization.set_equity_weight")


def set_membership(session: Session, *, actor: Principal, organization_id: int, active: bool) -> Organization:
    org = get_organization(session, principal=actor, organization_id=organization_id)
    if org.active == active:
        return org
    return _apply(session, actor, org, {"active": active}, "organization.join" if active else "organization.leave")
