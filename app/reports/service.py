"""Reports: gap analysis, days of supply, request ageing (donor impact lives in `donor_impact`).

Read-only aggregations over the other domains, through their services where they offer the figure
(open request lines, allocatable lots, confirmed pledge supply, latest usage reports) and by direct
grouped queries where they do not. Every report takes a `Scope`: organisation-bound callers are held
to their own organisation whatever they ask for (asking for another one yields no rows, as lists do).
Rows come out in a fixed order so the same data always gives the same report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.db import utcnow
from app.inventory import service as inventory
from app.items.models import Item
from app.organizations.models import Organization
from app.pledges import service as pledges
from app.principal import Principal
from app.reports.schemas import AgeingRow, DaysOfSupplyRow, GapRow
from app.requests import service as requests
from app.requests.models import PRIORITIES, RequestLine, SupplyRequest
from app.sites.models import Site
from app.usage import service as usage

SECONDS_PER_DAY = 86_400
# Upper bounds (days) of the ageing buckets; the last bucket is open-ended.
AGE_BUCKETS = (1.0, 3.0, 7.0)


@dataclass(frozen=True)
class Scope:
    """What a report covers: filters, with organisation-bound callers pinned to their organisation."""

    organization_id: int | None = None
    region: str | None = None
    item_id: int | None = None
    nothing: bool = False

    def org_ok(self, organization_id: int | None) -> bool:
        return self.organization_id is None or organization_id == self.organization_id

    def region_ok(self, region: str | None) -> bool:
        return self.region is None or region == self.region

    def item_ok(self, item_id: int) -> bool:
        return self.item_id is None or item_id == self.item_id

    @property
    def item_ids(self) -> list[int] | None:
        return [self.item_id] if self.item_id is not None else None


def scope_for(
    principal: Principal, *, organization_id: int | None = None, region: str | None = None, item_id: int | None = None
) -> Scope:
    if principal.org_bound:
        own = principal.organization_id
        foreign = organization_id is not None and organization_id != own
        return Scope(organization_id=own, region=region, item_id=item_id, nothing=foreign or own is None)
    return Scope(organization_id=organization_id, region=region, item_id=item_id)


def organizations_by_id(session: Session) -> dict[int, Organization]:
    return {o.id: o for o in session.exec(select(Organization)).all() if o.id is not None}


def items_by_id(session: Session, ids: Iterable[int]) -> dict[int, Item]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {i.id: i for i in session.exec(select(Item).where(col(Item.id).in_(wanted))).all() if i.id is not None}


def _days(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# ---------------------------------------------------------------- gap analysis


@dataclass
class _Cell:
    requested: int = 0
    available: int = 0
    pledged: int = 0
    in_transit: int = 0
    usage_on_hand: int = 0
    usage_daily: float = 0.0

    def add(self, other: _Cell) -> None:
        self.requested += other.requested
        self.available += other.available
        self.pledged += other.pledged
        self.in_transit += other.in_transit
        self.usage_on_hand += other.usage_on_hand
        self.usage_daily += other.usage_daily

    def row(self, region: str | None, item: Item) -> GapRow:
        supply = self.available + self.pledged
        return GapRow(
            region=region,
            item_id=item.id or 0,
            item_sku=item.sku,
            item_name=item.name,
            requested=self.requested,
            available=self.available,
            pledged=self.pledged,
            in_transit=self.in_transit,
            days_of_supply=_days(self.usage_on_hand / self.usage_daily) if self.usage_daily > 0 else None,
            gap=max(0, self.requested - supply),
            surplus=max(0, supply - self.requested),
        )


def _gap_cells(session: Session, scope: Scope, now: datetime) -> dict[tuple[int, str], _Cell]:
    """(item_id, region) → figures. Demand and usage count in the requesting organisation's region,
    depot stock in its site owner's region, pledges in the donor's region."""
    orgs = organizations_by_id(session)
    cells: dict[tuple[int, str], _Cell] = defaultdict(_Cell)

    def cell(item_id: int, org_id: int | None) -> _Cell | None:
        org = orgs.get(org_id) if org_id is not None else None
        if org is None or not scope.org_ok(org_id) or not scope.region_ok(org.region) or not scope.item_ok(item_id):
            return None
        return cells[(item_id, org.region)]

    for open_line in requests.open_lines(session, item_ids=scope.item_ids):
        if (c := cell(open_line.line.item_id, open_line.organization.id)) is not None:
            c.requested += open_line.remaining

    moving = session.exec(
        select(RequestLine.item_id, SupplyRequest.organization_id, func.sum(RequestLine.quantity_in_transit))
        .join(SupplyRequest, col(SupplyRequest.id) == col(RequestLine.request_id))
        .where(RequestLine.quantity_in_transit > 0)
        .group_by(col(RequestLine.item_id), col(SupplyRequest.organization_id))
    ).all()
    for item_id, org_id, quantity in moving:
        if (c := cell(item_id, org_id)) is not None:
            c.in_transit += int(quantity)

    lots = inventory.allocatable_lots(session, now=now, item_ids=scope.item_ids)
    site_ids = sorted({lot.site_id for lot in lots})
    owner = (
        dict(session.exec(select(Site.id, Site.organization_id).where(col(Site.id).in_(site_ids))).all())
        if site_ids
        else {}
    )
    for lot in lots:
        if (c := cell(lot.item_id, owner.get(lot.site_id))) is not None:
            c.available += lot.on_hand - lot.reserved

    for pledge in pledges.confirmed_supply(session, now=now, item_ids=scope.item_ids):
        if (c := cell(pledge.item_id, pledge.organization_id)) is not None:
            c.pledged += pledge.quantity - pledge.committed

    org_filter = [scope.organization_id] if scope.organization_id is not None else None
    for (org_id, item_id), report in usage.latest_usage(
        session, organization_ids=org_filter, item_ids=scope.item_ids
    ).items():
        daily = usage.effective_daily_usage(report)
        org = orgs.get(org_id)
        if daily is None or daily <= 0 or org is None or not org.active:
            continue
        if (c := cell(item_id, org_id)) is not None:
            c.usage_on_hand += report.on_hand
            c.usage_daily += daily
    return cells


def gap_report(
    session: Session, *, scope: Scope, group_by: str = "region", now: datetime | None = None
) -> list[GapRow]:
    """Per (item × region), or per item across regions (`coalition`: the state-wide roll-up, where
    supply anywhere may cover demand anywhere, so the gap is taken over the sums)."""
    if scope.nothing:
        return []
    cells = _gap_cells(session, scope, now or utcnow())
    items = items_by_id(session, (item_id for item_id, _ in cells))
    if group_by == "coalition":
        totals: dict[int, _Cell] = defaultdict(_Cell)
        for (item_id, _region), c in cells.items():
            totals[item_id].add(c)
        rows = [c.row(None, items[item_id]) for item_id, c in totals.items()]
        return sorted(rows, key=lambda r: (r.item_sku, r.item_id))
    rows = [c.row(region, items[item_id]) for (item_id, region), c in cells.items()]
    return sorted(rows, key=lambda r: (r.region or "", r.item_sku, r.item_id))


# ---------------------------------------------------------------- days of supply


def days_of_supply_report(
    session: Session, *, scope: Scope, threshold_days: float, below_only: bool = False
) -> list[DaysOfSupplyRow]:
    """Per (organisation, item): the latest usage report's on-hand ÷ daily usage (reported, else
    estimated). `below_threshold` when known and under the threshold."""
    if scope.nothing:
        return []
    orgs = organizations_by_id(session)
    org_filter = [scope.organization_id] if scope.organization_id is not None else None
    latest = usage.latest_usage(session, organization_ids=org_filter, item_ids=scope.item_ids)
    items = items_by_id(session, (item_id for _, item_id in latest))
    rows: list[DaysOfSupplyRow] = []
    for (org_id, item_id), report in latest.items():
        org = orgs.get(org_id)
        if org is None or not org.active or not scope.region_ok(org.region):
            continue
        daily = usage.effective_daily_usage(report)
        dos = usage.days_of_supply(report.on_hand, daily)
        below = dos is not None and dos < threshold_days
        if below_only and not below:
            continue
        item = items[item_id]
        rows.append(
            DaysOfSupplyRow(
                organization_id=org_id,
                organization_name=org.name,
                region=org.region,
                item_id=item_id,
                item_sku=item.sku,
                item_name=item.name,
                on_hand=report.on_hand,
                daily_usage=daily,
                usage_estimated=report.daily_usage is None and report.estimated_daily_usage is not None,
                days_of_supply=_days(dos),
                below_threshold=below,
                reported_at=report.reported_at,
            )
        )
    return sorted(rows, key=lambda r: (r.organization_name, r.item_sku, r.item_id))


# ---------------------------------------------------------------- request ageing


def _bucket(age_days: float) -> int:
    for index, bound in enumerate(AGE_BUCKETS):
        if age_days < bound:
            return index
    return len(AGE_BUCKETS)


@dataclass
class _Ageing:
    open_lines: int = 0
    remaining: int = 0
    oldest_age: float | None = None
    oldest_line_id: int | None = None
    buckets: list[int] = field(default_factory=lambda: [0] * (len(AGE_BUCKETS) + 1))

    def add(self, line_id: int, remaining: int, age_days: float) -> None:
        self.open_lines += 1
        self.remaining += remaining
        self.buckets[_bucket(age_days)] += 1
        if self.oldest_age is None or age_days > self.oldest_age:
            self.oldest_age, self.oldest_line_id = age_days, line_id


def request_ageing_report(
    session: Session, *, scope: Scope, group_by: str = "priority", now: datetime | None = None
) -> list[AgeingRow]:
    """Lines still waiting for stock (remaining > 0, not cancelled) by age since submission:
    [0, 1), [1, 3), [3, 7) and ≥ 7 days. Per priority (every priority, even without lines), or per
    organisation and priority (only those with waiting lines)."""
    if scope.nothing:
        return []
    now = now or utcnow()
    groups: dict[tuple[int | None, str], _Ageing] = defaultdict(_Ageing)
    names: dict[int, str] = {}
    if group_by == "priority":
        for priority in PRIORITIES:
            groups[(None, priority)] = _Ageing()
    for open_line in requests.open_lines(session, item_ids=scope.item_ids):
        org, line = open_line.organization, open_line.line
        if not scope.org_ok(org.id) or not scope.region_ok(org.region):
            continue
        key = (org.id, line.priority) if group_by == "organization" else (None, line.priority)
        names[org.id or 0] = org.name
        age = (now - line.created_at).total_seconds() / SECONDS_PER_DAY
        groups[key].add(line.id or 0, open_line.remaining, max(age, 0.0))
    rank = {p: i for i, p in enumerate(PRIORITIES)}
    rows = [
        AgeingRow(
            organization_id=org_id,
            organization_name=names.get(org_id) if org_id is not None else None,
            priority=priority,
            open_lines=g.open_lines,
            remaining=g.remaining,
            age_0_1d=g.buckets[0],
            age_1_3d=g.buckets[1],
            age_3_7d=g.buckets[2],
            age_over_7d=g.buckets[3],
            oldest_age_days=_days(g.oldest_age),
            oldest_line_id=g.oldest_line_id,
        )
        for (org_id, priority), g in groups.items()
    ]
    return sorted(rows, key=lambda r: (rank.get(r.priority, 99), r.organization_name or "", r.organization_id or 0))
