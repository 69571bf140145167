"""CSV exports of a plan: a pick list per depot (what to pull from which lot, for where) and a
manifest per destination (what arrives, from where). Spreadsheet-safe: text cells that a spreadsheet
would run as a formula are prefixed with an apostrophe."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from sqlmodel import Session, col, select

from app.allocation import plans_service as plans
from app.allocation.models import PlanLine
from app.errors import Unprocessable
from app.inventory.models import InventoryLot
from app.items.models import Item
from app.sites.models import Site

PICK_LIST_COLUMNS = (
    "depot_site_id",
    "depot_site_name",
    "lot_id",
    "lot_code",
    "lot_expires_at",
    "pledge_id",
    "item_id",
    "item_sku",
    "item_name",
    "quantity",
    "destination_site_id",
    "destination_site_name",
    "request_line_id",
    "plan_line_id",
)
MANIFEST_COLUMNS = (
    "destination_site_id",
    "destination_site_name",
    "item_id",
    "item_sku",
    "item_name",
    "quantity",
    "origin_site_id",
    "origin_site_name",
    "lot_id",
    "lot_code",
    "pledge_id",
    "request_line_id",
    "plan_line_id",
)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _by_id(session: Session, model: Any, ids: Iterable[int]) -> dict[int, Any]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {row.id: row for row in session.exec(select(model).where(col(model.id).in_(wanted))).all()}


def _render(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
    return buffer.getvalue()


def _rows(session: Session, lines: Sequence[PlanLine]) -> list[dict[str, Any]]:
    sites = _by_id(session, Site, [x.origin_site_id for x in lines] + [x.destination_site_id for x in lines])
    items = _by_id(session, Item, [x.item_id for x in lines])
    lots = _by_id(session, InventoryLot, [x.lot_id for x in lines if x.lot_id is not None])
    out = []
    for x in lines:
        lot = lots.get(x.lot_id) if x.lot_id is not None else None
        item = items.get(x.item_id)
        origin, destination = sites.get(x.origin_site_id), sites.get(x.destination_site_id)
        out.append(
            {
                "depot_site_id": x.origin_site_id,
                "depot_site_name": origin.name if origin else None,
                "origin_site_id": x.origin_site_id,
                "origin_site_name": origin.name if origin else None,
                "lot_id": x.lot_id,
                "lot_code": lot.lot_code if lot else None,
                "lot_expires_at": lot.expires_at.isoformat() if lot and lot.expires_at else None,
                "pledge_id": x.pledge_id,
                "item_id": x.item_id,
                "item_sku": item.sku if item else None,
                "item_name": item.name if item else None,
                "quantity": x.quantity,
                "destination_site_id": x.destination_site_id,
                "destination_site_name": destination.name if destination else None,
                "request_line_id": x.request_line_id,
                "plan_line_id": x.id,
            }
        )
    return out


def _check_site(session: Session, site_id: int | None) -> None:
    if site_id is not None and session.get(Site, site_id) is None:
        raise Unprocessable(f"site {site_id} does not exist", field="site_id")


def pick_list(session: Session, *, run_id: int, site_id: int | None) -> str:
    """Per depot (or donor site, for pledge lines): lot, item, quantity, destination."""
    _check_site(session, site_id)
    plan = plans.find_plan(session, run_id=run_id)
    lines = [x for x in plans.lines_of(session, plan.id or 0) if site_id is None or x.origin_site_id == site_id]
    lines.sort(key=lambda x: (x.origin_site_id, x.lot_id or 0, x.pledge_id or 0, x.destination_site_id, x.id or 0))
    return _render(PICK_LIST_COLUMNS, _rows(session, lines))


def manifest(session: Session, *, run_id: int, site_id: int | None) -> str:
    """Per destination: item, quantity, origin."""
    _check_site(session, site_id)
    plan = plans.find_plan(session, run_id=run_id)
    lines = [x for x in plans.lines_of(session, plan.id or 0) if site_id is None or x.destination_site_id == site_id]
    lines.sort(key=lambda x: (x.destination_site_id, x.origin_site_id, x.item_id, x.id or 0))
    return _render(MANIFEST_COLUMNS, _rows(session, lines))
