"""Item catalog with direct (non-transitive) substitutes.

Substitutes are stored by item id in `item_substitutes` and spoken by SKU in the API. Items are
deactivated, never deleted: lots, request lines and plans keep pointing at them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.items.models import Item, ItemCreate, ItemPublic, ItemSubstitute, ItemUpdate, SubstituteIn, SubstitutePublic
from app.pagination import Page, paginate
from app.principal import Principal


@dataclass(frozen=True)
class _ResolvedSubstitute:
    item: Item
    penalty: float


def get_item(session: Session, *, item_id: int) -> Item:
    """Items are catalog data, the same for every reader; role checks live on the routes."""
    item = session.get(Item, item_id)
    if item is None:
        raise NotFound(f"item {item_id} not found")
    return item


def get_for_reference(session: Session, item_id: int, *, field: str) -> Item:
    """An item named in another record's body: unknown or inactive is a 422 naming `field`."""
    item = session.get(Item, item_id)
    if item is None:
        raise Unprocessable(f"item {item_id} does not exist", field=field)
    if not item.active:
        raise Unprocessable(f"item {item_id} is no longer active", field=field)
    return item


def get_by_sku(session: Session, sku: str) -> Item | None:
    return session.exec(select(Item).where(Item.sku == sku)).first()


def list_items(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    category: str | None = None,
    sku: str | None = None,
    active: bool | None = None,
) -> Page[Item]:
    stmt = select(Item)
    if category is not None:
        stmt = stmt.where(Item.category == category)
    if sku is not None:
        stmt = stmt.where(Item.sku == sku)
    if active is not None:
        stmt = stmt.where(Item.active == active)
    return paginate(session, stmt, Item.id, limit=limit, cursor=cursor)


def substitutes_of(session: Session, item_ids: Sequence[int]) -> dict[int, list[SubstitutePublic]]:
    """Each item's substitutes in the order they were given, loaded in one query for a whole page."""
    out: dict[int, list[SubstitutePublic]] = {item_id: [] for item_id in item_ids}
    if not item_ids:
        return out
    sub = aliased(Item)
    rows = session.exec(
        select(ItemSubstitute.item_id, sub.sku, sub.id, ItemSubstitute.penalty)
        .join(sub, sub.id == ItemSubstitute.substitute_item_id)  # type: ignore[arg-type]
        .where(col(ItemSubstitute.item_id).in_(item_ids))
        .order_by(col(ItemSubstitute.id))
    ).all()
    for item_id, sku, sub_id, penalty in rows:
        out[item_id].append(SubstitutePublic.model_validate({"sku": sku, "item_id": sub_id, "penalty": penalty}))
    return out


def to_public(session: Session, items: Sequence[Item]) -> list[ItemPublic]:
    subs = substitutes_of(session, [i.id for i in items if i.id is not None])
    return [ItemPublic.model_validate({**i.model_dump(), "substitutes": subs.get(i.id or 0, [])}) for i in items]


def substitution_map(session: Session) -> dict[str, list[tuple[str, float]]]:
    """SKU → [(substitute SKU, penalty)] over active items only, for the allocation snapshot.

    Every active item is a key (possibly with no substitutes); an inactive substitute is left out,
    since nothing new may be allocated from an item that has left the catalog.
    """
    active = session.exec(select(Item.id, Item.sku).where(Item.active == True).order_by(Item.sku)).all()  # noqa: E712
    sku_of = {item_id: sku for item_id, sku in active}
    out: dict[str, list[tuple[str, float]]] = {sku: [] for _, sku in active}
    rows = session.exec(
        select(ItemSubstitute.item_id, ItemSubstitute.substitute_item_id, ItemSubstitute.penalty).order_by(
            col(ItemSubstitute.id)
        )
    ).all()
    for item_id, substitute_id, penalty in rows:
        if item_id in sku_of and substitute_id in sku_of:
            out[sku_of[item_id]].append((sku_of[substitute_id], penalty))
    return out


def _resolve_substitutes(session: Session, own_sku: str, given: Sequence[SubstituteIn]) -> list[_ResolvedSubstitute]:
    """Check the whole list before anything is written; errors name `substitutes[i].sku`."""
    wanted = {s.sku for s in given}
    found = {i.sku: i for i in session.exec(select(Item).where(col(Item.sku).in_(wanted))).all()} if wanted else {}
    seen: set[str] = set()
    resolved: list[_ResolvedSubstitute] = []
    for index, entry in enumerate(given):
        field = f"substitutes[{index}].sku"
        if entry.sku == own_sku:
            raise Unprocessable("an item cannot substitute for itself", field=field)
        if entry.sku in seen:
            raise Unprocessable(f"substitute {entry.sku!r} is listed twice", field=field)
        seen.add(entry.sku)
        item = found.get(entry.sku)
        if item is None:
            raise Unprocessable(f"no item with SKU {entry.sku!r}", field=field)
        if not item.active:
            raise Unprocessable(f"item {entry.sku!r} is no longer active", field=field)
        resolved.append(_ResolvedSubstitute(item=item, penalty=entry.penalty))
    return resolved


def _snapshot(session: Session, item: Item) -> dict[str, Any]:
    """The item as audit before/after: its columns plus its substitutes by SKU."""
    subs = substitutes_of(session, [item.id]) if item.id is not None else {}
    return audit.snapshot(item) | {
        "substitutes": [{"sku": s.sku, "penalty": s.penalty} for s in subs.get(item.id or 0, [])]
    }


def _replace_substitutes(session: Session, item: Item, resolved: Sequence[_ResolvedSubstitute]) -> None:
    for row in session.exec(select(ItemSubstitute).where(ItemSubstitute.item_id == item.id)).all():
        session.delete(row)
    # Deletes must reach the database before re-inserting a pair the unique constraint still holds.
    session.flush()
    for sub in resolved:
        session.add(
            ItemSubstitute(item_id=item.id, substitute_item_id=sub.item.id, penalty=sub.penalty)  # type: ignore[arg-type]
        )
    session.flush()


def _sku_conflict(sku: str) -> Conflict:
    return Conflict(f"an item with SKU {sku!r} already exists", field="sku")


def create_item(session: Session, *, actor: Principal, data: ItemCreate) -> Item:
    if get_by_sku(session, data.sku) is not None:
        raise _sku_conflict(data.sku)
    resolved = _resolve_substitutes(session, data.sku, data.substitutes)
    item = Item.model_validate(data.model_dump(exclude={"substitutes"}))
    session.add(item)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent insert won the unique SKU
        raise _sku_conflict(data.sku) from exc
    _replace_substitutes(session, item, resolved)
    audit.record(session, actor=actor, action="item.create", obj=item, before=None, after=_snapshot(session, item))
    return item


def _current_pairs(session: Session, item: Item) -> list[tuple[int, float]]:
    return [(s.item_id, s.penalty) for s in substitutes_of(session, [item.id]).get(item.id, [])] if item.id else []


def _apply(
    session: Session,
    actor: Principal,
    item: Item,
    changes: dict[str, Any],
    action: str,
    substitutes: Sequence[_ResolvedSubstitute] | None = None,
) -> Item:
    before = _snapshot(session, item)
    changes = {k: v for k, v in changes.items() if getattr(item, k) != v}
    if substitutes is not None and [(s.item.id, s.penalty) for s in substitutes] == _current_pairs(session, item):
        substitutes = None
    if not changes and substitutes is None:
        return item
    for key, value in changes.items():
        setattr(item, key, value)
    if substitutes is not None:
        _replace_substitutes(session, item, substitutes)
    item.version += 1
    item.updated_at = utcnow()
    session.add(item)
    session.flush()
    audit.record(session, actor=actor, action=action, obj=item, before=before, after=_snapshot(session, item))
    return item


def update_item(session: Session, *, actor: Principal, item_id: int, data: ItemUpdate) -> Item:
    item = get_item(session, item_id=item_id)
    changes = data.model_dump(exclude_unset=True)
    for required in ("name", "category", "unit", "pack_size"):
        if required in changes and changes[required] is None:
            raise Unprocessable("may not be null", field=required)
    if "substitutes" in changes and changes["substitutes"] is None:
        raise Unprocessable("may not be null; send [] to remove every substitute", field="substitutes")
    resolved = None
    if "substitutes" in changes:
        changes.pop("substitutes")
        resolved = _resolve_substitutes(session, item.sku, data.substitutes or [])
    return _apply(session, actor, item, changes, "item.update", resolved)


def set_active(session: Session, *, actor: Principal, item_id: int, active: bool) -> Item:
    """Deactivate (the item stays; new records may no longer name it, it leaves the substitution map)
    or reactivate."""
    item = get_item(session, item_id=item_id)
    return _apply(session, actor, item, {"active": active}, "item.activate" if active else "item.deactivate")
