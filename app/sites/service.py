"""Sites: places with coordinates owned by an organisation. Only depot stock is allocatable.

Sites are deactivated, never deleted: stock, requests and shipments keep pointing at them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.organizations import service as organizations
from app.organizations.models import Organization
from app.pagination import Page, paginate
from app.principal import Principal
from app.sites.models import Site, SiteCreate, SiteUpdate


def _driver_visible_site_ids(session: Session, principal: Principal) -> set[int]:
    """Sites a driver may read: the origins and destinations of shipments assigned to the driver's key."""
    from app.shipments import service as shipments  # local import: shipments depends on sites' neighbours

    return shipments.driver_site_ids(session, driver_key_id=principal.key_id)


def _visible(session: Session, principal: Principal) -> Any:
    stmt = select(Site)
    if principal.role == "driver":
        stmt = stmt.where(col(Site.id).in_(sorted(_driver_visible_site_ids(session, principal))))
    elif principal.org_bound:
        stmt = stmt.where(Site.organization_id == principal.organization_id)
    return stmt


def get_site(session: Session, *, principal: Principal, site_id: int) -> Site:
    """A site the caller may see; missing and foreign ids are the same 404."""
    site = session.exec(_visible(session, principal).where(Site.id == site_id)).first()
    if site is None:
        raise NotFound(f"site {site_id} not found")
    return site


def get_for_reference(
    session: Session,
    site_id: int,
    *,
    field: str,
    organization_id: int | None = None,
    kinds: Iterable[str] | None = None,
) -> Site:
    """A site named in another record's body. Unknown, inactive, another organisation's (when
    `organization_id` is given) or of the wrong kind is a 422 naming `field` — never a hint that a
    foreign site exists."""
    site = session.get(Site, site_id)
    if site is None or (organization_id is not None and site.organization_id != organization_id):
        raise Unprocessable(f"site {site_id} does not exist", field=field)
    if not site.active:
        raise Unprocessable(f"site {site_id} is inactive", field=field)
    allowed = tuple(kinds) if kinds is not None else None
    if allowed is not None and site.kind not in allowed:
        raise Unprocessable(f"site {site_id} is a {site.kind}; expected {' or '.join(allowed)}", field=field)
    return site


def list_sites(
    session: Session,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    organization_id: int | None = None,
    kind: str | None = None,
    region: str | None = None,
    active: bool | None = None,
) -> Page[Site]:
    stmt = _visible(session, principal)
    if organization_id is not None:
        stmt = stmt.where(Site.organization_id == organization_id)
    if kind is not None:
        stmt = stmt.where(Site.kind == kind)
    if region is not None:
        # A site's region is its owning organisation's region.
        stmt = stmt.join(Organization, col(Organization.id) == col(Site.organization_id)).where(
            col(Organization.region) == region
        )
    if active is not None:
        stmt = stmt.where(Site.active == active)
    return paginate(session, stmt, Site.id, limit=limit, cursor=cursor)


def create_site(session: Session, *, actor: Principal, data: SiteCreate) -> Site:
    organizations.get_active_for_reference(session, data.organization_id, field="organization_id")
    site = Site.model_validate(data)
    session.add(site)
    session.flush()
    audit.record(session, actor=actor, action="site.create", obj=site, before=None)
    return site


def _apply(session: Session, actor: Principal, site: Site, changes: dict[str, Any], action: str) -> Site:
    before = audit.snapshot(site)
    changes = {k: v for k, v in changes.items() if getattr(site, k) != v}
    if not changes:
        return site
    for key, value in changes.items():
        setattr(site, key, value)
    site.version += 1
    site.updated_at = utcnow()
    session.add(site)
    session.flush()
    audit.record(session, actor=actor, action=action, obj=site, before=before)
    return site


def update_site(session: Session, *, actor: Principal, site_id: int, data: SiteUpdate) -> Site:
    site = get_site(session, principal=actor, site_id=site_id)
    changes = data.model_dump(exclude_unset=True)
    for required in ("name", "lat", "lon"):
        if required in changes and changes[required] is None:
            raise Unprocessable("may not be null", field=required)
    return _apply(session, actor, site, changes, "site.update")


def set_active(session: Session, *, actor: Principal, site_id: int, active: bool) -> Site:
    """Deactivate (the site stays, new records may no longer name it) or reactivate."""
    site = get_site(session, principal=actor, site_id=site_id)
    if active and not site.active:
        owner = session.get(Organization, site.organization_id)
        if owner is None or not owner.active:
            raise Conflict(f"organization {site.organization_id} has left the coalition; its sites stay inactive")
    return _apply(session, actor, site, {"active": active}, "site.activate" if active else "site.deactivate")
