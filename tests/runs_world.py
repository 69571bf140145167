"""A tiny coalition for allocation-run and worker tests, written as rows directly (fast, and independent
of other domains' write paths): organisations, sites, items, lots, pledges, requests, usage reports."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from app.db import transaction, utcnow
from app.inventory.models import InventoryLot
from app.items.models import Item, ItemSubstitute
from app.organizations.models import Organization
from app.pledges.models import Pledge
from app.requests.models import RequestLine, SupplyRequest
from app.sites.models import Site
from app.usage.models import UsageReport

_seq = itertools.count(1)


class Rows:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, obj: SQLModel) -> Any:
        with transaction(self.engine) as session:
            session.add(obj)
            session.flush()
            return obj

    def org(self, kind: str = "hospital", region: str = "north", weight: float = 1.0) -> Organization:
        return self.add(Organization(name=f"{kind}-{next(_seq)}", kind=kind, region=region, equity_weight=weight))

    def site(self, org: Organization, kind: str = "depot", lat: float = 40.0, lon: float = -74.0) -> Site:
        return self.add(Site(organization_id=org.id, name=f"{kind}-{next(_seq)}", kind=kind, lat=lat, lon=lon))

    def item(self, sku: str, substitutes: tuple[tuple[Item, float], ...] = ()) -> Item:
        item = self.add(Item(sku=sku, name=sku, category="ppe"))
        for sub, penalty in substitutes:
            self.add(ItemSubstitute(item_id=item.id, substitute_item_id=sub.id, penalty=penalty))
        return item

    def lot(
        self, site: Site, item: Item, on_hand: int, reserved: int = 0, expires_at: datetime | None = None
    ) -> InventoryLot:
        return self.add(
            InventoryLot(site_id=site.id, item_id=item.id, on_hand=on_hand, reserved=reserved, expires_at=expires_at)
        )

    def pledge(
        self,
        org: Organization,
        site: Site,
        item: Item,
        quantity: int,
        *,
        committed: int = 0,
        status: str = "confirmed",
        available_from: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> Pledge:
        return self.add(
            Pledge(
                organization_id=org.id,
                site_id=site.id,
                item_id=item.id,
                quantity=quantity,
                committed=committed,
                status=status,
                available_from=available_from or utcnow(),
                expires_at=expires_at,
            )
        )

    def line(
        self,
        org: Organization,
        site: Site,
        item: Item,
        quantity: int,
        priority: str = "routine",
        *,
        needed_by: datetime | None = None,
        reserved: int = 0,
        delivered: int = 0,
        status: str = "open",
    ) -> RequestLine:
        request = self.add(SupplyRequest(organization_id=org.id, site_id=site.id, status=status))
        return self.add(
            RequestLine(
                request_id=request.id,
                item_id=item.id,
                quantity=quantity,
                priority=priority,
                needed_by=needed_by,
                status=status,
                quantity_reserved=reserved,
                quantity_delivered=delivered,
            )
        )

    def usage(
        self, org: Organization, item: Item, on_hand: int, daily: float | None, *, age: timedelta = timedelta(0)
    ) -> UsageReport:
        return self.add(
            UsageReport(
                organization_id=org.id, item_id=item.id, on_hand=on_hand, daily_usage=daily, reported_at=utcnow() - age
            )
        )


@dataclass
class SmallWorld:
    """One depot, two hospitals in two regions, N95 with KN95 as a substitute, and gloves."""

    rows: Rows
    depot: Site
    north: Organization
    south: Organization
    north_site: Site
    south_site: Site
    donor: Organization
    donor_site: Site
    n95: Item
    kn95: Item
    gloves: Item


def small_world(engine: Engine) -> SmallWorld:
    rows = Rows(engine)
    operator = rows.org("depot_operator", "north")
    north = rows.org("hospital", "north", weight=1.5)
    south = rows.org("hospital", "south")
    donor = rows.org("donor", "north")
    kn95 = rows.item("KN95")
    n95 = rows.item("N95", substitutes=((kn95, 0.3),))
    gloves = rows.item("GLOVES")
    return SmallWorld(
        rows=rows,
        depot=rows.site(operator, "depot", 40.70, -74.00),
        north=north,
        south=south,
        north_site=rows.site(north, "hospital_dock", 40.80, -73.95),
        south_site=rows.site(south, "hospital_dock", 40.60, -74.10),
        donor=donor,
        donor_site=rows.site(donor, "donor_site", 40.75, -73.90),
        n95=n95,
        kn95=kn95,
        gloves=gloves,
    )


def later(hours: float) -> datetime:
    return utcnow() + timedelta(hours=hours)


def stocked_small_world(engine: Engine) -> SmallWorld:
    """The small world with stock (60 N95, 30 KN95 at the depot) and two 50-unit N95 lines (north
    critical, south routine): what the worker tests solve."""
    w = small_world(engine)
    w.rows.lot(w.depot, w.n95, 60)
    w.rows.lot(w.depot, w.kn95, 30)
    w.rows.line(w.north, w.north_site, w.n95, 50, "critical")
    w.rows.line(w.south, w.south_site, w.n95, 50, "routine")
    return w
