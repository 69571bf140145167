"""Pledges: donor supply. `pledged → confirmed → received`, or `cancelled`.

Committed quantity: a confirmed pledge is supply for allocation; an approved plan line drawn from it
commits units (`commit`), which then ship straight from the donor site. Only the uncommitted rest
(quantity − committed) is ever received into a depot, so a unit is never both shipped from the donor
and stocked in a depot. Receiving ends the pledge's life as supply (its rest is now a lot); committed
units keep shipping from the donor site, and units uncommitted after receipt (a cancelled shipment)
stay with the donor — the pledge no longer offers them. A pledge with committed units cannot be
cancelled: cancel the shipments first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.inventory import service as inventory
from app.items import service as items
from app.organizations.models import Organization
from app.pagination import Page, paginate
from app.pledges.models import Pledge, PledgeCreate, PledgeReceive
from app.principal import Principal
from app.sites import service as sites
from app.sites.models import Site


def _visible(principal: Principal) -> Any:
    stmt = select(Pledge)
    if principal.org_bound:
        stmt = stmt.where(Pledge.organization_id == principal.organization_id)
    return stmt


def get_pledge(session: Session, *, principal: Principal, pledge_id: int) -> Pledge:
    pledge = session.exec(_visible(principal).where(Pledge.id == pledge_id)).first()
    if pledge is None:
        raise NotFound(f"pledge {pledge_id} not found")
    return pledge


def _lock(session: Session, principal: Principal, pledge_id: int) -> Pledge:
    """The pledge row, locked for this transaction (PostgreSQL) and refreshed, or 404 when not visible."""
    stmt = _visible(principal).where(Pledge.id == pledge_id).with_for_update()
    pledge = session.exec(stmt.execution_options(populate_existing=True)).first()
    if pledge is None:
        raise NotFound(f"pledge {pledge_id} not found")
    return pledge


def list_pledges(
    session: Session,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    organization_id: int | None = None,
    item_id: int | None = None,
    site_id: int | None = None,
    status: str | None = None,
    region: str | None = None,
) -> Page[Pledge]:
    stmt = _visible(principal)
    if organization_id is not None:
        stmt = stmt.where(Pledge.organization_id == organization_id)
    if item_id is not None:
        stmt = stmt.where(Pledge.item_id == item_id)
    if site_id is not None:
        stmt = stmt.where(Pledge.site_id == site_id)
    if status is not None:
        stmt = stmt.where(Pledge.status == status)
    if region is not None:
        stmt = stmt.join(Organization, col(Organization.id) == Pledge.organization_id).where(
            Organization.region == region
        )
    return paginate(session, stmt, Pledge.id, limit=limit, cursor=cursor)


def create_pledge(session: Session, *, actor: Principal, data: PledgeCreate) -> Pledge:
    if actor.organization_id is None:  # only org-bound donor keys reach here; guard all the same
        raise Conflict("only a key bound to a donor organisation may pledge")
    org = session.get(Organization, actor.organization_id)
    if org is None or not org.active:
        raise Conflict("your organisation has left the coalition; it can no longer pledge")
    items.get_for_reference(session, data.item_id, field="item_id")
    sites.get_for_reference(
        session, data.site_id, field="site_id", organization_id=actor.organization_id, kinds=("donor_site",)
    )
    now = utcnow()
    available_from = data.available_from or now
    if data.expires_at is not None:
        if data.expires_at <= now:
            raise Unprocessable("is already in the past", field="expires_at")
        if data.expires_at <= available_from:
            raise Unprocessable("must be after available_from", field="expires_at")
    pledge = Pledge(
        organization_id=actor.organization_id,
        item_id=data.item_id,
        site_id=data.site_id,
        quantity=data.quantity,
        available_from=available_from,
        expires_at=data.expires_at,
        note=data.note,
    )
    session.add(pledge)
    session.flush()
    audit.record(session, actor=actor, action="pledge.create", obj=pledge, before=None)
    return pledge


def _change(
    session: Session,
    actor: Principal,
    pledge: Pledge,
    action: str,
    changes: dict[str, Any],
    *,
    note: dict[str, Any] | None = None,
) -> Pledge:
    before = audit.snapshot(pledge)
    for key, value in changes.items():
        setattr(pledge, key, value)
    pledge.version += 1
    pledge.updated_at = utcnow()
    session.add(pledge)
    session.flush()
    after = audit.snapshot(pledge) | (note or {})
    audit.record(session, actor=actor, action=action, obj=pledge, before=before, after=after)
    return pledge


def _expired(pledge: Pledge, now: datetime) -> bool:
    return pledge.expires_at is not None and pledge.expires_at <= now


def confirm(session: Session, *, actor: Principal, pledge_id: int) -> Pledge:
    pledge = _lock(session, actor, pledge_id)
    if pledge.status != "pledged":
        raise Conflict(f"pledge {pledge_id} is {pledge.status}; only a pledged pledge can be confirmed")
    if _expired(pledge, utcnow()):
        raise Conflict(f"pledge {pledge_id} expired at {pledge.expires_at}; it cannot be confirmed")
    return _change(session, actor, pledge, "pledge.confirm", {"status": "confirmed"})


def cancel(session: Session, *, actor: Principal, pledge_id: int) -> Pledge:
    """Donors may withdraw a pledge until logistics confirms it; logistics may also cancel a confirmed
    pledge as long as no plan has committed any of it."""
    pledge = _lock(session, actor, pledge_id)
    allowed = ("pledged",) if actor.role == "donor" else ("pledged", "confirmed")
    if pledge.status not in allowed:
        raise Conflict(f"pledge {pledge_id} is {pledge.status}; it can be cancelled only while {' or '.join(allowed)}")
    if pledge.committed > 0:
        raise Conflict(f"pledge {pledge_id} has {pledge.committed} units committed to shipments; cancel those first")
    return _change(session, actor, pledge, "pledge.cancel", {"status": "cancelled"})


def receive(session: Session, *, actor: Principal, pledge_id: int, data: PledgeReceive) -> Pledge:
    """The donor's uncommitted units arrive at a depot: a lot is opened through the ledger."""
    pledge = _lock(session, actor, pledge_id)
    if pledge.status != "confirmed":
        raise Conflict(f"pledge {pledge_id} is {pledge.status}; only a confirmed pledge can be received")
    uncommitted = pledge.quantity - pledge.committed
    if uncommitted <= 0:
        raise Conflict(f"pledge {pledge_id} is fully committed; its units ship from the donor site")
    quantity = data.quantity if data.quantity is not None else uncommitted
    if quantity > uncommitted:
        raise Unprocessable(
            f"at most {uncommitted} units can be received ({pledge.committed} of {pledge.quantity} are committed)",
            field="quantity",
        )
    # Checked here so the error names this body's field, not the ledger's `site_id`.
    sites.get_for_reference(session, data.depot_site_id, field="depot_site_id", kinds=inventory.DEPOT_KINDS)
    lot, _movement = inventory.receive(
        session,
        actor=actor,
        site_id=data.depot_site_id,
        item_id=pledge.item_id,
        quantity=quantity,
        lot_code=data.lot_code or f"PLEDGE-{pledge.id}",
        expires_at=data.expires_at,
        reason=f"pledge {pledge.id} received from organization {pledge.organization_id}",
        reference=f"pledge:{pledge.id}",
    )
    changes = {"status": "received", "received_lot_id": lot.id, "received_quantity": quantity}
    return _change(session, actor, pledge, "pledge.receive", changes)


def commit(session: Session, *, actor: Principal, pledge_id: int, quantity: int, reference: str | None) -> Pledge:
    """Promise `quantity` units of a confirmed pledge to a plan line (plan approval)."""
    if quantity <= 0:
        raise Unprocessable("must be greater than 0", field="quantity")
    pledge = _lock(session, actor, pledge_id)
    if pledge.status != "confirmed":
        raise Conflict(f"pledge {pledge_id} is {pledge.status}; only a confirmed pledge can be committed")
    if _expired(pledge, utcnow()):
        raise Conflict(f"pledge {pledge_id} expired at {pledge.expires_at}")
    free = pledge.quantity - pledge.committed
    if quantity > free:
        raise Conflict(f"pledge {pledge_id} has {free} uncommitted units; cannot commit {quantity}")
    return _change(
        session,
        actor,
        pledge,
        "pledge.commit",
        {"committed": pledge.committed + quantity},
        note={"commit_quantity": quantity, "commit_reference": reference},
    )


def uncommit(session: Session, *, actor: Principal, pledge_id: int, quantity: int, reference: str | None) -> Pledge:
    """Give committed units back (a shipment from the donor site cancelled, failed or returned)."""
    if quantity <= 0:
        raise Unprocessable("must be greater than 0", field="quantity")
    pledge = _lock(session, actor, pledge_id)
    if quantity > pledge.committed:
        raise Conflict(f"pledge {pledge_id} has only {pledge.committed} committed units; cannot release {quantity}")
    return _change(
        session,
        actor,
        pledge,
        "pledge.uncommit",
        {"committed": pledge.committed - quantity},
        note={"uncommit_quantity": quantity, "uncommit_reference": reference},
    )


def confirmed_supply(session: Session, *, now: datetime, item_ids: Sequence[int] | None = None) -> list[Pledge]:
    """Supply for an allocation snapshot: confirmed, unexpired pledges with uncommitted units at an
    active donor site (future `available_from` included: the solver delays their arrival)."""
    stmt: Any = (
        select(Pledge)
        .join(Site, col(Site.id) == Pledge.site_id)
        .where(Pledge.status == "confirmed", col(Site.active).is_(True))
        .where(Pledge.quantity - Pledge.committed > 0)
        .where(col(Pledge.expires_at).is_(None) | (col(Pledge.expires_at) > now))
    )
    if item_ids is not None:
        stmt = stmt.where(col(Pledge.item_id).in_(list(item_ids)))
    return list(session.exec(stmt.order_by(Pledge.id)).all())
