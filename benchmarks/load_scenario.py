"""Load a generated Problem JSON (``benchmarks/generate.py``) into the service's tables, fast.

The rows are chosen so that the service's own snapshot (``app.allocation.snapshot``) reproduces the
problem: every demand site becomes a requesting organisation (a hospital, clinic or food hub, in a
region cut from a lat/lon grid) with one delivery site and one open request holding its lines; every
depot-lot source becomes a lot at a depot site (with the ``receive`` ledger movement that put the
stock there); every source that only becomes available later becomes a confirmed pledge at a donor's
site. Times are shifted so that the generator's ``now`` is the load's ``now`` (deadlines stay ahead).

Bulk inserts through SQLAlchemy Core (``executemany`` with ``RETURNING`` in parameter order), so the
state scenario (~3,000 organisations, ~17,000 request lines, 900 sources) loads in seconds. The
ORM-level defaults of the table models do not apply to Core inserts: every column is given here.

Usage: ``python benchmarks/load_scenario.py problem.json --database-url postgresql://…`` (schema
migrated first) — or ``load(engine, problem)`` from another script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Engine

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.inventory.models import InventoryLot, InventoryMovement  # noqa: E402
from app.items.models import Item, ItemSubstitute  # noqa: E402
from app.organizations.models import Organization  # noqa: E402
from app.pledges.models import Pledge  # noqa: E402
from app.requests.models import RequestLine, SupplyRequest  # noqa: E402
from app.sites.models import Site  # noqa: E402

CATEGORIES = {
    "FOOD_BOX": "food",
    "WATER_CASE": "food",
    "HAND_SANITIZER": "sanitation",
    "DISINFECTANT_WIPES": "sanitation",
}
REQUESTER_KINDS = (("hospital", "hospital_dock"), ("clinic", "hospital_dock"), ("food_hub", "food_hub"))
REGION_GRID = (3, 4)  # lat bands × lon bands → 12 regions, so scoped runs have something to choose from


@dataclass
class Loaded:
    """What was created, by the generator's ids (for scoped runs and checks)."""

    item_ids: dict[str, int] = field(default_factory=dict)  # SKU → item id
    organization_ids: dict[str, int] = field(default_factory=dict)  # generator requester → organisation id
    regions: dict[str, list[int]] = field(default_factory=dict)  # region → organisation ids
    lot_ids: dict[str, int] = field(default_factory=dict)  # generator source id → lot id
    pledge_ids: dict[str, int] = field(default_factory=dict)  # generator source id → pledge id
    line_ids: dict[str, int] = field(default_factory=dict)  # generator demand id → request line id
    seconds: float = 0.0


def _time(text: str) -> datetime:
    """An RFC 3339 time of the generator (always with an offset), as an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


def _bulk(conn: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert many rows in one executemany; their new ids in the order given."""
    if not rows:
        return []
    sa_table: Table = table.__table__
    stmt = insert(sa_table).returning(sa_table.c.id, sort_by_parameter_order=True)
    return [row[0] for row in conn.execute(stmt, list(rows))]


def _region(lat: float, lon: float, bounds: tuple[float, float, float, float]) -> str:
    lat0, lat1, lon0, lon1 = bounds
    rows, cols = REGION_GRID
    r = min(rows - 1, int((lat - lat0) / max(lat1 - lat0, 1e-9) * rows))
    c = min(cols - 1, int((lon - lon0) / max(lon1 - lon0, 1e-9) * cols))
    return f"region-{r * cols + c + 1:02d}"


def load(engine: Engine, problem: dict[str, Any], *, now: datetime | None = None) -> Loaded:
    """Insert the problem's catalog, supply and demand as rows (one transaction); see the module doc."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    shift = now - _time(problem["now"])

    def moved(text: str | None) -> datetime | None:
        return None if text is None else _time(text) + shift

    out = Loaded()
    stamps = {"created_at": now, "updated_at": now}
    with engine.begin() as conn:
        # Items and their substitution links.
        skus = [it["sku"] for it in problem["items"]]
        item_rows = [
            {
                "sku": sku,
                "name": sku.replace("_", " ").title(),
                "category": CATEGORIES.get(sku, "ppe"),
                "unit": "each",
                "pack_size": 1,
                "shelf_life_days": None,
                "active": True,
                "version": 1,
                **stamps,
            }
            for sku in skus
        ]
        out.item_ids = dict(zip(skus, _bulk(conn, Item, item_rows), strict=True))
        subs = [
            {
                "item_id": out.item_ids[it["sku"]],
                "substitute_item_id": out.item_ids[s["sku"]],
                "penalty": float(s.get("penalty", 0.0)),
            }
            for it in problem["items"]
            for s in it.get("substitutes", [])
        ]
        _bulk(conn, ItemSubstitute, subs)

        # Requesting organisations: one per generator requester, each with one delivery site.
        demands = problem["demands"]
        first: dict[str, dict[str, Any]] = {}
        for d in demands:
            first.setdefault(d["requester"], d)
        lats = [d["lat"] for d in first.values()]
        lons = [d["lon"] for d in first.values()]
        bounds = (min(lats), max(lats), min(lons), max(lons))
        requesters = list(first)
        org_rows = []
        for n, req in enumerate(requesters):
            d = first[req]
            kind = REQUESTER_KINDS[n % len(REQUESTER_KINDS)][0]
            org_rows.append(
                {
                    "name": f"{kind.replace('_', ' ').title()} {req}",
                    "kind": kind,
                    "region": _region(d["lat"], d["lon"], bounds),
                    "equity_weight": float(d.get("equity_weight", 1.0)),
                    "active": True,
                    "version": 1,
                    **stamps,
                }
            )
        org_ids = _bulk(conn, Organization, org_rows)
        out.organization_ids = dict(zip(requesters, org_ids, strict=True))
        for row, org_id in zip(org_rows, org_ids, strict=True):
            out.regions.setdefault(row["region"], []).append(org_id)
        site_rows = [
            {
                "organization_id": org_ids[n],
                "name": f"Dock {req}",
                "kind": REQUESTER_KINDS[n % len(REQUESTER_KINDS)][1],
                "lat": first[req]["lat"],
                "lon": first[req]["lon"],
                "address": None,
                "active": True,
                "version": 1,
                **stamps,
            }
            for n, req in enumerate(requesters)
        ]
        delivery_site = dict(zip(requesters, _bulk(conn, Site, site_rows), strict=True))

        # One open request per requester, holding its lines in the generator's order.
        request_rows = [
            {
                "organization_id": out.organization_ids[req],
                "site_id": delivery_site[req],
                "justification": "benchmark scenario",
                "status": "open",
                "created_by_key_id": None,
                "version": 1,
                **stamps,
            }
            for req in requesters
        ]
        request_of = dict(zip(requesters, _bulk(conn, SupplyRequest, request_rows), strict=True))
        line_rows = [
            {
                "request_id": request_of[d["requester"]],
                "item_id": out.item_ids[d["item"]],
                "quantity": d["quantity"],
                "priority": d.get("priority", "routine"),
                "needed_by": moved(d.get("needed_by")),
                "status": "open",
                "quantity_reserved": 0,
                "quantity_in_transit": 0,
                "quantity_delivered": 0,
                **stamps,
            }
            for d in demands
        ]
        out.line_ids = dict(zip((d["id"] for d in demands), _bulk(conn, RequestLine, line_rows), strict=True))

        # Supply: available now → a depot lot; available later → a confirmed pledge. Zero-quantity
        # sources are skipped (the snapshot never lists empty lots or exhausted pledges).
        sources = [s for s in problem["sources"] if s["quantity"] > 0]
        later = {s["id"] for s in sources if _time(s.get("available_at") or problem["now"]) + shift > now}
        lots = [s for s in sources if s["id"] not in later]
        offers = [s for s in sources if s["id"] in later]
        depot_org, donor_org = _bulk(
            conn,
            Organization,
            [
                {
                    "name": "Benchmark depot operator",
                    "kind": "depot_operator",
                    "region": "depots",
                    "equity_weight": 1.0,
                    "active": True,
                    "version": 1,
                    **stamps,
                },
                {
                    "name": "Benchmark donors",
                    "kind": "donor",
                    "region": "donors",
                    "equity_weight": 1.0,
                    "active": True,
                    "version": 1,
                    **stamps,
                },
            ],
        )
        depot_at = _sites_by_place(conn, lots, depot_org, "depot", stamps)
        donor_at = _sites_by_place(conn, offers, donor_org, "donor_site", stamps)
        lot_rows = [
            {
                "site_id": depot_at[(s["lat"], s["lon"])],
                "item_id": out.item_ids[s["item"]],
                "lot_code": s["id"],
                "expires_at": moved(s.get("expires_at")),
                "on_hand": s["quantity"],
                "reserved": 0,
                "version": 1,
                **stamps,
            }
            for s in lots
        ]
        out.lot_ids = dict(zip((s["id"] for s in lots), _bulk(conn, InventoryLot, lot_rows), strict=True))
        movement_rows = [
            {
                "lot_id": out.lot_ids[s["id"]],
                "kind": "receive",
                "quantity": s["quantity"],
                "delta_on_hand": s["quantity"],
                "delta_reserved": 0,
                "reason": "benchmark scenario",
                "reference": None,
                "actor_key_id": None,
                "created_at": now,
            }
            for s in lots
        ]
        _bulk(conn, InventoryMovement, movement_rows)
        pledge_rows = [
            {
                "organization_id": donor_org,
                "item_id": out.item_ids[s["item"]],
                "site_id": donor_at[(s["lat"], s["lon"])],
                "quantity": s["quantity"],
                "committed": 0,
                "available_from": moved(s.get("available_at")),
                "expires_at": moved(s.get("expires_at")),
                "status": "confirmed",
                "note": "benchmark scenario",
                "received_lot_id": None,
                "received_quantity": None,
                "version": 1,
                **stamps,
            }
            for s in offers
        ]
        out.pledge_ids = dict(zip((s["id"] for s in offers), _bulk(conn, Pledge, pledge_rows), strict=True))
    out.seconds = time.perf_counter() - started
    return out


def _sites_by_place(
    conn: Connection, sources: Sequence[dict[str, Any]], org_id: int, kind: str, stamps: dict[str, datetime]
) -> dict[tuple[float, float], int]:
    """One site per distinct location of the given sources."""
    places = list(dict.fromkeys((s["lat"], s["lon"]) for s in sources))
    rows = [
        {
            "organization_id": org_id,
            "name": f"{kind} {n + 1}",
            "kind": kind,
            "lat": lat,
            "lon": lon,
            "address": None,
            "active": True,
            "version": 1,
            **stamps,
        }
        for n, (lat, lon) in enumerate(places)
    ]
    return dict(zip(places, _bulk(conn, Site, rows), strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("problem", type=Path)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--migrate", action="store_true", help="apply the migrations first")
    args = ap.parse_args(argv)
    from app.db import make_engine

    if args.migrate:
        from app.migrate import upgrade

        upgrade(args.database_url)
    engine = make_engine(args.database_url)
    try:
        loaded = load(engine, json.loads(args.problem.read_text(encoding="utf-8")))
    finally:
        engine.dispose()
    print(
        f"loaded {len(loaded.organization_ids)} requesters in {len(loaded.regions)} regions, "
        f"{len(loaded.line_ids)} request lines, {len(loaded.lot_ids)} lots, {len(loaded.pledge_ids)} pledges "
        f"in {loaded.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
