"""Usage reports: on-hand stock and burn rate per (organisation, item) → days of supply.

When a report gives no daily usage, it is estimated from the previous report of the same
organisation and item (CDC burn-rate idea): (previous on-hand + units received since − on-hand now)
÷ days elapsed. The allocation snapshot caps request lines at their justified need from the latest
report (`latest_usage`), and gap reports read days of supply.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.items import service as items
from app.organizations.models import Organization
from app.pagination import Page, paginate
from app.principal import Principal
from app.usage.models import UsageReport, UsageReportCreate, UsageReportPublic

# A device clock running slightly ahead should not turn "now" into a rejected future timestamp.
FUTURE_TOLERANCE = timedelta(minutes=2)
SECONDS_PER_DAY = 86_400


def days_of_supply(on_hand: int, daily_usage: float | None) -> float | None:
    """on_hand ÷ daily usage; None when usage is unknown or zero (no burn, no horizon)."""
    if daily_usage is None or daily_usage <= 0:
        return None
    return on_hand / daily_usage


def estimate_daily_usage(
    *, previous_on_hand: int, previous_at: datetime, on_hand: int, at: datetime, received: int
) -> float | None:
    """Units used per day between two reports, net of deliveries received in between.

    None when it cannot be estimated: the reports are not in time order, or stock rose more than
    the deliveries explain (a count correction or an unrecorded delivery, not negative usage).
    """
    elapsed_days = (at - previous_at).total_seconds() / SECONDS_PER_DAY
    if elapsed_days <= 0:
        return None
    used = previous_on_hand + received - on_hand
    if used < 0:
        return None
    return used / elapsed_days


def effective_daily_usage(report: UsageReport) -> float | None:
    """The reported daily usage, else the estimate."""
    return report.daily_usage if report.daily_usage is not None else report.estimated_daily_usage


def to_public(report: UsageReport) -> UsageReportPublic:
    return UsageReportPublic(
        id=report.id,  # type: ignore[arg-type]
        organization_id=report.organization_id,
        item_id=report.item_id,
        on_hand=report.on_hand,
        daily_usage=report.daily_usage,
        estimated_daily_usage=report.estimated_daily_usage,
        days_of_supply=days_of_supply(report.on_hand, effective_daily_usage(report)),
        reported_at=report.reported_at,
        created_at=report.created_at,
    )


def _deliveries_received_between(session: Session, org_id: int, item_id: int, start: datetime, end: datetime) -> int:
    """Units of `item_id` delivered to `org_id`'s sites with start < delivered at ≤ end.

    Deliveries are recorded by shipments, which arrive with the allocation workflow; until a shipment
    can be delivered no organisation has received anything through the coalition, so this is 0.
    """
    return 0


def _visible(principal: Principal) -> Any:
    stmt = select(UsageReport)
    if principal.org_bound:
        stmt = stmt.where(UsageReport.organization_id == principal.organization_id)
    return stmt


def get_report(session: Session, *, principal: Principal, report_id: int) -> UsageReport:
    report = session.exec(_visible(principal).where(UsageReport.id == report_id)).first()
    if report is None:
        raise NotFound(f"usage report {report_id} not found")
    return report


def _previous(session: Session, org_id: int, item_id: int, before: datetime) -> UsageReport | None:
    stmt = (
        select(UsageReport)
        .where(UsageReport.organization_id == org_id, UsageReport.item_id == item_id)
        .where(col(UsageReport.reported_at) < before)
        .order_by(col(UsageReport.reported_at).desc(), col(UsageReport.id).desc())
        .limit(1)
    )
    return session.exec(stmt).first()


def _reporting_org(session: Session, principal: Principal, organization_id: int | None) -> int:
    own = principal.organization_id
    if own is None:
        raise Unprocessable("this key is not bound to an organization", field="organization_id")
    if organization_id is not None and organization_id != own:
        raise Unprocessable("requesters report for their own organization only", field="organization_id")
    org = session.get(Organization, own)
    if org is None or not org.active:
        raise Conflict(f"organization {own} has left the coalition and cannot report usage")
    return own


def create_report(session: Session, *, actor: Principal, data: UsageReportCreate) -> UsageReport:
    org_id = _reporting_org(session, actor, data.organization_id)
    items.get_for_reference(session, data.item_id, field="item_id")
    now = utcnow()
    reported_at = data.reported_at or now
    if reported_at > now + FUTURE_TOLERANCE:
        raise Unprocessable("reported_at may not be in the future", field="reported_at")
    estimate = None
    if data.daily_usage is None:
        previous = _previous(session, org_id, data.item_id, reported_at)
        if previous is not None:
            received = _deliveries_received_between(session, org_id, data.item_id, previous.reported_at, reported_at)
            estimate = estimate_daily_usage(
                previous_on_hand=previous.on_hand,
                previous_at=previous.reported_at,
                on_hand=data.on_hand,
                at=reported_at,
                received=received,
            )
    report = UsageReport(
        organization_id=org_id,
        item_id=data.item_id,
        on_hand=data.on_hand,
        daily_usage=data.daily_usage,
        estimated_daily_usage=estimate,
        reported_at=reported_at,
        created_by_key_id=actor.key_id,
    )
    session.add(report)
    session.flush()
    audit.record(session, actor=actor, action="usage_report.create", obj=report, before=None)
    return report


def list_reports(
    session: Session,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    organization_id: int | None = None,
    item_id: int | None = None,
    region: str | None = None,
    reported_after: datetime | None = None,
) -> Page[UsageReport]:
    stmt = _visible(principal)
    if organization_id is not None:
        stmt = stmt.where(UsageReport.organization_id == organization_id)
    if item_id is not None:
        stmt = stmt.where(UsageReport.item_id == item_id)
    if region is not None:
        in_region = select(Organization.id).where(Organization.region == region)
        stmt = stmt.where(col(UsageReport.organization_id).in_(in_region))
    if reported_after is not None:
        stmt = stmt.where(col(UsageReport.reported_at) > reported_after)
    return paginate(session, stmt, UsageReport.id, limit=limit, cursor=cursor)


def latest_usage(
    session: Session, *, organization_ids: Iterable[int] | None = None, item_ids: Iterable[int] | None = None
) -> dict[tuple[int, int], UsageReport]:
    """The latest report (by reported_at, then id) per (organization_id, item_id).

    None or empty filters mean all organisations / items.
    """
    rank = (
        func.row_number()
        .over(
            partition_by=(col(UsageReport.organization_id), col(UsageReport.item_id)),
            order_by=(col(UsageReport.reported_at).desc(), col(UsageReport.id).desc()),
        )
        .label("rank")
    )
    ranked: Any = select(col(UsageReport.id).label("id"), rank)
    org_list = list(organization_ids or [])
    item_list = list(item_ids or [])
    if org_list:
        ranked = ranked.where(col(UsageReport.organization_id).in_(org_list))
    if item_list:
        ranked = ranked.where(col(UsageReport.item_id).in_(item_list))
    sub = ranked.subquery()
    stmt = select(UsageReport).join(sub, col(UsageReport.id) == sub.c.id).where(sub.c.rank == 1)
    return {(r.organization_id, r.item_id): r for r in session.exec(stmt).all()}
