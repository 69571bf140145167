"""Spreadsheet exports, read through each domain's own list functions (and so its visibility rules).

Importable kinds are exported with exactly the columns their import reads (names and SKUs rather than
ids) plus informative export-only columns the import ignores, so an export of organisations, sites and
items imports into an empty database as it stands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlmodel import Session, col, select

from app.allocation.models import Plan
from app.imports.kinds import KINDS
from app.inventory import service as inventory
from app.items import service as items
from app.items.models import Item
from app.organizations import service as organizations
from app.organizations.models import Organization
from app.pagination import Page
from app.pledges import service as pledges
from app.principal import Principal
from app.reports import service as reports
from app.reports.donor_impact import donor_impact_report
from app.reports.schemas import AgeingRow, DaysOfSupplyRow, DonorImpactRow, GapRow, columns_of
from app.requests import service as requests
from app.shipments import service as shipments
from app.sites import service as sites
from app.sites.models import Site

T = TypeVar("T")
PAGE = 500
DATA_KINDS = ("organizations", "sites", "items", "inventory", "requests", "pledges", "shipments", "plans")
REPORTS = ("gap", "days-of-supply", "request-ageing", "donor-impact")


@dataclass(frozen=True)
class Export:
    name: str
    columns: list[str]
    rows: list[dict[str, Any]]


def _all(fetch: Callable[[str | None], Page[T]]) -> list[T]:
    out: list[T] = []
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        out.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return out


def _names(session: Session, model: Any, attribute: str) -> dict[int, Any]:
    return {row_id: value for row_id, value in session.exec(select(model.id, getattr(model, attribute))).all()}


def _importable(kind: str, order: Sequence[str]) -> list[str]:
    """The export's columns: `order`, checked to be exactly what the import knows."""
    spec = KINDS[kind]
    assert set(order) == set(spec.required + spec.optional + spec.export_only), kind
    return list(order)


def _organizations(session: Session, principal: Principal, **_: Any) -> Export:
    rows = _all(lambda c: organizations.list_organizations(session, principal=principal, limit=PAGE, cursor=c))
    columns = _importable("organizations", ("id", "name", "kind", "region", "equity_weight", "active"))
    return Export("organizations", columns, [r.model_dump() for r in rows])


def _sites(session: Session, principal: Principal, **_: Any) -> Export:
    org_names = _names(session, Organization, "name")
    found = _all(lambda c: sites.list_sites(session, principal=principal, limit=PAGE, cursor=c))
    columns = _importable(
        "sites", ("id", "organization", "organization_id", "name", "kind", "lat", "lon", "address", "active")
    )
    rows = [s.model_dump() | {"organization": org_names.get(s.organization_id)} for s in found]
    return Export("sites", columns, rows)


def _items(session: Session, principal: Principal, **_: Any) -> Export:
    found = _all(lambda c: items.list_items(session, limit=PAGE, cursor=c))
    subs = items.substitutes_of(session, [i.id for i in found if i.id is not None])
    columns = _importable(
        "items", ("id", "sku", "name", "category", "unit", "pack_size", "shelf_life_days", "substitutes", "active")
    )
    rows = [
        i.model_dump() | {"substitutes": [f"{s.sku}:{s.penalty:g}" for s in subs.get(i.id or 0, [])]} for i in found
    ]
    return Export("items", columns, rows)


def _inventory(session: Session, principal: Principal, **_: Any) -> Export:
    lots = _all(lambda c: inventory.list_lots(session, limit=PAGE, cursor=c))
    site_names, skus = _names(session, Site, "name"), _names(session, Item, "sku")
    columns = _importable(
        "inventory",
        (
            "lot_id",
            "site",
            "site_id",
            "sku",
            "item_id",
            "quantity",
            "reserved",
            "available",
            "lot_code",
            "expires_at",
            "reason",
        ),
    )
    rows = [
        {
            "lot_id": lot.id,
            "site": site_names.get(lot.site_id),
            "site_id": lot.site_id,
            "sku": skus.get(lot.item_id),
            "item_id": lot.item_id,
            "quantity": lot.on_hand,
            "reserved": lot.reserved,
            "available": lot.on_hand - lot.reserved,
            "lot_code": lot.lot_code,
            "expires_at": lot.expires_at,
        }
        for lot in lots
    ]
    return Export("inventory", columns, rows)


def _requests(session: Session, principal: Principal, **_: Any) -> Export:
    found = _all(lambda c: requests.list_requests(session, principal=principal, limit=PAGE, cursor=c))
    lines = requests.lines_by_request(session, [r.id for r in found if r.id is not None])
    org_names, site_names, skus = (
        _names(session, Organization, "name"),
        _names(session, Site, "name"),
        _names(session, Item, "sku"),
    )
    columns = _importable(
        "requests",
        (
            "request_key",
            "request_id",
            "line_id",
            "organization",
            "site",
            "sku",
            "quantity",
            "priority",
            "needed_by",
            "justification",
            "status",
            "quantity_reserved",
            "quantity_in_transit",
            "quantity_delivered",
            "remaining",
            "created_at",
        ),
    )
    rows = [
        {
            "request_key": str(r.id),
            "request_id": r.id,
            "line_id": line.id,
            "organization": org_names.get(r.organization_id),
            "site": site_names.get(r.site_id),
            "sku": skus.get(line.item_id),
            "quantity": line.quantity,
            "priority": line.priority,
            "needed_by": line.needed_by,
            "justification": r.justification,
            "status": line.status,
            "quantity_reserved": line.quantity_reserved,
            "quantity_in_transit": line.quantity_in_transit,
            "quantity_delivered": line.quantity_delivered,
            "remaining": line.remaining,
            "created_at": line.created_at,
        }
        for r in found
        for line in lines.get(r.id or 0, [])
    ]
    return Export("requests", columns, rows)


def _pledges(session: Session, principal: Principal, **_: Any) -> Export:
    found = _all(lambda c: pledges.list_pledges(session, principal=principal, limit=PAGE, cursor=c))
    org_names, site_names, skus = (
        _names(session, Organization, "name"),
        _names(session, Site, "name"),
        _names(session, Item, "sku"),
    )
    columns = _importable(
        "pledges",
        (
            "id",
            "organization",
            "site",
            "sku",
            "quantity",
            "available_from",
            "expires_at",
            "note",
            "status",
            "committed",
            "received_quantity",
            "received_lot_id",
            "created_at",
        ),
    )
    rows = [
        p.model_dump()
        | {
            "organization": org_names.get(p.organization_id),
            "site": site_names.get(p.site_id),
            "sku": skus.get(p.item_id),
        }
        for p in found
    ]
    return Export("pledges", columns, rows)


SHIPMENT_COLUMNS = [
    "shipment_id", "status", "plan_id", "origin_site", "destination_site", "destination_organization",
    "driver_key_id", "received_by", "line_id", "sku", "quantity", "quantity_received", "shortfall_reason",
    "lot_id", "pledge_id", "request_line_id", "created_at", "updated_at",
]  # fmt: skip


def _shipments(session: Session, principal: Principal, **_: Any) -> Export:
    filters = shipments.Filters()
    found = _all(
        lambda c: shipments.list_shipments(session, principal=principal, limit=PAGE, cursor=c, filters=filters)
    )
    lines = shipments.lines_of(session, [s.id for s in found if s.id is not None])
    org_names, site_names, skus = (
        _names(session, Organization, "name"),
        _names(session, Site, "name"),
        _names(session, Item, "sku"),
    )
    rows = [
        {
            "shipment_id": s.id,
            "status": s.status,
            "plan_id": s.plan_id,
            "origin_site": site_names.get(s.origin_site_id),
            "destination_site": site_names.get(s.destination_site_id),
            "destination_organization": org_names.get(s.destination_organization_id),
            "driver_key_id": s.driver_key_id,
            "received_by": s.received_by,
            "line_id": line.id,
            "sku": skus.get(line.item_id),
            "quantity": line.quantity,
            "quantity_received": line.quantity_received,
            "shortfall_reason": line.shortfall_reason,
            "lot_id": line.lot_id,
            "pledge_id": line.pledge_id,
            "request_line_id": line.request_line_id,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
        }
        for s in found
        for line in lines.get(s.id or 0, [])
    ]
    return Export("shipments", SHIPMENT_COLUMNS, rows)


PLAN_COLUMNS = [
    "run_id", "plan_id", "plan_state", "solver_status", "edited", "line_id", "source", "lot_id", "pledge_id",
    "origin_site", "destination_site", "sku", "quantity", "distance_km", "cost", "manual", "request_line_id",
]  # fmt: skip


def _plans(session: Session, principal: Principal, *, run_id: int | None = None, **_: Any) -> Export:
    """One row per allocation line, of one run's plan (`run_id`) or of every plan."""
    from app.allocation import plans_service as plans  # brings in the optimizer (numpy, OR-Tools): only here

    if run_id is not None:
        found = [plans.find_plan(session, run_id=run_id)]
    else:
        found = list(session.exec(select(Plan).order_by(col(Plan.id))).all())
    site_names, skus = _names(session, Site, "name"), _names(session, Item, "sku")
    rows = [
        {
            "run_id": plan.run_id,
            "plan_id": plan.id,
            "plan_state": plan.state,
            "solver_status": plan.solver_status,
            "edited": plan.edited,
            "line_id": line.id,
            "source": line.source_ref,
            "lot_id": line.lot_id,
            "pledge_id": line.pledge_id,
            "origin_site": site_names.get(line.origin_site_id),
            "destination_site": site_names.get(line.destination_site_id),
            "sku": skus.get(line.item_id),
            "quantity": line.quantity,
            "distance_km": round(line.distance_km, 3),
            "cost": round(line.cost, 4),
            "manual": line.manual,
            "request_line_id": line.request_line_id,
        }
        for plan in found
        for line in plans.lines_of(session, plan.id or 0)
    ]
    return Export("plans", PLAN_COLUMNS, rows)


EXPORTERS: dict[str, Callable[..., Export]] = {
    "organizations": _organizations,
    "sites": _sites,
    "items": _items,
    "inventory": _inventory,
    "requests": _requests,
    "pledges": _pledges,
    "shipments": _shipments,
    "plans": _plans,
}


def export_data(session: Session, *, principal: Principal, kind: str, run_id: int | None = None) -> Export:
    return EXPORTERS[kind](session, principal, run_id=run_id)


def export_report(
    session: Session,
    *,
    principal: Principal,
    report: str,
    threshold_days: float,
    group_by: str | None = None,
    region: str | None = None,
    item_id: int | None = None,
    organization_id: int | None = None,
) -> Export:
    """The same rows as GET /v1/reports/{report}."""
    scope = reports.scope_for(principal, organization_id=organization_id, region=region, item_id=item_id)
    rows: Sequence[Any]
    if report == "gap":
        row_type: Any = GapRow
        rows = reports.gap_report(session, scope=scope, group_by=group_by or "region")
    elif report == "days-of-supply":
        row_type = DaysOfSupplyRow
        rows = reports.days_of_supply_report(session, scope=scope, threshold_days=threshold_days)
    elif report == "request-ageing":
        row_type = AgeingRow
        rows = reports.request_ageing_report(session, scope=scope, group_by=group_by or "priority")
    else:
        row_type = DonorImpactRow
        rows = donor_impact_report(session, scope=scope)
    return Export(f"{report}-report", columns_of(row_type), [r.model_dump() for r in rows])
