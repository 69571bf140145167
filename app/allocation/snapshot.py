"""The allocation snapshot: the database's state as a Problem JSON v1 dict (SPEC §3.1).

The one module that knows both the records (through each domain's service) and the optimizer's
input format. A run stores the dict it returns, so the solve can be reproduced exactly later.

Identifier conventions (shared with plans and shipments): sources `lot-<lot id>` and
`pledge-<pledge id>`, demands `line-<request line id>`, requesters `org-<organization id>`.

Justified need (SPEC §3.1): when the requesting organisation has a recent usage report for the item,
its open lines for that item together may ask for at most daily usage × planning horizon − on-hand
(floored at 0). The budget is shared by the organisation's lines of that item, most urgent first,
so splitting a request into many lines does not escape the cap. Capped lines are listed under the
extra top-level key `capped`; the optimizer's strict loader does not know it, so `solver_input`
strips it before loading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from app.config import get_settings
from app.inventory import service as inventory
from app.items import service as items
from app.items.models import Item
from app.pledges import service as pledges
from app.requests import service as requests
from app.requests.service import OpenLineRow
from app.sites.models import Site
from app.usage import service as usage
from optimizer.io import format_time, load_problem
from optimizer.model import Problem

DEFAULT_SETTINGS: dict[str, float] = {"speed_kmh": 50.0, "cost_per_unit_km": 0.01, "time_limit_s": 60.0}
# A usage report older than this says little about today's burn rate, so it does not cap a request.
RECENT_USAGE = timedelta(days=30)
PRIORITY_RANK = {"critical": 0, "high": 1, "routine": 2}
EXTRA_KEYS = ("capped",)


def effective_settings(given: Mapping[str, Any] | None) -> dict[str, float]:
    """The run's solver settings with defaults filled in."""
    out = dict(DEFAULT_SETTINGS)
    for key, value in (given or {}).items():
        if value is not None and key in out:
            out[key] = float(value)
    return out


def solver_input(problem: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot without the service's annotations (the optimizer rejects unknown keys)."""
    return {k: v for k, v in problem.items() if k not in EXTRA_KEYS}


def load_snapshot(problem: Mapping[str, Any]) -> Problem:
    """Validate a stored snapshot and build the optimizer's Problem (raises optimizer.io.ProblemError)."""
    return load_problem(solver_input(problem))


def _item_skus(session: Session, item_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(item_ids))
    if not ids:
        return {}
    return dict(session.exec(select(Item.id, Item.sku).where(col(Item.id).in_(ids))).all())  # type: ignore[arg-type]


def _active_item_ids(session: Session) -> dict[str, int]:
    rows = session.exec(select(Item.id, Item.sku).where(col(Item.active).is_(True))).all()
    return {sku: item_id for item_id, sku in rows if item_id is not None}


def _site_coordinates(session: Session, site_ids: Iterable[int]) -> dict[int, tuple[float, float]]:
    ids = sorted(set(site_ids))
    if not ids:
        return {}
    rows = session.exec(select(Site.id, Site.lat, Site.lon).where(col(Site.id).in_(ids))).all()
    return {site_id: (lat, lon) for site_id, lat, lon in rows if site_id is not None}


def _justified_need(daily_usage: float | None, on_hand: int, horizon_days: float) -> int | None:
    if daily_usage is None:
        return None
    # Whole units, rounded up (a tiny float error must not cost a unit), never negative.
    return max(0, math.ceil(daily_usage * horizon_days - on_hand - 1e-9))


def _capped_quantities(
    session: Session, lines: Sequence[OpenLineRow], *, now: datetime, horizon_days: float
) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Line id → quantity to demand, and the `capped` records for lines asked above justified need."""
    quantities = {ol.line_id: ol.remaining for ol in lines}
    if not lines:
        return quantities, []
    reports = usage.latest_usage(
        session,
        organization_ids=sorted({ol.organization_id for ol in lines}),
        item_ids=sorted({ol.item_id for ol in lines}),
    )
    budgets: dict[tuple[int, int], int] = {}
    for key, report in reports.items():
        if report.reported_at < now - RECENT_USAGE:
            continue
        need = _justified_need(usage.effective_daily_usage(report), report.on_hand, horizon_days)
        if need is not None:
            budgets[key] = need
    capped: list[dict[str, Any]] = []
    urgent_first = sorted(lines, key=lambda ol: (PRIORITY_RANK.get(ol.priority, 9), ol.line_id))
    for ol in urgent_first:
        key = (ol.organization_id, ol.item_id)
        if key not in budgets:
            continue
        line_id = ol.line_id
        granted = min(ol.remaining, budgets[key])
        budgets[key] -= granted
        if granted < ol.remaining:
            quantities[line_id] = granted
            capped.append({"demand": f"line-{line_id}", "requested": ol.remaining, "capped_to": granted})
    capped.sort(key=lambda c: int(c["demand"].split("-")[1]))
    return quantities, capped


def build_problem(
    session: Session,
    *,
    now: datetime,
    regions: Sequence[str],
    item_ids: Sequence[int],
    settings: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Problem JSON v1 for a scope (empty regions / item_ids = all), deterministic (ordered by id)."""
    horizon_days = get_settings().planning_horizon_days
    substitution = items.substitution_map(session)  # SKU → [(substitute SKU, penalty)], active items

    lines = requests.open_line_rows(session, item_ids=list(item_ids) or None, regions=list(regions) or None)
    quantities, capped = _capped_quantities(session, lines, now=now, horizon_days=horizon_days)
    line_skus = _item_skus(session, (ol.item_id for ol in lines))

    # Supply is not restricted by region (a depot serves every region), only to the scope's items
    # and the SKUs that may substitute for them.
    active_ids = _active_item_ids(session)
    supply_item_ids: list[int] | None = None
    if item_ids:
        scope_skus = set(_item_skus(session, item_ids).values())
        supply_skus = scope_skus | {sub for sku in scope_skus for sub, _ in substitution.get(sku, [])}
        supply_item_ids = sorted(active_ids[sku] for sku in supply_skus if sku in active_ids)
    else:
        supply_item_ids = sorted(active_ids.values())
    lots = inventory.allocatable_lots(session, now=now, item_ids=supply_item_ids)
    offers = pledges.confirmed_supply(session, now=now, item_ids=supply_item_ids)
    supply_skus_by_id = _item_skus(session, [lot.item_id for lot in lots] + [p.item_id for p in offers])
    coords = _site_coordinates(session, [lot.site_id for lot in lots] + [p.site_id for p in offers])

    sources: list[dict[str, Any]] = []
    for lot in lots:
        lat, lon = coords[lot.site_id]
        source: dict[str, Any] = {
            "id": f"lot-{lot.id}",
            "item": supply_skus_by_id[lot.item_id],
            "quantity": lot.on_hand - lot.reserved,
            "lat": lat,
            "lon": lon,
            "available_at": format_time(now),
        }
        if lot.expires_at is not None:
            source["expires_at"] = format_time(lot.expires_at)
        sources.append(source)
    for pledge in offers:
        lat, lon = coords[pledge.site_id]
        source = {
            "id": f"pledge-{pledge.id}",
            "item": supply_skus_by_id[pledge.item_id],
            "quantity": pledge.quantity - pledge.committed,
            "lat": lat,
            "lon": lon,
            "available_at": format_time(pledge.available_from),
        }
        if pledge.expires_at is not None:
            source["expires_at"] = format_time(pledge.expires_at)
        sources.append(source)

    demands: list[dict[str, Any]] = []
    for ol in lines:
        quantity = quantities[ol.line_id]
        if quantity <= 0:  # capped to nothing: justified need is already on hand
            continue
        demand: dict[str, Any] = {
            "id": f"line-{ol.line_id}",
            "requester": f"org-{ol.organization_id}",
            "item": line_skus[ol.item_id],
            "quantity": quantity,
            "priority": ol.priority,
        }
        if ol.needed_by is not None:
            demand["needed_by"] = format_time(ol.needed_by)
        demand.update(lat=ol.lat, lon=ol.lon, equity_weight=ol.equity_weight)
        demands.append(demand)

    # The whole active catalog (small) plus any SKU named above that has since left it, so every SKU
    # named is declared; substitution lists only ever name active SKUs.
    catalog = dict(substitution)
    for sku in [s["item"] for s in sources] + [d["item"] for d in demands]:
        catalog.setdefault(sku, [])
    problem: dict[str, Any] = {
        "version": 1,
        "now": format_time(now),
        "settings": effective_settings(settings),
        "items": [
            {"sku": sku, "substitutes": [{"sku": sub, "penalty": penalty} for sub, penalty in catalog[sku]]}
            for sku in sorted(catalog)
        ],
        "sources": sources,
        "demands": demands,
    }
    if capped:
        problem["capped"] = capped
    return problem


def summary(problem: Mapping[str, Any] | None) -> str:
    """One line for the run's progress message: what the snapshot holds."""
    if not problem:
        return "no snapshot"
    capped = len(problem.get("capped", []))
    text = f"snapshot: {len(problem.get('sources', []))} sources, {len(problem.get('demands', []))} demands"
    return text + (f" ({capped} capped at justified need)" if capped else "")
