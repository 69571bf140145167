"""/v1/allocation-runs/{run_id}/plan…: review, edit, approve, reject, CSV exports.

Logistics reviews and decides; admin may read; every other role gets 403. The plan's ETag covers its
version and the last approved plan (the review shows the difference from it); edits, approval and
rejection honour If-Match (412 when stale).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from app.allocation import plan_approval, plan_exports
from app.allocation import plans_service as service
from app.allocation.models import Plan
from app.allocation.plan_schemas import PlanLineUpdate, PlanPublic
from app.deps import Allow, IfMatch, IfMatchRequired, SecuredRoute, SessionDep, check_if_match, etag_matches
from app.principal import Principal

router = APIRouter(prefix="/v1/allocation-runs", tags=["plans"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics")]
Writer = Annotated[Principal, Allow("logistics")]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]
CSV = "text/csv; charset=utf-8"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"description": "CSV (RFC 4180)", "content": {"text/csv": {}}}}


def _if_match(if_match: str | None, *, required: bool = False) -> Callable[[str], None]:
    # The plan's ETag also names the last approved plan (the review shows a diff against it), so
    # approving another plan changes it. A write needs only *this* plan unchanged: compare its version,
    # so competing approvals lose on the stock they share (409 with conflicts), not on a cache tag.
    return lambda etag: check_if_match(_own_version(if_match), _own_version(etag) or etag, required=required)


def _own_version(tags: str | None) -> str | None:
    return None if tags is None else re.sub(r'-a\d+"', '"', tags)


def _out(session: SessionDep, plan: Plan, response: Response) -> PlanPublic:
    response.headers["ETag"] = service.plan_etag(session, plan)
    return service.to_public(session, plan)


@router.get("/{run_id}/plan", response_model=PlanPublic)
def get_plan(
    session: SessionDep, principal: Reader, run_id: int, response: Response, if_none_match: IfNoneMatch = None
) -> PlanPublic | Response:
    """Allocation lines, per-demand fill / unmet / reason, KPIs next to the greedy baseline's, and the
    difference from the last approved plan."""
    plan = service.find_plan(session, run_id=run_id)
    etag = service.plan_etag(session, plan)
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return _out(session, plan, response)


@router.patch("/{run_id}/plan/lines/{line_id}", response_model=PlanPublic)
def update_line(
    session: SessionDep,
    principal: Writer,
    run_id: int,
    line_id: int,
    body: PlanLineUpdate,
    response: Response,
    if_match: IfMatchRequired = None,
) -> PlanPublic:
    """Change a proposed plan's line quantity; re-validated against the run's snapshot, marked manual."""
    plan = service.update_line(
        session,
        actor=principal,
        run_id=run_id,
        line_id=line_id,
        quantity=body.quantity,
        precondition=_if_match(if_match, required=True),
    )
    return _out(session, plan, response)


@router.delete("/{run_id}/plan/lines/{line_id}", response_model=PlanPublic)
def remove_line(
    session: SessionDep,
    principal: Writer,
    run_id: int,
    line_id: int,
    response: Response,
    if_match: IfMatchRequired = None,
) -> PlanPublic:
    """Remove a line from a proposed plan; KPIs are recomputed. Answers with the updated plan."""
    plan = service.remove_line(
        session, actor=principal, run_id=run_id, line_id=line_id, precondition=_if_match(if_match, required=True)
    )
    return _out(session, plan, response)


@router.post("/{run_id}/plan/approve", response_model=PlanPublic)
def approve(
    session: SessionDep, principal: Writer, run_id: int, response: Response, if_match: IfMatchRequired = None
) -> PlanPublic:
    """Reserve stock, commit pledges and create shipments in one transaction — or 409 listing every
    line that no longer fits (`conflicts`), with nothing written."""
    plan = plan_approval.approve(
        session, actor=principal, run_id=run_id, precondition=_if_match(if_match, required=True)
    )
    return _out(session, plan, response)


@router.post("/{run_id}/plan/reject", response_model=PlanPublic)
def reject(
    session: SessionDep, principal: Writer, run_id: int, response: Response, if_match: IfMatch = None
) -> PlanPublic:
    """The plan is kept for the record; nothing is reserved."""
    plan = service.reject(session, actor=principal, run_id=run_id, precondition=_if_match(if_match))
    return _out(session, plan, response)


@router.get("/{run_id}/plan/pick-list.csv", response_class=Response, responses=CSV_RESPONSE)
def pick_list(session: SessionDep, principal: Reader, run_id: int, site_id: int | None = None) -> Response:
    """Per depot: lot, item, quantity, destination. `site_id` limits it to one depot (or donor site)."""
    body = plan_exports.pick_list(session, run_id=run_id, site_id=site_id)
    name = f"plan-run-{run_id}-pick-list" + (f"-site-{site_id}" if site_id is not None else "") + ".csv"
    return Response(body, media_type=CSV, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/{run_id}/plan/manifest.csv", response_class=Response, responses=CSV_RESPONSE)
def manifest(session: SessionDep, principal: Reader, run_id: int, site_id: int | None = None) -> Response:
    """Per destination: item, quantity, origin. `site_id` limits it to one destination."""
    body = plan_exports.manifest(session, run_id=run_id, site_id=site_id)
    name = f"plan-run-{run_id}-manifest" + (f"-site-{site_id}" if site_id is not None else "") + ".csv"
    return Response(body, media_type=CSV, headers={"Content-Disposition": f'attachment; filename="{name}"'})
