"""Inventory: lots and the append-only movement ledger.

The ledger is the truth. Every balance change goes through `apply_movement`, which locks the lot row,
re-checks the invariants (on_hand ≥ 0, 0 ≤ reserved ≤ on_hand), writes the movement row and the new
balances in the caller's transaction, and records an audit event. The database CHECK constraints on
`inventory_lots` are the second line of defence, not the first: a violated invariant is a 409 that
names the problem, never an IntegrityError.

A lot's `version` counts its movements (a new lot opens at 0 and its first receive makes it 1), so
its ETag changes on every balance change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.inventory.models import InventoryLot, InventoryMovement, LotPublic
from app.items import service as items
from app.organizations.models import Organization
from app.pagination import Page, paginate
from app.principal import Principal
from app.sites import service as sites
from app.sites.models import Site

DEPOT_KINDS = ("depot",)


def to_public(lot: InventoryLot) -> LotPublic:
    data = lot.model_dump()
    return LotPublic(**data, available=lot.on_hand - lot.reserved)


# ---------------------------------------------------------------- reads


def find_lot(session: Session, *, lot_id: int) -> InventoryLot | None:
    return session.get(InventoryLot, lot_id)


def get_lot(session: Session, *, lot_id: int) -> InventoryLot:
    lot = session.get(InventoryLot, lot_id)
    if lot is None:
        raise NotFound(f"inventory lot {lot_id} not found")
    return lot


def get_movement(session: Session, *, movement_id: int) -> InventoryMovement:
    movement = session.get(InventoryMovement, movement_id)
    if movement is None:
        raise NotFound(f"inventory movement {movement_id} not found")
    return movement


def list_lots(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    site_id: int | None = None,
    item_id: int | None = None,
    region: str | None = None,
    include_empty: bool = False,
    expiring_before: datetime | None = None,
) -> Page[InventoryLot]:
    stmt: Any = select(InventoryLot)
    if site_id is not None:
        stmt = stmt.where(InventoryLot.site_id == site_id)
    if item_id is not None:
        stmt = stmt.where(InventoryLot.item_id == item_id)
    if region is not None:
        stmt = (
            stmt.join(Site, col(Site.id) == InventoryLot.site_id)
            .join(Organization, col(Organization.id) == Site.organization_id)
            .where(Organization.region == region)
        )
    if not include_empty:  # a fully shipped lot is history, not stock
        stmt = stmt.where(InventoryLot.on_hand > 0)
    if expiring_before is not None:
        stmt = stmt.where(col(InventoryLot.expires_at).is_not(None), col(InventoryLot.expires_at) < expiring_before)
    return paginate(session, stmt, InventoryLot.id, limit=limit, cursor=cursor)


def list_movements(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    lot_id: int | None = None,
    site_id: int | None = None,
    item_id: int | None = None,
    kind: str | None = None,
) -> Page[InventoryMovement]:
    stmt: Any = select(InventoryMovement)
    if lot_id is not None:
        stmt = stmt.where(InventoryMovement.lot_id == lot_id)
    if kind is not None:
        stmt = stmt.where(InventoryMovement.kind == kind)
    if site_id is not None or item_id is not None:
        stmt = stmt.join(InventoryLot, col(InventoryLot.id) == InventoryMovement.lot_id)
        if site_id is not None:
            stmt = stmt.where(InventoryLot.site_id == site_id)
        if item_id is not None:
            stmt = stmt.where(InventoryLot.item_id == item_id)
    return paginate(session, stmt, InventoryMovement.id, limit=limit, cursor=cursor)


def allocatable_lots(
    session: Session,
    *,
    now: datetime,
    site_ids: Sequence[int] | None = None,
    item_ids: Sequence[int] | None = None,
) -> list[InventoryLot]:
    """Supply for an allocation snapshot: unexpired lots with available > 0 at active depot sites."""
    stmt: Any = (
        select(InventoryLot)
        .join(Site, col(Site.id) == InventoryLot.site_id)
        .where(Site.kind == "depot", col(Site.active).is_(True))
        .where(InventoryLot.on_hand - InventoryLot.reserved > 0)
        .where((col(InventoryLot.expires_at).is_(None)) | (col(InventoryLot.expires_at) > now))
    )
    if site_ids is not None:
        stmt = stmt.where(col(InventoryLot.site_id).in_(list(site_ids)))
    if item_ids is not None:
        stmt = stmt.where(col(InventoryLot.item_id).in_(list(item_ids)))
    return list(session.exec(stmt.order_by(InventoryLot.id)).all())


# ---------------------------------------------------------------- the one way balances change


def _lock_lot(session: Session, lot_id: int, *, field: str = "lot_id") -> InventoryLot:
    """Load the lot with a row lock (FOR UPDATE on PostgreSQL; SQLite serializes writers anyway).
    `populate_existing` refreshes an already loaded instance so we never decide on stale balances."""
    stmt = (
        select(InventoryLot)
        .where(InventoryLot.id == lot_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    lot = session.exec(stmt).first()
    if lot is None:
        raise Unprocessable(f"inventory lot {lot_id} does not exist", field=field)
    return lot


def apply_movement(
    session: Session,
    *,
    actor: Principal,
    lot: InventoryLot,
    kind: str,
    delta_on_hand: int,
    delta_reserved: int,
    quantity: int,
    reason: str | None,
    reference: str | None,
) -> InventoryMovement:
    """Write one ledger row and the matching balance change, or raise Conflict and change nothing."""
    if quantity <= 0:
        raise Unprocessable("must be greater than 0", field="quantity")
    if delta_on_hand == 0 and delta_reserved == 0:
        raise Unprocessable("a movement must change on_hand or reserved", field="quantity")
    if reference is not None and len(reference) > 100:
        raise Unprocessable("at most 100 characters", field="reference")
    if reason is not None and len(reason) > 500:
        raise Unprocessable("at most 500 characters", field="reason")
    assert lot.id is not None
    lot = _lock_lot(session, lot.id)
    before = audit.snapshot(lot)
    on_hand = lot.on_hand + delta_on_hand
    reserved = lot.reserved + delta_reserved
    if on_hand < 0:
        raise Conflict(f"lot {lot.id}: {kind} would make on_hand {on_hand} (has {lot.on_hand})")
    if reserved < 0:
        raise Conflict(f"lot {lot.id}: {kind} would make reserved {reserved} (has {lot.reserved})")
    if reserved > on_hand:
        raise Conflict(
            f"lot {lot.id}: {kind} would leave reserved {reserved} above on_hand {on_hand}; "
            f"only {lot.on_hand - lot.reserved} units are unreserved"
        )
    movement = InventoryMovement(
        lot_id=lot.id,
        kind=kind,
        quantity=quantity,
        delta_on_hand=delta_on_hand,
        delta_reserved=delta_reserved,
        reason=reason,
        reference=reference,
        actor_key_id=actor.key_id,
    )
    lot.on_hand, lot.reserved = on_hand, reserved
    lot.version += 1
    lot.updated_at = utcnow()
    session.add(movement)
    session.add(lot)
    session.flush()
    after = audit.snapshot(lot) | {"movement": audit.snapshot(movement)}
    audit.record(session, actor=actor, action=f"inventory.{kind}", obj=lot, before=before, after=after)
    return movement


def _positive(quantity: int) -> None:
    if quantity <= 0:
        raise Unprocessable("must be greater than 0", field="quantity")


# ---------------------------------------------------------------- public movements


def receive(
    session: Session,
    *,
    actor: Principal,
    site_id: int,
    item_id: int,
    quantity: int,
    lot_code: str | None = None,
    expires_at: datetime | None = None,
    reason: str | None = None,
    reference: str | None = None,
) -> tuple[InventoryLot, InventoryMovement]:
    """Stock arrives at a depot: it joins the lot with the same site, item, lot code and expiry, or opens one.
    Already expired stock may be recorded (it is physically there); it is simply never allocated."""
    _positive(quantity)
    sites.get_for_reference(session, site_id, field="site_id", kinds=DEPOT_KINDS)
    items.get_for_reference(session, item_id, field="item_id")
    stmt: Any = select(InventoryLot).where(InventoryLot.site_id == site_id, InventoryLot.item_id == item_id)
    stmt = stmt.where(
        col(InventoryLot.lot_code).is_(None) if lot_code is None else InventoryLot.lot_code == lot_code,
        col(InventoryLot.expires_at).is_(None) if expires_at is None else InventoryLot.expires_at == expires_at,
    )
    lot = session.exec(stmt.order_by(InventoryLot.id).with_for_update()).first()
    if lot is None:
        # version 0: the receive below makes it 1, so version always equals the number of movements
        lot = InventoryLot(site_id=site_id, item_id=item_id, lot_code=lot_code, expires_at=expires_at, version=0)
        session.add(lot)
        session.flush()
    movement = apply_movement(
        session,
        actor=actor,
        lot=lot,
        kind="receive",
        delta_on_hand=quantity,
        delta_reserved=0,
        quantity=quantity,
        reason=reason,
        reference=reference,
    )
    return lot, movement


def adjust(
    session: Session, *, actor: Principal, lot_id: int, delta: int, reason: str
) -> tuple[InventoryLot, InventoryMovement]:
    """A counted correction of on_hand. Reserved stock is promised to shipments: it cannot be adjusted away."""
    if delta == 0:
        raise Unprocessable("must not be 0", field="delta")
    if not reason or not reason.strip():
        raise Unprocessable("an adjustment needs a reason", field="reason")
    lot = _lock_lot(session, lot_id)
    if lot.on_hand + delta < lot.reserved:
        raise Conflict(
            f"lot {lot_id}: adjusting by {delta} would leave on_hand {lot.on_hand + delta} below "
            f"reserved {lot.reserved}; release reservations first"
        )
    movement = apply_movement(
        session,
        actor=actor,
        lot=lot,
        kind="adjust",
        delta_on_hand=delta,
        delta_reserved=0,
        quantity=abs(delta),
        reason=reason,
        reference=None,
    )
    return lot, movement


def reserve(
    session: Session, *, actor: Principal, lot_id: int, quantity: int, reference: str | None
) -> tuple[InventoryLot, InventoryMovement]:
    """Promise unreserved stock to a shipment (plan approval). Expired stock is never allocated."""
    _positive(quantity)
    lot = _lock_lot(session, lot_id)
    if lot.expires_at is not None and lot.expires_at <= utcnow():
        raise Conflict(f"lot {lot_id} expired at {lot.expires_at.isoformat()}; it cannot be reserved")
    return lot, apply_movement(
        session,
        actor=actor,
        lot=lot,
        kind="reserve",
        delta_on_hand=0,
        delta_reserved=quantity,
        quantity=quantity,
        reason=None,
        reference=reference,
    )


def release(
    session: Session, *, actor: Principal, lot_id: int, quantity: int, reference: str | None
) -> tuple[InventoryLot, InventoryMovement]:
    """Give a reservation back (a planned shipment cancelled before dispatch)."""
    _positive(quantity)
    lot = _lock_lot(session, lot_id)
    return lot, apply_movement(
        session,
        actor=actor,
        lot=lot,
        kind="release",
        delta_on_hand=0,
        delta_reserved=-quantity,
        quantity=quantity,
        reason=None,
        reference=reference,
    )


def ship(
    session: Session, *, actor: Principal, lot_id: int, quantity: int, reference: str | None
) -> tuple[InventoryLot, InventoryMovement]:
    """Reserved stock leaves the depot (dispatch): on_hand and reserved both fall. Only reserved stock ships."""
    _positive(quantity)
    lot = _lock_lot(session, lot_id)
    return lot, apply_movement(
        session,
        actor=actor,
        lot=lot,
        kind="ship",
        delta_on_hand=-quantity,
        delta_reserved=-quantity,
        quantity=quantity,
        reason=None,
        reference=reference,
    )


def return_stock(
    session: Session, *, actor: Principal, lot_id: int, quantity: int, reference: str | None, reason: str | None = None
) -> tuple[InventoryLot, InventoryMovement]:
    """A dispatched shipment came back: the units are on hand again at their origin lot, unreserved."""
    _positive(quantity)
    lot = _lock_lot(session, lot_id)
    return lot, apply_movement(
        session,
        actor=actor,
        lot=lot,
        kind="return",
        delta_on_hand=quantity,
        delta_reserved=0,
        quantity=quantity,
        reason=reason,
        reference=reference,
    )
