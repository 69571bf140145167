"""Item catalog with direct (non-transitive) substitutes."""

from __future__ import annotations

from sqlmodel import Session

from app.errors import Unprocessable
from app.items.models import Item


def get_for_reference(session: Session, item_id: int, *, field: str) -> Item:
    """An item named in another record's body: unknown or inactive is a 422 naming `field`."""
    item = session.get(Item, item_id)
    if item is None:
        raise Unprocessable(f"item {item_id} does not exist", field=field)
    if not item.active:
        raise Unprocessable(f"item {item_id} is no longer active", field=field)
    return item
