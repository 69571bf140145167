"""/v1/usage-reports: on-hand and burn rate reported by requesting organisations. Reports are
immutable records of a moment; a correction is a new report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.deps import Allow, ListDep, SecuredRoute, SessionDep
from app.models_common import Timestamp
from app.pagination import PageOut
from app.principal import Principal
from app.usage import service
from app.usage.models import UsageReportCreate, UsageReportPublic

router = APIRouter(prefix="/v1/usage-reports", tags=["usage reports"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics", "requester")]
Reporter = Annotated[Principal, Allow("requester")]


@router.get("", response_model=PageOut[UsageReportPublic])
def list_usage_reports(
    session: SessionDep,
    principal: Reader,
    page: ListDep,
    organization_id: int | None = None,
    item_id: int | None = None,
    region: Annotated[str | None, Query(max_length=100, description="The reporting organisation's region")] = None,
    reported_after: Timestamp | None = None,
) -> PageOut[UsageReportPublic]:
    result = service.list_reports(
        session,
        principal=principal,
        limit=page.limit,
        cursor=page.cursor,
        organization_id=organization_id,
        item_id=item_id,
        region=region,
        reported_after=reported_after,
    )
    return PageOut(items=[service.to_public(r) for r in result.items], next_cursor=result.next_cursor)


@router.post("", status_code=201, response_model=UsageReportPublic)
def create_usage_report(
    session: SessionDep, principal: Reporter, body: UsageReportCreate, response: Response
) -> UsageReportPublic:
    """Report on-hand units (and daily usage, if known) of one item for your own organisation."""
    report = service.create_report(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/usage-reports/{report.id}"
    return service.to_public(report)


@router.get("/{report_id}", response_model=UsageReportPublic)
def get_usage_report(session: SessionDep, principal: Reader, report_id: int) -> UsageReportPublic:
    return service.to_public(service.get_report(session, principal=principal, report_id=report_id))
