"""Plan review (KPIs, fill-by-tier chart against the greedy baseline, unmet lines, edit, approve, reject)
and the shipments board (by status, driver assignment, status changes).

Every change a form makes carries the version the page showed (the plan's ETag, the shipment's
version): a page left open while someone else changed the object gets "changed since you loaded it"
(412) instead of silently overwriting, like an API client sending If-Match.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Request
from sqlmodel import Session, col, select
from starlette.responses import Response

from app.allocation import plan_approval, plans_service
from app.dashboard import svg
from app.dashboard.forms import text
from app.dashboard.web import DashboardRoute, FormDep, Viewer, all_pages, allow, by_id, error_message, redirect, render
from app.deps import SessionDep, check_if_match, etag_for
from app.errors import Conflict, DomainError, Unprocessable
from app.items import service as items
from app.keys import service as keys
from app.organizations import service as organizations
from app.requests.models import PRIORITIES, RequestLine, SupplyRequest
from app.shipments import events as shipment_events
from app.shipments import service as shipments
from app.shipments.models import SHIPMENT_STATUSES, TRANSITIONS, ShipmentEventCreate
from app.sites import service as sites

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

Reader = Annotated[Viewer, allow("admin", "logistics")]
Writer = Annotated[Viewer, allow("logistics")]
SERIES = ("This plan", "Greedy baseline")
MAX_CONFLICTS_SHOWN = 8
# Buttons for a shipment's next steps: the way forward first, the ways out (failed, cancelled) last.
STEP_ORDER = ["dispatched", "in_transit", "delivered", "returned", "failed", "cancelled"]


def tier_rows(kpis: dict[str, Any], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per priority tier: this plan's and the baseline's requested, allocated, fill, min fill, Jain."""
    rows = []
    for tier in PRIORITIES:
        mine = (kpis.get("by_priority") or {}).get(tier) or {}
        theirs = ((baseline or {}).get("by_priority") or {}).get(tier)
        if not mine and not theirs:
            continue

        def fill(k: dict[str, Any] | None) -> float | None:
            if not k or not k.get("requested"):
                return None
            return float(k.get("allocated", 0)) / float(k["requested"])

        rows.append({"tier": tier, "plan": mine, "base": theirs, "fill": fill(mine), "base_fill": fill(theirs)})
    return rows


def request_lines(session: Session, line_ids: list[int]) -> dict[int, tuple[RequestLine, SupplyRequest]]:
    if not line_ids:
        return {}
    stmt = (
        select(RequestLine, SupplyRequest)
        .join(SupplyRequest, col(SupplyRequest.id) == col(RequestLine.request_id))
        .where(col(RequestLine.id).in_(line_ids))
    )
    return {line.id or 0: (line, req) for line, req in session.exec(stmt).all()}


@router.get("/runs/{run_id}/plan")
def plan_review(request: Request, session: SessionDep, viewer: Reader, run_id: int) -> Response:
    plan = plans_service.find_plan(session, run_id=run_id)
    public = plans_service.to_public(session, plan)
    site_names = {s.id: s.name for s in all_pages(sites.list_sites, session=session, principal=viewer.principal)}
    org_names = {
        o.id: o.name for o in all_pages(organizations.list_organizations, session=session, principal=viewer.principal)
    }
    item_by_id = by_id(all_pages(items.list_items, session=session))
    wanted = {d.request_line_id for d in public.demands if d.request_line_id is not None}
    wanted |= {line.request_line_id for line in public.lines}
    req_lines = request_lines(session, sorted(wanted))
    rank = {p: i for i, p in enumerate(PRIORITIES)}
    unmet = []
    for d in public.demands:
        if d.unmet <= 0 or d.request_line_id not in req_lines:
            continue
        line, req = req_lines[d.request_line_id]
        unmet.append({"d": d, "line": line, "org": org_names.get(req.organization_id, f"#{req.organization_id}")})
    unmet.sort(key=lambda u: (rank.get(u["line"].priority, 9), -u["d"].unmet, u["d"].id))
    tiers = tier_rows(public.kpis, public.baseline_kpis)
    fill_chart = svg.grouped_bars([(t["tier"], [t["fill"], t["base_fill"]]) for t in tiers], SERIES)
    min_chart = svg.grouped_bars(
        [(t["tier"], [t["plan"].get("min_fill_rate"), (t["base"] or {}).get("min_fill_rate")]) for t in tiers], SERIES
    )
    return render(
        request,
        "plan.html",
        viewer,
        plan=public,
        etag=plans_service.plan_etag(session, plan),
        tiers=tiers,
        fill_chart=fill_chart,
        min_chart=min_chart,
        series=SERIES,
        unmet=unmet,
        lines=sorted(public.lines, key=lambda ln: (site_names.get(ln.destination_site_id, ""), ln.id)),
        req_lines=req_lines,
        site_names=site_names,
        org_names=org_names,
        item_by_id=item_by_id,
        editable=viewer.role == "logistics" and public.state == "proposed",
    )


def _precondition(form_etag: str) -> Any:
    # Required, as for the API's PATCH/DELETE/approve: the form always sends the ETag it was drawn with.
    return lambda current: check_if_match(form_etag or None, current, required=True)


def _plan_action(viewer: Viewer, session: Session, run_id: int, action: Any, done: str) -> Response:
    try:
        action()
        viewer.sess.flash("ok", done)
    except Conflict as exc:
        session.rollback()
        conflicts = exc.extra.get("conflicts") or []
        details = [str(c.get("detail", c)) for c in conflicts[:MAX_CONFLICTS_SHOWN]]
        more = f" (+{len(conflicts) - len(details)} more)" if len(conflicts) > len(details) else ""
        viewer.sess.flash("error", error_message(exc) + ("; " + "; ".join(details) + more if details else ""))
    except DomainError as exc:
        session.rollback()
        if exc.status == 412:
            viewer.sess.flash("error", "The plan changed since you loaded this page; review it again.")
        else:
            viewer.sess.flash("error", error_message(exc))
    return redirect(f"/runs/{run_id}/plan")


@router.post("/runs/{run_id}/plan/lines/{line_id}")
def edit_line(session: SessionDep, viewer: Writer, run_id: int, line_id: int, form: FormDep) -> Response:
    raw = text(form, "quantity")

    def act() -> None:
        if not raw.isdigit() or int(raw) <= 0:
            raise Unprocessable("quantity must be a whole number above 0", field="quantity")
        plans_service.update_line(
            session,
            actor=viewer.principal,
            run_id=run_id,
            line_id=line_id,
            quantity=int(raw),
            precondition=_precondition(text(form, "etag")),
        )

    return _plan_action(viewer, session, run_id, act, f"Line {line_id} set to {raw} units.")


@router.post("/runs/{run_id}/plan/lines/{line_id}/remove")
def remove_line(session: SessionDep, viewer: Writer, run_id: int, line_id: int, form: FormDep) -> Response:
    def act() -> None:
        plans_service.remove_line(
            session,
            actor=viewer.principal,
            run_id=run_id,
            line_id=line_id,
            precondition=_precondition(text(form, "etag")),
        )

    return _plan_action(viewer, session, run_id, act, f"Line {line_id} removed.")


@router.post("/runs/{run_id}/plan/approve")
def approve(session: SessionDep, viewer: Writer, run_id: int, form: FormDep) -> Response:
    result: dict[str, Any] = {}

    def act() -> None:
        plan = plan_approval.approve(
            session, actor=viewer.principal, run_id=run_id, precondition=_precondition(text(form, "etag"))
        )
        result["shipments"] = len(plans_service.to_public(session, plan).shipment_ids)

    response = _plan_action(viewer, session, run_id, act, "Plan approved.")
    if "shipments" in result:
        viewer.sess.flashes[-1] = ("ok", f"Plan approved: stock reserved, {result['shipments']} shipments planned.")
        return redirect("/shipments")
    return response


@router.post("/runs/{run_id}/plan/reject")
def reject(session: SessionDep, viewer: Writer, run_id: int, form: FormDep) -> Response:
    def act() -> None:
        etag = text(form, "etag")
        plans_service.reject(
            session, actor=viewer.principal, run_id=run_id, precondition=lambda cur: check_if_match(etag or None, cur)
        )

    return _plan_action(viewer, session, run_id, act, "Plan rejected; nothing was reserved.")


# ---------------------------------------------------------------- shipments board


def shipment_context(session: Session, viewer: Viewer, rows: list[Any]) -> dict[str, Any]:
    """Names for the cards: sites the viewer may read, every item, driver keys (logistics and admin)."""
    context: dict[str, Any] = {
        "site_names": {s.id: s.name for s in all_pages(sites.list_sites, session=session, principal=viewer.principal)},
        "item_by_id": by_id(all_pages(items.list_items, session=session)),
        "shipments": shipments.publish(session, rows),
        "transitions": {k: sorted(v, key=STEP_ORDER.index) for k, v in TRANSITIONS.items()},
    }
    return context


@router.get("/shipments")
def board(request: Request, session: SessionDep, viewer: Reader) -> Response:
    rows = all_pages(shipments.list_shipments, session=session, principal=viewer.principal, filters=shipments.Filters())
    context = shipment_context(session, viewer, rows)
    columns: dict[str, list[Any]] = defaultdict(list)
    for s in context["shipments"]:
        columns[s.status].append(s)
    drivers = [
        k
        for k in all_pages(keys.list_keys, session=session, principal=viewer.principal, role="driver")
        if not k.revoked_at
    ]
    return render(
        request,
        "shipments.html",
        viewer,
        columns=[(status, columns.get(status, [])) for status in SHIPMENT_STATUSES],
        drivers=drivers,
        driver_names={k.id: k.name for k in all_pages(keys.list_keys, session=session, principal=viewer.principal)},
        can_write=viewer.role == "logistics",
        **context,
    )


def shipment_precondition(form_version: str) -> Any:
    if not form_version.isdigit():
        return None
    return lambda shipment: check_if_match(etag_for(int(form_version)), etag_for(shipment.version))


def report_event(session: Session, viewer: Viewer, shipment_id: int, data: dict[str, Any], version: str) -> bool:
    """One status change through the shipments service; the outcome becomes a flash message."""
    try:
        body = ShipmentEventCreate.model_validate(data)
        shipment_events.report_event(
            session,
            actor=viewer.principal,
            shipment_id=shipment_id,
            data=body,
            precondition=shipment_precondition(version),
        )
    except DomainError as exc:
        session.rollback()
        message = "The shipment changed since you loaded this page." if exc.status == 412 else error_message(exc)
        viewer.sess.flash("error", f"Shipment {shipment_id}: {message}")
        return False
    except ValueError as exc:  # pydantic ValidationError: a value the API would reject with 422
        viewer.sess.flash("error", f"Shipment {shipment_id}: {exc}")
        return False
    viewer.sess.flash("ok", f"Shipment {shipment_id} is now {str(data['status']).replace('_', ' ')}.")
    return True


@router.post("/shipments/{shipment_id}/assign")
def assign(session: SessionDep, viewer: Writer, shipment_id: int, form: FormDep) -> Response:
    raw = text(form, "driver_key_id")
    try:
        shipments.assign_driver(
            session,
            actor=viewer.principal,
            shipment_id=shipment_id,
            driver_key_id=int(raw) if raw.isdigit() else None,
            precondition=shipment_precondition(text(form, "version")),
        )
        viewer.sess.flash("ok", f"Shipment {shipment_id}: driver {'assigned' if raw else 'unassigned'}.")
    except DomainError as exc:
        session.rollback()
        message = "The shipment changed since you loaded this page." if exc.status == 412 else error_message(exc)
        viewer.sess.flash("error", f"Shipment {shipment_id}: {message}")
    return redirect(f"/shipments#shipment-{shipment_id}")


@router.post("/shipments/{shipment_id}/events")
def board_event(session: SessionDep, viewer: Writer, shipment_id: int, form: FormDep) -> Response:
    report_event(session, viewer, shipment_id, {"status": text(form, "status")}, text(form, "version"))
    return redirect(f"/shipments#shipment-{shipment_id}")
