"""/v1/reports/…: gap analysis, days of supply, request ageing, donor impact.

JSON by default; the same rows as CSV with `?format=csv` (or `Accept: text/csv`) and as XLSX with
`?format=xlsx`. Admin and logistics see everything; a requester only its own organisation's figures
(gap, days of supply, request ageing); a donor only its own impact; a driver nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from app.db import utcnow
from app.deps import Allow, SecuredRoute, SessionDep
from app.principal import Principal
from app.reports import service, tabular
from app.reports.donor_impact import donor_impact_report
from app.reports.schemas import (
    AgeingGroup,
    AgeingRow,
    DaysOfSupplyRow,
    DonorImpactRow,
    GapGroup,
    GapRow,
    ReportOut,
    columns_of,
)

router = APIRouter(prefix="/v1/reports", tags=["reports"], route_class=SecuredRoute)

OwnOrgReader = Annotated[Principal, Allow("admin", "logistics", "requester")]
DonorReader = Annotated[Principal, Allow("admin", "logistics", "donor")]
ReportFormat = Literal["json", "csv", "xlsx"]
FormatQuery = Annotated[
    ReportFormat | None, Query(alias="format", description="json (default), csv or xlsx; or send Accept: text/csv")
]
Region = Annotated[str | None, Query(max_length=100)]
TABULAR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {tabular.CSV_MEDIA_TYPE: {}, tabular.XLSX_MEDIA_TYPE: {}}}
}


def negotiate(request: Request, fmt: ReportFormat | None) -> ReportFormat:
    if fmt is not None:
        return fmt
    accept = request.headers.get("accept", "")
    if "text/csv" in accept:
        return "csv"
    if tabular.XLSX_MEDIA_TYPE in accept:
        return "xlsx"
    return "json"


def respond(
    name: str, fmt: ReportFormat, row_type: type[BaseModel], rows: Sequence[BaseModel], parameters: dict[str, Any]
) -> ReportOut[Any] | Response:
    if fmt == "json":
        return ReportOut[Any](report=name, generated_at=utcnow(), parameters=parameters, items=list(rows))
    body = tabular.render(fmt, columns_of(row_type), (r.model_dump() for r in rows), title=name)
    disposition = f'attachment; filename="{name}-report.{fmt}"'
    return Response(content=body, media_type=tabular.media_type(fmt), headers={"Content-Disposition": disposition})


@router.get("/gap", response_model=ReportOut[GapRow], responses=TABULAR_RESPONSES)
def gap(
    request: Request,
    session: SessionDep,
    principal: OwnOrgReader,
    group_by: GapGroup = "region",
    region: Region = None,
    item_id: int | None = None,
    organization_id: Annotated[int | None, Query(description="Only this organisation's demand, stock, pledges")] = None,
    fmt: FormatQuery = None,
) -> Any:
    """Gap analysis per item × region (or per item across regions with `group_by=coalition`):
    requested (remaining on open lines), available (unexpired, unreserved depot stock), pledged
    (confirmed, uncommitted), in transit, days of supply, gap = max(0, requested − available − pledged)."""
    scope = service.scope_for(principal, organization_id=organization_id, region=region, item_id=item_id)
    rows = service.gap_report(session, scope=scope, group_by=group_by)
    params = {"group_by": group_by, "region": region, "item_id": item_id, "organization_id": scope.organization_id}
    return respond("gap", negotiate(request, fmt), GapRow, rows, params)


@router.get("/days-of-supply", response_model=ReportOut[DaysOfSupplyRow], responses=TABULAR_RESPONSES)
def days_of_supply(
    request: Request,
    session: SessionDep,
    principal: OwnOrgReader,
    threshold_days: Annotated[
        float | None, Query(gt=0, le=3650, description="Flag below this many days (default: the server setting)")
    ] = None,
    below_threshold: Annotated[bool, Query(description="Only the flagged rows")] = False,
    region: Region = None,
    item_id: int | None = None,
    organization_id: int | None = None,
    fmt: FormatQuery = None,
) -> Any:
    """Per organisation and item, from the latest usage report: on hand ÷ daily usage (reported, else
    estimated), flagged `below_threshold` under `threshold_days`."""
    threshold = threshold_days if threshold_days is not None else request.app.state.settings.days_of_supply_threshold
    scope = service.scope_for(principal, organization_id=organization_id, region=region, item_id=item_id)
    rows = service.days_of_supply_report(session, scope=scope, threshold_days=threshold, below_only=below_threshold)
    params = {
        "threshold_days": threshold,
        "below_threshold": below_threshold,
        "region": region,
        "item_id": item_id,
        "organization_id": scope.organization_id,
    }
    return respond("days-of-supply", negotiate(request, fmt), DaysOfSupplyRow, rows, params)


@router.get("/request-ageing", response_model=ReportOut[AgeingRow], responses=TABULAR_RESPONSES)
def request_ageing(
    request: Request,
    session: SessionDep,
    principal: OwnOrgReader,
    group_by: AgeingGroup = "priority",
    region: Region = None,
    item_id: int | None = None,
    organization_id: int | None = None,
    fmt: FormatQuery = None,
) -> Any:
    """Lines still waiting for stock, by age since submission (0–1, 1–3, 3–7, over 7 days), per
    priority or per organisation and priority, with the oldest line's age."""
    scope = service.scope_for(principal, organization_id=organization_id, region=region, item_id=item_id)
    rows = service.request_ageing_report(session, scope=scope, group_by=group_by)
    params = {"group_by": group_by, "region": region, "item_id": item_id, "organization_id": scope.organization_id}
    return respond("request-ageing", negotiate(request, fmt), AgeingRow, rows, params)


@router.get("/donor-impact", response_model=ReportOut[DonorImpactRow], responses=TABULAR_RESPONSES)
def donor_impact(
    request: Request,
    session: SessionDep,
    principal: DonorReader,
    region: Region = None,
    item_id: int | None = None,
    organization_id: int | None = None,
    fmt: FormatQuery = None,
) -> Any:
    """Per donor organisation and item: pledged, confirmed, committed, received into depots, in
    transit and delivered to requesters, and the organisations reached."""
    scope = service.scope_for(principal, organization_id=organization_id, region=region, item_id=item_id)
    rows = donor_impact_report(session, scope=scope)
    params = {"region": region, "item_id": item_id, "organization_id": scope.organization_id}
    return respond("donor-impact", negotiate(request, fmt), DonorImpactRow, rows, params)
