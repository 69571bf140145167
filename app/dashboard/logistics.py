"""Coalition pages (logistics; admin reads): gap analysis, the map, allocation runs with live progress."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlmodel import Session, col, select
from starlette.responses import JSONResponse, Response

from app.allocation import plans_service, runs_service
from app.allocation.models import AllocationRun, Plan
from app.allocation.runs_schemas import RunCreate
from app.dashboard import svg
from app.dashboard.forms import pydantic_errors
from app.dashboard.web import (
    DashboardRoute,
    FormDep,
    Viewer,
    all_pages,
    allow,
    by_id,
    error_message,
    fmt_dt,
    redirect,
    render,
)
from app.deps import SessionDep
from app.errors import DomainError
from app.items import service as items
from app.organizations import service as organizations
from app.reports import service as reports
from app.sites import service as sites

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

Reader = Annotated[Viewer, allow("admin", "logistics")]
Writer = Annotated[Viewer, allow("logistics")]
RECENT_RUNS = 50
TOP_FLOWS = 12  # listed beside the map
HEAT_STEPS = (0.0, 0.25, 0.5, 0.75)  # share of demand uncovered → heat-0 … heat-4


def heat_class(gap: int, requested: int) -> str:
    if gap <= 0 or requested <= 0:
        return "heat-0"
    share = gap / requested
    return f"heat-{sum(1 for step in HEAT_STEPS if share > step)}"


@router.get("/gaps")
def gaps(request: Request, session: SessionDep, viewer: Reader) -> Response:
    scope = reports.scope_for(viewer.principal)
    rows = reports.gap_report(session, scope=scope, group_by="region")
    regions = sorted({r.region or "" for r in rows})
    grid: dict[int, dict[str, Any]] = {}
    for r in rows:
        entry = grid.setdefault(r.item_id, {"sku": r.item_sku, "name": r.item_name, "cells": {}})
        entry["cells"][r.region or ""] = {"row": r, "heat": heat_class(r.gap, r.requested)}
    heatmap = sorted(grid.values(), key=lambda e: e["sku"])
    low = reports.days_of_supply_report(
        session, scope=scope, threshold_days=request.app.state.settings.days_of_supply_threshold, below_only=True
    )
    low.sort(key=lambda r: (r.days_of_supply if r.days_of_supply is not None else 0.0, r.organization_name))
    totals = {k: sum(getattr(r, k) for r in rows) for k in ("requested", "available", "pledged", "in_transit", "gap")}
    return render(
        request,
        "gaps.html",
        viewer,
        rows=rows,
        regions=regions,
        heatmap=heatmap,
        low=low,
        totals=totals,
        threshold=request.app.state.settings.days_of_supply_threshold,
    )


def latest_plan(session: Session, run_id: int | None) -> Plan | None:
    """The plan of `run_id`, else the newest proposed or approved plan: what the map draws as flows."""
    if run_id is not None:
        return session.exec(select(Plan).where(Plan.run_id == run_id)).first()
    stmt = select(Plan).where(col(Plan.state).in_(("proposed", "approved"))).order_by(col(Plan.id).desc())
    return session.exec(stmt.limit(1)).first()


@router.get("/map")
def site_map(request: Request, session: SessionDep, viewer: Reader, run: int | None = None) -> Response:
    all_sites = [s for s in all_pages(sites.list_sites, session=session, principal=viewer.principal) if s.active]
    orgs = by_id(all_pages(organizations.list_organizations, session=session, principal=viewer.principal))
    project = svg.projection((s.lat, s.lon) for s in all_sites)
    points = []
    for s in all_sites:
        x, y = project(s.lat, s.lon)
        owner = orgs.get(s.organization_id)
        points.append(svg.Point(s.id or 0, x, y, s.kind, s.name, owner.name if owner else ""))
    site_by_id = by_id(all_sites)
    plan = latest_plan(session, run)
    flows: list[svg.FlowLine] = []
    if plan is not None:
        totals: dict[tuple[int, int], int] = defaultdict(int)
        for line in plans_service.lines_of(session, plan.id or 0):
            totals[(line.origin_site_id, line.destination_site_id)] += line.quantity
        largest = max(totals.values(), default=0)
        for (origin, dest), quantity in sorted(totals.items(), key=lambda kv: -kv[1]):
            a, b = site_by_id.get(origin), site_by_id.get(dest)
            if a is None or b is None:
                continue
            (x1, y1), (x2, y2) = project(a.lat, a.lon), project(b.lat, b.lon)
            title = f"{a.name} → {b.name}: {quantity:,} units"
            flows.append(svg.FlowLine(x1, y1, x2, y2, svg.flow_width(quantity, largest), quantity, title))
    bar_px, bar_label = svg.scale_bar(project)
    return render(
        request,
        "map.html",
        viewer,
        points=points,
        flows=flows,
        top_flows=flows[:TOP_FLOWS],
        plan=plan,
        proj=project,
        grid=svg.graticule(project),
        labels=svg.place_labels([p for p in points if p.kind == "depot"]),
        bar_px=bar_px,
        bar_label=bar_label,
        counts={kind: sum(1 for p in points if p.kind == kind) for kind in sorted({p.kind for p in points})},
    )


def _regions(session: Session, viewer: Viewer) -> list[str]:
    orgs = all_pages(organizations.list_organizations, session=session, principal=viewer.principal)
    return sorted({o.region for o in orgs})


def _runs_page(request: Request, session: Session, viewer: Viewer, status: int = 200, **form: Any) -> Response:
    recent = session.exec(
        runs_service.runs_without_problem().order_by(col(AllocationRun.id).desc()).limit(RECENT_RUNS)
    ).all()
    plan_ids = runs_service.plan_ids(session, [r.id or 0 for r in recent])
    return render(
        request,
        "runs.html",
        viewer,
        status=status,
        runs=recent,
        plan_ids=plan_ids,
        regions=_regions(session, viewer),
        items=all_pages(items.list_items, session=session, active=True),
        form_errors=form.get("errors", {}),
        values=form.get("values", {}),
    )


@router.get("/runs")
def runs(request: Request, session: SessionDep, viewer: Reader) -> Response:
    return _runs_page(request, session, viewer)


@router.post("/runs")
def trigger_run(request: Request, session: SessionDep, viewer: Writer, form: FormDep) -> Response:
    time_limit = str(form.get("time_limit_s") or "").strip()
    values = {
        "regions": [str(v) for v in form.getlist("regions") if v],
        "item_ids": [str(v) for v in form.getlist("item_ids") if v],
        "time_limit_s": time_limit,
    }
    body: dict[str, Any] = {"scope": {"regions": values["regions"], "item_ids": values["item_ids"]}}
    if time_limit:
        body["settings"] = {"time_limit_s": time_limit}
    try:
        data = RunCreate.model_validate(body)
        run = runs_service.create_run(session, actor=viewer.principal, data=data)
    except ValidationError as exc:
        return _runs_page(request, session, viewer, 422, errors=pydantic_errors(exc), values=values)
    except DomainError as exc:
        session.rollback()
        errors = {exc.field or "_": error_message(exc)}
        return _runs_page(request, session, viewer, exc.status, errors=errors, values=values)
    viewer.sess.flash("ok", f"Allocation run {run.id} queued.")
    return redirect(f"/runs/{run.id}")


def _progress(session: Session, run: AllocationRun) -> dict[str, Any]:
    public = runs_service.public_run(session, run)
    return {
        "id": public.id,
        "status": public.status,
        "stage": public.progress.stage,
        "percent": round(public.progress.percent, 1),
        "message": public.progress.message,
        "error": public.error,
        "finished": public.status in runs_service.TERMINAL_STATUSES,
        "plan_url": f"/runs/{public.id}/plan" if public.plan_id is not None else None,
        "started": fmt_dt(public.started_at),
        "finished_at": fmt_dt(public.finished_at),
        "attempts": str(public.attempts),
    }


@router.get("/runs/{run_id}")
def run_detail(request: Request, session: SessionDep, viewer: Reader, run_id: int) -> Response:
    run = runs_service.get_run_summary(session, run_id=run_id)
    if run is None:
        runs_service.get_run(session, principal=viewer.principal, run_id=run_id)  # raises the 404
    assert run is not None
    item_names = by_id(all_pages(items.list_items, session=session))
    return render(request, "run.html", viewer, run=run, progress=_progress(session, run), item_names=item_names)


@router.get("/runs/{run_id}/progress.json")
def run_progress(session: SessionDep, viewer: Reader, run_id: int) -> Response:
    """What the run page's script polls each second (the session cookie authenticates it; the API's
    Server-Sent Events stream needs a bearer key, which the browser never holds)."""
    run = runs_service.get_run_summary(session, run_id=run_id)
    if run is None:
        return JSONResponse({"detail": f"allocation run {run_id} not found"}, status_code=404)
    return JSONResponse(_progress(session, run), headers={"Cache-Control": "no-store"})


@router.post("/runs/{run_id}/cancel")
def cancel_run(session: SessionDep, viewer: Writer, run_id: int, form: FormDep) -> Response:
    try:
        run = runs_service.cancel_run(session, actor=viewer.principal, run_id=run_id)
        viewer.sess.flash("ok", f"Run {run_id}: {run.progress_message or run.status}.")
    except DomainError as exc:
        session.rollback()
        viewer.sess.flash("error", error_message(exc))
    return redirect(f"/runs/{run_id}")
