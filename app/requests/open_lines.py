"""Open request lines: what still wants stock (allocation snapshots, gap and ageing reports).

Part of the requests domain's service (re-exported by `app.requests.service`, which other domains call).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.organizations.models import Organization
from app.requests.models import RequestLine, SupplyRequest
from app.sites.models import Site


@dataclass(frozen=True)
class OpenLine:
    """A request line that still wants stock, with its request, organisation and delivery site."""

    line: RequestLine
    request: SupplyRequest
    organization: Organization
    site: Site

    @property
    def remaining(self) -> int:
        return self.line.remaining


@dataclass(frozen=True, slots=True)
class OpenLineRow:
    """What the allocation snapshot needs about an open line, as plain values: the snapshot reads every
    open line on the trigger's critical path, and four ORM objects per line cost ~5× the query."""

    line_id: int
    item_id: int
    priority: str
    needed_by: datetime | None
    remaining: int
    organization_id: int
    equity_weight: float
    site_id: int
    lat: float
    lon: float


# remaining = quantity − (reserved + in transit + delivered), as RequestLine.remaining, in SQL
_REMAINING = (
    col(RequestLine.quantity)
    - col(RequestLine.quantity_reserved)
    - col(RequestLine.quantity_in_transit)
    - col(RequestLine.quantity_delivered)
)


def _open(stmt: Any, item_ids: Iterable[int] | None, regions: Iterable[str] | None) -> Any:
    """Joins and filters shared by `open_lines` and `open_line_rows` (the same lines, in line id order)."""
    stmt = (
        stmt.select_from(RequestLine)
        .join(SupplyRequest, col(RequestLine.request_id) == col(SupplyRequest.id))
        .join(Organization, col(SupplyRequest.organization_id) == col(Organization.id))
        .join(Site, col(SupplyRequest.site_id) == col(Site.id))
        .where(RequestLine.status != "cancelled", _REMAINING > 0)
        .where(col(Organization.active).is_(True), col(Site.active).is_(True))
        .order_by(col(RequestLine.id))
    )
    item_list, region_list = list(item_ids or []), list(regions or [])
    if item_list:
        stmt = stmt.where(col(RequestLine.item_id).in_(item_list))
    if region_list:
        stmt = stmt.where(col(Organization.region).in_(region_list))
    return stmt


def open_lines(
    session: Session, *, item_ids: Iterable[int] | None = None, regions: Iterable[str] | None = None
) -> list[OpenLine]:
    """Lines with remaining > 0 that are not cancelled, in submission (line id) order.

    Empty or None `item_ids` / `regions` mean all (as an allocation scope does); `regions` are the
    requesting organisations' regions. Lines of organisations that left the coalition or whose
    delivery site was deactivated are left out: nothing can be delivered to them.
    """
    stmt = _open(select(RequestLine, SupplyRequest, Organization, Site), item_ids, regions)
    return [
        OpenLine(line=ln, request=rq, organization=org, site=site) for ln, rq, org, site in session.exec(stmt).all()
    ]


def open_line_rows(
    session: Session, *, item_ids: Iterable[int] | None = None, regions: Iterable[str] | None = None
) -> list[OpenLineRow]:
    """The lines `open_lines` returns (same filters, same order), as `OpenLineRow` values."""
    columns = (
        RequestLine.id,
        RequestLine.item_id,
        RequestLine.priority,
        RequestLine.needed_by,
        _REMAINING,
        Organization.id,
        Organization.equity_weight,
        Site.id,
        Site.lat,
        Site.lon,
    )
    return [OpenLineRow(*row) for row in session.execute(_open(select(*columns), item_ids, regions)).all()]
